#!/usr/bin/env python3
"""`cirrdata convert --device vulkan` against `--device cpu` on a small synthetic nnU-Net set with
varied spacings and orientations, for the recipes raw, nnunet-3d and cirrhosisstage-2d (and a
synergynet-like nearest resize, scaled down): the same records (keys, order, shapes, dtypes,
affines, metadata), masks identical, images within the kernels' tolerance (float32: 1e-4 of the
record's value range; float16 records: that plus one float16 rounding step), raw shards byte for
byte identical; the manifest records the device ("vulkan" where a Vulkan device exists, with no
fallback note) and its fingerprint is the same (the device is not part of the data). Records are read
with the independent reader (cdshard.py).

Every `--device vulkan` run has the Khronos validation layer on (with synchronization validation; the
CLI exits 1 on any message, including those reported while it destroys its context) and prints its
Vulkan totals (CIRRDATA_VK_STATS=1): no validation message, and for the recipes that resample or
normalise, command buffers submitted and no volume computed by the C reference instead of the device
(a GPU path that silently fell back to the CPU fails). Exit 77 (skipped) only without any Vulkan
device where none is required (vk_test.py). Ends with `convert_gpu: N passed, M failed`."""
import json
import os
import shutil
import sys
import tempfile

import nibabel as nib
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cdshard  # noqa: E402
import harness  # noqa: E402
import vk_test  # noqa: E402
from harness import check  # noqa: E402

# synergynet-3d's nearest-neighbour resize and whole-volume z-score, at a test-sized shape
NEAREST_RECIPE = {
    "name": "nearest-small", "version": 1, "reorient": "RAS",
    "resample": {"mode": "shape", "shape": [40, 37, 9], "image_order": 0, "mask_order": 0},
    "crop": {"mode": "none", "margin": [0, 0, 0]},
    "normalize": {"mode": "zscore", "region": "volume"},
    "dtype": "float32", "mask_dtype": "uint8", "chunk": [32, 32, 8], "zstd_level": 1,
}


