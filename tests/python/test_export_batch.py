#!/usr/bin/python3
"""`cirrdata export-batch`: every record written once, under a unique name, never over another file.

  /usr/bin/python3 tests/python/test_export_batch.py --cirrdata build/tools/cirrdata [--workdir DIR]

An nnU-Net v2 tree whose case ids collide once sanitised ('a b', 'a_b' and 'a<TAB>b' all become a_b), a
150-character id (longer than the old 95-byte key) and a 240-character one (longer than export-batch's
200-byte name part), each image filled with its own value, converted with the raw recipe, then:

  * npy and nifti: the files on disk are exactly the count the summary line prints, two per record
    (image, mask); every record's image is in exactly one file, with its own values; the colliding
    records after the first get the documented _r<manifest index> suffix and a note on stderr naming
    their key; the 150-character id keeps its whole name;
  * a second export into the same folder fails naming an existing file and changes nothing; with
    --overwrite it succeeds and writes the same set of files;
  * npy: one JSON sidecar per record (<stem>.json) with the manifest's key, patient, sequence, split and
    label, the record index, the affine and spacing (equal to the NIfTI export's, read by nibabel), and
    each tensor's file, dtype and shape (equal to the .npy's).
Prints one line per failure and ends with `export_batch: N passed, M failed`.
"""
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

SHAPE = (4, 3, 2)


def make_source(root, names):
    os.makedirs(os.path.join(root, 'imagesTr'))
    os.makedirs(os.path.join(root, 'labelsTr'))
    for i, n in enumerate(names):
        aff = np.diag([1.0, 1.0, 2.0, 1.0])
        nib.save(nib.Nifti1Image(np.full(SHAPE, 100 + i, np.int16), aff), os.path.join(root, 'imagesTr', n + '_0000.nii.gz'))
        m = np.zeros(SHAPE, np.uint8)
        m[i % SHAPE[0]] = 1
        nib.save(nib.Nifti1Image(m, aff), os.path.join(root, 'labelsTr', n + '.nii.gz'))
    harness.write_json(os.path.join(root, 'dataset.json'), {'channel_names': {'0': 'MRI'}, 'labels': {'background': 0, 'liver': 1},
                                                          'numTraining': len(names), 'file_ending': '.nii.gz'})


def load(path):
    return np.load(path) if path.endswith('.npy') else np.asanyarray(nib.load(path).dataobj)


def check_export(c, cli, ds, out, fmt, names, records):
    rc, so, se = harness.run_rc([cli, 'export-batch', ds, '--out', out, '--format', fmt, '--quiet'])
    if not c.check(rc == 0, '%s: export-batch exits 0' % fmt, se.strip()[:400]):
        return None
    c.check(not harness.sanitizer_report(se), '%s: no sanitizer report' % fmt, se[:400])
    files = sorted(os.listdir(out))
    data = [f for f in files if not f.endswith('.json')]
    sidecars = [f for f in files if f.endswith('.json')]
    m = re.search(r'exported (\d+) records? .* as (\d+) ', so)
    c.check(m is not None and int(m.group(1)) == len(records) and int(m.group(2)) == len(data) == 2 * len(records),
            '%s: the summary counts %s records and %s files; %d files on disk for %d records' %
            (fmt, m and m.group(1), m and m.group(2), len(data), len(records)), so.strip())
    want_sidecars = len(records) if fmt == 'npy' else 0
    ms = re.search(r'and (\d+) JSON sidecars?', so)
    c.check(len(sidecars) == want_sidecars and (fmt != 'npy' or (ms is not None and int(ms.group(1)) == len(sidecars))),
            '%s: %d JSON sidecars on disk (want %d), the summary says %s' % (fmt, len(sidecars), want_sidecars,
                                                                          ms and ms.group(1)), so.strip())
    ext = '.npy' if fmt == 'npy' else '.nii.gz'
    # Which file holds which record: the images hold 100 + the case's position in `names`.
    owner = {}
    for f in files:
        if f.endswith('_image' + ext):
            a = load(os.path.join(out, f))
            v = np.unique(a)
            owner.setdefault(int(v[0]) - 100 if v.size == 1 else -1, []).append(f)
    want = {names.index(r['patient_id']): r for r in records}
    c.check(sorted(owner) == sorted(want) and all(len(v) == 1 for v in owner.values()),
            '%s: every record image is in exactly one file' % fmt, {k: v for k, v in owner.items()})
    for k, r in sorted(want.items()):
        f = owner.get(k, [''])[0]
        stem = f[:-len('_image' + ext)]
        c.check(os.path.exists(os.path.join(out, stem + '_mask' + ext)), '%s: record %r has its mask beside its image' %
                (fmt, r['key'][:20]), files)
    return owner, se, files


