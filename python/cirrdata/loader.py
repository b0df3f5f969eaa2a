"""cirrdata.Loader: deterministic, resumable, augmented training batches (ctypes over libcirrdata).

    loader = cirrdata.Loader('out/liver-nnunet', batch_size=2, mode='patch', patch=(96, 96, 32),
                             augment='nnunet', seed=42, split='train', threads=2)
    for epoch in range(100):
        for batch in loader:                  # one epoch
            batch['image']                    # float32 (B, C, X, Y, Z), a view of the loader's ring
            batch['mask'], batch['label'], batch['index']
        state = loader.state_dict()           # resume later with loader.load_state_dict(state)

Batches belong to the caller: every step copies the finished batch from the loader's preallocated ring
straight into new arrays (one copy) and gives the slot back at once, so a batch may be kept as long as
wanted (a list of batches, a prefetching trainer). views=True hands out zero-copy views of the ring
instead: a batch's views hold its ring slot until the last of them (and every array made from one
without a copy) is gone, so a view never changes under its holder; the slot is filled again only after
that. Holding views of as many batches as the ring has slots (ring, default 4) leaves nothing to fill:
the next step raises CirrdataError saying so instead of waiting forever. Ownership: every view holds a
reference to the ring, so its memory is never freed under it: close() (or the loader's collection)
stops the worker threads and frees the dataset, cache and devices at once, and the ring goes with the
last view. Views held across close() keep the values they had. After close(), every iterator of the
loader raises ValueError('the loader is closed') at its next step, also when close() runs in another
thread while a step waits for its batch (the step then returns at once).
Every sample is a pure function of (seed, epoch, record, op): the same seed gives the same batches
whatever the thread count and device (device='vulkan' augments on a GPU; see Loader); ranks
(rank/world_size, else $RANK/$WORLD_SIZE, else $SLURM_PROCID/$SLURM_NTASKS) see disjoint samples that
together cover each epoch; batch_stride/batch_offset split one rank's batches between several loaders
(e.g. DataLoader workers: see cirrdata.torch) without changing any batch.
"""
import collections
import ctypes
import os
import threading

import numpy as np

from . import _lib as _l

_MODES = {'volume': 0, 'patch': 1, 'slice': 2}
_IO = {'auto': 0, 'uring': 1, 'pread': 2}


class _Options(ctypes.Structure):
    """struct cd_loader_options (loader.h)."""
    _fields_ = [('dataset', ctypes.c_char_p),
                ('mode', ctypes.c_int),
                ('patch', ctypes.c_int64 * 3),
                ('foreground_fraction', ctypes.c_double),
                ('slices_with_mask_only', ctypes.c_bool),
                ('batch_size', ctypes.c_uint32),
                ('seed', ctypes.c_uint64),
                ('splits', ctypes.c_char_p),
                ('augment', ctypes.c_char_p),
                ('threads', ctypes.c_int),
                ('rank', ctypes.c_int),
                ('world_size', ctypes.c_int),
                ('drop_last', ctypes.c_bool),
                ('skip_corrupt', ctypes.c_bool),
                ('io', ctypes.c_int),
                ('ring', ctypes.c_uint32),
                ('cache_bytes', ctypes.c_int64),
                ('device', ctypes.c_int),
                ('gpu_memory_limit', ctypes.c_uint64),
                ('preload', ctypes.c_bool),
                ('batch_stride', ctypes.c_uint32),
                ('batch_offset', ctypes.c_uint32),
                ('ring_shared', ctypes.c_bool)]


class _DeviceStats(ctypes.Structure):
    """struct cd_loader_device_stats (loader.h)."""
    _fields_ = [('gpu_calls', ctypes.c_uint64),
                ('gpu_samples', ctypes.c_uint64),
                ('gpu_reference', ctypes.c_uint64),
                ('fallback_calls', ctypes.c_uint64),
                ('fallback_samples', ctypes.c_uint64),
                ('device_resets', ctypes.c_uint64),
                ('gpu_disabled', ctypes.c_bool),
                ('validation', ctypes.c_bool),
                ('validation_messages', ctypes.c_uint64),
                ('validation_first', ctypes.c_char * 256),
                ('note', ctypes.c_char * 384)]


