#!/usr/bin/env python3
"""cirrdata.distributed.convert on a real Dask cluster (LocalCluster: 2 worker processes, 1 thread each)
with the real library, against the CLI on one machine.

A synthetic CirrMRI600+ tree (`cirrdata synth`) is converted in 4 parts:
  1. normally: every file of the output (manifest and shards) has the bytes of `cirrdata convert --part
     I/4` x 4 plus `cirrdata merge` run here; with one record per shard (4K shards) every shard also has
     the bytes of a plain whole `cirrdata convert`'s, in the same order. The part folders are gone; the
     logger says 'part I/4 done' for each part with records and MB/s, and per-case progress arrived as
     Dask events.
  2. with the worker process converting part 2 killed (SIGKILL) once its part folder shows the part at
     work (the folder lock names the worker's pid; the resume journal lists a finished shard): the part
     is submitted again (the cluster runs with allowed-failures 0, so every death reaches the retry
     loop), resumes the dead worker's half-written folder (resumed_records > 0; the stale lock does not
     block) and the output is again byte-identical to the CLI's.
  3. the same kill with retries=0: PartLost naming the part; no dataset is written; the part folders
     are kept.
  4. a part that fails for a data reason (a truncated NIfTI file, strict): CirrdataError 'part I/4: ...'
     with the library's message naming the file, no resubmission, no dataset.
  5. a part folder whose lock a live process holds: CirrdataError 'part 1/4: ...' naming the holder, no
     resubmission.
The cluster is closed on every exit path (SIGTERM included). Normal build only (tests/meson.build).

  /usr/bin/python3 tests/python/test_distributed.py --cirrdata build/tools/cirrdata --lib build/libcirrdata/libcirrdata.so
"""
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

PARTS = 4
OPTS = dict(layout='cirrmri600', shard_size='4K')


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def shard_hashes(d):
    """Hashes of d's shard files in name order."""
    h = harness.tree_hashes(os.path.join(d, 'shards'))
    return [h[k] for k in sorted(h)]


class Killer(threading.Thread):
    """Kills (SIGKILL) the worker process converting a part once its folder shows it at work: the folder
    lock names the process (pid), and the resume journal lists at least one finished shard."""

    def __init__(self, part_dir, worker_pids):
        super().__init__(daemon=True)
        self.part_dir, self.worker_pids = part_dir, worker_pids
        self.killed, self.stop, self.note = None, False, 'never saw the part at work'

    def run(self):
        lock = os.path.join(self.part_dir, '.cirrdata.lock')
        journal = os.path.join(self.part_dir, '.convert-journal.jsonl')
        deadline = time.monotonic() + 60
        while not self.stop and time.monotonic() < deadline:
            try:
                with open(journal, 'rb') as f:
                    shards = f.read().count(b'\n') - 1  # after the header line
                with open(lock) as f:
                    m = re.match(r'pid (\d+) ', f.read())
            except OSError:
                m, shards = None, 0
            if m and shards >= 1:
                pid = int(m.group(1))
                if pid not in self.worker_pids:  # never a process that is not one of the cluster's workers
                    self.note = 'the lock names pid %d, not a worker (%s)' % (pid, self.worker_pids)
                    return
                os.kill(pid, signal.SIGKILL)
                self.killed = pid
                return
            time.sleep(0.003)


def source_with_bad_case(src, dst):
    """A copy of src (hard links) with one T1 image truncated (replaced, never written through a link)."""
    victim = None
    for root, _, files in os.walk(src):
        for n in sorted(files):
            rel = os.path.relpath(os.path.join(root, n), src)
            os.makedirs(os.path.join(dst, os.path.dirname(rel)), exist_ok=True)
            os.link(os.path.join(src, rel), os.path.join(dst, rel))
            if victim is None and n.endswith('.nii.gz') and 'T1' in rel and 'train_images' in rel:
                victim = rel
    path = os.path.join(dst, victim)
    with open(path, 'rb') as f:
        data = f.read()
    os.unlink(path)
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 3])
    return path


