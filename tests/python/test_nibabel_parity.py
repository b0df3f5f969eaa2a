#!/usr/bin/python3
"""cirrdata CLI vs nibabel, on the generated corpus and on nibabel's own test data.

  /usr/bin/python3 tests/python/test_nibabel_parity.py --cirrdata build/tools/cirrdata \
      [--workdir DIR] [--nibabel-data DIR] [--jobs N] [--filter SUBSTRING]

For every case: `info --json`, `export --json` and `export --canonical --json`, compared with
nibabel.  Prints one line per failing check, then exactly one summary line
`nibabel parity: N passed, M failed` (a case counts once).  Exit status 1 if anything failed.
"""
import argparse
import concurrent.futures
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import nibabel as nib
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nifti_corpus as nc  # noqa: E402

TIMEOUT_S = 60
AFFINE_ATOL = 1e-5
SUPPORTED = set(nc.SUPPORTED_DTYPES)


class Case:
    def __init__(self, d):
        self.d = d
        self.id = d['id']
        self.path = d['path']
        self.volume = d.get('volume')
        self.fails = []

    def fail(self, msg):
        self.fails.append('FAIL %s: %s' % (self.id, msg))


def run(cmd, env=None):
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        return None, '', 'timeout after %ds' % TIMEOUT_S
    return p.returncode, p.stdout.decode('utf-8', 'replace'), p.stderr.decode('utf-8', 'replace')


def rc_text(rc, err):
    if rc is None:
        return err
    if rc < 0:
        return 'killed by signal %d; stderr: %s' % (-rc, err.strip()[:300])
    return 'exit %d; stderr: %s' % (rc, err.strip()[:300])


def parse_json(case, what, out):
    try:
        obj = json.loads(out)
    except ValueError as e:
        case.fail('%s: stdout is not one JSON object (%s): %r' % (what, e, out[:200]))
        return None
    if not isinstance(obj, dict):
        case.fail('%s: JSON is not an object' % what)
        return None
    return obj


def close(a, b, atol=0.0, rtol=0.0):
    try:
        a = np.asarray(a, dtype=float)
        b = np.asarray(b, dtype=float)
    except (TypeError, ValueError):
        return False
    if a.shape != b.shape:
        return False
    return bool(np.all((a == b) | (np.abs(a - b) <= atol + rtol * np.abs(b))
                       | (np.isnan(a) & np.isnan(b))))


def check_stderr_line(case, what, err, path):
    lines = err.rstrip('\n').split('\n')
    if len(lines) != 1 or not lines[0].startswith('cirrdata: ') or path not in lines[0]:
        case.fail('%s: stderr should be one line "cirrdata: %s: <problem>", got %r' % (what, path, err[:300]))
    for bad in ('AddressSanitizer', 'runtime error', 'LeakSanitizer'):
        if bad in err:
            case.fail('%s: sanitizer report in stderr' % what)


def check_clean_stderr(case, what, err):
    for bad in ('AddressSanitizer', 'runtime error', 'LeakSanitizer'):
        if bad in err:
            case.fail('%s: sanitizer report in stderr: %s' % (what, err.strip()[:500]))


# ----------------------------------------------------------------------------- reference

class Reference:
    """Everything nibabel says about one case (and one volume)."""

    def __init__(self, case):
        d = case.d
        self.img = nc.load_reference(d)
        img = self.img
        hdr_path = d['hdr'] if d.get('pair') else d['path']
        self.raw_hdr = nc.read_raw_header(hdr_path)
        self.version = 2 if isinstance(self.raw_hdr, nib.Nifti2Header) else 1
        self.shape = tuple(int(x) for x in img.shape)
        self.ndim = len(self.shape)
        self.shape3 = (self.shape + (1, 1, 1))[:3]
        self.nvol = int(np.prod(self.shape[3:])) if self.ndim > 3 else 1
        self.vol = 0 if case.volume is None else case.volume
        self.dtype = img.get_data_dtype()
        self.slope, self.inter, self.scaling = nc.stored_scaling(self.raw_hdr)
        # the proxy nibabel reads with must agree with the stored scaling
        assert self.scaling == ((img.dataobj.slope, img.dataobj.inter) != (1.0, 0.0)), case.id
        self.affine = np.array(img.affine, dtype=float)
        self.orientation = ''.join(nib.aff2axcodes(self.affine))
        zooms = [float(z) for z in img.header.get_zooms()]
        self.zooms = zooms
        self.load_pixels(case)

    def load_pixels(self, case):
        img = self.img
        raw = np.asanyarray(img.dataobj.get_unscaled())
        fdata = img.get_fdata()  # float64, raw * slope + inter computed by nibabel in float64
        vshape = self.shape3 + (self.nvol,)
        self.raw = raw.reshape(vshape, order='F')[..., self.vol]
        self.fdata = fdata.reshape(vshape, order='F')[..., self.vol]
        # canonical (RAS+) reference: nibabel's closest-canonical reorientation of the 3D volume
        self.ornt = io_orientation(self.affine)
        self.canon_raw = apply_orientation(self.raw, self.ornt)
        self.canon_fdata = apply_orientation(self.fdata, self.ornt)
        self.canon_affine = self.affine @ inv_ornt_aff(self.ornt, self.shape3)
        self.canon_orientation = ''.join(nib.aff2axcodes(self.canon_affine))
        if self.ndim >= 3:
            # cross-check the reconstruction above against nib.as_closest_canonical itself
            # (it cannot take ndim < 3 images, which is why the 3D volume is reoriented directly)
            cimg = nib.as_closest_canonical(img)
            cf = cimg.get_fdata()
            cf = cf.reshape(cf.shape[:3] + (self.nvol,), order='F')[..., self.vol]
            assert np.array_equal(cf, self.canon_fdata, equal_nan=True), case.id
            assert np.allclose(cimg.affine, self.canon_affine, atol=1e-9), case.id


