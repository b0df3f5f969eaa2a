#!/usr/bin/env python3
"""A FIFO (named pipe) where a file is expected must be refused at once, never waited on: opening a FIFO
for reading blocks until a writer appears, so a reader that opens first and checks the file kind later
hangs forever. Every command and API that reads a file a user names, or that a dataset names, gets a FIFO
in that file's place and must finish within TIMEOUT_S seconds:

  * info, export, resample (input and --like), convert --recipe / --augment, stage --model,
    cirrdata.Model, cirrdata.safetensors_io.read: exit 1 (the binding: CirrdataError / ValueError) with a
    message that names the FIFO and says it is one;
  * a NIfTI image and a mask inside an nnU-Net layout: the case is skipped, and the manifest's
    source.skipped names the file and the FIFO (with --strict: exit 1 naming it); the other cases convert;
  * dataset.json of an nnU-Net layout, a metadata CSV of a CirrMRI600+ layout: convert exits 1 naming it;
  * manifest.json and a shard of a converted dataset: verify, inspect, export-batch, preview, merge (a
    part's manifest or shard), cirrdata.Dataset and the Loader refuse it naming the file;
  * a FIFO left as DIR/manifest.json or as the conversion journal in convert's output directory is no
    dataset: convert does not wait on it, converts, and leaves regular files in its place;
  * a FIFO in place of the Vulkan pipeline cache (when a Vulkan device exists) is a cache miss.

Ends with `fifo: N passed, M failed`.

  /usr/bin/python3 tests/python/test_fifo.py --cirrdata build/tools/cirrdata --lib build/libcirrdata/libcirrdata.so
"""
import glob
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True
import harness  # noqa: E402
from harness import check  # noqa: E402

TIMEOUT_S = 60  # a refusal takes milliseconds (seconds under ASan on a busy machine); a reader waiting on the FIFO never ends


def make_fifo(path):
    if os.path.lexists(path):
        os.remove(path)
    os.mkfifo(path)
    return path


