#!/usr/bin/python3
"""Deterministic NIfTI test corpus for libcirrdata, generated with nibabel.

Usage as a script:  /usr/bin/python3 tests/python/nifti_corpus.py OUTDIR
writes the files plus OUTDIR/index.json (a list of cases).

Usage as a module:  build_corpus(outdir) -> list of case dicts; load_reference(case) -> nibabel image.

Every file is written byte by byte from a nibabel header object (header.write_to + raw voxel bytes)
rather than with nib.save, so that nibabel's writer cannot silently change the fields under test
(nib.save recomputes scl_slope/scl_inter and resets the xform codes).  Every written file is then
read back with nibabel and checked against what was intended (dtype and byte order, shape, raw
voxels, scaling, xform codes, affine), so a broken corpus fails loudly here, not in the CLI tests.

Case dict keys:
  id          unique name
  path        the path to hand to the CLI
  volume      volume index to export (None: do not pass --volume)
  hdr, img    for pairs: the header and image paths (reference is loaded from this file map)
  version     1 or 2
  pair        bool
  note        short description
"""
import gzip
import io
import itertools
import json
import math
import os
import sys

import numpy as np
import nibabel as nib
from nibabel.fileholders import FileHolder

SUPPORTED_DTYPES = ['uint8', 'int8', 'int16', 'uint16', 'int32', 'uint32', 'int64', 'uint64',
                    'float32', 'float64']

HEADER_CLASSES = {
    (1, False): nib.Nifti1Header, (1, True): nib.nifti1.Nifti1PairHeader,
    (2, False): nib.Nifti2Header, (2, True): nib.nifti2.Nifti2PairHeader,
}
IMAGE_CLASSES = {
    (1, False): nib.Nifti1Image, (1, True): nib.Nifti1Pair,
    (2, False): nib.Nifti2Image, (2, True): nib.Nifti2Pair,
}


# ----------------------------------------------------------------------------- reference loading

def load_reference(case):
    """nibabel image for a case (pairs through an explicit file map, so .hdr + .img.gz works)."""
    key = (case.get('version', 1), bool(case.get('pair')))
    if case.get('pair'):
        klass = IMAGE_CLASSES[key]
        fmap = {'header': FileHolder(filename=case['hdr']), 'image': FileHolder(filename=case['img'])}
        return klass.from_file_map(fmap)
    if case.get('cifti'):
        return nib.Nifti2Image.from_filename(case['path'])
    return nib.load(case['path'])


def read_raw_header(path):
    """The header exactly as stored (nibabel header object, check=False) and its class.

    nibabel's loaded img.header has vox_offset reset to 0 and may have fixed fields; tests that
    compare "as stored" values use this instead."""
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rb') as f:
        raw = f.read(544)
    for klass, size in ((nib.Nifti2Header, 540), (nib.Nifti1Header, 348)):
        if len(raw) < size:
            continue
        lit = int(np.frombuffer(raw[:4], '<i4')[0])
        big = int(np.frombuffer(raw[:4], '>i4')[0])
        if size in (lit, big):
            endian = '<' if lit == size else '>'
            return klass(binaryblock=raw[:size], endianness=endian, check=False)
    return None


def stored_scaling(raw_hdr):
    """(slope, inter, scaling) with nibabel semantics, from the header as stored.

    nibabel: slope 0 or non-finite -> no scaling (None, None); scaling applies when a slope is
    given and (slope, inter) != (1, 0).  (img.header of a loaded image has scl_slope reset to NaN:
    nibabel moves the factors into img.dataobj, so the raw header is the reference.)"""
    slope, inter = raw_hdr.get_slope_inter()
    scaling = slope is not None and (slope, inter) != (1.0, 0.0)
    return slope, inter, scaling


# ----------------------------------------------------------------------------- writing

def _open_w(path):
    if path.endswith('.gz'):
        # gzip.open writes an FNAME field (the base name) in the gzip header: a realistic variant.
        return gzip.open(path, 'wb', compresslevel=6)
    return open(path, 'wb')


