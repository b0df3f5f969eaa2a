#!/usr/bin/env python3
"""`cirrdata convert --layout nnunet` against nnU-Net's own formats (dataset_format.md), hand-written here:

  * v2 (dataset.json with channel_names and file_ending, imagesTr/<case>_<kkkk>.nii.gz, labelsTr, imagesTs):
    every channel becomes one channel of the record; every voxel of every channel equals nibabel's
    (reoriented to RAS like the recipe), a z-score recipe normalises each channel on its own; imagesTs
    cases are split 'test' without a mask;
  * --fold K without a splits file: the validation cases equal sklearn's KFold(5, shuffle=True,
    random_state=12345) over the sorted identifiers (nnunetv2/utilities/crossval_split.py), and the same
    KFold written out over numpy's RandomState; a splits_final.json in the root or given with --splits;
    the split used is in the manifest;
  * symbolic links: a linked case file and a linked imagesTr folder inside the root are read, a link
    leading out is skipped naming it (--strict: refused naming it);
  * MSD-style two-channel datasets: the release's 4D files, and nnU-Net v1's per-channel files;
  * file_ending .nii honoured, .png refused, regions_class_order refused;
  * bad input (a missing channel, channels of another shape or affine, a fold out of range, a case
    twice in a fold or in train and val, an unknown case in the splits file): an error naming the case,
    and no output folder at all;
  * the loader (cirrdata.Loader) and cirrdata.torch (BatchDataset, RecordDataset) serve the 2-channel
    records as (B, 2, X, Y, Z) / (2, X, Y, Z), equal to the stored records.
"""
import json
import os
import shutil
import sys
import tempfile

import harness

HERE = os.path.dirname(os.path.abspath(__file__))
# Under ASan (tests/python/asan_reexec.py) fewer folds and no torch part keep the run short.
ASAN = bool(os.environ.get('CIRRDATA_ASAN_REEXEC'))


def args():
    ap = harness.parser(__doc__, lib='required')
    return ap.parse_args()


c = harness.Checks()


def nii(path, data, aff):
    import nibabel as nib
    nib.save(nib.Nifti1Image(data, aff), path)


def affine(rng):
    import numpy as np
    # LPS-like flips and anisotropic spacing: the recipe reorients, so the comparison must too.
    a = np.diag([-1.5, -1.25, 2.0, 1.0])
    a[:3, 3] = rng.uniform(-40, 40, 3)
    return a


def make_v2(root, ids, test_ids=(), shape=(8, 7, 6), nch=2, seed=3, ending='.nii.gz', names=('T2', 'ADC')):
    """A v2 raw dataset: nch int16 channels per case (different contents), a uint8 label per training case."""
    import numpy as np
    rng = np.random.default_rng(seed)
    for d in ('imagesTr', 'labelsTr', 'imagesTs'):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for folder, group in (('imagesTr', ids), ('imagesTs', test_ids)):
        for cid in group:
            aff = affine(rng)
            for k in range(nch):
                img = rng.integers(-300 * (k + 1), 900 * (k + 1), shape).astype(np.int16)
                nii(os.path.join(root, folder, f'{cid}_{k:04d}{ending}'), img, aff)
            if folder == 'imagesTr':
                lab = (rng.random(shape) > 0.7).astype(np.uint8)
                nii(os.path.join(root, 'labelsTr', f'{cid}{ending}'), lab, aff)
    harness.write_json(os.path.join(root, 'dataset.json'),
                       {'channel_names': {str(k): names[k] for k in range(nch)},
                        'labels': {'background': 0, 'tumour': 1}, 'numTraining': len(ids), 'file_ending': ending})


def convert(cli, src, out, *extra, recipe='raw'):
    r = harness.run([cli, 'convert', '--layout', 'nnunet', src, '--out', out, '--recipe', recipe, '--quiet',
                     '--threads', '2'] + list(extra))
    man = None
    if r.returncode == 0:
        with open(os.path.join(out, 'manifest.json')) as f:
            man = json.load(f)
    return r, man


