#!/usr/bin/env python3
"""`convert --part I/N` and `merge` (issue 18): parts balanced by input bytes, a merged dataset that is
byte for byte the one-machine conversion for N = 1..4, and every way of getting the parts wrong refused
with the part named.

- The source is skewed (one case holds about half the input bytes, others are tiny) and one case is
  truncated (skipped while converting), so the cuts, the shard layout across part boundaries and the
  order of the skipped cases are all exercised; shards are small, so merge both links part shards and
  writes shards anew.
- The cuts are computed here from the file sizes (the nearest prefix sum to k/N of the total) and must be
  the manifests' part ranges.
- Refused, naming the part: a missing part, a part given twice, a part of another N, a part whose range or
  case keys were edited (resealed manifest), a part of an older libcirrdata; --part outside 1..N; a second
  task writing the same part into the same folder; --part auto outside an array job or with inconsistent
  SLURM_ARRAY_* values (and auto inside one equals the explicit I/N).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402


def manifest(d):
    with open(os.path.join(d, "manifest.json")) as f:
        return json.load(f)


def skewed_source(root):
    """nnU-Net layout, 9 cases of very different sizes (random int16 noise: gzip keeps it near raw size)."""
    rng = np.random.default_rng(3)
    shapes = [(12, 10, 6), (40, 36, 30), (10, 8, 6), (14, 12, 8), (10, 10, 5), (24, 20, 16), (9, 9, 9),
              (30, 28, 20), (11, 10, 7)]
    cases = []
    for i, shp in enumerate(shapes):
        aff = np.diag([1.0, 1.0, 2.0, 1.0])
        img = rng.integers(-1000, 1000, shp, dtype=np.int16)
        mask = (rng.random(shp) < 0.2).astype(np.uint8)
        cases.append((f"case{i:02d}", img, mask, aff))
    harness.write_nnunet(root, cases)
    # A truncated image: skipped while converting (listed in source.skipped with its reason).
    victim = os.path.join(root, "imagesTr", "case04_0000.nii.gz")
    with open(victim, "r+b") as f:
        f.truncate(os.path.getsize(victim) // 2)


def case_bytes(src, m):
    """Input bytes per case, in the manifest's case order, from the files themselves."""
    out = []
    for e in m["source"]["inputs"]:
        out.append(sum(os.path.getsize(os.path.join(src, f[0])) for f in e["files"]))
    return out


def expected_ranges(sizes, n):
    """The cut rule of libcirrdata/dataset/partition.h, written independently: cut k is the j whose prefix
    sum is nearest to k/n of the total (the smaller j on a tie)."""
    total = sum(sizes)
    prefix = [0]
    for s in sizes:
        prefix.append(prefix[-1] + s)

    def cut(k):
        if k == 0:
            return 0
        if k == n:
            return len(sizes)
        target = total * k  # compare prefix * n with total * k: exact integers
        j = min(range(len(prefix)), key=lambda j: (abs(prefix[j] * n - target), j))
        return j

    return [(cut(i - 1), cut(i)) for i in range(1, n + 1)]


def convert_part(conv, out, i, n, env=None):
    r = harness.run(conv + ["--out", out, "--part", f"{i}/{n}" if i else "auto"], env=env)
    check(r.returncode == 0, f"--part {i}/{n}: {r.stderr.strip()}")
    return out