def write_nifti(path, hdr, raw, img_path=None, vox_offset=None, gz_members=1):
    """Writes header + raw voxels.  hdr is a nibabel (pair) header whose dtype/shape describe raw.

    Single file: header, extension flag/extensions, zero padding up to vox_offset, voxels.
    Pair (img_path given): header to path, voxels to img_path (gzip by suffix).
    gz_members=2 writes a .nii.gz as two concatenated gzip members (valid per RFC 1952)."""
    hdr = hdr.copy()
    dt = hdr.get_data_dtype()
    data = np.asarray(raw).astype(dt, copy=False).tobytes(order='F')
    if img_path is None:
        if vox_offset is not None:
            hdr['vox_offset'] = vox_offset
        else:
            hdr['vox_offset'] = 0  # write_to sets the minimum
        bio = io.BytesIO()
        hdr.write_to(bio)
        hb = bio.getvalue()
        off = int(hdr['vox_offset'])
        assert off >= len(hb), (off, len(hb))
        payload = hb + b'\0' * (off - len(hb)) + data
        if path.endswith('.gz') and gz_members == 2:
            cut = off
            with open(path, 'wb') as f:
                f.write(gzip.compress(payload[:cut], mtime=0))
                f.write(gzip.compress(payload[cut:], mtime=0))
        else:
            with _open_w(path) as f:
                f.write(payload)
    else:
        hdr['vox_offset'] = 0
        bio = io.BytesIO()
        hdr.write_to(bio)
        with _open_w(path) as f:
            f.write(bio.getvalue())
        with _open_w(img_path) as f:
            f.write(data)


def make_header(version=1, pair=False, dtype='int16', shape=(4, 5, 6), endian='<', zooms=None,
                qform=None, qcode=0, sform=None, scode=0, slope=None, inter=None, descrip='',
                xyzt_units=None, intent_code=0, raw_fields=None):
    """A header with exactly these fields.  qform/sform None: the transform is left at nibabel's
    default (identity quaternion, zero srows) with the given code.  slope/inter written raw."""
    klass = HEADER_CLASSES[(version, pair)]
    hdr = klass(endianness=endian)
    hdr.set_data_dtype(np.dtype(dtype))
    hdr.set_data_shape(shape)
    nd = len(shape)
    if zooms is None:
        zooms = [1.0] * nd
    hdr.set_zooms(tuple(zooms[:nd]))
    if qform is not None:
        hdr.set_qform(np.asarray(qform, float), code=qcode)
        # set_qform updates pixdim[1:4]; restore the extra zooms of 4D+ files.
        if nd > 3:
            pd = hdr['pixdim'].copy()
            pd[4:nd + 1] = zooms[3:nd]
            hdr['pixdim'] = pd
    hdr['qform_code'] = qcode
    if sform is not None:
        hdr.set_sform(np.asarray(sform, float), code=scode)
    hdr['sform_code'] = scode
    hdr['scl_slope'] = np.nan if slope is None else slope
    hdr['scl_inter'] = np.nan if inter is None else inter
    hdr['descrip'] = descrip.encode()[:79]
    if xyzt_units is not None:
        hdr['xyzt_units'] = xyzt_units
    hdr['intent_code'] = intent_code
    for key, (index, value) in (raw_fields or {}).items():  # e.g. {'pixdim': (3, 4.0)}
        arr = hdr[key].copy()
        arr[index] = value
        hdr[key] = arr
    return hdr


# ----------------------------------------------------------------------------- data