def run_tests(cirrdata, cli, work, client, worker_pids):
    import cirrdata.distributed as cdd
    log = Lines()
    logging.getLogger('cirrdata.distributed').addHandler(log)
    logging.getLogger('cirrdata.distributed').setLevel(logging.INFO)
    src = os.path.join(work, 'src')
    r = harness.run([cli, 'synth', '--layout', 'cirrmri600', src, '--cases', '8', '--seed', '5', '--quiet'])
    check(r.returncode == 0, 'synth: %s' % r.stderr.strip())
    conv = [cli, 'convert', '--layout', 'cirrmri600', src, '--shard-size', '4K', '--threads', '1', '--quiet']
    parts = [os.path.join(work, 'cli-p%d' % i) for i in range(1, PARTS + 1)]
    for i, p in enumerate(parts, 1):
        r = harness.run(conv + ['--out', p, '--part', '%d/%d' % (i, PARTS)])
        check(r.returncode == 0, 'cli part %d: %s' % (i, r.stderr.strip()))
    ref_dir = os.path.join(work, 'cli-merged')
    r = harness.run([cli, 'merge', ref_dir] + parts)
    check(r.returncode == 0, 'cli merge: %s' % r.stderr.strip())
    r = harness.run(conv + ['--out', os.path.join(work, 'cli-whole')])
    check(r.returncode == 0, 'cli whole convert: %s' % r.stderr.strip())
    ref, whole = harness.tree_hashes(ref_dir), shard_hashes(os.path.join(work, 'cli-whole'))
    check(len(whole) >= 12 and shard_hashes(ref_dir) == whole, 'one record per shard: the parts\' shards are the '
          'whole conversion\'s (%d shards)' % len(whole))

    # 1. Normally.
    out = os.path.join(work, 'dask1')
    s = cdd.convert(client, src, out, parts=PARTS, retries=1, progress_interval=0, **OPTS)
    check(harness.tree_hashes(out) == ref, 'dask: every file equals the CLI\'s parts + merge')
    check(shard_hashes(out) == whole, 'dask: the shards equal a whole one-machine convert\'s')
    check(s['records'] == len(whole) and s['parts'] == PARTS and s['shards'] == len(whole) and s['retried'] == {},
          'summary: %s' % {k: v for k, v in s.items() if k != 'part_summaries'})
    check([p['part'] for p in s['part_summaries']] == [[i, PARTS] for i in range(1, PARTS + 1)],
          'part summaries in order')
    check({p['pid'] for p in s['part_summaries']} <= set(worker_pids) and os.getpid() not in
          {p['pid'] for p in s['part_summaries']}, 'every part ran in a worker process, none here')
    check(not os.path.exists(out + '.parts'), 'the part folders are removed after the merge')
    for i in range(1, PARTS + 1):
        check(any(re.match(r'part %d/%d done on tcp://\S+ \(pid \d+\): \d+ records, 0 skipped, [\d.]+ MB in [\d.]+ s '
                           r'\([\d.]+ MB/s\)' % (i, PARTS), line) for line in log.lines),
              'a log line says part %d/%d is done, with MB/s: %s' % (i, PARTS, log.lines))
    check(any(re.match(r'part \d/4: \d+/\d+ cases, [\d.]+ MB read', line) for line in log.lines),
          'per-case progress arrived as Dask events: %s' % log.lines)
    err = None
    try:
        cdd.convert(client, src, out, parts=PARTS, **OPTS)
    except cirrdata.CirrdataError as e:
        err = str(e)
    check(err and 'already exists' in err and not os.path.exists(out + '.parts'),
          'into a finished dataset: refused before any part runs: %s' % err)

    # 2. The worker converting part 2 killed mid-part: resubmitted, resumed, the same bytes.
    out = os.path.join(work, 'dask2')
    killer = Killer(os.path.join(out + '.parts', 'part-002-of-004'), worker_pids)
    killer.start()
    del log.lines[:]
    try:
        s = cdd.convert(client, src, out, parts=PARTS, retries=1, threads_per_part=1, **OPTS)
    finally:
        killer.stop = True
        killer.join()
    check(killer.killed is not None, 'the worker running part 2 was killed: %s' % killer.note)
    if killer.killed is not None:
        worker_pids[:] = wait_workers(client, 2)
        check(killer.killed not in worker_pids, 'the killed worker is gone (%d)' % killer.killed)
        p2 = s['part_summaries'][1]
        check(s['retried'].get(2) == 1 and all(v == 1 for v in s['retried'].values()),
              'part 2 was submitted again once: %s' % s['retried'])
        check(p2['resumed_records'] >= 1 and p2['pid'] != killer.killed,
              'part 2 resumed the dead worker\'s folder elsewhere: %s' % p2)
        check(harness.tree_hashes(out) == ref, 'after the kill: every file equals the CLI\'s parts + merge')
        check(any('part 2/4: its worker died' in line and 'retry 1 of 1' in line for line in log.lines),
              'a warning says part 2 is submitted again: %s' % log.lines)

    # 3. The same kill with retries=0: PartLost, no dataset, the parts kept.
    out = os.path.join(work, 'dask3')
    killer = Killer(os.path.join(out + '.parts', 'part-002-of-004'), worker_pids)
    killer.start()
    err = None
    try:
        cdd.convert(client, src, out, parts=PARTS, retries=0, **OPTS)
    except cdd.PartLost as e:
        err = str(e)
    finally:
        killer.stop = True
        killer.join()
    check(killer.killed is not None, 'retries=0: the worker running part 2 was killed: %s' % killer.note)
    check(err is not None and re.search(r'part [1-4]/4: its worker died', err) and 'retries=0' in err
          and out + '.parts' in err, 'retries=0: PartLost naming the part: %s' % err)
    check(isinstance(cdd.PartLost('x'), cirrdata.CirrdataError), 'PartLost is a CirrdataError')
    check(not os.path.exists(os.path.join(out, 'manifest.json')), 'retries=0: no dataset written')
    check(os.path.isdir(os.path.join(out + '.parts', 'part-002-of-004')), 'retries=0: the part folders are kept')
    worker_pids[:] = wait_workers(client, 2)

    # 4. A data error: the whole call fails with the library's message, nothing resubmitted.
    bad_src = os.path.join(work, 'bad-src')
    victim = source_with_bad_case(src, bad_src)
    out = os.path.join(work, 'dask4')
    del log.lines[:]
    err = None
    try:
        cdd.convert(client, bad_src, out, parts=PARTS, retries=3, strict=True, **OPTS)
    except cirrdata.CirrdataError as e:
        err = e
    check(err is not None and not isinstance(err, cdd.PartLost) and re.match(r'part [1-4]/4: ', str(err))
          and os.path.basename(victim) in str(err), 'a data error: CirrdataError naming the part and the file: %r'
          % err)
    check(not any('submitting it again' in line for line in log.lines), 'a data error is not retried: %s' % log.lines)
    check(not os.path.exists(os.path.join(out, 'manifest.json')), 'a data error: no dataset written')

    # 5. A part folder that a live process holds: refused (named), not retried.
    out = os.path.join(work, 'dask5')
    held = os.path.join(out + '.parts', 'part-001-of-004')
    os.makedirs(held)
    holder = subprocess.Popen([sys.executable, '-c', 'import fcntl, sys, time\n'
                               'f = open(sys.argv[1], "w"); fcntl.flock(f, fcntl.LOCK_EX)\n'
                               'f.write("pid 4242 on host elsewhere: cirrdata convert\\n"); f.flush()\n'
                               'print("locked", flush=True); time.sleep(120)',
                               os.path.join(held, '.cirrdata.lock')], stdout=subprocess.PIPE, text=True)
    del log.lines[:]
    err = None
    try:
        check(holder.stdout.readline().strip() == 'locked', 'the holder took the lock')
        cdd.convert(client, src, out, parts=PARTS, retries=3, **OPTS)
    except cirrdata.CirrdataError as e:
        err = str(e)
    finally:
        holder.kill()
        holder.wait()
    check(err and err.startswith('part 1/4: ') and 'another cirrdata process' in err and 'pid 4242' in err,
          'a live lock: CirrdataError naming the part and the holder: %s' % err)
    check(not any('submitting it again' in line for line in log.lines), 'a live lock is not retried: %s' % log.lines)


