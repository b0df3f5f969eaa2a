#!/usr/bin/env python3
"""Lifecycle and option bounds of cirrdata.Loader (issue 15, "Nothing lost, nothing silent").

Closing: a live iterator's next step after close() raises ValueError('the loader is closed') (before the
fix it read the freed loader: garbage batches, heap-use-after-free under ASan); close() from another
thread while a step waits for its batch ends that step with the same error (no crash, no hang); batch
views handed out before close() keep the values they had (equal to copies taken before), the worker
threads and files being gone at once, and the ring is freed when the last view goes; the context
manager, close() twice, and collection (__del__) take the same path; every accessor of a closed loader
raises ValueError.

Bounds: every option that sizes an allocation or a loop, and the saved state, is refused with a message
that names the option, its bounds and the value: those the C field holds by the library, the others
(negative for an unsigned field, beyond 64 bits) by the binding in the same words.

A watchdog (faulthandler) ends a hung run after WATCHDOG_S with the threads' tracebacks. Ends with
`loader_lifecycle: N passed, M failed`.
"""
import faulthandler
import gc
import os
import shutil
import sys
import tempfile
import threading
import time
import weakref

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402
from harness import check  # noqa: E402

WATCHDOG_S = 240


def make_dataset(work, cli):
    """4 records of 64 x 56 x 24 int16 with structure and noise, masks with a blob; raw recipe."""
    rng = np.random.default_rng(15)
    shape = (64, 56, 24)
    g = np.indices(shape).astype(np.float64)
    cases = []
    for i in range(4):
        img = (300 * np.sin(g[0] / (4 + i)) + 200 * np.cos(g[1] / 5) + 10 * g[2] + rng.normal(0, 30, shape)).astype(np.int16)
        c = np.array(shape) / 2 + rng.uniform(-5, 5, 3)
        mask = (((g[0] - c[0]) / 14) ** 2 + ((g[1] - c[1]) / 12) ** 2 + ((g[2] - c[2]) / 6) ** 2 <= 1).astype(np.uint8)
        cases.append((f"case{i:02d}", img, mask, np.diag([1.0, 1.0, 2.0, 1.0])))
    src, ds = os.path.join(work, "src"), os.path.join(work, "ds")
    harness.write_nnunet(src, cases)
    recipe = harness.write_json(os.path.join(work, "raw.json"), dict(harness.TINY_RECIPE, chunk=[16, 16, 8]))
    r = harness.run([cli, "convert", "--layout", "nnunet", src, "--out", ds, "--recipe", recipe, "--quiet"], timeout=300)
    check(r.returncode == 0, f"convert: {r.stderr.strip()}")
    return ds


def raises(fn, exc, needle):
    """True when fn() raises exc with needle in its message (prints what it did otherwise)."""
    try:
        fn()
    except exc as e:
        if needle in str(e):
            return True
        print(f"  raised {type(e).__name__}: {e}")
        return False
    except Exception as e:  # noqa: BLE001 - reported
        print(f"  raised {type(e).__name__}: {e}")
        return False
    print("  raised nothing")
    return False


def closed_error(fn):
    return raises(fn, ValueError, "the loader is closed")


def ring_of(a):
    """The object that keeps a batch view's memory alive (the base chain's non-array end)."""
    while isinstance(a, np.ndarray):
        a = a.base
    return a


def settle(thr0, timeout=10.0):
    """Waits (briefly) for the thread count to come back to thr0; returns the last count."""
    t_end = time.monotonic() + timeout
    while True:
        n = harness.fd_thread_counts()[1]
        if n <= thr0 or time.monotonic() > t_end:
            return n
        time.sleep(0.02)