class _Batch(ctypes.Structure):
    """struct cd_batch (loader.h)."""
    _fields_ = [('size', ctypes.c_uint32),
                ('channels', ctypes.c_uint32),
                ('shape', ctypes.c_int64 * 3),
                ('image', ctypes.POINTER(ctypes.c_float)),
                ('mask', ctypes.POINTER(ctypes.c_uint8)),
                ('label', ctypes.POINTER(ctypes.c_int32)),
                ('index', ctypes.POINTER(ctypes.c_int64)),
                ('slice', ctypes.POINTER(ctypes.c_int64)),
                ('corner', ctypes.POINTER(ctypes.c_int64)),
                ('epoch', ctypes.c_uint64),
                ('number', ctypes.c_uint64)]


class _State(ctypes.Structure):
    _fields_ = [('seed', ctypes.c_uint64), ('epoch', ctypes.c_uint64), ('position', ctypes.c_uint64)]


def _declare(lib):
    if getattr(lib, '_cirrdata_loader_declared', False):
        return
    P, PP, E = ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(_l.CdError)
    sigs = {
        'cd_loader_options_init': ([ctypes.POINTER(_Options)], None),
        'cd_loader_create': ([ctypes.POINTER(_Options), PP, E], ctypes.c_int),
        'cd_loader_close': ([P], None),
        'cd_loader_destroy': ([P], None),
        'cd_loader_next': ([P, ctypes.POINTER(ctypes.POINTER(_Batch)), E], ctypes.c_int),
        'cd_loader_release': ([P, ctypes.POINTER(_Batch)], None),
        'cd_loader_get_state': ([P, ctypes.POINTER(_State)], None),
        'cd_loader_set_state': ([P, ctypes.POINTER(_State), E], ctypes.c_int),
        'cd_loader_epoch_samples': ([P], ctypes.c_uint64),
        'cd_loader_epoch_batches': ([P], ctypes.c_uint64),
        'cd_loader_epoch_items': ([P], ctypes.c_uint64),
        'cd_loader_ring_memory': ([P, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t)], ctypes.c_int),
        'cd_loader_lend': ([P, ctypes.POINTER(_Batch), ctypes.POINTER(ctypes.c_uint32), E], ctypes.c_int),
        'cd_loader_lent': ([P], ctypes.c_uint32),
        'cd_loader_rank': ([P, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)], None),
        'cd_loader_skipped': ([P], ctypes.c_uint64),
        'cd_loader_io_name': ([P], ctypes.c_char_p),
        'cd_loader_cache_bytes': ([P], ctypes.c_uint64),
        'cd_loader_device_name': ([P], ctypes.c_char_p),
        'cd_loader_device_stats_get': ([P, ctypes.POINTER(_DeviceStats)], None),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = res
    lib._cirrdata_loader_declared = True


# Bounds of loader.h (CD_LOADER_MAX_*), for values that do not fit the C field and so cannot reach
# the library's own check (a negative batch_size would wrap to 4294967295): same wording as loader.c.
_MAX_BATCH, _MAX_THREADS, _MAX_RING, _MAX_EPOCH = 65536, 1024, 64, 2 ** 32 - 1
_INT_MAX, _U32_MAX, _U64_MAX, _I64_MAX = 2 ** 31 - 1, 2 ** 32 - 1, 2 ** 64 - 1, 2 ** 63 - 1


def _option_error(text):
    """The CirrdataError the library would give (status CD_ERR_ARG)."""
    from . import _LIB, CirrdataError
    return CirrdataError(text, _LIB.cd_status_name(1).decode())


def _fit(name, value, lo, hi, bounds):
    """int(value) when it lies in lo..hi (the C field's range), else CirrdataError '<name> must be in
    <bounds> (got <value>)'."""
    v = int(value)
    if not lo <= v <= hi:
        raise _option_error('%s must be in %s (got %d)' % (name, bounds, v))
    return v


class _Ring:
    """Owns the C loader handle. Referenced by the Loader until close() and by every batch view, so
    cd_loader_destroy (which frees the ring) runs when the last of them goes; close() has already
    stopped the loader by then (cd_loader_close)."""

    def __init__(self, lib, h):
        self.lib, self.h = lib, h

    def __del__(self):
        if self.h:
            self.lib.cd_loader_destroy(self.h)
            self.h = None


