#!/usr/bin/python3
"""cirrdata.load (python/cirrdata/nifti.py) against nibabel, in process.

  /usr/bin/python3 tests/python/test_nifti_load.py --lib build/libcirrdata/libcirrdata.so [--workdir DIR]

Every file of the NIfTI parity corpus (tests/python/nifti_corpus.py) and of nibabel's own test data:
  - .array equals np.asanyarray(nibabel's dataobj): shape (every volume of 4D+ files), dtype (native byte
    order: nibabel's big-endian dtype has the same kind and size), values (NaN where nibabel has NaN);
  - .affine equals img.affine (to 1e-12), .orientation equals aff2axcodes;
  - canonical=True equals nib.as_closest_canonical (array and affine), or raises CirrdataError where
    nibabel raises;
  - .header's fields equal the stored header's, to_nibabel() gives back the same array, affine and codes.
Then hostile and broken files (missing, directory, FIFO, empty, truncated, corrupt gzip, lying or huge
dims, unsupported datatype, a finite slope with an infinite intercept) must raise CirrdataError naming
the file, and cd_nifti_read_all's own contract (sizing call, a too small buffer, an unaligned vox_offset)
is checked through ctypes. Last line: `nifti load: N passed, M failed`.
"""
import ctypes
import faulthandler
import gzip
import logging
import os
import shutil
import sys
import tempfile
import warnings

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

CHECKS = harness.Checks()
check = CHECKS.check
AFFINE_TOL = 1e-12


def same_values(a, b):
    """Equal shape and values (NaN == NaN for floats); dtype compared by the caller."""
    import numpy as np
    if a.shape != b.shape:
        return False
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind == 'f' and b.dtype.kind == 'f'))


INEXACT = []  # (max |difference|, what) of every affine that is close but not bit-equal


def affine_close(a, b, what=''):
    import numpy as np
    if a.shape == b.shape and not np.array_equal(a, b):
        INEXACT.append((float(np.abs(a - b).max()), what))
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= AFFINE_TOL * np.maximum(1.0, np.abs(b))))


def first_diff(a, b):
    import numpy as np
    bad = ~((a == b) | ((a != a) & (b != b)))
    i = tuple(int(x) for x in np.argwhere(bad)[0])
    return '%d voxels differ, first at %s: %r vs nibabel %r' % (int(bad.sum()), i, a[i].item(), b[i].item())


def compare_image(name, got, ref_arr, ref_aff):
    import numpy as np
    import nibabel as nib
    ok = check(got.array.shape == ref_arr.shape, name + ': shape',
               '%s vs nibabel %s' % (got.array.shape, ref_arr.shape))
    want_dt = ref_arr.dtype.newbyteorder('=')
    ok &= check(got.array.dtype == want_dt and got.array.dtype.isnative, name + ': dtype',
                '%s vs nibabel %s' % (got.array.dtype.str, ref_arr.dtype.str))
    if ok:
        check(same_values(got.array, ref_arr), name + ': values', '' if same_values(got.array, ref_arr)
              else first_diff(got.array, ref_arr))
    check(got.affine.dtype == np.float64 and affine_close(got.affine, ref_aff, name), name + ': affine',
          '%s vs nibabel %s' % (got.affine.tolist(), ref_aff.tolist()))
    codes = tuple(nib.aff2axcodes(ref_aff))
    check(got.orientation == codes, name + ': orientation', '%s vs nibabel %s' % (got.orientation, codes))


def check_header(name, hd, rh, path_ver, ref):
    """The header dict against the header as stored (nifti_corpus.read_raw_header) and, for the qform
    (which nibabel computes only after its load-time fixes), nibabel's loaded header."""
    import numpy as np
    import nibabel as nib
    shape = tuple(int(x) for x in rh.get_data_shape())
    want = {'version': path_ver, 'byte_order': 'little' if rh.endianness == '<' else 'big',
            'ndim': len(shape), 'dims': shape, 'datatype': int(rh['datatype']), 'bitpix': int(rh['bitpix']),
            'qform_code': int(rh['qform_code']), 'sform_code': int(rh['sform_code']),
            'xyzt_units': int(rh['xyzt_units']), 'intent_code': int(rh['intent_code']),
            'vox_offset': int(rh['vox_offset']),
            'nvolumes': int(np.prod(shape[3:])) if len(shape) > 3 else 1,
            'descrip': bytes(rh['descrip']).split(b'\0')[0].decode('latin-1')}
    for k, v in want.items():
        check(hd.get(k) == v, '%s: header[%r]' % (name, k), '%r vs stored %r' % (hd.get(k), v))
    for k in ('scl_slope', 'scl_inter'):
        s = float(rh[k])
        check(hd[k] == s or (np.isnan(hd[k]) and np.isnan(s)), '%s: header[%r]' % (name, k), (hd[k], s))
    check(hd['datatype_name'] == rh.get_data_dtype().name, name + ': datatype_name', hd['datatype_name'])
    check(affine_close(hd['sform'], rh.get_sform()), name + ': header sform', hd['sform'].tolist())
    qform = ref.header.get_qform()
    check(affine_close(hd['qform'], qform), name + ': header qform',
          '%s vs nibabel %s' % (hd['qform'].tolist(), qform.tolist()))
    check(hd['orientation'] == ''.join(c or '?' for c in nib.aff2axcodes(hd['affine'])), name + ': header orientation',
          hd['orientation'])


