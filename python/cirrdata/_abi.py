"""The package against the library it loaded: every ctypes mirror of a C struct and the version.

A ctypes class mirrors a C struct field by field; when the C struct gains, loses or retypes a field and
the mirror does not follow (or the package is used with a library built from other sources), every field
after the change is read and written at the wrong offset, silently. So at import every mirror's
ctypes.sizeof is compared with the library's sizeof (cd_abi_struct_size, cirrdata/abi.h), and the
package's version with cd_version(); any difference raises ImportError naming the struct, both sizes and
the library's path.

MIRRORS is the one list of the package's mirrors; tests/python/test_abi.py fails on a ctypes.Structure
subclass in the package that it lacks.
"""
import ctypes

from . import _lib, _version, convert, loader, model, nifti

MIRRORS = (
    ('cd_error', _lib.CdError),
    ('cd_tensor_info', _lib.CdTensorInfo),
    ('cd_limits', _lib.CdLimits),
    ('cd_recipe', convert._Recipe),
    ('cd_convert_options', convert._Options),
    ('cd_convert_result', convert._Result),
    ('cd_loader_options', loader._Options),
    ('cd_loader_device_stats', loader._DeviceStats),
    ('cd_batch', loader._Batch),
    ('cd_loader_state', loader._State),
    ('cd_model_options', model._Options),
    ('cd_gpu_stats', model._GpuStats),
    ('cd_nifti_header', nifti.CdNiftiHeader),
    ('cd_orientation', nifti.CdOrientation),
)

_FIX = ('rebuild or reinstall the package and the library from the same sources so that they match '
        '(pip install . or meson install from one checkout; in a checkout, ninja -C build), or set '
        'CIRRDATA_LIB to the libcirrdata.so built with this package')


def mismatches(lib, mirrors=MIRRORS, version=None):
    """The differences between the package and lib, one line each (empty when they match)."""
    version = _version.__version__ if version is None else version
    out = []
    lib_version = lib.cd_version().decode()
    if lib_version != version:
        out.append('the package is version %s but the library is version %s' % (version, lib_version))
    for name, cls in mirrors:
        want = lib.cd_abi_struct_size(name.encode())
        have = ctypes.sizeof(cls)
        mirror = '%s.%s' % (cls.__module__, cls.__qualname__)
        if want == 0:
            out.append('struct %s is unknown to the library (its mirror %s is %d bytes)' % (name, mirror, have))
        elif want != have:
            out.append('struct %s is %d bytes in the library but %d bytes in its mirror %s'
                       % (name, want, have, mirror))
    return out


def check(lib):
    """Raises ImportError when lib (a loaded library, _lib.load()) does not match this package."""
    bad = mismatches(lib)
    if bad:
        raise ImportError('cirrdata: the library %s does not match this package (%s): %s; %s'
                          % (lib._cirrdata_path, _lib.PACKAGE_DIR, '; '.join(bad), _FIX))
