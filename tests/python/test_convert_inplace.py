#!/usr/bin/env python3
"""`raw` conversion of sources the converter chunks straight from the source volume (no C-order copy),
against nibabel and the independent shard reader (tests/python/cdshard.py).

The raw recipe reorients (axis permutation and flips of nibabel's as_closest_canonical) and casts; the
converter folds both into the production of each 64^3 chunk. This test covers the sources stored as
float32: int16/int8 with a NIfTI scaling, float32 (with and without scaling) and uint16 above 32767,
with permuted and flipped axes and shapes over 64 on some axes (several chunks, edge chunks), plus an
unscaled int16 case with a 2-label mask. Every stored voxel must be

    float32(float64(stored value) * float64(scl_slope) + float64(scl_inter))   (as nibabel's header gives them)

exactly, and within one float32 rounding of nibabel's get_fdata() of the canonical image; masks,
affines, bounding boxes and the manifest's source statistics (count, sum, sum of squares, min, max and
the 256 evenly spaced samples of the in-mask voxels, in the source's voxel order, against numpy over
nibabel's values) are checked too. A second conversion with two
threads must give identical shard bytes (the buffers reused across cases must not leak into outputs).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (before numpy/nibabel: may re-exec under ASan)
from harness import check  # noqa: E402


def main():
    ap = harness.parser(__doc__.split('\n')[0], lib=None)
    args = ap.parse_args()
    import numpy as np
    import nibabel as nib
    import cdshard

    work = args.workdir or tempfile.mkdtemp(prefix='cirrdata-inplace-')
    os.makedirs(work, exist_ok=True)
    rng = np.random.default_rng(20261128)
    try:
        perms = [np.array([[0, 0, -1.5], [2.0, 0, 0], [0, -0.7, 0]]), np.array([[0, 1.1, 0], [0, 0, 1.3], [-0.9, 0, 0]]),
                 np.diag([-1.0, -1.0, 3.0]), np.array([[0, -0.8, 0], [-1.2, 0, 0], [0, 0, 2.5]]),
                 np.diag([0.8, -0.9, 1.0]), np.array([[0, 0, 1.0], [0, 1.0, 0], [-1.0, 0, 0]])]
        # (dtype, slope, inter): None = no scaling in the header
        kinds = [(np.int16, 0.5, 10.0), (np.int8, 3.0, -7.25), (np.float32, None, None), (np.uint16, None, None),
                 (np.float32, 1.5, 0.125), (np.int16, None, None)]
        cases = []
        for i, (lin, (kind, slope, inter)) in enumerate(zip(perms, kinds)):
            shape = tuple(int(x) for x in rng.integers(5, 80, 3))
            if kind == np.float32:
                img = rng.normal(0, 500, shape).astype(np.float32)
            elif kind == np.uint16:
                img = rng.integers(0, 65535, shape).astype(np.uint16)  # above 32767: float32, not int16
            else:
                info = np.iinfo(kind)
                img = rng.integers(max(info.min, -3000), min(info.max, 3000), shape).astype(kind)
            mask = (rng.random(shape) < 0.3).astype(np.uint8)
            if i == len(perms) - 1:
                mask[rng.random(shape) < 0.1] = 2
            aff = np.eye(4)
            aff[:3, :3] = lin
            aff[:3, 3] = rng.uniform(-20, 20, 3)
            cases.append(('c%d' % i, img, mask, aff, slope, inter))
        src = os.path.join(work, 'src')
        os.makedirs(os.path.join(src, 'imagesTr'))
        os.makedirs(os.path.join(src, 'labelsTr'))
        for name, img, mask, aff, slope, inter in cases:
            ni = nib.Nifti1Image(img, aff)
            if slope is not None:
                ni.header.set_slope_inter(slope, inter)
            nib.save(ni, os.path.join(src, 'imagesTr', name + '_0000.nii.gz'))
            nib.save(nib.Nifti1Image(mask, aff), os.path.join(src, 'labelsTr', name + '.nii.gz'))
        harness.write_json(os.path.join(src, 'dataset.json'),
                           {'channel_names': {'0': 'MRI'}, 'labels': {'background': 0, 'liver': 1, 'tumour': 2},
                            'numTraining': len(cases), 'file_ending': '.nii.gz'})

        outs = []
        for threads in ('1', '2'):
            out = os.path.join(work, 'out' + threads)
            p = subprocess.run([args.cirrdata, 'convert', '--layout', 'nnunet', src, '--recipe', 'raw', '--out', out,
                                '--threads', threads, '--quiet'], capture_output=True, text=True)
            check(p.returncode == 0, 'convert --threads %s: exit %d: %s' % (threads, p.returncode, p.stderr.strip()[:300]))
            outs.append(out)
        if not os.path.exists(os.path.join(outs[0], 'manifest.json')):
            return harness.summary('convert_inplace')
        # Deterministic across thread counts (buffers reused between cases must not show).
        def files(d):
            r = {}
            for root, _, fs in os.walk(d):
                for f in fs:
                    with open(os.path.join(root, f), 'rb') as fh:
                        r[os.path.relpath(os.path.join(root, f), d)] = fh.read()
            return r
        check(files(outs[0]) == files(outs[1]), 'shards and manifest identical with 1 and 2 threads')

        with open(os.path.join(outs[0], 'manifest.json')) as f:
            manifest = json.load(f)
        recs = [r for s in manifest['shards'] for r in cdshard.read_shard(os.path.join(outs[0], s['path']))]
        check(len(recs) == len(cases), '%d records of %d' % (len(recs), len(cases)))
        entries = {e['key']: e for e in manifest['records']}
        for r in recs:
            name = r['metadata']['patient_id']
            _, img, mask, aff, slope, inter = next(c for c in cases if c[0] == name)
            loaded = nib.load(os.path.join(src, 'imagesTr', name + '_0000.nii.gz'))
            ras = nib.as_closest_canonical(loaded)
            mras = nib.as_closest_canonical(nib.load(os.path.join(src, 'labelsTr', name + '.nii.gz')))
            ours, ours_m = r['tensors']['image'][0], r['tensors']['mask'][0]
            # The stored (unscaled) values, reoriented as as_closest_canonical reorients.
            ornt = nib.orientations.io_orientation(loaded.affine)
            raw = nib.orientations.apply_orientation(np.asarray(loaded.dataobj.get_unscaled()), ornt)
            hs, hi = float(loaded.dataobj.slope), float(loaded.dataobj.inter)  # the header's, as float64
            scaled = not (hs == 1 and hi == 0)
            if scaled or img.dtype == np.float32 or (img.dtype == np.uint16 and img.max() > 32767):
                want = (raw.astype(np.float64) * hs + hi).astype(np.float32)
                check(ours.dtype == np.float32, '%s: dtype %s (float32 expected)' % (name, ours.dtype))
            else:
                want = raw.astype(np.int16)
                check(ours.dtype == np.int16, '%s: dtype %s (int16 expected)' % (name, ours.dtype))
            check(ours.shape == want.shape and np.array_equal(ours, want), '%s: image != canonical voxels' % name)
            fd = ras.get_fdata()
            check(ours.shape == fd.shape and np.allclose(ours, fd, rtol=2 ** -23, atol=0),
                  '%s: image != nibabel get_fdata within float32 rounding' % name)
            m = np.asarray(mras.dataobj)
            check(np.array_equal(ours_m, m), '%s: mask != canonical' % name)
            check(np.allclose(np.array(r['metadata']['affine']), ras.affine, atol=1e-5), '%s: affine' % name)
            fg = np.argwhere(m)
            bbox = [[int(fg[:, a].min()), int(fg[:, a].max()) + 1] for a in range(3)]
            check(r['metadata'].get('mask_bbox') == bbox, '%s: bbox %s != %s' % (name, r['metadata'].get('mask_bbox'), bbox))
            check(r['metadata'].get('foreground_voxels') == int((m > 0).sum()), '%s: foreground voxels' % name)
            # Source statistics inside the mask over nibabel's physical values, in the source's voxel order
            # (NIfTI order: x fastest); samples: 256 evenly spaced in-mask voxels (k = j * count // want).
            st = entries.get(r['metadata']['key'], {}).get('stats')
            if not check(st is not None, '%s: manifest entry with stats' % name):
                continue
            fsrc = loaded.get_fdata().ravel(order='F')
            msrc = np.asarray(nib.load(os.path.join(src, 'labelsTr', name + '.nii.gz')).dataobj).ravel(order='F')
            vals = fsrc[msrc > 0]
            check(st['count'] == vals.size, '%s: stats count %s != %d' % (name, st['count'], vals.size))
            check(st['min'] == vals.min() and st['max'] == vals.max(),
                  '%s: stats min/max %r %r != %r %r' % (name, st['min'], st['max'], vals.min(), vals.max()))
            check(abs(st['sum'] - vals.sum()) <= 1e-9 * max(1.0, np.abs(vals).sum()),
                  '%s: stats sum %r != %r' % (name, st['sum'], vals.sum()))
            check(abs(st['sumsq'] - (vals * vals).sum()) <= 1e-9 * max(1.0, (vals * vals).sum()),
                  '%s: stats sumsq %r != %r' % (name, st['sumsq'], (vals * vals).sum()))
            want_n = min(vals.size, 256)
            ref = [float(vals[j * vals.size // want_n]) for j in range(want_n)]
            check(st['samples'] == ref, '%s: stats samples differ (first %s vs %s)' % (name, st['samples'][:3], ref[:3]))
    except Exception as e:  # a crash is a failure, not a silent pass
        harness.CHECKS.crashed(e)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return harness.summary('convert_inplace')


if __name__ == '__main__':
    sys.exit(main())