# ----------------------------------------------------------------------------- checks

def check_info(case, ref, cirrdata):
    rc, out, err = run([cirrdata, 'info', case.path, '--json'])
    check_clean_stderr(case, 'info', err)
    if rc != 0:
        case.fail('info: %s' % rc_text(rc, err))
        return
    j = parse_json(case, 'info', out)
    if j is None:
        return
    check_info_fields(case, ref.raw_hdr, j, img=ref.img, ref=ref)


def check_info_fields(case, rh, j, img=None, ref=None):
    """info --json vs the stored header (rh) and, when the image is readable, nibabel's image."""
    d = case.d

    def want(key, expected, cmp=None):
        if key not in j:
            case.fail('info: key %r missing' % key)
            return
        got = j[key]
        ok = cmp(got, expected) if cmp else got == expected
        if not ok:
            case.fail('info: %s = %r, nibabel: %r' % (key, got, expected))

    version = 2 if isinstance(rh, nib.Nifti2Header) else 1
    shape = tuple(int(x) for x in rh.get_data_shape())
    ndim = len(shape)
    want('version', version)
    want('byte_order', 'little' if rh.endianness == '<' else 'big')
    want('pair', bool(d.get('pair')))
    if d.get('pair'):
        if d.get('img'):
            want('compressed', d['img'].endswith('.gz'))
    else:
        want('compressed', d['path'].endswith('.gz'))
    want('ndim', ndim)
    want('shape', list(shape))
    code = int(rh['datatype'])
    try:
        dname = rh.get_data_dtype().name
    except Exception:  # unknown code
        dname = None
    want('dtype', dname if dname in SUPPORTED else None)
    want('datatype', code)
    want('bitpix', int(rh['bitpix']))
    pixdim = [float(x) for x in rh['pixdim']]
    want('spacing', pixdim[1:ndim + 1], lambda g, e: close(g, e, rtol=1e-7))
    # qfac: nibabel fixes a stored qfac that is neither 1 nor -1 to 1 when loading; accept either
    qfacs = {pixdim[0], 1.0 if pixdim[0] not in (1.0, -1.0) else pixdim[0]}
    want('qfac', qfacs, lambda g, e: isinstance(g, (int, float)) and float(g) in e)
    want('qform_code', int(rh['qform_code']))
    want('sform_code', int(rh['sform_code']))
    try:
        qform = rh.get_qform()
    except Exception:
        qform = None
    if qform is not None:
        want('qform', qform.tolist(), lambda g, e: close(g, e, atol=AFFINE_ATOL))
    want('sform', rh.get_sform().tolist(), lambda g, e: close(g, e, atol=AFFINE_ATOL))
    if img is not None:
        aff = np.array(img.affine, float)
    else:
        aff = rh.get_best_affine()
    want('affine', aff.tolist(), lambda g, e: close(g, e, atol=AFFINE_ATOL))
    want('orientation', ''.join(nib.aff2axcodes(aff)))

    # scl_slope / scl_inter as stored (JSON cannot carry NaN/inf: accept null for those)
    def stored(g, e):
        if math.isfinite(e):
            return isinstance(g, (int, float)) and g == e
        return g is None or (isinstance(g, float) and (g == e or (math.isnan(g) and math.isnan(e))))
    want('scl_slope', float(rh['scl_slope']), stored)
    want('scl_inter', float(rh['scl_inter']), stored)
    slope, inter, scaling = nc.stored_scaling(rh)
    want('scaling', scaling)
    want('vox_offset', int(rh['vox_offset']))
    want('nvolumes', int(np.prod(shape[3:])) if ndim > 3 else 1)
    want('xyzt_units', int(rh['xyzt_units']))
    want('intent_code', int(rh['intent_code']))
    descrip = bytes(rh['descrip']).split(b'\0')[0].decode('latin-1')
    want('descrip', descrip, lambda g, e: isinstance(g, str) and g.rstrip() == e.rstrip())
    if 'path' in j and j['path'] != case.path:
        case.fail('info: path = %r, expected %r' % (j['path'], case.path))


