#!/usr/bin/python3
"""`cirrdata synth --layout cirrmri600`: layout, metadata, NIfTI contents, determinism, learnability.

  /usr/bin/python3 tests/python/test_synth_layout.py --cirrdata build/tools/cirrdata [--cases N]
      [--workdir DIR] [--keep]

Generates a small dataset twice with the same seed (--threads 1 and --threads 2) and checks:
identical bytes (sha256 of every file); the exact CirrMRI600+ layout; CSV columns, BOMs, ids joined
across CSVs and files, labels 1..3; every image/mask loads in nibabel with the same shape and affine,
LPS orientation, binary non-empty masks, the liver on the patient's right, sizes and spacings in
range; and that the stage is learnable from simple hand features (surface roughness, texture, lobe
ratio) on held-out cases while the mean liver intensity alone does not separate the stages.
Prints one line per failure and ends with exactly one line `synth: N passed, M failed`.
"""
import csv
import io
import os
import re
import shutil
import sys
import tempfile

import numpy as np
import nibabel as nib
from scipy import ndimage

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Checks, tree_hashes  # noqa: E402

TIMEOUT_S = 300
SPLITS = ('train', 'valid', 'test')
CSV_HEADER = ['Patient ID', 'Age', 'Gender', 'Radiological Evaluation']
HEALTHY_HEADER = ['Patient ID', 'Age', 'Gender']
META_FILES = {  # name -> has a UTF-8 BOM
    'CirrMRI600+_CompleteData_age_gender_evaluation.csv': False,
    'T1_age_gender_evaluation.csv': True,
    'T2_age_gender_evaluation.csv': False,
    'T1&T2_Paired_age_gender_evaluation.csv': True,
    'Healthy_demographics.csv': False,
    'labels.txt': False,
}


def run_synth(exe, out, seed, threads, cases, extra=()):
    return harness.run_rc([exe, 'synth', '--layout', 'cirrmri600', out, '--cases', str(cases), '--seed', str(seed),
                           '--threads', str(threads), '--quiet'] + list(extra), timeout=TIMEOUT_S)


def expected_dirs(healthy):
    dirs = set()
    for s in SPLITS:
        for w in ('images', 'masks'):
            dirs.add('Cirrhosis_T1_3D/Cirrhosis_T1_3D/%s_%s' % (s, w))
            dirs.add('Cirrhosis_T2_3D/%s_%s' % (s, w))
    if healthy:
        for q in (1, 2):
            for w in ('images', 'masks'):
                dirs.add('Healthy_subjects/T%d_W_Healthy/T%d_%s' % (q, q, w))
    return dirs


def read_csv(path):
    raw = open(path, 'rb').read()
    bom = raw.startswith(b'\xef\xbb\xbf')
    text = raw.decode('utf-8-sig')
    rows = list(csv.reader(io.StringIO(text, newline='')))
    return bom, rows


