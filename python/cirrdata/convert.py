"""cirrdata.convert and cirrdata.merge: converting a source dataset in-process (ctypes over cd_convert and
cd_dataset_merge_with_progress; cirrdata/convert.h, cirrdata/dataset.h).

    summary = cirrdata.convert('CirrMRI600+', 'out/liver-raw', layout='cirrmri600', recipe='raw',
                               threads=8, shard_size='64M', healthy=True)
    summary['records'], summary['bytes_read'], summary['counts']

    # the same conversion in parts (e.g. on several machines), then joined:
    for i in (1, 2, 3):
        cirrdata.convert(src, 'parts/%d' % i, layout='cirrmri600', part=(i, 3))
    cirrdata.merge(['parts/1', 'parts/2', 'parts/3'], 'out/liver-raw')

Both are the library's own calls, so they behave as `cirrdata convert` and `cirrdata merge`: a killed
conversion resumes when called again with the same arguments and gives the same bytes; the output folder
takes one writer at a time (a second writer gets CirrdataError naming the holder; the lock of a process
that died is the kernel's to drop, so it never blocks); a failure raises CirrdataError with the library's
message. The GIL is released while the library works; progress (a callable progress(done, total, bytes))
is called in the calling thread, with the GIL, as the library reports (convert: cases done of this
part's, source bytes read; merge: shards linked or copied of all the parts', their bytes). An exception
the callable raises does not stop the library: the first one is raised when the call returns.
"""
import ctypes
import json
import os

from . import _lib as _l

_MODES = {'volume': 0, 'patch': 1, 'slice': 2}  # enum cd_loader_mode (augment.h)
_NON_FINITE = {'error': 0, 'zero': 1}            # enum cd_non_finite (recipe.h)
_U32_MAX, _U64_MAX, _I64_MAX, _INT_MAX = 2 ** 32 - 1, 2 ** 64 - 1, 2 ** 63 - 1, 2 ** 31 - 1

PROGRESS_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64)


class _Recipe(ctypes.Structure):
    """struct cd_recipe (recipe.h); field order is the header's (enums as int)."""
    _fields_ = [('name', ctypes.c_char * 65),
                ('reorient', ctypes.c_bool),
                ('resample', ctypes.c_int),
                ('spacing', ctypes.c_double * 3),
                ('shape', ctypes.c_int64 * 3),
                ('image_order', ctypes.c_int),
                ('mask_order', ctypes.c_int),
                ('anisotropy_threshold', ctypes.c_double),
                ('separate_z', ctypes.c_int),
                ('order_z', ctypes.c_int),
                ('crop', ctypes.c_int),
                ('margin', ctypes.c_int64 * 3),
                ('normalize', ctypes.c_int),
                ('region', ctypes.c_int),
                ('percentiles', ctypes.c_double * 2),
                ('range', ctypes.c_double * 2),
                ('has_then', ctypes.c_bool),
                ('then_mean', ctypes.c_double),
                ('then_std', ctypes.c_double),
                ('slices', ctypes.c_bool),
                ('slice_channels', ctypes.c_int),
                ('dtype', ctypes.c_int),
                ('chunk', ctypes.c_uint32 * 3),
                ('zstd_level', ctypes.c_int),
                ('non_finite', ctypes.c_int)]


class _Options(ctypes.Structure):
    """struct cd_convert_options (convert.h)."""
    _fields_ = [('layout', ctypes.c_char_p),
                ('root', ctypes.c_char_p),
                ('out_dir', ctypes.c_char_p),
                ('recipe', _Recipe),
                ('threads', ctypes.c_int),
                ('shard_size', ctypes.c_uint64),
                ('part_index', ctypes.c_int),
                ('part_count', ctypes.c_int),
                ('strict', ctypes.c_bool),
                ('healthy', ctypes.c_bool),
                ('pair_sequences', ctypes.c_bool),
                ('max_bytes', ctypes.c_uint64),
                ('progress', PROGRESS_FN),
                ('progress_user', ctypes.c_void_p),
                ('augment', ctypes.c_char_p),
                ('copies', ctypes.c_uint32),
                ('seed', ctypes.c_uint64),
                ('aug_mode', ctypes.c_int),
                ('aug_patch', ctypes.c_int64 * 3),
                ('foreground_fraction', ctypes.c_double),
                ('no_original', ctypes.c_bool),
                ('device', ctypes.c_int),
                ('fold', ctypes.c_int),
                ('splits_file', ctypes.c_char_p)]


