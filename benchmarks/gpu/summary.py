#!/usr/bin/env python3
"""Prints run.sh's one summary table from RESULTS_DIR/{bench,torch_cuda,torch_cpu}.json."""
import json
import os
import sys

# Nominal memory bandwidth (GB/s) by GPU name substring (vendor data sheets), first match wins.
NOMINAL = [("H200", 4800), ("H100 NVL", 3900), ("H100 PCIe", 2000), ("H100", 3350), ("A100-SXM4-80GB", 2039),
           ("A100 80GB PCIe", 1935), ("A100", 1555), ("L40S", 864), ("L4", 300), ("A10G", 600), ("RTX 4090", 1008)]


def load(d, name):
    p = os.path.join(d, name)
    try:
        with open(p) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fmt(v, spec="{:.0f}"):
    return spec.format(v) if isinstance(v, (int, float)) and v else "-"


def main():
    d = sys.argv[1]
    b, tc, tp = load(d, "bench.json"), load(d, "torch_cuda.json"), load(d, "torch_cpu.json")
    if not b:
        print("no bench.json")
        return 1
    gpu_name = os.environ.get("GPU_NAME") or (tc or {}).get("gpu", "")
    nominal = next((bw for key, bw in NOMINAL if key in gpu_name), None)
    copy = (tc or {}).get("copy_gb_s")
    tcc = {c["case"]: c for c in (tc or {}).get("cases", [])}
    tpc = {c["case"]: c for c in (tp or {}).get("cases", [])}
    print()
    print(f"Vulkan device: {b['device'] or '(none)'} ({b['device_type'] or '-'}, "
          f"{'shared' if b['shared_memory'] else 'staging'} memory); GPU: {gpu_name or '-'}; "
          f"torch {(tc or tp or {}).get('torch', '-')}")
    print(f"device copy bandwidth (torch, read+write): {fmt(copy)} GB/s; nominal: {fmt(nominal)} GB/s")
    if (tc or {}).get("skipped"):
        print(f"torch on CUDA: skipped ({tc['skipped']}): the GPU comparison columns stay empty")
    print("Mvox/s = output voxels per second (1e6); every warp = image (trilinear) + mask (nearest). Two clocks, ratios")
    print("only within one: DEVICE clock, data resident on the device: 'Vk kernel' = the dispatch between Vulkan")
    print("timestamps, 'torch dev' = affine_grid + grid_sample (image, mask) between CUDA events around CUDA-graph")
    print("replays; HOST clock (CLOCK_MONOTONIC), host memory to host memory: 'Vk call' = the whole cd_gpu_aug_spatial")
    print("call, 'torch e2e' = .to(cuda), the same warp, .cpu(). GB/s = minimal traffic / Vk kernel time")
    hdr = ("case", "box", "Vk kernel", "torch dev", "Vk/torch", "Vk call", "torch e2e", "Vk/torch", "Vk GB/s", "%copy",
           "%nominal", "C ref 1T", "torch CPU", "max err", "mask diff")
    w = (13, 12, 10, 10, 9, 9, 10, 9, 8, 6, 8, 9, 10, 8, 9)
    print(" ".join(h.rjust(n) for h, n in zip(("", "", "device", "clock", "", "host", "clock", "", "", "", "", "", "", "", ""), w)))
    print(" ".join(h.rjust(n) for h, n in zip(hdr, w)))
    for c in b["cases"]:
        t = tcc.get(c["case"], {})
        p = tpc.get(c["case"], {})
        k = c.get("gpu_kernel_mvox_s") or 0
        call = c.get("gpu_call_mvox_s") or 0
        tdev, te2e = t.get("device_mvox_s"), t.get("e2e_mvox_s")
        gbs = c.get("gpu_kernel_gb_s") or 0
        row = (c["case"], "x".join(str(v) for v in c["box"]), fmt(k), fmt(tdev), fmt(k / tdev if tdev and k else None, "{:.2f}x"),
               fmt(call), fmt(te2e), fmt(call / te2e if te2e and call else None, "{:.2f}x"), fmt(gbs),
               fmt(100 * gbs / copy if copy and gbs else None, "{:.0f}%"),
               fmt(100 * gbs / nominal if nominal and gbs else None, "{:.0f}%"), fmt(c.get("cpu_mvox_s"), "{:.1f}"),
               fmt(p.get("e2e_mvox_s"), "{:.1f}"), "{:.1e}".format(c["max_err"]), str(c["mask_mismatch"]))
        print(" ".join(str(v).rjust(n) for v, n in zip(row, w)))
    modes = {x.get("device_mode") for x in tcc.values() if x.get("device_mode")}
    if modes - {"graph"}:
        print("note: torch dev was not measured from a CUDA graph: " + "; ".join(sorted(modes)))
    conv = (tc or tp or {}).get("convention_check")
    if conv:
        print(f"convention check, our Vulkan output vs torch grid_sample(align_corners=True, zeros) on the same volume: "
              f"max err {conv['max_err_grid_sample']:.1e} (precomputed grid), {conv['max_err_affine_grid']:.1e} (affine_grid) "
              f"of the range")
    if tp:
        print(f"torch CPU: {tp.get('threads')} threads, wall clock (C ref 1T: one thread)")
    print(f"parity with the C reference: {'OK' if b.get('parity_ok') else 'FAILED'} (images <= 1e-4 of the range, masks equal)")
    return 0 if b.get("parity_ok") else 1


if __name__ == "__main__":
    sys.exit(main())