def main():
    args = harness.parser(lib=None).parse_args()
    cli = args.cirrdata
    work = tempfile.mkdtemp(prefix="cirrdata-parts-", dir=args.workdir)
    try:
        src = os.path.join(work, "src")
        skewed_source(src)
        recipe = harness.write_json(os.path.join(work, "tiny.json"), harness.TINY_RECIPE)
        conv = [cli, "convert", "--layout", "nnunet", src, "--recipe", recipe, "--threads", "1",
                "--shard-size", "300K", "--quiet"]
        whole = os.path.join(work, "whole")
        r = harness.run(conv + ["--out", whole])
        check(r.returncode == 0, f"one-machine convert: {r.stderr.strip()}")
        mw = manifest(whole)
        want_tree = harness.tree_hashes(whole)
        check(len(mw["shards"]) >= 3 and any(s["records"] > 1 for s in mw["shards"]),
              f"the layout needs several shards of several records: {[s['records'] for s in mw['shards']]}")
        check(len(mw["source"]["skipped"]) == 1, f"one case is skipped: {mw['source']['skipped']}")
        sizes = case_bytes(src, mw)
        check(max(sizes) > 0.4 * sum(sizes), f"the source must be skewed: {sizes}")

        parts = {}
        rebuilt = linked = 0
        for n in (1, 2, 3, 4):
            parts[n] = [convert_part(conv, os.path.join(work, f"p{n}-{i}"), i, n) for i in range(1, n + 1)]
            want = expected_ranges(sizes, n)
            got = [(manifest(d)["part"]["first_case"], manifest(d)["part"]["end_case"]) for d in parts[n]]
            check(got == want, f"N={n}: part ranges {got}, balanced by input bytes they are {want} (sizes {sizes})")
            pb = [manifest(d)["part"].get("bytes") for d in parts[n]]
            check(pb == [sum(sizes[a:b]) for a, b in want], f"N={n}: part bytes {pb}")
            merged = os.path.join(work, f"merged{n}")
            r = harness.run([cli, "merge", merged] + parts[n][::-1])  # any order
            check(r.returncode == 0, f"merge of {n} parts: {r.stderr.strip()}")
            got_tree = harness.tree_hashes(merged)
            diff = sorted(k for k in set(got_tree) | set(want_tree) if got_tree.get(k) != want_tree.get(k))
            check(not diff, f"N={n}: the merged dataset differs from the one-machine conversion in {diff}")
            for s in manifest(merged)["shards"]:
                if os.stat(os.path.join(merged, s["path"])).st_nlink > 1:
                    linked += 1
                else:
                    rebuilt += 1
        check(linked > 0 and rebuilt > 0, f"merge must both link part shards and write shards anew: {linked} linked, "
              f"{rebuilt} written")
        # N = 4 with its smallest part empty is allowed: here part 1 of 4 has the 2 cases before the big one.
        refusals(cli, conv, work, parts)
        slurm_auto(conv, work, parts)
        same_part_twice(conv, work)
    except Exception as e:  # noqa: BLE001
        harness.CHECKS.crashed(e)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return harness.summary("parts")


def refused(cli, work, what, dirs, want):
    out = os.path.join(work, "refused-" + what.replace(" ", "-"))
    r = harness.run([cli, "merge", out] + dirs)
    check(r.returncode == 1 and all(w in r.stderr for w in want),
          f"{what}: merge must be refused naming {want}: rc {r.returncode}: {r.stderr.strip()}")
    check(not os.path.exists(os.path.join(out, "manifest.json")), f"{what}: merge wrote a manifest")


def edited(work, d, name, edit):
    """A copy of part d whose manifest edit() changed, resealed (so only the edit is tested)."""
    e = os.path.join(work, name)
    shutil.copytree(d, e)
    m = manifest(e)
    edit(m)
    harness.write_manifest(e, m)
    return e


