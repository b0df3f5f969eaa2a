#!/usr/bin/python3
"""`cirrdata export-nnunet` and `cirrdata verify-raw` against things we did not write: nibabel, scipy and
nnU-Net's documented dataset format (documentation/dataset_format.md, verify_dataset_integrity.py).

  /usr/bin/python3 tests/python/test_nnunet_export.py --cirrdata build/tools/cirrdata [--workdir DIR]

A synthetic CirrMRI600+ tree (`cirrdata synth`, 3 patients: one train, one valid, one test per sequence):

  * --sequence T1 and --sequence T2 give two datasets; nibabel reads every exported array and affine
    equal to its source file's (and the files are the sources' bytes); dataset.json has exactly the
    documented keys and values, file names follow {case}_{XXXX}.nii.gz / {case}.nii.gz;
    splits_final.json is nnU-Net's list of {"train", "val"} with the official train and valid cases; test
    cases are in imagesTs (labels in labelsTs);
  * --pair-t1t2: channel 0000 is the T1 file, 0001 has T1's affine and shape and equals
    scipy.ndimage.map_coordinates(T2, order=1, cval=0) through both affines;
  * verify-raw passes on the exports, and on hand-broken copies fails naming the case and the rule of each
    break, all in one run (missing channel, label shape, label spacing, undeclared label value, NaN image,
    numTraining, a hidden stray file, a missing required key), with a shifted label origin only a warning;
    a missing file of dataset.json's explicit "dataset" form is named; --json gives the same findings;
  * --healthy: a healthy subject is case_healthy<id>, beside a cirrhotic patient with the same id;
  * bad input: an existing output (no --force) and a source whose mask is missing or holds an undeclared
    value are clear errors naming the file, and leave no output and no temporary folder; --force replaces
    a dataset but refuses a folder that is none;
  * an nnU-Net source of uncompressed .nii files: gzipped as they are (the decompressed bytes are the
    source's), identifiers kept, and --force onto the source itself refused; a converted dataset (convert,
    raw recipe) exported from its records, augmented copies left out.
Prints one line per failure and ends with `nnunet_export: N passed, M failed`.
"""
import glob
import gzip
import json
import os
import re
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Checks  # noqa: E402

import numpy as np  # noqa: E402
import nibabel as nib  # noqa: E402
from scipy import ndimage  # noqa: E402

SPLITS = ('train', 'valid', 'test')


def cli(c, exe, args, name, ok=True):
    rc, so, se = harness.run_rc([exe] + args)
    c.check(not harness.sanitizer_report(se), name + ': no sanitizer report', se[:400])
    if ok:
        c.check(rc == 0, name + ': exits 0', (se or so).strip()[:400])
    return rc, so, se


def sources(root, seq):
    """{split: {patient id: (image path, mask path)}} of one sequence of a synth tree."""
    base = glob.glob(os.path.join(root, 'Cirrhosis_%s_3D' % seq, '**', 'train_images'), recursive=True)[0]
    base = os.path.dirname(base)
    out = {}
    for sp in SPLITS:
        out[sp] = {}
        for p in sorted(glob.glob(os.path.join(base, sp + '_images', '*.nii.gz'))):
            pid = os.path.basename(p)[:-7]
            out[sp][pid] = (p, os.path.join(base, sp + '_masks', pid + '.nii.gz'))
    return out


def same_file(c, src, dst, name):
    a, b = nib.load(src), nib.load(dst)
    c.check(np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj)), name + ': nibabel array equal')
    c.check(a.get_data_dtype() == b.get_data_dtype(), name + ': dtype equal', (a.get_data_dtype(), b.get_data_dtype()))
    c.check(np.array_equal(a.affine, b.affine), name + ': nibabel affine equal', (a.affine, b.affine))
    with open(src, 'rb') as f1, open(dst, 'rb') as f2:
        c.check(f1.read() == f2.read(), name + ': the source file byte for byte')


