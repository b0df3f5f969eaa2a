"""cirrdata.load: read a NIfTI file into numpy (ctypes over libcirrdata's NIfTI reader).

    img = cirrdata.load('case.nii.gz')            # .nii, .nii.gz, .hdr/.img pairs (either gzipped), NIfTI-1/-2
    img.array                                     # == np.asanyarray(nib.load(path).dataobj)
    img.affine                                    # == nib.load(path).affine (float64, 4x4)
    img.orientation                               # ('L', 'P', 'S'): nibabel's aff2axcodes(img.affine)
    img.header                                    # dict of the header fields (see Image)
    img.to_nibabel()                              # a nibabel Nifti1Image / Nifti2Image of the same data
    cirrdata.load('case.nii.gz', canonical=True)  # as nibabel.as_closest_canonical(nib.load(path))

The C library reads the header, validates every field before it sizes anything (the caps of
cirrdata.limits()), and writes the voxels of every volume straight into the numpy array's memory: one
pass over the file, one inflate for gzip, no copy afterwards. Errors (missing or truncated file, corrupt
gzip, a hostile header, a directory or FIFO in the file's place) raise cirrdata.CirrdataError with the
library's message, which names the file.
"""
import ctypes
import os

import numpy as np

from . import _lib as _l

_CD_DTYPE_NAMES = {1: 'uint8', 2: 'int8', 3: 'uint16', 4: 'int16', 5: 'uint32', 6: 'int32', 7: 'uint64',
                   8: 'int64', 9: 'float16', 10: 'float32', 11: 'float64'}  # enum cd_dtype (cirrdata/dtype.h)
_XFORM_NAMES = {0: 'unknown', 1: 'scanner', 2: 'aligned', 3: 'talairach', 4: 'mni', 5: 'template'}


class CdNiftiHeader(ctypes.Structure):
    """ctypes mirror of struct cd_nifti_header (cirrdata/nifti.h); field order and types are the header's."""
    _fields_ = [('version', ctypes.c_int),
                ('big_endian', ctypes.c_bool),
                ('compressed', ctypes.c_bool),
                ('pair', ctypes.c_bool),
                ('ndim', ctypes.c_int),
                ('dim', ctypes.c_int64 * 8),
                ('pixdim', ctypes.c_double * 8),
                ('datatype', ctypes.c_int),
                ('bitpix', ctypes.c_int),
                ('dtype', ctypes.c_int),
                ('vox_offset', ctypes.c_int64),
                ('scl_slope', ctypes.c_double),
                ('scl_inter', ctypes.c_double),
                ('has_scaling', ctypes.c_bool),
                ('qform_code', ctypes.c_int),
                ('sform_code', ctypes.c_int),
                ('qform', (ctypes.c_double * 4) * 4),
                ('sform', (ctypes.c_double * 4) * 4),
                ('affine', (ctypes.c_double * 4) * 4),
                ('orientation', ctypes.c_char * 4),
                ('xyzt_units', ctypes.c_int),
                ('intent_code', ctypes.c_int),
                ('descrip', ctypes.c_char * 81),
                ('nvolumes', ctypes.c_int64),
                ('volume_bytes', ctypes.c_uint64)]


class CdOrientation(ctypes.Structure):
    """ctypes mirror of struct cd_orientation (cirrdata/orient.h)."""
    _fields_ = [('world_axis', ctypes.c_int * 3), ('flip', ctypes.c_int * 3)]


