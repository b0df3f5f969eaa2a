"""cirrdata.torch: converted datasets as PyTorch datasets (torch is imported here only).

    import torch, cirrdata.torch
    ds = cirrdata.torch.BatchDataset('out/liver-nnunet', batch_size=2, mode='patch', patch=(96, 96, 32),
                                     augment='nnunet', seed=42, split='train')
    dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, pin_memory=True,
                                     persistent_workers=True)
    for epoch in range(start_epoch, epochs):
        ds.set_epoch(epoch)
        for k, batch in enumerate(dl):        # dict: image (B, C, X, Y, Z) float32, mask, label, ...
            ...
            checkpoint = {'data': ds.state_dict(epoch=epoch, batches=k + 1), ...}

BatchDataset is an IterableDataset of whole batches (batch_size=None in the DataLoader): each process
(the main one with num_workers=0, else every worker) opens its own C loader (cirrdata.Loader) on first
use, so nothing is inherited across fork and the dataset pickles for spawn. The batches are the same,
in the same order, for any num_workers: batch k of an epoch is made by worker k mod W (the order in
which the DataLoader asks its workers), each worker's loader delivering only its batches
(Loader batch_stride/batch_offset) with every sample a pure function of (seed, epoch, record).

Ranks: torch.distributed when initialised when the dataset is made, else RANK/WORLD_SIZE, else
SLURM_PROCID/SLURM_NTASKS, else one rank; ranks get disjoint samples that together cover each epoch
and the same number of batches (a dataset that would give ranks different counts, which would stall
DDP, is refused unless drop_last=True, which then gives every rank the smallest count).

Epochs: each pass over the DataLoader is one epoch: the count is shared by the processes (a small
shared-memory counter), so it advances with or without persistent workers; set_epoch(e) sets it, as
DistributedSampler.set_epoch does. Resume: save ds.state_dict(epoch=e, batches=k) after training on k
batches of epoch e; ds.load_state_dict(state) on a new dataset makes the next pass continue with batch k
of epoch e (then e + 1 from its start). A state from another dataset, seed, world size, batch size or
sampling option is refused, naming what differs.

RecordDataset is a map-style dataset of whole records (one dict per record); collate_records stacks
records of different shapes by zero-padding to the largest (pad=True) or returns lists.
"""
import ctypes
import hashlib
import json
import multiprocessing
import multiprocessing.context
import multiprocessing.sharedctypes
import os
import warnings

import numpy as np
import torch
import torch.utils.data

from . import Dataset
from .loader import Loader, _array_over, _owned_copy

__all__ = ['BatchDataset', 'RecordDataset', 'collate_records', 'rank_world']

# Options of cirrdata.Loader that decide which batches are made (a state must agree on them).
_SAMPLING = ('mode', 'patch', 'augment', 'split', 'foreground_fraction', 'slices_with_mask_only', 'drop_last',
             'skip_corrupt')
# Other options passed through to each process's Loader.
_PASSED = ('io', 'ring', 'cache_bytes', 'gpu_memory_limit', 'preload')
_STATE_VERSION = 1
_MAX_WORKERS = 256  # shared epoch counters (one per DataLoader worker)
_NUMPY = {np.dtype(np.float32): torch.float32, np.dtype(np.uint8): torch.uint8, np.dtype(np.int64): torch.int64}