def check_layout(c, root, healthy):
    """Returns {(seq, 'cirr'|'healthy'): {id: (image_path, mask_path, split)}}."""
    top = sorted(os.listdir(root))
    want_top = ['Cirrhosis_T1_3D', 'Cirrhosis_T2_3D', 'Metadata'] + (['Healthy_subjects'] if healthy else [])
    c.check(top == sorted(want_top), 'layout: top-level entries', '%s != %s' % (top, sorted(want_top)))
    c.check(os.listdir(os.path.join(root, 'Cirrhosis_T1_3D')) == ['Cirrhosis_T1_3D'],
            'layout: T1 is double nested (Cirrhosis_T1_3D/Cirrhosis_T1_3D)')
    leaf_dirs = set()
    stray = []
    for dirpath, dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel.startswith('Metadata'):
            continue
        if not dirs:
            leaf_dirs.add(rel)
        for f in files:
            if not re.fullmatch(r'[1-9][0-9]*\.nii\.gz', f):
                stray.append(os.path.join(rel, f))
        if files and dirs:
            stray.append(rel + ' (files next to folders)')
    c.check(leaf_dirs == expected_dirs(healthy), 'layout: image/mask folders',
            'extra %s, missing %s' % (sorted(leaf_dirs - expected_dirs(healthy)),
                                      sorted(expected_dirs(healthy) - leaf_dirs)))
    c.check(not stray, 'layout: only <id>.nii.gz files', str(stray[:5]))
    meta = sorted(os.listdir(os.path.join(root, 'Metadata')))
    want_meta = sorted(k for k in META_FILES if healthy or k != 'Healthy_demographics.csv')
    c.check(meta == want_meta, 'layout: Metadata files', '%s != %s' % (meta, want_meta))

    cases = {}
    for q in (1, 2):
        base = 'Cirrhosis_T1_3D/Cirrhosis_T1_3D' if q == 1 else 'Cirrhosis_T2_3D'
        d = {}
        for s in SPLITS:
            imgs = set(os.listdir(os.path.join(root, base, s + '_images')))
            msks = set(os.listdir(os.path.join(root, base, s + '_masks')))
            c.check(imgs == msks, 'layout: T%d %s images and masks pair up' % (q, s), str(imgs ^ msks))
            c.check(len(imgs) >= 1, 'layout: T%d %s split is not empty' % (q, s))
            for f in imgs & msks:
                pid = int(f.split('.')[0])
                c.check(pid not in d, 'layout: T%d id %d in one split only' % (q, pid))
                d[pid] = (os.path.join(root, base, s + '_images', f), os.path.join(root, base, s + '_masks', f), s)
        cases[(q, 'cirr')] = d
        if healthy:
            hb = os.path.join(root, 'Healthy_subjects', 'T%d_W_Healthy' % q)
            imgs = set(os.listdir(os.path.join(hb, 'T%d_images' % q)))
            msks = set(os.listdir(os.path.join(hb, 'T%d_masks' % q)))
            c.check(imgs == msks, 'layout: healthy T%d images and masks pair up' % q)
            cases[(q, 'healthy')] = {int(f.split('.')[0]): (os.path.join(hb, 'T%d_images' % q, f),
                                                            os.path.join(hb, 'T%d_masks' % q, f), None)
                                     for f in imgs & msks}
    return cases


def check_metadata(c, root, cases, healthy, ncases):
    md = os.path.join(root, 'Metadata')
    tables = {}
    for name, bom_expected in META_FILES.items():
        if not name.endswith('.csv') or (name == 'Healthy_demographics.csv' and not healthy):
            continue
        bom, rows = read_csv(os.path.join(md, name))
        c.check(bom == bom_expected, 'csv %s: UTF-8 BOM %s' % (name, 'present' if bom_expected else 'absent'))
        header = HEALTHY_HEADER if name == 'Healthy_demographics.csv' else CSV_HEADER
        c.check(rows and rows[0] == header, 'csv %s: columns' % name, repr(rows[0] if rows else None))
        t = {}
        for r in rows[1:]:
            ok = len(r) == len(header) and all(re.fullmatch(r'[0-9]+', v) for v in r)
            if not c.check(ok, 'csv %s: row %r' % (name, r)):
                continue
            pid, age, gender = int(r[0]), int(r[1]), int(r[2])
            c.check(pid not in t, 'csv %s: id %d unique' % (name, pid))
            c.check(18 <= age <= 95 and gender in (1, 2), 'csv %s: age/gender of %d' % (name, pid))
            if len(header) == 4:
                c.check(int(r[3]) in (1, 2, 3), 'csv %s: evaluation of %d in 1..3' % (name, pid), r[3])
            t[pid] = tuple(int(v) for v in r[1:])
        tables[name] = t
    full = tables['CirrMRI600+_CompleteData_age_gender_evaluation.csv']
    t1 = set(cases[(1, 'cirr')])
    t2 = set(cases[(2, 'cirr')])
    c.check(set(full) == t1 | t2, 'csv: CompleteData ids = T1 ids | T2 ids', str(set(full) ^ (t1 | t2)))
    c.check(len(full) == ncases, 'csv: %d patients' % ncases, str(len(full)))
    c.check(set(tables['T1_age_gender_evaluation.csv']) == t1, 'csv: T1 ids = T1 files')
    c.check(set(tables['T2_age_gender_evaluation.csv']) == t2, 'csv: T2 ids = T2 files')
    c.check(set(tables['T1&T2_Paired_age_gender_evaluation.csv']) == t1 & t2, 'csv: paired ids = T1 & T2')
    for name, t in tables.items():
        if name != 'Healthy_demographics.csv':
            c.check(all(full.get(k) == v for k, v in t.items()), 'csv %s: rows agree with CompleteData' % name)
    c.check(len(t1 & t2) >= 0.6 * len(full), 'cohort: most patients have both sequences',
            '%d of %d' % (len(t1 & t2), len(full)))
    stages = [v[2] for v in full.values()]
    counts = [stages.count(k) for k in (1, 2, 3)]
    c.check(max(counts) - min(counts) <= 1, 'cohort: stages balanced', str(counts))
    ids = sorted(full)
    c.check(any(b - a > 1 for a, b in zip(ids, ids[1:])), 'cohort: ids are not consecutive')
    if healthy:
        h = tables['Healthy_demographics.csv']
        c.check(set(h) == set(cases[(1, 'healthy')]) == set(cases[(2, 'healthy')]),
                'csv: healthy ids = healthy files (T1 and T2)')
        c.check(len(h) >= 2 and not set(h) & set(full), 'cohort: >= 2 healthy subjects with their own ids')
        c.check(open(os.path.join(md, 'labels.txt'), encoding='utf-8').read().strip() != '', 'labels.txt not empty')
    return {pid: v[2] for pid, v in full.items()}