class _Result(ctypes.Structure):
    """struct cd_convert_result (convert.h)."""
    _fields_ = [('records', ctypes.c_uint64),
                ('skipped', ctypes.c_uint64),
                ('shards', ctypes.c_uint64),
                ('bytes_read', ctypes.c_uint64),
                ('bytes_written', ctypes.c_uint64),
                ('resumed_records', ctypes.c_uint64),
                ('seconds', ctypes.c_double),
                ('augment_seconds', ctypes.c_double),
                ('device', ctypes.c_char * 16),
                ('device_note', ctypes.c_char * 256),
                ('note', ctypes.c_char * 1024)]


def _declare(lib):
    if getattr(lib, '_cirrdata_convert_declared', False):
        return
    E = ctypes.POINTER(_l.CdError)
    sigs = {
        'cd_convert_options_init': ([ctypes.POINTER(_Options)], None),
        'cd_convert': ([ctypes.POINTER(_Options), ctypes.POINTER(_Result), E], ctypes.c_int),
        'cd_recipe_load': ([ctypes.c_char_p, ctypes.POINTER(_Recipe), E], ctypes.c_int),
        'cd_recipe_parse': ([ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(_Recipe), E], ctypes.c_int),
        'cd_parse_bytes': ([ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint64)], ctypes.c_bool),
        'cd_dataset_merge_with_progress': ([ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int,
                                            PROGRESS_FN, ctypes.c_void_p, E], ctypes.c_int),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = res
    lib._cirrdata_convert_declared = True


def _arg_error(text):
    """The CirrdataError the library would give for a bad argument (status CD_ERR_ARG)."""
    from . import _LIB, CirrdataError
    return CirrdataError(text, _LIB.cd_status_name(1).decode())


def _int(name, value, lo, hi, bounds):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError('%s must be an integer, not %r' % (name, value))
    if not lo <= value <= hi:
        raise _arg_error('%s must be in %s (got %d)' % (name, bounds, value))
    return value


def _bytes(lib, name, value):
    """A byte size: an integer, or text in the library's grammar ('256M', '8GiB')."""
    if isinstance(value, str):
        out = ctypes.c_uint64()
        if not lib.cd_parse_bytes(value.encode(), ctypes.byref(out)):
            raise _arg_error("bad %s '%s' (digits, then optionally K, M, G or T)" % (name, value))
        return out.value
    return _int(name, value, 1, _U64_MAX, '1..%d' % _U64_MAX)


class _Progress:
    """A Python callable behind a cd_progress_fn; keeps the first exception it raises for the caller."""

    def __init__(self, fn):
        self.fn, self.error = fn, None
        self.c = PROGRESS_FN(self._call) if fn is not None else PROGRESS_FN()

    def _call(self, user, done, total, nbytes):
        if self.error is not None:
            return
        try:
            self.fn(int(done), int(total), int(nbytes))
        except BaseException as e:  # never unwinds through C; raised when the call returns
            self.error = e

    def reraise(self):
        if self.error is not None:
            raise self.error


def _load_recipe(lib, recipe, o):
    from . import _raise
    err = _l.CdError()
    if isinstance(recipe, dict):
        if lib.cd_recipe_parse(json.dumps(recipe).encode(), b'recipe (a dict)', ctypes.byref(o.recipe),
                               ctypes.byref(err)):
            _raise(err)
    elif lib.cd_recipe_load(os.fsencode(recipe), ctypes.byref(o.recipe), ctypes.byref(err)):
        _raise(err)


def _manifest(out):
    with open(os.path.join(out, 'manifest.json'), 'rb') as f:
        return json.loads(f.read().decode('utf-8'))


# convert's options beyond the positional ones, with the CLI's names (cirrdata convert --help).
_OPTION_NAMES = ('shard_size', 'strict', 'healthy', 'pair_t1t2', 'non_finite', 'max_bytes', 'augment', 'copies',
                 'seed', 'mode', 'patch', 'foreground_fraction', 'no_original', 'device', 'fold', 'splits')


