"""cirrdata: read converted libcirrdata datasets from Python (a ctypes binding over libcirrdata.so).

    import cirrdata
    with cirrdata.Dataset('out/liver-raw') as ds:
        print(len(ds), ds.manifest['counts'])
        sample = ds[0]          # dict: 'image', 'mask', and every metadata key of the record
        sample['image']         # numpy array (C, X, Y, Z), the stored dtype
        sample['affine']        # 4x4 numpy array, voxel -> world (mm, RAS+)

The library is found through CIRRDATA_LIB (path of libcirrdata.so; when set, nothing else is
tried), else the library installed with the package (pip install, meson install), else, in a source
checkout, the build tree next to this package (<repo>/build/libcirrdata/libcirrdata.so), else
ctypes.util.find_library('cirrdata') (cirrdata/_lib.py). Importing fails (ImportError) when the library's
version or the size of a C struct the package mirrors differs from the package's (cirrdata/_abi.py).
Every checksum is verified by the C library as data is read; failures raise CirrdataError carrying
the library's message (which names the shard file, record and chunk).

Arrays are allocated by numpy and filled in place by the C library (one copy from the decoded chunks,
no further copy).  ctypes releases the GIL during the C calls, so a Dataset may be read from several
threads at once.  A Dataset can be pickled (it reopens by path), e.g. for DataLoader workers.

cirrdata.convert(source, out, layout=..., recipe=...) and cirrdata.merge(parts, out) run the library's
conversion in this process (cirrdata/convert.py); cirrdata.distributed spreads the parts of one over a
Dask cluster (importing cirrdata does not import Dask).
"""
import ctypes
import json
import os

import numpy as np

from . import _abi
from . import _lib as _l
from ._version import __version__

__all__ = ['Dataset', 'Loader', 'CirrdataError', 'version', 'limits', 'set_limits', 'load', 'Image', 'convert', 'merge']

_LIB = _l.load()
_abi.check(_LIB)


