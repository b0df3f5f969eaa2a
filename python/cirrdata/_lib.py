"""Loading libcirrdata.so and declaring the C functions the binding uses (ctypes).

Where the library is looked for, first match wins (ImportError lists every place tried and why each
failed):
  1. the path in the environment variable CIRRDATA_LIB, when that is set (and then nothing else);
  2. in an installed copy of the package (pip install, meson install), the library installed with it,
     which the generated module cirrdata/_installed.py names: inside the package directory (a wheel)
     or PREFIX/LIBDIR/libcirrdata.so.N (meson install);
  3. in a source checkout (no _installed.py), the build tree next to the package,
     <repo>/build/libcirrdata/libcirrdata.so;
  4. the system's libraries, ctypes.util.find_library('cirrdata').
The package then checks that the library matches it (cirrdata/_abi.py).
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


PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _installed_library():
    """The library installed with this copy of the package, or None in a source checkout."""
    try:
        from . import _installed  # generated at install time (python/meson.build)
    except ImportError:
        return None
    return os.path.join(PACKAGE_DIR, _installed.LIBRARY)  # LIBRARY may be absolute: join keeps it


def _candidates():
    """(how, path or None, why there is no path) in the order they are tried."""
    env = os.environ.get('CIRRDATA_LIB')
    if env:  # an explicit choice: nothing else is tried
        return [('CIRRDATA_LIB', env, None)]
    installed = _installed_library()
    if installed:
        tried = [('installed with the package', installed, None)]
    else:
        repo = os.path.dirname(os.path.dirname(PACKAGE_DIR))
        tried = [('build tree', os.path.join(repo, 'build', 'libcirrdata', 'libcirrdata.so'), None)]
    tried.append(('find_library', ctypes.util.find_library('cirrdata'),
                  "ctypes.util.find_library('cirrdata') found nothing"))
    return tried


def load():
    """Returns the loaded ctypes.CDLL with argtypes/restype declared, or raises ImportError."""
    errors = []
    for how, path, why in _candidates():
        if not path:
            errors.append('%s: %s' % (how, why))
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
        'cd_abi_struct_size': ([ctypes.c_char_p], ctypes.c_size_t),
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