def canonical(path, volume=None):
    import nibabel as nib
    import numpy as np
    img = nib.load(path)
    if volume is not None:
        img = nib.four_to_three(img)[volume]
    return np.asarray(nib.as_closest_canonical(img).dataobj).astype(np.float32)


def test_channels_and_test_split(cirrdata, cli, work):
    import numpy as np
    src = os.path.join(work, 'v2')
    make_v2(src, ['la_003', 'la_004', 'la_007'], test_ids=['la_001', 'la_002'])
    out = os.path.join(work, 'v2-out')
    r, man = convert(cli, src, out)
    if not c.check(r.returncode == 0, 'v2 2-channel dataset converts', r.stderr.strip()):
        return
    recs = {e['key']: e for e in man['records']}
    c.check(sorted(recs) == ['la_001', 'la_002', 'la_003', 'la_004', 'la_007'], 'v2: every case, test ones too',
            sorted(recs))
    c.check(all(e['channels'] == 2 and e['sequence'] == 'T2+ADC' for e in man['records']),
            'v2: 2 channels named T2+ADC per record', [(e['channels'], e['sequence']) for e in man['records']])
    c.check(man['tensors']['image']['channels'] == 2, "manifest tensors.image.channels is 2",
            man['tensors']['image'])
    splits = {k: e['split'] for k, e in recs.items()}
    c.check(splits == {'la_001': 'test', 'la_002': 'test', 'la_003': 'train', 'la_004': 'train', 'la_007': 'train'},
            'v2: imagesTs cases are test, imagesTr cases train (no fold asked)', splits)
    c.check('split' not in man['source'], 'no fold: no source.split in the manifest', man['source'].get('split'))
    errs = schema_errors(man)
    c.check(not errs, 'v2: the manifest follows schemas/manifest.schema.json', errs[:3])
    ds = cirrdata.Dataset(out)
    try:
        for i in range(len(ds)):
            rec = ds[i]
            key, folder = rec['key'], 'imagesTs' if rec['split'] == 'test' else 'imagesTr'
            img = rec['image']
            want = np.stack([canonical(os.path.join(src, folder, f'{key}_{k:04d}.nii.gz')) for k in range(2)])
            c.check(img.shape == want.shape and np.array_equal(img, want),
                    f'{key}: every voxel of both channels equals nibabel', (img.shape, want.shape))
            c.check(rec.get('channels') == ['T2', 'ADC'], f'{key}: record channel names', rec.get('channels'))
            files = [f['path'] for f in rec.get('channel_files', [])]
            c.check(files == [f'{folder}/{key}_{k:04d}.nii.gz' for k in range(2)], f'{key}: channel_files', files)
            if rec['split'] == 'test':
                c.check(rec['mask'] is None, f'{key}: a test case has no mask', type(rec['mask']))
            else:
                lab = canonical(os.path.join(src, 'labelsTr', f'{key}.nii.gz')).astype(np.uint8)
                c.check(rec['mask'] is not None and np.array_equal(rec['mask'][0], lab), f'{key}: mask equals nibabel')
    finally:
        ds.close()

    # Each channel normalised on its own statistics (a z-score over the volume, as nnU-Net per channel).
    rz = harness.write_json(os.path.join(work, 'z.json'), dict(harness.TINY_RECIPE, name='z', normalize={
        'mode': 'zscore', 'region': 'volume', 'percentiles': [0.5, 99.5], 'range': [0.0, 1.0]}))
    outz = os.path.join(work, 'v2-z')
    r, man = convert(cli, src, outz, recipe=rz)
    if c.check(r.returncode == 0, 'v2 with a z-score recipe converts', r.stderr.strip()):
        ds = cirrdata.Dataset(outz)
        try:
            rec = ds[0]
            worst = 0.0
            for k in range(2):
                x = canonical(os.path.join(src, 'imagesTr' if rec['split'] == 'train' else 'imagesTs',
                                           f"{rec['key']}_{k:04d}.nii.gz")).astype(np.float64)
                want = (x - x.mean()) / x.std()
                worst = max(worst, float(np.abs(rec['image'][k] - want).max()))
            c.check(worst < 1e-4, 'z-score: each channel normalised on its own statistics', worst)
        finally:
            ds.close()
    return out