def check_to_nibabel(name, got):
    import numpy as np
    import nibabel as nib
    ni = got.to_nibabel()
    klass = nib.Nifti2Image if got.header['version'] == 2 else nib.Nifti1Image
    check(type(ni) is klass, name + ': to_nibabel class', type(ni).__name__)
    arr = np.asanyarray(ni.dataobj)
    check(arr is got.array or (arr.dtype == got.array.dtype and same_values(arr, got.array)),
          name + ': to_nibabel array')
    check(affine_close(np.asarray(ni.affine), got.affine), name + ': to_nibabel affine')
    if not got.canonical:
        h = ni.header
        check((int(h['qform_code']), int(h['sform_code'])) == (got.header['qform_code'], got.header['sform_code']),
              name + ': to_nibabel codes', (int(h['qform_code']), int(h['sform_code'])))
        check(bytes(h['descrip']).split(b'\0')[0].decode('latin-1') == got.header['descrip'][:79],
              name + ': to_nibabel descrip')
        nd = got.header['ndim']
        check(np.allclose(h['pixdim'][1:nd + 1], got.header['pixdim'][1:nd + 1]), name + ': to_nibabel pixdim')


def expect_error(cirrdata, name, path, fn, must=None):
    """fn() must raise CirrdataError whose message names path (and holds `must`, when given)."""
    try:
        fn()
    except cirrdata.CirrdataError as e:
        msg = str(e)
        ok = path in msg and (must is None or must in msg)
        return check(ok, name + ': message',
                     '%r should name %r%s' % (msg, path, '' if must is None else ' and say %r' % must))
    except Exception as e:  # a crash of the binding must not look like a pass
        return check(False, name, 'raised %s: %s, not CirrdataError' % (type(e).__name__, e))
    return check(False, name, 'no error')


def run_case(cirrdata, case):
    import numpy as np
    import nibabel as nib
    import nifti_corpus as nc
    name, path = case['id'], case['path']
    kind = case.get('expect', 'ok')
    if kind == 'reject':
        expect_error(cirrdata, name, path, lambda: cirrdata.load(path))
        return
    if kind == 'missing_img':
        expect_error(cirrdata, name, path, lambda: cirrdata.load(path), must='.img')
        return
    ref = nc.load_reference(case)
    ref_arr = np.asanyarray(ref.dataobj)
    ref_aff = np.asarray(ref.affine, dtype=np.float64)
    got = cirrdata.load(path)
    compare_image(name, got, ref_arr, ref_aff)
    rh = nc.read_raw_header(case['hdr'] if case.get('pair') else path)
    check_header(name, got.header, rh, 2 if isinstance(rh, nib.Nifti2Header) else 1, ref)
    check_to_nibabel(name, got)
    # canonical: nibabel raises where it cannot reorient (fewer than 3 axes and not already RAS+)
    try:
        cimg = nib.as_closest_canonical(ref)
    except Exception as e:
        expect_error(cirrdata, name + ' canonical (nibabel: %s)' % type(e).__name__, path,
                     lambda: cirrdata.load(path, canonical=True))
        return
    cgot = cirrdata.load(path, canonical=True)
    compare_image(name + ' canonical', cgot, np.asanyarray(cimg.dataobj), np.asarray(cimg.affine, float))
    check_to_nibabel(name + ' canonical', cgot)


def corpus_cases(work):
    import nibabel as nib
    import nifti_corpus as nc
    from test_nibabel_parity import nibabel_data_cases
    cases = nc.build_corpus(os.path.join(work, 'corpus'))
    data = os.path.join(os.path.dirname(nib.__file__), 'tests', 'data')
    if os.path.isdir(data):
        cases += nibabel_data_cases(data)
    else:
        print('note: nibabel test data not found at %s' % data)
    seen, out = set(), []
    for c in cases:  # cases differing only in --volume read the same file: load reads every volume
        if c['path'] not in seen:
            seen.add(c['path'])
            out.append(c)
    return out