def test_close_then_next(Loader, ds, kw):
    """The issue's reproducer, and views held across close()."""
    fds0, thr0 = harness.fd_thread_counts()
    l = Loader(ds, **kw)
    it = iter(l)
    b = next(it)
    img, msk, idx = b["image"].copy(), b["mask"].copy(), b["index"].copy()
    check(img.shape == (2, 1, 48, 40, 16) and img.std() > 0, f"a batch of real data: {img.shape}, std {img.std()}")
    running = harness.fd_thread_counts()[1]
    check(running >= thr0 + 2, f"2 worker threads while open: {thr0} -> {running}")
    l.close()
    check(closed_error(lambda: next(it)), "next() of a live iterator after close() must raise ValueError('the loader is closed')")
    check(raises(lambda: next(it), StopIteration, ""), "the iterator is finished after that error")
    check(closed_error(lambda: next(iter(l))), "a new iterator of a closed loader must raise at its first step")
    # close() stopped the workers and closed the shards at once, though views of the ring are still held.
    fds1, thr1 = harness.fd_thread_counts()[0], settle(thr0)
    check(thr1 == thr0, f"worker threads must be gone after close() while views are held: {thr0} -> {thr1}")
    check(fds1 == fds0, f"file descriptors must be closed by close() while views are held: {fds0} -> {fds1}")
    # The views keep their values, also once the freed memory is reused (another loader, other arrays).
    check(np.array_equal(b["image"], img) and np.array_equal(b["mask"], msk), "views right after close() equal the copies")
    with Loader(ds, **dict(kw, seed=99)) as other:
        churn = [x["image"].sum() for x in other] + [x["image"].sum() for x in other]
    junk = [np.full(img.size, 7.0, np.float32) for _ in range(16)] + [bytearray(b"\xa5" * img.nbytes) for _ in range(16)]
    check(len(churn) == 4 and len(junk) == 32, f"churn: {len(churn)} batches")
    check(np.array_equal(b["image"], img) and np.array_equal(b["mask"], msk),
          "batch views used after close() must still hold the batch (equal to copies taken before close)")
    check(np.array_equal(b["index"], idx), "copied fields after close()")
    # A derived view alone keeps the ring; the ring goes with the last view.
    sub = b["image"][1, 0, 5:30]
    keeper = weakref.ref(ring_of(b["image"]).keep.ring)
    del b, it
    gc.collect()
    check(keeper() is not None and np.array_equal(sub, img[1, 0, 5:30]), "a slice of a view keeps the ring alive and valid")
    del sub
    gc.collect()
    check(keeper() is None, "the ring must be freed once the last view is gone")
    del l, junk


def test_accessors_after_close(Loader, ds, kw):
    l = Loader(ds, **kw)
    state = l.state_dict()
    l.close()
    l.close()  # idempotent
    for name, fn in (("len", lambda: len(l)), ("state_dict", l.state_dict), ("load_state_dict", lambda: l.load_state_dict(state)),
                     ("samples_per_epoch", lambda: l.samples_per_epoch), ("skipped", lambda: l.skipped),
                     ("cache_bytes", lambda: l.cache_bytes), ("io", lambda: l.io), ("device", lambda: l.device),
                     ("device_stats", lambda: l.device_stats)):
        check(closed_error(fn), f"{name} of a closed loader must raise ValueError('the loader is closed')")


def test_context_and_del(Loader, ds, kw):
    _, thr0 = harness.fd_thread_counts()
    with Loader(ds, **kw) as l:
        it = iter(l)
        b = next(it)
        img = b["image"].copy()
    check(closed_error(lambda: next(it)), "a live iterator after the with-block must raise ValueError")
    check(np.array_equal(b["image"], img), "a view taken inside the with-block keeps its values after it")
    del it, l, b
    # Collection: the finaliser closes the loader (threads gone) while a view keeps the ring readable.
    l = Loader(ds, **dict(kw, seed=4))
    b = next(iter(l))
    img = b["image"].copy()
    keeper = weakref.ref(ring_of(b["image"]).keep.ring)
    running = harness.fd_thread_counts()[1]
    del l
    gc.collect()
    thr1 = settle(thr0)
    check(running >= thr0 + 2 and thr1 == thr0, f"a collected loader must stop its threads: {thr0} -> {running} -> {thr1}")
    check(np.array_equal(b["image"], img), "a view of a collected loader keeps its values")
    del b
    gc.collect()
    check(keeper() is None, "the ring of a collected loader goes with its last view")


def test_close_from_thread(Loader, ds):
    """close() in the main thread while a consumer thread waits in next(): the consumer gets ValueError
    (or, closing between steps, at its next step), close() returns, nothing crashes or hangs."""
    kw = dict(batch_size=4, mode="patch", patch=(64, 56, 24), augment="nnunet", split="*", seed=5, threads=1)
    _, thr0 = harness.fd_thread_counts()
    with Loader(ds, **kw) as l:  # the time of a batch (several times longer under ASan), to close at various points
        epoch = list(l)  # warm-up
        t = time.monotonic()
        n = sum(1 for _ in range(4) for _ in l)
        per_batch = (time.monotonic() - t) / n
        del epoch
    slow, counts = [], []
    for delay in (0.0, 0.002, 0.01) + tuple(k * per_batch for k in (0.5, 1.5, 3, 6, 12)):
        l = Loader(ds, **kw)
        out = {"n": 0}

        def consume():
            try:
                while True:
                    for b in l:
                        out["view"] = b["image"]
                        out["n"] += 1
            except ValueError as e:
                out["err"] = e
            except BaseException as e:  # noqa: BLE001 - reported below
                out["other"] = e

        t = threading.Thread(target=consume)
        t.start()
        time.sleep(delay)
        t0 = time.monotonic()
        l.close()
        slow.append(time.monotonic() - t0)
        t.join(60)
        check(not t.is_alive(), f"close() after {delay} s: the consumer thread must end")
        check("closed" in str(out.get("err", "")) and "other" not in out,
              f"close() after {delay} s: the consumer must get ValueError('the loader is closed'), got {out.get('err') or out.get('other')!r} "
              f"after {out['n']} batches")
        if "view" in out:
            v = out["view"]
            check(v.shape == (4, 1, 64, 56, 24) and np.isfinite(v).all(), "a view held by the consumer stays readable after close()")
        counts.append(out["n"])
        del l, out
        gc.collect()
    print(f"close() from another thread took {[round(x, 4) for x in slow]} s; a batch takes {per_batch:.4f} s; batches consumed "
          f"before the close: {counts}")
    check(max(slow) < 30, f"close() must not wait long for a running step: {slow}")
    thr1 = settle(thr0)
    check(thr1 == thr0, f"threads after the closes: {thr0} -> {thr1}")


