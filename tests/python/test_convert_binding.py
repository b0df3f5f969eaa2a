#!/usr/bin/env python3
"""cirrdata.convert and cirrdata.merge (python/cirrdata/convert.py) against the CLI on the same source.

- convert in-process gives the same bytes as `cirrdata convert` (every file of the folder), with a recipe
  given as a preset path or a dict; the summary's numbers are the CLI's --json ones; progress is called
  once per case, done rising to total, bytes ending at bytes_read.
- parts and merge in-process give the same bytes as `cirrdata convert --part` and `cirrdata merge`;
  merge's progress counts every shard; its summary counts records, shards and their bytes.
- Failures raise CirrdataError with the library's message: a missing source, an unknown recipe, a part
  outside 1..N, an unknown option (TypeError), a merge missing a part, an output folder another live
  process holds (named); a lock file left by a dead process does not block.
- An exception in the progress callable is raised when the call returns; the dataset is complete.
- Importing cirrdata does not import dask.

  /usr/bin/python3 tests/python/test_convert_binding.py --cirrdata build/tools/cirrdata --lib build/libcirrdata/libcirrdata.so
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def raises(fn, exc, *needles):
    try:
        fn()
    except exc as e:
        return all(n in str(e) for n in needles), str(e)
    except Exception as e:  # the wrong kind
        return False, 'raised %r' % e
    return False, 'did not raise'


def main():
    args = harness.parser().parse_args()
    cirrdata = harness.load_binding(args.lib)
    cli = args.cirrdata
    work = tempfile.mkdtemp(prefix='cirrdata-convbind-', dir=args.workdir)
    try:
        check('dask' not in sys.modules, 'importing cirrdata imports dask')
        src, recipe = harness.tiny_source(work, ncases=6)
        conv = [cli, 'convert', '--layout', 'nnunet', '--recipe', recipe, '--shard-size', '8K', '--quiet']

        # The whole conversion: CLI against the binding (recipe by path, then as a dict).
        r = harness.run(conv + [src, '--out', os.path.join(work, 'cli'), '--json', '--threads', '2'])
        check(r.returncode == 0, 'cli convert: %s' % r.stderr.strip())
        want = json.loads(r.stdout)
        ref = harness.tree_hashes(os.path.join(work, 'cli'))
        calls = []
        s = cirrdata.convert(src, os.path.join(work, 'py'), layout='nnunet', recipe=recipe, shard_size='8K',
                             threads=2, progress=lambda *a: calls.append(a))
        check(harness.tree_hashes(os.path.join(work, 'py')) == ref, 'binding convert differs from the CLI\'s bytes')
        for k in ('records', 'skipped', 'shards', 'bytes_read', 'bytes_written', 'resumed_records', 'recipe', 'device'):
            check(s[k] == want[k], 'summary %s: binding %r, CLI %r' % (k, s[k], want[k]))
        check(s['records'] == 6 and s['counts']['records'] == 6 and s['part'] is None, 'summary: %s' % s)
        check(s['shards'] > 1, 'several shards with 8K: %s' % s['shards'])
        check([c[0] for c in calls] == list(range(1, 7)) and all(c[1] == 6 for c in calls),
              'progress once per case, done 1..6 of 6: %s' % calls)
        check(calls and calls[-1][2] == s['bytes_read'] and all(a[2] <= b[2] for a, b in zip(calls, calls[1:])),
              'progress bytes rise to bytes_read %d: %s' % (s['bytes_read'], calls))
        s2 = cirrdata.convert(src, os.path.join(work, 'py-dict'), layout='nnunet', recipe=harness.TINY_RECIPE,
                              shard_size=8192, threads=1)
        check(harness.tree_hashes(os.path.join(work, 'py-dict')) == ref and s2['recipe'] == 'tiny-raw',
              'a recipe dict gives the same bytes')
        # Called again: finished, left as it is.
        s3 = cirrdata.convert(src, os.path.join(work, 'py'), layout='nnunet', recipe=recipe, shard_size='8K')
        check(harness.tree_hashes(os.path.join(work, 'py')) == ref and s3['records'] == 6, 'a finished dataset is kept')

        # Parts and merge: CLI against the binding.
        cli_parts = []
        for i in (1, 2, 3):
            cli_parts.append(os.path.join(work, 'cli-p%d' % i))
            r = harness.run(conv + [src, '--out', cli_parts[-1], '--part', '%d/3' % i])
            check(r.returncode == 0, 'cli part %d: %s' % (i, r.stderr.strip()))
        r = harness.run([cli, 'merge', os.path.join(work, 'cli-merged')] + cli_parts)
        check(r.returncode == 0, 'cli merge: %s' % r.stderr.strip())
        py_parts = [os.path.join(work, 'py-p%d' % i) for i in (1, 2, 3)]
        for i, p in enumerate(py_parts, 1):
            s = cirrdata.convert(src, p, layout='nnunet', recipe=recipe, shard_size='8K', part=(i, 3))
            check(s['part'] == [i, 3] and s['records'] == 2, 'part %d summary: %s' % (i, s))
            check(harness.tree_hashes(p) == harness.tree_hashes(cli_parts[i - 1]), 'part %d differs from the CLI\'s' % i)
        mcalls = []
        m = cirrdata.merge(py_parts[::-1], os.path.join(work, 'py-merged'), progress=lambda *a: mcalls.append(a))
        check(harness.tree_hashes(os.path.join(work, 'py-merged')) == harness.tree_hashes(os.path.join(work, 'cli-merged')),
              'binding merge differs from the CLI\'s bytes')
        nshards = len(os.listdir(os.path.join(work, 'py-merged', 'shards')))
        size = sum(os.path.getsize(os.path.join(work, 'py-merged', 'shards', n))
                   for n in os.listdir(os.path.join(work, 'py-merged', 'shards')))
        check(m['records'] == 6 and m['parts'] == 3 and m['shards'] == nshards and m['bytes'] == size,
              'merge summary: %s (shards %d, bytes %d)' % (m, nshards, size))
        check([c[0] for c in mcalls] == list(range(1, nshards + 1)) and all(c[1] == nshards for c in mcalls)
              and mcalls[-1][2] == size, 'merge progress per shard: %s' % mcalls)

        # Failures: the library's message.
        E = cirrdata.CirrdataError
        for what, fn, exc, needles in (
                ('missing source', lambda: cirrdata.convert(os.path.join(work, 'nope'), os.path.join(work, 'o1'),
                                                            layout='nnunet'), E, [os.path.join(work, 'nope')]),
                ('unknown recipe', lambda: cirrdata.convert(src, os.path.join(work, 'o2'), layout='nnunet',
                                                            recipe='no-such-recipe'), E, ['no-such-recipe', 'nnunet-3d']),
                ('bad recipe dict', lambda: cirrdata.convert(src, os.path.join(work, 'o2'), layout='nnunet',
                                                             recipe=dict(harness.TINY_RECIPE, zstd_level='x')), E,
                 ['zstd_level']),
                ('part 4/3', lambda: cirrdata.convert(src, os.path.join(work, 'o3'), layout='nnunet', part=(4, 3)), E,
                 ['part', '1..3']),
                ('unknown option', lambda: cirrdata.convert(src, os.path.join(work, 'o4'), layout='nnunet', colour=1),
                 TypeError, ['colour']),
                ('bad shard size', lambda: cirrdata.convert(src, os.path.join(work, 'o4'), layout='nnunet',
                                                            shard_size='12X'), E, ['shard_size', '12X']),
                ('copies without augment', lambda: cirrdata.convert(src, os.path.join(work, 'o4'), layout='nnunet',
                                                                    copies=2), E, ['copies needs augment']),
                ('merge missing a part', lambda: cirrdata.merge(py_parts[:2], os.path.join(work, 'o5')), E,
                 ['part 3/3 is missing']),
                ('merge into a finished dataset', lambda: cirrdata.merge(py_parts, os.path.join(work, 'py-merged')), E,
                 ['manifest.json', 'already exists'])):
            ok, text = raises(fn, exc, *needles)
            check(ok, '%s: %s naming %s: %s' % (what, exc.__name__, needles, text))
        check(not os.path.exists(os.path.join(work, 'o5', 'manifest.json')), 'a refused merge wrote no manifest')

        # The folder lock: a live holder is refused (named); a dead one's lock file does not block.
        held = os.path.join(work, 'held')
        os.makedirs(held)
        holder = subprocess.Popen([sys.executable, '-c', 'import fcntl, sys, time\n'
                                   'f = open(sys.argv[1], "w"); fcntl.flock(f, fcntl.LOCK_EX)\n'
                                   'f.write("pid 4242 on host elsewhere: cirrdata convert\\n"); f.flush()\n'
                                   'print("locked", flush=True); time.sleep(60)',
                                   os.path.join(held, '.cirrdata.lock')], stdout=subprocess.PIPE, text=True)
        try:
            check(holder.stdout.readline().strip() == 'locked', 'the holder took the lock')
            ok, text = raises(lambda: cirrdata.convert(src, held, layout='nnunet', recipe=recipe), E,
                              held, 'another cirrdata process', 'pid 4242 on host elsewhere')
            check(ok, 'a live lock is refused, naming its holder: %s' % text)
        finally:
            holder.kill()
            holder.wait()
        s = cirrdata.convert(src, held, layout='nnunet', recipe=recipe, shard_size='8K')
        check(s['records'] == 6 and harness.tree_hashes(held) == ref,
              'after the holder died its lock file does not block, and the result is the reference')

        # A progress callable that raises: the error comes back after a complete conversion.
        def boom(done, total, nbytes):
            if done == 2:
                raise KeyError('stop at 2')
        ok, text = raises(lambda: cirrdata.convert(src, os.path.join(work, 'boom'), layout='nnunet', recipe=recipe,
                                                   shard_size='8K', progress=boom), KeyError, 'stop at 2')
        check(ok, 'the progress exception is raised: %s' % text)
        check(harness.tree_hashes(os.path.join(work, 'boom')) == ref, 'the conversion went on to the end')
        check('dask' not in sys.modules, 'convert and merge import dask')
    except Exception as e:  # one failure with the traceback, not a run without summary
        harness.CHECKS.crashed(e)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return harness.summary('convert binding')


if __name__ == '__main__':
    sys.exit(main())
