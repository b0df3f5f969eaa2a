#!/usr/bin/env python3
"""End-to-end tests of `cirrdata convert`: determinism, crash safety (SIGKILL + resume gives the same
bytes), --part/merge, skipped and strict handling of bad cases, the nnU-Net layout, refusing to
overwrite another dataset, and path escapes in dataset.json. Prints one line per failure and ends with
`convert: N passed, M failed`."""
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile

import jsonschema
import nibabel as nib
import numpy as np
from scipy import ndimage

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cdshard  # noqa: E402  (the independent reader written from schemas/shard-format.md)
import harness  # noqa: E402
from harness import check, run  # noqa: E402

SCHEMAS = os.path.join(harness.ROOT, "schemas")


def shard_hashes(d):
    out = {}
    sd = os.path.join(d, "shards")
    for name in sorted(os.listdir(sd)):
        with open(os.path.join(sd, name), "rb") as f:
            out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


def manifest(d):
    with open(os.path.join(d, "manifest.json")) as f:
        return json.load(f)


def schema_validator():
    with open(os.path.join(SCHEMAS, "manifest.schema.json")) as f:
        manifest_schema = json.load(f)
    with open(os.path.join(SCHEMAS, "recipe.schema.json")) as f:
        recipe_schema = json.load(f)
    resolver = jsonschema.RefResolver.from_schema(manifest_schema, store={
        recipe_schema["$id"]: recipe_schema, "recipe.schema.json": recipe_schema})
    return jsonschema.Draft202012Validator(manifest_schema, resolver=resolver)


def check_schema(validator, d, what):
    errors = sorted(validator.iter_errors(manifest(d)), key=lambda e: list(e.path))
    check(not errors, f"{what}: manifest violates schemas/manifest.schema.json: "
          + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:3]))


def check_pairing(cli, src, work):
    """--pair-t1t2 with the raw recipe: channel 0 is the canonical T1, channel 1 the T2 resampled onto
    the T1 grid through the affines, compared with scipy.ndimage.map_coordinates (order 1)."""
    d = os.path.join(work, "paired")
    r = run([cli, "convert", "--layout", "cirrmri600", src, "--out", d, "--pair-t1t2", "--quiet"])
    check(r.returncode == 0, f"--pair-t1t2: {r.stderr.strip()}")
    if r.returncode:
        return
    m, records = cdshard.read_dataset(d)
    check(len(records) > 0 and all(e["sequence"] == "T1+T2" for e in m["records"]), "paired records")
    check(m["tensors"]["image"]["channels"] == 2, "paired tensors must have 2 channels")
    rec = records[0]
    meta = rec["metadata"]
    img = rec["tensors"]["image"]
    check(img.shape[0] == 2 and img.dtype == np.float32, f"paired image {img.shape} {img.dtype}")
    t1 = nib.as_closest_canonical(nib.load(os.path.join(src, meta["original"]["path"])))
    t2 = nib.load(os.path.join(src, meta["paired_original"]["path"]))
    check(np.allclose(np.asarray(meta["affine"]), t1.affine, atol=1e-5), "paired affine is not the canonical T1 affine")
    ref1 = t1.get_fdata()
    check(np.allclose(img[0], ref1, rtol=0, atol=1e-6 * max(1.0, np.abs(ref1).max())), "channel 0 differs from the T1")
    vox = np.linalg.inv(t2.affine) @ t1.affine
    grid = np.indices(ref1.shape).reshape(3, -1)
    coords = vox[:3, :3] @ grid + vox[:3, 3:4]
    ref2 = ndimage.map_coordinates(t2.get_fdata(), coords, order=1, mode="constant", cval=0.0).reshape(ref1.shape)
    # float32 storage of values up to a few thousand: 1e-4 of the range covers rounding, not errors.
    tol = 1e-4 * max(1.0, np.abs(ref2).max())
    diff = np.abs(img[1] - ref2)
    check(float(diff.max()) <= tol, f"channel 1 differs from scipy map_coordinates by {float(diff.max())} (tol {tol})")