def check_format(c, out, channels, name):
    """dataset.json and the file names as dataset_format.md documents them."""
    ds = json.load(open(os.path.join(out, 'dataset.json')))
    c.check({'channel_names', 'labels', 'numTraining', 'file_ending'} <= set(ds), name + ': required keys', ds)
    c.check(ds.get('channel_names') == {str(i): n for i, n in enumerate(channels)}, name + ': channel_names', ds)
    c.check(ds.get('labels') == {'background': 0, 'liver': 1}, name + ': labels', ds.get('labels'))
    c.check(ds.get('file_ending') == '.nii.gz', name + ': file_ending', ds.get('file_ending'))
    labels = sorted(os.listdir(os.path.join(out, 'labelsTr')))
    c.check(ds.get('numTraining') == len(labels), name + ': numTraining = labelled cases', (ds.get('numTraining'), labels))
    ids = [x[:-7] for x in labels]
    want = sorted('%s_%04d.nii.gz' % (i, k) for i in ids for k in range(len(channels)))
    c.check(sorted(os.listdir(os.path.join(out, 'imagesTr'))) == want, name + ': imagesTr = {case}_{XXXX}.nii.gz',
            os.listdir(os.path.join(out, 'imagesTr')))
    return ds, ids


def check_sequence(c, exe, root, work, seq, num):
    out = os.path.join(work, 'Dataset%03d_Cirr%s' % (num, seq))
    cli(c, exe, ['export-nnunet', root, '--layout', 'cirrmri600', '--sequence', seq, '-o', out, '--quiet'], seq)
    src = sources(root, seq)
    ds, ids = check_format(c, out, [seq], seq)
    for sp in SPLITS:
        for pid, (img, msk) in src[sp].items():
            cid = 'case_' + pid
            tr = 'Ts' if sp == 'test' else 'Tr'
            same_file(c, img, os.path.join(out, 'images' + tr, cid + '_0000.nii.gz'), '%s %s image' % (seq, cid))
            same_file(c, msk, os.path.join(out, 'labels' + tr, cid + '.nii.gz'), '%s %s label' % (seq, cid))
    c.check(sorted(ids) == sorted('case_' + p for sp in ('train', 'valid') for p in src[sp]), seq + ': train+valid in Tr')
    c.check(sorted(os.listdir(os.path.join(out, 'imagesTs'))) == sorted('case_%s_0000.nii.gz' % p for p in src['test']),
            seq + ': test cases in imagesTs')
    splits = json.load(open(os.path.join(out, 'splits_final.json')))
    ok = isinstance(splits, list) and len(splits) == 1 and set(splits[0]) == {'train', 'val'}
    c.check(ok, seq + ': splits_final.json is a list of {"train", "val"}', splits)
    if ok:
        c.check(sorted(splits[0]['train']) == sorted('case_' + p for p in src['train']), seq + ': split train', splits)
        c.check(sorted(splits[0]['val']) == sorted('case_' + p for p in src['valid']), seq + ': split val', splits)
    rc, so, _ = cli(c, exe, ['verify-raw', out, '--quiet'], seq + ' verify-raw')
    c.check('0 failures' in so, seq + ': verify-raw reports 0 failures', so[-300:])
    return out


