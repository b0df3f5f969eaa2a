#!/usr/bin/env python3
"""Cirrhosis staging (cirrdata/staging.h, `cirrdata stage`) and `cirrdata bench`, checked against code
we did not write:

  * preprocessing: cd_stage_preprocess (C, through ctypes) vs an independent numpy/scipy/nibabel
    implementation of the documented steps (nibabel as_closest_canonical; in-plane bilinear to 256x256
    at source coordinates (i + 0.5) * n / 256 - 0.5 with scipy map_coordinates, 0 outside [0, n-1];
    np.percentile 0.5/99.5 to [0, 1], clipped; three channels; (x - 0.5) / 0.5; float16). Tolerance:
    one float16 step (2^-10 for |x| <= 1): the two sides differ by float rounding (~1e-7), which can
    move a value across a float16 rounding boundary, and by nothing else; we also require that fewer
    than 0.1 % of the values differ at all;
  * the same slices equal, bit for bit, the cirrhosisstage-2d dataset's records that cirrdata.Loader
    trains on (so training and inference see the same numbers);
  * `cirrdata stage --json` with a cirrnet-small of random weights and random batch-norm statistics:
    per-slice logits equal PyTorch eval() on the C-preprocessed slices (max|diff| / max|ref| <= 1e-4,
    the model contract) and cirrdata.Model's; probabilities are the softmax of the logits, the scan's
    the mean of the slices' and sum to 1 (1e-5, float32 round-off); the mask restricts the slices to
    exactly those where the reoriented mask has liver; `--dataset` evaluates a split: the confusion
    matrix counts every record of it and its diagonal equals the scans staged right; the PNG is a PNG;
  * bad input exits 1 with one line naming the file and the problem (missing model, missing volume,
    mask of another shape, mask without liver, dataset with a preprocessed recipe); bad usage exits 2;
  * `cirrdata bench --quick --json` reports positive throughputs and removes its temporary directory.

Prints one line per failure and ends with `staging: N passed, M failed`."""
import argparse
import ctypes
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from asan_reexec import reexec_under_asan  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PASSED = FAILED = 0
SIZE = 256
F16_STEP = 2.0 ** -10


def check(ok, what):
    global PASSED, FAILED
    if ok:
        PASSED += 1
    else:
        FAILED += 1
        print('FAIL: %s' % what, flush=True)
    return ok


def run(cmd, env=None):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


def plain_env():
    """The environment without the ASan preload: for torch subprocesses, which do not load libcirrdata."""
    env = dict(os.environ)
    env.pop('LD_PRELOAD', None)
    env.pop('CIRRDATA_ASAN_REEXEC', None)
    return env


# ---------------------------------------------------------------- the C side through ctypes

class StageInput(ctypes.Structure):
    _fields_ = [('n', ctypes.c_int64), ('depth', ctypes.c_int64), ('z', ctypes.POINTER(ctypes.c_int64)),
                ('x', ctypes.POINTER(ctypes.c_float))]


def c_preprocess(lib, err_t, image_path, mask_path):
    """(x (n, 3, 256, 256) float32, z (n,), depth) from cd_stage_preprocess, or raises with the message."""
    P = ctypes.c_void_p
    lib.cd_nifti_read.argtypes = [ctypes.c_char_p, P, ctypes.POINTER(P), P, ctypes.POINTER(err_t)]
    lib.cd_nifti_read.restype = ctypes.c_int
    lib.cd_volume_destroy.argtypes = [P]
    lib.cd_stage_preprocess.argtypes = [P, P, ctypes.c_int, ctypes.POINTER(ctypes.POINTER(StageInput)),
                                        ctypes.POINTER(err_t)]
    lib.cd_stage_preprocess.restype = ctypes.c_int
    lib.cd_stage_input_destroy.argtypes = [ctypes.POINTER(StageInput)]
    err = err_t()
    vols = []
    try:
        for p in (image_path, mask_path):
            v = P()
            if p is not None:
                if lib.cd_nifti_read(p.encode(), None, ctypes.byref(v), None, ctypes.byref(err)):
                    raise RuntimeError(err.message.decode())
            vols.append(v)
        out = ctypes.POINTER(StageInput)()
        if lib.cd_stage_preprocess(vols[0], vols[1], 2, ctypes.byref(out), ctypes.byref(err)):
            raise RuntimeError(err.message.decode())
        s = out.contents
        x = np.ctypeslib.as_array(s.x, shape=(s.n, 3, SIZE, SIZE)).copy()
        z = np.ctypeslib.as_array(s.z, shape=(s.n,)).copy()
        depth = s.depth
        lib.cd_stage_input_destroy(out)
        return x, z, depth
    finally:
        for v in vols:
            if v:
                lib.cd_volume_destroy(v)


