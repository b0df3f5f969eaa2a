#!/usr/bin/python3
"""The PyTorch peer of the depthwise benchmark (benchmarks/run_dwconv.sh): the same layer through
torch.nn.functional.conv2d with groups = channels on the CPU.

    /usr/bin/python3 benchmarks/dwconv_peer.py --layer C,H,W,K,S,R [--batch 8] [--threads 2]
        [--iters 5] [--warmup 1]

The layer is bench_dwconv's: C channels in and out, K x K kernel, stride S, padding K // 2, a bias,
then torch.relu_ (in place) when R is 1 (our executors fuse it into the convolution).
torch.set_num_threads(threads), torch.no_grad(); input uniform in [-2, 2). `--warmup` untimed calls,
then `--iters` calls, each timed with time.perf_counter (CLOCK_MONOTONIC on Linux, as bench_dwconv).
Prints one JSON object: every timed call, best, median.
"""
import argparse
import json
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--layer', required=True)
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--iters', type=int, default=5)
    ap.add_argument('--warmup', type=int, default=1)
    a = ap.parse_args()
    import numpy as np
    import torch
    import torch.nn.functional as F

    c, h, w, k, s, r = (int(v) for v in a.layer.split(','))
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(-2, 2, (a.batch, c, h, w)).astype(np.float32))
    wt = torch.from_numpy(rng.uniform(-1 / k, 1 / k, (c, 1, k, k)).astype(np.float32))
    b = torch.from_numpy(rng.uniform(-0.1, 0.1, c).astype(np.float32))

    def layer():
        y = F.conv2d(x, wt, b, stride=s, padding=k // 2, groups=c)
        return torch.relu_(y) if r else y

    times = []
    with torch.no_grad():
        for _ in range(a.warmup):
            layer()
        for _ in range(a.iters):
            t0 = time.perf_counter()
            layer()
            times.append(time.perf_counter() - t0)
    print(json.dumps({'tool': 'torch', 'device': 'torch %s CPU' % torch.__version__, 'path': 'torch',
                      'layer': a.layer, 'batch': a.batch, 'threads': torch.get_num_threads(), 'warmup': a.warmup,
                      'times_s': [round(t, 6) for t in times], 'best_s': min(times),
                      'median_s': float(np.median(times))}))


if __name__ == '__main__':
    main()
