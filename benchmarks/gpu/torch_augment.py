#!/usr/bin/env python3
"""The peer of bench_augment: the same augmentation chain in PyTorch, batched on --device.

    torch_augment.py --bench augment.json [--dump DIR] [--device cuda|cpu] [--seconds S] [--threads N]
    torch_augment.py --summary RESULTS_DIR     (the table of run.sh: augment.json, augment_torch_*.json)

--bench: bench_augment's --json output (cases: batch, patch, source box). For each case this times,
on float32 (N, 1, X, Y, Z) volumes with a uint8 mask, the whole chain as a PyTorch user writes it:
  warp        affine_grid + grid_sample (trilinear, zeros, align_corners=True: bench_warp's convention
              check) for the image, nearest for the mask
  noise       x + sigma * randn (same field for every channel)
  blur        separable Gaussian, scipy 'reflect' edges (index_select with reflected indices, then a
              1-D conv per axis), radius int(4 sigma + 0.5), weights normalised
  brightness  x * f
  contrast    (x - mean) * f + mean, clamped to [min, max] per sample and channel
  lowres      interpolate 'nearest-exact' down to round(zoom * n), 'trilinear' (align_corners=False) up
  gamma       inverted then plain: ((x - mn) / r)^g * r + mn, mean and std (N - 1) restored
Two clocks, each matching the bench_augment number it is compared with (benchmarks/gpu/README.md):
  device_ms  (CUDA only) the chain captured in a CUDA graph, CUDA events around back-to-back replays
             (torch_warp.timed_device), against the fused kernels' Vulkan timestamps
  e2e_ms     time.perf_counter around host tensors (image float32, mask uint8) -> .to(device) -> the
             chain -> .cpu(), against the whole cd_gpu_augment call on CLOCK_MONOTONIC; on the CPU
             this is the chain's wall time
The median over --seconds. --device cuda without CUDA: a message and {"skipped": ...} (exit 0).
--dump: bench_augment's --dump folder; the chain without noise on its sample 0 is compared with the C
reference there (max error / data range: evidence that both compute the same thing).
Prints one JSON object.
"""
import functools
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_warp import setup, theta_for, timed, timed_device  # noqa: E402  (same folder)


# Cached: the first (warm-up) call builds them, so a CUDA-graph capture makes no host-to-device copy.
@functools.lru_cache(maxsize=None)
def reflect_index(n, r, device):
    i = torch.arange(-r, n + r, device=device)
    if n == 1:
        return torch.zeros_like(i)
    p = 2 * n
    i = torch.remainder(i, p)
    return torch.where(i < n, i, p - 1 - i)


@functools.lru_cache(maxsize=None)
def gauss_weights(sigma, truncate, dtype, device):
    r = int(truncate * sigma + 0.5)
    x = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-0.5 / (sigma * sigma) * x * x)
    return torch.from_numpy(w / w.sum()).to(dtype=dtype, device=device), r


def blur(x, sigmas, truncate):
    for ax, s in enumerate(sigmas):
        dim = 2 + ax
        n = x.shape[dim]
        if n <= 1 or s <= 0:
            continue
        w, r = gauss_weights(float(s), float(truncate), x.dtype, x.device)
        if r < 1:
            continue
        xe = x.index_select(dim, reflect_index(n, r, x.device))
        shape = [1, 1, 1, 1, 1]
        shape[dim] = 2 * r + 1
        x = F.conv3d(xe, w.view(shape))
    return x


def row_stats(x):
    flat = x.flatten(2)
    return (flat.mean(-1)[..., None, None, None], flat.std(-1, unbiased=True)[..., None, None, None],
            flat.amin(-1)[..., None, None, None], flat.amax(-1)[..., None, None, None])


def gamma(x, g, invert):
    if invert:
        x = -x
    mean, sd, mn, mx = row_stats(x)
    r = mx - mn
    t = (x - mn) / torch.clamp(r, min=1e-7)
    y = torch.where(t > 0, torch.pow(torch.clamp(t, min=0), g), torch.zeros_like(t)) * r + mn
    mean2, sd2, _, _ = row_stats(y)
    y = (y - mean2) * (sd / torch.clamp(sd2, min=1e-7)) + mean
    return -y if invert else y


def chain(src, msk, theta, patch, p, noise=True):
    n = src.shape[0]
    grid = F.affine_grid(theta, [n, 1] + patch, align_corners=True)
    x = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    m = F.grid_sample(msk, grid, mode="nearest", padding_mode="zeros", align_corners=True)
    if noise:
        x = x + p["noise_sigma"] * torch.randn_like(x)
    x = blur(x, p["blur_sigma"], p["blur_truncate"])
    x = x * p["brightness"]
    mean, _, mn, mx = row_stats(x)
    x = torch.minimum(torch.maximum((x - mean) * p["contrast"] + mean, mn), mx)
    size = [max(1, min(k, int(round(k * p["lowres_zoom"])))) for k in patch]
    x = F.interpolate(F.interpolate(x, size=size, mode="nearest-exact"), size=patch, mode="trilinear", align_corners=False)
    x = gamma(x, p["gamma_invert"], True)
    x = gamma(x, p["gamma"], False)
    return x, m