def liver_features(img, msk, aff):
    """Per-scan hand features on the liver: boundary roughness, texture, lobe ratio, mean intensity."""
    zooms = np.sqrt((aff[:3, :3] ** 2).sum(0))
    sel = np.nonzero(msk.any(axis=(0, 1)))[0]
    ii = np.nonzero(msk.any(axis=(1, 2)))[0]
    jj = np.nonzero(msk.any(axis=(0, 2)))[0]
    m = 12
    sl = (slice(max(ii[0] - m, 0), ii[-1] + m + 1), slice(max(jj[0] - m, 0), jj[-1] + m + 1),
          slice(sel[0], sel[-1] + 1))
    I = img[sl].astype(np.float64)
    M = msk[sl] > 0
    sx = zooms[0]
    # Roughness: in-plane disagreement between the mask and its smoothed self, per boundary voxel.
    sm = ndimage.gaussian_filter(M.astype(np.float32), sigma=(3.0 / sx, 3.0 / sx, 0)) > 0.5
    edge = M & ~ndimage.binary_erosion(M, structure=np.ones((3, 3, 1), bool))
    rough = (sm ^ M).sum() / max(edge.sum(), 1)
    # Texture: band-pass (noise suppressed, bias removed) std relative to the mean, inside the liver.
    inner = ndimage.binary_erosion(M, structure=np.ones((3, 3, 1), bool), iterations=max(1, int(5 / sx)))
    lo = ndimage.gaussian_filter(I, sigma=(1.2 / sx, 1.2 / sx, 0))
    hi = ndimage.gaussian_filter(I, sigma=(8.0 / sx, 8.0 / sx, 0))
    vals = (lo - hi)[inner]
    mean = I[inner].mean() if inner.any() else I[M].mean()
    texture = vals.std() / mean if vals.size else 0.0
    # Lobe ratio: share of the liver on the patient's left of its own right edge, in mm.
    xs = np.nonzero(M)[0] * sx
    extent = xs.max() - xs.min() + sx
    left_share = (xs > xs.min() + 0.5 * extent).mean()
    return np.array([rough, texture, left_share]), float(I[M].mean())


def nearest_centroid_loo(X, y, groups=None):
    """Leave-one-patient-out accuracy of a z-scored nearest-centroid classifier (numpy only): a
    patient's T1 and T2 share the anatomy, so both are held out together."""
    X = np.asarray(X, float)
    y = np.asarray(y)
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    hits = 0
    for k in range(len(y)):
        tr = groups != groups[k]
        mu, sd = X[tr].mean(0), X[tr].std(0) + 1e-12
        Z = (X - mu) / sd
        classes = sorted(set(y[tr]))
        cents = np.array([Z[tr & (y == cl)].mean(0) for cl in classes])
        pred = classes[int(np.argmin(((cents - Z[k]) ** 2).sum(1)))]
        hits += pred == y[k]
    return hits / len(y)