class _Borrow:
    """One borrowed batch handed out as views (views=True): the views' common base. When the last view
    goes, the batch is queued for release; the consumer gives it back to the library at its next step
    (cd_loader_release is a consumer-thread call, and a finaliser may run in any thread)."""
    __slots__ = ('ring', 'bp', 'returned', '__weakref__')

    def __init__(self, ring, bp, returned):
        self.ring, self.bp, self.returned = ring, bp, returned

    def __del__(self):
        self.returned.append(self.bp)  # deque.append is atomic


class _Memory:
    """A numpy array interface over memory someone else owns (the ring, a pooled buffer, a worker's
    shared ring); `keep` keeps that memory valid, and gives it back when it goes: arrays made over it
    hold it through their base."""
    __slots__ = ('__array_interface__', 'keep')


def _array_over(addr, shape, typestr, keep):
    """A numpy array (no copy) of shape and typestr at addr, holding keep for as long as it lives."""
    m = _Memory()
    m.__array_interface__ = {'data': (addr, False), 'shape': tuple(shape), 'typestr': typestr, 'version': 3}
    m.keep = keep
    return np.asarray(m)


class _Pooled:
    """An owned batch array's buffer, handed back to _POOL when the last array (or tensor) using it goes:
    the caller owns it for as long as it keeps it, and the next batch reuses warm pages."""
    __slots__ = ('buf',)

    def __init__(self, buf):
        self.buf = buf

    def __del__(self):
        _POOL.give_back(self.buf)


class _BufferPool:
    """Free buffers by size (at most KEEP each). Fresh memory costs page faults: a new 2.4 MB array is
    filled in 0.7 ms where a reused one takes 0.03 ms on a Firecracker guest, and torch.empty maps new
    pages every time."""
    KEEP = 8

    def __init__(self):
        self.free = {}

    def take(self, nbytes):
        free = self.free.get(nbytes)
        return free.pop() if free else bytearray(nbytes)

    def give_back(self, buf):
        free = self.free.setdefault(len(buf), [])
        if len(free) < self.KEEP:
            free.append(buf)  # list.append is atomic: finalisers may run in any thread


_POOL = _BufferPool()


def _owned_copy(src):
    """A copy of src that the caller owns, in pooled memory (see _BufferPool)."""
    buf = _POOL.take(src.nbytes)
    a = _array_over(np.frombuffer(buf, np.uint8).ctypes.data, src.shape, src.dtype.str, _Pooled(buf))
    np.copyto(a, src)
    return a


def _numpy_alloc(name, shape, dtype, src):
    """The default destination of an owned batch: a numpy array holding a copy of src (a view of the
    ring), in pooled memory."""
    return _owned_copy(src)


def _small(ptr, shape):
    return np.ctypeslib.as_array(ptr, shape=shape).copy()