# ----------------------------------------------------------------------------- broken and hostile files

def write_header_file(path, hdr, payload=b'', gz=False):
    import io
    bio = io.BytesIO()
    hdr.write_to(bio)
    raw = bio.getvalue()
    raw += b'\0' * (int(hdr['vox_offset']) - len(raw)) + payload
    with (gzip.open(path, 'wb', compresslevel=6) if gz else open(path, 'wb')) as f:
        f.write(raw)
    return path


def hostile_files(cirrdata, work):
    import numpy as np
    import nibabel as nib
    import nifti_corpus as nc
    d = os.path.join(work, 'bad')
    os.makedirs(d)
    load = cirrdata.load

    def refused(name, path, must=None):
        expect_error(cirrdata, name, path, lambda: load(path), must)

    refused('missing file', os.path.join(d, 'missing.nii.gz'))
    refused('directory', d)
    os.makedirs(os.path.join(d, 'dir.nii'))
    refused('directory named .nii', os.path.join(d, 'dir.nii'))
    fifo = os.path.join(d, 'pipe.nii.gz')
    os.mkfifo(fifo)
    refused('FIFO', fifo)
    empty = os.path.join(d, 'empty.nii')
    open(empty, 'wb').close()
    refused('empty file', empty)
    junk = os.path.join(d, 'junk.nii')
    with open(junk, 'wb') as f:
        f.write(b'not a nifti file at all' * 40)
    refused('no NIfTI magic', junk)

    good = nib.Nifti1Image(np.arange(24 * 20 * 10, dtype=np.int16).reshape(24, 20, 10), np.eye(4))
    nii, niigz = os.path.join(d, 'good.nii'), os.path.join(d, 'good.nii.gz')
    nib.save(good, nii)
    nib.save(good, niigz)
    data = open(nii, 'rb').read()
    zdata = open(niigz, 'rb').read()
    for n, blob, ext, must in (('truncated .nii', data[:-100], '.nii', 'truncated'),
                               ('.nii header only', data[:352], '.nii', 'truncated'),
                               ('truncated .nii.gz', zdata[:len(zdata) // 2], '.nii.gz', 'truncated'),
                               ('.nii.gz without its trailer', zdata[:-8], '.nii.gz', None),
                               ('cut .nii.gz header', zdata[:30], '.nii.gz', None)):
        p = os.path.join(d, n.replace(' ', '_').replace('.', '') + ext)
        with open(p, 'wb') as f:
            f.write(blob)
        refused(n, p, must)
    bad = bytearray(zdata)
    mid = len(bad) // 2
    bad[mid:mid + 64] = bytes(b ^ 0x5A for b in bad[mid:mid + 64])
    p = os.path.join(d, 'corrupt.nii.gz')
    with open(p, 'wb') as f:
        f.write(bad)
    refused('corrupt gzip', p, 'corrupt')
    crc = bytearray(zdata)
    crc[-8] ^= 0xFF
    p = os.path.join(d, 'crc.nii.gz')
    with open(p, 'wb') as f:
        f.write(crc)
    refused('CRC mismatch', p, 'CRC')

    # lying and huge dims: refused before anything is allocated for them
    h = nc.make_header(version=2, dtype='int16', shape=(1 << 20, 1 << 20, 1 << 12))
    refused('dims overflow the voxel cap', write_header_file(os.path.join(d, 'huge.nii'), h, b'\0' * 64))
    h = nc.make_header(dtype='int16', shape=(512, 512, 512, 10000))
    refused('4D above the byte cap', write_header_file(os.path.join(d, 'huge4d.nii.gz'), h, b'\0' * 64, gz=True),
            'above')
    h = nc.make_header(dtype='float64', shape=(256, 256, 256, 4))
    refused('gzip too small for its dims', write_header_file(os.path.join(d, 'liar.nii.gz'), h, b'\0' * 64, gz=True),
            'hostile')
    h = nc.make_header(dtype='int16', shape=(64, 64, 64, 3))
    p = write_header_file(os.path.join(d, 'small4d.nii'), h, b'\0' * (64 * 64 * 64 * 2 * 3))
    lim = cirrdata.limits()['max_decompressed_bytes']
    cirrdata.set_limits(max_decompressed_bytes=64 * 64 * 64 * 2 * 2)  # two volumes fit, three do not
    try:
        refused('4D above a lowered byte cap', p, 'CIRRDATA_MAX_BYTES')
    finally:
        cirrdata.set_limits(max_decompressed_bytes=None)
    check(cirrdata.limits()['max_decompressed_bytes'] == lim, 'byte cap restored')
    check(cirrdata.load(p).array.shape == (64, 64, 64, 3), '4D read under the default cap')
    h = nc.make_header(dtype='int16', shape=(4, 4, 4))
    h['datatype'], h['bitpix'] = 32, 64  # complex64
    refused('unsupported datatype', write_header_file(os.path.join(d, 'complex.nii'), h, b'\0' * 512), 'complex64')
    h = nc.make_header(dtype='int16', shape=(4, 4, 4), slope=2.0, inter=np.inf)
    p = write_header_file(os.path.join(d, 'infinter.nii'), h, b'\1\0' * 64)
    try:
        nib.load(p).get_fdata()
        nib_raises = False
    except Exception:
        nib_raises = True
    check(nib_raises, 'nibabel refuses a finite slope with an infinite intercept')
    refused('finite slope, infinite intercept', p, 'scl_inter')
    # a .hdr without its .img
    h = nc.make_header(pair=True, dtype='int16', shape=(4, 4, 4))
    p = write_header_file(os.path.join(d, 'lonely.hdr'), h)
    refused('pair without .img', p, '.img')
    nul = os.path.join(d, 'good.nii\0x')  # must not be read as good.nii
    expect_error(cirrdata, 'NUL in the path', nul[:-2], lambda: load(nul), must='\\0x: the path contains a NUL byte')


# ----------------------------------------------------------------------------- cd_nifti_read_all itself

def read_all_contract(cirrdata, work):
    """The C entry point's sizing call, its refusal of a too small buffer and the unaligned-offset path."""
    import numpy as np
    import nibabel as nib
    import nifti_corpus as nc
    from cirrdata import _LIB, _lib as L, nifti as N
    N._declare(_LIB)
    d = os.path.join(work, 'contract')
    os.makedirs(d)
    rng = np.random.default_rng(5)
    data = rng.integers(-30000, 30000, size=(7, 6, 5, 3), dtype=np.int16)
    for name, vox_offset, ext in (('aligned', 352, '.nii.gz'), ('odd', 353, '.nii.gz'), ('odd_raw', 353, '.nii')):
        h = nc.make_header(dtype='int16', shape=data.shape, endian='>')
        p = os.path.join(d, name + ext)
        nc.write_nifti(p, h, data, vox_offset=vox_offset)
        ref = np.asanyarray(nib.load(p).dataobj)
        check(np.array_equal(ref, data), name + ': nibabel reads the written file')
        err, need, off, hdr = L.CdError(), ctypes.c_size_t(), ctypes.c_size_t(99), N.CdNiftiHeader()
        st = _LIB.cd_nifti_read_all(p.encode(), None, None, 0, ctypes.byref(need), None, ctypes.byref(hdr),
                                    ctypes.byref(err))
        gz = ext.endswith('.gz')
        want = data.nbytes + (vox_offset if gz else 0)
        check(st == 0 and need.value == want, name + ': sizing call', (st, need.value, want, err.message))
        small = np.empty(want - 1, np.uint8)
        st = _LIB.cd_nifti_read_all(p.encode(), None, small.ctypes.data, small.nbytes, ctypes.byref(need),
                                    ctypes.byref(off), None, ctypes.byref(err))
        msg = err.message.decode()
        check(st != 0 and _LIB.cd_status_name(st) == b'argument' and p in msg and 'smaller' in msg,
              name + ': buffer one byte short', (st, msg))
        buf = np.empty(want + 16, np.uint8)
        st = _LIB.cd_nifti_read_all(p.encode(), None, buf.ctypes.data, buf.nbytes, ctypes.byref(need),
                                    ctypes.byref(off), None, ctypes.byref(err))
        want_off = vox_offset if gz and vox_offset % 2 == 0 else 0
        check(st == 0 and off.value == want_off, name + ': data offset', (st, off.value, want_off))
        got = buf[off.value:off.value + data.nbytes].view(np.int16).reshape(data.shape, order='F')
        check(np.array_equal(got, data), name + ': voxels (big-endian file, host order)')
        img = cirrdata.load(p)
        check(img.array.dtype == np.int16 and np.array_equal(img.array, ref), name + ': cirrdata.load')
        check(img.array.ctypes.data % 2 == 0 and img.array.flags.aligned, name + ': aligned array')


def scaling_overflow(cirrdata, work):
    """A slope so large that int64 * slope overflows float64: nibabel scales in longdouble, and so must we."""
    import numpy as np
    import nibabel as nib
    import nifti_corpus as nc
    data = np.array([-2 ** 63, -5, 0, 7, 2 ** 63 - 1, 3], dtype=np.int64).reshape(3, 2, 1)
    h = nc.make_header(version=2, dtype='int64', shape=data.shape, slope=1e300, inter=-2.5)
    p = os.path.join(work, 'overflow.nii')
    nc.write_nifti(p, h, data)
    ref = np.asanyarray(nib.load(p).dataobj)
    got = cirrdata.load(p).array
    check(ref.dtype == np.longdouble, 'overflowing slope: nibabel scales in longdouble', ref.dtype)
    check(got.dtype == ref.dtype and np.array_equal(got, ref), 'overflowing slope: cirrdata equals nibabel',
          (got.dtype, got.ravel()[:3], ref.ravel()[:3]))


def to_nibabel_without_file(cirrdata, work):
    """to_nibabel() once the file is gone: the header is rebuilt from Image.header."""
    import numpy as np
    import nibabel as nib
    import nifti_corpus as nc
    aff = nc.affine_from(nc.rot('z', 20) @ nc.rot('x', -10), (1.1, 0.8, 2.0), (10, -20, 30))
    for version, qcode, scode in ((1, 1, 0), (2, 2, 4)):
        h = nc.make_header(version=version, dtype='int16', shape=(5, 4, 3), zooms=(1.1, 0.8, 2.0), qform=aff,
                           qcode=qcode, sform=aff, scode=scode, slope=0.5, inter=2.0, descrip='gone soon')
        p = os.path.join(work, 'gone%d.nii' % version)
        nc.write_nifti(p, h, np.arange(60, dtype=np.int16).reshape(5, 4, 3))
        img = cirrdata.load(p)
        os.remove(p)
        ni = img.to_nibabel()
        name = 'to_nibabel without the file (NIfTI-%d)' % version
        check(type(ni) is (nib.Nifti2Image if version == 2 else nib.Nifti1Image), name + ': class')
        check(np.asanyarray(ni.dataobj) is img.array and ni.get_data_dtype() == np.float64, name + ': array')
        check(np.array_equal(ni.affine, img.affine), name + ': affine')
        hh = ni.header
        check((int(hh['qform_code']), int(hh['sform_code'])) == (qcode, scode), name + ': codes',
              (int(hh['qform_code']), int(hh['sform_code'])))
        check(np.allclose(hh.get_qform(), aff, atol=1e-6) and np.allclose(hh.get_sform(), aff), name + ': xforms')
        check(bytes(hh['descrip']).rstrip(b'\0') == b'gone soon', name + ': descrip')
        check(np.allclose(hh.get_zooms(), (1.1, 0.8, 2.0)), name + ': zooms', hh.get_zooms())
        out = os.path.join(work, 'saved%d.nii.gz' % version)
        nib.save(ni, out)
        back = cirrdata.load(out)
        check(np.array_equal(back.array, img.array) and np.array_equal(back.affine, img.affine)
              and (back.header['qform_code'], back.header['sform_code']) == (qcode, scode),
              name + ': saved and read back')


def main():
    ap = harness.parser(__doc__.split('\n')[0], cli=False)
    args = ap.parse_args()
    cirrdata = harness.load_binding(args.lib)  # re-executes under ASan where the library needs it
    faulthandler.dump_traceback_later(240, exit=True)  # a hang (a FIFO read, say) fails, with a traceback
    warnings.simplefilter('ignore')  # nibabel's chatter about the odd corpus files (warnings and log lines)
    logging.getLogger('nibabel').setLevel(logging.ERROR)
    work = tempfile.mkdtemp(prefix='cirrdata-nifti-load-', dir=args.workdir)
    try:
        cases = corpus_cases(work)
        for case in cases:
            try:
                run_case(cirrdata, case)
            except Exception as e:
                check(False, case['id'], 'raised %s: %s' % (type(e).__name__, e))
        print('%d files compared with nibabel; %d affines not bit-equal (within %g)%s' % (
            len(cases), len(INEXACT), AFFINE_TOL, (': largest %g (%s)' % max(INEXACT)) if INEXACT else ''))
        hostile_files(cirrdata, work)
        read_all_contract(cirrdata, work)
        to_nibabel_without_file(cirrdata, work)
        scaling_overflow(cirrdata, work)
    except Exception as e:
        CHECKS.crashed(e)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return CHECKS.summary('nifti load')


if __name__ == '__main__':
    sys.exit(main())
