#!/usr/bin/env python3
"""The peer of bench_warp: torch.nn.functional.grid_sample on the same volumes and transforms.

    torch_warp.py --bench bench.json [--dump DIR] [--device cuda|cpu] [--seconds S] [--threads N]

--bench: bench_warp's --json output (cases: batch, patch, source box). For each case this times the
same work as our fused warp (cd_gpu_aug_spatial) on --device: a float32 (N, 1, X, Y, Z) image and a
uint8 mask; affine_grid from the 3x4 transform, grid_sample of the image (trilinear, 'bilinear' on
5-D input, padding_mode='zeros', align_corners=True) and of the mask (mode='nearest', as float, cast
back to uint8). Each number is on the clock of the bench_warp number it is compared with
(benchmarks/gpu/README.md):
  device_ms  (CUDA only) the device's clock, like bench_warp's 'gpu kernel' (Vulkan timestamps around
             the dispatch, data resident on the device): the warp captured once in a CUDA graph, then
             CUDA events around K back-to-back replays (K chosen so that one measurement lasts >= 2 ms),
             per replay; so no host launch time falls between the events, as none falls between our
             timestamps. When capture fails: the same around K eager calls ('device_mode': 'eager',
             which can include host launch gaps)
  e2e_ms     the host's clock, like bench_warp's 'gpu call' (CLOCK_MONOTONIC around the whole
             cd_gpu_aug_spatial call): time.perf_counter (CLOCK_MONOTONIC on Linux) around host
             (pageable) tensors -> .to(device) -> the warp -> .cpu() (which waits for the device); on
             the CPU there are no copies and this is the warp's wall time
The median over --seconds per candidate. On CUDA also the device-to-device copy bandwidth (bytes read
+ written, CUDA events around one 256 MiB copy), the practical peak.
--device cuda where torch has no CUDA prints a message and a JSON object with "skipped" (exit 0).
--dump: bench_warp's --dump folder; grid_sample of its first sample is compared with our Vulkan
output (the convention check: our positions src = c + M (o - (P - 1) / 2) in voxel units are
align_corners=True normalised coordinates; zero padding is 'zeros').
Prints one JSON object.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def theta_for(matrix, center, box_lo, box_shape, patch):
    """The (3, 4) affine_grid matrix, in torch's reversed axis order (W=z, H=y, D=x)."""
    th = np.zeros((3, 4), dtype=np.float64)
    for a in range(3):
        k = 2 - a
        bk = box_shape[k]
        sk = 2.0 / (bk - 1) if bk > 1 else 0.0
        for b in range(3):
            j = 2 - b
            th[a, b] = sk * matrix[k][j] * (patch[j] - 1) / 2.0
        th[a, 3] = sk * (center[k] - box_lo[k]) - 1.0
    return th


def grid_for(matrix, center, box_lo, box_shape, patch):
    """The sampling grid (1, X, Y, Z, 3), computed in float64 then rounded to float32."""
    m = np.asarray(matrix, dtype=np.float64)
    c = np.asarray(center, dtype=np.float64) - np.asarray(box_lo, dtype=np.float64)
    h = (np.asarray(patch, dtype=np.float64) - 1) / 2
    o = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in patch], indexing="ij"), axis=-1) - h
    p = o @ m.T + c  # (X, Y, Z, 3): source voxel coordinates (x, y, z)
    b = np.asarray(box_shape, dtype=np.float64)
    g = 2.0 * p / np.maximum(b - 1, 1) - 1.0
    return torch.from_numpy(g[..., ::-1].copy().astype(np.float32))[None]


def timed(fn, device, seconds, sync):
    """Host clock: median ms of fn() over `seconds` (at least 3 calls), each call followed by sync()
    inside the timed interval, so that a call counts until its device work is done."""
    for _ in range(3):
        fn()
    sync()
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
        if len(times) >= 2000:
            break
    return statistics.median(times)