def check_pair(c, exe, root, work):
    out = os.path.join(work, 'Dataset603_CirrT1T2')
    cli(c, exe, ['export-nnunet', root, '--layout', 'cirrmri600', '--pair-t1t2', '-o', out, '--quiet'], 'pair')
    check_format(c, out, ['T1', 'T2'], 'pair')
    t1, t2 = sources(root, 'T1'), sources(root, 'T2')
    checked = []
    for sp in SPLITS:
        tr = 'Ts' if sp == 'test' else 'Tr'
        for pid in t1[sp]:
            if pid not in t2[sp]:
                continue
            cid = 'case_' + pid
            same_file(c, t1[sp][pid][0], os.path.join(out, 'images' + tr, cid + '_0000.nii.gz'), 'pair %s T1' % cid)
            a, b = nib.load(t1[sp][pid][0]), nib.load(t2[sp][pid][0])
            r = nib.load(os.path.join(out, 'images' + tr, cid + '_0001.nii.gz'))
            c.check(np.array_equal(r.affine, a.affine) and r.shape == a.shape, 'pair %s T2 on T1 grid' % cid,
                    (r.shape, a.shape))
            m = np.linalg.inv(b.affine) @ a.affine
            ijk = np.indices(a.shape).reshape(3, -1)
            coords = m[:3, :3] @ ijk + m[:3, 3:4]
            ref = ndimage.map_coordinates(np.asanyarray(b.dataobj).astype(np.float64), coords, order=1, mode='constant',
                                          cval=0.0)
            got = np.asanyarray(r.dataobj).astype(np.float64).reshape(-1)
            # Positions within 1e-3 voxel of T2's edge are snapped by our resampler (resample.h), not by scipy.
            inside = np.all((coords > 1e-3) & (coords < np.array(b.shape)[:, None] - 1 - 1e-3), axis=0)
            outside = np.any((coords < -1e-3) | (coords > np.array(b.shape)[:, None] - 1 + 1e-3), axis=0)
            tol = 1e-4 * max(1.0, float(np.abs(ref).max()))
            err = np.abs(got[inside] - ref[inside]).max() if inside.any() else 0.0
            c.check(err <= tol, 'pair %s T2 = scipy trilinear' % cid, err)
            checked.append(int(inside.sum()))
            c.check(not outside.any() or np.all(got[outside] == 0), 'pair %s T2 is 0 outside' % cid)
    c.check(len(checked) == 3 and sum(checked) > 10000, 'pair: T2 compared with scipy on three patients', checked)
    rc, so, _ = cli(c, exe, ['verify-raw', out, '--quiet'], 'pair verify-raw')
    c.check('0 failures' in so, 'pair: verify-raw reports 0 failures', so[-300:])
    return out


def save_like(path, data, ref, zooms=None):
    img = nib.Nifti1Image(data, ref.affine)
    if zooms:
        img.header.set_zooms(zooms)
    nib.save(img, path)


