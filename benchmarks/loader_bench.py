#!/usr/bin/python3
"""Our side of the loader benchmark: cirrdata's Loader (python/cirrdata/loader.py over libcirrdata).

    /usr/bin/python3 benchmarks/loader_bench.py DATASET [--min-seconds 5] [--batches 20] [--warmup 20] [--threads 2]
        [--batch-size 2] [--patch 96,96,32] [--augment nnunet|none|...] [--seed 0] [--split train]
        [--io auto|uring|pread] [--cache-bytes N]   (N: decoded-chunk cache budget; 0 = no cache;
                                                     default: the library's, min(2 GiB, RAM / 8))
        [--preload]                         fill that cache before the first batch (Loader's preload;
                                            like the peer's in-memory volumes); the time until the
                                            first batch is reported as preload_seconds, not timed
        [--device cpu|vulkan|auto]          where augmentation runs (Loader's device); the JSON line
                                            then names the device and its counters (device calls,
                                            CPU fallbacks)
    ... --rss [--rss-at 1000,10000]     peak/current RSS (VmHWM / VmRSS of this process, from
                                        /proc/self/status) after those batch counts
    ... --dump-corners FILE             write 'record cx cy cz' of every timed sample (the bound's input)
    ... --views                         Loader(views=True): zero-copy views of the ring (the default hands
                                        out batches the caller owns: one copy out of the ring)
    ... --torch-workers W               the same batches through torch.utils.data.DataLoader(
                                        cirrdata.torch.BatchDataset(...), batch_size=None, num_workers=W,
                                        persistent_workers=True): W processes, each with its own C
                                        loader of --threads / W threads (at least 1), batches filled
                                        into shared memory (tool 'ours-torch')
    ... --torch-workers W --alternate N  the native Loader (--threads threads, owned batches) and that
                                        DataLoader both open in this process and timed in turn, N cycles
                                        of one window each (--min-seconds per window, the order swapped
                                        every cycle; after each switch --warmup batches are drained
                                        untimed: what the idle side made ahead while the other ran). The
                                        ratio is taken per cycle, windows seconds apart, so the slow swings
                                        of a shared machine (tens of seconds, up to a third of its speed)
                                        fall on both sides alike (tool 'ours-alternate')

Throughput: a loader is created (not timed), `--warmup` batches are consumed, then batches are
timed with time.perf_counter until at least `--min-seconds` have passed and at least `--batches`
batches were consumed (the window ends at a batch boundary; a short window is at the mercy of the
scheduler on a shared machine), and the process's CPU time, all threads, with time.process_time
(cpu_ms_per_sample); each batch's image is touched (one float read per sample) as a training step
would read it. Epochs roll over as a training loop would (a new `for b in loader`
after each epoch's end). Prints one JSON line.
"""
import argparse
import json
import os
import sys
import time


def proc_status():
    out = {}
    with open('/proc/self/status') as f:
        for line in f:
            k, _, v = line.partition(':')
            if k in ('VmHWM', 'VmRSS'):
                out[k] = int(v.split()[0])  # kB
    return out


def batches(loader):
    """Endless batches, epoch after epoch."""
    while True:
        for b in loader:
            yield b


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('dataset')
    ap.add_argument('--batches', type=int, default=20, help='at least this many timed batches')
    ap.add_argument('--min-seconds', type=float, default=5.0, help='the timed window lasts at least this long')
    ap.add_argument('--warmup', type=int, default=20)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--batch-size', type=int, default=2)
    ap.add_argument('--patch', default='96,96,32')
    ap.add_argument('--augment', default='nnunet')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--split', default='train')
    ap.add_argument('--io', default='auto')
    ap.add_argument('--cache-bytes', type=int, default=None)
    ap.add_argument('--device', default='cpu', choices=('cpu', 'vulkan', 'auto'))
    ap.add_argument('--preload', action='store_true')
    ap.add_argument('--rss', action='store_true')
    ap.add_argument('--rss-at', default='1000,10000')
    ap.add_argument('--dump-corners')
    ap.add_argument('--torch-workers', type=int, default=0)
    ap.add_argument('--alternate', type=int, default=0, help='cycles of native and DataLoader windows in turn '
                    '(with --torch-workers)')
    ap.add_argument('--views', action='store_true', help="zero-copy ring views (Loader(views=True)) instead of "
                    "owned batches")
    a = ap.parse_args()
    from cirrdata.loader import Loader
    patch = tuple(int(v) for v in a.patch.split(','))
    if a.torch_workers and a.alternate:
        return alternate_main(a, patch)
    if a.torch_workers:
        return torch_main(a, patch)
    loader = Loader(a.dataset, batch_size=a.batch_size, mode='patch', patch=patch, augment=a.augment, seed=a.seed,
                    split=a.split, threads=a.threads, io=a.io, cache_bytes=a.cache_bytes, device=a.device,
                    preload=a.preload, views=a.views)
    res = {'tool': 'ours', 'views': a.views, 'augment': a.augment, 'threads': a.threads, 'batch_size': a.batch_size,
           'patch': list(patch), 'io': loader.io, 'cache': 'default' if a.cache_bytes is None else a.cache_bytes,
           'preload': a.preload, 'device': loader.device}
    it = batches(loader)
    if a.preload:  # the first batch waits for the preload: its time is the preload's (not timed below)
        t = time.perf_counter()
        next(it)
        res['preload_seconds'] = time.perf_counter() - t
        res['preload_cache_bytes'] = loader.cache_bytes
    if a.rss:
        marks = sorted(int(v) for v in a.rss_at.split(','))
        res['rss'] = []
        t = time.perf_counter()
        n = 0
        for m in marks:
            while n < m:
                b = next(it)
                float(b['image'][0, 0, 0, 0, 0])
                n += 1
            s = proc_status()
            res['rss'].append({'batch': n, 'VmHWM_kB': s['VmHWM'], 'VmRSS_kB': s['VmRSS'],
                               'cache_bytes': loader.cache_bytes, 'seconds': time.perf_counter() - t})
        res['samples_per_s'] = n * a.batch_size / (time.perf_counter() - t)
    else:
        corners = [] if a.dump_corners else None
        res.update(timed(a, it, corners))
        res['cpu_ms_per_sample'] = 1e3 * res['cpu_seconds'] / max(res['samples'], 1)
        res['cache_held_bytes'] = loader.cache_bytes
        if corners is not None:
            with open(a.dump_corners, 'w') as f:
                for c in corners:
                    f.write('%d %d %d %d\n' % c)
            res['corners'] = a.dump_corners
    if a.device != 'cpu':
        st = loader.device_stats
        res['device_stats'] = {k: st[k] for k in ('gpu_calls', 'gpu_samples', 'gpu_reference', 'fallback_calls',
                                                  'fallback_samples', 'device_resets', 'gpu_disabled', 'note')}
    loader.close()
    print(json.dumps(res))


