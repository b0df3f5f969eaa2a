#!/usr/bin/env python3
"""The peer of bench_warp: torch.nn.functional.grid_sample on the same volumes and transforms.

    torch_warp.py --bench bench.json [--dump DIR] [--device cuda|cpu] [--seconds S] [--threads N]

--bench: bench_warp's --json output (cases: batch, patch, source box). For each case this times, on
--device, float32 (N, 1, X, Y, Z) volumes:
  grid_sample           trilinear ('bilinear' on 5-D input), padding_mode='zeros',
                        align_corners=True, with the sampling grid already computed (it is read from
                        memory: 12 bytes per output voxel)
  affine_grid+sample    the grid computed from the 3x4 transform each time, then grid_sample: the
                        same work as our fused warp
Times: CUDA events on the GPU, wall clock on the CPU; the median over --seconds per candidate.
On CUDA also the device-to-device copy bandwidth (bytes read + written), the practical peak.
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
    for _ in range(3):
        fn()
    sync()
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        if device == "cuda":
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        if len(times) >= 2000:
            break
    return statistics.median(times)


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
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = args.device
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    bench = json.load(open(args.bench))
    out = {"device": dev, "torch": torch.__version__, "threads": torch.get_num_threads(), "cases": []}
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
        src = (torch.rand([n, 1] + box, generator=gen) * 1000).to(dev)
        # the bench's transform is the same for every sample up to a shift: use sample 0's
        meta_m = None
        if args.dump and os.path.exists(os.path.join(args.dump, "warp_meta.json")):
            meta = json.load(open(os.path.join(args.dump, "warp_meta.json")))
            meta_m = meta["matrix"]
        if meta_m is None:
            meta_m = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
        center = [0.75 * p for p in patch]
        lo = [int(round(center[k] - box[k] / 2)) for k in range(3)]
        grid = torch.cat([grid_for(meta_m, center, lo, box, patch)] * n).to(dev)
        th = torch.from_numpy(theta_for(meta_m, center, lo, box, patch)).float()[None].repeat(n, 1, 1).to(dev)
        res = torch.empty([n, 1] + patch, device=dev)

        def gs():
            return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)

        def ag():
            return F.grid_sample(src, F.affine_grid(th, [n, 1] + patch, align_corners=True), mode="bilinear",
                                 padding_mode="zeros", align_corners=True)

        t_gs = timed(gs, dev, args.seconds, sync)
        t_ag = timed(ag, dev, args.seconds, sync)
        del res
        out["cases"].append({"case": c["case"], "voxels": vox, "grid_sample_ms": t_gs, "affine_grid_sample_ms": t_ag,
                             "grid_sample_mvox_s": vox / t_gs * 1e-3, "affine_grid_sample_mvox_s": vox / t_ag * 1e-3,
                             # minimal traffic of grid_sample: source read once, grid read, output written
                             "grid_sample_bytes": float(n * box[0] * box[1] * box[2] * 4 + vox * 12 + vox * 4)})
    if dev == "cuda":
        x = torch.empty(256 << 20, dtype=torch.uint8, device=dev)
        y = torch.empty_like(x)
        t = timed(lambda: y.copy_(x), dev, 0.5, sync)
        out["copy_gb_s"] = 2 * x.numel() / (t * 1e-3) / 1e9
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