def check_broken(c, exe, pair, work):
    """One copy with a break per case (and dataset-wide ones): verify-raw lists every one of them."""
    b = os.path.join(work, 'Dataset699_Broken')
    shutil.copytree(pair, b)
    ids = sorted(x[:-7] for x in os.listdir(os.path.join(b, 'labelsTr')))
    extra = os.path.join(work, 'Dataset698_Extra')
    # Two training cases only in the synth tree: more cases to break are made from the first.
    for k in range(5):
        for ch in range(2):
            shutil.copy(os.path.join(b, 'imagesTr', '%s_%04d.nii.gz' % (ids[0], ch)),
                        os.path.join(b, 'imagesTr', 'extra%d_%04d.nii.gz' % (k, ch)))
        shutil.copy(os.path.join(b, 'labelsTr', ids[0] + '.nii.gz'), os.path.join(b, 'labelsTr', 'extra%d.nii.gz' % k))
    ds = json.load(open(os.path.join(b, 'dataset.json')))
    ds['numTraining'] = len(ids) + 5
    harness.write_json(os.path.join(b, 'dataset.json'), ds)
    rc, so, _ = cli(c, exe, ['verify-raw', b, '--quiet'], 'grown copy verify-raw')
    c.check('0 failures' in so, 'grown copy (numTraining updated) passes', so[-400:])
    # The breaks.
    os.remove(os.path.join(b, 'imagesTr', ids[0] + '_0001.nii.gz'))                     # missing channel
    lab = nib.load(os.path.join(b, 'labelsTr', 'extra0.nii.gz'))
    seg = np.asanyarray(lab.dataobj)
    save_like(os.path.join(b, 'labelsTr', 'extra0.nii.gz'), seg[:-1].copy(), lab)        # shape
    z = lab.header.get_zooms()
    save_like(os.path.join(b, 'labelsTr', 'extra1.nii.gz'), seg.copy(), lab, (z[0] * 1.5, z[1], z[2]))  # spacing
    s2 = seg.copy()
    s2[0, 0, 0] = 2
    save_like(os.path.join(b, 'labelsTr', 'extra2.nii.gz'), s2, lab)                     # undeclared label value
    im = nib.load(os.path.join(b, 'imagesTr', 'extra3_0000.nii.gz'))
    f = np.asanyarray(im.dataobj).astype(np.float32)
    f[1, 2, 3] = np.nan
    save_like(os.path.join(b, 'imagesTr', 'extra3_0000.nii.gz'), f, im)                  # NaN
    shifted = lab.affine.copy()
    shifted[:3, 3] += 0.5                                                                # origin: a warning only
    nib.save(nib.Nifti1Image(seg.copy(), shifted, lab.header), os.path.join(b, 'labelsTr', 'extra4.nii.gz'))
    shutil.copy(os.path.join(b, 'imagesTr', 'extra1_0000.nii.gz'), os.path.join(b, 'imagesTr', '._extra1_0000.nii.gz'))
    ds['numTraining'] = len(ids) + 7                                                     # numTraining
    harness.write_json(os.path.join(b, 'dataset.json'), ds)
    rc, so, se = cli(c, exe, ['verify-raw', b, '--quiet'], 'broken verify-raw', ok=False)
    c.check(rc == 1, 'broken copy: verify-raw exits 1', (rc, se[-300:]))
    want = [('missing_channel', ids[0]), ('shape', 'extra0'), ('spacing', 'extra1'), ('label_values', 'extra2'),
            ('nan', 'extra3'), ('num_training', '-'), ('stray_file', '-')]
    for rule, case in want:
        c.check(re.search(r'^FAIL %s %s: ' % (rule, re.escape(case)), so, re.M) is not None,
                'broken copy: FAIL %s names %s' % (rule, case), so[:1500])
    c.check(re.search(r'^FAIL label_values extra2: .*: 2$', so, re.M) is not None, 'the undeclared value is named', so)
    c.check(re.search(r'^WARN origin extra4: ', so, re.M) is not None, 'a shifted label origin is a warning', so[:1500])
    c.check(re.search(r'^FAIL num_training -: numTraining is %d but imagesTr holds %d' % (len(ids) + 7, len(ids) + 5), so,
                      re.M) is not None, 'numTraining message gives both counts', so)
    fails = [ln for ln in so.splitlines() if ln.startswith('FAIL ')]
    c.check(len(fails) == len(want), 'exactly the breaks are listed', '\n'.join(fails))
    rc, so, _ = cli(c, exe, ['verify-raw', b, '--json'], 'broken verify-raw --json', ok=False)
    try:
        rep = json.loads(so)
    except ValueError:
        rep = {}
    found = sorted((f.get('rule'), f.get('case')) for f in rep.get('findings', []) if f.get('level') == 'failure')
    c.check(rc == 1 and rep.get('ok') is False and rep.get('failures') == len(want) and rep.get('warnings') == 1,
            'verify-raw --json: counts', so[:300])
    c.check(found == sorted((r, '' if k == '-' else k) for r, k in want), 'verify-raw --json: rules and cases', found)
    # A missing required key, on another copy: named as dataset_json.
    shutil.copytree(pair, extra)
    ds = json.load(open(os.path.join(extra, 'dataset.json')))
    del ds['channel_names']
    harness.write_json(os.path.join(extra, 'dataset.json'), ds)
    rc, so, _ = cli(c, exe, ['verify-raw', extra, '--quiet'], 'no channel_names verify-raw', ok=False)
    c.check(rc == 1 and re.search(r'^FAIL dataset_json -: .*required keys missing: channel_names', so, re.M),
            'missing channel_names is named', so[:600])


def leftovers(parent):
    return [x for x in os.listdir(parent) if x.startswith('.') and '.tmp-' in x]


