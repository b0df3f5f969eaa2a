#!/usr/bin/python3
"""`cirrdata convert` on dataset layouts with problems that must not pass silently (libcirrdata/convert/layout.c).

  /usr/bin/python3 tests/python/test_layout_checks.py --cirrdata build/tools/cirrdata [--workdir DIR]

Tiny hand-made CirrMRI600+ and nnU-Net v2 trees (4x4x3 volumes, recipe raw), each with one problem:

  * a mask (CirrMRI600+) or a label (nnU-Net) whose image is missing, also when the whole images folder
    is: listed in the manifest's source.skipped with the file and the reason, not dropped without a
    word (--strict: an error);
  * one CirrMRI600+ patient in two splits of a sequence (also as "3" and "03", which the CSV join treats
    as one id): an error naming the patient, both splits and both files, with or without --strict;
  * two images of one patient in one folder (1.nii.gz and 1.nii), two nnU-Net cases with one key: an
    error naming both files;
  * two rows of a metadata CSV for one patient that disagree: an error naming the CSV and both rows;
    identical repeated rows are accepted and change nothing;
  * names longer than the old fixed fields (a 150-character case id, a 70-character channel name): the
    key and patient id are stored whole; a channel name too long for a sequence is refused naming
    dataset.json.
Prints one line per failure and ends with `layout_checks: N passed, M failed`.
"""
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Checks  # noqa: E402

import numpy as np  # noqa: E402
import nibabel as nib  # noqa: E402

SHAPE = (4, 4, 3)
HEADER = 'Patient ID,Age,Gender,Radiological Evaluation\n'


def nii(path, value, mask=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = np.zeros(SHAPE, np.uint8) if mask else np.full(SHAPE, value, np.int16)
    if mask:
        data[1:3, 1:3, :] = 1
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 3.0, 1.0])), path)


def seq_dir(root, seq):
    return os.path.join(root, 'Cirrhosis_%s_3D' % seq, 'Cirrhosis_%s_3D' % seq) if seq == 'T1' else \
        os.path.join(root, 'Cirrhosis_%s_3D' % seq)


def make_cirr(root, cases, csv_rows=None):
    """cases: [(seq, split, id, stage)]; csv_rows: {seq: text after the header} (default: one row per id)."""
    for seq, split, pid, _ in cases:
        d = seq_dir(root, seq)
        nii(os.path.join(d, '%s_images' % split, '%s.nii.gz' % pid), 100 + int(pid))
        nii(os.path.join(d, '%s_masks' % split, '%s.nii.gz' % pid), 0, mask=True)
    os.makedirs(os.path.join(root, 'Metadata'), exist_ok=True)
    for seq in ('T1', 'T2'):
        if csv_rows and seq in csv_rows:
            body = csv_rows[seq]
        else:
            seen = {}
            for s, _, pid, stage in cases:
                if s == seq:
                    seen[pid] = stage
            body = ''.join('%s,%d,1,%d\n' % (pid, 50 + i, st) for i, (pid, st) in enumerate(sorted(seen.items())))
        with open(os.path.join(root, 'Metadata', '%s_age_gender_evaluation.csv' % seq), 'w') as f:
            f.write(HEADER + body)


BASE = [('T1', 'train', '1', 1), ('T1', 'train', '2', 2), ('T1', 'valid', '3', 3), ('T1', 'test', '4', 1),
        ('T2', 'train', '1', 1), ('T2', 'valid', '2', 2), ('T2', 'test', '3', 3)]


def convert(cli, root, layout, out, strict=False):
    args = [cli, 'convert', '--layout', layout, root, '--out', out, '--recipe', 'raw', '--quiet', '--threads', '1']
    rc, so, se = harness.run_rc(args + (['--strict'] if strict else []), timeout=300)
    man = None
    if rc == 0:
        with open(os.path.join(out, 'manifest.json')) as f:
            man = json.load(f)
    return rc, se, man


def skipped(man):
    return man['source'].get('skipped', []) if man else []