class CirrdataError(Exception):
    """An error reported by libcirrdata. str(e) is the library's one-line message; e.status is the
    short status name ("io", "format", "corrupt", ...)."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


def _raise(err):
    msg = err.message.decode('utf-8', 'replace')
    name = _LIB.cd_status_name(err.status)
    raise CirrdataError(msg or 'libcirrdata error', name.decode() if name else None)


def version():
    """The version string of the loaded libcirrdata (e.g. "0.1.0")."""
    return _LIB.cd_version().decode()


_LIMIT_NAMES = tuple(name for name, _ in _l.CdLimits._fields_)


def limits(defaults=False):
    """The library's caps on untrusted input (cirrdata/limits.h), as a dict: max_dim, max_voxels,
    max_decompressed_bytes, max_json_bytes, max_csv_bytes. defaults=True gives the built-in values.
    Raises CirrdataError when a cap comes from a malformed environment variable (e.g.
    CIRRDATA_MAX_JSON_BYTES=12X)."""
    lim = _l.CdLimits()
    if defaults:
        _LIB.cd_limits_defaults(ctypes.byref(lim))
    else:
        err = _l.CdError()
        if _LIB.cd_limits_get(ctypes.byref(lim), ctypes.byref(err)) != 0:
            _raise(err)
    return {name: int(getattr(lim, name)) for name in _LIMIT_NAMES}


# What this module set (0: the environment variable or the default). cd_limits_set replaces every cap,
# so set_limits passes these for the caps it is not asked to change.
_SET = {name: 0 for name in _LIMIT_NAMES}


def set_limits(**caps):
    """Changes some caps for the whole process, e.g. set_limits(max_json_bytes=1 << 30); the others keep
    what they are. A value of 0 or None returns that cap to its environment variable or default.
    Returns limits()."""
    unknown = sorted(set(caps) - set(_LIMIT_NAMES))
    if unknown:
        raise TypeError('set_limits: unknown cap(s) %s (known: %s)' % (', '.join(unknown), ', '.join(_LIMIT_NAMES)))
    want = dict(_SET)
    for name, value in caps.items():
        v = int(value or 0)
        if v < 0:
            raise ValueError('set_limits: %s must be >= 0, not %d' % (name, v))
        want[name] = v
    lim = _l.CdLimits(**want)
    err = _l.CdError()
    if _LIB.cd_limits_set(ctypes.byref(lim), ctypes.byref(err)) != 0:
        _raise(err)
    _SET.update(want)
    return limits()


def library_path():
    """The path of the libcirrdata.so this module loaded."""
    return _LIB._cirrdata_path


def _np_dtype(code):
    return np.dtype(_LIB.cd_dtype_name(code).decode()).newbyteorder('=')


class _Record:
    """A record header read from the dataset (owns the cd_record; the shard belongs to the dataset)."""

    def __init__(self, ds, i):
        self._ds = ds
        self.rec = ctypes.c_void_p()
        self.shard = ctypes.c_void_p()
        err = _l.CdError()
        if _LIB.cd_dataset_read_record(ds._handle(), i, ctypes.byref(self.rec), ctypes.byref(self.shard),
                                       ctypes.byref(err)):
            _raise(err)

    def close(self):
        if self.rec:
            _LIB.cd_record_destroy(self.rec)
            self.rec = ctypes.c_void_p()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def metadata(self):
        return json.loads(_LIB.cd_record_metadata(self.rec).decode('utf-8'))

    def info(self, t):
        ti = _l.CdTensorInfo()
        _LIB.cd_record_tensor_info(self.rec, t, ctypes.byref(ti))
        return ti

    def names(self):
        return [self.info(t).name.decode('ascii') for t in range(_LIB.cd_record_tensor_count(self.rec))]

    def find(self, name):
        t = _LIB.cd_record_find_tensor(self.rec, name.encode('ascii'))
        if t < 0:
            raise KeyError('record has no tensor %r' % name)
        return t

    def read(self, t):
        ti = self.info(t)
        arr = np.empty((ti.channels,) + tuple(ti.shape), _np_dtype(ti.dtype))
        err = _l.CdError()
        if _LIB.cd_record_read_tensor(self.shard, self.rec, t, arr.ctypes.data, ctypes.byref(err)):
            _raise(err)
        return arr

    def read_region(self, t, start, size):
        ti = self.info(t)
        start = [int(v) for v in start]
        size = [int(v) for v in size]
        if len(start) != 3 or len(size) != 3 or min(size) < 0:
            raise ValueError('start and size must be 3 integers (size >= 0)')
        arr = np.empty([ti.channels] + size, _np_dtype(ti.dtype))
        err = _l.CdError()
        if _LIB.cd_record_read_region(self.shard, self.rec, t, (ctypes.c_int64 * 3)(*start),
                                      (ctypes.c_int64 * 3)(*size), arr.ctypes.data, ctypes.byref(err)):
            _raise(err)
        return arr


class Dataset(_l.Closeable):
    """A converted dataset directory (manifest.json + shards/), opened read-only.

    len(ds) is the number of records; ds[i] (negative i counts from the end) reads record i and
    returns a dict: every metadata key of the record ('patient_id', 'sequence', 'split', 'label',
    'affine' as a 4x4 float64 array, 'spacing', 'orientation', 'original', 'mask_bbox', 'key', ...),
    then every tensor by name: 'image' (C, X, Y, Z) in the stored dtype and 'mask' (1, X, Y, Z) uint8,
    or None when the record has no mask.  ds.manifest is the manifest as a dict.
    The manifest is validated when the dataset is opened (shard paths must stay inside the
    directory); shards are opened on first use."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self._ds = ctypes.c_void_p()
        err = _l.CdError()
        if _LIB.cd_dataset_open(os.fsencode(self.path), ctypes.byref(self._ds), ctypes.byref(err)):
            self._ds = ctypes.c_void_p()
            _raise(err)
        self._len = int(_LIB.cd_dataset_record_count(self._ds))
        self.manifest = json.loads(_LIB.cd_dataset_manifest(self._ds).decode('utf-8'))

    def _handle(self):
        if not self._ds:
            raise ValueError('dataset %s is closed' % self.path)
        return self._ds

    def _index(self, i):
        i = int(i)
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError('record index out of range (dataset has %d records)' % self._len)
        return i

    def __len__(self):
        return self._len

    def __getitem__(self, i):
        with _Record(self, self._index(i)) as r:
            out = r.metadata()
            if 'affine' in out and out['affine'] is not None:
                out['affine'] = np.asarray(out['affine'], dtype=np.float64)
            out.setdefault('mask', None)
            for t, name in enumerate(r.names()):
                out[name] = r.read(t)
            return out

    def metadata(self, i):
        """Record i's metadata dict as stored (JSON values; no tensors are read)."""
        with _Record(self, self._index(i)) as r:
            return r.metadata()

    def tensor_names(self, i):
        """Names of record i's tensors, in stored order."""
        with _Record(self, self._index(i)) as r:
            return r.names()

    def read_region(self, i, start, size, tensor='image'):
        """The box [start, start+size) (voxels, all channels) of one tensor of record i, as an array
        (C, *size); only the chunks the box touches are read, parts outside the tensor are zero."""
        with _Record(self, self._index(i)) as r:
            return r.read_region(r.find(tensor), start, size)

    def __iter__(self):
        for i in range(self._len):
            yield self[i]

    def close(self):
        """Closes the dataset (idempotent)."""
        if self._ds:
            _LIB.cd_dataset_close(self._ds)
            self._ds = ctypes.c_void_p()

    def __getstate__(self):
        return {'path': self.path}

    def __setstate__(self, state):
        self.__init__(state['path'])

    def __repr__(self):
        return 'cirrdata.Dataset(%r, %d records%s)' % (self.path, self._len, '' if self._ds else ', closed')


from .convert import convert, merge  # noqa: E402  (cd_convert and cd_dataset_merge in-process; see cirrdata/convert.py)
from .loader import Loader  # noqa: E402  (training batches; see cirrdata/loader.py)
from .model import Model  # noqa: E402  (inference of the staging networks; see cirrdata/model.py)
from .nifti import Image, load  # noqa: E402  (NIfTI files into numpy; see cirrdata/nifti.py)