def check_bad_input(c, exe, root, t1, work):
    # An existing output: refused without --force, nothing changed.
    before = harness.tree_hashes(t1)
    rc, so, se = cli(c, exe, ['export-nnunet', root, '--layout', 'cirrmri600', '--sequence', 'T1', '-o', t1, '--quiet'],
                     'existing out', ok=False)
    c.check(rc == 1 and 'already exists' in se and '--force' in se, 'existing output: error names it and --force', se)
    c.check(harness.tree_hashes(t1) == before, 'existing output: untouched')
    rc, so, se = cli(c, exe, ['export-nnunet', root, '--layout', 'cirrmri600', '--sequence', 'T2', '-o', t1, '--quiet',
                              '--force'], 'force')
    ds = json.load(open(os.path.join(t1, 'dataset.json')))
    c.check(ds['channel_names'] == {'0': 'T2'}, '--force replaced the dataset', ds)
    other = os.path.join(work, 'Dataset650_Home')
    os.makedirs(other)
    open(os.path.join(other, 'precious.txt'), 'w').write('x')
    rc, so, se = cli(c, exe, ['export-nnunet', root, '--layout', 'cirrmri600', '--sequence', 'T1', '-o', other, '--quiet',
                              '--force'], 'force on a non-dataset', ok=False)
    c.check(rc == 1 and 'no dataset.json' in se and os.path.exists(os.path.join(other, 'precious.txt')),
            '--force refuses a folder that is no dataset', se)
    # Both sequences and none chosen: the error says how to get both.
    rc, so, se = cli(c, exe, ['export-nnunet', root, '--layout', 'cirrmri600', '-o', os.path.join(work, 'Dataset651_X')],
                     'no sequence', ok=False)
    c.check(rc == 1 and '--sequence' in se and 'T1, T2' in se, 'two sequences: asks for --sequence', se)
    c.check(not os.path.exists(os.path.join(work, 'Dataset651_X')), 'no sequence: nothing written')
    rc, so, se = cli(c, exe, ['export-nnunet', root, '--layout', 'cirrmri600', '--sequence', 'T1', '-o',
                              os.path.join(work, 'CirrT1')], 'bad name', ok=False)
    c.check(rc == 1 and 'DatasetNNN_Name' in se, 'a folder name nnU-Net cannot find is refused', se)
    # A missing mask: named; --skip-bad exports the rest and lists it.
    broken = os.path.join(work, 'src_missing')
    shutil.copytree(root, broken)
    miss = sorted(glob.glob(os.path.join(broken, 'Cirrhosis_T1_3D', '**', 'valid_masks', '*.nii.gz'), recursive=True))[0]
    os.remove(miss)
    img = miss.replace('valid_masks', 'valid_images')
    out = os.path.join(work, 'Dataset652_Missing')
    rc, so, se = cli(c, exe, ['export-nnunet', broken, '--layout', 'cirrmri600', '--sequence', 'T1', '-o', out],
                     'missing mask', ok=False)
    c.check(rc == 1 and img in se and 'missing mask' in se, 'missing mask: error names the image', se)
    c.check(not os.path.exists(out) and not leftovers(work), 'missing mask: no output, no temporary folder',
            leftovers(work))
    rc, so, se = cli(c, exe, ['export-nnunet', broken, '--layout', 'cirrmri600', '--sequence', 'T1', '-o', out, '--skip-bad',
                              '--quiet'], 'skip-bad')
    prov = json.load(open(os.path.join(out, 'cirrdata_export.json'))) if rc == 0 else {}
    c.check([s.get('path') for s in prov.get('skipped', [])] == [img], '--skip-bad lists the skipped case', prov.get('skipped'))
    c.check(not os.path.exists(os.path.join(out, 'splits_final.json')), 'no valid case left: no splits_final.json')
    # An undeclared mask value in the last case: the export fails after writing others, and leaves nothing.
    bad = os.path.join(work, 'src_value')
    shutil.copytree(root, bad)
    m = sorted(glob.glob(os.path.join(bad, 'Cirrhosis_T1_3D', '**', 'test_masks', '*.nii.gz'), recursive=True))[0]
    mi = nib.load(m)
    seg = np.asanyarray(mi.dataobj).copy()
    seg[seg > 0] = 7
    nib.save(nib.Nifti1Image(seg, mi.affine, mi.header), m)
    out = os.path.join(work, 'Dataset653_Value')
    rc, so, se = cli(c, exe, ['export-nnunet', bad, '--layout', 'cirrmri600', '--sequence', 'T1', '-o', out], 'bad value',
                     ok=False)
    c.check(rc == 1 and m in se and 'label_values' in se and '7' in se, 'undeclared mask value: named with the file', se)
    c.check(not os.path.exists(out) and not leftovers(work), 'undeclared value: no output, no temporary folder')
    rc, so, se = cli(c, exe, ['export-nnunet', bad, '--layout', 'cirrmri600', '--sequence', 'T1', '-o', out, '--quiet',
                              '--labels', '{"background": 0, "liver": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7}'],
                     'declared value')
    rc, so, se = cli(c, exe, ['verify-raw', out, '--quiet'], 'declared value verify-raw')