def test_cirr(c, cli, work):
    # The tree as it should be: every case converts, nothing skipped.
    root = os.path.join(work, 'cirr_ok')
    make_cirr(root, BASE)
    rc, se, man = convert(cli, root, 'cirrmri600', os.path.join(work, 'o_ok'))
    c.check(rc == 0 and len(man['records']) == 7 and not skipped(man), 'cirr: the plain tree converts (7 records)',
            se.strip()[:300])

    # A mask whose image is missing.
    root = os.path.join(work, 'cirr_noimg')
    make_cirr(root, BASE)
    os.remove(os.path.join(seq_dir(root, 'T1'), 'train_images', '2.nii.gz'))
    mask = os.path.join(seq_dir(root, 'T1'), 'train_masks', '2.nii.gz')
    rc, se, man = convert(cli, root, 'cirrmri600', os.path.join(work, 'o_noimg'))
    sk = skipped(man)
    c.check(rc == 0 and len(man['records']) == 6, 'cirr: a mask without image: the other 6 cases convert', se.strip()[:300])
    c.check(any(s['path'] == mask and 'mask without an image' in s['reason'] for s in sk),
            'cirr: the mask without image is listed in source.skipped', sk)
    rc, se, _ = convert(cli, root, 'cirrmri600', os.path.join(work, 'o_noimg_strict'), strict=True)
    c.check(rc != 0 and mask in se and 'mask without an image' in se, 'cirr: --strict stops at the mask without image',
            'exit %d: %s' % (rc, se.strip()[:300]))
    # A whole images folder missing: its masks are listed too.
    root = os.path.join(work, 'cirr_nofolder')
    make_cirr(root, BASE)
    shutil.rmtree(os.path.join(seq_dir(root, 'T2'), 'valid_images'))
    mask = os.path.join(seq_dir(root, 'T2'), 'valid_masks', '2.nii.gz')
    rc, se, man = convert(cli, root, 'cirrmri600', os.path.join(work, 'o_nofolder'))
    c.check(rc == 0 and len(man['records']) == 6 and [s['path'] for s in skipped(man)] == [mask],
            'cirr: without T2/valid_images its mask is listed in source.skipped', se.strip()[:300] or skipped(man))

    # One patient in two splits of a sequence: leakage, an error with or without --strict.
    for name, dup in (('same id', '3'), ('3 and 03', '03')):
        root = os.path.join(work, 'cirr_leak_' + dup)
        make_cirr(root, BASE + [('T1', 'test', dup, 3)], csv_rows={'T1': '1,50,1,1\n2,51,1,2\n3,52,1,3\n4,53,1,1\n'})
        rc, se, man = convert(cli, root, 'cirrmri600', os.path.join(work, 'o_leak_' + dup))
        a = os.path.join(seq_dir(root, 'T1'), 'valid_images', '3.nii.gz')
        b = os.path.join(seq_dir(root, 'T1'), 'test_images', '%s.nii.gz' % dup)
        c.check(rc != 0 and man is None, 'cirr: T1 patient in valid and test (%s) is refused' % name, 'exit %d' % rc)
        c.check('two splits' in se and 'valid' in se and 'test' in se and a in se and b in se,
                'cirr: the leak error names the patient, both splits and both files (%s)' % name, se.strip()[:400])

    # Two images of one patient in one folder.
    root = os.path.join(work, 'cirr_twice')
    make_cirr(root, BASE)
    other = os.path.join(seq_dir(root, 'T1'), 'train_images', '1.nii')
    nii(other, 7)
    rc, se, man = convert(cli, root, 'cirrmri600', os.path.join(work, 'o_twice'))
    c.check(rc != 0 and 'two images' in se and other in se and other + '.gz' in se,
            'cirr: 1.nii beside 1.nii.gz is refused naming both', 'exit %d: %s' % (rc, se.strip()[:300]))

    # Conflicting and identical repeated CSV rows.
    rows = '1,50,1,1\n2,51,1,2\n3,52,1,3\n2,51,1,3\n4,53,1,1\n'
    root = os.path.join(work, 'cirr_csv_conflict')
    make_cirr(root, BASE, csv_rows={'T1': rows})
    csv_path = os.path.join(root, 'Metadata', 'T1_age_gender_evaluation.csv')
    for strict in (False, True):
        rc, se, man = convert(cli, root, 'cirrmri600', os.path.join(work, 'o_csv_conflict%d' % strict), strict=strict)
        c.check(rc != 0 and csv_path in se and 'patient 2' in se and 'data row 2' in se and 'data row 4' in se,
                'cirr: conflicting CSV rows for patient 2 are refused naming the CSV and rows 2 and 4 (strict %s)' % strict,
                'exit %d: %s' % (rc, se.strip()[:300]))
    root = os.path.join(work, 'cirr_csv_repeat')
    make_cirr(root, BASE, csv_rows={'T1': '1,50,1,1\n2,51,1,2\n3,52,1,3\n2,51,1,2\n4,53,1,1\n1,50,1,1\n'})
    rc, se, man = convert(cli, root, 'cirrmri600', os.path.join(work, 'o_csv_repeat'))
    if c.check(rc == 0 and len(man['records']) == 7 and not skipped(man), 'cirr: identical repeated CSV rows are accepted',
               se.strip()[:300]):
        labels = {r['key']: r['label'] for r in man['records']}  # Radiological Evaluation - 1
        c.check(labels.get('T1/2') == 1 and labels.get('T1/1') == 0, 'cirr: repeated rows: labels as the CSV says', labels)


