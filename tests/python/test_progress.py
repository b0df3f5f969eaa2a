#!/usr/bin/env python3
"""Progress of long commands off a terminal (tools/cli_progress.h).

With stderr to a pipe, convert, merge, verify and export-batch print lines
"cirrdata CMD: DONE/TOTAL UNIT (P%), R MB/s, elapsed M:SS, left M:SS" (no bar, no carriage return);
CIRRDATA_PROGRESS_INTERVAL=0 gives one per update (done rising by one up to the total, which the last
line reaches, never the same line twice); a larger interval thins them out (no more than one per
interval); with the default (10 s, at most once a second) a run shorter than a second prints none;
--quiet (and convert --json) print none; a malformed interval is named and ignored. On a terminal
(a pty) the bar is drawn instead.

  /usr/bin/python3 tests/python/test_progress.py --cirrdata build/tools/cirrdata
"""
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

LINE = re.compile(r'^cirrdata (\S+): (\d+)/(\d+) (\w+) \((\d+)%\), (\d+\.\d) MB/s, elapsed (\d+:\d\d), '
                  r'left (\d+:\d\d|--:--)$')


def run(cmd, interval='0', **kw):
    env = dict(os.environ)
    env.pop('CIRRDATA_PROGRESS_INTERVAL', None)
    if interval is not None:
        env['CIRRDATA_PROGRESS_INTERVAL'] = interval
    t = time.monotonic()
    r = harness.run(cmd, env=env, **kw)
    return r, time.monotonic() - t


def lines_of(what, r, label, unit, total):
    """The progress lines of r's stderr, checked: format, label, unit, total, done rising to total."""
    check(r.returncode == 0, '%s: exit %d: %s' % (what, r.returncode, r.stderr[-400:]))
    check('\r' not in r.stderr and '\033' not in r.stderr, '%s: no bar off a terminal: %r' % (what, r.stderr[:200]))
    out = []
    for line in r.stderr.splitlines():
        m = LINE.match(line)
        check(m is not None, '%s: a progress line in the documented format: %r' % (what, line))
        if m:
            out.append(m)
    for m in out:
        check(m.group(1) == label and m.group(4) == unit and int(m.group(3)) == total,
              '%s: label %s, unit %s, total %d: %r' % (what, label, unit, total, m.group(0)))
        check(int(m.group(5)) == int(100 * int(m.group(2)) / total + 0.5), '%s: the percentage (half up): %r'
              % (what, m.group(0)))
    done = [int(m.group(2)) for m in out]
    check(done and done[-1] == total, '%s: the last line says %d/%d: %s' % (what, total, total, done))
    check(all(a < b for a, b in zip(done, done[1:])), '%s: done rises, no line twice: %s' % (what, done))
    if out:
        check(out[-1].group(8) == '0:00', '%s: nothing left at the end: %r' % (what, out[-1].group(0)))
    return done