def summary(results):
    """One table: bench_augment's numbers next to torch's, Mvox/s (output voxels per second)."""
    ours = json.load(open(os.path.join(results, "augment.json")))
    peers = {}
    for d in ("cuda", "cpu"):
        f = os.path.join(results, "augment_torch_%s.json" % d)
        if os.path.exists(f) and os.path.getsize(f):
            peers[d] = json.load(open(f))
    mode = "shared" if ours.get("shared_memory") else "staging"
    head = "Vulkan device: %s (%s, %s memory)" % (ours.get("device") or "(none)", ours.get("device_type", ""), mode)
    if "cuda" in peers:
        head += "; torch %s on %s" % (peers["cuda"]["torch"], peers["cuda"].get("gpu", "cuda"))
    print(head)
    for d, p in peers.items():
        if "convention_check" in p:
            print("torch chain vs C reference (no noise), %s: max error %.2g of the range"
                  % (d, p["convention_check"]["max_err_chain_without_noise"]))
        if p.get("skipped"):
            print("torch on %s: skipped (%s)" % (d, p["skipped"]))
    cols = ["case", "C ref 1T", "Vk kernel", "torch dev", "Vk/torch dev", "Vk call", "torch e2e", "Vk/torch e2e",
            "Vk split call", "torch cpu", "max err"]
    print("  ".join("%13s" % c for c in cols))

    def f(v, spec="%.1f"):
        return spec % v if v else "-"

    for c in ours["cases"]:
        t = {d: next((x for x in p["cases"] if x["case"] == c["case"]), None) for d, p in peers.items()}
        tc = t.get("cuda") or {}
        tdev, te2e = tc.get("device_mvox_s", 0), tc.get("e2e_mvox_s", 0)
        tp = (t.get("cpu") or {}).get("e2e_mvox_s", 0)
        k, call = c["fused_kernel_mvox_s"], c["fused_call_mvox_s"]
        row = [c["case"], f(c["cpu_mvox_s"]), f(k), f(tdev), f(k / tdev if tdev and k else 0, "%.2fx"), f(call), f(te2e),
               f(call / te2e if te2e and call else 0, "%.2fx"), f(c["split_call_mvox_s"]), f(tp), "%.2g" % c["max_err"]]
        print("  ".join("%13s" % v for v in row))
    modes = {x.get("device_mode") for p in peers.values() for x in p.get("cases", []) if x.get("device_mode")}
    print("(Mvox/s. Device clock: 'Vk kernel' = the fused dispatches between Vulkan timestamps, 'torch dev' = torch's chain "
          "between CUDA events around CUDA-graph replays%s. Host clock, host memory to host memory: 'Vk call' = the whole "
          "cd_gpu_augment call, 'torch e2e' = upload, chain, download. Ratios only within one clock.)"
          % ("; torch mode: " + ", ".join(sorted(modes)) if modes else ""))
    return 0


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--summary":
        return summary(sys.argv[2])
    args, dev, sync, bench, out = setup()
    meta = None
    if args.dump and os.path.exists(os.path.join(args.dump, "augment_meta.json")):
        meta = json.load(open(os.path.join(args.dump, "augment_meta.json")))
        bs, patch = meta["box_shape"], meta["patch"]
        src = np.fromfile(os.path.join(args.dump, "augment_src.f32"), dtype=np.float32).reshape(bs)
        ref = np.fromfile(os.path.join(args.dump, "augment_cpu_nonoise.f32"), dtype=np.float32).reshape(patch)
        th = torch.from_numpy(theta_for(meta["matrix"], meta["center"], meta["box_lo"], bs, patch)).float()[None].to(dev)
        s = torch.from_numpy(src)[None, None].to(dev)
        got, _ = chain(s, torch.zeros_like(s), th, patch, meta, noise=False)
        got = got[0, 0].cpu().numpy()
        rng = float(ref.max() - ref.min()) or 1.0
        out["convention_check"] = {"max_err_chain_without_noise": float(np.abs(got - ref).max() / rng)}
    params = meta or {"noise_sigma": 0.1, "blur_sigma": [0.5, 0.75, 1.0], "blur_truncate": 4.0, "brightness": 1.1, "contrast": 0.85,
                      "lowres_zoom": 0.6, "gamma_invert": 1.3, "gamma": 0.8, "matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}
    gen = torch.Generator().manual_seed(0)
    for c in bench["cases"]:
        n, patch, box = c["batch"], c["patch"], c["box"]
        vox = n * patch[0] * patch[1] * patch[2]
        src_h = torch.rand([n, 1] + box, generator=gen) * 4 - 1  # host (pageable) memory, as bench_augment's
        msk_h = (torch.rand([n, 1] + box, generator=gen) * 3).floor().to(torch.uint8)
        center = [0.75 * q for q in patch]
        lo = [int(round(center[k] - box[k] / 2)) for k in range(3)]
        th_h = torch.from_numpy(theta_for(params["matrix"], center, lo, box, patch)).float()[None].repeat(n, 1, 1)

        def e2e():  # host memory in, host memory out; grid_sample wants the mask's labels as floats
            x, m = chain(src_h.to(dev), msk_h.to(dev).float(), th_h.to(dev), patch, params)
            return x.cpu(), m.to(torch.uint8).cpu()

        row = {"case": c["case"], "voxels": vox}
        t = timed(e2e, dev, args.seconds, sync)
        row.update({"e2e_ms": t, "e2e_mvox_s": vox / t * 1e-3})
        if dev == "cuda":
            src, msk, th = src_h.to(dev), msk_h.to(dev).float(), th_h.to(dev)
            t, mode = timed_device(lambda: chain(src, msk, th, patch, params), args.seconds)
            row.update({"device_ms": t, "device_mvox_s": vox / t * 1e-3, "device_mode": mode})
        out["cases"].append(row)
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