def c_and_py(Loader, ds, base, name, c_value, py_value, status="argument"):
    """Option name = c_value (refused by the library) and = py_value (does not fit the C field: refused by
    the binding): both CirrdataError with status, '<name> must be in' and the same words up to '(got'."""
    import cirrdata
    msgs = []
    for v in (c_value, py_value):
        try:
            Loader(ds, **dict(base, **{name: v})).close()
            msgs.append(None)
        except cirrdata.CirrdataError as e:
            msgs.append(e)
    ok = all(m is not None and m.status == status and str(m).startswith(f"{name} must be in ") for m in msgs)
    ok = ok and str(msgs[0]).endswith(f"(got {c_value})") and str(msgs[1]).endswith(f"(got {py_value})")
    ok = ok and str(msgs[0]).rsplit("(got", 1)[0] == str(msgs[1]).rsplit("(got", 1)[0]
    check(ok, f"{name}={c_value} / {py_value}: {[str(m) for m in msgs]}")
    return str(msgs[0])


def test_bounds(Loader, ds, kw):
    import cirrdata
    base = dict(kw)
    t0 = time.monotonic()

    def refused(opts, needles, status="argument"):
        try:
            Loader(ds, **dict(base, **opts)).close()
        except cirrdata.CirrdataError as e:
            ok = e.status == status and all(n in str(e) for n in needles)
            check(ok, f"{opts}: status {e.status}, message {e}")
            return str(e)
        check(False, f"{opts} must be refused")
        return ""

    # The examples, with the exact messages loader.h documents.
    m = c_and_py(Loader, ds, base, "batch_size", 0, -1)
    check(m == "batch_size must be in 1..65536 (got 0)", m)
    refused(dict(batch_size=10 ** 6), ["batch_size must be in 1..65536 (got 1000000)"])
    m = c_and_py(Loader, ds, base, "ring", 10 ** 6, -1)
    check(m == "ring must be in 0..64, 0 for the default 4 (got 1000000)", m)
    m = c_and_py(Loader, ds, base, "threads", 10 ** 6, 2 ** 40)
    check(m == "threads must be in 0..1024, 0 for one per online CPU (got 1000000)", m)
    refused(dict(threads=-1), ["threads must be in 0..1024", "(got -1)"])
    for f in (float("nan"), -0.1, 1.5):
        refused(dict(foreground_fraction=f), [f"foreground_fraction must be in [0, 1] (got {f:g})"])
    refused(dict(cache_bytes=-5), ["cache_bytes must be", "(got -5)"])
    refused(dict(cache_bytes=2 ** 62), ["cache_bytes must be in -1..", "physical memory", f"(got {2 ** 62})"])
    c_and_py(Loader, ds, base, "world_size", -1, 2 ** 40)
    refused(dict(rank=2, world_size=2), ["rank must be in 0..1 (world_size 2) (got 2)"])
    refused(dict(rank=-1, world_size=2), ["rank must be in 0..1 (world_size 2) (got -1)"])
    refused(dict(seed=-1), [f"seed must be in 0..{2 ** 64 - 1} (got -1)"])
    refused(dict(gpu_memory_limit=-1), ["gpu_memory_limit must be in", "(got -1)"])
    # Patches: <= 0, above the caps of cirrdata/limits.h (max_dim per axis, max_voxels per sample), beyond int64.
    lim = cirrdata.limits()
    dim = lim["max_dim"]
    pc = refused(dict(patch=(0, 40, 16)), [f"patch must be in 1..{dim} per axis (got 0 x 40 x 16)"])
    pp = refused(dict(patch=(2 ** 70, 40, 16)), [f"patch must be in 1..{dim} per axis (got {2 ** 70} x 40 x 16)"])
    check(pc.rsplit("(got", 1)[0] == pp.rsplit("(got", 1)[0], f"patch: C and binding wording: {pc} / {pp}")
    refused(dict(patch=(-3, 40, 16)), ["patch must be in 1..", "(got -3 x 40 x 16)"])
    refused(dict(patch=(dim + 1, 1, 1)), ["patch must be in", "CIRRDATA_MAX_DIM"], "limit")
    side = int(round(lim["max_voxels"] ** (1 / 3))) + 2
    refused(dict(patch=(side, side, side)), [f"patch {side} x {side} x {side}", "CIRRDATA_MAX_VOXELS"], "limit")
    refused(dict(mode="volume", patch=(48, 0, 16)), ["patch must be in 1..", "or all 0 for each record's own size", "(got 48 x 0 x 16)"])
    # The whole ring within the physical memory (names the options that size it).
    refused(dict(batch_size=65536, patch=(512, 512, 64)), ["the batch ring", "batch_size 65536", "physical memory"], "limit")
    # Slice mode ignores the patch (the slice is the record's plane): the default patch is not refused.
    print(f"refusing the options took {time.monotonic() - t0:.2f} s")
    check(time.monotonic() - t0 < 60, "refusing options must not allocate or start threads first")

    # $WORLD_SIZE / $RANK: a malformed value is named, not read as 0.
    code = ("import sys; sys.path.insert(0, %r); import cirrdata\n"
            "try:\n    cirrdata.Loader(%r, batch_size=2, mode='patch', patch=(48, 40, 16), split='*').close()\n"
            "except cirrdata.CirrdataError as e:\n    print(e)\n" % (harness.PYTHON_DIR, ds))
    r = harness.run([sys.executable, "-c", code], env=dict(os.environ, WORLD_SIZE="2x", RANK="0"))
    check("$WORLD_SIZE='2x' is not an integer in 1..2147483647" in r.stdout, f"malformed $WORLD_SIZE: {r.stdout} {r.stderr[-500:]}")

    # The saved state: epoch beyond the 32-bit sample streams, position past the epoch; negative or 2^64.
    with Loader(ds, **base) as l:
        n = l.samples_per_epoch
        good = l.state_dict()

        def bad_state(**kv):
            try:
                l.load_state_dict(dict(good, **kv))
            except cirrdata.CirrdataError as e:
                return str(e)
            return "accepted"
        ec, ep = bad_state(epoch=2 ** 32), bad_state(epoch=2 ** 64)
        check(ec == f"state epoch must be in 0..{2 ** 32 - 1} (got {2 ** 32})", ec)
        check(ep == f"state epoch must be in 0..{2 ** 32 - 1} (got {2 ** 64})", ep)
        pc, pn = bad_state(position=n), bad_state(position=-1)
        check(pc == f"state position must be in 0..{n - 1}, the samples of an epoch of this rank (got {n})", pc)
        check(pn == f"state position must be in 0..{n - 1}, the samples of an epoch of this rank (got -1)", pn)
        sn = bad_state(seed=-1)
        check(sn.startswith("state seed must be in 0..") and sn.endswith("(got -1)"), sn)
        # Refused states change nothing: the loader still delivers from where it was.
        l.load_state_dict(dict(good, epoch=2 ** 32 - 1))
        b = next(iter(l))
        check(b["epoch"] == 2 ** 32 - 1 and b["batch"] == 0, f"the largest epoch is accepted: {b['epoch']} {b['batch']}")


