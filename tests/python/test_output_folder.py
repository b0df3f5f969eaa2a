#!/usr/bin/env python3
"""What `convert` does with an output folder that already holds something: nothing a user handed us is
lost or silently changed.

- Two writers: a second `convert` (or `merge`) into a folder another process is converting into fails at
  once, naming the holder (pid); the first finishes with the bytes of an undisturbed conversion.
- Someone else's data: shards of another dataset whose manifest is missing or damaged, or stray shard
  files, are never deleted: convert refuses, naming them, and leaves every byte as it was.
- A changed source: a same-size edit of one case (a new modification time) is noticed on a rerun of a
  finished conversion (refused, the case named) and on a resume after a kill (the case named, the shards
  before it kept, the rest converted again): the result equals a fresh conversion of the edited source.
- The resume journal (a line per shard, each with its own XXH3-64; written here from the format in
  schemas/shard-format.md): a damaged line means converting again from the shard it describes; a damaged
  header with shards present is refused, nothing deleted; the journal holds each record once.
- Links planted at the names convert writes (shard temporaries, the journal's and the manifest's
  temporaries, the lock file, shards/ itself) never make it write outside --out.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

JOURNAL = ".convert-journal.jsonl"


def make_nii_source(root, ncases, seed=3):
    """An nnU-Net v2 layout of uncompressed .nii cases (so that a voxel can be edited in place, at the same
    size). Returns {case name: image path}."""
    import numpy as np
    import nibabel as nib
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "imagesTr"))
    os.makedirs(os.path.join(root, "labelsTr"))
    shape = (12, 10, 6)
    paths = {}
    for i in range(ncases):
        aff = np.diag([1.5, 1.25, 3.0, 1.0])
        img = rng.integers(-500, 1500, shape).astype(np.int16)
        mask = np.zeros(shape, np.uint8)
        mask[3:9, 2:8, 1:5] = 1
        name = f"case{i:02d}"
        p = os.path.join(root, "imagesTr", f"{name}_0000.nii")
        nib.save(nib.Nifti1Image(img, aff), p)
        nib.save(nib.Nifti1Image(mask, aff), os.path.join(root, "labelsTr", f"{name}.nii"))
        paths[name] = p
    harness.write_json(os.path.join(root, "dataset.json"), {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "liver": 1},
                                                          "numTraining": ncases, "file_ending": ".nii"})
    return paths


def edit_voxel_same_size(path, delta=7):
    """Changes the first voxel of an int16 .nii in place: same size, new content, new mtime."""
    import nibabel as nib
    off = int(nib.load(path).header["vox_offset"])
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(off)
        v = int.from_bytes(f.read(2), "little", signed=True)
        f.seek(off)
        f.write(((v + delta) & 0xFFFF).to_bytes(2, "little"))
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a clock that did not tick stays covered
    assert os.path.getsize(path) == size


def manifest(d):
    with open(os.path.join(d, "manifest.json")) as f:
        return json.load(f)


def journal_line(obj):
    import xxhash
    text = json.dumps(obj, separators=(",", ":"))
    return "%016x %s\n" % (xxhash.xxh3_64_intdigest(text.encode()), text)


def journal_from_manifest(d, shards_kept=None):
    """The journal an interrupted run of d's conversion would have left, written from the format's
    description: a header (options, fingerprint, part, case range, inputs), then one line per finished shard
    with only that shard's record entries. Removes the manifest. Returns the journal's lines."""
    m = manifest(d)
    src = m["source"]
    n = len(src["inputs"])
    header = {"journal": "cirrdata-convert", "version": 1, "options": src["options"], "fingerprint": src["fingerprint"],
              "part": [0, 0], "cases": [0, n, n], "inputs": src["inputs"]}
    keys = [x["key"] for x in src["inputs"]]
    lines = [journal_line(header)]
    shards = m["shards"] if shards_kept is None else m["shards"][:shards_kept]
    for s_no, sh in enumerate(shards):
        entries = [e for e in m["records"] if e["shard"] == s_no]
        end_case = keys.index(entries[-1]["key"]) + 1
        shard = {"path": sh["path"], "size": sh["size"], "records": sh["records"], "xxh3_128": sh["xxh3_128"], "end_case": end_case}
        lines.append(journal_line({"shard": shard, "entries": entries, "skipped": []}))
    with open(os.path.join(d, JOURNAL), "w") as f:
        f.writelines(lines)
    os.unlink(os.path.join(d, "manifest.json"))
    return lines


def main():
    args = harness.parser(lib=None).parse_args()
    cli = args.cirrdata
    work = tempfile.mkdtemp(prefix="cirrdata-outfolder-", dir=args.workdir)
    try:
        src = os.path.join(work, "src")
        images = make_nii_source(src, 8)
        recipe = harness.write_json(os.path.join(work, "tiny.json"), harness.TINY_RECIPE)
        conv = [cli, "convert", "--layout", "nnunet", src, "--recipe", recipe, "--shard-size", "8K", "--threads", "1", "--quiet"]
        ref = os.path.join(work, "ref")
        r = harness.run(conv + ["--out", ref])
        check(r.returncode == 0, f"reference conversion: {r.stderr}")
        ref_hashes = harness.tree_hashes(ref)
        nshards = len(manifest(ref)["shards"])
        check(nshards >= 4, f"the reference needs several shards (has {nshards})")

        two_writers(cli, conv, work, ref_hashes)
        planted_links(cli, conv, work, ref_hashes)
        foreign_data(cli, conv, work, recipe, src)
        journal_damage(cli, conv, work)
        changed_source(cli, conv, work, images)  # last: it leaves case03's modification time changed
    except Exception as e:  # noqa: BLE001
        harness.CHECKS.crashed(e)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return harness.summary("output_folder")


def two_writers(cli, conv, work, ref_hashes):
    """A second writer is refused at once while the first holds the folder (stopped with SIGSTOP after it
    took the lock, so the timing is not left to chance); the first then finishes undisturbed."""
    parts = []
    for i in (1, 2):
        parts.append(os.path.join(work, f"two-part{i}"))
        r = harness.run(conv + ["--out", parts[-1], "--part", f"{i}/2"])
        check(r.returncode == 0, f"part {i}: {r.stderr}")
    out = os.path.join(work, "shared-out")
    first = subprocess.Popen(conv + ["--out", out], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # shards/ appears once the first writer holds the folder (it is created after the lock is taken).
    t0 = time.time()
    while time.time() - t0 < 60 and not os.path.isdir(os.path.join(out, "shards")) and first.poll() is None:
        time.sleep(0.0005)
    if first.poll() is None:
        os.kill(first.pid, signal.SIGSTOP)
    try:
        if first.returncode is not None:
            print("note: the first convert finished before it could be stopped; the two-writer check is void this time")
            return
        for what, cmd in (("convert", conv + ["--out", out]),
                          ("convert with another recipe", conv[:-1] + ["--out", out, "--shard-size", "1M"]),
                          ("merge", [cli, "merge", out] + parts)):
            t = time.time()
            r = harness.run(cmd, timeout=60)
            took = time.time() - t
            check(r.returncode != 0 and "another cirrdata process is writing into this folder" in r.stderr
                  and f"pid {first.pid}" in r.stderr and "convert" in r.stderr,
                  f"second writer ({what}) must be refused naming the holder: rc {r.returncode}: {r.stderr.strip()}")
            check(took < 20, f"second writer ({what}) must fail at once, took {took:.1f} s")
    finally:
        if first.returncode is None:
            os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    check(first.returncode == 0, f"the first convert must finish: {err.decode()}")
    check(harness.tree_hashes(out) == ref_hashes, "the first writer's output differs from an undisturbed conversion")
    check(not os.path.exists(os.path.join(out, ".cirrdata.lock")), "the lock file is removed when the writer is done")


def foreign_data(cli, conv, work, recipe, src):
    """Shards convert cannot vouch for are refused and left byte for byte."""
    other = os.path.join(work, "other")
    r = harness.run(conv + ["--out", other, "--shard-size", "16K"])
    check(r.returncode == 0, f"other dataset: {r.stderr}")
    before = harness.tree_hashes(other)
    mpath = os.path.join(other, "manifest.json")
    good = open(mpath, "rb").read()

    def refused(what, want_in_err):
        after_manifest = open(mpath, "rb").read() if os.path.exists(mpath) else None
        r = harness.run(conv + ["--out", other])
        check(r.returncode == 1 and all(w in r.stderr for w in want_in_err), f"{what}: must be refused naming {want_in_err}: "
              f"rc {r.returncode}: {r.stderr.strip()}")
        now = harness.tree_hashes(other)
        now.pop("manifest.json", None)
        keep = dict(before)
        keep.pop("manifest.json", None)
        check(now == keep, f"{what}: the other dataset's shards were changed or deleted")
        if after_manifest is not None:
            check(open(mpath, "rb").read() == after_manifest, f"{what}: the manifest was changed")

    # 1. its manifest missing
    os.unlink(mpath)
    refused("another dataset without its manifest", ["shards", "shard-000-00000.cds", "never deletes"])
    # 2. its manifest damaged where the fingerprint is, so nothing says whose it was
    m = good.decode()
    i = m.index('"fingerprint": "') + len('"fingerprint": "')
    damaged = m[:i] + ("0" if m[i] != "0" else "1") + m[i + 1:]
    open(mpath, "w").write(damaged)
    refused("another dataset with a damaged manifest", ["manifest.json", "damaged", "never replaces"])
    # 3. a stray shard among our own interrupted run's (another part's name: not ours)
    open(mpath, "wb").write(good)
    mine = os.path.join(work, "mine")
    r = harness.run(conv + ["--out", mine])
    journal_from_manifest(mine, shards_kept=2)
    stray = os.path.join(mine, "shards", "shard-007-00000.cds")
    shutil.copy(os.path.join(mine, "shards", "shard-000-00000.cds"), stray)
    stray_bytes = open(stray, "rb").read()
    r = harness.run(conv + ["--out", mine])
    check(r.returncode == 1 and "shard-007-00000.cds" in r.stderr, f"a stray shard file must be refused by name: {r.stderr.strip()}")
    check(open(stray, "rb").read() == stray_bytes, "the stray shard file was changed")
    os.unlink(stray)
    r = harness.run(conv + ["--out", mine])
    check(r.returncode == 0, f"resume after the stray file was moved away: {r.stderr.strip()}")


def changed_source(cli, conv, work, images):
    """A same-size edit of case03: refused on a rerun (named); on a resume, converted again from it."""
    done = os.path.join(work, "done")
    r = harness.run(conv + ["--out", done])
    check(r.returncode == 0, f"conversion: {r.stderr}")
    interrupted = os.path.join(work, "interrupted")
    shutil.copytree(done, interrupted)
    journal_from_manifest(interrupted)  # every shard finished, the manifest not yet written
    before = harness.tree_hashes(done)
    edit_voxel_same_size(images["case03"])
    r = harness.run(conv + ["--out", done])
    check(r.returncode == 1 and "case03" in r.stderr and "modified" in r.stderr and "source changed" in r.stderr,
          f"rerun after a same-size edit must be refused naming the case: rc {r.returncode}: {r.stderr.strip()}")
    check(harness.tree_hashes(done) == before, "the refused rerun changed the finished dataset")

    fresh = os.path.join(work, "fresh")
    r = harness.run(conv + ["--out", fresh])
    check(r.returncode == 0, f"fresh conversion of the edited source: {r.stderr}")
    m = manifest(done)
    keys = [x["key"] for x in m["source"]["inputs"]]
    first_changed = next(i for i, k in enumerate(keys) if "case03" in k)
    last_case = {}
    for e in m["records"]:
        last_case[e["shard"]] = max(last_case.get(e["shard"], -1), keys.index(e["key"]))
    kept = [m["shards"][s]["path"] for s, c in sorted(last_case.items()) if c < first_changed]
    inodes = {p: os.stat(os.path.join(interrupted, p)).st_ino for p in kept}
    r = harness.run(conv + ["--out", interrupted])
    check(r.returncode == 0 and "case03" in r.stderr and "converting again from that case" in r.stderr,
          f"resume after a same-size edit must name the case: rc {r.returncode}: {r.stderr.strip()}")
    check(harness.tree_hashes(interrupted) == harness.tree_hashes(fresh), "the resumed conversion differs from a fresh one of the edited source")
    check(kept and all(os.stat(os.path.join(interrupted, p)).st_ino == i for p, i in inodes.items()),
          f"the shards before the changed case must be kept, not rewritten ({len(kept)} of them)")


def journal_damage(cli, conv, work):
    """The journal's checksums: a damaged line, a damaged header, each record journaled once."""
    base = os.path.join(work, "jbase")
    r = harness.run(conv + ["--out", base])
    check(r.returncode == 0, f"conversion: {r.stderr}")
    want = harness.tree_hashes(base)

    d = os.path.join(work, "jline")
    shutil.copytree(base, d)
    lines = journal_from_manifest(d)
    # Each line holds only its own shard's entries: appending stays linear in the shard count.
    keys = [k for ln in lines[1:] for k in (e["key"] for e in json.loads(ln[17:])["entries"])]
    check(len(keys) == len(set(keys)) == len(manifest(base)["records"]), "every record is journaled exactly once")
    # One flipped digit in the 3rd line's record index: without its checksum this gave duplicated records.
    ln = lines[2]
    i = ln.index('"index":') + len('"index":')
    lines[2] = ln[:i] + str((int(ln[i]) + 1) % 10) + ln[i + 1:]
    open(os.path.join(d, JOURNAL), "w").writelines(lines)
    r = harness.run(conv + ["--out", d])
    check(r.returncode == 0 and "line 3 is damaged" in r.stderr, f"a damaged journal line: rc {r.returncode}: {r.stderr.strip()}")
    check(harness.tree_hashes(d) == want, "after a damaged journal line the result differs from an uninterrupted conversion")
    check(harness.run([cli, "verify", d, "--quiet"]).returncode == 0, "the dataset after a damaged journal line must verify")

    d2 = os.path.join(work, "jhead")
    shutil.copytree(base, d2)
    lines = journal_from_manifest(d2)
    lines[0] = lines[0][:20] + ("x" if lines[0][20] != "x" else "y") + lines[0][21:]
    open(os.path.join(d2, JOURNAL), "w").writelines(lines)
    shards_before = {k: v for k, v in harness.tree_hashes(d2).items() if k.startswith("shards/")}
    r = harness.run(conv + ["--out", d2])
    check(r.returncode == 1 and "shard-000-00000.cds" in r.stderr and "is damaged" in r.stderr,
          f"a damaged journal header with shards present must be refused naming them: rc {r.returncode}: {r.stderr.strip()}")
    check({k: v for k, v in harness.tree_hashes(d2).items() if k.startswith("shards/")} == shards_before,
          "shards were deleted after a damaged journal header")
    shutil.rmtree(os.path.join(d2, "shards"))
    r = harness.run(conv + ["--out", d2])
    check(r.returncode == 0, f"after the shards were moved away the conversion starts over: {r.stderr.strip()}")
    check(harness.tree_hashes(d2) == want, "starting over after a damaged journal gives the reference bytes")