def make_nnunet(root, names, channel='MRI'):
    for n in names:
        nii(os.path.join(root, 'imagesTr', n + '_0000.nii.gz'), 10)
        nii(os.path.join(root, 'labelsTr', n + '.nii.gz'), 0, mask=True)
    harness.write_json(os.path.join(root, 'dataset.json'), {'channel_names': {'0': channel}, 'labels': {'background': 0, 'liver': 1},
                                                          'numTraining': len(names), 'file_ending': '.nii.gz'})


def test_nnunet(c, cli, work):
    long_id = 'case_' + 'x' * 145  # 150 characters: the key field used to cut at 95
    root = os.path.join(work, 'nn_long')
    make_nnunet(root, ['a', long_id])
    rc, se, man = convert(cli, root, 'nnunet', os.path.join(work, 'o_nn_long'))
    if c.check(rc == 0, 'nnunet: a 150-character case id converts', se.strip()[:300]):
        keys = sorted(r['key'] for r in man['records'])
        pids = sorted(r['patient_id'] for r in man['records'])
        c.check(keys == sorted(['a', long_id]) and pids == keys, 'nnunet: the long key and patient id are stored whole',
                [len(k) for k in keys])

    # A label whose image is missing.
    root = os.path.join(work, 'nn_noimg')
    make_nnunet(root, ['a', 'b', 'c'])
    os.remove(os.path.join(root, 'imagesTr', 'b_0000.nii.gz'))
    label = os.path.join(root, 'labelsTr', 'b.nii.gz')
    rc, se, man = convert(cli, root, 'nnunet', os.path.join(work, 'o_nn_noimg'))
    sk = skipped(man)
    c.check(rc == 0 and len(man['records']) == 2, 'nnunet: a label without image: the other 2 cases convert', se.strip()[:300])
    c.check(any(s['path'] == label and 'label without an image' in s['reason'] for s in sk),
            'nnunet: the label without image is listed in source.skipped', sk)
    rc, se, _ = convert(cli, root, 'nnunet', os.path.join(work, 'o_nn_noimg_strict'), strict=True)
    c.check(rc != 0 and label in se, 'nnunet: --strict stops at the label without image', se.strip()[:300])

    # Two cases with one key.
    root = os.path.join(work, 'nn_twice')
    make_nnunet(root, ['a', 'b'])
    other = os.path.join(root, 'imagesTr', 'a_0000.nii')
    nii(other, 3)
    rc, se, man = convert(cli, root, 'nnunet', os.path.join(work, 'o_nn_twice'))
    c.check(rc != 0 and "key 'a'" in se and other in se and other + '.gz' in se,
            'nnunet: a_0000.nii beside a_0000.nii.gz is refused naming both', 'exit %d: %s' % (rc, se.strip()[:300]))

    # A channel name: 40 characters are kept whole, 70 are refused naming dataset.json.
    root = os.path.join(work, 'nn_chan40')
    make_nnunet(root, ['a'], channel='T' * 40)
    rc, se, man = convert(cli, root, 'nnunet', os.path.join(work, 'o_nn_chan40'))
    c.check(rc == 0 and man['records'][0]['sequence'] == 'T' * 40, 'nnunet: a 40-character channel name is stored whole',
            se.strip()[:300] or man['records'][0]['sequence'])
    root = os.path.join(work, 'nn_chan70')
    make_nnunet(root, ['a'], channel='T' * 70)
    rc, se, man = convert(cli, root, 'nnunet', os.path.join(work, 'o_nn_chan70'))
    c.check(rc != 0 and os.path.join(root, 'dataset.json') in se and 'channel name' in se,
            'nnunet: a 70-character channel name is refused naming dataset.json', 'exit %d: %s' % (rc, se.strip()[:300]))


def main():
    ap = harness.parser(__doc__.split('\n')[0], lib=None)
    args = ap.parse_args()
    c = Checks()
    work = args.workdir or tempfile.mkdtemp(prefix='cirrdata-layout-')
    os.makedirs(work, exist_ok=True)
    try:
        test_cirr(c, args.cirrdata, work)
        test_nnunet(c, args.cirrdata, work)
    except Exception as e:  # a crash is a failure, not a silent pass
        c.crashed(e)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return c.summary('layout_checks')


if __name__ == '__main__':
    sys.exit(main())
