#!/usr/bin/env python3
"""`merge` joins only the parts of one conversion, and `verify` checks that the manifest refers to every
record exactly once.

- Parts of another source tree, of the source in another state (one case edited between the parts), with
  --healthy or --pair-t1t2 among plain parts, or with case ranges that do not tile the case list (a
  hand-edited, resealed manifest) are refused, naming the part and what differs; nothing is written.
- The merged dataset carries the conversion's fingerprint: `convert` of the whole source into it finds it
  finished (same records), as for a one-machine conversion.
- merge never overwrites a file already in the output's shards/ that is not the part's own shard, and never
  writes through a link planted at its copy temporaries; on a full disk it reports the real errno (not
  the EXDEV of the hard link it tried first).
- verify (and every reader) refuses a sealed manifest with `records: []` or a record entry given twice.
"""
import json
import os
import resource
import shutil
import signal
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def manifest(d):
    with open(os.path.join(d, "manifest.json")) as f:
        return json.load(f)


def main():
    args = harness.parser(lib=None).parse_args()
    cli = args.cirrdata
    work = tempfile.mkdtemp(prefix="cirrdata-merge-", dir=args.workdir)
    try:
        src, recipe = harness.tiny_source(work, ncases=6)
        conv = [cli, "convert", "--layout", "nnunet", "--recipe", recipe, "--shard-size", "8K", "--quiet"]

        def part(source, i, n, out, extra=()):
            r = harness.run(conv + [source, "--out", out, "--part", f"{i}/{n}", *extra])
            check(r.returncode == 0, f"part {i}/{n} of {source}: {r.stderr.strip()}")
            return out

        p1, p2 = part(src, 1, 2, os.path.join(work, "p1")), part(src, 2, 2, os.path.join(work, "p2"))

        def refused(what, parts, want, out=None):
            out = out or os.path.join(work, "merged-" + what.replace(" ", "-"))
            r = harness.run([cli, "merge", out] + parts)
            check(r.returncode != 0 and all(w in r.stderr for w in want), f"{what}: merge must be refused naming {want}: "
                  f"rc {r.returncode}: {r.stderr.strip()}")
            check(not os.path.exists(os.path.join(out, "manifest.json")), f"{what}: merge wrote a manifest")

        # Another source tree: the same case names, other voxels.
        other = os.path.join(work, "other")
        harness.make_source(other, ncases=6, seed=99)
        q2 = part(other, 2, 2, os.path.join(work, "q2"))
        refused("another source tree", [p1, q2], [q2, "part 2", "another source tree"])
        # The same tree, one case edited (new mtime) between converting part 1 and part 2.
        edited = os.path.join(work, "edited")
        shutil.copytree(src, edited, copy_function=shutil.copy2)
        e1 = part(edited, 1, 2, os.path.join(work, "e1"))
        img = os.path.join(edited, "imagesTr", "case04_0000.nii.gz")
        st = os.stat(img)
        os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
        e2 = part(edited, 2, 2, os.path.join(work, "e2"))
        refused("the source edited between parts", [e1, e2], ["case04", "modified", "part 2"])
        # Hand-edited case ranges (resealed, so only the check of the ranges can tell).
        bad = os.path.join(work, "p2-bad")
        shutil.copytree(p2, bad)
        m = manifest(bad)
        m["part"]["first_case"] += 1
        harness.write_manifest(bad, m)
        refused("case ranges that leave a gap", [p1, bad], ["do not cover every case"])

        # The merged dataset is the conversion's: a one-machine convert into it finds it finished.
        merged = os.path.join(work, "merged")
        r = harness.run([cli, "merge", merged, p2, p1])
        check(r.returncode == 0, f"merge: {r.stderr.strip()}")
        whole = os.path.join(work, "whole")
        r = harness.run(conv + [src, "--out", whole])
        check(manifest(merged)["source"]["fingerprint"] == manifest(whole)["source"]["fingerprint"],
              "the merged dataset's fingerprint must be the one-machine conversion's")
        before = harness.tree_hashes(merged)
        r = harness.run(conv + [src, "--out", merged])
        check(r.returncode == 0 and harness.tree_hashes(merged) == before, f"convert into the merged dataset must find it finished: {r.stderr}")

        # Foreign bytes already in the output's shards/: refused, kept.
        out = os.path.join(work, "merge-foreign")
        os.makedirs(os.path.join(out, "shards"))
        name = manifest(whole)["shards"][0]["path"]  # the merged dataset's names are the one-machine conversion's
        with open(os.path.join(out, name), "wb") as f:
            f.write(b"not that shard")
        refused("a foreign file at a shard's name", [p1, p2], [name, "never overwrites"], out=out)
        check(open(os.path.join(out, name), "rb").read() == b"not that shard", "merge overwrote a foreign file")

        cirrmri600(cli, work)
        copy_path(cli, work, p1, p2)
        references(cli, work, merged)
    except Exception as e:  # noqa: BLE001
        harness.CHECKS.crashed(e)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return harness.summary("merge_checks")