def scaled_ok(got, ref, raw, slope, inter):
    """Scaled export (float32) vs nibabel's float64 raw*slope+inter.

    The CLI computes raw*slope+inter in double, then rounds once to float32: round-to-nearest
    gives |err| <= 2**-24 * |result| (half an ulp).  We allow 2**-23 (one full ulp) so a
    difference in the double computation (fma vs separate multiply/add: ~1e-16 relative to the
    operands, hence the 1e-12 * (|raw*slope| + |inter|) term for cancellation) can flip the
    rounding direction at a tie, plus 1e-37 absolute for results in float32's subnormal range.
    Non-finite values (NaN/inf float data) must match exactly in kind and position."""
    got = got.astype(np.float64)
    fin = np.isfinite(ref)
    if not np.array_equal(np.isfinite(got), fin):
        return 'finite/non-finite positions differ'
    nf = ~fin
    if not np.array_equal(got[nf], ref[nf], equal_nan=True):
        return 'non-finite values differ'
    mag = np.abs(raw.astype(np.float64) * slope) + abs(inter)
    tol = 2.0 ** -23 * np.abs(ref) + 1e-12 * mag + 1e-37
    with np.errstate(invalid='ignore', over='ignore'):
        diff = np.abs(got - ref)
    bad = fin & (diff > tol)
    if bad.any():
        i = np.argwhere(bad)[0]
        t = tuple(int(x) for x in i)
        return '%d voxels outside float32 rounding, first at %s: got %r, nibabel %r (raw %r)' % (
            int(bad.sum()), t, float(got[t]), float(ref[t]), raw[t].item())
    return None