def _declare(lib):
    if getattr(lib, '_cirrdata_nifti_declared', False):
        return
    E, S = ctypes.POINTER(_l.CdError), ctypes.POINTER(ctypes.c_size_t)
    A = ctypes.POINTER((ctypes.c_double * 4) * 4)
    sigs = {
        'cd_nifti_read_all': ([ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, S, S,
                               ctypes.POINTER(CdNiftiHeader), E], ctypes.c_int),
        'cd_orientation_from_affine': ([A, ctypes.POINTER(CdOrientation), E], ctypes.c_int),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = res
    lib._cirrdata_nifti_declared = True


def _lib():
    from . import _LIB
    _declare(_LIB)
    return _LIB


def _error(message, status):
    from . import CirrdataError
    return CirrdataError(message, status)


def _check(st, err):
    if st != 0:
        from . import _raise
        _raise(err)


def _matrix(m):
    return np.array([[m[i][j] for j in range(4)] for i in range(4)], dtype=np.float64)


def _header_dict(h):
    ndim = int(h.ndim)
    dtype = _CD_DTYPE_NAMES.get(int(h.dtype))
    return {
        'version': int(h.version),
        'byte_order': 'big' if h.big_endian else 'little',
        'compressed': bool(h.compressed),
        'pair': bool(h.pair),
        'ndim': ndim,
        'dims': tuple(int(h.dim[i]) for i in range(1, ndim + 1)),
        'pixdim': [float(h.pixdim[i]) for i in range(8)],
        'datatype': int(h.datatype),
        'datatype_name': dtype,
        'bitpix': int(h.bitpix),
        'vox_offset': int(h.vox_offset),
        'scl_slope': float(h.scl_slope),
        'scl_inter': float(h.scl_inter),
        'qform_code': int(h.qform_code),
        'qform_code_name': _XFORM_NAMES.get(int(h.qform_code), 'unknown'),
        'sform_code': int(h.sform_code),
        'sform_code_name': _XFORM_NAMES.get(int(h.sform_code), 'unknown'),
        'qform': _matrix(h.qform),
        'sform': _matrix(h.sform),
        'affine': _matrix(h.affine),
        'orientation': h.orientation.decode('ascii', 'replace'),
        'xyzt_units': int(h.xyzt_units),
        'intent_code': int(h.intent_code),
        'descrip': h.descrip.decode('latin-1'),
        'nvolumes': int(h.nvolumes),
        'volume_bytes': int(h.volume_bytes),
    }


def _codes(text):
    """'LP?' -> ('L', 'P', None), as nibabel's aff2axcodes (None for a degenerate axis)."""
    return tuple(None if c == '?' else c for c in text)


# --------------------------------------------------------------------------- scaling, as nibabel 5

def _read_floats():
    """nibabel's OK_FLOATS from float64 on: float64, then longdouble where it is wider."""
    wider = np.finfo(np.longdouble).nmant > np.finfo(np.float64).nmant
    return (np.float64, np.longdouble) if wider else (np.float64,)


def _int_ftype(idtype, slope, inter, path):
    """nibabel's int_scinter_ftype(idtype, slope, inter, float64): the first float type in which the
    integer type's extremes * slope + inter stay finite."""
    ii = np.iinfo(idtype)
    tst = np.array([ii.min, ii.max], dtype=idtype)
    for ftype in _read_floats():
        s, i = slope.astype(ftype), inter.astype(ftype)
        with np.errstate(over='ignore', invalid='ignore'):
            t = tst
            if s != 1.0:
                t = t * s
            if i != 0.0:
                t = t + i
        if np.all(np.isfinite(t)):
            return ftype
    raise _error('%s: scl_slope %r and scl_inter %r overflow every float type for %s data'
                 % (path, float(slope[0]), float(inter[0]), np.dtype(idtype).name), 'unsupported')


def _slope_inter(hdr, path):
    """nibabel's Nifti1Header.get_slope_inter, then ArrayProxy's defaults: (1.0, 0.0) when the slope
    is 0 or not finite; a finite slope with a non-finite intercept is an error (HeaderDataError)."""
    slope, inter = float(hdr.scl_slope), float(hdr.scl_inter)
    if slope == 0 or not np.isfinite(slope):
        return 1.0, 0.0
    if not np.isfinite(inter):
        raise _error('%s: scl_slope %r is valid but scl_inter %r is not finite (nibabel refuses this '
                     'scaling too)' % (path, slope, inter), 'format')
    return slope, inter


def _apply_scaling(raw, slope, inter, path):
    """nibabel's ArrayProxy._get_scaled(None) + apply_read_scaling, value for value and in the same
    dtype: the multiply and the add run as the same numpy operations on the same types, written into
    one output array."""
    if (slope, inter) == (1.0, 0.0):
        return raw
    slope = np.atleast_1d(np.float64(slope))
    inter = np.atleast_1d(np.float64(inter))
    if raw.dtype.kind in 'iu':
        ftype = _int_ftype(raw.dtype, slope, inter, path)
        slope, inter = slope.astype(ftype), inter.astype(ftype)
    if slope != 1.0:
        out_dtype = np.result_type(raw, slope)
    else:
        out_dtype = np.result_type(raw, inter)
    out = np.empty(raw.shape, out_dtype, order='F')
    with np.errstate(over='ignore', invalid='ignore'):
        src = raw
        if slope != 1.0:
            np.multiply(src, slope, out=out)
            src = out
        if inter != 0.0:
            np.add(src, inter, out=out)
    return out


# --------------------------------------------------------------------------- reorientation

def _orientation(lib, affine):
    """cd_orientation_from_affine: nibabel's io_orientation of affine."""
    aff = ((ctypes.c_double * 4) * 4)(*[(ctypes.c_double * 4)(*row) for row in affine.tolist()])
    o = CdOrientation()
    err = _l.CdError()
    _check(lib.cd_orientation_from_affine(ctypes.byref(aff), ctypes.byref(o), ctypes.byref(err)), err)
    return o


def _ornt(lib, affine, path):
    """nibabel's io_orientation(affine) as an (3, 2) int array: the world axis and the flip of each array
    axis; CirrdataError when an axis is degenerate."""
    o = _orientation(lib, affine)
    ornt = np.array([[o.world_axis[i], o.flip[i]] for i in range(3)], dtype=np.int64)
    if (ornt[:, 0] < 0).any():
        raise _error('%s: canonical=True: the affine has a degenerate axis, so there is no closest '
                     'canonical orientation (nibabel cannot reorient it either)' % path, 'unsupported')
    return ornt


def _inv_ornt_aff(ornt, shape):
    """nibabel.orientations.inv_ornt_aff, the same operations."""
    p = ornt.shape[0]
    shape = np.array(shape)[:p]
    axis_transpose = [int(v) for v in ornt[:, 0]]
    undo_reorder = np.eye(p + 1)[axis_transpose + [p], :]
    undo_flip = np.diag(list(ornt[:, 1].astype(np.float64)) + [1.0])
    center_trans = -(shape - 1) / 2.0
    undo_flip[:p, p] = (ornt[:, 1] * center_trans) - center_trans
    return np.dot(undo_flip, undo_reorder)


def _canonical(lib, arr, affine, path):
    """(array, affine) as nibabel's as_closest_canonical: unchanged when already closest to RAS+, else
    flips and a transpose of the first three axes (views of arr, no copy) and the matching affine."""
    ornt = _ornt(lib, affine, path)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return arr, affine
    if arr.ndim < 3:
        raise _error('%s: canonical=True needs 3 spatial axes to reorient, this image has %d (nibabel '
                     'cannot reorient it either)' % (path, arr.ndim), 'unsupported')
    t = arr
    for ax, flip in enumerate(ornt[:, 1]):
        if flip == -1:
            t = np.flip(t, axis=ax)
    full = np.arange(t.ndim)
    full[:3] = np.argsort(ornt[:, 0])
    return t.transpose(full), affine.dot(_inv_ornt_aff(ornt, arr.shape))


def _axcodes(lib, affine):
    """nibabel's aff2axcodes(affine): ('L', 'P', 'S'), None for a degenerate axis."""
    o = _orientation(lib, affine)
    labels = ('LR', 'PA', 'IS')
    return tuple(None if o.world_axis[i] < 0 else labels[o.world_axis[i]][o.flip[i] > 0] for i in range(3))


# --------------------------------------------------------------------------- the image

class Image:
    """A NIfTI image read by cirrdata.load.

    array: the voxels, equal to np.asanyarray(nib.load(path).dataobj) (nibabel 5): shape dims[1..ndim]
      (every volume of a 4D+ file), Fortran order (x fastest, as stored). Unscaled data keeps the stored
      dtype; scaled data (scl_slope finite and non-zero, (slope, inter) != (1, 0)) is computed as
      nibabel computes it: float64 (longdouble only when float64 would overflow). Byte order: always
      native; nibabel gives a big-endian file's unscaled values in a big-endian dtype ('>i2'), equal in
      value, kind and size.  The array is writeable and owns its memory through its base (for gzip
      files a buffer that also holds the inflated header bytes before the voxels).
      With canonical=True: flips and a transpose of that array (a view, usually not contiguous, as
      nibabel's; np.ascontiguousarray for a contiguous copy).
    affine: float64 (4, 4), voxel -> world (RAS+ mm), nibabel's img.affine (sform when sform_code > 0,
      else qform when qform_code > 0, else the base affine); reoriented with canonical=True.
    orientation: nibabel's aff2axcodes(affine), e.g. ('L', 'P', 'S'); None for a degenerate axis.
    header: the file's header (not reoriented), a dict: version (1/2), byte_order, compressed, pair,
      ndim, dims, pixdim (8 values after nibabel's load-time fixes: |pixdim|, 0 -> 1, qfac +-1),
      datatype (NIfTI code), datatype_name, bitpix, vox_offset, scl_slope, scl_inter (as stored; NaN
      possible), qform_code, sform_code (+ _name), qform, sform, affine (4x4 float64; qform from the
      quaternion even when its code is 0), orientation ('LPS'), xyzt_units, intent_code, descrip,
      nvolumes, volume_bytes.
    path, canonical: as passed to load.
    """

    def __init__(self, path, array, affine, header, orientation, canonical):
        self.path = path
        self.array = array
        self.affine = affine
        self.header = header
        self.orientation = orientation
        self.canonical = canonical

    @property
    def shape(self):
        return self.array.shape

    @property
    def dtype(self):
        return self.array.dtype

    def to_nibabel(self):
        """A nibabel Nifti1Image (Nifti2Image for a NIfTI-2 file) of array and affine. Its header is the
        file's as nibabel reads it (codes, qform quaternion and sform, pixdim, descrip, units, intent,
        dim_info), with the array's shape and dtype and no scaling (the array holds the scaled values),
        and nibabel builds the image from (array, affine, header) as its as_closest_canonical does: with
        canonical=True the header follows the new affine the way nibabel's does. When the file can no
        longer be read, the header is rebuilt from self.header (the quaternion then comes from the qform
        matrix, which nibabel may not reproduce to its tolerance near 180-degree rotations)."""
        import nibabel as nib
        h = self.header
        klass = nib.Nifti2Image if h['version'] == 2 else nib.Nifti1Image
        nh = self._nibabel_header(nib, klass)
        nh.set_data_shape(self.array.shape)
        nh.set_data_dtype(self.array.dtype)
        nh.set_slope_inter(None, None)
        return klass(self.array, self.affine, nh)

    def _nibabel_header(self, nib, klass):
        pair_class = nib.nifti2.Nifti2PairHeader if klass is nib.Nifti2Image else nib.nifti1.Nifti1PairHeader
        hclass = pair_class if self.header['pair'] else klass.header_class
        try:
            with nib.openers.ImageOpener(_header_path(self.path)) as f:
                return klass.header_class.from_header(hclass.from_fileobj(f))
        except Exception:  # gone or changed since load: rebuild from the fields read then
            pass
        h = self.header
        nh = klass.header_class()
        nh.set_data_shape(h['dims'])
        nh.set_qform(h['qform'], code=h['qform_code'])
        nh.set_sform(h['sform'], code=h['sform_code'])
        pixdim = nh['pixdim'].copy()
        pixdim[1:] = h['pixdim'][1:]
        nh['pixdim'] = pixdim
        nh['descrip'] = h['descrip'].encode('latin-1')[:79]
        nh['xyzt_units'] = h['xyzt_units']
        nh['intent_code'] = h['intent_code']
        return nh

    def __repr__(self):
        return 'cirrdata.Image(%r, shape=%s, dtype=%s, orientation=%s%s)' % (
            self.path, self.array.shape, self.array.dtype, ''.join(c or '?' for c in self.orientation),
            ', canonical' if self.canonical else '')


def _header_path(path):
    """The file holding the header, as the library resolves it: for a pair's .img(.gz), the .hdr or
    .hdr.gz beside it (the one of the same compression first)."""
    low = path.lower()
    for img, hdrs in (('.img', ('.hdr', '.hdr.gz')), ('.img.gz', ('.hdr.gz', '.hdr'))):
        if low.endswith(img):
            for ext in hdrs:
                cand = path[:-len(img)] + ext
                if os.path.exists(cand):
                    return cand
    return path


def _read(lib, bpath):
    """The header and the raw voxels (native byte order) of every volume, read by cd_nifti_read_all into
    a numpy buffer: one call to size it, one to fill it."""
    err = _l.CdError()
    need, off = ctypes.c_size_t(), ctypes.c_size_t()
    h = CdNiftiHeader()
    _check(lib.cd_nifti_read_all(bpath, None, None, 0, ctypes.byref(need), None, ctypes.byref(h),
                                      ctypes.byref(err)), err)
    buf = np.empty(need.value, np.uint8)
    # The header of this second call is the one that describes buf (were the file replaced in between,
    # the library checks that buf is still large enough).
    _check(lib.cd_nifti_read_all(bpath, None, buf.ctypes.data, buf.nbytes, ctypes.byref(need),
                                      ctypes.byref(off), ctypes.byref(h), ctypes.byref(err)), err)
    ndim = int(h.ndim)
    shape = tuple(int(h.dim[i]) for i in range(1, ndim + 1))
    dtype = np.dtype(_CD_DTYPE_NAMES[int(h.dtype)])
    nbytes = int(h.nvolumes) * int(h.volume_bytes)
    o = off.value
    raw = buf[o:o + nbytes].view(dtype).reshape(shape, order='F')
    return h, raw


def load(path, canonical=False):
    """Reads the NIfTI file at path (str, bytes or os.PathLike; a .hdr/.img pair by either name) into a
    cirrdata.Image. canonical=True reorients it as nibabel's as_closest_canonical (axes flipped and
    permuted to the closest RAS+; no interpolation). Raises CirrdataError, naming the file, for anything
    the file cannot give: missing, a directory or FIFO, truncated, corrupt gzip, a header that is invalid
    or claims more than the caps of cirrdata.limits() allow, an unsupported datatype (complex, RGB); also
    for a finite scl_slope with a non-finite scl_inter and, with canonical=True, an image that has no
    closest canonical orientation (a degenerate axis, or fewer than 3 axes when not already RAS+) --
    the cases where nibabel raises too."""
    lib = _lib()
    spath = os.fspath(path)
    bpath = os.fsencode(spath)
    shown = os.fsdecode(bpath)
    if b'\0' in bpath:
        raise _error('%s: the path contains a NUL byte' % shown.replace('\0', '\\0'), 'argument')
    h, raw = _read(lib, bpath)
    slope, inter = _slope_inter(h, shown)
    array = _apply_scaling(raw, slope, inter, shown)
    header = _header_dict(h)
    affine = header['affine'].copy()
    orientation = _codes(header['orientation'])
    if canonical:
        array, affine = _canonical(lib, array, affine, shown)
        orientation = _axcodes(lib, affine)
    return Image(shown, array, affine, header, orientation, bool(canonical))