def make_source(root, seed=5):
    """Five cases with different spacings, origins and axis flips (int16 images with scaling on
    some, uint8 masks), nearly isotropic enough that nnunet-3d resamples in 3D."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "imagesTr"))
    os.makedirs(os.path.join(root, "labelsTr"))
    shapes = [(23, 19, 9), (20, 22, 8), (25, 17, 10), (18, 18, 7), (21, 24, 9)]
    for i, shape in enumerate(shapes):
        sp = rng.uniform([0.9, 0.9, 1.5], [1.4, 1.4, 2.6])  # max/min < 3: no separate z axis
        aff = np.diag([sp[0], sp[1], sp[2], 1.0])
        if i % 2:
            aff[0, 0] = -aff[0, 0]  # an LPS-like flip: the reorientation moves axes
        aff[:3, 3] = rng.uniform(-40, 40, 3)
        g = np.indices(shape).astype(np.float64)
        img = (300 * np.sin(g[0] / (2.5 + i)) + 120 * np.cos(g[1] / 3.5) + 35 * g[2] + rng.normal(0, 25, shape))
        c = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
        mask = (((g[0] - c[0]) / 6) ** 2 + ((g[1] - c[1]) / 5) ** 2 + ((g[2] - c[2]) / 3) ** 2 <= 1).astype(np.uint8)
        mask[(g[0] > c[0] + 2) & (mask > 0)] = 2  # two labels
        nimg = nib.Nifti1Image(img.astype(np.int16), aff)
        if i == 2:
            nimg.header.set_slope_inter(0.5, -20.0)
        nib.save(nimg, os.path.join(root, "imagesTr", f"case{i:02d}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(mask, aff), os.path.join(root, "labelsTr", f"case{i:02d}.nii.gz"))
    harness.write_json(os.path.join(root, "dataset.json"),
                       {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "liver": 1, "lesion": 2},
                        "numTraining": len(shapes), "file_ending": ".nii.gz"})


def convert(cli, src, out, recipe, device, env=None, threads=2):
    """Runs the conversion; a Vulkan run under the validation layer, with its totals checked."""
    if device == "vulkan":
        env = vk_test.validation_env(env)
    r = harness.run([cli, "convert", src, "--layout", "nnunet", "--out", out, "--recipe", recipe, "--threads", str(threads),
                     "--device", device, "--json", "--quiet"], timeout=900, env=env)
    ok = check(r.returncode == 0, f"convert --recipe {recipe} --device {device}: exit {r.returncode}: {r.stderr[-400:]}")
    if device == "vulkan":
        st = vk_test.cli_stats(r.stderr)
        if check(st is not None, f"convert --recipe {recipe} --device vulkan printed no Vulkan totals: {r.stderr[-300:]}"):
            check(st["validation_messages"] == 0, f"convert --recipe {recipe}: {st['validation_messages']} validation messages")
        return (json.loads(r.stdout) if ok and r.stdout.strip() else {}), r.stderr, st or {}
    return (json.loads(r.stdout) if ok and r.stdout.strip() else {}), r.stderr


def float16_step(x):
    """The spacing of float16 numbers around |x| (one rounding step of a float16 record)."""
    a = np.abs(x.astype(np.float32))
    e = np.floor(np.log2(np.maximum(a, 2.0 ** -14)))
    return np.float32(2.0) ** (e - 10)


def compare(cpu_dir, gpu_dir, recipe):
    mc, rc = cdshard.read_dataset(cpu_dir)
    mg, rg = cdshard.read_dataset(gpu_dir)
    check(len(rc) == len(rg) and len(rc) > 0, f"{recipe}: {len(rc)} records on the CPU, {len(rg)} on the GPU")
    check(mc["source"]["fingerprint"] == mg["source"]["fingerprint"], f"{recipe}: the device changed the fingerprint")
    check(mc.get("device") == "cpu", f"{recipe}: the CPU run's manifest says device {mc.get('device')!r}")
    strip = ("device",)
    check([{k: v for k, v in e.items() if k not in strip} for e in mc["records"]] ==
          [{k: v for k, v in e.items() if k not in strip} for e in mg["records"]],
          f"{recipe}: manifest records differ between the devices")
    worst = 0.0
    for a, b in zip(rc, rg):
        key = a["metadata"].get("key")
        check(a["metadata"] == b["metadata"], f"{recipe} {key}: record metadata differs")
        ia, ib = a["tensors"]["image"], b["tensors"]["image"]
        if not check(ia.shape == ib.shape and ia.dtype == ib.dtype, f"{recipe} {key}: image {ia.shape} {ia.dtype} vs {ib.shape} {ib.dtype}"):
            continue
        if "mask" in a["tensors"] or "mask" in b["tensors"]:
            ma, mb = a["tensors"].get("mask"), b["tensors"].get("mask")
            check(ma is not None and mb is not None and np.array_equal(ma, mb),
                  f"{recipe} {key}: masks differ ({0 if ma is None or mb is None else int(np.count_nonzero(ma != mb))} voxels)")
        fa, fb = ia.astype(np.float64), ib.astype(np.float64)
        rng = float(fa.max() - fa.min()) or 1.0
        d = np.abs(fa - fb)
        allowed = 1e-4 * rng + (float16_step(ia).astype(np.float64) if ia.dtype == np.float16 else 0.0)
        worst = max(worst, float(d.max()) / rng)
        check(bool(np.all(d <= allowed)), f"{recipe} {key}: image differs by {float(d.max()):.3g} "
              f"({float(d.max()) / rng:.3g} of the range {rng:.3g})")
    return worst


def main():
    ap = harness.parser(__doc__, lib=None)
    args = ap.parse_args()
    cli = os.path.abspath(args.cirrdata)
    work = tempfile.mkdtemp(prefix="cirrdata-convert-gpu-", dir=args.workdir)
    no_device = False
    try:
        src = os.path.join(work, "src")
        make_source(src)
        nearest = harness.write_json(os.path.join(work, "nearest.json"), NEAREST_RECIPE)
        probe = harness.run([cli, "devices"], timeout=120)
        if "No Vulkan device" in probe.stdout and check(not vk_test.vulkan_required(), "no Vulkan device although one is "
                                                         f"required (lavapipe installed or CIRRDATA_TEST_REQUIRE_VULKAN=1): {probe.stdout}"):
            no_device = True
            print(f"convert_gpu: no Vulkan device ({probe.stdout.strip()[-200:]}); the GPU path is not tested")
        for recipe in ("raw", "nnunet-3d", "cirrhosisstage-2d", nearest):
            name = os.path.basename(recipe)
            cpu_dir, gpu_dir = os.path.join(work, f"{name}-cpu"), os.path.join(work, f"{name}-gpu")
            rc, _ = convert(cli, src, cpu_dir, recipe, "cpu")
            if not rc:
                continue
            check(rc.get("device") == "cpu", f"{name}: --device cpu reports {rc.get('device')!r}")
            if no_device:
                continue
            rg, err, st = convert(cli, src, gpu_dir, recipe, "vulkan")
            if not rg:
                continue
            note = rg.get("device_note", "")
            if name != "raw":
                # raw has nothing to resample or normalise: the CPU does it all
                check(rg.get("device") == "vulkan" and not note,
                      f"{name}: --device vulkan reports {rg.get('device')!r}, note {note!r}")
                check(harness.json.load(open(os.path.join(gpu_dir, "manifest.json"))).get("device") == "vulkan",
                      f"{name}: the manifest does not record device vulkan")
                check(st.get("submissions", 0) > 0 and st.get("cpu_fallback") == 0,
                      f"{name}: the device must compute every volume, none the C reference: {st}")
            worst = compare(cpu_dir, gpu_dir, name)
            if name == "raw":
                sd = lambda d: {n: open(os.path.join(d, "shards", n), "rb").read() for n in sorted(os.listdir(os.path.join(d, "shards")))}
                check(sd(cpu_dir) == sd(gpu_dir), "raw: shards differ between the devices")
            print(f"convert_gpu: {name}: {len(cdshard.read_dataset(gpu_dir)[1])} records, worst image difference "
                  f"{worst:.2g} of the record's range")
        shards = lambda d: {n: open(os.path.join(d, "shards", n), "rb").read() for n in sorted(os.listdir(os.path.join(d, "shards")))}
        cpu_dir = os.path.join(work, "nearest.json-cpu")
        # No usable device (CIRRDATA_VK_DEVICE names none), cirrdata/device.h: vulkan is an error naming
        # the reason, before anything is written; auto converts on the CPU, says why, same bytes.
        env = dict(os.environ, CIRRDATA_VK_DEVICE="no-such-device-anywhere")
        bad_dir = os.path.join(work, "no-device")
        r = harness.run([cli, "convert", src, "--layout", "nnunet", "--out", bad_dir, "--recipe", nearest, "--device", "vulkan",
                         "--quiet"], timeout=300, env=env)
        check(r.returncode != 0 and "device 'vulkan'" in r.stderr and "no-such-device-anywhere" in r.stderr,
              f"vulkan without a device must fail naming it: exit {r.returncode}: {r.stderr[-400:]}")
        check(not os.path.exists(os.path.join(bad_dir, "manifest.json")), "vulkan without a device: no manifest written")
        fb_dir = os.path.join(work, "fallback")
        rf, err = convert(cli, src, fb_dir, nearest, "auto", env=env)
        if rf:
            check(rf.get("device") == "cpu" and "vulkan not used" in rf.get("device_note", ""),
                  f"auto without a device: device {rf.get('device')!r}, note {rf.get('device_note')!r}")
            check("note:" in err, f"auto without a device: no note on stderr: {err[-300:]}")
            check(shards(cpu_dir) == shards(fb_dir), "auto without a device: shards differ from the CPU conversion")
        if not no_device:
            # A lost device (injected, CIRRDATA_TEST_DEVICE_LOST=N: the first N device calls report it):
            # once, the context is created again and the device goes on; twice, it is given up and the
            # CPU converts the rest. The bytes are those of a conversion on the device that did the work.
            for lost, want in (("1", "created again"), ("2", "lost again")):
                env = dict(os.environ, CIRRDATA_TEST_DEVICE_LOST=lost)
                lost_dir = os.path.join(work, f"lost{lost}")
                # one thread: the losses are the first calls, whatever the timing
                rl, err, st = convert(cli, src, lost_dir, nearest, "vulkan", env=env, threads=1)
                if rl:
                    check(want in rl.get("device_note", ""), f"lost device x{lost}: note {rl.get('device_note')!r}")
                    check(rl.get("device") == ("vulkan" if lost == "1" else "cpu"), f"lost device x{lost}: device {rl.get('device')!r}")
                    check(st.get("contexts", 0) == 2, f"lost device x{lost}: two contexts, the second made after the loss: {st}")
                    same = os.path.join(work, "nearest.json-gpu") if lost == "1" else cpu_dir
                    check(shards(same) == shards(lost_dir), f"lost device x{lost}: shards differ from {os.path.basename(same)}'s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rc = harness.summary("convert_gpu")
    if rc == 0 and no_device:
        print("convert_gpu: skipped: no Vulkan device, the GPU path was not tested")
        return vk_test.SKIP
    return rc


if __name__ == "__main__":
    sys.exit(main())