def main():
    args = harness.parser(lib=None).parse_args()
    cli = args.cirrdata
    work = tempfile.mkdtemp(prefix="cirrdata-convert-", dir=args.workdir)
    try:
        src = os.path.join(work, "src")
        r = run([cli, "synth", "--layout", "cirrmri600", src, "--cases", "6", "--seed", "11", "--quiet"])
        check(r.returncode == 0, f"synth: {r.stderr.strip()}")
        conv = [cli, "convert", "--layout", "cirrmri600", src, "--quiet"]

        # Determinism: 1 and 2 threads, same bytes; several shards with a small target size.
        a, b = os.path.join(work, "a"), os.path.join(work, "b")
        r1 = run(conv + ["--out", a, "--threads", "1", "--shard-size", "3M"])
        r2 = run(conv + ["--out", b, "--threads", "2", "--shard-size", "3M"])
        check(r1.returncode == 0 and r2.returncode == 0, f"convert: {r1.stderr.strip()} {r2.stderr.strip()}")
        ha, hb = shard_hashes(a), shard_hashes(b)
        check(len(ha) >= 3, f"expected several shards with --shard-size 3M, got {len(ha)}")
        check(ha == hb, "1 and 2 threads give different shard bytes")
        ma, mb = manifest(a), manifest(b)
        check(ma["records"] == mb["records"] and ma["shards"] == mb["shards"], "manifests differ between thread counts")
        keys = [e["key"] for e in ma["records"]]
        check(len(keys) == len(set(keys)) and len(keys) > 0, "record keys must be unique")
        check(ma["counts"]["records"] == len(keys), "counts.records disagrees with the records list")
        check(not os.path.exists(os.path.join(a, ".convert-journal.json")), "journal left behind after success")
        r = run([cli, "verify", a, "--quiet"])
        check(r.returncode == 0, f"verify of a fresh dataset failed: {r.stderr.strip()}")
        validator = schema_validator()
        check_schema(validator, a, "raw")
        ma_read, recs = cdshard.read_dataset(a)
        check(len(recs) == len(keys), "independent reader disagrees on the record count")
        check_pairing(cli, src, work)

        # Rerunning a finished conversion is a no-op; another recipe into the same dir is refused.
        r = run(conv + ["--out", a, "--threads", "1", "--shard-size", "3M"])
        check(r.returncode == 0 and shard_hashes(a) == ha, "rerun of a finished conversion changed it")
        r = run(conv + ["--out", a, "--recipe", "synergynet-3d"])
        check(r.returncode == 1 and "other inputs or with another recipe" in r.stderr, f"overwrite not refused: {r.stderr.strip()}")

        # Crash safety: SIGKILL at random moments, rerun until done; same bytes as uninterrupted.
        rng = random.Random(5)
        k = os.path.join(work, "killed")
        kills = 0
        scale = 1.5
        for attempt in range(60):
            p = subprocess.Popen(conv + ["--out", k, "--threads", "2", "--shard-size", "3M"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            # Eight kills at random moments, then one run left to finish.
            delay = rng.uniform(0.05, scale) if kills < 8 else 600
            try:
                p.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGKILL)
                p.wait()
                kills += 1
                # Whatever is there now must never look complete unless it is.
                if os.path.exists(os.path.join(k, "manifest.json")):
                    check(run([cli, "verify", k, "--quiet"]).returncode == 0, "a manifest exists but does not verify after a kill")
                continue
            check(p.returncode == 0, f"convert after kills failed: {p.stderr.read().decode().strip()}")
            if kills >= 8:
                break
            # A fast machine finished before the kill: start over with shorter delays.
            shutil.rmtree(k, ignore_errors=True)
            scale = max(0.1, scale / 2)
        check(kills >= 8, f"only {kills} kills happened")
        check(os.path.exists(os.path.join(k, "manifest.json")), "conversion never completed after kills")
        if os.path.exists(os.path.join(k, "manifest.json")):
            check(shard_hashes(k) == ha, f"after {kills} kills the shards differ from an uninterrupted run")
            check(manifest(k)["records"] == ma["records"], "after kills the manifest records differ")
            check(run([cli, "verify", k, "--quiet"]).returncode == 0, "killed-and-resumed dataset does not verify")
            leftovers = [n for n in os.listdir(os.path.join(k, "shards")) if n.endswith(".tmp")]
            check(not leftovers, f"temporary files left: {leftovers}")

        # Parts and merge give the same records as one run.
        parts = []
        for i in (1, 2, 3):
            d = os.path.join(work, f"part{i}")
            r = run(conv + ["--out", d, "--part", f"{i}/3"])
            check(r.returncode == 0, f"--part {i}/3: {r.stderr.strip()}")
            pm = manifest(d).get("part", {})
            n = pm.get("cases", -1)
            # Ranges balanced by input bytes: tests/python/test_parts.py checks the cuts themselves.
            got = {k: pm.get(k) for k in ("index", "count", "cases")}
            check(got == {"index": i, "count": 3, "cases": n} and n == len(ma["records"])
                  and pm.get("first_case", -1) <= pm.get("end_case", -1), f"part manifest lacks part info: {pm}")
            parts.append(d)
        merged = os.path.join(work, "merged")
        r = run([cli, "merge", merged] + parts[::-1])  # any order
        check(r.returncode == 0, f"merge: {r.stderr.strip()}")
        if r.returncode == 0:
            mm = manifest(merged)
            strip = lambda es: [{k2: v for k2, v in e.items() if k2 not in ("shard", "index")} for e in es]
            check(strip(mm["records"]) == strip(ma["records"]), "merged records differ from a single run")
            check("part" not in mm, "merged manifest still has part info")
            check(mm["counts"] == ma["counts"], "merged counts differ")
            check(run([cli, "verify", merged, "--quiet"]).returncode == 0, "merged dataset does not verify")
            check_schema(validator, merged, "merged")
        r = run([cli, "merge", os.path.join(work, "merged2")] + parts[:2])
        check(r.returncode == 1, "merge with a missing part must fail")

        # A truncated case is skipped with a reason; --strict makes it fatal, naming the file.
        bad_src = os.path.join(work, "badsrc")
        shutil.copytree(src, bad_src)
        victim = None
        for root, _, files in os.walk(bad_src):
            for n in sorted(files):
                if n.endswith(".nii.gz") and "images" in root and "Healthy" not in root:
                    victim = os.path.join(root, n)
                    break
            if victim:
                break
        with open(victim, "r+b") as f:
            f.truncate(os.path.getsize(victim) // 2)
        d = os.path.join(work, "skip")
        r = run([cli, "convert", "--layout", "cirrmri600", bad_src, "--out", d, "--quiet"])
        check(r.returncode == 0, f"a bad case should be skipped: {r.stderr.strip()}")
        if r.returncode == 0:
            sk = manifest(d)["source"]["skipped"]
            check(any(s["path"] == victim and "truncated" in s["reason"] for s in sk), f"skip not recorded: {sk}")
            check(manifest(d)["counts"]["records"] == len(keys) - 1, "skipped case still counted")
        r = run([cli, "convert", "--layout", "cirrmri600", bad_src, "--out", os.path.join(work, "strict"), "--strict", "--quiet"])
        check(r.returncode == 1 and victim in r.stderr and r.stderr.count("\n") == 1, f"--strict: {r.returncode} {r.stderr!r}")
        check(not os.path.exists(os.path.join(work, "strict", "manifest.json")), "--strict failure left a manifest")

        # nnU-Net / MSD layout, including a hostile path in dataset.json.
        nn = os.path.join(work, "nnunet")
        os.makedirs(os.path.join(nn, "imagesTr"))
        os.makedirs(os.path.join(nn, "labelsTr"))
        training = []
        t1 = os.path.join(src, "Cirrhosis_T1_3D", "Cirrhosis_T1_3D")
        for n in sorted(os.listdir(os.path.join(t1, "train_images")))[:3]:
            case = "liver_" + n.split(".")[0]
            shutil.copy(os.path.join(t1, "train_images", n), os.path.join(nn, "imagesTr", case + ".nii.gz"))
            shutil.copy(os.path.join(t1, "train_masks", n), os.path.join(nn, "labelsTr", case + ".nii.gz"))
            training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
        training.append({"image": "../src/Metadata/labels.txt", "label": "/etc/passwd"})
        with open(os.path.join(nn, "dataset.json"), "w") as f:
            json.dump({"name": "Liver", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "liver"},
                       "numTraining": len(training), "training": training}, f)
        d = os.path.join(work, "nnout")
        r = run([cli, "convert", "--layout", "nnunet", nn, "--out", d, "--recipe", "nnunet-3d", "--quiet"])
        check(r.returncode == 0, f"nnunet layout: {r.stderr.strip()}")
        if r.returncode == 0:
            m = manifest(d)
            check(m["counts"]["records"] == 3, f"nnunet records: {m['counts']['records']}")
            check(any("escapes" in s["reason"] for s in m["source"]["skipped"]), "escaping path not reported")
            check(m["resolved"]["target_spacing"][0] > 0, "nnunet-3d must resolve a target spacing")
            check_schema(validator, d, "nnunet")
        r = run([cli, "convert", "--layout", "nnunet", nn, "--out", os.path.join(work, "nnstrict"), "--strict", "--quiet"])
        check(r.returncode == 1 and "escapes" in r.stderr, f"--strict with an escaping path: {r.stderr.strip()}")

        # Usage errors exit 2.
        check(run([cli, "convert", src]).returncode == 2, "missing --layout must be a usage error")
        check(run([cli, "convert", "--layout", "cirrmri600", src, "--out", d, "--part", "3/2"]).returncode == 2, "bad --part")
        r = run([cli, "convert", "--layout", "cirrmri600", src, "--out", os.path.join(work, "x"), "--recipe", "nope"])
        check(r.returncode == 1 and "unknown recipe" in r.stderr, "unknown recipe")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return harness.summary("convert")


if __name__ == "__main__":
    sys.exit(main())
