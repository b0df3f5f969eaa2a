#!/usr/bin/env python3
"""The loader's Vulkan path (cirrdata.Loader(device='vulkan')) against its CPU path, on small
synthetic datasets: patch mode with the nnU-Net augmentation, volume mode (whole records and a fixed
crop/pad) and slice mode with the staging (cirrhosisstage) augmentation.

The reference is device='cpu', i.e. the C engine that tests/python/test_augment_scipy.py checks against
scipy: the same batches must come back (same records, order, corners, labels, masks exactly; images
within 1e-4 of the batch's data range, float32 on the device against the engine's float32/double). Also:
1 vs 2 worker threads give identical Vulkan batches (per-sample work does not depend on how samples are
grouped into device calls), resume, a GPU memory limit too small for any sample sends every share to
the CPU (counted; batches then equal the CPU's bit for bit), device='auto' keeps the CPU on a software
device (lavapipe), a lost device (injected) is recovered from or left for the CPU with the same
batches, a corrupt record is skipped alike (skip_corrupt), and the Khronos validation layer (synchronization validation on, as meson's env
sets) reports nothing, neither while a loader runs nor while its contexts are destroyed (the process's
count, cd_gpu_process_stats, checked after the loaders are closed). Every Vulkan run compared with the
CPU must have rendered its samples on the device: no share after a device error, no sample sent to
the C reference (fallback_calls, fallback_samples, gpu_reference all 0), except where a fallback is
the point (the memory limit, the injected losses). Skips (exit 77, reason printed) only when there is
no Vulkan device at all and none is required (vk_test.py: lavapipe installed, or
CIRRDATA_TEST_REQUIRE_VULKAN=1). Ends with `loader_vulkan: N passed, M failed`."""
import ctypes
import os
import shutil
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import cdshard  # noqa: E402
import harness  # noqa: E402
import vk_test  # noqa: E402
from harness import check  # noqa: E402

TOL = 1e-4  # of the data range; gpu.h documents ~1e-6 (float lerps and statistics vs the engine's doubles)


def batches(loader, limit=None):
    out = []
    for b in loader:
        out.append({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in b.items()})
        if limit is not None and len(out) == limit:
            break
    return out


def compare(name, ref, got, exact=False):
    """Same samples in the same order; images within TOL of the data range (exact: bit for bit)."""
    if not check(len(ref) == len(got), f"{name}: {len(ref)} vs {len(got)} batches"):
        return
    worst = 0.0
    for i, (a, b) in enumerate(zip(ref, got)):
        for k in ("label", "index", "slice", "corner", "mask"):
            if (a[k] is None) != (b[k] is None) or (a[k] is not None and not np.array_equal(a[k], b[k])):
                check(False, f"{name}: batch {i} '{k}' differs")
                return
        if not check(a["image"].shape == b["image"].shape, f"{name}: batch {i} shape {a['image'].shape} vs {b['image'].shape}"):
            return
        rng = float(a["image"].max() - a["image"].min()) or 1.0
        worst = max(worst, float(np.abs(a["image"].astype(np.float64) - b["image"]).max()) / rng)
    print(f"{name}: {len(ref)} batches, worst image error {worst:.3g} of the range")
    check(worst == 0 if exact else worst <= TOL, f"{name}: image error {worst:.3g} of the range")


def validation_clean(name, loader):
    s = loader.device_stats
    if os.environ.get("CIRRDATA_VK_VALIDATION") == "1":
        check(s["validation"], f"{name}: validation layer must be on under meson's env")
    check(s["validation_messages"] == 0, f"{name}: {s['validation_messages']} validation messages, first: {s['validation_first']}")
    return s


def on_device(name, s):
    """A Vulkan run that is compared with the CPU: every sample rendered on the device."""
    check(s["gpu_samples"] > 0 and s["gpu_reference"] == 0 and s["fallback_calls"] == 0 and s["fallback_samples"] == 0,
          f"{name}: samples must be rendered on the device, none by the C reference or after a device error: {s}")