def loader_and_torch(cirrdata, lib, out):
    """The loader and cirrdata.torch serve the 2-channel records."""
    import numpy as np
    ds = cirrdata.Dataset(out)
    try:
        stored = {i: ds[i] for i in range(len(ds))}
    finally:
        ds.close()
    from cirrdata.loader import Loader
    ld = Loader(out, batch_size=2, mode='volume', patch=None, split='train', threads=1, seed=5)
    try:
        n = 0
        for b in ld:
            img = np.asarray(b['image'])
            c.check(img.ndim == 5 and img.shape[:2] == (2, 2), 'loader: batch image (B, C=2, X, Y, Z)', img.shape)
            for j, idx in enumerate(np.asarray(b['index'])):
                want = stored[int(idx)]['image']
                c.check(np.array_equal(img[j], want), f'loader: sample of record {int(idx)} equals the record')
            n += 1
            if n == 1:
                break
    finally:
        ld.close()
    if ASAN:
        return
    try:
        import torch  # noqa: F401
        from cirrdata.torch import BatchDataset, RecordDataset
    except ImportError as e:
        c.check(False, 'cirrdata.torch imports', e)
        return
    rd = RecordDataset(out, split='test')
    c.check(len(rd) == 2, 'RecordDataset(split=test): the 2 imagesTs cases', len(rd))
    item = rd[0]
    c.check(tuple(item['image'].shape)[0] == 2 and item['image'].dim() == 4 and item.get('mask') is None,
            'RecordDataset: image (2, X, Y, Z), no mask for a test case', (tuple(item['image'].shape), item.get('mask')))
    bd = BatchDataset(out, 2, split='train', mode='volume', patch=None, threads=1)
    for b in bd:
        img = b['image']
        c.check(tuple(img.shape)[:2] == (2, 2) and img.dim() == 5, 'BatchDataset: image (B, 2, X, Y, Z)', tuple(img.shape))
        for j, idx in enumerate(b['index'].tolist()):
            c.check(np.array_equal(img[j].numpy(), stored[int(idx)]['image']),
                    f'BatchDataset: sample of record {idx} equals the record')
        break
    close = getattr(bd, 'close', None)
    if close:
        close()


def schema_errors(man):
    """What schemas/manifest.schema.json says against a manifest."""
    import jsonschema
    schemas = os.path.join(harness.ROOT, 'schemas')
    with open(os.path.join(schemas, 'manifest.schema.json')) as f:
        ms = json.load(f)
    with open(os.path.join(schemas, 'recipe.schema.json')) as f:
        rs = json.load(f)
    resolver = jsonschema.RefResolver.from_schema(ms, store={rs['$id']: rs, 'recipe.schema.json': rs})
    return [f'{list(e.path)}: {e.message}' for e in jsonschema.Draft202012Validator(ms, resolver=resolver).iter_errors(man)]