def timed_device(fn, seconds):
    """Device clock (CUDA): (median ms per call, mode). fn is captured in a CUDA graph (after a
    warm-up on a side stream, as torch.cuda.graph requires); CUDA events bracket K back-to-back
    replays. Falls back to K eager calls when capture fails (mode 'eager', with the reason)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    mode = "graph"
    try:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        torch.cuda.synchronize()
        run = g.replay
    except Exception as e:  # noqa: BLE001  (any capture failure: measure eagerly, and say so)
        torch.cuda.synchronize()
        mode = "eager (graph capture failed: %s)" % str(e).splitlines()[0][:120]
        run = fn
    for _ in range(3):
        run()
    torch.cuda.synchronize()

    def bracket(k):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(k):
            run()
        e.record()
        e.synchronize()
        return s.elapsed_time(e) / k

    k = max(1, min(1000, int(2.0 / max(bracket(1), 1e-4)) + 1))
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        times.append(bracket(k))
        if len(times) >= 2000:
            break
    return statistics.median(times), mode


def setup():
    """The command line of the torch peers (torch_warp.py, torch_augment.py): (args, device, its
    synchronisation, the C benchmark's JSON, the head of the output object)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True)
    ap.add_argument("--dump")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("%s: torch %s has no CUDA device here (torch.cuda.is_available() is False): the CUDA peer is skipped"
              % (os.path.basename(sys.argv[0]), torch.__version__), file=sys.stderr)
        print(json.dumps({"device": "cuda", "torch": torch.__version__, "skipped": "no CUDA device", "cases": []}))
        sys.exit(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = args.device
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    bench = json.load(open(args.bench))
    out = {"device": dev, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "e2e_clock": "host: time.perf_counter, host tensors to host tensors", "cases": []}
    if dev == "cuda":
        out["device_clock"] = "device: CUDA events around CUDA-graph replays"
    if dev == "cuda":
        out["gpu"] = torch.cuda.get_device_name(0)
    return args, dev, sync, bench, out


def main():
    args, dev, sync, bench, out = setup()
    gen = torch.Generator().manual_seed(0)

    if args.dump and os.path.exists(os.path.join(args.dump, "warp_meta.json")):
        meta = json.load(open(os.path.join(args.dump, "warp_meta.json")))
        bs, patch = meta["box_shape"], meta["patch"]
        src = np.fromfile(os.path.join(args.dump, "warp_src.f32"), dtype=np.float32).reshape(bs)
        ours = np.fromfile(os.path.join(args.dump, "warp_gpu.f32"), dtype=np.float32).reshape(patch)
        g = grid_for(meta["matrix"], meta["center"], meta["box_lo"], bs, patch).to(dev)
        ref = F.grid_sample(torch.from_numpy(src)[None, None].to(dev), g, mode="bilinear", padding_mode="zeros",
                            align_corners=True)[0, 0].cpu().numpy()
        th = torch.from_numpy(theta_for(meta["matrix"], meta["center"], meta["box_lo"], bs, patch)).float()[None].to(dev)
        g2 = F.affine_grid(th, [1, 1] + list(patch), align_corners=True)
        ref2 = F.grid_sample(torch.from_numpy(src)[None, None].to(dev), g2, mode="bilinear", padding_mode="zeros",
                             align_corners=True)[0, 0].cpu().numpy()
        rng = float(ours.max() - ours.min()) or 1.0
        out["convention_check"] = {
            "max_err_grid_sample": float(np.abs(ref - ours).max() / rng),
            "max_err_affine_grid": float(np.abs(ref2 - ours).max() / rng),
        }

    for c in bench["cases"]:
        n, patch, box = c["batch"], c["patch"], c["box"]
        vox = n * patch[0] * patch[1] * patch[2]
        src_h = torch.rand([n, 1] + box, generator=gen) * 1000  # host (pageable) memory, as bench_warp's
        msk_h = (torch.rand([n, 1] + box, generator=gen) * 3).floor().to(torch.uint8)
        # the bench's transform is the same for every sample up to a shift: use sample 0's
        meta_m = None
        if args.dump and os.path.exists(os.path.join(args.dump, "warp_meta.json")):
            meta = json.load(open(os.path.join(args.dump, "warp_meta.json")))
            meta_m = meta["matrix"]
        if meta_m is None:
            meta_m = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
        center = [0.75 * p for p in patch]
        lo = [int(round(center[k] - box[k] / 2)) for k in range(3)]
        th_h = torch.from_numpy(theta_for(meta_m, center, lo, box, patch)).float()[None].repeat(n, 1, 1)

        def warp(src, msk, th):
            """Our fused warp's work in torch: one grid, the image trilinear, the mask nearest."""
            grid = F.affine_grid(th, [n, 1] + patch, align_corners=True)
            img = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
            m = F.grid_sample(msk.float(), grid, mode="nearest", padding_mode="zeros", align_corners=True)
            return img, m.to(torch.uint8)

        def e2e():  # host memory in, host memory out
            img, m = warp(src_h.to(dev), msk_h.to(dev), th_h.to(dev))
            return img.cpu(), m.cpu()

        row = {"case": c["case"], "voxels": vox}
        t = timed(e2e, dev, args.seconds, sync)
        row.update({"e2e_ms": t, "e2e_mvox_s": vox / t * 1e-3})
        if dev == "cuda":
            src_d, msk_d, th_d = src_h.to(dev), msk_h.to(dev), th_h.to(dev)
            t, mode = timed_device(lambda: warp(src_d, msk_d, th_d), args.seconds)
            row.update({"device_ms": t, "device_mvox_s": vox / t * 1e-3, "device_mode": mode})
            del src_d, msk_d, th_d
        out["cases"].append(row)
    if dev == "cuda":
        x = torch.empty(256 << 20, dtype=torch.uint8, device=dev)
        y = torch.empty_like(x)
        y.copy_(x)
        times = []
        for _ in range(20):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            y.copy_(x)
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e))
        out["copy_gb_s"] = 2 * x.numel() / (statistics.median(times) * 1e-3) / 1e9
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
