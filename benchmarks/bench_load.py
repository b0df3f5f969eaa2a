#!/usr/bin/python3
"""cirrdata.load(p).array against np.asanyarray(nib.load(p).dataobj), in one process.

    /usr/bin/python3 benchmarks/bench_load.py [--lib LIBCIRRDATA.so] [--rounds 5] [--repeat 7]
        [--shape 512,512,72] [--level 1] [FILE ...]

Without FILEs, the int16 phantom of make_phantom.py (seed 600) is written once to benchmarks/.data/
(git-ignored) as .nii.gz at gzip level --level (default 1: what nibabel writes by default) and as .nii
(the same bytes, decompressed), and both are measured. The library: --lib, else $CIRRDATA_LIB, else the
binding's default (build/libcirrdata/libcirrdata.so).

Before timing, each file is loaded once by both and the arrays are compared (equal dtype and values, or
the benchmark stops). Then, per round, per file: --repeat timed calls of cirrdata, then --repeat of
nibabel (time.perf_counter; each result is dropped before the next call, so every call allocates and
fills its array afresh), the median of each, and the round's ratio = nibabel median / cirrdata median.
Printed: one line per round and file, then per file the median of the per-round ratios with their
min-max. For .nii nibabel memory-maps by default and np.asanyarray then reads nothing (a lazy
numpy.memmap), so the nibabel side loads with mmap=False, which reads the voxels like cirrdata does; the
lazy default is timed too, for information ('nibabel mmap').
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import nibabel as nib

HERE = os.path.dirname(os.path.abspath(__file__))


def phantom_files(shape, level):
    data = os.path.join(HERE, '.data')
    os.makedirs(data, exist_ok=True)
    tag = 'x'.join(str(s) for s in shape)
    gz = os.path.join(data, 'load_phantom_%s_level%d.nii.gz' % (tag, level))
    nii = gz[:-3]
    if not os.path.exists(gz):
        subprocess.run([sys.executable, os.path.join(HERE, 'make_phantom.py'), gz, '--shape',
                        ','.join(str(s) for s in shape), '--level', str(level)], check=True)
    if not os.path.exists(nii):
        import gzip
        with gzip.open(gz, 'rb') as f, open(nii + '.tmp', 'wb') as g:
            g.write(f.read())
        os.replace(nii + '.tmp', nii)
    return [gz, nii]


def timed(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        a = fn()
        times.append(time.perf_counter() - t0)
        del a
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('files', nargs='*')
    ap.add_argument('--lib')
    ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--repeat', type=int, default=7)
    ap.add_argument('--shape', default='512,512,72')
    ap.add_argument('--level', type=int, default=1)
    args = ap.parse_args(argv)
    if args.lib:
        os.environ['CIRRDATA_LIB'] = os.path.abspath(args.lib)
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'python'))
    import cirrdata

    files = args.files or phantom_files(tuple(int(s) for s in args.shape.split(',')), args.level)
    cands = {}
    for f in files:
        kw = {} if f.endswith('.gz') else {'mmap': False}
        c = {'cirrdata': lambda f=f: cirrdata.load(f).array,
             'nibabel': lambda f=f, kw=kw: np.asanyarray(nib.load(f, **kw).dataobj)}
        if not f.endswith('.gz'):
            c['nibabel mmap'] = lambda f=f: np.asanyarray(nib.load(f).dataobj)
        a, b = c['cirrdata'](), c['nibabel']()
        if a.dtype != b.dtype.newbyteorder('=') or not np.array_equal(a, b):
            print('%s: cirrdata and nibabel disagree (%s, %s)' % (f, a.dtype, b.dtype))
            return 1
        cands[f] = (c, a.nbytes)
        print('%s: %d bytes on disk, %s %s, %.2f MB of voxels' % (f, os.path.getsize(f), a.shape, a.dtype,
                                                                   a.nbytes / 1e6))
        del a, b
    print('library %s, nibabel %s, numpy %s; %d rounds x %d calls; load average %s' % (
        cirrdata.library_path(), nib.__version__, np.__version__, args.rounds, args.repeat,
        ' '.join('%.2f' % x for x in os.getloadavg())))
    ratios = {f: [] for f in files}
    for r in range(1, args.rounds + 1):
        for f in files:
            c, nbytes = cands[f]
            med = {name: timed(fn, args.repeat) for name, fn in c.items()}
            ratio = med['nibabel'] / med['cirrdata']
            ratios[f].append(ratio)
            print('round %d %s: %s; nibabel / cirrdata %.2fx' % (
                r, os.path.basename(f), ', '.join('%s %.1f ms (%.0f MB/s)' % (n, t * 1e3, nbytes / 1e6 / t)
                                                  for n, t in med.items()), ratio))
    for f in files:
        v = ratios[f]
        print('%s: cirrdata is %.2fx nibabel (median of %d rounds; %.2f-%.2f)' % (
            os.path.basename(f), statistics.median(v), len(v), min(v), max(v)))
    print('load average after: %s' % ' '.join('%.2f' % x for x in os.getloadavg()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