def check_volumes(c, cases, stages):
    X, y, g, mean_int = [], [], [], {1: [], 2: []}
    dtypes = set()
    for (q, kind), d in sorted(cases.items()):
        for pid, (ip, mp, split) in sorted(d.items()):
            tag = 'T%d %s %d' % (q, kind, pid)
            try:
                im, mk = nib.load(ip), nib.load(mp)
                img = np.asanyarray(im.dataobj)
                msk = np.asanyarray(mk.dataobj)
            except Exception as e:  # noqa: BLE001
                c.check(False, '%s: nibabel loads image and mask' % tag, str(e))
                continue
            dtypes.add((str(im.get_data_dtype()), bool(im.header['scl_slope'] not in (0, 1) and
                                                       np.isfinite(im.header['scl_slope']))))
            ok = c.check(img.shape == msk.shape and img.ndim == 3, '%s: image and mask shapes' % tag,
                         '%s vs %s' % (img.shape, msk.shape))
            c.check(np.allclose(im.affine, mk.affine, atol=1e-5), '%s: image and mask affines' % tag)
            c.check(nib.aff2axcodes(im.affine) == ('L', 'P', 'S'), '%s: orientation LPS' % tag,
                    str(nib.aff2axcodes(im.affine)))
            c.check(mk.get_data_dtype() == np.uint8 and set(np.unique(msk)) == {0, 1},
                    '%s: mask uint8 with 0 and 1' % tag)
            zooms = im.header.get_zooms()
            c.check(160 <= img.shape[0] <= 320 and 160 <= img.shape[1] <= 320 and 24 <= img.shape[2] <= 64,
                    '%s: dims in range' % tag, str(img.shape))
            c.check(0.7 - 1e-4 <= zooms[0] <= 1.6 + 1e-4 and 0.7 - 1e-4 <= zooms[1] <= 1.6 + 1e-4 and
                    3 - 1e-4 <= zooms[2] <= 8 + 1e-4, '%s: spacing in range' % tag, str(zooms))
            if not ok or not msk.any():
                continue
            # The liver lies on the patient's right: larger RAS x than the body's centre.
            data = np.asarray(im.get_fdata(dtype=np.float32))
            body = data > 0.25 * np.percentile(data, 99)
            liver_c = np.argwhere(msk > 0).mean(0)
            body_c = np.argwhere(body).mean(0)
            lx = (im.affine @ np.append(liver_c, 1))[0]
            bx = (im.affine @ np.append(body_c, 1))[0]
            c.check(lx > bx + 5, "%s: liver on the patient's right" % tag, 'liver x %.1f, body x %.1f' % (lx, bx))
            f, mi = liver_features(data, msk, im.affine)
            stage = 0 if kind == 'healthy' else stages.get(pid)
            X.append(f)
            y.append(stage)
            g.append(pid)
            if stage:
                mean_int[q].append((mi, stage))
    c.check(len({d for d, _ in dtypes}) >= 2, 'dtypes vary across scans', str(sorted(dtypes)))
    return np.array(X), np.array(y), np.array(g), mean_int


def check_learnable(c, X, y, g, mean_int):
    cirr = y > 0
    acc3 = nearest_centroid_loo(X[cirr], y[cirr], g[cirr])
    print('learnability: stage 1..3 leave-one-patient-out accuracy %.2f on %d scans (chance 0.33)'
          % (acc3, cirr.sum()))
    c.check(acc3 >= 0.5, 'learnability: hand features predict the stage above chance', '%.2f' % acc3)
    if (y == 0).sum() >= 2:
        h = [X[y == 0, 0].mean(), X[y == 3, 0].mean()]
        c.check(h[0] < h[1], 'learnability: healthy livers smoother than severe', str(h))
    for k, name in enumerate(('roughness', 'texture', 'left-lobe share')):
        means = [X[y == s, k].mean() for s in (1, 2, 3)]
        print('  %-16s by stage 1/2/3: %s' % (name, ' '.join('%.3f' % v for v in means)))
        c.check(means[0] < means[2], 'learnability: %s grows with the stage' % name, str(means))
    for q in (1, 2):
        mi = np.array([v for v, _ in mean_int[q]])
        st = np.array([s for _, s in mean_int[q]])
        acc = nearest_centroid_loo(mi[:, None], st)
        # Not separable: some adjacent stages overlap in mean liver intensity.
        overlap = any(mi[st == s].max() > mi[st == s + 1].min() and mi[st == s + 1].max() > mi[st == s].min()
                      for s in (1, 2) if (st == s).any() and (st == s + 1).any())
        print('  T%d mean liver intensity alone: leave-one-out accuracy %.2f' % (q, acc))
        c.check(overlap and acc < 0.9, 'T%d: mean liver intensity alone does not separate the stages' % q,
                'accuracy %.2f' % acc)


