#!/usr/bin/env python3
"""Soak test of the training loader: 20 epochs over a small synthetic dataset (patch mode, nnU-Net
augmentation, 2 worker threads), with a resume (state_dict / load_state_dict into a new loader) in the
middle of epoch 10 whose batches must equal the uninterrupted run's from there on. Then 10 + 40 loaders are
created, iterated one batch and destroyed.

Resources, from /proc/self: the open file descriptors (fd/) and threads (task/) after every loader is
closed must equal those before the first was created; VmRSS after the warm-up (2 epochs: the
decoded-chunk cache and the per-thread buffers are then at their full size) and at the end of epoch 20
may differ by at most RSS_SLACK_KB (see below), and likewise before and after the 40 create/destroy
cycles. Ends with `soak: N passed, M failed`.

  /usr/bin/python3 tests/python/test_soak.py --cirrdata build/tools/cirrdata --lib build/libcirrdata/libcirrdata.so
"""
import hashlib
import os
import shutil
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True
import harness  # noqa: E402
from harness import check, rss_kb  # noqa: E402
from harness import fd_thread_counts as counts  # noqa: E402

EPOCHS = 20
# A leak of one batch's image (2 x 1 x 40 x 40 x 16 float32 = 200 KiB) per batch over the 18 measured
# epochs x 6 batches would add ~21 MiB; one leaked chunk per batch ~2 MiB. glibc's arenas for 2 threads and
# Python's allocator move RSS by a few MiB without any leak, so 4 MiB separates noise from a leak that
# grows with the work.
RSS_SLACK_KB = 4096


def make_source(root, ncases=12, seed=7):
    rng = np.random.default_rng(seed)
    shape = (56, 48, 24)
    g = np.indices(shape).astype(np.float64)

    def case(i):
        aff = np.diag([1.2, 1.2, 2.5, 1.0])
        img = (300 + 100 * np.sin(g[0] / 5 + i) * np.cos(g[1] / 7) + rng.normal(0, 15, shape)).astype(np.float32)
        c = np.array(shape) / 2 + rng.uniform(-6, 6, 3)
        mask = (((g[0] - c[0]) / 12) ** 2 + ((g[1] - c[1]) / 10) ** 2 + ((g[2] - c[2]) / 6) ** 2 <= 1).astype(np.uint8)
        return f"s{i:02d}", img, mask, aff

    harness.write_nnunet(root, (case(i) for i in range(ncases)))


def digest(b):
    h = hashlib.sha256()
    for k in ("image", "mask", "index", "corner", "label"):
        h.update(np.ascontiguousarray(b[k]).tobytes())
    return h.hexdigest()


def main():
    args = harness.parser().parse_args()
    harness.load_binding(args.lib)
    from cirrdata.loader import Loader
    # Under AddressSanitizer freed memory sits in ASan's quarantine (up to 256 MiB) and RSS says nothing
    # about leaks: the RSS checks run in the normal build; the valgrind test checks the loader for leaks.
    asan = bool(os.environ.get("CIRRDATA_ASAN_REEXEC"))
    if asan:
        print("note: VmRSS limits not applied under AddressSanitizer (quarantine); fds, threads and resume still checked")
    work = tempfile.mkdtemp(prefix="cirrdata-soak-", dir=args.workdir)
    t0 = time.monotonic()
    try:
        src, ds = os.path.join(work, "src"), os.path.join(work, "ds")
        make_source(src)
        r = harness.run([args.cirrdata, "convert", "--layout", "nnunet", src, "--out", ds, "--quiet",
                         "--shard-size", "400K"], timeout=300)
        check(r.returncode == 0, f"convert: {r.stderr.strip()}")
        kw = dict(batch_size=2, mode="patch", patch=(40, 40, 16), augment="nnunet", seed=11, split="*", threads=2)

        # Warm the interpreter's own lazily created state (numpy, ctypes, the library) before counting.
        with Loader(ds, **kw) as l:
            next(iter(l))
        fds0, thr0 = counts()

        # The uninterrupted run.
        full, rss = [], {}
        with Loader(ds, **kw) as l:
            per_epoch = len(l)
            for e in range(EPOCHS):
                for b in l:
                    full.append(digest(b))
                rss[e + 1] = rss_kb()
            check(counts()[1] >= thr0 + 2, "the loader's 2 worker threads should be running")
        check(len(full) == EPOCHS * per_epoch, f"{len(full)} batches in {EPOCHS} epochs of {per_epoch}")
        check(len(set(full)) == len(full), "augmented batches should all differ")
        growth = rss[EPOCHS] - rss[2]
        print(f"{EPOCHS} epochs x {per_epoch} batches; VmRSS after epoch 2: {rss[2]} kB, after epoch {EPOCHS}: "
              f"{rss[EPOCHS]} kB (growth {growth} kB); per epoch: {[rss[e] for e in sorted(rss)]}")
        check(asan or growth <= RSS_SLACK_KB, f"VmRSS grew by {growth} kB from epoch 2 to {EPOCHS} (slack {RSS_SLACK_KB} kB)")

        # The same with a resume in the middle of epoch 10: a new loader from the state continues identically.
        stop = 9 * per_epoch + per_epoch // 2
        got = []
        with Loader(ds, **kw) as l:
            it = iter(l)
            while len(got) < stop:
                try:
                    got.append(digest(next(it)))
                except StopIteration:
                    it = iter(l)
            state = l.state_dict()
        check(state["epoch"] == 9, f"state after {stop} batches: {state}")
        with Loader(ds, **dict(kw, threads=1)) as l:  # another thread count: results must not depend on it
            l.load_state_dict(state)
            while len(got) < len(full):
                n = len(got)
                got.extend(digest(b) for b in l)
                if len(got) == n:
                    break
        check(got == full, f"the resumed run differs from the uninterrupted one from batch "
              f"{next((i for i, (a, b) in enumerate(zip(got, full)) if a != b), min(len(got), len(full)))}")

        # Create/destroy cycles, after 10 to let glibc's per-thread arenas reach their size.
        for i in range(10):
            with Loader(ds, **dict(kw, seed=100 + i)) as l:
                next(iter(l))
        rss_a = rss_kb()
        for i in range(40):
            with Loader(ds, **dict(kw, seed=i)) as l:
                next(iter(l))
        rss_b = rss_kb()
        print(f"40 create/destroy cycles: VmRSS {rss_a} -> {rss_b} kB")
        check(asan or rss_b - rss_a <= RSS_SLACK_KB, f"VmRSS grew by {rss_b - rss_a} kB over 40 loader lifetimes")
        fds1, thr1 = counts()
        print(f"fds {fds0} -> {fds1}, threads {thr0} -> {thr1}; {time.monotonic() - t0:.1f} s")
        check(fds1 == fds0, f"file descriptors: {fds0} before, {fds1} after")
        check(thr1 == thr0, f"threads: {thr0} before, {thr1} after")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return harness.summary("soak")


if __name__ == "__main__":
    sys.exit(main())