def main():
    args = harness.parser(__doc__).parse_args()
    harness.load_binding(args.lib)
    from cirrdata.loader import Loader
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    work = tempfile.mkdtemp(prefix="cirrdata-lifecycle-", dir=args.workdir)
    t0 = time.monotonic()
    try:
        ds = make_dataset(work, args.cirrdata)
        kw = dict(batch_size=2, mode="patch", patch=(48, 40, 16), split="*", seed=3, threads=2, views=True)
        # Warm the interpreter's lazily created state (numpy, ctypes, the library's) before counting threads.
        with Loader(ds, **kw) as l:
            next(iter(l))
        for name, fn in (("close then next", lambda: test_close_then_next(Loader, ds, kw)),
                         ("accessors", lambda: test_accessors_after_close(Loader, ds, kw)),
                         ("context manager and __del__", lambda: test_context_and_del(Loader, ds, kw)),
                         ("close from another thread", lambda: test_close_from_thread(Loader, ds)),
                         ("bounds", lambda: test_bounds(Loader, ds, kw))):
            t = time.monotonic()
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - one failure, the others still run
                harness.CHECKS.crashed(e)
            print(f"{name}: {time.monotonic() - t:.1f} s")
    finally:
        faulthandler.cancel_dump_traceback_later()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{time.monotonic() - t0:.1f} s in all")
    return harness.summary("loader_lifecycle")


if __name__ == "__main__":
    sys.exit(main())