def run(cmd, env=None):
    """(rc, stdout, stderr), rc None when the command was still running after TIMEOUT_S (killed)."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL, env=env)
    except subprocess.TimeoutExpired:
        return None, '', ''
    check(not harness.sanitizer_report(p.stderr), f"sanitizer report from {cmd[1:3]}: {p.stderr[-800:]}")
    return p.returncode, p.stdout, p.stderr


def names_fifo(text, path):
    return path in text and 'FIFO' in text


def refused(what, cmd, fifo, env=None):
    """cmd must exit 1 within TIMEOUT_S with a message naming the FIFO."""
    rc, out, err = run(cmd, env)
    if not check(rc is not None, f"{what}: still waiting on the FIFO after {TIMEOUT_S} s (killed)"):
        return
    check(rc == 1, f"{what}: exit {rc}, expected 1: {err.strip()[-400:]}")
    check(names_fifo(err, fifo), f"{what}: the message does not name the FIFO {fifo}: {err.strip()[-400:]}")


def python_refused(what, code, fifo, lib, exc='cirrdata.CirrdataError'):
    """A Python snippet (the binding imported as cirrdata) must raise exc naming the FIFO within TIMEOUT_S."""
    env = dict(os.environ)
    env['CIRRDATA_LIB'] = os.path.abspath(lib)
    env['PYTHONPATH'] = harness.PYTHON_DIR
    prog = ('import sys, cirrdata, cirrdata.loader, cirrdata.model, cirrdata.safetensors_io\n'
            'try:\n' + ''.join('    %s\n' % line for line in code.splitlines()) +
            'except %s as e:\n    print("REFUSED", e)\n    sys.exit(3)\n' % exc)
    rc, out, err = run([sys.executable, '-c', prog], env)
    if not check(rc is not None, f"{what}: still waiting on the FIFO after {TIMEOUT_S} s (killed)"):
        return
    check(rc == 3, f"{what}: expected {exc}, exit {rc}: {out.strip()[-300:]} {err.strip()[-400:]}")
    check(names_fifo(out, fifo), f"{what}: the error does not name the FIFO {fifo}: {out.strip()[-400:]}")


def skipped_reasons(ds):
    with open(os.path.join(ds, 'manifest.json')) as f:
        return [s.get('reason', '') for s in json.load(f)['source']['skipped']]


def record_count(ds):
    with open(os.path.join(ds, 'manifest.json')) as f:
        return len(json.load(f)['records'])


def main():
    args = harness.parser().parse_args()
    harness.load_binding(args.lib)  # re-executes under ASan where the library needs it
    cli = args.cirrdata
    work = tempfile.mkdtemp(prefix='cirrdata-fifo-', dir=args.workdir)
    try:
        src, recipe = harness.tiny_source(work, ncases=3)
        conv = [cli, 'convert', '--layout', 'nnunet', '--quiet', '--threads', '2']
        ds = os.path.join(work, 'ds')
        rc, _, err = run(conv + [src, '--recipe', recipe, '--out', ds])
        check(rc == 0, f"convert of the intact source: {rc} {err.strip()}")
        image = os.path.join(src, 'imagesTr', 'case00_0000.nii.gz')
        fifo = make_fifo(os.path.join(work, 'pipe.nii.gz'))
        out = os.path.join(work, 'out')
        os.makedirs(out)

        # ---- single files named on the command line
        refused('info', [cli, 'info', fifo], fifo)
        refused('info --json', [cli, 'info', fifo, '--json'], fifo)
        refused('export', [cli, 'export', fifo, '-o', os.path.join(out, 'x.npy')], fifo)
        refused('resample input', [cli, 'resample', fifo, '-o', os.path.join(out, 'r.nii'), '--spacing', '2'], fifo)
        refused('resample --like', [cli, 'resample', image, '-o', os.path.join(out, 'r.nii'), '--like', fifo], fifo)
        hdr = make_fifo(os.path.join(work, 'pair.hdr'))
        refused('info of a .hdr FIFO', [cli, 'info', hdr], hdr)
        rfifo = make_fifo(os.path.join(work, 'recipe.json'))
        refused('convert --recipe', conv + [src, '--recipe', rfifo, '--out', os.path.join(work, 'o1')], rfifo)
        afifo = make_fifo(os.path.join(work, 'pipeline.json'))
        refused('convert --augment', conv + [src, '--recipe', recipe, '--augment', afifo, '--out', os.path.join(work, 'o2')], afifo)
        mfifo = make_fifo(os.path.join(work, 'model.safetensors'))
        refused('stage --model', [cli, 'stage', image, '--model', mfifo, '--device', 'cpu'], mfifo)
        python_refused('cirrdata.Model', 'cirrdata.model.Model(%r)' % mfifo, mfifo, args.lib)
        python_refused('safetensors_io.read', 'cirrdata.safetensors_io.read(%r)' % mfifo, mfifo, args.lib,
                       exc='ValueError')

        # ---- files inside an nnU-Net layout
        for kind, rel in (('image', os.path.join('imagesTr', 'case01_0000.nii.gz')),
                          ('mask', os.path.join('labelsTr', 'case01.nii.gz'))):
            s2 = os.path.join(work, 'src-' + kind)
            shutil.copytree(src, s2)
            f = make_fifo(os.path.join(s2, rel))
            d = os.path.join(work, 'ds-' + kind)
            rc, _, err = run(conv + [s2, '--recipe', recipe, '--out', d])
            if check(rc is not None, f"layout {kind} FIFO: convert still waiting after {TIMEOUT_S} s"):
                check(rc == 0, f"layout {kind} FIFO: convert exit {rc}: {err.strip()[-400:]}")
                if rc == 0:
                    reasons = skipped_reasons(d)
                    check(len(reasons) == 1 and names_fifo(reasons[0], f),
                          f"layout {kind} FIFO: source.skipped {reasons}")
                    check(record_count(d) == 2, f"layout {kind} FIFO: {record_count(d)} records, expected the other 2")
            refused(f'layout {kind} FIFO --strict', conv + [s2, '--recipe', recipe, '--strict', '--out', d + '-strict'], f)
        s3 = os.path.join(work, 'src-djson')
        shutil.copytree(src, s3)
        f = make_fifo(os.path.join(s3, 'dataset.json'))
        refused('nnU-Net dataset.json', conv + [s3, '--recipe', recipe, '--out', os.path.join(work, 'o3')], f)

        # ---- a metadata CSV of a CirrMRI600+ layout
        syn = os.path.join(work, 'synth')
        rc, _, err = run([cli, 'synth', '--layout', 'cirrmri600', syn, '--cases', '2', '--no-healthy', '--quiet'])
        check(rc == 0, f"synth: {rc} {err.strip()}")
        csv = os.path.join(syn, 'Metadata', 'T1_age_gender_evaluation.csv')  # T1's labels (convert reads it first)
        if check(os.path.isfile(csv), f"synth wrote no {csv}"):
            f = make_fifo(csv)
            refused('CirrMRI600+ metadata CSV', [cli, 'convert', '--layout', 'cirrmri600', syn, '--quiet', '--out',
                                                 os.path.join(work, 'o4')], f)

        # ---- a converted dataset's manifest.json and shard
        dm = os.path.join(work, 'ds-manifest')
        shutil.copytree(ds, dm)
        f = make_fifo(os.path.join(dm, 'manifest.json'))
        refused('verify, manifest.json', [cli, 'verify', dm, '--quiet'], f)
        refused('inspect, manifest.json', [cli, 'inspect', dm], f)
        refused('export-batch, manifest.json', [cli, 'export-batch', dm, '--out', os.path.join(work, 'eb1'), '--quiet'], f)
        refused('preview, manifest.json', [cli, 'preview', dm, '--sample', '0', '-o', os.path.join(out, 'p1.png')], f)
        python_refused('Dataset, manifest.json', 'cirrdata.Dataset(%r)' % dm, f, args.lib)
        python_refused('Loader, manifest.json',
                       'list(cirrdata.loader.Loader(%r, batch_size=1, mode="volume", patch=None, split="*"))' % dm,
                       f, args.lib)
        dsh = os.path.join(work, 'ds-shard')
        shutil.copytree(ds, dsh)
        shards = sorted(glob.glob(os.path.join(dsh, 'shards', '*')))
        f = make_fifo(shards[0])
        refused('verify, shard', [cli, 'verify', dsh, '--quiet'], f)
        refused('export-batch, shard', [cli, 'export-batch', dsh, '--out', os.path.join(work, 'eb2'), '--quiet'], f)
        refused('preview, shard', [cli, 'preview', dsh, '--sample', '0', '-o', os.path.join(out, 'p2.png')], f)
        python_refused('Dataset, shard', 'd = cirrdata.Dataset(%r)\n[d[i] for i in range(len(d))]' % dsh, f, args.lib)
        python_refused('Loader, shard',
                       'list(cirrdata.loader.Loader(%r, batch_size=1, mode="volume", patch=None, split="*"))' % dsh,
                       f, args.lib)

        # ---- merge: a part's manifest or shard
        parts = []
        for i in (1, 2):
            p = os.path.join(work, f'part{i}')
            rc, _, err = run(conv + [src, '--recipe', recipe, '--part', f'{i}/2', '--out', p])
            check(rc == 0, f"convert --part {i}/2: {rc} {err.strip()}")
            parts.append(p)
        for what, rel in (('manifest', 'manifest.json'), ('shard', None)):
            pp = [os.path.join(work, f'merge-{what}-part{i}') for i in (1, 2)]
            for a, b in zip(parts, pp):
                shutil.copytree(a, b)
            target = os.path.join(pp[1], rel) if rel else sorted(glob.glob(os.path.join(pp[1], 'shards', '*')))[0]
            f = make_fifo(target)
            refused(f'merge, a part\'s {what}', [cli, 'merge', os.path.join(work, f'merged-{what}')] + pp, f)

        # ---- FIFOs in convert's own output directory: no dataset and no journal, and nothing convert
        # can vouch for: refused at once, naming them, and left in place
        for name in ('manifest.json', '.convert-journal.jsonl'):
            d = os.path.join(work, 'out-' + name.strip('.'))
            os.makedirs(d)
            p = make_fifo(os.path.join(d, name))
            rc, _, err = run(conv + [src, '--recipe', recipe, '--out', d])
            if check(rc is not None, f"convert with a FIFO as {name} in --out: still waiting after {TIMEOUT_S} s"):
                check(rc == 1 and p in err and 'not a regular file (a FIFO)' in err,
                      f"convert with a FIFO as {name} in --out: must be refused naming it: exit {rc}: {err.strip()[-400:]}")
                check(stat.S_ISFIFO(os.lstat(p).st_mode), f"convert removed the FIFO at {name}")

        # ---- the Vulkan pipeline cache
        rc, dev_out, _ = run([cli, 'devices'])
        if rc == 0 and 'no vulkan' not in dev_out.lower() and 'none' not in dev_out.lower():
            env = dict(os.environ)
            env['XDG_CACHE_HOME'] = os.path.join(work, 'cache')
            gconv = conv + [src, '--recipe', 'nnunet-3d', '--device', 'vulkan']
            rc, _, err = run(gconv + ['--out', os.path.join(work, 'g1')], env)
            caches = glob.glob(os.path.join(work, 'cache', '**', 'vk-pipelines-*.bin'), recursive=True)
            if rc == 0 and caches:
                make_fifo(caches[0])
                rc, _, err = run(gconv + ['--out', os.path.join(work, 'g2')], env)
                check(rc is not None, f"convert --device vulkan with a FIFO as the pipeline cache: still waiting after {TIMEOUT_S} s")
                check(rc in (None, 0), f"convert --device vulkan with a FIFO as the pipeline cache: exit {rc}: {err.strip()[-400:]}")
            else:
                print(f"note: no pipeline cache written (convert --device vulkan: {rc}); cache FIFO not checked")
        else:
            print('note: no Vulkan device; the pipeline cache FIFO is not checked')
    except Exception as e:  # a failure, not a run without a summary line
        harness.CHECKS.crashed(e)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return harness.summary('fifo')


if __name__ == '__main__':
    sys.exit(main())