def planted_links(cli, conv, work, ref_hashes):
    """Links planted at every name convert writes: nothing outside --out changes."""
    victim = os.path.join(work, "victim.txt")
    with open(victim, "w") as f:
        f.write("precious\n")
    out = os.path.join(work, "planted")
    os.makedirs(os.path.join(out, "shards"))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child knows its pid before exec: plant links at the pid-named temporaries too
        os.close(r)
        me = os.getpid()
        for name in (".cirrdata.lock", f"{JOURNAL}.tmp-{me}", f"manifest.json.tmp-{me}",
                     *(f"shards/shard-000-{k:05d}.cds.tmp" for k in range(12))):
            os.symlink(victim, os.path.join(out, name))
        os.close(w)
        dn = os.open(os.devnull, os.O_WRONLY)
        os.dup2(dn, 1)
        os.dup2(dn, 2)
        os.execv(conv[0], conv + ["--out", out])
    os.close(w)
    os.read(r, 1)
    _, status = os.waitpid(pid, 0)
    check(os.waitstatus_to_exitcode(status) == 0, "convert with planted links must still succeed (writing inside --out)")
    check(open(victim).read() == "precious\n", "a planted link made convert write outside --out")
    got = harness.tree_hashes(out)
    check(got == ref_hashes, f"with planted links the output differs: {sorted(k for k in set(got) | set(ref_hashes) if got.get(k) != ref_hashes.get(k))}")

    out2 = os.path.join(work, "planted-shards")
    os.makedirs(out2)
    elsewhere = os.path.join(work, "elsewhere")
    os.makedirs(elsewhere)
    os.symlink(elsewhere, os.path.join(out2, "shards"))
    r = harness.run(conv + ["--out", out2])
    check(r.returncode == 1 and "shards" in r.stderr and "symbolic link" in r.stderr,
          f"shards/ as a link must be refused: rc {r.returncode}: {r.stderr.strip()}")
    check(os.listdir(elsewhere) == [], "convert wrote through a shards/ link")


if __name__ == "__main__":
    sys.exit(main())