def cirrmri600(cli, work):
    """--healthy and --pair-t1t2 parts among plain ones."""
    src = os.path.join(work, "cm")
    r = harness.run([cli, "synth", "--layout", "cirrmri600", src, "--cases", "4", "--quiet"])
    check(r.returncode == 0, f"synth: {r.stderr}")
    recipe = harness.write_json(os.path.join(work, "tiny.json"), harness.TINY_RECIPE)
    base = [cli, "convert", "--layout", "cirrmri600", src, "--recipe", recipe, "--quiet"]
    outs = {}
    for name, i, extra in (("plain1", 1, []), ("plain2", 2, []), ("healthy2", 2, ["--healthy"]), ("pair2", 2, ["--pair-t1t2"])):
        outs[name] = os.path.join(work, "cm-" + name)
        r = harness.run(base + ["--out", outs[name], "--part", f"{i}/2"] + extra)
        check(r.returncode == 0, f"cirrmri600 part {name}: {r.stderr}")
    for name, want in (("healthy2", "healthy"), ("pair2", "pairing")):
        out = os.path.join(work, "cm-merged-" + name)
        r = harness.run([cli, "merge", out, outs["plain1"], outs[name]])
        check(r.returncode != 0 and want in r.stderr and outs[name] in r.stderr,
              f"a {want} part among plain ones must be refused: rc {r.returncode}: {r.stderr.strip()}")
    r = harness.run([cli, "merge", os.path.join(work, "cm-merged"), outs["plain1"], outs["plain2"]])
    check(r.returncode == 0, f"plain parts merge: {r.stderr.strip()}")


def copy_path(cli, work, p1, p2):
    """Parts on another file system than the output (tmpfs /dev/shm): shards are copied, not linked."""
    shm = "/dev/shm"
    if not os.path.isdir(shm) or os.stat(shm).st_dev == os.stat(work).st_dev:
        print("note: no separate file system for the parts: the copy path was not exercised")
        return
    far = tempfile.mkdtemp(prefix="cirrdata-merge-parts-", dir=shm)
    try:
        parts = [shutil.copytree(p, os.path.join(far, os.path.basename(p))) for p in (p1, p2)]
        # A full disk during the copy: the message carries the write's errno.
        out = os.path.join(work, "merge-fsize")

        def child():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

        r = harness.run([cli, "merge", out] + parts, preexec_fn=child)
        check(r.returncode == 1 and "File too large" in r.stderr and "cross-device" not in r.stderr,
              f"merge on a full disk must report the write's errno: rc {r.returncode}: {r.stderr.strip()}")
        # Links planted at the copy temporaries.
        victim = os.path.join(work, "merge-victim")
        with open(victim, "w") as f:
            f.write("precious\n")
        out = os.path.join(work, "merge-planted")
        os.makedirs(os.path.join(out, "shards"))
        for p in parts:
            for sh in manifest(p)["shards"]:
                os.symlink(victim, os.path.join(out, sh["path"] + ".tmp"))
        r = harness.run([cli, "merge", out] + parts)
        check(r.returncode == 0, f"merge by copying: {r.stderr.strip()}")
        check(open(victim).read() == "precious\n", "merge wrote through a link planted at a copy temporary")
        check(harness.run([cli, "verify", out, "--quiet"]).returncode == 0, "the copied merge must verify")
    finally:
        shutil.rmtree(far, ignore_errors=True)


def references(cli, work, merged):
    """records: [] and a duplicated record entry, each in a resealed manifest."""
    for what, edit, want in (("records: []", lambda m: m.update(records=[]), "not referenced"),
                             ("a record listed twice", lambda m: m["records"].append(dict(m["records"][0])), "both refer to record")):
        d = os.path.join(work, "ref-" + what.replace(" ", "").replace(":", "").replace("[]", "empty"))
        shutil.copytree(merged, d)
        m = manifest(d)
        edit(m)
        harness.write_manifest(d, m)
        r = harness.run([cli, "verify", d])
        check(r.returncode == 1 and want in r.stderr and "manifest.json" in r.stderr,
              f"verify must refuse {what}: rc {r.returncode}: {r.stderr.strip()}")
        r = harness.run([cli, "inspect", d])
        check(r.returncode == 1 and want in r.stderr, f"inspect must refuse {what}: rc {r.returncode}: {r.stderr.strip()}")


if __name__ == "__main__":
    sys.exit(main())