def make_data(dtype, shape, rng, extremes=True, nonfinite=False):
    dt = np.dtype(dtype)
    n = int(np.prod(shape))
    if dt.kind in 'iu':
        info = np.iinfo(dt)
        a = rng.integers(info.min, info.max, size=n, dtype=dt, endpoint=True)
        # a third of the values small, so the data is not all near the extremes
        lo, hi = max(int(info.min), -300), min(int(info.max), 300)
        a[::3] = rng.integers(lo, hi, size=a[::3].shape, endpoint=True).astype(dt)
        if not extremes:
            a = rng.integers(lo, hi, size=n, endpoint=True).astype(dt)
        specials = [info.min, info.max, 0, 1] + ([-1] if dt.kind == 'i' else []) if extremes else [0, 1]
    else:
        fi = np.finfo(dt)
        a = (rng.standard_normal(n) * 1000.0).astype(dt)
        specials = [0.0, -0.0, 1.5, -2.25]
        if extremes:
            specials += [fi.max, -fi.max, fi.tiny, fi.tiny / 4, -fi.tiny / 8, fi.eps]
        if nonfinite:
            specials += [np.nan, np.inf, -np.inf]
    for i, v in enumerate(specials):
        j = (i * 7 + 3) % n if n > len(specials) else i
        if j < n:
            a[j] = np.array(v).astype(dt)
    return a.reshape(shape, order='F')


# ----------------------------------------------------------------------------- geometry

def rot(axis, deg):
    t = math.radians(deg)
    c, s = math.cos(t), math.sin(t)
    if axis == 'x':
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == 'y':
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def affine_from(R, zooms, trans):
    A = np.eye(4)
    A[:3, :3] = np.asarray(R, float) @ np.diag(zooms)
    A[:3, 3] = trans
    return A


def orientation_margin(aff):
    """Smallest gap between the chosen |R| entry and the runner-up in nibabel's greedy choice.
    Cases with a tiny margin are ties whose outcome depends on rounding: the corpus avoids them."""
    RZS = np.asarray(aff, float)[:3, :3]
    zooms = np.sqrt((RZS * RZS).sum(0))
    zooms[zooms == 0] = 1
    P, S, Qs = np.linalg.svd(RZS / zooms, full_matrices=False)
    R = P @ Qs
    margin = np.inf
    for in_ax in range(3):
        col = np.abs(R[:, in_ax])
        srt = np.sort(col)[::-1]
        margin = min(margin, srt[0] - srt[1])
        R[int(np.argmax(col)), :] = 0
    return margin


# ----------------------------------------------------------------------------- corpus