class Loader(_l.Closeable):
    """Batches from a converted dataset directory. See the module docstring.

    mode: 'patch' (fixed-size patches, foreground_fraction of each batch centred on the mask),
    'volume' (whole records; patch=(X, Y, Z) crops/pads to a fixed size) or 'slice' (2D axial
    slices; slices_with_mask_only keeps those inside the mask's z range).
    augment: 'none', 'nnunet', 'cirrhosisstage' or the path of a pipeline JSON file.
    split: a split name, several separated by commas, or '*' for all.
    rank/world_size: default from $RANK/$WORLD_SIZE, else $SLURM_PROCID/$SLURM_NTASKS, else 0/1.
    views: False (default): batches are new arrays the caller owns. True: zero-copy views of the ring,
    each batch holding its slot while any of its views lives (see the module docstring).
    ring_shared: the ring's images and masks in a memfd that another process may map (ring_memory());
    cirrdata.torch's DataLoader workers hand batches to the main process that way, without a copy.
    batch_stride/batch_offset: deliver only batches number batch_offset, batch_offset + batch_stride, ...
    of each epoch (the others are not made); each is the batch a loader with stride 1 gives at that number.
    device: where augmentation runs. 'cpu' (default); 'vulkan': every worker thread renders its share
    of a batch with one Vulkan command buffer (warp and intensity ops fused), decoding staying on the
    CPU; the batches equal the CPU's (images within ~1e-6 of the data range, everything else exactly);
    an error when no Vulkan device can be opened; 'auto': Vulkan on a hardware GPU, else the CPU (a
    software device such as lavapipe is slower than the CPU engine). `.device` says what runs,
    `.device_stats` counts device calls and CPU fallbacks (a share the device has no memory for, a lost
    device: never a wrong or missing batch). Without augmentation samples are exact crops, cut on the CPU.
    gpu_memory_limit: bytes each worker's Vulkan context may hold (None: the device heap); shares
    that do not fit run on the CPU.
    cache_bytes: budget of the decoded-chunk cache shared by the worker threads (None: the library's
    default, min(2 GiB, RAM / 8); 0: no cache; at most the physical memory). Later epochs then skip
    reading and decompressing.
    Bounds (cirrdata/loader.h; CirrdataError naming the option, its bounds and the value): batch_size
    1..65536, threads 0..1024 (0: one per online CPU), ring (batches in flight) 0..64 (0: 4), patch
    1..max_dim per axis and at most max_voxels (cirrdata.limits()), foreground_fraction [0, 1], rank
    0..world_size - 1, the whole ring within the physical memory; a state's epoch 0..2^32 - 1 and
    position below samples_per_epoch.
    preload: fill that cache before the first batch, as loaders that hold whole volumes in memory do:
    the worker threads read and decode every chunk of the split's records (all of them, whatever the
    rank: each epoch gives a rank other records) until the budget is full. The constructor returns at
    once; the first batch waits for the preload. Batches are the same with or without it; a corrupt
    chunk is reported (or skipped, skip_corrupt) when a sample reads it, as without preload."""

    def __init__(self, path, batch_size=2, mode='patch', patch=(96, 96, 32), augment='none', seed=0, split='train',
                 threads=0, rank=None, world_size=None, device='cpu', foreground_fraction=0.33,
                 slices_with_mask_only=False, drop_last=False, skip_corrupt=False, io='auto', ring=4, views=False,
                 cache_bytes=None, gpu_memory_limit=None, preload=False, batch_stride=1, batch_offset=0,
                 ring_shared=False):
        from . import _LIB, _raise
        if device not in _l.DEVICES:
            raise ValueError("device must be 'cpu', 'vulkan' or 'auto', not %r" % (device,))
        if mode not in _MODES:
            raise ValueError('mode must be one of %s' % sorted(_MODES))
        if io not in _IO:
            raise ValueError('io must be one of %s' % sorted(_IO))
        self._lib = _LIB
        self._raise = _raise
        _declare(_LIB)
        o = _Options()
        _LIB.cd_loader_options_init(ctypes.byref(o))
        self._keep = [os.fsencode(path), split.encode(), str(augment).encode()]
        o.dataset, o.splits, o.augment = self._keep
        o.device = _l.DEVICES[device]
        # Integers go to the library as they are, which checks them (loader.h); only values the C field
        # cannot hold are refused here, in the library's words.
        o.gpu_memory_limit = _fit('gpu_memory_limit', gpu_memory_limit or 0, 0, _U64_MAX, '0..%d, 0 or None for the device heap' % _U64_MAX)
        o.mode = _MODES[mode]
        if patch is not None:
            if len(patch) != 3:
                raise ValueError('patch must be (X, Y, Z)')
            p = [int(v) for v in patch]
            if not all(-_I64_MAX - 1 <= v <= _I64_MAX for v in p):
                from . import limits
                raise _option_error('patch must be in 1..%d per axis%s (got %s)' % (
                    limits()['max_dim'], ", or all 0 for each record's own size" if mode == 'volume' else '',
                    ' x '.join(str(v) for v in p)))
            for i in range(3):
                o.patch[i] = p[i]
        elif mode == 'volume':
            for i in range(3):
                o.patch[i] = 0
        o.foreground_fraction = float(foreground_fraction)
        o.slices_with_mask_only = bool(slices_with_mask_only)
        o.batch_size = _fit('batch_size', batch_size, 0, _U32_MAX, '1..%d' % _MAX_BATCH)
        o.seed = _fit('seed', seed, 0, _U64_MAX, '0..%d' % _U64_MAX)
        o.threads = _fit('threads', threads, -_INT_MAX - 1, _INT_MAX, '0..%d, 0 for one per online CPU' % _MAX_THREADS)
        if world_size is None:
            o.rank, o.world_size = 0, 0  # the library reads $RANK / $WORLD_SIZE
        else:
            w = _fit('world_size', world_size, -_INT_MAX - 1, _INT_MAX, '0..%d, 0 for $WORLD_SIZE' % _INT_MAX)
            o.world_size = w
            o.rank = _fit('rank', rank or 0, -_INT_MAX - 1, _INT_MAX, '0..%d (world_size %d)' % (w - 1, w))
        o.drop_last = bool(drop_last)
        o.skip_corrupt = bool(skip_corrupt)
        o.io = _IO[io]
        o.ring = _fit('ring', ring, 0, _U32_MAX, '0..%d, 0 for the default 4' % _MAX_RING)
        # Decoded-chunk cache: None = the library's default (CD_LOADER_CACHE_AUTO: min(2 GiB, RAM / 8)),
        # 0 = none, else a budget in bytes (the library bounds it by the physical memory), as in C.
        if cache_bytes is None:
            o.cache_bytes = -1
        else:
            cb = int(cache_bytes)
            if not 0 <= cb <= _I64_MAX:
                raise _option_error('cache_bytes must be None for the default, 0 for no cache or a number of bytes up to '
                                    'the physical memory (got %d)' % cb)
            o.cache_bytes = cb
        o.preload = bool(preload)
        o.batch_stride = _fit('batch_stride', batch_stride, 0, _U32_MAX, '0..65536, 0 or 1 for every batch')
        o.batch_offset = _fit('batch_offset', batch_offset, 0, _U32_MAX, '0..batch_stride - 1')
        o.ring_shared = bool(ring_shared)
        self.views = bool(views)
        self._ring_slots = int(ring) or 4
        # Batches handed out as views and not released yet (their cd_batch pointers by address), and
        # those whose last view went (_Borrow.__del__), to give back at the next step.
        self._borrowed = set()
        self._returned = collections.deque()
        # _lock guards _ring and _borrowed and is held around every call into the handle except
        # cd_loader_next's wait, so that close() (which takes only _lock) can end a step waiting in
        # another thread; _step serialises the consumer calls (next, release, set_state), which the
        # library allows from one thread at a time. Order: _step before _lock. RLock: a signal handler
        # or finaliser that closes the loader may run in a thread that holds it.
        self._lock = threading.RLock()
        self._step = threading.Lock()
        self._ring = None
        h = ctypes.c_void_p()
        err = _l.CdError()
        if _LIB.cd_loader_create(ctypes.byref(o), ctypes.byref(h), ctypes.byref(err)) != 0:
            _raise(err)
        self._ring = _Ring(_LIB, h)

    def _live(self):
        """The _Ring of an open loader (call with _lock held), else ValueError."""
        ring = getattr(self, '_ring', None)
        if ring is None:
            raise ValueError('the loader is closed')
        return ring

    def _call(self, name, *args):
        with self._lock:
            return getattr(self._lib, name)(self._live().h, *args)

    def _handle(self):
        with self._lock:
            return self._live().h

    def __len__(self):
        """Batches per epoch for this rank."""
        return int(self._call('cd_loader_epoch_batches'))

    @property
    def samples_per_epoch(self):
        """Samples of an epoch for this rank."""
        return int(self._call('cd_loader_epoch_samples'))

    @property
    def items_per_epoch(self):
        """Samples of an epoch over all ranks (records, or slices in slice mode)."""
        return int(self._call('cd_loader_epoch_items'))

    @property
    def skipped(self):
        """Samples dropped because their data was corrupt (skip_corrupt=True)."""
        return int(self._call('cd_loader_skipped'))

    @property
    def cache_bytes(self):
        """Bytes held by the decoded-chunk cache now."""
        return int(self._call('cd_loader_cache_bytes'))

    @property
    def io(self):
        """The read backend in use: 'uring' or 'pread'."""
        return self._call('cd_loader_io_name').decode()

    @property
    def device(self):
        """What runs augmentation: 'cpu', 'vulkan: <device name>', or with device='auto' and no
        hardware GPU 'cpu (vulkan not used: <reason>)'."""
        return self._call('cd_loader_device_name').decode()

    @property
    def device_stats(self):
        """Device-path counters: gpu_calls / gpu_samples (rendered on the device), gpu_reference (samples
        gpu.h sent to the C reference), fallback_calls / fallback_samples (shares rendered on the CPU
        after a device error), device_resets, gpu_disabled, validation, validation_messages,
        validation_first, note (the first device error)."""
        s = _DeviceStats()
        self._call('cd_loader_device_stats_get', ctypes.byref(s))
        out = {k: getattr(s, k) for k, _ in _DeviceStats._fields_}
        for k in ('note', 'validation_first'):
            out[k] = out[k].decode(errors='replace')
        return out

    def _give_back(self):
        """Releases the batches whose views are all gone (call with _lock held, the loader open)."""
        while self._returned:
            bp = self._returned.popleft()
            addr = ctypes.addressof(bp.contents)
            if addr in self._borrowed:
                self._borrowed.discard(addr)
                self._lib.cd_loader_release(self._ring.h, bp)

    def __iter__(self):
        """Yields the batches of one epoch (from the current position). Each step checks that the
        loader is open: after close() the iterator raises ValueError('the loader is closed')."""
        return self._epoch(_numpy_alloc)

    def _epoch(self, alloc, raw=False):
        """One epoch of batches; owned arrays are alloc(name, shape, dtype, src): the object handed out,
        holding a copy of src, a numpy view of the ring slot (cirrdata.torch makes pinned tensors).
        With views=True alloc is not used (None will do). raw=True (views only) yields the borrowed
        cd_batch pointers themselves, for a caller that tracks their slots and hands each back by
        appending it to _returned (cirrdata.torch's shared ring: no arrays made per batch)."""
        err = _l.CdError()
        while True:
            with self._step:
                with self._lock:
                    ring = self._live()  # a strong reference: the handle outlives this step
                    self._give_back()
                    if len(self._borrowed) >= self._ring_slots:
                        raise _option_error(
                            'all %d ring slots hold batches whose views are still referenced (views=True): drop '
                            'them or copy what you keep (the default, views=False, hands out batches you own), '
                            'or raise ring' % self._ring_slots)
                bp = ctypes.POINTER(_Batch)()
                # Without _lock: close() may run meanwhile; the library then ends this wait with "the
                # loader is closed" (or returns the batch it had), and the ring stays until `ring` goes.
                rc = self._lib.cd_loader_next(ring.h, ctypes.byref(bp), ctypes.byref(err))
                with self._lock:
                    self._live()  # closed during the wait: the batch (if any) is not handed out
                    if rc != 0:
                        self._raise(err)
                    if not bp:
                        return  # end of the epoch
                    if raw:
                        self._borrowed.add(ctypes.addressof(bp.contents))
                        batch = bp
                    else:
                        batch = self._take(ring, bp, alloc)
            yield batch
            batch = None  # views: this frame must not hold the batch's slot past the caller

    def _take(self, ring, bp, alloc):
        """The batch dict of a borrowed batch: views (the batch stays borrowed until they go) or owned
        arrays (copied, then the batch is released at once). Call with _lock held."""
        b = bp.contents
        n, c = b.size, b.channels
        x, y, z = b.shape
        shapes = {'image': ((n, c, x, y, z), np.float32, b.image, '<f4'),
                  'mask': ((n, 1, x, y, z), np.uint8, b.mask, '|u1')}
        out = {}
        if self.views:
            borrow = _Borrow(ring, bp, self._returned)
            self._borrowed.add(ctypes.addressof(b))
            for name, (shape, dtype, ptr, typestr) in shapes.items():
                out[name] = _array_over(ctypes.cast(ptr, ctypes.c_void_p).value, shape, typestr, borrow) if ptr else None
        else:
            for name, (shape, dtype, ptr, typestr) in shapes.items():
                if not ptr:
                    out[name] = None
                    continue
                out[name] = alloc(name, shape, dtype, np.ctypeslib.as_array(ptr, shape=shape))  # the one copy
        out.update({'label': _small(b.label, (n,)), 'index': _small(b.index, (n,)), 'slice': _small(b.slice, (n,)),
                    'corner': _small(b.corner, (n, 3)), 'epoch': int(b.epoch), 'batch': int(b.number)})
        if not self.views:
            self._lib.cd_loader_release(ring.h, bp)
        return out

    def state_dict(self):
        """Where the next batch starts: {'seed', 'epoch', 'position', 'world_size'}. The batch last
        yielded counts as delivered: save the state after training on a batch, and a restored loader
        continues with the one after it. Any rank's state serves every rank of the same world size
        (ranks advance together)."""
        s = _State()
        self._call('cd_loader_get_state', ctypes.byref(s))
        return {'seed': int(s.seed), 'epoch': int(s.epoch), 'position': int(s.position),
                'world_size': self.rank_world[1]}

    def ring_memory(self):
        """ring_shared=True: (fd, address, bytes) of the shared-memory file holding the ring (the loader's;
        valid until it is destroyed). Its first 4096 bytes are a header whose first `ring` int32 words are
        the lend flags (_lend). None otherwise."""
        base, size = ctypes.c_void_p(), ctypes.c_size_t()
        fd = self._call('cd_loader_ring_memory', ctypes.byref(base), ctypes.byref(size))
        return None if fd < 0 else (fd, base.value, size.value)

    def _lend(self, bp):
        """ring_shared, a batch borrowed through _epoch(raw=True): hands it to whoever maps the ring
        (cd_loader_lend). It stops being borrowed here; its slot's int32 flag in the header is 1 until
        the mapper sets it to 0, and then the loader's threads fill the slot again by themselves. Returns
        the slot's index."""
        slot, err = ctypes.c_uint32(), _l.CdError()
        with self._lock:
            ring = self._live()
            if self._lib.cd_loader_lend(ring.h, bp, ctypes.byref(slot), ctypes.byref(err)) != 0:
                self._raise(err)
            self._borrowed.discard(ctypes.addressof(bp.contents))
        return slot.value

    @property
    def _lent(self):
        """Slots lent (_lend) and not given back yet."""
        return int(self._call('cd_loader_lent'))

    @property
    def rank_world(self):
        """(rank, world_size) of this loader."""
        r, w = ctypes.c_int(), ctypes.c_int()
        self._call('cd_loader_rank', ctypes.byref(r), ctypes.byref(w))
        return r.value, w.value

    def load_state_dict(self, state):
        """Continues from a state_dict(): the following batches equal an uninterrupted run's. A state
        saved with another world size is refused (its positions count another share of the epoch)."""
        if 'world_size' in state and int(state['world_size']) != self.rank_world[1]:
            raise _option_error('state was saved with world_size %d, this loader has world_size %d'
                                % (int(state['world_size']), self.rank_world[1]))
        seed = _fit('state seed', state['seed'], 0, _U64_MAX, '0..%d' % _U64_MAX)
        epoch = _fit('state epoch', state['epoch'], 0, _U64_MAX, '0..%d' % _MAX_EPOCH)
        position = int(state['position'])
        with self._step, self._lock:
            ring = self._live()
            if not 0 <= position <= _U64_MAX:
                n = int(self._lib.cd_loader_epoch_samples(ring.h))
                raise _option_error('state position must be in 0..%d, the samples of an epoch of this rank (got %d)'
                                    % (n - 1, position))
            self._give_back()
            if self._borrowed:
                raise ValueError('load_state_dict: views of %d batch(es) are still referenced (views=True): drop '
                                 'them first' % len(self._borrowed))
            s = _State(seed, epoch, position)
            err = _l.CdError()
            if self._lib.cd_loader_set_state(ring.h, ctypes.byref(s), ctypes.byref(err)) != 0:
                self._raise(err)

    def _forget(self):
        """Drops the handle without any library call: for a copy of the loader inherited by a forked
        process, whose worker threads exist only in the parent (closing it would wait for them)."""
        ring, self._ring = getattr(self, '_ring', None), None
        if ring is not None:
            ring.h = None
        self._borrowed = set()

    def close(self):
        """Stops the loader now (idempotent, from any thread): live iterators raise ValueError at their
        next step, one waiting for a batch in another thread included. Batch views already handed out
        stay valid (see the module docstring)."""
        lock = getattr(self, '_lock', None)
        if lock is None:
            return  # __init__ failed before the handle existed
        with lock:
            ring, self._ring = self._ring, None
            self._borrowed.clear()  # not released: views keep their values
            if ring is not None and ring.h:  # h None: the _Ring was finalised first (a collected cycle)
                self._lib.cd_loader_close(ring.h)
        # `ring` goes here: cd_loader_destroy now unless batch views still hold it.