def kfold_written_out(ids, fold):
    """sklearn's KFold(5, shuffle=True, random_state=12345) over np.sort(ids), written out on numpy."""
    import numpy as np
    keys = np.sort(np.array(ids))
    idx = np.arange(len(keys))
    np.random.RandomState(12345).shuffle(idx)
    sizes = np.full(5, len(keys) // 5, dtype=int)
    sizes[:len(keys) % 5] += 1
    start = int(sizes[:fold].sum())
    return sorted(str(k) for k in keys[idx[start:start + sizes[fold]]])


def kfold_sklearn(ids, fold):
    import numpy as np
    from sklearn.model_selection import KFold
    keys = list(np.sort(ids))
    for f, (_, val) in enumerate(KFold(n_splits=5, shuffle=True, random_state=12345).split(keys)):
        if f == fold:
            return sorted(str(keys[i]) for i in val)


def test_default_folds(cli, work, ids):
    src = os.path.join(work, 'folds')
    make_v2(src, ids, shape=(4, 3, 3), nch=1, names=('CT',), seed=11)
    try:
        import sklearn  # noqa: F401
        have_sklearn = True
    except ImportError:
        have_sklearn = False
        print('note: sklearn is missing (tools/deps.sh test installs python3-sklearn): compared with the written-out KFold only')
    for fold in (0, 4) if ASAN else range(5):
        out = os.path.join(work, f'folds-{len(ids)}-{fold}')
        r, man = convert(cli, src, out, '--fold', str(fold))
        if not c.check(r.returncode == 0, f'--fold {fold} (default split, {len(ids)} cases)', r.stderr.strip()):
            continue
        val = sorted(e['key'] for e in man['records'] if e['split'] == 'valid')
        train = sorted(e['key'] for e in man['records'] if e['split'] == 'train')
        want = kfold_written_out(ids, fold)
        c.check(val == want, f'fold {fold}: valid cases equal KFold over RandomState(12345)', (val, want))
        if have_sklearn:
            sk = kfold_sklearn(ids, fold)
            c.check(val == sk, f'fold {fold}: valid cases equal sklearn KFold', (val, sk))
        c.check(sorted(val + train) == sorted(ids), f'fold {fold}: every training case is train or valid')
        c.check(man['source'].get('split') == {'fold': fold, 'source': 'default'}, f'fold {fold}: manifest source.split',
                man['source'].get('split'))
    shutil.rmtree(src)


def expect_error(cli, src, work, name, words, *extra):
    out = os.path.join(work, 'err-' + name)
    r, _ = convert(cli, src, out, *extra)
    c.check(r.returncode != 0 and all(w in r.stderr for w in words), f'{name}: refused naming {words}',
            f'exit {r.returncode}: {r.stderr.strip()}')
    c.check(not os.path.exists(out), f'{name}: nothing written', os.listdir(out) if os.path.isdir(out) else out)


def test_splits_file(cirrdata, cli, work):
    src = os.path.join(work, 'sp')
    ids = ['BraTS_001', 'BraTS_002', 'BraTS_003', 'BraTS_010', 'BraTS_011', 'BraTS_012']
    make_v2(src, ids, test_ids=['BraTS_100'], shape=(4, 3, 3), nch=1, names=('FLAIR',), seed=5)
    # nnU-Net's documented format: a list of {"train": [...], "val": [...]}, one per fold.
    splits = [{'train': ids[2:], 'val': ids[:2]}, {'train': ids[:3] + ids[4:], 'val': [ids[3]]}]
    sf = harness.write_json(os.path.join(src, 'splits_final.json'), splits)
    for fold in range(2):
        out = os.path.join(work, f'sp-{fold}')
        r, man = convert(cli, src, out, '--fold', str(fold))
        if not c.check(r.returncode == 0, f'splits_final.json in the root, fold {fold}', r.stderr.strip()):
            continue
        got = {e['key']: e['split'] for e in man['records']}
        want = dict({k: 'train' for k in splits[fold]['train']}, **{k: 'valid' for k in splits[fold]['val']},
                    BraTS_100='test')
        c.check(got == want, f'fold {fold}: splits from splits_final.json', got)
        c.check(man['source'].get('split') == {'fold': fold, 'source': 'file', 'file': sf},
                f'fold {fold}: manifest source.split names the file', man['source'].get('split'))
        errs = schema_errors(man)
        c.check(not errs, f'fold {fold}: the manifest follows schemas/manifest.schema.json', errs[:3])
    # --splits FILE elsewhere (nnU-Net keeps it in the preprocessed folder); a fold leaving a case out.
    os.remove(sf)
    other = harness.write_json(os.path.join(work, 'splits_other.json'), [{'train': ids[1:4], 'val': ids[4:]}])
    r, man = convert(cli, src, os.path.join(work, 'sp-x'), '--fold', '0', '--splits', other)
    if c.check(r.returncode == 0, '--splits FILE', r.stderr.strip()):
        got = {e['key']: e['split'] for e in man['records']}
        c.check(got == dict({k: 'train' for k in ids[1:4]}, **{k: 'valid' for k in ids[4:]}, BraTS_100='test'),
                '--splits: train/valid from the file; the case it leaves out is not converted', got)
        sk = [s for s in man['source']['skipped'] if 'BraTS_001' in s['path']]
        c.check(len(sk) == 1 and 'not in fold 0' in sk[0]['reason'], 'the left-out case is listed as skipped', sk)
        # the Python binding takes the same options (cirrdata.convert(..., fold=, splits=)): the same bytes
        py_out = os.path.join(work, 'sp-x-py')
        cirrdata.convert(src, py_out, layout='nnunet', fold=0, splits=other)
        with open(os.path.join(work, 'sp-x', 'manifest.json'), 'rb') as f1, \
                open(os.path.join(py_out, 'manifest.json'), 'rb') as f2:
            a, b = json.load(f1), json.load(f2)
        for m in (a, b):
            m.pop('created', None), m.pop('out', None)
        c.check([(e['key'], e['split']) for e in a['records']] == [(e['key'], e['split']) for e in b['records']] and
                a['source'].get('split') == b['source'].get('split'),
                'cirrdata.convert(fold=0, splits=FILE) splits the cases as convert --fold 0 --splits FILE',
                (b['source'].get('split'), [(e['key'], e['split']) for e in b['records']]))
    # Bad splits: each an error naming the case (or the fold), nothing written.
    bad = [('fold-range', [{'train': ids[1:], 'val': ids[:1]}], '1', ['fold 1', 'folds 0..0']),
           ('twice', [{'train': ids[1:] + [ids[2]], 'val': ids[:1]}], '0', [ids[2], 'twice']),
           ('train-and-val', [{'train': ids[1:], 'val': ids[:2]}], '0', [ids[1], 'twice']),
           ('unknown', [{'train': ids[1:] + ['BraTS_999'], 'val': ids[:1]}], '0', ['BraTS_999'])]
    for name, doc, fold, words in bad:
        f = harness.write_json(os.path.join(work, f'splits_{name}.json'), doc)
        expect_error(cli, src, work, 'splits-' + name, words, '--fold', fold, '--splits', f)
    expect_error(cli, src, work, 'default-fold-5', ['fold 5', '0..4'], '--fold', '5')
    expect_error(cli, src, work, 'splits-without-fold', ['needs a fold'], '--splits', other)


def test_bad_channels(cli, work):
    import nibabel as nib
    import numpy as np
    src = os.path.join(work, 'badch')
    make_v2(src, ['a', 'b', 'c'], shape=(5, 4, 3))
    base = os.path.join(work, 'badch-clean')
    shutil.copytree(src, base)
    os.remove(os.path.join(src, 'imagesTr', 'b_0001.nii.gz'))
    expect_error(cli, src, work, 'missing-channel', ["case 'b'", 'channel 1', 'b_0001.nii.gz'])
    shutil.rmtree(src)
    shutil.copytree(base, src)
    p = os.path.join(src, 'imagesTr', 'c_0001.nii.gz')
    img = nib.load(p)
    nii(p, np.zeros((5, 4, 4), np.int16), img.affine)
    expect_error(cli, src, work, 'channel-shape', ["case 'c'", 'channel 1', p, 'shape'])
    shutil.rmtree(src)
    shutil.copytree(base, src)
    p = os.path.join(src, 'imagesTr', 'a_0001.nii.gz')
    img = nib.load(p)
    aff = img.affine.copy()
    aff[0, 3] += 0.5
    nii(p, np.asarray(img.dataobj), aff)
    expect_error(cli, src, work, 'channel-affine', ["case 'a'", 'channel 1', p, 'affine'])
    shutil.rmtree(src)
    shutil.copytree(base, src)
    nii(os.path.join(src, 'imagesTr', 'a_0002.nii.gz'), np.zeros((5, 4, 3), np.int16), np.eye(4))
    expect_error(cli, src, work, 'extra-channel', ["case 'a'", 'channel 2', 'a_0002.nii.gz'])
    # file_ending: .nii honoured; .png refused; regions_class_order refused.
    nii_src = os.path.join(work, 'ending-nii')
    make_v2(nii_src, ['x', 'y'], shape=(4, 3, 3), ending='.nii')
    r, man = convert(cli, nii_src, os.path.join(work, 'ending-nii-out'))
    c.check(r.returncode == 0 and man['counts']['records'] == 2, 'file_ending .nii: the .nii cases convert',
            r.stderr.strip())
    ds = json.load(open(os.path.join(base, 'dataset.json')))
    for name, patch, words in (('png', {'file_ending': '.png'}, ["file_ending '.png'", 'not supported']),
                               ('regions', {'regions_class_order': [1, 2]}, ['regions_class_order', 'not supported'])):
        harness.write_json(os.path.join(src, 'dataset.json'), dict(ds, **patch))
        expect_error(cli, src, work, name, words)


def test_symlinks(cli, work):
    src = os.path.join(work, 'links')
    make_v2(src, ['p1', 'p2', 'p3'], shape=(4, 3, 3), nch=2)
    # Case files kept elsewhere inside the root, linked in (absolute and relative links).
    store = os.path.join(src, 'store')
    os.makedirs(store)
    for k in range(2):
        f = f'p2_{k:04d}.nii.gz'
        os.rename(os.path.join(src, 'imagesTr', f), os.path.join(store, f))
        os.symlink(os.path.join(store, f) if k else os.path.join('..', 'store', f), os.path.join(src, 'imagesTr', f))
    # A whole imagesTr folder linked inside the root.
    os.rename(os.path.join(src, 'imagesTr'), os.path.join(src, 'real_imagesTr'))
    os.symlink('real_imagesTr', os.path.join(src, 'imagesTr'))
    r, man = convert(cli, src, os.path.join(work, 'links-out'))
    if c.check(r.returncode == 0, 'symlinked case files and imagesTr inside the root convert', r.stderr.strip()):
        c.check(sorted(e['key'] for e in man['records']) == ['p1', 'p2', 'p3'] and not man['source']['skipped'],
                'links inside the root: every case', (man['records'], man['source']['skipped']))
    # A link leading out of the root: skipped naming it; --strict refuses naming it.
    outside = os.path.join(work, 'outside')
    os.makedirs(outside)
    link = os.path.join(src, 'real_imagesTr', 'p3_0001.nii.gz')
    os.rename(link, os.path.join(outside, 'p3_0001.nii.gz'))
    os.symlink(os.path.join(outside, 'p3_0001.nii.gz'), link)
    r, man = convert(cli, src, os.path.join(work, 'links-out2'))
    if c.check(r.returncode == 0, 'a link leading out: the other cases convert', r.stderr.strip()):
        c.check(sorted(e['key'] for e in man['records']) == ['p1', 'p2'], 'the case linking out is not read',
                [e['key'] for e in man['records']])
        sk = man['source']['skipped']
        c.check(len(sk) == 1 and sk[0]['path'].endswith('p3_0001.nii.gz') and 'escapes the dataset' in sk[0]['reason']
                and outside in sk[0]['reason'], 'the link leading out is skipped naming it and its target', sk)
    expect_error(cli, src, work, 'link-out-strict', ['p3_0001.nii.gz', 'escapes the dataset'], '--strict')
    # Every case leading out: the error names the link, not a bare "no training cases".
    only = os.path.join(work, 'links-all-out')
    os.makedirs(only)
    shutil.copy(os.path.join(src, 'dataset.json'), only)
    os.symlink(os.path.join(src, 'real_imagesTr'), os.path.join(only, 'imagesTr'))
    os.symlink(os.path.join(src, 'labelsTr'), os.path.join(only, 'labelsTr'))
    expect_error(cli, only, work, 'all-links-out', ['no training cases', 'escapes the dataset', 'p1_0000.nii.gz'])


def test_msd(cirrdata, cli, work):
    """MSD-style 2-channel datasets: the release's 4D files, and nnU-Net v1's per-channel files."""
    import nibabel as nib
    import numpy as np
    rng = np.random.default_rng(9)
    shape = (6, 5, 4)
    for style in ('4d', 'v1'):
        src = os.path.join(work, 'msd-' + style)
        for d in ('imagesTr', 'labelsTr', 'imagesTs'):
            os.makedirs(os.path.join(src, d))
        training, test = [], []
        for cid, folder in (('prostate_00', 'imagesTr'), ('prostate_01', 'imagesTr'), ('prostate_03', 'imagesTs')):
            aff = affine(rng)
            chans = [rng.integers(0, 1000 * (k + 1), shape).astype(np.int16) for k in range(2)]
            if style == '4d':
                nii(os.path.join(src, folder, cid + '.nii.gz'), np.stack(chans, axis=-1), aff)
            else:
                for k in range(2):
                    nii(os.path.join(src, folder, f'{cid}_{k:04d}.nii.gz'), chans[k], aff)
            if folder == 'imagesTr':
                nii(os.path.join(src, 'labelsTr', cid + '.nii.gz'), (rng.random(shape) > 0.5).astype(np.uint8), aff)
                training.append({'image': f'./imagesTr/{cid}.nii.gz', 'label': f'./labelsTr/{cid}.nii.gz'})
            else:
                test.append(f'./imagesTs/{cid}.nii.gz')
        harness.write_json(os.path.join(src, 'dataset.json'),
                           {'name': 'PROSTATE', 'tensorImageSize': '4D', 'modality': {'0': 'T2', '1': 'ADC'},
                            'labels': {'0': 'background', '1': 'PZ'}, 'numTraining': 2, 'numTest': 1,
                            'training': training, 'test': test})
        out = os.path.join(work, 'msd-out-' + style)
        r, man = convert(cli, src, out)
        if not c.check(r.returncode == 0, f'MSD {style}: converts', r.stderr.strip()):
            continue
        got = {e['key']: (e['split'], e['channels'], e['sequence']) for e in man['records']}
        c.check(got == {'prostate_00': ('train', 2, 'T2+ADC'), 'prostate_01': ('train', 2, 'T2+ADC'),
                        'prostate_03': ('test', 2, 'T2+ADC')}, f'MSD {style}: cases, splits, channels', got)
        ds = cirrdata.Dataset(out)
        try:
            for i in range(len(ds)):
                rec = ds[i]
                folder = 'imagesTs' if rec['split'] == 'test' else 'imagesTr'
                if style == '4d':
                    want = np.stack([canonical(os.path.join(src, folder, rec['key'] + '.nii.gz'), k) for k in range(2)])
                else:
                    want = np.stack([canonical(os.path.join(src, folder, f"{rec['key']}_{k:04d}.nii.gz")) for k in range(2)])
                c.check(np.array_equal(rec['image'], want), f"MSD {style} {rec['key']}: every voxel equals nibabel")
        finally:
            ds.close()
    # A 4D file with another number of volumes than modality names.
    src = os.path.join(work, 'msd-4d')
    p = os.path.join(src, 'imagesTr', 'prostate_01.nii.gz')
    img = nib.load(p)
    nii(p, np.asarray(img.dataobj)[..., :1].repeat(3, axis=-1), img.affine)
    expect_error(cli, src, work, 'msd-volumes', ['prostate_01', '3 volume', '2 channels'])


def main():
    a = args()
    cirrdata = harness.load_binding(a.lib)
    cli = a.cirrdata
    work = a.workdir or tempfile.mkdtemp(prefix='cd_nnimport_')
    def section(fn, *a):
        """One part of the test: an exception is one failure (with the traceback), the next part still runs."""
        try:
            return fn(*a)
        except Exception as e:  # noqa: BLE001
            c.crashed(e)

    try:
        out = section(test_channels_and_test_split, cirrdata, cli, work)
        if out:
            section(loader_and_torch, cirrdata, a.lib, out)
        # 13 identifiers whose np.sort order differs from a numeric one (case_10 < case_2); 5 (the least).
        section(test_default_folds, cli, work, [f'case_{i}' for i in range(13)])
        if not ASAN:
            section(test_default_folds, cli, work, ['Z1', 'a', 'B', 'b_2', 'b_10'])
        section(test_splits_file, cirrdata, cli, work)
        section(test_bad_channels, cli, work)
        section(test_symlinks, cli, work)
        section(test_msd, cirrdata, cli, work)
    finally:
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return c.summary('nnunet_import')


if __name__ == '__main__':
    sys.exit(main())