def check_export(case, ref, cirrdata, outdir, canonical):
    what = 'export%s' % (' --canonical' if canonical else '')
    out_path = os.path.join(outdir, '%s%s.npy' % (case.id.replace('@', '_'), '_canon' if canonical else ''))
    cmd = [cirrdata, 'export', case.path, '-o', out_path, '--json']
    if case.volume is not None:
        cmd += ['--volume', str(case.volume)]
    if canonical:
        cmd.append('--canonical')
    rc, out, err = run(cmd)
    check_clean_stderr(case, what, err)
    if rc != 0:
        case.fail('%s: %s' % (what, rc_text(rc, err)))
        return
    j = parse_json(case, what, out)
    try:
        arr = np.load(out_path, allow_pickle=False)
    except Exception as e:
        case.fail('%s: cannot load %s: %s' % (what, out_path, e))
        return
    raw = ref.canon_raw if canonical else ref.raw
    fdata = ref.canon_fdata if canonical else ref.fdata
    affine = ref.canon_affine if canonical else ref.affine
    orientation = ref.canon_orientation if canonical else ref.orientation
    if arr.shape != raw.shape:
        case.fail('%s: array shape %s, nibabel %s' % (what, arr.shape, raw.shape))
        return
    if ref.scaling:
        if arr.dtype != np.float32:
            case.fail('%s: scaled data exported as %s, expected float32' % (what, arr.dtype))
        else:
            msg = scaled_ok(arr, fdata, raw, ref.slope, ref.inter)
            if msg:
                case.fail('%s: scaled values: %s' % (what, msg))
    else:
        want_dt = ref.dtype.newbyteorder('=')
        if arr.dtype != want_dt:
            case.fail('%s: dtype %s, expected %s (stored dtype, native order)' % (what, arr.dtype.str, want_dt.str))
        else:
            # stored values, exact (NaN == NaN for float data)
            if not np.array_equal(arr, raw, equal_nan=(arr.dtype.kind == 'f')):
                bad = ~((arr == raw) | ((arr != arr) & (raw != raw))) if arr.dtype.kind == 'f' else arr != raw
                t = tuple(int(x) for x in np.argwhere(bad)[0])
                case.fail('%s: %d voxels differ, first at %s: got %r, nibabel %r' % (
                    what, int(bad.sum()), t, arr[t].item(), raw[t].item()))
            elif not np.array_equal(arr.astype(np.float64), fdata, equal_nan=True):
                case.fail('%s: values differ from get_fdata()' % what)
    if j is None:
        return
    for key in ('path', 'output', 'shape', 'dtype', 'affine', 'orientation', 'spacing', 'scaled',
                'slope', 'inter', 'volume', 'canonical'):
        if key not in j:
            case.fail('%s: JSON key %r missing' % (what, key))
    if j.get('shape') != list(raw.shape):
        case.fail('%s: JSON shape %r, expected %r' % (what, j.get('shape'), list(raw.shape)))
    if j.get('dtype') != arr.dtype.name:
        case.fail('%s: JSON dtype %r, but the .npy holds %s' % (what, j.get('dtype'), arr.dtype.name))
    if 'affine' in j and not close(j['affine'], affine, atol=AFFINE_ATOL):
        case.fail('%s: affine %r, nibabel %r' % (what, j['affine'], np.round(affine, 6).tolist()))
    if 'orientation' in j and j['orientation'] != orientation:
        case.fail('%s: orientation %r, nibabel %r' % (what, j['orientation'], orientation))
    if 'scaled' in j and j['scaled'] is not ref.scaling:
        case.fail('%s: scaled %r, expected %r' % (what, j['scaled'], ref.scaling))
    if ref.scaling:
        if not close(j.get('slope'), ref.slope, rtol=1e-12) or not close(j.get('inter'), ref.inter, rtol=1e-12):
            case.fail('%s: slope/inter %r/%r, expected %r/%r' % (what, j.get('slope'), j.get('inter'),
                                                                 ref.slope, ref.inter))
    if 'volume' in j and j['volume'] != ref.vol:
        case.fail('%s: volume %r, expected %r' % (what, j['volume'], ref.vol))
    if 'canonical' in j and j['canonical'] is not canonical:
        case.fail('%s: canonical %r' % (what, j['canonical']))
    if 'output' in j and j['output'] != out_path:
        case.fail('%s: output %r, expected %r' % (what, j['output'], out_path))
    # spacing: pixdim of the written array's axes.  Only the axes the file has are checked
    # (for ndim < 3 the padding axes' spacing is not specified by the contract).
    sp = j.get('spacing')
    if sp is not None:
        if not isinstance(sp, list) or len(sp) != 3:
            case.fail('%s: spacing %r is not 3 values' % (what, sp))
        else:
            for i in range(min(ref.ndim, 3)):
                k = int(ref.ornt[i, 0]) if canonical else i
                if not close(sp[k], ref.zooms[i], rtol=1e-7):
                    case.fail('%s: spacing[%d] = %r, expected %r' % (what, k, sp[k], ref.zooms[i]))


def run_case(case, cirrdata, outdir):
    d = case.d
    try:
        kind = d.get('expect', 'ok')
        if kind == 'reject':
            for what, cmd in (('info', [cirrdata, 'info', case.path, '--json']),
                              ('export', [cirrdata, 'export', case.path, '-o',
                                          os.path.join(outdir, case.id + '.npy')])):
                rc, out, err = run(cmd)
                if rc != 1:
                    case.fail('%s: expected exit 1 (%s), got %s' % (what, d.get('note'), rc_text(rc, err)))
                else:
                    check_stderr_line(case, what, err, case.path)
            return case
        if kind == 'missing_img':
            rh = nc.read_raw_header(case.path)
            rc, out, err = run([cirrdata, 'info', case.path, '--json'])
            check_clean_stderr(case, 'info', err)
            if rc != 0:
                case.fail('info (header only, .img missing): %s' % rc_text(rc, err))
            else:
                j = parse_json(case, 'info', out)
                if j is not None:
                    check_info_fields(case, rh, j)
            rc, out, err = run([cirrdata, 'export', case.path, '-o', os.path.join(outdir, case.id + '.npy')])
            if rc != 1:
                case.fail('export without .img: expected exit 1, got %s' % rc_text(rc, err))
            else:
                check_stderr_line(case, 'export', err, case.path)
                if '.img' not in err:
                    case.fail('export: error does not mention the missing .img: %r' % err.strip())
            return case
        ref = Reference(case)
        check_info(case, ref, cirrdata)
        check_export(case, ref, cirrdata, outdir, canonical=False)
        check_export(case, ref, cirrdata, outdir, canonical=True)
    except AssertionError as e:
        case.fail('TEST BUG (reference self-check failed): %r' % (e,))
    except Exception as e:  # a bug in this script must not look like a pass
        case.fail('TEST ERROR: %s: %s' % (type(e).__name__, e))
    return case