def timed(a, it, corners=None):
    """Warm-up batches, then the timed window: each batch's image touched (one float read per sample) as
    a training step would read it; samples/s and the CPU time of this process, all threads (the A/B
    measure on a shared machine); the timed samples' (record, corner) appended to corners when given."""
    for _ in range(a.warmup):
        next(it)
    c = time.process_time()
    t = time.perf_counter()
    samples = nb = 0
    while nb < a.batches or time.perf_counter() - t < a.min_seconds:
        b = next(it)
        nb += 1
        n = b['image'].shape[0]
        for j in range(n):
            float(b['image'][j, 0, 0, 0, 0])
        samples += n
        if corners is not None:
            for j in range(n):
                corners.append((int(b['index'][j]),) + tuple(int(v) for v in b['corner'][j]))
    dt = time.perf_counter() - t
    return {'batches': nb, 'samples': samples, 'seconds': dt, 'samples_per_s': samples / dt,
            'cpu_seconds': time.process_time() - c, 'min_seconds': a.min_seconds}


def torch_loader(a, patch):
    """DataLoader(BatchDataset(...), batch_size=None, num_workers=--torch-workers, persistent_workers=True)."""
    import torch
    from cirrdata.torch import BatchDataset
    W = a.torch_workers
    ds = BatchDataset(a.dataset, batch_size=a.batch_size, mode='patch', patch=patch, augment=a.augment, seed=a.seed,
                      split=a.split, threads=max(1, a.threads // W), io=a.io, cache_bytes=a.cache_bytes,
                      augment_device=a.device, preload=a.preload)
    return torch.utils.data.DataLoader(ds, batch_size=None, num_workers=W, persistent_workers=True)


def alternate_main(a, patch):
    from cirrdata.loader import Loader
    import statistics
    W = a.torch_workers
    native = Loader(a.dataset, batch_size=a.batch_size, mode='patch', patch=patch, augment=a.augment, seed=a.seed,
                    split=a.split, threads=a.threads, io=a.io, cache_bytes=a.cache_bytes, device=a.device,
                    preload=a.preload)
    dl = torch_loader(a, patch)
    sides = {'native': batches(native), 'torch': batches(dl)}
    for _ in range(W):  # every worker's first batch waits for its preload, as the native one does
        next(sides['torch'])
    next(sides['native'])
    cycles = []
    for c in range(a.alternate):
        row = {}
        for side in (('native', 'torch') if c % 2 == 0 else ('torch', 'native')):
            row[side] = timed(a, sides[side])['samples_per_s']
        row['ratio'] = row['torch'] / row['native']
        cycles.append(row)
    ratios = [r['ratio'] for r in cycles]
    res = {'tool': 'ours-alternate', 'workers': W, 'threads': a.threads, 'augment': a.augment,
           'batch_size': a.batch_size, 'patch': list(patch), 'preload': a.preload, 'window_seconds': a.min_seconds,
           'drain_batches': a.warmup, 'cycles': cycles,
           'native_samples_per_s': statistics.median(r['native'] for r in cycles),
           'torch_samples_per_s': statistics.median(r['torch'] for r in cycles),
           'ratio_median': statistics.median(ratios), 'ratio_min': min(ratios), 'ratio_max': max(ratios)}
    del sides
    native.close()
    print(json.dumps(res))


def torch_main(a, patch):
    W = a.torch_workers
    dl = torch_loader(a, patch)
    res = {'tool': 'ours-torch', 'workers': W, 'augment': a.augment, 'threads': a.threads,
           'batch_size': a.batch_size, 'patch': list(patch), 'cache': 'default' if a.cache_bytes is None else a.cache_bytes,
           'preload': a.preload}
    it = batches(dl)
    if a.preload:  # the first batch of every worker waits for its preload (not timed)
        t = time.perf_counter()
        for _ in range(W):
            next(it)
        res['preload_seconds'] = time.perf_counter() - t
    res.update(timed(a, it))
    res['main_cpu_seconds'] = res.pop('cpu_seconds')  # the main process only: the workers' is their own
    del it, dl
    print(json.dumps(res))


if __name__ == '__main__':
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(os.path.dirname(here), 'python'))
    main()