def _options(lib, source, out, layout, recipe, part, threads, options, keep):
    """A filled cd_convert_options; keep receives every Python object the struct points into."""
    unknown = sorted(set(options) - set(_OPTION_NAMES))
    if unknown:
        raise TypeError('convert: unknown option(s) %s (known: %s)' % (', '.join(unknown), ', '.join(_OPTION_NAMES)))
    o = _Options()
    lib.cd_convert_options_init(ctypes.byref(o))
    keep += [os.fsencode(layout), os.fsencode(os.fspath(source)), os.fsencode(os.fspath(out))]
    o.layout, o.root, o.out_dir = keep[-3:]
    _load_recipe(lib, recipe, o)
    if options.get('non_finite') is not None:
        if options['non_finite'] not in _NON_FINITE:
            raise _arg_error("bad non_finite %r (error or zero)" % (options['non_finite'],))
        o.recipe.non_finite = _NON_FINITE[options['non_finite']]  # stored with the recipe, as the CLI does
    o.threads = _int('threads', threads, 0, 1024, '0..1024, 0 for one per online CPU')
    if part is not None:
        if len(part) != 2:
            raise ValueError('part must be (I, N) with 1 <= I <= N, or None')
        n = _int('part count', part[1], 1, _INT_MAX, '1..%d' % _INT_MAX)
        o.part_index, o.part_count = _int('part', part[0], 1, n, '1..%d (of %d parts)' % (n, n)), n
    if options.get('shard_size') is not None:
        o.shard_size = _bytes(lib, 'shard_size', options['shard_size'])
        if o.shard_size < 4096:
            raise _arg_error("bad shard_size %d (at least 4096 bytes)" % o.shard_size)
    if options.get('max_bytes') is not None:
        o.max_bytes = _bytes(lib, 'max_bytes', options['max_bytes'])
    o.strict = bool(options.get('strict', False))
    o.healthy = bool(options.get('healthy', False))
    o.pair_sequences = bool(options.get('pair_t1t2', False))
    device = options.get('device', 'cpu')
    if device not in _l.DEVICES:
        raise ValueError("device must be 'cpu', 'vulkan' or 'auto', not %r" % (device,))
    o.device = _l.DEVICES[device]
    if options.get('fold') is not None:
        o.fold = _int('fold', options['fold'], 0, _INT_MAX, '0..%d' % _INT_MAX)  # the library checks the range
    if options.get('splits') is not None:
        keep.append(os.fsencode(os.fspath(options['splits'])))
        o.splits_file = keep[-1]
    _augment_options(o, options, keep)
    return o


def _augment_options(o, options, keep):
    """The augmented copies' options (only with augment), checked as the CLI checks them."""
    augment = options.get('augment')
    if augment in (None, 'none'):
        given = [k for k in ('copies', 'seed', 'mode', 'patch', 'foreground_fraction', 'no_original')
                 if options.get(k) not in (None, False)]
        if given:
            raise _arg_error('%s needs augment' % given[0])
        return
    keep.append(os.fsencode(augment))
    o.augment = keep[-1]
    o.copies = _int('copies', options.get('copies', 1), 1, 1024, '1..1024')
    o.seed = _int('seed', options.get('seed', 0), 0, _U64_MAX, '0..%d' % _U64_MAX)
    mode = options.get('mode', 'volume')
    if mode not in _MODES:
        raise _arg_error("bad mode %r (volume, patch or slice)" % (mode,))
    o.aug_mode = _MODES[mode]
    patch = options.get('patch')
    if patch is not None:
        p = [_int('patch', v, 1, 4096, '1..4096 per axis') for v in patch]
        if len(p) != 3:
            raise ValueError('patch must be (X, Y, Z)')
        for i in range(3):
            o.aug_patch[i] = p[i]
    if mode == 'patch' and patch is None:
        raise _arg_error('mode patch needs patch=(X, Y, Z)')
    if mode == 'slice' and patch is not None:
        raise _arg_error('mode slice takes no patch')
    fgf = float(options.get('foreground_fraction', 0.33))  # the loader's default, as the CLI's
    if not 0 <= fgf <= 1:
        raise _arg_error('bad foreground_fraction %r (0..1)' % fgf)
    o.foreground_fraction = fgf
    o.no_original = bool(options.get('no_original', False))