def wait_workers(client, n, timeout=30):
    """The pids of the cluster's n workers, once n are up (a killed one is restarted by its nanny)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = client.run(os.getpid)
        if len(pids) >= n or time.monotonic() > deadline:
            return sorted(pids.values())
        time.sleep(0.1)


def main():
    args = harness.parser().parse_args()
    try:
        import dask
        from dask.distributed import Client, LocalCluster
    except ImportError as e:
        print('skipped: dask.distributed is not installed (%s): apt-get install python3-dask python3-distributed' % e)
        return 77
    cirrdata = harness.load_binding(args.lib)
    # meson's timeout sends SIGTERM: unwind through the finally below, which closes the cluster.
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    work = tempfile.mkdtemp(prefix='cirrdata-dask-', dir=args.workdir)
    cluster = client = None
    t0 = time.monotonic()
    try:
        # Every worker death reaches distributed.convert's own retries (the scheduler does not rerun first).
        with dask.config.set({'distributed.scheduler.allowed-failures': 0}):
            cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                   silence_logs=logging.CRITICAL, local_directory=os.path.join(work, 'dask'))
            client = Client(cluster)
            run_tests(cirrdata, args.cirrdata, work, client, wait_workers(client, 2))
    except Exception as e:
        harness.CHECKS.crashed(e)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        shutil.rmtree(work, ignore_errors=True)
    print('took %.1f s' % (time.monotonic() - t0))
    return harness.summary('distributed')


if __name__ == '__main__':
    sys.exit(main())