def main():
    args = harness.parser(lib=None).parse_args()
    cli = args.cirrdata
    work = tempfile.mkdtemp(prefix='cirrdata-progress-', dir=args.workdir)
    try:
        src, recipe = harness.tiny_source(work, ncases=8)
        conv = [cli, 'convert', '--layout', 'nnunet', '--recipe', recipe, src, '--shard-size', '8K', '--threads', '2']
        r, _ = run(conv + ['--out', os.path.join(work, 'a')])
        done = lines_of('convert', r, 'convert', 'cases', 8)
        check(done == list(range(1, 9)), 'convert, interval 0: a line per case: %s' % done)
        r, _ = run(conv + ['--out', os.path.join(work, 'q'), '--quiet'])
        check(r.returncode == 0 and r.stderr == '', 'convert --quiet: nothing on stderr: %r' % r.stderr[:300])
        r, _ = run(conv + ['--out', os.path.join(work, 'j'), '--json'])
        check(r.returncode == 0 and r.stderr == '', 'convert --json: nothing on stderr: %r' % r.stderr[:300])

        parts = []
        for i in (1, 2):
            parts.append(os.path.join(work, 'p%d' % i))
            r, _ = run(conv + ['--out', parts[-1], '--part', '%d/2' % i, '--quiet'])
            check(r.returncode == 0, 'part %d: %s' % (i, r.stderr))
        nshards = sum(len(os.listdir(os.path.join(p, 'shards'))) for p in parts)
        r, _ = run([cli, 'merge', os.path.join(work, 'm'), parts[0], parts[1]])
        done = lines_of('merge', r, 'merge', 'shards', nshards)
        check(done == list(range(1, nshards + 1)), 'merge: a line per shard: %s' % done)
        r, _ = run([cli, 'merge', os.path.join(work, 'mq'), '--quiet', parts[0], parts[1]])
        check(r.returncode == 0 and r.stderr == '' and os.path.exists(os.path.join(work, 'mq', 'manifest.json')),
              'merge --quiet (anywhere): merged, nothing on stderr: %r' % r.stderr[:300])

        a_shards = len(os.listdir(os.path.join(work, 'a', 'shards')))
        r, _ = run([cli, 'verify', os.path.join(work, 'a')])
        lines_of('verify', r, 'verify', 'shards', a_shards)
        r, _ = run([cli, 'verify', os.path.join(work, 'a'), '--quiet'])
        check(r.returncode == 0 and r.stderr == '', 'verify --quiet: nothing on stderr: %r' % r.stderr[:300])

        r, _ = run([cli, 'export-batch', os.path.join(work, 'a'), '--split', '*', '--out', os.path.join(work, 'e')])
        lines_of('export-batch', r, 'export-batch', 'records', 8)
        r, _ = run([cli, 'export-batch', os.path.join(work, 'a'), '--split', '*', '--out', os.path.join(work, 'eq'),
                    '--quiet'])
        check(r.returncode == 0 and r.stderr == '', 'export-batch --quiet: nothing on stderr: %r' % r.stderr[:300])

        # The default interval: a run of well under a second prints nothing.
        r, wall = run([cli, 'verify', os.path.join(work, 'a')], interval=None)
        check(r.returncode == 0 and (r.stderr == '' or wall >= 1), 'verify, default interval, %.2f s: no line: %r'
              % (wall, r.stderr[:300]))
        # A larger interval thins the lines out: no more than one per interval (and a last one).
        many = os.path.join(work, 'many')
        harness.make_source(many, ncases=40)
        r, wall = run([cli, 'convert', '--layout', 'nnunet', '--recipe', recipe, many, '--out',
                       os.path.join(work, 'b'), '--threads', '1'], interval='0.05')
        n = len(r.stderr.splitlines())
        check(r.returncode == 0 and n <= wall / 0.05 + 2, 'interval 0.05 s: at most one line per interval: %d lines '
              'in %.2f s' % (n, wall))
        if n:
            lines_of('convert, interval 0.05', r, 'convert', 'cases', 40)
        # A malformed interval is named and ignored (the default applies).
        r, _ = run([cli, 'verify', os.path.join(work, 'a')], interval='10x')
        check(r.returncode == 0 and "ignoring CIRRDATA_PROGRESS_INTERVAL='10x'" in r.stderr,
              'a malformed interval is named: %r' % r.stderr[:300])

        # On a terminal: the bar, not lines.
        master, slave = pty.openpty()
        env = dict(os.environ, CIRRDATA_PROGRESS_INTERVAL='0')
        p = subprocess.Popen([cli, 'verify', os.path.join(work, 'a')], stdout=subprocess.DEVNULL, stderr=slave,
                             env=harness.child_env([cli], env) or env)
        os.close(slave)
        got = b''
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if p.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the pty's other end is gone
                break
            if not chunk:
                break
            got += chunk
        p.wait()
        os.close(master)
        text = got.decode('utf-8', 'replace')
        check(p.returncode == 0 and '\r' in text and 'verify [' in text and 'cirrdata verify:' not in text,
              'on a terminal: the bar: %r' % text[:300])
    except Exception as e:
        harness.CHECKS.crashed(e)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return harness.summary('progress')


if __name__ == '__main__':
    sys.exit(main())