def vulkan_devices(lib):
    """Number of Vulkan devices (0 with the reason printed). A missing validation layer is a broken
    setup, not a machine without Vulkan: that fails."""
    class Err(ctypes.Structure):
        _fields_ = [("status", ctypes.c_int), ("message", ctypes.c_char * 512)]
    so = ctypes.CDLL(lib)
    fn = so.cd_gpu_list_devices
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int), ctypes.POINTER(Err)]
    fn.restype = ctypes.c_int
    n, sel, err = ctypes.c_int(0), ctypes.c_int(-1), Err()
    st = fn(None, 0, ctypes.byref(n), ctypes.byref(sel), ctypes.byref(err))
    if st != 0 or n.value == 0:
        msg = err.message.decode(errors="replace")
        check("LAYER" not in msg, f"the validation layer is missing: {msg}")
        print(f"no Vulkan device: {msg}")
        return 0
    return n.value


def main():
    args = harness.parser(__doc__).parse_args()
    cirrdata = harness.load_binding(args.lib)
    from cirrdata.loader import Loader

    os.environ["CIRRDATA_VK_VALIDATION"] = "1"  # every Vulkan context here runs under the validation layer
    if vulkan_devices(args.lib) == 0:
        check(not vk_test.vulkan_required(), "no Vulkan device although one is required (lavapipe installed or "
              "CIRRDATA_TEST_REQUIRE_VULKAN=1)")
        if harness.CHECKS.failed:
            return harness.summary("loader_vulkan")
        print("skip: no Vulkan device, nothing to compare")
        return vk_test.SKIP
    work = tempfile.mkdtemp(prefix="cirrdata-loader-vk-", dir=args.workdir)
    try:
        src, recipe = harness.tiny_source(work, ncases=4)
        raw, s2d = os.path.join(work, "raw"), os.path.join(work, "s2d")
        for out, rec in ((raw, recipe), (s2d, "cirrhosisstage-2d")):
            r = harness.run([args.cirrdata, "convert", "--layout", "nnunet", src, "--out", out, "--recipe", rec, "--quiet"])
            check(r.returncode == 0, f"convert {rec}: {r.stderr}")

        def run(path, limit=None, **kw):
            with Loader(path, **kw) as l:
                got = batches(l, limit) + batches(l, limit)  # two epochs: new draws in the second
                return got, l.device, validation_clean(f"{kw}", l) if kw.get("device") == "vulkan" else l.device_stats

        # Patch mode, nnU-Net augmentation (elastic, rotation, scaling, mirroring, every intensity op
        # as nnU-Net draws them), patches larger than the records (zero padding).
        pk = dict(mode="patch", patch=(24, 20, 12), batch_size=3, augment="nnunet", seed=11, split="*")
        cpu, dev, _ = run(raw, **pk, threads=2, device="cpu")
        check(dev == "cpu", f"device name {dev}")
        vk1, dev, s1 = run(raw, **pk, threads=1, device="vulkan")
        check(dev.startswith("vulkan: "), f"device name {dev}")
        print(f"device: {dev}")
        compare("patch nnunet vulkan vs cpu", cpu, vk1)
        on_device("patch nnunet", s1)
        # 1 thread: one cd_gpu_augment per batch (the counters include batches prepared ahead in the ring)
        ns = s1["gpu_samples"] + s1["gpu_reference"]
        check(s1["gpu_calls"] >= len(cpu) and s1["fallback_calls"] == 0 and ns >= 8 and ns > s1["gpu_calls"],
              f"patch stats {s1}")
        check(s1["gpu_samples"] > 0, f"patch: nothing ran on the device {s1}")
        vk2, _, s2 = run(raw, **pk, threads=2, ring=1, device="vulkan")  # 2 workers split each batch: shares 2 + 1
        compare("patch vulkan 1 vs 2 threads", vk1, vk2, exact=True)
        on_device("patch 2 threads", s2)
        shares = sum((len(b["index"]) + 1) // 2 for b in cpu)
        check(s2["gpu_calls"] >= shares and s2["gpu_samples"] + s2["gpu_reference"] <= 2 * s2["gpu_calls"],
              f"2 threads, ring 1: a share of ceil(B / 2) samples per worker, {shares} calls: {s2}")

        # Volume mode: whole records (all 21x18x11 here) and a fixed crop/pad.
        vk = dict(mode="volume", patch=None, batch_size=2, augment="nnunet", seed=5, split="*", threads=1)
        got, _, sv = run(raw, **vk, device="vulkan")
        compare("volume vulkan vs cpu", run(raw, **vk, device="cpu")[0], got)
        on_device("volume", sv)
        vk["patch"] = (16, 24, 9)
        got, _, sv = run(raw, **vk, device="vulkan")
        compare("volume fixed size vulkan vs cpu", run(raw, **vk, device="cpu")[0], got)
        on_device("volume fixed size", sv)

        # Slice mode, staging augmentation, 3-channel 256x256 slices (a few batches per epoch).
        sk = dict(mode="slice", batch_size=4, augment="cirrhosisstage", seed=3, split="*", slices_with_mask_only=True, threads=2)
        sc, _, _ = run(s2d, limit=1, **sk, device="cpu")
        sv, _, ss = run(s2d, limit=1, **sk, device="vulkan")
        check(sc and sc[0]["image"].shape[1:] == (3, 256, 256, 1), "slice batches are (B, 3, 256, 256, 1)")
        compare("slice cirrhosisstage vulkan vs cpu", sc, sv)
        on_device("slice cirrhosisstage", ss)

        # The PyTorch helper passes the device through: torch tensors of the same batches. (Not under
        # AddressSanitizer: see test_loader.py on libtorch there.)
        if os.environ.get("CIRRDATA_ASAN_REEXEC"):
            print("note: BatchDataset part skipped under AddressSanitizer (runs in the normal build)")
        else:
            import torch
            from cirrdata.torch import BatchDataset
            tl = BatchDataset(raw, **pk, threads=1, augment_device="vulkan")
            try:
                tb = next(iter(tl))
                dev = tl.augment_device_in_use
                check(dev.startswith("vulkan: ") and isinstance(tb["image"], torch.Tensor)
                      and np.array_equal(tb["image"].numpy(), vk1[0]["image"]), f"BatchDataset on {dev}")
            finally:
                tl.close()

        # Resume on Vulkan: 1 batch, state, a fresh loader continues exactly (across the epoch end).
        rk = dict(pk, threads=2, device="vulkan")
        with Loader(raw, **rk) as l:
            next(iter(l))
            state = l.state_dict()
        check(state["epoch"] == 0 and state["position"] == 3, f"state after one batch: {state}")
        with Loader(raw, **rk) as l:
            l.load_state_dict(state)
            rest = batches(l) + batches(l)
            on_device("resume", validation_clean("resume", l))
        compare("vulkan resume", vk1[1:], rest, exact=True)

        # A memory limit no sample fits: every share falls back to the CPU, counted, same batches.
        lim, _, sl = run(raw, **pk, threads=1, device="vulkan", gpu_memory_limit=4096)
        compare("vulkan under a 4 KiB memory limit vs cpu", cpu, lim, exact=True)
        check(sl["gpu_calls"] == 0 and sl["fallback_samples"] >= 8 and "GPU memory" in sl["note"], f"fallback stats {sl}")

        # A lost device (injected: CIRRDATA_TEST_DEVICE_LOST=N makes each worker's first N device calls
        # report one, and the recovery runs for real): once, the context is created again and the
        # device keeps rendering; twice, the CPU takes over. Batches equal the CPU's either way.
        for n_lost, name in ((1, "re-created"), (2, "given up")):
            os.environ["CIRRDATA_TEST_DEVICE_LOST"] = str(n_lost)
            try:
                got, _, sd = run(raw, **pk, threads=1, device="vulkan")
            finally:
                del os.environ["CIRRDATA_TEST_DEVICE_LOST"]
            compare(f"vulkan, device lost and {name}, vs cpu", cpu, got)
            if n_lost == 1:
                check(sd["device_resets"] >= 1 and not sd["gpu_disabled"] and sd["gpu_samples"] > 0 and "lost" in sd["note"],
                      f"one loss: {sd}")
            else:
                check(sd["gpu_disabled"] and sd["fallback_samples"] > 0 and "lost again" in sd["note"], f"two losses: {sd}")

        # A corrupt chunk with skip_corrupt: the sample is dropped from its share, the others rendered.
        bad = os.path.join(work, "bad")
        shutil.copytree(raw, bad)
        manifest, _ = cdshard.read_dataset(raw)
        victim = manifest["records"][1]
        spath = os.path.join(bad, manifest["shards"][victim["shard"]]["path"])
        chunk = cdshard.shard_layout(spath)["records"][victim["index"]]["tensors"][0]["chunks"][0]
        with open(spath, "r+b") as f:
            f.seek(chunk["offset"] + 11)
            byte = f.read(1)
            f.seek(chunk["offset"] + 11)
            f.write(bytes([byte[0] ^ 0x20]))
        ck = dict(mode="volume", patch=None, batch_size=2, augment="nnunet", seed=5, split="*", threads=1, skip_corrupt=True)
        with Loader(bad, **ck, device="cpu") as l:
            bc = batches(l) + batches(l)
        with Loader(bad, **ck, device="vulkan") as l:
            bv = batches(l) + batches(l)
            skipped = l.skipped
            sk = validation_clean("skip_corrupt", l)
        compare("skip_corrupt vulkan vs cpu", bc, bv)
        on_device("skip_corrupt", sk)
        check(skipped == 2 and all(1 not in b["index"] for b in bv), f"skip_corrupt on vulkan: {skipped} skipped")

        # Without augmentation samples are exact crops, cut on the CPU whatever the device.
        na = dict(mode="patch", patch=(24, 20, 12), batch_size=2, seed=1, split="*", threads=1)
        nv, _, sn = run(raw, **na, device="vulkan")
        compare("no augmentation vulkan vs cpu", run(raw, **na, device="cpu")[0], nv, exact=True)
        check(sn["gpu_calls"] == 0 and sn["fallback_calls"] == 0, f"no augmentation: the device stays idle {sn}")

        # auto: a hardware GPU is used, a software one (lavapipe) is not (the reason is named).
        with Loader(raw, **pk, threads=1, device="auto") as l:
            name = l.device
        check(name.startswith("vulkan: ") or name.startswith("cpu (vulkan not used: "), f"auto: {name}")
        if "llvmpipe" in dev:
            check("CPU implementation" in name, f"auto on lavapipe keeps the CPU: {name}")
        print(f"auto: {name}")

        # Bad device names are errors, not crashes; a device that cannot be opened names the reason.
        try:
            Loader(raw, device="cuda").close()
            check(False, "device='cuda' must fail")
        except ValueError as e:
            check("vulkan" in str(e), f"bad device message: {e}")
        env = dict(os.environ, CIRRDATA_VK_DEVICE="no-such-device")
        code = ("import sys; sys.path.insert(0, %r); from cirrdata.loader import Loader\n"
                "Loader(%r, device='vulkan', augment='nnunet', threads=1).close()" % (harness.PYTHON_DIR, raw))
        r = harness.run(["/usr/bin/python3", "-c", code], env=env)
        check(r.returncode != 0 and "device 'vulkan'" in r.stderr and "no-such-device" in r.stderr,
              f"an unknown CIRRDATA_VK_DEVICE must fail naming it: {r.stderr[-600:]}")
        check(not harness.sanitizer_report(r.stderr), f"sanitizer report: {r.stderr[-2000:]}")
        # Every loader is closed: what the layer reported while their contexts were destroyed counts too.
        from cirrdata.model import vulkan_stats
        vs = vulkan_stats()
        check(vs["contexts"] > 0 and vs["validation_messages"] == 0,
              f"{vs['validation_messages']} validation messages in this process (teardown included), first: {vs['validation_first']}")
        del cirrdata
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return harness.summary("loader_vulkan")


if __name__ == "__main__":
    sys.exit(main())