def check_sidecars(c, npy_out, nifti_out, records):
    """Each npy sidecar against the manifest, the .npy files and the NIfTI export's affines (nibabel)."""
    by_key = {r['key']: (i, r) for i, r in enumerate(records)}
    for f in sorted(x for x in os.listdir(npy_out) if x.endswith('.json')):
        with open(os.path.join(npy_out, f)) as fh:
            sc = json.load(fh)
        i, r = by_key.get(sc.get('key'), (None, {}))
        stem = f[:-len('.json')]
        c.check(i is not None and sc.get('record_index') == i and
                all(sc.get(k) == r.get(k) for k in ('patient_id', 'sequence', 'split', 'label')),
                'sidecar %s: key, patient, sequence, split, label and index are the manifest\'s' % stem[:30],
                {k: sc.get(k) for k in ('key', 'record_index', 'split', 'label')})
        nii = os.path.join(nifti_out, stem + '_image.nii.gz')
        if c.check(os.path.exists(nii), 'sidecar %s: the NIfTI export has the same record name' % stem[:30], nii):
            img = nib.load(nii)
            c.check(np.allclose(np.array(sc['affine']), img.affine, rtol=0, atol=1e-6) and
                    np.allclose(sc['spacing'], img.header.get_zooms()[:3], rtol=0, atol=1e-6),
                    'sidecar %s: affine and spacing equal the NIfTI export\'s (nibabel)' % stem[:30],
                    (sc['affine'], img.affine.tolist(), sc['spacing']))
        for name, t in sorted(sc.get('tensors', {}).items()):
            path = os.path.join(npy_out, t['file'])
            ok = os.path.exists(path)
            a = np.load(path) if ok else None
            c.check(ok and list(a.shape) == t['shape'] and a.dtype == np.dtype(t['dtype']),
                    'sidecar %s: tensor %s names its file, dtype and shape' % (stem[:30], name),
                    (t, a is not None and (a.shape, str(a.dtype))))
        c.check(sorted(sc.get('tensors', {})) == ['image', 'mask'], 'sidecar %s: both tensors listed' % stem[:30],
                sorted(sc.get('tensors', {})))


def main():
    ap = harness.parser(__doc__.split('\n')[0], lib=None)
    args = ap.parse_args()
    c = Checks()
    work = args.workdir or tempfile.mkdtemp(prefix='cirrdata-export-')
    os.makedirs(work, exist_ok=True)
    long150 = 'p' * 150
    long240 = 'q' * 240
    names = ['a b', 'a_b', 'a\tb', long150, long240, 'c']
    try:
        src = os.path.join(work, 'src')
        make_source(src, names)
        ds = os.path.join(work, 'ds')
        rc, so, se = harness.run_rc([args.cirrdata, 'convert', '--layout', 'nnunet', src, '--out', ds, '--recipe', 'raw',
                                     '--quiet', '--threads', '1'])
        if not c.check(rc == 0, 'convert the source', se.strip()[:400]):
            return c.summary('export_batch')
        with open(os.path.join(ds, 'manifest.json')) as f:
            records = json.load(f)['records']
        c.check(sorted(r['key'] for r in records) == sorted(names), 'the manifest keys are the case ids, whole',
                [len(r['key']) for r in records])
        index = {r['patient_id']: i for i, r in enumerate(records)}
        for fmt in ('npy', 'nifti'):
            out = os.path.join(work, 'out-' + fmt)
            got = check_export(c, args.cirrdata, ds, out, fmt, names, records)
            if not got:
                continue
            owner, se, files = got
            ext = '.npy' if fmt == 'npy' else '.nii.gz'
            stem = {k: v[0][:-len('_image' + ext)] for k, v in owner.items()}
            # The first of the three a?b records (manifest order) keeps the plain name, the others get _r<index>.
            abs_ = sorted((index[n], names.index(n)) for n in ('a b', 'a_b', 'a\tb'))
            first, rest = abs_[0], abs_[1:]
            c.check(stem.get(first[1]) == 'a_b_MRI_orig', '%s: the first a?b record keeps a_b_MRI_orig' % fmt, stem.get(first[1]))
            for i, k in rest:
                c.check(stem.get(k) == 'a_b_MRI_orig_r%d' % i, '%s: record %d (%r) is a_b_MRI_orig_r%d' % (fmt, i, names[k], i),
                        stem.get(k))
                c.check(("key '%s'" % names[k]) in se and ('taken by record %d' % first[0]) in se,
                        '%s: a note names record %d and the record that has its name' % (fmt, i), se[:400])
            c.check(stem.get(names.index(long150)) == long150 + '_MRI_orig', '%s: the 150-character id keeps its name' % fmt,
                    len(stem.get(names.index(long150), '')))
            i240 = index[long240]
            s240 = stem.get(names.index(long240), '')
            c.check(len(s240) <= 200 and s240.startswith('q' * 100) and s240.endswith('_r%d' % i240) and 'too long' in se,
                    '%s: the 240-character id is cut to 200 bytes with _r%d, and a note says so' % (fmt, i240), s240)
            c.check(stem.get(names.index('c')) == 'c_MRI_orig', '%s: a plain name is unchanged' % fmt, stem.get(names.index('c')))

            # Again into the same folder: refused, nothing changed; with --overwrite: the same files.
            before = {f: os.path.getmtime(os.path.join(out, f)) for f in files}
            rc, so2, se2 = harness.run_rc([args.cirrdata, 'export-batch', ds, '--out', out, '--format', fmt, '--quiet'])
            c.check(rc != 0 and 'already exists' in se2 and out in se2, '%s: a second export into the folder is refused' % fmt,
                    'exit %d: %s' % (rc, se2.strip()[:300]))
            c.check({f: os.path.getmtime(os.path.join(out, f)) for f in os.listdir(out)} == before,
                    '%s: the refused export changed no file' % fmt)
            rc, so3, se3 = harness.run_rc([args.cirrdata, 'export-batch', ds, '--out', out, '--format', fmt, '--quiet',
                                           '--overwrite'])
            c.check(rc == 0 and sorted(os.listdir(out)) == files, '%s: --overwrite writes the same files' % fmt,
                    'exit %d: %s' % (rc, se3.strip()[:300]))
        check_sidecars(c, os.path.join(work, 'out-npy'), os.path.join(work, 'out-nifti'), records)
    except Exception as e:  # a crash is a failure, not a silent pass
        c.crashed(e)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return c.summary('export_batch')


if __name__ == '__main__':
    sys.exit(main())