def rank_world():
    """(rank, world_size): torch.distributed when initialised, else $RANK/$WORLD_SIZE, else
    $SLURM_PROCID/$SLURM_NTASKS, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    for r, w in (('RANK', 'WORLD_SIZE'), ('SLURM_PROCID', 'SLURM_NTASKS')):
        if os.environ.get(w):
            try:
                return int(os.environ.get(r) or 0), int(os.environ[w])
            except ValueError:
                raise ValueError('$%s=%r / $%s=%r are not integers' % (r, os.environ.get(r), w, os.environ[w]))
    return 0, 1


def _per_rank(items, rank, world):
    return items // world + (rank < items % world)


def _batches(samples, batch_size, drop_last):
    return samples // batch_size if drop_last else -(-samples // batch_size)


class _Packed(dict):
    """A worker's batch: every tensor a view of ONE shared-memory storage, so that the DataLoader passes
    one file descriptor per batch to the main process (not one per tensor, each a round trip); unpickled
    there as a plain dict of the same views."""

    def __reduce__(self):
        storage = self['image'].storage().untyped()
        whole = torch.empty(0, dtype=torch.uint8).set_(torch.TypedStorage(wrap_storage=storage, dtype=torch.uint8))
        layout, plain = {}, {}
        for k, v in self.items():
            if torch.is_tensor(v):
                layout[k] = (v.storage_offset() * v.element_size(), v.dtype, tuple(v.shape))
            else:
                plain[k] = v
        return _unpack, (whole, layout, plain)


def _unpack(whole, layout, plain):
    out = dict(plain)
    for k, (offset, dtype, shape) in layout.items():
        n = int(np.prod(shape)) * torch.empty(0, dtype=dtype).element_size()
        out[k] = whole[offset:offset + n].view(dtype).view(shape)
    return out


class _Packer:
    """Builds a worker's batch in a memfd: each array goes in with one pwrite (no mapping is written in
    the worker: page faults on fresh memory cost far more than the copy on some VMs, about 14 ms against
    1 ms for a 2.4 MB batch on a Firecracker guest), then one shared storage maps it."""

    def __init__(self):
        self.fd, self.size, self.parts = None, 0, {}

    def put(self, name, src):
        if self.fd is None:
            self.fd = os.memfd_create('cirrdata-batch', os.MFD_CLOEXEC)
            self.size, self.parts = 0, {}
        offset = -(-self.size // 64) * 64
        n = src.nbytes
        os.ftruncate(self.fd, offset + n)
        view = memoryview(np.ascontiguousarray(src)).cast('B')
        done = 0
        while done < n:
            done += os.pwrite(self.fd, view[done:], offset + done)
        self.size = offset + n
        self.parts[name] = (offset, src.dtype, src.shape)
        return name

    def finish(self, small, plain):
        for k, v in small.items():
            self.put(k, v)
        try:
            storage = torch.UntypedStorage._new_shared_fd_cpu(self.fd, self.size)  # maps its own dup of fd
        finally:
            os.close(self.fd)
            self.fd = None
        whole = torch.empty(0, dtype=torch.uint8).set_(torch.TypedStorage(wrap_storage=storage, dtype=torch.uint8))
        return _Packed({k: whole[o:o + int(np.prod(shape)) * dt.itemsize].view(_NUMPY[dt]).view(shape)
                        for k, (o, dt, shape) in self.parts.items()}, **plain)


class _SharedRing:
    """A DataLoader worker's batches, handed to the main process without a copy: the worker's C loader
    keeps its ring in a memfd (Loader(ring_shared=True, views=True)) whose fd goes to the main process
    once, with the first batch; each batch then travels as its offsets in that file. The worker lends the
    batch's slot (cd_loader_lend: its flag in the file's first page is 1); in the main process the
    batch's tensors are views of the slot, and _SlotHold sets the flag back to 0 when the last of them
    goes, which the C loader's own threads see and fill the slot again: the trainer's tensors never
    change, and a slot comes back without waiting for this worker's Python thread (which sits idle
    between epochs). When the trainer holds all but SPARE slots, a batch is copied into one-off shared
    memory instead (_Packer), so keeping batches never stalls. Per batch the worker makes no arrays: the
    message is the batch's offsets and its small fields' bytes (the DataLoader's per-batch cost is what
    limits it on few cores)."""
    SPARE = 2

    def __init__(self, loader):
        fd, self.base, self.size = loader.ring_memory()
        self.ring = loader._ring_slots
        storage = torch.UntypedStorage._new_shared_fd_cpu(fd, self.size)  # maps its own duplicate of fd
        self.whole = torch.empty(0, dtype=torch.uint8).set_(torch.TypedStorage(wrap_storage=storage, dtype=torch.uint8))
        self.id = (os.getpid(), os.fstat(fd).st_ino)
        self.loader = loader
        self.sent = False

    def send(self, bp):
        b = bp.contents
        n, c = b.size, b.channels
        shape = (n, c) + tuple(b.shape)
        mshape = (n, 1) + tuple(b.shape)
        image = ctypes.cast(b.image, ctypes.c_void_p).value
        mask = ctypes.cast(b.mask, ctypes.c_void_p).value if b.mask else None
        small = (ctypes.string_at(b.label, 4 * n), ctypes.string_at(b.index, 8 * n), ctypes.string_at(b.slice, 8 * n),
                 ctypes.string_at(b.corner, 24 * n))
        plain = (int(b.epoch), int(b.number))
        if self.loader._lent >= self.ring - self.SPARE:
            packer = _Packer()
            packer.put('image', _array_over(image, shape, '<f4', None))
            if mask is not None:
                packer.put('mask', _array_over(mask, mshape, '|u1', None))
            self.loader._returned.append(bp)  # copied: the slot goes back at the loader's next step
            return packer.finish(_small_arrays(small, n), {'epoch': plain[0], 'batch': plain[1]})
        slot = self.loader._lend(bp)
        parts = (image - self.base, shape, None if mask is None else mask - self.base)
        out = _InRing((self.id, None if self.sent else self.whole, slot, parts, small, plain))
        self.sent = True
        return out


def _small_arrays(small, n):
    """label, index, slice, corner as the batch dict has them (int64), from their bytes in the ring."""
    label, index, slc, corner = small
    return {'label': np.frombuffer(label, '<i4').astype(np.int64), 'index': np.frombuffer(index, '<i8').copy(),
            'slice': np.frombuffer(slc, '<i8').copy(), 'corner': np.frombuffer(corner, '<i8').reshape(n, 3).copy()}


class _InRing:
    """A batch in a worker's shared ring (see _SharedRing); pickled as its place in the ring, unpickled in the
    main process as a plain dict of tensors it owns. Not a Mapping, so that the DataLoader's default_convert
    passes it through whole instead of rebuilding it field by field in the worker."""
    __slots__ = ('message',)

    def __init__(self, message):
        self.message = message

    def __reduce__(self):
        return _from_ring, self.message


_RINGS = {}  # main process: (worker pid, memfd inode) -> uint8 numpy view of a worker's shared ring


def _from_ring(ring_id, whole, slot, parts, small, plain):
    if whole is not None:
        for dead in [k for k in _RINGS if not _alive(k[0])]:
            del _RINGS[dead]
        _RINGS[ring_id] = whole.numpy()
    data = _RINGS[ring_id]
    hold = _SlotHold(data, slot)
    image, shape, mask = parts
    out = {'image': torch.from_numpy(_array_over(data.ctypes.data + image, shape, '<f4', hold))}
    if mask is not None:
        out['mask'] = torch.from_numpy(_array_over(data.ctypes.data + mask, (shape[0], 1) + shape[2:], '|u1', hold))
    out.update((k, torch.from_numpy(v)) for k, v in _small_arrays(small, shape[0]).items())
    out['epoch'], out['batch'] = plain
    return out


class _SlotHold:
    """Holds a worker's ring slot for the tensors of one batch (the trainer's for as long as it keeps any of
    them: the worker does not fill a held slot); frees it when the last goes."""
    __slots__ = ('data', 'slot')

    def __init__(self, data, slot):
        self.data, self.slot = data, slot  # data keeps the main process's mapping of the ring

    def __del__(self):
        self.data[:4096].view(np.int32)[self.slot] = 0


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class _EpochCounter:
    """Epoch bookkeeping shared by the main process and the DataLoader workers (fork or spawn): the base
    epoch, the resume point (epoch, batch) and, per worker slot, how many passes it has begun."""

    def __init__(self):
        self.a = multiprocessing.sharedctypes.RawArray('q', 3 + _MAX_WORKERS)
        self.a[1] = -1  # no resume point

    def set(self, epoch, resume_epoch=-1, resume_batch=0):
        self.a[0], self.a[1], self.a[2] = epoch, resume_epoch, resume_batch
        for i in range(_MAX_WORKERS):
            self.a[3 + i] = 0

    def begin(self, slot):
        """The epoch of this pass of worker `slot`, and the batch it starts at (k > 0 on resume)."""
        n = self.a[3 + slot]
        self.a[3 + slot] = n + 1
        epoch = self.a[0] + n
        return epoch, (self.a[2] if epoch == self.a[1] else 0)

    def __getstate__(self):
        if multiprocessing.context.get_spawning_popen() is not None:
            return {'a': self.a}  # to a DataLoader worker being started: shared
        return {'values': list(self.a)}  # pickled for any other reason: a copy

    def __setstate__(self, state):
        if 'a' in state:
            self.a = state['a']
        else:
            self.a = multiprocessing.sharedctypes.RawArray('q', state['values'])


class BatchDataset(torch.utils.data.IterableDataset):
    """Whole batches (dicts of tensors) of a converted dataset, for DataLoader(ds, batch_size=None).
    See the module docstring.

    path, batch_size, and the options of cirrdata.Loader that choose the batches: mode, patch, augment,
    seed, split, foreground_fraction, slices_with_mask_only, drop_last, skip_corrupt; and io, ring,
    cache_bytes, gpu_memory_limit, preload. augment_device: where augmentation runs ('cpu', 'vulkan',
    'auto'; Loader's device). threads: C worker threads per process (None: the CPUs divided among the
    DataLoader workers, at least 1). rank/world_size: see the module docstring (both or neither).
    device: where batches are delivered: 'cpu' (default) or a CUDA device ('cuda', 'cuda:1'): then
    batches are copied from pinned memory with non_blocking=True (only in the main process,
    num_workers=0: CUDA does not belong in DataLoader workers; with workers use
    DataLoader(pin_memory=True) and .to('cuda', non_blocking=True)). pin_memory: fill batches
    straight into page-locked memory (when CUDA is available; DataLoader(pin_memory=True) then pins
    nothing again). Inside a DataLoader worker, batches are filled straight into shared memory, which
    the DataLoader passes to the main process without another copy.

    Each batch: 'image' float32 (B, C, X, Y, Z), 'mask' uint8 (B, 1, X, Y, Z) or absent when the
    dataset has no masks, 'label' int64 (B,), 'index' (record indices), 'slice', 'corner' (B, 3) int64,
    'epoch' and 'batch' (its number in the epoch) as ints. The caller owns every tensor."""

    def __init__(self, path, batch_size, *, seed=0, split='train', mode='patch', patch=(96, 96, 32), augment='none',
                 foreground_fraction=0.33, slices_with_mask_only=False, drop_last=False, skip_corrupt=False,
                 io='auto', ring=4, cache_bytes=None, gpu_memory_limit=None, preload=False, augment_device='cpu',
                 threads=None, rank=None, world_size=None, device='cpu', pin_memory=False):
        super().__init__()
        self.path = os.fspath(path)
        if (rank is None) != (world_size is None):
            raise ValueError('give both rank and world_size, or neither')
        if world_size is None:
            rank, world_size = rank_world()
        self.rank, self.world_size = int(rank), int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError('rank must be in 0..%d (world_size %d), not %d' % (self.world_size - 1, self.world_size,
                                                                                 self.rank))
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError('threads must be an int >= 1 or None, not %r' % (threads,))
        self.device = torch.device(device)
        if self.device.type not in ('cpu', 'cuda'):
            raise ValueError("device must be 'cpu' or a CUDA device, not %r" % (device,))
        if self.device.type == 'cuda' and not torch.cuda.is_available():
            raise ValueError("device=%r: this torch has no CUDA device" % (device,))
        self.pin_memory = bool(pin_memory) or self.device.type == 'cuda'
        if self.pin_memory and not torch.cuda.is_available():
            warnings.warn('cirrdata.torch.BatchDataset: pin_memory=True but CUDA is not available: not pinning')
            self.pin_memory = False
        self.threads = threads
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        sampling = dict(mode=mode, patch=None if patch is None else tuple(int(v) for v in patch), augment=str(augment),
                        split=split, foreground_fraction=float(foreground_fraction),
                        slices_with_mask_only=bool(slices_with_mask_only), drop_last=bool(drop_last),
                        skip_corrupt=bool(skip_corrupt))
        self.options = dict(sampling, io=io, ring=ring, cache_bytes=cache_bytes, gpu_memory_limit=gpu_memory_limit,
                            preload=preload, device=augment_device)
        self._sampling = sampling
        # One short-lived loader in this process checks every option with the library's own messages
        # and gives the epoch's size; the per-process loaders come later (lazily, after any fork).
        with Loader(self.path, batch_size=self.batch_size, seed=self.seed, rank=self.rank,
                    world_size=self.world_size, threads=1, **dict(self.options, cache_bytes=0, preload=False)) as probe:
            items = probe.items_per_epoch
        counts = {_batches(_per_rank(items, r, self.world_size), self.batch_size, drop_last)
                  for r in range(self.world_size)}
        if len(counts) > 1 and not drop_last:
            raise ValueError(
                '%s: %d samples over %d ranks in batches of %d give ranks %s batches per epoch; unequal counts '
                'stall DDP: pass drop_last=True (every rank then gets %d) or a batch size / world size that divide '
                'evenly' % (self.path, items, self.world_size, self.batch_size,
                            ' or '.join(str(c) for c in sorted(counts)), min(counts)))
        self.items = items
        self.batches_per_epoch = min(counts)
        if self.batches_per_epoch == 0:
            raise ValueError('%s: rank %d of %d has no batch (%d samples, batch_size %d, drop_last %s)'
                             % (self.path, self.rank, self.world_size, items, self.batch_size, drop_last))
        with open(os.path.join(self.path, 'manifest.json'), 'rb') as f:
            self.dataset_id = hashlib.sha256(f.read()).hexdigest()
        self._epochs = _EpochCounter()
        self._loader = None  # (pid, stride, offset, Loader) of this process

    def __len__(self):
        """Batches per epoch of this rank (what a DataLoader over this dataset yields)."""
        return self.batches_per_epoch

    @property
    def augment_device_in_use(self):
        """What runs augmentation in this process (cirrdata.Loader.device), None before its first batch."""
        return self._loader[3].device if self._loader is not None and self._loader[0] == os.getpid() else None

    @property
    def samples_per_epoch(self):
        """Samples of an epoch of this rank."""
        return _per_rank(self.items, self.rank, self.world_size)

    # ---- epochs and resume ----

    def set_epoch(self, epoch):
        """The next pass over the DataLoader is epoch `epoch` (then epoch + 1, ...)."""
        epoch = int(epoch)
        if not 0 <= epoch < 2 ** 32:
            raise ValueError('epoch must be in 0..%d, not %d' % (2 ** 32 - 1, epoch))
        self._epochs.set(epoch)

    def _identity(self):
        return {'dataset': self.dataset_id, 'seed': self.seed, 'world_size': self.world_size,
                'batch_size': self.batch_size, 'sampling': json.loads(json.dumps(self._sampling))}

    def state_dict(self, epoch, batches):
        """The resume state after training on `batches` batches of epoch `epoch` (0..len(self)), with
        what identifies the stream (dataset manifest hash, seed, world size, batch size, sampling
        options)."""
        epoch, batches = int(epoch), int(batches)
        if not 0 <= batches <= self.batches_per_epoch:
            raise ValueError('batches must be in 0..%d (an epoch of this rank), not %d' % (self.batches_per_epoch,
                                                                                         batches))
        if batches == self.batches_per_epoch:
            epoch, batches = epoch + 1, 0
        return dict(self._identity(), version=_STATE_VERSION, epoch=epoch, batches=batches)

    def load_state_dict(self, state):
        """Continues from a state_dict(): the next pass over the DataLoader starts with the batch after
        the ones trained on. Raises ValueError when the state comes from another stream."""
        if not isinstance(state, dict) or state.get('version') != _STATE_VERSION:
            raise ValueError('not a cirrdata.torch.BatchDataset state (version %r)' % (
                state.get('version') if isinstance(state, dict) else type(state).__name__))
        mine = self._identity()
        for key, want in mine.items():
            got = state.get(key)
            if key == 'sampling' and got != want:
                diff = sorted(k for k in set(want) | set(got or {}) if (got or {}).get(k) != want.get(k))
                raise ValueError('state was saved with other sampling options (%s: %s, this dataset has %s)' % (
                    ', '.join(diff), {k: (got or {}).get(k) for k in diff}, {k: want.get(k) for k in diff}))
            if got != want and key == 'dataset':
                raise ValueError('state was saved for another dataset (manifest sha256 %s..., this one %s...)'
                                 % (str(got)[:12], want[:12]))
            if got != want:
                raise ValueError('state was saved with %s %r, this dataset has %r' % (key, got, want))
        epoch, batches = int(state['epoch']), int(state['batches'])
        if not 0 <= batches < self.batches_per_epoch:
            raise ValueError('state batches must be in 0..%d, not %d' % (self.batches_per_epoch - 1, batches))
        self._epochs.set(epoch, epoch, batches)

    # ---- iteration ----

    def _process_loader(self, stride, offset):
        """This process's Loader delivering batches offset, offset + stride, ... (made on first use;
        one inherited through fork is dropped untouched: its threads live in the parent)."""
        pid = os.getpid()
        if self._loader is not None:
            lpid, lstride, loffset, loader = self._loader
            if lpid == pid and (lstride, loffset) == (stride, offset):
                return loader
            if lpid == pid:
                loader.close()
            else:
                loader._forget()
            self._loader = None
        threads = self.threads or max(1, (os.cpu_count() or 1) // stride)
        options = dict(self.options)
        if torch.utils.data.get_worker_info() is not None:  # batches go to the main process from the ring
            options.update(views=True, ring_shared=True, ring=max(options['ring'] or 4, 6))
        loader = Loader(self.path, batch_size=self.batch_size, seed=self.seed, rank=self.rank,
                        world_size=self.world_size, threads=threads, batch_stride=stride, batch_offset=offset,
                        **options)
        loader.stopped_early = False
        self._loader = (pid, stride, offset, loader)
        return loader

    def _alloc(self):
        pin = self.pin_memory

        def alloc(name, shape, dtype, src):
            if not pin:
                return torch.from_numpy(_owned_copy(src))
            t = torch.empty(shape, dtype=_NUMPY[np.dtype(dtype)], pin_memory=True)
            np.copyto(t.numpy(), src)
            return t
        return alloc

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        if info is not None and self.device.type == 'cuda':
            raise ValueError("BatchDataset(device=%r) delivers CUDA tensors only with num_workers=0; with workers "
                             "use DataLoader(pin_memory=True) and .to('cuda', non_blocking=True)" % str(self.device))
        if workers > _MAX_WORKERS:
            raise ValueError('at most %d DataLoader workers (got %d)' % (_MAX_WORKERS, workers))
        epoch, first = self._epochs.begin(worker)
        return self._pass(epoch, first, workers, worker, info is not None)

    def _pass(self, epoch, first, workers, worker, in_worker):
        """Batches first + worker, first + worker + workers, ... of the epoch."""
        start = first + worker
        if start >= self.batches_per_epoch:
            return
        loader = self._process_loader(workers, start % workers)
        state = {'seed': self.seed, 'epoch': epoch, 'position': start * self.batch_size, 'world_size': self.world_size}
        # A pass that did not read its epoch's end (drop_last across ranks, or a trainer that stopped
        # iterating) left the loader mid-epoch or before the end marker: reposition.
        # (batches lent to the main process stay intact: their slots stay out of the ring until it lets them go)
        if loader.state_dict() != state or loader.stopped_early:
            loader.load_state_dict(state)
        loader.stopped_early = True  # until this pass reads its epoch's end
        shared = self._shared_ring(loader) if in_worker else None
        # a worker's loader hands out its borrowed batches themselves (raw), lent to the main process by shared
        for b in loader._epoch(None if in_worker else self._alloc(), raw=in_worker):
            if (b.contents.number if in_worker else b['batch']) >= self.batches_per_epoch:
                if in_worker:  # drop_last across ranks: this rank's extra batch
                    loader._returned.append(b)
                break
            if shared:
                out = shared.send(b)
            else:
                out = {'image': b['image'], 'mask': b['mask'], 'label': torch.from_numpy(b['label'].astype(np.int64))}
                out.update((k, torch.from_numpy(b[k])) for k in ('index', 'slice', 'corner'))
                out.update(epoch=b['epoch'], batch=b['batch'])
                if out['mask'] is None:
                    del out['mask']
            b = None
            if self.device.type == 'cuda':
                out = {k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in out.items()}
            yield out
        else:
            loader.stopped_early = False  # the epoch's end was read: the loader stands at the next one

    def _shared_ring(self, loader):
        """The _SharedRing of this worker's loader (a new one for a new loader)."""
        shared = self.__dict__.get('_shared')
        if shared is None or shared.loader is not loader or shared.id[0] != os.getpid():
            shared = self._shared = _SharedRing(loader)
        return shared

    def close(self):
        """Closes this process's loader (a later pass opens another)."""
        if self._loader is not None:
            pid, _, _, loader = self._loader
            loader.close() if pid == os.getpid() else loader._forget()
            self._loader = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state['_loader'] = None  # never pickled: each process opens its own
        state.pop('_shared', None)
        return state

    def __repr__(self):
        return 'cirrdata.torch.BatchDataset(%r, batch_size=%d, rank %d of %d, %d batches per epoch)' % (
            self.path, self.batch_size, self.rank, self.world_size, self.batches_per_epoch)