def check_healthy(c, exe, root, work):
    """--healthy: a healthy subject's scan becomes case_healthy<id> (a cirrhotic patient may have its id)."""
    src = os.path.join(work, 'src_healthy')
    shutil.copytree(root, src)
    pid, (img, msk) = sorted(sources(src, 'T1')['train'].items())[0]
    hd = os.path.join(src, 'Healthy_subjects', 'T1_W_Healthy')
    os.makedirs(os.path.join(hd, 'T1_images'))
    os.makedirs(os.path.join(hd, 'T1_masks'))
    shutil.copy(img, os.path.join(hd, 'T1_images', pid + '.nii.gz'))
    shutil.copy(msk, os.path.join(hd, 'T1_masks', pid + '.nii.gz'))
    out = os.path.join(work, 'Dataset640_Healthy')
    cli(c, exe, ['export-nnunet', src, '--layout', 'cirrmri600', '--sequence', 'T1', '--healthy', '-o', out, '--quiet'],
        'healthy')
    h = os.path.join(out, 'imagesTr', 'case_healthy%s_0000.nii.gz' % pid)
    c.check(os.path.exists(h) and os.path.exists(os.path.join(out, 'imagesTr', 'case_%s_0000.nii.gz' % pid)),
            'healthy: case_healthy<id> beside the cirrhotic case_<id>', sorted(os.listdir(os.path.join(out, 'imagesTr'))))
    if os.path.exists(h):
        same_file(c, os.path.join(hd, 'T1_images', pid + '.nii.gz'), h, 'healthy image')
    splits = json.load(open(os.path.join(out, 'splits_final.json')))
    c.check('case_healthy' + pid in splits[0]['train'], 'healthy: in the train fold', splits)


def check_nii_source(c, exe, work):
    src = os.path.join(work, 'nii_src')
    os.makedirs(os.path.join(src, 'imagesTr'))
    os.makedirs(os.path.join(src, 'labelsTr'))
    rng = np.random.default_rng(3)
    names = ['la_003', 'la_004']
    for i, n in enumerate(names):
        aff = np.array([[0, -1.25, 0, 10], [1.5, 0, 0, -20], [0, 0, 3, 5], [0, 0, 0, 1]])
        img = nib.Nifti1Image((rng.normal(0, 100, (9, 7, 5))).astype(np.int16), aff)
        img.header.set_slope_inter(0.5, 10)
        nib.save(img, os.path.join(src, 'imagesTr', n + '_0000.nii'))
        nib.save(nib.Nifti1Image((rng.random((9, 7, 5)) > 0.5).astype(np.uint8), aff), os.path.join(src, 'labelsTr', n + '.nii'))
    harness.write_json(os.path.join(src, 'dataset.json'), {'channel_names': {'0': 'MRI'}, 'labels': {'background': 0, 'liver': 1},
                                                          'numTraining': 2, 'file_ending': '.nii'})
    out = os.path.join(work, 'Dataset660_Nii')
    cli(c, exe, ['export-nnunet', src, '--layout', 'nnunet', '-o', out, '--quiet'], 'nii source')
    for n in names:
        for a, b in ((os.path.join(src, 'imagesTr', n + '_0000.nii'), os.path.join(out, 'imagesTr', n + '_0000.nii.gz')),
                     (os.path.join(src, 'labelsTr', n + '.nii'), os.path.join(out, 'labelsTr', n + '.nii.gz'))):
            if not c.check(os.path.exists(b), 'nii source: %s exported' % os.path.basename(b)):
                continue
            x, y = nib.load(a), nib.load(b)
            c.check(np.array_equal(x.get_fdata(), y.get_fdata()) and np.array_equal(x.affine, y.affine),
                    'nii source %s: scaled array and affine equal' % n)
            with open(a, 'rb') as f, gzip.open(b, 'rb') as g:
                c.check(f.read() == g.read(), 'nii source %s: gzip of the very bytes' % os.path.basename(a))
    rc, so, _ = cli(c, exe, ['verify-raw', out, '--quiet'], 'nii verify-raw')
    # dataset.json's explicit "dataset" form (files listed per case): a listed file that is missing is named.
    listed = os.path.join(work, 'Dataset661_Listed')
    shutil.copytree(out, listed)
    ds = json.load(open(os.path.join(listed, 'dataset.json')))
    ds['dataset'] = {n: {'images': ['imagesTr/%s_0000.nii.gz' % n], 'label': 'labelsTr/%s.nii.gz' % n} for n in names}
    harness.write_json(os.path.join(listed, 'dataset.json'), ds)
    rc, so, _ = cli(c, exe, ['verify-raw', listed, '--quiet'], 'listed verify-raw')
    os.remove(os.path.join(listed, 'labelsTr', names[1] + '.nii.gz'))
    rc, so, _ = cli(c, exe, ['verify-raw', listed, '--quiet'], 'listed, label missing', ok=False)
    c.check(rc == 1 and re.search(r'^FAIL missing_label %s: ' % names[1], so, re.M), 'listed: the missing label is named',
            so[:600])
    # --force onto the source itself would delete the source once swapped out: refused.
    before = harness.tree_hashes(out)
    rc, so, se = cli(c, exe, ['export-nnunet', out, '--layout', 'nnunet', '-o', out, '--force', '--quiet'], 'onto itself',
                     ok=False)
    c.check(rc == 1 and 'delete the source' in se and harness.tree_hashes(out) == before,
            '--force onto the source itself is refused, nothing changed', se)