def refusals(cli, conv, work, parts):
    p4 = parts[4]
    refused(cli, work, "missing part", [p4[0], p4[1], p4[3]], ["part 3/4 is missing"])
    refused(cli, work, "part twice", p4 + [p4[1]], [p4[1], "part 2/4 given twice"])
    other_copy = shutil.copytree(p4[1], os.path.join(work, "p4-2-copy"))
    refused(cli, work, "part twice in two folders", [p4[0], p4[1], other_copy, p4[2], p4[3]],
            [other_copy, "given twice", p4[1]])
    refused(cli, work, "another N", [parts[3][0]] + p4[1:], [p4[1], "4-part conversion", parts[3][0]])

    def shift(m):
        m["part"]["first_case"] -= 1
    refused(cli, work, "overlapping parts", [p4[0], edited(work, p4[1], "p4-2-shifted", shift)] + p4[2:],
            ["p4-2-shifted", "part 2/4", "do not cover every case exactly once"])

    def keys(m):
        m["part"]["keys_xxh3"] = "0123456789abcdef"
    refused(cli, work, "other case keys", [p4[0], edited(work, p4[1], "p4-2-keys", keys)] + p4[2:],
            ["p4-2-keys", "case keys"])

    def old(m):
        del m["part"]["split"]
    refused(cli, work, "older part", [edited(work, p4[0], "p4-1-old", old)] + p4[1:], ["p4-1-old", "older libcirrdata"])
    refused(cli, work, "not a part", [os.path.join(work, "whole")] + p4[1:], ["whole", "not a part"])

    for bad in ("0/4", "5/4", "2/0", "-1/4", "1/4x", "auto/4"):
        r = harness.run(conv + ["--out", os.path.join(work, "bad-part"), "--part", bad])
        check(r.returncode == 2 and "bad --part" in r.stderr, f"--part {bad} must be a usage error: rc {r.returncode}: "
              f"{r.stderr.strip()}")
    check(not os.path.exists(os.path.join(work, "bad-part")), "a bad --part must write nothing")


def slurm_env(**kw):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update({f"SLURM_ARRAY_TASK_{k}": str(v) for k, v in kw.items()})
    return env


def slurm_auto(conv, work, parts):
    out = os.path.join(work, "auto-bad")
    cases = [("outside an array job", slurm_env(), "not a task of a Slurm array job"),
             ("task id past the array", slurm_env(ID=5, MIN=1, MAX=4, COUNT=4), "task id 5 is not one of"),
             ("task id below the array", slurm_env(ID=0, MIN=1, MAX=4, COUNT=4), "task id 0 is not one of"),
             ("ids not one range", slurm_env(ID=3, MIN=1, MAX=7, COUNT=3), "not one evenly spaced range"),
             ("not a number", slurm_env(ID="x", MIN=1, MAX=4, COUNT=4), "SLURM_ARRAY_TASK_ID='x'")]
    for what, env, want in cases:
        r = harness.run(conv + ["--out", out, "--part", "auto"], env=env)
        check(r.returncode == 2 and want in r.stderr, f"--part auto {what}: want '{want}': rc {r.returncode}: "
              f"{r.stderr.strip()}")
    check(not os.path.exists(out), "a refused --part auto must write nothing")
    # Array 0-6:2 (tasks 0, 2, 4, 6): task 4 is part 3 of 4, the same part as --part 3/4.
    d = convert_part(conv, os.path.join(work, "auto-3"), 0, 4, env=slurm_env(ID=4, MIN=0, MAX=6, COUNT=4, STEP=2))
    check(os.path.exists(os.path.join(d, "manifest.json")) and manifest(d)["part"] == manifest(parts[4][2])["part"],
          "--part auto in task 4 of --array=0-6:2 must convert part 3/4")


def same_part_twice(conv, work):
    """Two array tasks writing the same part into one folder: the second is refused at once while the first
    (stopped with SIGSTOP once it holds the folder) works; the first then finishes."""
    out = os.path.join(work, "same-part")
    cmd = conv + ["--out", out, "--part", "2/4"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.time()
    while time.time() - t0 < 60 and not os.path.isdir(os.path.join(out, "shards")) and first.poll() is None:
        time.sleep(0.0005)
    if first.poll() is None:
        os.kill(first.pid, signal.SIGSTOP)
    try:
        if first.returncode is not None:
            print("note: the first convert finished before it could be stopped; the same-part check is void this time")
            return
        r = harness.run(cmd, timeout=60)
        check(r.returncode != 0 and "another cirrdata process is writing into this folder" in r.stderr
              and f"pid {first.pid}" in r.stderr, f"a second task writing part 2/4 into {out} must be refused: "
              f"rc {r.returncode}: {r.stderr.strip()}")
    finally:
        if first.returncode is None:
            os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    check(first.returncode == 0, f"the first task must finish: {err.decode()}")


if __name__ == "__main__":
    sys.exit(main())