def _split_match(split, wanted):
    return wanted == '*' or split in [s.strip() for s in wanted.split(',')]


class RecordDataset(torch.utils.data.Dataset):
    """The records of a converted dataset as a map-style dataset: ds[i] is a dict with 'image'
    (C, X, Y, Z) and 'mask' (1, X, Y, Z) tensors in the stored dtypes (no mask: absent), 'label',
    'affine' (4x4 float64 tensor), 'spacing', 'key', 'patient_id', 'sequence', 'split' and 'index'
    (the record's index in the dataset). split: a split name, several separated by commas, or '*'.
    Each process opens the dataset on first use (safe with fork and spawn workers)."""

    def __init__(self, path, split='*'):
        self.path = os.fspath(path)
        with open(os.path.join(self.path, 'manifest.json'), 'rb') as f:
            manifest = json.load(f)
        self.split = split
        self.indices = [i for i, r in enumerate(manifest.get('records', [])) if _split_match(r.get('split'), split)]
        if not self.indices:
            raise ValueError('%s: no records in split(s) %r' % (self.path, split))
        self._ds = None

    def __len__(self):
        return len(self.indices)

    def _dataset(self):
        if self._ds is None or self._ds[0] != os.getpid():
            self._ds = (os.getpid(), Dataset(self.path))
        return self._ds[1]

    def __getitem__(self, i):
        if not -len(self) <= i < len(self):
            raise IndexError('record index out of range (%d records)' % len(self))
        idx = self.indices[i]
        r = self._dataset()[idx]
        out = {'image': torch.from_numpy(r['image']), 'label': int(r.get('label', -1)), 'index': idx}
        if r.get('mask') is not None:
            out['mask'] = torch.from_numpy(r['mask'])
        if r.get('affine') is not None:
            out['affine'] = torch.from_numpy(np.asarray(r['affine'], dtype=np.float64))
        for k in ('spacing', 'key', 'patient_id', 'sequence', 'split'):
            if k in r:
                out[k] = r[k]
        return out

    def __getstate__(self):
        return dict(self.__dict__, _ds=None)