class _Builder:
    def __init__(self, outdir):
        self.outdir = outdir
        self.cases = []
        self.rng = np.random.default_rng(20240607)
        os.makedirs(outdir, exist_ok=True)

    def add(self, name, ext='.nii', version=1, pair=False, img_ext=None, give='hdr', dtype='int16',
            shape=(4, 5, 6), data=None, volumes=(None,), expect_affine=None, expect_scaling=None,
            vox_offset=None, gz_members=1, note='', extensions=(), **hkw):
        if data is None:
            data = make_data(dtype, shape, self.rng)
        hdr = make_header(version=version, pair=pair, dtype=dtype, shape=shape,
                          descrip='cirrdata corpus ' + name, **hkw)
        for ext_obj in extensions:
            hdr.extensions.append(ext_obj)
        base = os.path.join(self.outdir, name)
        if pair:
            hdr_path = base + ext
            img_path = base + (img_ext or '.img')
            write_nifti(hdr_path, hdr, data, img_path=img_path)
            path = hdr_path if give == 'hdr' else img_path
        else:
            path = base + ext
            hdr_path = img_path = None
            write_nifti(path, hdr, data, vox_offset=vox_offset, gz_members=gz_members)
        for v in volumes:
            case = {'id': name if v is None else '%s@vol%d' % (name, v), 'path': path, 'volume': v,
                    'version': version, 'pair': pair, 'note': note}
            if pair:
                case['hdr'], case['img'] = hdr_path, img_path
            self.cases.append(case)
        self._verify(self.cases[-1], hdr, data, expect_affine, expect_scaling)

    def _verify(self, case, hdr, data, expect_affine, expect_scaling):
        img = load_reference(case)
        h = img.header
        what = case['id']
        want_dt = hdr.get_data_dtype()
        assert img.get_data_dtype() == want_dt, (what, img.get_data_dtype(), want_dt)
        assert h.endianness == hdr.endianness, what
        assert img.shape == data.shape, (what, img.shape, data.shape)
        raw = np.asanyarray(img.dataobj.get_unscaled())
        assert raw.dtype.newbyteorder('=') == want_dt.newbyteorder('='), what
        assert np.array_equal(raw, data, equal_nan=(raw.dtype.kind == 'f')), what
        assert int(h['qform_code']) == int(hdr['qform_code']), what
        assert int(h['sform_code']) == int(hdr['sform_code']), what
        if expect_affine is not None:
            # srows are float32: 1e-4 is ample.  A qform goes through a float32 quaternion, and near
            # 180 degree rotations nibabel's w = sqrt(1 - (b^2+c^2+d^2)) amplifies the float32
            # rounding of b, c, d to ~5e-4 (niftilib instead snaps w to 0 there): this only checks
            # that the file says what was meant; the CLI is compared with nibabel's own affine.
            tol = 1e-4 if int(hdr['sform_code']) > 0 else 3e-3
            assert np.allclose(img.affine, expect_affine, atol=tol), (what, img.affine, expect_affine)
        # raw magic / byte order of the file really is what we meant
        rh = read_raw_header(case['hdr'] if case['pair'] else case['path'])
        slope, inter, scaling = stored_scaling(rh)
        # nibabel moves the scaling into the data proxy (and resets it in img.header)
        assert scaling == ((img.dataobj.slope, img.dataobj.inter) != (1.0, 0.0)), what
        if expect_scaling is not None:
            assert scaling == expect_scaling, (what, slope, inter)
        assert rh is not None and rh.endianness == hdr.endianness, what
        magic = bytes(rh['magic'])
        want_magic = {(1, False): b'n+1', (1, True): b'ni1', (2, False): b'n+2', (2, True): b'ni2'}
        assert magic.startswith(want_magic[(case['version'], case['pair'])]), (what, magic)

    def build(self):
        rng = self.rng
        Z = (0.9, 1.3, 2.7)
        T = (-40.5, 12.25, 77.0)
        base_aff = affine_from(np.eye(3), Z, T)

        # 1. every dtype x both byte orders x (.nii, .nii.gz), NIfTI-1; sform+qform identical
        for dt in SUPPORTED_DTYPES:
            for endian in '<>':
                for ext in ('.nii', '.nii.gz'):
                    name = 'dtype_%s_%s%s' % (dt, 'le' if endian == '<' else 'be', ext.replace('.', '_'))
                    self.add(name, ext=ext, dtype=dt, shape=(16, 17, 9), endian=endian, zooms=Z,
                             qform=base_aff, qcode=1, sform=base_aff, scode=1,
                             data=make_data(dt, (16, 17, 9), rng, nonfinite=(dt[0] == 'f' and ext == '.nii')),
                             expect_affine=base_aff, expect_scaling=False, note='dtype/endianness')
        # NIfTI-2 every dtype (little and big alternating)
        for i, dt in enumerate(SUPPORTED_DTYPES):
            endian = '<>'[i % 2]
            ext = ('.nii', '.nii.gz')[(i // 2) % 2]
            self.add('n2_dtype_%s%s' % (dt, ext.replace('.', '_')), ext=ext, version=2, dtype=dt,
                     shape=(7, 6, 5), endian=endian, zooms=Z, qform=base_aff, qcode=1,
                     sform=base_aff, scode=2, expect_affine=base_aff, expect_scaling=False,
                     data=make_data(dt, (7, 6, 5), rng, nonfinite=(dt[0] == 'f')), note='nifti2 dtype')

        # 2. scaling
        scal = [  # (dtype, slope, inter, scaled?)
            ('uint8', 2.5, 100.0, True), ('int8', -0.75, 3.0, True), ('int16', 0.5, -10.0, True),
            ('uint16', 0.1, 0.0, True), ('int32', 1e-3, 2.0, True), ('uint32', 3.0, -7.5, True),
            ('int64', 0.5, 1.0, True), ('uint64', 2.0, 0.0, True), ('float32', 2.0, 1.0, True),
            ('float64', -3.0, 0.25, True), ('int16', 1.0, 5.0, True), ('int16', 2.0, 0.0, True),
            ('int16', 1.0, 0.0, False), ('int16', 0.0, 5.0, False), ('int16', np.nan, 3.0, False),
            ('float32', 0.0, 0.0, False), ('float32', np.inf, 0.0, False), ('uint8', np.nan, np.nan, False),
            ('float32', 1.0, 0.0, False),
        ]
        for i, (dt, slope, inter, scaled) in enumerate(scal):
            for version in (1, 2):
                endian = '<>'[(i + version) % 2]
                ext = ('.nii', '.nii.gz')[i % 2]
                name = 'scale%d_v%d_%s' % (i, version, dt)
                self.add(name, ext=ext, version=version, dtype=dt, shape=(6, 5, 4), endian=endian,
                         zooms=Z, qform=base_aff, qcode=1, sform=base_aff, scode=1, slope=slope,
                         inter=inter, expect_scaling=scaled,
                         data=make_data(dt, (6, 5, 4), rng, extremes=False, nonfinite=(dt == 'float32')),
                         note='scaling slope=%r inter=%r' % (slope, inter))
        # int64 / uint64 scaling with extreme raw values (results still fit float32)
        self.add('scale_int64_extreme', dtype='int64', shape=(5, 4, 3), slope=0.5, inter=1.0,
                 zooms=Z, sform=base_aff, scode=1, expect_scaling=True, note='scaled int64 extremes')
        self.add('scale_uint64_extreme', dtype='uint64', shape=(5, 4, 3), slope=1.5, inter=-3.0,
                 zooms=Z, sform=base_aff, scode=1, expect_scaling=True, endian='>',
                 note='scaled uint64 extremes')

        # 3. xform variants
        q_aff = affine_from(rot('z', 20) @ rot('x', -10), (1.1, 0.8, 2.0), (10, -20, 30))
        s_aff = affine_from(rot('y', 35), (1.1, 0.8, 2.0), (-5, 6, 7))
        for version in (1, 2):
            for endian in '<>':
                tag = 'v%d_%s' % (version, 'le' if endian == '<' else 'be')
                self.add('qform_only_' + tag, version=version, endian=endian, zooms=(1.1, 0.8, 2.0),
                         qform=q_aff, qcode=1, sform=s_aff, scode=0, expect_affine=q_aff,
                         note='qform only (sform present, code 0)')
                self.add('sform_only_' + tag, version=version, endian=endian, zooms=(1.1, 0.8, 2.0),
                         qform=q_aff, qcode=0, sform=s_aff, scode=4, expect_affine=s_aff,
                         note='sform only (qform present, code 0)')
                self.add('no_xform_' + tag, version=version, endian=endian, zooms=(1.1, 0.8, 2.0),
                         qform=q_aff, qcode=0, sform=s_aff, scode=0, dtype='float32',
                         note='both codes 0: base affine')
                self.add('both_differ_' + tag, version=version, endian=endian, zooms=(1.1, 0.8, 2.0),
                         qform=q_aff, qcode=1, sform=s_aff, scode=2, expect_affine=s_aff,
                         note='qform and sform both set, different')
        # base affine for even/odd sizes and a 1-voxel axis
        for shape in ((5, 4, 3), (1, 6, 1), (2, 1, 7)):
            self.add('no_xform_%dx%dx%d' % shape, shape=shape, zooms=(2.0, 0.5, 3.0), dtype='uint8',
                     note='base affine')
        # qfac -1 via qform only, with a negative determinant affine
        neg = affine_from(np.diag([1, 1, -1]) @ rot('x', 15), (1.0, 2.0, 3.0), (1, 2, 3))
        self.add('qform_qfac_neg', qform=neg, qcode=2, zooms=(1.0, 2.0, 3.0), expect_affine=neg,
                 note='qfac -1')
        # sform with shear (only representable in the sform)
        shear = np.array([[1.0, 0.3, 0.0, 5.0], [0.0, 1.2, 0.2, -3.0], [0.1, 0.0, 2.0, 1.0], [0, 0, 0, 1]])
        shear2 = np.array([[-0.2, 1.5, 0.4, 0.0], [0.0, 0.3, -2.0, 0.0], [1.1, 0.5, 0.0, 0.0], [0, 0, 0, 1]])
        for i, sh in enumerate((shear, shear2)):
            assert orientation_margin(sh) > 0.05
            self.add('sform_shear%d' % i, sform=sh, scode=1, zooms=(1.0, 1.2, 2.0), expect_affine=sh,
                     shape=(5, 6, 7), note='sheared sform')

        # 4. file layouts
        aff = affine_from(rot('z', 10), (1.5, 1.5, 3.0), (0, 0, 0))
        lay = dict(zooms=(1.5, 1.5, 3.0), qform=aff, qcode=1, sform=aff, scode=1, expect_affine=aff,
                   shape=(8, 7, 5))
        for version in (1, 2):
            for endian in '<>':
                tag = 'v%d_%s' % (version, 'le' if endian == '<' else 'be')
                self.add('pair_' + tag, ext='.hdr', version=version, pair=True, endian=endian,
                         give='hdr', note='.hdr/.img pair, given .hdr', **lay)
                self.add('pairimg_' + tag, ext='.hdr', version=version, pair=True, endian=endian,
                         give='img', note='.hdr/.img pair, given .img', **lay)
                self.add('pairgz_' + tag, ext='.hdr', img_ext='.img.gz', version=version, pair=True,
                         endian=endian, give='hdr', dtype='float32', note='.hdr/.img.gz, given .hdr', **lay)
                self.add('pairgzimg_' + tag, ext='.hdr', img_ext='.img.gz', version=version, pair=True,
                         endian=endian, give='img', dtype='float32', note='.hdr/.img.gz, given .img.gz',
                         **lay)
        self.add('pair_bothgz', ext='.hdr.gz', img_ext='.img.gz', pair=True, give='img',
                 note='.hdr.gz/.img.gz pair, given .img.gz', **lay)
        self.add('pair_bothgz_hdr', ext='.hdr.gz', img_ext='.img.gz', pair=True, give='hdr',
                 note='.hdr.gz/.img.gz pair, given .hdr.gz', **lay)
        self.add('pair_scaled', ext='.hdr', pair=True, dtype='int16', slope=0.25, inter=-1.0,
                 expect_scaling=True, note='scaled pair', **lay)
        self.add('gz_two_members', ext='.nii.gz', gz_members=2, note='.nii.gz of 2 gzip members', **lay)
        self.add('n2_gz_two_members', ext='.nii.gz', version=2, gz_members=2, endian='>',
                 note='NIfTI-2 .nii.gz of 2 gzip members', **lay)
        self.add('vox_offset_1024', ext='.nii', vox_offset=1024, note='vox_offset beyond minimum', **lay)
        self.add('n2_vox_offset_2048_gz', ext='.nii.gz', version=2, vox_offset=2048, endian='>',
                 note='NIfTI-2 vox_offset beyond minimum', **lay)
        ext1 = nib.nifti1.Nifti1Extension('comment', b'cirrdata test extension, 32 bytes+')
        self.add('with_extension', ext='.nii', extensions=[ext1], note='header extension', **lay)
        self.add('with_extension_gz_be', ext='.nii.gz', extensions=[ext1], endian='>',
                 note='header extension, gz, big endian', **lay)

        # 5. 4D, 5D, 2D, 1D
        aff4 = affine_from(np.diag([-1, 1, 1]), (2.0, 2.0, 2.5), (90, -126, -72))
        self.add('four_d', shape=(6, 5, 4, 5), zooms=(2.0, 2.0, 2.5, 1.5), qform=aff4, qcode=1,
                 sform=aff4, scode=1, volumes=(0, 2, 4), expect_affine=aff4, xyzt_units=10,
                 note='4D, 5 volumes')
        self.add('four_d_gz_be_f64', ext='.nii.gz', endian='>', dtype='float64', shape=(3, 4, 2, 3),
                 zooms=(2.0, 2.0, 2.5, 1.5), qform=aff4, qcode=1, volumes=(0, 1, 2),
                 data=make_data('float64', (3, 4, 2, 3), rng, nonfinite=True), note='4D gz big-endian f64')
        self.add('four_d_scaled_n2', version=2, ext='.nii.gz', shape=(4, 3, 2, 4), dtype='int16',
                 zooms=(2.0, 2.0, 2.5, 1.5), sform=aff4, scode=1, slope=0.5, inter=3.0, volumes=(1, 3),
                 expect_scaling=True, note='4D scaled NIfTI-2')
        self.add('four_d_pair', ext='.hdr', pair=True, shape=(3, 3, 3, 2), dtype='uint16',
                 zooms=(1.0, 1.0, 1.0, 2.0), qform=aff4, qcode=1, volumes=(0, 1), note='4D pair')
        self.add('five_d', shape=(4, 3, 2, 3, 2), zooms=(1.0, 1.5, 2.0, 1.0, 1.0), sform=aff4, scode=1,
                 volumes=(0, 1, 3, 5), intent_code=1007, note='5D, volumes over dims 4..5 Fortran order')
        self.add('seven_d_gz', ext='.nii.gz', version=2, shape=(2, 3, 2, 2, 1, 3, 2), dtype='float32',
                 zooms=(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0), sform=aff4, scode=1, volumes=(0, 5, 11),
                 note='7D')
        self.add('three_d_vol0', shape=(3, 4, 5), volumes=(0,), note='3D with explicit --volume 0')
        self.add('two_d', shape=(9, 7), zooms=(0.5, 0.75), dtype='float32', note='2D (ndim 2), no xform')
        aff2d = affine_from(rot('z', 30), (0.5, 0.75, 1.0), (3, 4, 5))
        self.add('two_d_sform', shape=(9, 7), zooms=(0.5, 0.75), dtype='int16', sform=aff2d, scode=1,
                 expect_affine=aff2d, note='2D with sform')
        self.add('two_d_pixdim3', shape=(5, 3), zooms=(0.5, 0.75), dtype='int16',
                 raw_fields={'pixdim': (3, 4.0)}, note='2D, unused pixdim[3]=4 (nibabel ignores it)')
        self.add('one_d', shape=(11,), zooms=(2.0,), dtype='uint8', note='1D (ndim 1)')

        # 6. odd small sizes
        for shape in ((1, 1, 1), (1, 17, 1), (16, 1, 9), (1, 1, 9), (3, 2, 1), (16, 17, 9)):
            A = affine_from(rot('y', 100) @ rot('z', -60), (0.7, 1.9, 3.3), (1, 2, 3))
            self.add('size_%dx%dx%d' % shape, shape=shape, zooms=(0.7, 1.9, 3.3), qform=A, qcode=1,
                     sform=A, scode=1, expect_affine=A, dtype='int32', note='odd size, oblique')

        # 7. oblique affines: rotations of various angles about several axes
        angles = [5, 30, 44.5, 45.5, 60, 89, 90, 91, 120, 134.5, 135.5, 170, 179, 180, -30, -90, -135.5,
                  -179]
        k = 0
        for axis in 'xyz':
            for deg in angles:
                R = rot(axis, deg)
                A = affine_from(R, (0.8, 1.25, 2.5), (-10.0 + k, 20.0, -30.5))
                if orientation_margin(A) < 0.01:
                    continue  # exact ties: outcome defined only by rounding; not a contract question
                mode = k % 3
                kw = {}
                if mode in (0, 2):
                    kw.update(qform=A, qcode=1)
                if mode in (1, 2):
                    kw.update(sform=A, scode=2)
                self.add('oblique_%s%s' % (axis, str(deg).replace('-', 'm').replace('.', 'p')),
                         shape=(5, 4, 3), zooms=(0.8, 1.25, 2.5), expect_affine=A, endian='<>'[k % 2],
                         ext=('.nii', '.nii.gz')[(k // 2) % 2], dtype=('int16', 'float32', 'uint8')[k % 3],
                         note='rotation %s deg about %s (mode %d)' % (deg, axis, mode), **kw)
                k += 1
        combos = [(rot('x', 30) @ rot('y', 40) @ rot('z', 50)), (rot('z', 180) @ rot('x', 180)),
                  (rot('x', 44.5) @ rot('y', 45.5)), (rot('y', -120) @ rot('x', 75)),
                  (rot('z', 179.5) @ rot('y', 0.5) @ rot('x', 90.5))]
        # 180 degrees about a diagonal axis (quaternion with a == 0 and three non-zero components)
        u = np.array([1.0, 1.0, 1.0]) / math.sqrt(3)
        combos.append(2 * np.outer(u, u) - np.eye(3))
        combos.append(np.diag([1, 1, -1]) @ rot('x', 30) @ rot('y', 40))  # improper
        for i, R in enumerate(combos):
            A = affine_from(R, (1.0, 3.0, 0.6), (5.5, -6.5, 7.5))
            if orientation_margin(A) < 0.01:
                continue
            for mode, kw in (('q', dict(qform=A, qcode=1)), ('s', dict(sform=A, scode=1))):
                self.add('oblique_combo%d_%s' % (i, mode), shape=(4, 5, 6), zooms=(1.0, 3.0, 0.6),
                         expect_affine=A, version=1 + (i % 2), dtype='float64',
                         note='composed rotation %d via %sform' % (i, mode), **kw)

        # 8. all 48 axis permutation x flip combinations
        codes_seen = set()
        for idx, (perm, flips) in enumerate(itertools.product(itertools.permutations(range(3)),
                                                              itertools.product((1, -1), repeat=3))):
            M = np.zeros((3, 3))
            for i in range(3):
                M[perm[i], i] = flips[i]
            zooms = (0.9, 1.7, 3.1)
            A = affine_from(M, zooms, (12.0, -7.0, 3.5))
            codes = ''.join(nib.aff2axcodes(A))
            codes_seen.add(codes)
            mode = idx % 3
            kw = {}
            if mode in (0, 2):
                kw.update(qform=A, qcode=1)
            if mode in (1, 2):
                kw.update(sform=A, scode=1)
            self.add('orient_%02d_%s' % (idx, codes), shape=(4, 3, 2), zooms=zooms, expect_affine=A,
                     endian='<>'[idx % 2], version=1 + (idx // 24), dtype=('int16', 'float32')[idx % 2],
                     ext=('.nii', '.nii.gz')[(idx // 4) % 2], note='orientation %s' % codes, **kw)
        assert len(codes_seen) == 48, codes_seen
        return self.cases


def build_corpus(outdir):
    """Writes the corpus into outdir and returns its cases (also written to outdir/index.json)."""
    cases = _Builder(outdir).build()
    ids = [c['id'] for c in cases]
    assert len(ids) == len(set(ids)), 'duplicate case ids'
    with open(os.path.join(outdir, 'index.json'), 'w') as f:
        json.dump(cases, f, indent=1)
    return cases


def main(argv):
    if len(argv) != 2:
        print('usage: nifti_corpus.py OUTDIR', file=sys.stderr)
        return 2
    cases = build_corpus(argv[1])
    print('%d cases written to %s' % (len(cases), os.path.join(argv[1], 'index.json')))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
