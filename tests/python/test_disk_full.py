#!/usr/bin/env python3
"""`cirrdata convert` when the disk fills up: it must exit 1 with one line naming the file it could not
write and the reason (ENOSPC "No space left on device", EFBIG "File too large"), and what it leaves must
not look like a complete dataset (no manifest.json, or one that fails verify). After the space is back,
the same command completes and gives the same bytes as a conversion that never failed.

Two ways to run out of space:
  * a small tmpfs mounted for the test, at several sizes between "nothing fits" and "all but the
    manifest fits" (needs root and mount permission; otherwise this part is skipped with the reason);
  * RLIMIT_FSIZE (`ulimit -f`, works without root): writes past the limit fail with EFBIG. SIGXFSZ is
    ignored in the child, as a shell with `trap '' XFSZ` would, so the tool sees the error.
Ends with `disk full: N passed, M failed`.

  /usr/bin/python3 tests/python/test_disk_full.py --cirrdata build/tools/cirrdata
"""
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True
import harness  # noqa: E402
from harness import check, tree_hashes  # noqa: E402


def main():
    args = harness.parser(lib=None).parse_args()
    cli = args.cirrdata
    work = tempfile.mkdtemp(prefix="cirrdata-diskfull-", dir=args.workdir)
    mnt = os.path.join(work, "mnt")
    mounted = False
    try:
        src, recipe = harness.tiny_source(work, ncases=4)
        conv = [cli, "convert", "--layout", "nnunet", src, "--recipe", recipe, "--shard-size", "200K", "--quiet"]
        ref = os.path.join(work, "ref")
        r = harness.run(conv + ["--out", ref], timeout=300)
        check(r.returncode == 0, f"reference conversion: {r.stderr.strip()}")
        ref_hashes = tree_hashes(ref)
        shard_bytes = sum(os.path.getsize(os.path.join(ref, "shards", n)) for n in os.listdir(os.path.join(ref, "shards")))
        manifest_bytes = os.path.getsize(os.path.join(ref, "manifest.json"))

        def judge(r, out, what, errno_text):
            """The failed run: exit 1, one line naming a file under out and the reason; nothing complete."""
            err = r.stderr.strip()
            print(f"{what}: exit {r.returncode}: {err}")
            check(r.returncode == 1, f"{what}: exit {r.returncode} (want 1): {err!r}")
            check(err.count("\n") == 0 and out in err and errno_text in err, f"{what}: message must name the file and '{errno_text}': {err!r}")
            check(not harness.sanitizer_report(r.stderr), f"{what}: sanitizer report: {err[-800:]}")
            if os.path.exists(os.path.join(out, "manifest.json")):
                v = harness.run([cli, "verify", out, "--quiet"], timeout=300)
                check(v.returncode != 0, f"{what}: a manifest was left that verifies: the output looks complete")

        def resume_matches(out, what):
            """With space again (a copy on the normal disk), the same command finishes with the reference bytes."""
            again = os.path.join(work, "again")
            shutil.rmtree(again, ignore_errors=True)
            shutil.copytree(out, again, symlinks=True)
            r = harness.run(conv + ["--out", again], timeout=300)
            check(r.returncode == 0, f"{what}: rerun with space: {r.stderr.strip()}")
            check(tree_hashes(again) == ref_hashes, f"{what}: rerun with space differs from an uninterrupted conversion")

        # 1. RLIMIT_FSIZE: each file may grow to at most `limit` bytes.
        largest = max(os.path.getsize(os.path.join(ref, "shards", n)) for n in os.listdir(os.path.join(ref, "shards")))
        for limit in (0, 4096, 64 << 10, largest - 1):
            out = os.path.join(work, f"fsize-{limit}")

            def child(limit=limit):
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

            r = harness.run(conv + ["--out", out], timeout=300, preexec_fn=child)
            judge(r, out, f"RLIMIT_FSIZE {limit}", "File too large")
            resume_matches(out, f"RLIMIT_FSIZE {limit}")

        # 2. A small tmpfs: nothing fits, part of the shards fit, all shards but not the manifest fit.
        os.makedirs(mnt)
        reason = None
        if os.geteuid() != 0:
            reason = "not root"
        else:
            m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt], capture_output=True, text=True)
            if m.returncode:
                reason = f"mount -t tmpfs failed: {m.stderr.strip()}"
            else:
                subprocess.run(["umount", mnt], check=True)
        if reason:
            print(f"note: tmpfs part skipped ({reason}); the RLIMIT_FSIZE part ran")
        else:
            # tmpfs counts whole pages; directories take none. The manifest is written last.
            # Then every page count from "the shards alone" up to the first size where it succeeds, so
            # the journal and the manifest (written last) run out of space too.
            sizes = [4096, shard_bytes // 4, shard_bytes // 2] + list(range(shard_bytes, shard_bytes + 4 * manifest_bytes + (64 << 10), 4096))
            failed_on = set()
            for size in sizes:
                size = max(4096, size // 4096 * 4096)
                subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mnt], check=True)
                mounted = True
                out = os.path.join(mnt, "out")
                r = harness.run(conv + ["--out", out], timeout=300)
                if r.returncode == 0 and size >= shard_bytes:
                    check(tree_hashes(out) == ref_hashes, f"tmpfs of {size} bytes: a conversion that fits differs from the reference")
                    print(f"tmpfs of {size} bytes: fits")
                    subprocess.run(["umount", mnt], check=True)
                    mounted = False
                    break
                judge(r, out, f"tmpfs of {size} bytes", "No space left on device")
                failed_on.add(os.path.basename(r.stderr.split(":")[1].strip()) if r.stderr.count(":") > 1 else "?")
                resume_matches(out, f"tmpfs of {size} bytes")
                subprocess.run(["umount", mnt], check=True)
                mounted = False
            print(f"tmpfs: failures seen while writing {sorted(failed_on)}")
            check(any(n.startswith("manifest.json") for n in failed_on), "no tmpfs size made the manifest write fail")
    finally:
        if mounted:
            subprocess.run(["umount", mnt])
        shutil.rmtree(work, ignore_errors=True)
    return harness.summary("disk full")


if __name__ == "__main__":
    sys.exit(main())