def collate_records(records, pad=True):
    """A batch from RecordDataset items: tensors of different shapes are zero-padded at the end of each
    axis to the largest and stacked (pad=True; 'shape' then holds each record's own (X, Y, Z)), or kept
    as lists (pad=False); 'label' and 'index' become int64 tensors, 'affine' a stacked tensor, the rest
    lists. Usable as DataLoader(RecordDataset(...), batch_size=B, collate_fn=collate_records)."""
    if not records:
        raise ValueError('collate_records: no records')
    out = {}
    for key in records[0]:
        values = [r[key] for r in records]
        if key in ('label', 'index'):
            out[key] = torch.tensor(values, dtype=torch.int64)
        elif key == 'affine':
            out[key] = torch.stack(values)
        elif torch.is_tensor(values[0]):
            if not pad:
                out[key] = values
                continue
            full = [max(v.shape[d] for v in values) for d in range(values[0].dim())]
            t = values[0].new_zeros([len(values)] + full)
            for j, v in enumerate(values):
                t[(j,) + tuple(slice(0, n) for n in v.shape)] = v
            out[key] = t
        else:
            out[key] = values
    if pad and torch.is_tensor(records[0].get('image')):
        out['shape'] = torch.tensor([list(r['image'].shape[1:]) for r in records], dtype=torch.int64)
    return out