def convert(source, out, *, layout, recipe='raw', part=None, threads=0, progress=None, **options):
    """Converts the dataset at source (layout 'cirrmri600' or 'nnunet') into the dataset folder out, in
    this process, as `cirrdata convert` does (see the module docstring).

    recipe: a preset name ('raw', 'nnunet-3d', 'synergynet-3d', 'cirrhosisstage-2d'), the path of a JSON
    recipe, or a recipe as a dict. part: (I, N) converts only part I of N (1-based; join them with
    merge()), None everything. threads: worker threads, 0 for one per online CPU. progress: a callable
    progress(done, total, bytes), cases done of this part's and source bytes read so far.
    options (the CLI's options, underscores for dashes): shard_size (bytes, or '256M'), strict, healthy,
    pair_t1t2, non_finite ('error' or 'zero'), max_bytes, device ('cpu', 'vulkan', 'auto'), fold and
    splits (nnunet: the fold's validation cases get split 'valid', from the splits_final.json file
    splits, else <source>/splits_final.json, else nnU-Net's default 5-fold split), and the
    augmented copies: augment ('nnunet', 'cirrhosisstage' or a pipeline JSON file), copies, seed, mode
    ('volume', 'patch', 'slice'), patch, foreground_fraction, no_original.

    Returns the summary as a dict: out, recipe, part ([I, N] or None), records, skipped, shards,
    bytes_read, bytes_written, resumed_records, seconds, cases_per_second, augment_seconds, device,
    device_note, note (empty when nothing was noticed) and counts (the manifest's). Raises CirrdataError
    with the library's message on failure."""
    from . import _LIB, _raise
    _declare(_LIB)
    keep = []
    o = _options(_LIB, source, out, layout, recipe, part, threads, options, keep)
    cb = _Progress(progress)
    o.progress = cb.c
    res = _Result()
    err = _l.CdError()
    if _LIB.cd_convert(ctypes.byref(o), ctypes.byref(res), ctypes.byref(err)):
        _raise(err)
    cb.reraise()
    records, skipped = int(res.records), int(res.skipped)
    return {
        'out': os.fspath(out),
        'recipe': o.recipe.name.decode('utf-8', 'replace'),
        'part': [o.part_index, o.part_count] if o.part_count else None,
        'records': records,
        'skipped': skipped,
        'shards': int(res.shards),
        'bytes_read': int(res.bytes_read),
        'bytes_written': int(res.bytes_written),
        'resumed_records': int(res.resumed_records),
        'seconds': float(res.seconds),
        'cases_per_second': (records + skipped) / res.seconds if res.seconds > 0 else 0.0,
        'augment_seconds': float(res.augment_seconds),
        'device': res.device.decode('utf-8', 'replace'),
        'device_note': res.device_note.decode('utf-8', 'replace'),
        'note': res.note.decode('utf-8', 'replace'),
        'counts': _manifest(out).get('counts'),
    }


def merge(parts, out, progress=None):
    """Joins the folders of all N parts of one conversion (convert(..., part=(I, N)), in any order) into
    the dataset folder out, as `cirrdata merge` does: shards are hard-linked where possible, else copied;
    parts of other conversions, missing or repeated parts and anything already in out's shards/ that is
    not the parts' own are refused (CirrdataError naming the part and what differs). progress: a callable
    progress(done, total, bytes), shards done of all the parts' and their bytes.

    Returns the summary as a dict: out, parts (N), records, skipped, shards, bytes (of the shards) and
    counts (the manifest's)."""
    from . import _LIB, _raise
    _declare(_LIB)
    if isinstance(parts, (str, bytes, os.PathLike)):
        raise TypeError('parts must be a list of part folders, not one path')
    names = [os.fsencode(os.fspath(p)) for p in parts]
    if not names:
        raise _arg_error('merge: need an output and at least one part')
    arr = (ctypes.c_char_p * len(names))(*names)
    cb = _Progress(progress)
    err = _l.CdError()
    if _LIB.cd_dataset_merge_with_progress(os.fsencode(os.fspath(out)), arr, len(names), cb.c, None,
                                           ctypes.byref(err)):
        _raise(err)
    cb.reraise()
    m = _manifest(out)
    shards = m.get('shards') or []
    return {
        'out': os.fspath(out),
        'parts': len(names),
        'records': int((m.get('counts') or {}).get('records', len(m.get('records') or []))),
        'skipped': len((m.get('source') or {}).get('skipped') or []),
        'shards': len(shards),
        'bytes': sum(int(s.get('size', 0)) for s in shards),
        'counts': m.get('counts'),
    }