def main():
    ap = harness.parser(__doc__, lib=None)
    ap.add_argument('--cases', type=int, default=12)
    ap.add_argument('--seed', type=int, default=42)
    ap.add_argument('--keep', action='store_true')
    a = ap.parse_args()
    c = Checks(detail_limit=None)
    work = a.workdir or tempfile.mkdtemp(prefix='cirrdata-synth-')
    os.makedirs(work, exist_ok=True)
    try:
        r1, r2 = os.path.join(work, 'threads1'), os.path.join(work, 'threads2')
        for d in (r1, r2):
            shutil.rmtree(d, ignore_errors=True)
        rc, out, err = run_synth(a.cirrdata, r1, a.seed, 1, a.cases)
        c.check(rc == 0, 'synth --threads 1 exits 0', 'exit %s: %s' % (rc, err.strip()[:300]))
        rc2, out2, err2 = run_synth(a.cirrdata, r2, a.seed, 2, a.cases, ['--json'])
        c.check(rc2 == 0, 'synth --threads 2 --json exits 0', 'exit %s: %s' % (rc2, err2.strip()[:300]))
        if rc != 0 or rc2 != 0:
            raise SystemExit
        c.check(out.startswith('synth: wrote '), 'text summary printed', out[:100])
        c.check(err == '' and err2 == '', 'nothing on stderr when not a TTY', (err + err2)[:200])
        import json
        js = json.loads(out2)
        h1, h2 = tree_hashes(r1), tree_hashes(r2)
        c.check(h1 == h2, 'same seed, --threads 1 vs 2: identical bytes',
                'differ: %s' % sorted(k for k in set(h1) | set(h2) if h1.get(k) != h2.get(k))[:5])
        c.check(not any('.tmp-' in k for k in h1), 'no temporary files left behind')
        c.check(js['files'] == sum(1 for k in h1 if k.endswith('.nii.gz')), 'json: files count',
                '%s' % js['files'])
        c.check(js['bytes'] == sum(os.path.getsize(os.path.join(r1, k)) for k in h1), 'json: bytes written')
        c.check(js['patients'] == a.cases and js['healthy_subjects'] == max(2, a.cases // 4), 'json: patients')

        # Another seed: other bytes; --no-healthy: no Healthy_subjects folder.
        r3 = os.path.join(work, 'seed2')
        shutil.rmtree(r3, ignore_errors=True)
        rc3, _, err3 = run_synth(a.cirrdata, r3, a.seed + 1, 2, 3, ['--no-healthy'])
        c.check(rc3 == 0, 'synth --no-healthy exits 0', err3[:200])
        if rc3 == 0:
            check_layout(c, r3, healthy=False)
            h3 = tree_hashes(r3)
            same = [k for k in h3 if k.endswith('.nii.gz') and h1.get(k) == h3[k]]
            c.check(not same, 'another seed: different volumes', str(same[:3]))
            shutil.rmtree(r3, ignore_errors=True)

        cases = check_layout(c, r1, healthy=True)
        js_counts = sum(js['T%d' % q][s] for q in (1, 2) for s in SPLITS)
        c.check(js_counts == len(cases[(1, 'cirr')]) + len(cases[(2, 'cirr')]), 'json: split counts match files')
        stages = check_metadata(c, r1, cases, True, a.cases)
        X, y, g, mean_int = check_volumes(c, cases, stages)
        if len(y) >= 6:
            check_learnable(c, X, y, g, mean_int)
    except SystemExit:
        pass
    except Exception as e:  # noqa: BLE001 - report, do not crash without the summary line
        c.crashed(e)
    finally:
        if not a.keep and not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return c.summary('synth')


if __name__ == '__main__':
    sys.exit(main())