def check_channels_source(c, exe, work):
    """An nnU-Net v2 source with two channels and an imagesTs case: every channel file copied as it is,
    the test case in imagesTs, verify-raw passes. An MSD source whose channels are volumes of one 4D file
    is refused naming the file (export-nnunet copies one file per channel), nothing written."""
    src = os.path.join(work, 'ch_src')
    for d in ('imagesTr', 'labelsTr', 'imagesTs'):
        os.makedirs(os.path.join(src, d))
    rng = np.random.default_rng(5)
    aff = np.diag([1.2, 1.2, 2.5, 1])
    for n, folder in (('pr_001', 'imagesTr'), ('pr_002', 'imagesTr'), ('pr_100', 'imagesTs')):
        for k in range(2):
            nib.save(nib.Nifti1Image(rng.normal(0, 50, (6, 5, 4)).astype(np.float32), aff),
                     os.path.join(src, folder, '%s_%04d.nii.gz' % (n, k)))
        if folder == 'imagesTr':
            nib.save(nib.Nifti1Image((rng.random((6, 5, 4)) > 0.5).astype(np.uint8), aff),
                     os.path.join(src, 'labelsTr', n + '.nii.gz'))
    harness.write_json(os.path.join(src, 'dataset.json'), {'channel_names': {'0': 'T2', '1': 'ADC'},
                                                          'labels': {'background': 0, 'lesion': 1},
                                                          'numTraining': 2, 'file_ending': '.nii.gz'})
    out = os.path.join(work, 'Dataset662_Channels')
    cli(c, exe, ['export-nnunet', src, '--layout', 'nnunet', '-o', out, '--quiet'], 'two-channel source')
    for n, folder in (('pr_001', 'imagesTr'), ('pr_002', 'imagesTr'), ('pr_100', 'imagesTs')):
        for k in range(2):
            f = '%s_%04d.nii.gz' % (n, k)
            same_file(c, os.path.join(src, folder, f), os.path.join(out, folder, f), 'two channels: ' + f)
    ds = json.load(open(os.path.join(out, 'dataset.json'))) if os.path.exists(os.path.join(out, 'dataset.json')) else {}
    c.check(ds.get('channel_names') == {'0': 'T2', '1': 'ADC'} and ds.get('numTraining') == 2,
            'two channels: dataset.json names both channels', ds)
    cli(c, exe, ['verify-raw', out, '--quiet'], 'two-channel verify-raw')
    msd = os.path.join(work, 'msd_src')
    os.makedirs(os.path.join(msd, 'imagesTr'))
    os.makedirs(os.path.join(msd, 'labelsTr'))
    nib.save(nib.Nifti1Image(rng.normal(0, 1, (6, 5, 4, 2)).astype(np.float32), aff),
             os.path.join(msd, 'imagesTr', 'pr_001.nii.gz'))
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4), np.uint8), aff), os.path.join(msd, 'labelsTr', 'pr_001.nii.gz'))
    harness.write_json(os.path.join(msd, 'dataset.json'), {
        'modality': {'0': 'T2', '1': 'ADC'}, 'labels': {'0': 'background', '1': 'lesion'}, 'numTraining': 1,
        'training': [{'image': './imagesTr/pr_001.nii.gz', 'label': './labelsTr/pr_001.nii.gz'}], 'test': []})
    bad = os.path.join(work, 'Dataset663_Msd')
    rc, so, se = cli(c, exe, ['export-nnunet', msd, '--layout', 'nnunet', '-o', bad, '--quiet'], 'msd 4D', ok=False)
    c.check(rc == 1 and 'pr_001.nii.gz' in se and '4D' in se and not os.path.exists(bad) and not leftovers(work),
            'MSD 4D channels: refused naming the file, nothing written', se)