# ---------------------------------------------------------------- the independent reference

def resize_axis_coords(n):
    c = (np.arange(SIZE) + 0.5) * n / SIZE - 0.5
    inside = (c >= -1e-4) & (c <= n - 1 + 1e-4)
    return np.clip(c, 0, n - 1), inside


def reference_preprocess(image_path):
    import nibabel as nib
    from scipy import ndimage
    img = nib.as_closest_canonical(nib.load(image_path))
    vol = img.get_fdata(dtype=np.float64).astype(np.float32)
    nx, ny, nz = vol.shape
    cx, ix = resize_axis_coords(nx)
    cy, iy = resize_axis_coords(ny)
    gx, gy = np.meshgrid(cx, cy, indexing='ij')
    inside = np.outer(ix, iy)
    res = np.empty((SIZE, SIZE, nz), np.float32)
    for k in range(nz):
        s = ndimage.map_coordinates(vol[:, :, k].astype(np.float64), [gx, gy], order=1, mode='nearest')
        res[:, :, k] = np.where(inside, s, 0.0)
    lo, hi = np.percentile(res.astype(np.float64), [0.5, 99.5])
    y = np.clip((res.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    y = ((y.astype(np.float64) - 0.5) / 0.5).astype(np.float32).astype(np.float16).astype(np.float32)
    x = np.repeat(np.transpose(y, (2, 0, 1))[:, None], 3, axis=1)   # (Z, 3, X, Y)
    return x


def canonical_mask_z(mask_path):
    import nibabel as nib
    m = np.asarray(nib.as_closest_canonical(nib.load(mask_path)).dataobj) != 0
    return np.nonzero(m.any(axis=(0, 1)))[0]


# ---------------------------------------------------------------- torch (in a subprocess)

TORCH_SCRIPT = r'''
import importlib, os, sys, types, numpy as np, torch
# cirrdata.models without cirrdata/__init__.py, which would load libcirrdata (maybe ASan-built) via ctypes.
pkg = types.ModuleType('cirrdata')
pkg.__path__ = [os.path.join(sys.argv[1], 'cirrdata')]
sys.modules['cirrdata'] = pkg
build = importlib.import_module('cirrdata.models').build
torch.manual_seed(11)
m = build('cirrnet-small', 3)
g = torch.Generator().manual_seed(12)
for mod in m.modules():
    if isinstance(mod, torch.nn.BatchNorm2d):
        mod.weight.data = torch.rand(mod.weight.shape, generator=g) + 0.5
        mod.bias.data = torch.rand(mod.bias.shape, generator=g) * 0.4 - 0.2
        mod.running_mean = torch.rand(mod.running_mean.shape, generator=g) - 0.5
        mod.running_var = torch.rand(mod.running_var.shape, generator=g) * 1.5 + 0.5
m.eval()
torch.save({'state_dict': m.state_dict()}, sys.argv[2])
with torch.no_grad():
    np.save(sys.argv[4], m(torch.from_numpy(np.load(sys.argv[3]))).numpy())
'''


def softmax(l):
    l = np.asarray(l, np.float64)
    e = np.exp(l - l.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def one_line_error(r, want_rc, *needles):
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    return r.returncode == want_rc and len(lines) == 1 and all(n in lines[0] for n in needles)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--cirrdata', required=True)
    ap.add_argument('--lib', required=True)
    a = ap.parse_args()
    reexec_under_asan(a.lib)
    os.environ['CIRRDATA_LIB'] = os.path.abspath(a.lib)
    sys.path.insert(0, os.path.join(ROOT, 'python'))
    import nibabel as nib
    import cirrdata
    from cirrdata import _lib as _l
    lib = ctypes.CDLL(os.path.abspath(a.lib))
    cli = a.cirrdata
    tmp = tempfile.mkdtemp(prefix='cirrdata-staging-')
    try:
        src = os.path.join(tmp, 'src')
        r = run([cli, 'synth', '--layout', 'cirrmri600', src, '--cases', '3', '--seed', '5'])
        if not check(r.returncode == 0, 'synth: %s' % r.stderr.strip()):
            return 1
        images = sorted(glob.glob(os.path.join(src, 'Cirrhosis_T1_3D', 'Cirrhosis_T1_3D', '*_images', '*.nii.gz')))
        img = images[0]
        msk = img.replace('_images', '_masks')

        # 1. C vs the independent reference, all slices (no mask).
        xc, zc, depth = c_preprocess(lib, _l.CdError, img, None)
        xr = reference_preprocess(img)
        check(xc.shape == xr.shape and list(zc) == list(range(depth)),
              'no mask: all %d slices, shape %s vs reference %s' % (depth, xc.shape, xr.shape))
        if xc.shape == xr.shape:
            d = np.abs(xc - xr)
            check(d.max() <= F16_STEP + 1e-6, 'C vs reference preprocessing: max|diff| %.3g > one float16 step' % d.max())
            check(np.mean(d > 0) < 1e-3, 'C vs reference: %.4f %% of values differ' % (100 * np.mean(d > 0)))
            check(xc.min() >= -1 and xc.max() <= 1 and xc.max() - xc.min() > 1.5,
                  'preprocessed range [%g, %g] should span most of [-1, 1]' % (xc.min(), xc.max()))

        # 2. With the mask: exactly the slices where the reoriented mask has liver, same values.
        xm, zm, _ = c_preprocess(lib, _l.CdError, img, msk)
        want_z = canonical_mask_z(msk)
        check(list(zm) == list(want_z) and len(zm) < depth,
              'mask slices %s vs liver slices %s (of %d)' % (list(zm), list(want_z), depth))
        check(np.array_equal(xm, xc[zm]), 'masked slices equal the unmasked ones at the same z')

        # 3. The cirrhosisstage-2d dataset (what train_staging.py trains on) holds the same numbers.
        ds2d = os.path.join(tmp, 'ds2d')
        r = run([cli, 'convert', '--layout', 'cirrmri600', src, '--out', ds2d, '--recipe', 'cirrhosisstage-2d'])
        check(r.returncode == 0, 'convert cirrhosisstage-2d: %s' % r.stderr.strip())
        pid = os.path.basename(img)[:-len('.nii.gz')]
        with cirrdata.Dataset(ds2d) as ds:
            hit = [i for i in range(len(ds)) if ds.metadata(i)['key'] == 'T1/' + pid]
            if check(len(hit) == 1, 'record T1/%s in the 2D dataset' % pid):
                rec = ds[hit[0]]['image'].astype(np.float32)             # (3, 256, 256, Z)
                check(np.array_equal(np.transpose(rec, (3, 0, 1, 2)), xc),
                      'cd_stage_preprocess equals the cirrhosisstage-2d record bit for bit')

        # 4. `cirrdata stage` with random weights and batch-norm statistics vs PyTorch and cirrdata.Model.
        ckpt, model = os.path.join(tmp, 'rand.pt'), os.path.join(tmp, 'rand.safetensors')
        np.save(os.path.join(tmp, 'x.npy'), xm)
        r = run([sys.executable, '-c', TORCH_SCRIPT, os.path.join(ROOT, 'python'), ckpt, os.path.join(tmp, 'x.npy'),
                 os.path.join(tmp, 'logits.npy')], env=plain_env())
        if not check(r.returncode == 0, 'torch reference: %s' % r.stderr.strip()[-2000:]):
            return 1
        r = run([sys.executable, os.path.join(ROOT, 'tools', 'scripts', 'export_weights.py'), '--arch', 'cirrnet-small', ckpt,
                 '-o', model], env=plain_env())
        if not check(r.returncode == 0, 'export_weights: %s' % r.stderr.strip()):
            return 1
        ref_logits = np.load(os.path.join(tmp, 'logits.npy')).astype(np.float64)
        r = run([cli, 'stage', img, '--mask', msk, '--model', model, '--device', 'cpu', '--batch', '7', '--json'])
        if check(r.returncode == 0, 'stage --json: %s' % r.stderr.strip()):
            j = json.loads(r.stdout)
            s = j['scans'][0]
            ps = s['per_slice']
            logits = np.array([p['logits'] for p in ps], np.float64)
            probs = np.array([p['probabilities'] for p in ps], np.float64)
            scan = np.array([s['probabilities'][k] for k in ('mild', 'moderate', 'severe')])
            check([p['z'] for p in ps] == list(zm) and s['slices'] == len(zm), 'stage: slices are the liver slices')
            if check(logits.shape == ref_logits.shape, 'logits shape %s vs %s' % (logits.shape, ref_logits.shape)):
                rel = np.abs(logits - ref_logits).max() / np.abs(ref_logits).max()
                check(rel <= 1e-4, 'stage logits vs PyTorch eval(): max|diff|/max|ref| %.3g' % rel)
                with cirrdata.Model(model, device='cpu', threads=2) as m:
                    ml = m.predict(xm).astype(np.float64)
                rel = np.abs(logits - ml).max() / np.abs(ml).max()
                check(rel <= 1e-5, 'stage logits vs cirrdata.Model: %.3g' % rel)
                check(np.abs(probs - softmax(logits)).max() <= 1e-6, 'slice probabilities = softmax(logits)')
                check(np.abs(scan - softmax(ml).mean(axis=0)).max() <= 1e-5,
                      'scan probabilities = mean of the slices\' softmax (cirrdata.Model): %s vs %s'
                      % (scan, softmax(ml).mean(axis=0)))
                check(abs(scan.sum() - 1) <= 1e-5, 'scan probabilities sum to 1 (%r)' % scan.sum())
                check(s['stage'] == ('mild', 'moderate', 'severe')[int(np.argmax(scan))], 'stage = argmax')
        r = run([cli, 'stage', img, '--model', model, '--device', 'cpu'])
        check(r.returncode == 0 and ('%d slices' % depth) in r.stdout, 'stage without mask uses all %d slices: %s'
              % (depth, r.stdout.strip()))
        # Vulkan (lavapipe here) on three liver slices, cut out with nibabel so the check stays quick.
        few_img, few_msk = os.path.join(tmp, 'few.nii.gz'), os.path.join(tmp, 'few_mask.nii.gz')
        nib.save(nib.as_closest_canonical(nib.load(img)).slicer[:, :, int(zm[0]):int(zm[0]) + 3], few_img)
        nib.save(nib.as_closest_canonical(nib.load(msk)).slicer[:, :, int(zm[0]):int(zm[0]) + 3], few_msk)
        runs = [run([cli, 'stage', few_img, '--mask', few_msk, '--model', model, '--device', d, '--json'])
                for d in ('cpu', 'vulkan')]
        if check(all(r.returncode == 0 for r in runs), 'stage --device vulkan runs (lavapipe is there): %s'
                 % runs[1].stderr.strip()):
            p = [np.array(list(json.loads(r.stdout)['scans'][0]['probabilities'].values())) for r in runs]
            check(np.abs(p[0] - p[1]).max() <= 1e-4, 'vulkan vs cpu probabilities: %s vs %s' % (p[1], p[0]))

        # 5. A dataset split: confusion matrix and PNG.
        raw = os.path.join(tmp, 'raw')
        r = run([cli, 'convert', '--layout', 'cirrmri600', src, '--out', raw, '--recipe', 'raw'])
        check(r.returncode == 0, 'convert raw: %s' % r.stderr.strip())
        png = os.path.join(tmp, 'cm.png')
        # stderr is a pipe: progress lines, one per scan with CIRRDATA_PROGRESS_INTERVAL=0 (tools/cli_progress.h).
        r = run([cli, 'stage', '--dataset', raw, '--split', 'train', '--model', model, '--device', 'cpu', '--json',
                 '--png', png], env=dict(os.environ, CIRRDATA_PROGRESS_INTERVAL='0'))
        if check(r.returncode == 0, 'stage --dataset: %s' % r.stderr.strip()):
            j = json.loads(r.stdout)
            with cirrdata.Dataset(raw) as ds:
                ntrain = sum(1 for i in range(len(ds)) if ds.metadata(i)['split'] == 'train')
            lines = r.stderr.splitlines()
            want = ['cirrdata stage: %d/%d scans (%d%%), ' % (k, ntrain, int(100 * k / ntrain + 0.5))
                    for k in range(1, ntrain + 1)]
            check(len(lines) == ntrain and all(a.startswith(w) and ' MB/s, elapsed ' in a and ', left ' in a
                                               for a, w in zip(lines, want)),
                  'stage --dataset: a progress line per scan: %r' % r.stderr[:600])
            cm = np.array(j['confusion'])
            right = sum(1 for s in j['scans'] if s['stage'] == s['true'])
            check(cm.sum() == ntrain == len(j['scans']), 'confusion matrix counts %d of %d records' % (cm.sum(), ntrain))
            check(np.trace(cm) == right and abs(j['accuracy'] - right / ntrain) < 1e-12, 'diagonal = scans staged right')
            with open(png, 'rb') as f:
                check(f.read(8) == b'\x89PNG\r\n\x1a\n', 'confusion matrix PNG written')
        r = run([cli, 'stage', '--dataset', ds2d, '--model', model])
        check(one_line_error(r, 1, ds2d, 'cirrhosisstage-2d', 'raw'), 'stage --dataset on a 2D dataset: %r' % r.stderr)
        r = run([cli, 'stage', '--dataset', raw, '--split', 'test', '--model', model, '--device', 'cpu', '--quiet'],
                env=dict(os.environ, CIRRDATA_PROGRESS_INTERVAL='0'))
        check(r.returncode == 0 and r.stderr == '' and 'held-out accuracy' in r.stdout,
              'stage --dataset --quiet: no progress: %r' % r.stderr[:300])

        # 6. Bad input: one line naming the file and the problem.
        missing = os.path.join(tmp, 'nope.safetensors')
        r = run([cli, 'stage', img, '--mask', msk, '--model', missing])
        check(one_line_error(r, 1, missing), 'missing model: %r' % r.stderr)
        r = run([cli, 'stage', img + '.missing', '--model', model])
        check(one_line_error(r, 1, img + '.missing'), 'missing volume: %r' % r.stderr)
        mi = nib.load(msk)
        small = os.path.join(tmp, 'small_mask.nii.gz')
        nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.uint8), mi.affine), small)
        r = run([cli, 'stage', img, '--mask', small, '--model', model, '--device', 'cpu'])
        check(one_line_error(r, 1, small, 'shape'), 'mask of another shape: %r' % r.stderr)
        empty = os.path.join(tmp, 'empty_mask.nii.gz')
        nib.save(nib.Nifti1Image(np.zeros(mi.shape, np.uint8), mi.affine, mi.header), empty)
        r = run([cli, 'stage', img, '--mask', empty, '--model', model, '--device', 'cpu'])
        check(one_line_error(r, 1, empty, 'no liver'), 'mask without liver: %r' % r.stderr)
        r = run([cli, 'stage', img, '--model', model, '--batch', '0'])
        check(r.returncode == 2, 'stage --batch 0 is a usage error (%d)' % r.returncode)
        r = run([cli, 'stage', img, img, '--mask', msk, '--model', model])
        check(r.returncode == 2, 'two volumes, one mask: usage error (%d)' % r.returncode)

        # 7. cirrdata bench, quick.
        bdir = os.path.join(tmp, 'bench')
        os.makedirs(bdir)
        r = run([cli, 'bench', '--quick', '--seconds', '0.2', '--json', '--dir', bdir])
        if check(r.returncode == 0, 'bench --quick: %s' % r.stderr.strip()):
            j = json.loads(r.stdout)
            check(j['decode']['volumes_per_s'] > 0 and j['decode']['voxel_mb_per_s'] > 0 and
                  j['convert'][0]['cases_per_s'] > 0 and j['loader']['samples_per_s'] > 0 and j['scans'] > 0,
                  'bench: positive throughputs %s' % r.stdout[:300])
            check(os.listdir(bdir) == [], 'bench removed its temporary directory: %s' % os.listdir(bdir))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print('staging: %d passed, %d failed' % (PASSED, FAILED))
    return 1 if FAILED else 0


if __name__ == '__main__':
    sys.exit(main())
