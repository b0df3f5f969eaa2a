"""Loading libcirrdata.so and declaring the C functions the binding uses (ctypes).

The library is the path in the environment variable CIRRDATA_LIB when that is set (and then
nothing else is tried); otherwise the build tree next to this package
(<repo>/build/libcirrdata/libcirrdata.so), then the system's libraries
(ctypes.util.find_library('cirrdata')).  ImportError lists every place tried.
"""
import ctypes
import ctypes.util
import os

CD_ERROR_MESSAGE_MAX = 512
CD_TENSOR_NAME_MAX = 16


class Closeable:
    """Context manager and finaliser over the subclass's idempotent close() (Dataset, Loader, Model)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


# enum cd_device (cirrdata/device.h): one device enum for the loader, the converter and the model.
DEVICES = {'cpu': 0, 'vulkan': 1, 'auto': 2}


class CdError(ctypes.Structure):
    """struct cd_error (status.h)."""
    _fields_ = [('status', ctypes.c_int), ('message', ctypes.c_char * CD_ERROR_MESSAGE_MAX)]


class CdTensorInfo(ctypes.Structure):
    """struct cd_tensor_info (shard.h)."""
    _fields_ = [('name', ctypes.c_char * (CD_TENSOR_NAME_MAX + 1)),
                ('dtype', ctypes.c_int),
                ('codec', ctypes.c_int),
                ('channels', ctypes.c_uint32),
                ('shape', ctypes.c_uint32 * 3),
                ('chunk', ctypes.c_uint32 * 3),
                ('chunk_count', ctypes.c_uint32),
                ('chunk_grid', ctypes.c_uint32 * 3)]


class CdLimits(ctypes.Structure):
    """struct cd_limits (limits.h); field order is the header's."""
    _fields_ = [('max_dim', ctypes.c_uint64),
                ('max_voxels', ctypes.c_uint64),
                ('max_decompressed_bytes', ctypes.c_uint64),
                ('max_json_bytes', ctypes.c_uint64),
                ('max_csv_bytes', ctypes.c_uint64)]


def _candidates():
    env = os.environ.get('CIRRDATA_LIB')
    if env:  # an explicit choice: nothing else is tried
        return [('CIRRDATA_LIB', env)]
    tried = []
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    tried.append(('build tree', os.path.join(repo, 'build', 'libcirrdata', 'libcirrdata.so')))
    found = ctypes.util.find_library('cirrdata')
    tried.append(('find_library', found))
    return tried


def load():
    """Returns the loaded ctypes.CDLL with argtypes/restype declared, or raises ImportError."""
    errors = []
    for how, path in _candidates():
        if not path:
            errors.append("%s: ctypes.util.find_library('cirrdata') found nothing" % how)
            continue
        if how != 'find_library' and not os.path.exists(path):
            errors.append('%s: %s does not exist' % (how, path))
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            errors.append('%s: %s: %s' % (how, path, e))
            continue
        try:
            _declare(lib)
        except AttributeError as e:
            errors.append('%s: %s lacks a symbol (%s)' % (how, path, e))
            continue
        lib._cirrdata_path = path
        return lib
    raise ImportError('cirrdata: cannot load libcirrdata.so; tried ' + '; '.join(errors)
                      + ' (set CIRRDATA_LIB to the path of libcirrdata.so)')


def _declare(lib):
    P = ctypes.c_void_p
    PP = ctypes.POINTER(ctypes.c_void_p)
    E = ctypes.POINTER(CdError)
    st = ctypes.c_int
    sigs = {
        'cd_version': ([], ctypes.c_char_p),
        'cd_status_name': ([ctypes.c_int], ctypes.c_char_p),
        'cd_dtype_name': ([ctypes.c_int], ctypes.c_char_p),
        'cd_dataset_open': ([ctypes.c_char_p, PP, E], st),
        'cd_dataset_close': ([P], None),
        'cd_dataset_record_count': ([P], ctypes.c_uint64),
        'cd_dataset_manifest': ([P], ctypes.c_char_p),
        'cd_dataset_read_record': ([P, ctypes.c_uint64, PP, PP, E], st),
        'cd_record_destroy': ([P], None),
        'cd_record_metadata': ([P], ctypes.c_char_p),
        'cd_record_tensor_count': ([P], ctypes.c_uint32),
        'cd_record_find_tensor': ([P, ctypes.c_char_p], ctypes.c_int),
        'cd_record_tensor_info': ([P, ctypes.c_uint32, ctypes.POINTER(CdTensorInfo)], None),
        'cd_record_read_tensor': ([P, P, ctypes.c_uint32, P, E], st),
        'cd_record_read_region': ([P, P, ctypes.c_uint32, ctypes.POINTER(ctypes.c_int64),
                                   ctypes.POINTER(ctypes.c_int64), P, E], st),
        'cd_limits_defaults': ([ctypes.POINTER(CdLimits)], None),
        'cd_limits_get': ([ctypes.POINTER(CdLimits), E], st),
        'cd_limits_set': ([ctypes.POINTER(CdLimits), E], st),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = res