# ----------------------------------------------------------------------------- nibabel test data

def nibabel_data_cases(datadir):
    cases = []
    for name in sorted(os.listdir(datadir)):
        path = os.path.join(datadir, name)
        if not os.path.isfile(path):
            continue
        if not (name.endswith('.nii') or name.endswith('.nii.gz') or name.endswith('.hdr')):
            continue
        rh = nc.read_raw_header(path)
        magic = bytes(rh['magic']) if rh is not None and 'magic' in rh else b''
        ident = 'nibabel:' + name
        if name.endswith('.hdr'):
            if magic[:3] not in (b'ni1', b'ni2'):
                cases.append({'id': ident, 'path': path, 'volume': None, 'expect': 'reject',
                              'note': 'no NIfTI magic (Analyze 7.5)'})
                continue
            base = path[:-4]
            img = next((base + e for e in ('.img', '.img.gz') if os.path.exists(base + e)), None)
            if img is None:
                cases.append({'id': ident, 'path': path, 'volume': None, 'expect': 'missing_img',
                              'pair': True, 'version': 2 if magic[:3] == b'ni2' else 1,
                              'note': 'pair header without .img'})
                continue
            d = {'path': path, 'pair': True, 'hdr': path, 'img': img,
                 'version': 2 if magic[:3] == b'ni2' else 1}
        else:
            if magic[:3] not in (b'n+1', b'n+2'):
                cases.append({'id': ident, 'path': path, 'volume': None, 'expect': 'reject',
                              'note': 'no NIfTI magic'})
                continue
            d = {'path': path, 'pair': False, 'version': 2 if magic[:3] == b'n+2' else 1}
            if 3000 <= int(rh['intent_code']) < 3100:
                d['cifti'] = True  # nib.load returns a Cifti2Image; the NIfTI-2 view is the reference
        shape = tuple(rh.get_data_shape())
        nvol = int(np.prod(shape[3:])) if len(shape) > 3 else 1
        vols = [None] if nvol == 1 else sorted({0, nvol // 2 + 1 if nvol > 2 else 0, nvol - 1})
        for v in vols:
            c = dict(d)
            c['id'] = ident if v is None else '%s@vol%d' % (ident, v)
            c['volume'] = v
            c['note'] = 'nibabel test data'
            cases.append(c)
    return cases


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--cirrdata', required=True, help='path of the cirrdata CLI')
    ap.add_argument('--workdir', help='directory for the corpus and outputs (kept); default: a temp dir')
    ap.add_argument('--nibabel-data', default=os.path.join(os.path.dirname(nib.__file__), 'tests', 'data'))
    ap.add_argument('--jobs', type=int, default=min(8, os.cpu_count() or 1))
    ap.add_argument('--filter', help='only cases whose id contains this substring')
    args = ap.parse_args(argv)
    cirrdata = os.path.abspath(args.cirrdata)
    if not os.access(cirrdata, os.X_OK):
        print('cirrdata binary not found or not executable: %s' % cirrdata)
        print('nibabel parity: 0 passed, 1 failed')
        return 1
    tmp = None
    if args.workdir:
        work = os.path.abspath(args.workdir)
        os.makedirs(work, exist_ok=True)
    else:
        work = tmp = tempfile.mkdtemp(prefix='cirrdata_parity_')
    try:
        corpus_dir = os.path.join(work, 'corpus')
        outdir = os.path.join(work, 'out')
        if os.path.isdir(corpus_dir):
            shutil.rmtree(corpus_dir)
        os.makedirs(outdir, exist_ok=True)
        dicts = nc.build_corpus(corpus_dir)
        if args.nibabel_data and os.path.isdir(args.nibabel_data):
            dicts += nibabel_data_cases(args.nibabel_data)
        else:
            print('note: nibabel test data not found at %s' % args.nibabel_data)
        if args.filter:
            dicts = [d for d in dicts if args.filter in d['id']]
        cases = [Case(d) for d in dicts]
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as ex:
            done = list(ex.map(lambda c: run_case(c, cirrdata, outdir), cases))
        passed = failed = 0
        for c in done:
            if c.fails:
                failed += 1
                for line in c.fails:
                    print(line)
            else:
                passed += 1
        print('nibabel parity: %d passed, %d failed' % (passed, failed))
        return 1 if failed else 0
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