def check_converted(c, exe, work):
    src, recipe = harness.tiny_source(os.path.join(work, 'tiny'), ncases=3)
    conv = os.path.join(work, 'tiny_conv')
    cli(c, exe, ['convert', '--layout', 'nnunet', src, '--out', conv, '--recipe', recipe, '--quiet'], 'convert')
    out = os.path.join(work, 'Dataset670_Conv')
    cli(c, exe, ['export-nnunet', conv, '-o', out, '--quiet'], 'converted source')
    for i in range(3):
        n = 'case%02d' % i
        for a, b in ((os.path.join(src, 'imagesTr', n + '_0000.nii.gz'), os.path.join(out, 'imagesTr', 'case_%s_0000.nii.gz' % n)),
                     (os.path.join(src, 'labelsTr', n + '.nii.gz'), os.path.join(out, 'labelsTr', 'case_%s.nii.gz' % n))):
            if not c.check(os.path.exists(b), 'converted: %s exported' % os.path.basename(b)):
                continue
            x, y = nib.load(a), nib.load(b)  # the tiny sources are RAS already: the raw recipe keeps them
            c.check(np.array_equal(np.asanyarray(x.dataobj), np.asanyarray(y.dataobj)), 'converted %s: array equal' % n)
            c.check(np.allclose(x.affine, y.affine, rtol=0, atol=1e-6), 'converted %s: affine equal' % n, (x.affine, y.affine))
    rc, so, _ = cli(c, exe, ['verify-raw', out, '--quiet'], 'converted verify-raw')
    # Augmented copies are left out: nnU-Net augments on its own.
    aug = os.path.join(work, 'tiny_aug')
    cli(c, exe, ['convert', '--layout', 'nnunet', src, '--out', aug, '--recipe', recipe, '--augment', 'nnunet',
                 '--copies', '2', '--quiet'], 'convert --augment')
    out = os.path.join(work, 'Dataset671_Aug')
    cli(c, exe, ['export-nnunet', aug, '-o', out, '--quiet'], 'augmented source')
    got = sorted(os.listdir(os.path.join(out, 'imagesTr'))) if os.path.isdir(os.path.join(out, 'imagesTr')) else None
    c.check(got == ['case_case%02d_0000.nii.gz' % i for i in range(3)], 'augmented source: the plain records only', got)


def main():
    a = harness.parser(__doc__, lib=None).parse_args()
    c = Checks()
    work = a.workdir or tempfile.mkdtemp(prefix='cirrdata-nnunet-')
    try:
        root = os.path.join(work, 'cirr')
        cli(c, a.cirrdata, ['synth', '--layout', 'cirrmri600', root, '--cases', '3', '--seed', '5', '--no-healthy',
                            '--quiet'], 'synth')
        t1 = check_sequence(c, a.cirrdata, root, work, 'T1', 601)
        check_sequence(c, a.cirrdata, root, work, 'T2', 602)
        pair = check_pair(c, a.cirrdata, root, work)
        check_broken(c, a.cirrdata, pair, work)
        check_bad_input(c, a.cirrdata, root, t1, work)
        check_healthy(c, a.cirrdata, root, work)
        check_nii_source(c, a.cirrdata, work)
        check_channels_source(c, a.cirrdata, work)
        check_converted(c, a.cirrdata, work)
    except Exception as e:  # noqa: BLE001
        c.crashed(e)
    finally:
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return c.summary('nnunet_export')


if __name__ == '__main__':
    sys.exit(main())
