#!/usr/bin/python3
"""The PyTorch peer of the model benchmark (benchmarks/run_model.sh): the same model file, batch and
input size through PyTorch eval() on the CPU.

    /usr/bin/python3 benchmarks/model_peer.py MODEL.safetensors --arch ARCH [--batch 8] [--size 256]
        [--threads 2] [--iters 5] [--warmup 1]

The weights of the file (tools/scripts/export_weights.py) are loaded into cirrdata.models.build(arch), the
module python/cirrdata/models.py builds (torchvision's definition); torch.set_num_threads(threads),
torch.no_grad(). Input: uniform in [-2, 2), batch x 3 x size x size float32. `--warmup` untimed
calls, then `--iters` calls, each timed with time.perf_counter (the clock bench_model's
CLOCK_MONOTONIC is on Linux); imports, model building and weight loading are not timed. Prints one
JSON object: every timed call, best, median, images/s = batch / median, and `blas`: the BLAS library
torch has loaded (nn.Linear and matmul run on it; Debian's torch links libblas.so.3, which is
whichever BLAS the system or LD_LIBRARY_PATH provides).
"""
import argparse
import json
import os
import sys
import time


def blas_loaded():
    """The file names of the BLAS libraries mapped into this process (read from /proc/self/maps)."""
    try:
        with open('/proc/self/maps') as f:
            names = {line.split()[-1] for line in f if 'blas' in line.lower() and '/' in line}
    except OSError:
        return 'unknown'
    return ', '.join(sorted(os.path.realpath(n) for n in names)) or 'none'


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('model')
    ap.add_argument('--arch', required=True)
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--size', type=int, default=256)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--iters', type=int, default=5)
    ap.add_argument('--warmup', type=int, default=1)
    a = ap.parse_args()
    import numpy as np
    import torch
    from cirrdata import models, safetensors_io  # no libcirrdata needed

    torch.set_num_threads(a.threads)
    tensors, meta = safetensors_io.read(a.model)
    net = models.build(a.arch, int(meta['cirrdata.classes']))
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in tensors.items()}, strict=False)
    net.eval()
    x = torch.from_numpy(np.random.default_rng(0).uniform(-2, 2, (a.batch, 3, a.size, a.size)).astype(np.float32))
    times = []
    with torch.no_grad():
        for _ in range(a.warmup):
            net(x)
        for _ in range(a.iters):
            t0 = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    print(json.dumps({'tool': 'torch', 'model': a.arch, 'device': 'torch %s CPU' % torch.__version__,
                      'threads': torch.get_num_threads(), 'batch': a.batch, 'size': [a.size, a.size],
                      'warmup': a.warmup, 'times_s': [round(t, 6) for t in times], 'best_s': min(times),
                      'median_s': med, 'images_per_s': a.batch / med, 'blas': blas_loaded()}))


if __name__ == '__main__':
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(os.path.dirname(here), 'python'))
    main()
