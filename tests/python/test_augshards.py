#!/usr/bin/env python3
"""Augmented shards (`convert --augment ... --copies K`) and `export-batch`.

The proof that the stored copies are the loader's samples: a plain conversion and an augmented one
of the same synthetic set; then, for seed S, the loader iterated over epochs 0..K-1 on the plain
dataset (batch size 1, all splits) gives, for each sample index i (batch['index']) and epoch k,
exactly the image and mask stored as copy k of case i (float32: equal bit for bit, since the same
code renders both; float16 records: equal after rounding the loader's float32 to float16). Checked
in volume mode (nnunet pipeline), patch mode (fixed patch, foreground-centred) and slice mode
(cirrhosisstage pipeline, float16 records). Also: the originals are byte-identical records to the
plain conversion's; every record reads back with the independent reader (cdshard.py) and its
augmentation metadata is complete; manifest and `inspect` carry pipeline, copies and seed; the
affine of an augmented record maps its voxels to the world positions they were sampled from; the
export-batch files (.npy with their JSON sidecars, .nii.gz read by nibabel, affines included) equal the
records. Ends with
`augshards: N passed, M failed`."""
import json
import os
import shutil
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import cdshard  # noqa: E402
import harness  # noqa: E402
from harness import check  # noqa: E402


def run(cmd, **kw):
    return harness.run(cmd, timeout=900, **kw)


# nnU-Net-like preprocessing on a coarse grid: small volumes keep the test fast (ASan build too).
SMALL_RECIPE = {
    "name": "small-3d", "version": 1, "reorient": "RAS",
    "resample": {"mode": "spacing", "spacing": [4.0, 4.0, 6.0], "image_order": 1, "mask_order": 0},
    "crop": {"mode": "nonzero", "margin": [0, 0, 0]},
    "normalize": {"mode": "zscore", "region": "nonzero"},
    "dtype": "float32", "mask_dtype": "uint8", "chunk": [32, 32, 16], "zstd_level": 1,
}


# The staging recipe (slices, 3 channels, float16) at 64 x 64 in-plane.
SMALL_2D_RECIPE = {
    "name": "small-2d", "version": 1, "reorient": "RAS",
    "resample": {"mode": "shape", "shape": [64, 64, 0], "image_order": 1, "mask_order": 0},
    "crop": {"mode": "none", "margin": [0, 0, 0]},
    "normalize": {"mode": "percentile", "region": "volume", "percentiles": [0.5, 99.5], "range": [0.0, 1.0], "then": [0.5, 0.5]},
    "slices": {"channels": 3}, "dtype": "float16", "mask_dtype": "uint8", "chunk": [64, 64, 1], "zstd_level": 1,
}


def records_by_case(ds_dir):
    """{(case, copy): record} from the independent reader, plus the manifest."""
    manifest, recs = cdshard.read_dataset(ds_dir)
    out = {}
    for entry, rec in zip(manifest["records"], recs):
        out[(entry.get("case"), entry.get("copy"))] = (entry, rec)
    return manifest, recs, out


def loader_samples(cirrdata, path, epochs, **kw):
    """{(epoch, index): (image, mask, corner)} from the loader, batch size 1, all splits."""
    out = {}
    with cirrdata.Loader(path, batch_size=1, seed=kw.pop("seed"), split="*", threads=2, **kw) as l:
        for k in range(epochs):
            for b in l:
                i = int(b["index"][0])
                out[(k, i)] = (b["image"][0].copy(), None if b["mask"] is None else b["mask"][0].copy(),
                               b["corner"][0].copy() if b.get("corner") is not None else None)
    return out


def compare_copies(tag, recs, samples, K, ncases, dtype=np.float32):
    bad = []
    n = 0
    for (k, i), (img, msk, _) in samples.items():
        key = (i, k)
        if key not in recs:
            bad.append(f"missing record case {i} copy {k}")
            continue
        entry, rec = recs[key]
        stored = rec["tensors"]["image"]
        want = img.astype(dtype)
        if stored.dtype != np.dtype(dtype) or stored.shape != want.shape:
            bad.append(f"case {i} copy {k}: stored {stored.dtype}{stored.shape}, loader {want.shape}")
            continue
        if not np.array_equal(stored.view(np.uint8), want.view(np.uint8)):
            d = np.abs(stored.astype(np.float64) - img.astype(np.float64))
            bad.append(f"case {i} copy {k}: image differs (max |d| {d.max():.3g}, {np.count_nonzero(d)} voxels)")
        if msk is not None and not np.array_equal(rec["tensors"]["mask"], msk):
            bad.append(f"case {i} copy {k}: mask differs ({np.count_nonzero(rec['tensors']['mask'] != msk)} voxels)")
        n += 1
    check(n == K * ncases and not bad, f"{tag}: {n} of {K * ncases} copies equal the loader's samples; {bad[:4]}")


def main():
    args = harness.parser().parse_args()
    cirrdata = harness.load_binding(args.lib)
    import nibabel as nib

    cli = args.cirrdata
    work = args.workdir or tempfile.mkdtemp(prefix="cd-augshards-")
    try:
        src = os.path.join(work, "src")
        r = run([cli, "synth", "--layout", "cirrmri600", src, "--cases", "2", "--seed", "5", "--no-healthy", "--quiet"])
        check(r.returncode == 0, f"synth: {r.stderr}")
        recipe = harness.write_json(os.path.join(work, "small.json"), SMALL_RECIPE)
        plain = os.path.join(work, "plain")
        r = run([cli, "convert", "--layout", "cirrmri600", src, "--out", plain, "--recipe", recipe, "--quiet"])
        check(r.returncode == 0, f"plain convert: {r.stderr}")
        pman, precs = cdshard.read_dataset(plain)
        ncases = len(precs)
        check(ncases >= 3, f"the synthetic set has {ncases} records")

        # ---- volume mode, nnunet, K = 3 ----
        S, K = 1234, 3
        aug = os.path.join(work, "aug")
        r = run([cli, "convert", "--layout", "cirrmri600", src, "--out", aug, "--recipe", recipe, "--augment", "nnunet",
                 "--copies", str(K), "--seed", str(S), "--json", "--threads", "2"])
        check(r.returncode == 0, f"augmented convert: {r.stderr}")
        summary = json.loads(r.stdout) if r.returncode == 0 else {}
        check(summary.get("records") == ncases * (K + 1), f"records {summary.get('records')} == {ncases} * {K + 1}")
        check(summary.get("device") == "cpu" and summary.get("augment_seconds", 0) > 0, f"summary {summary}")
        man, arecs, by_case = records_by_case(aug)
        a = man.get("augmentation", {})
        check(a.get("copies") == K and a.get("seed") == S and a.get("mode") == "volume" and a.get("patch") is None and
              a.get("no_original") is False and a.get("pipeline", {}).get("name") == "nnunet" and
              len(a.get("pipeline", {}).get("ops", [])) == 10, f"manifest augmentation {a}")
        check(man["counts"]["records"] == ncases * (K + 1), "counts.records covers the copies")
        # The manifest's augmentation object and record entries against schemas/manifest.schema.json.
        try:
            import jsonschema
        except ImportError:
            jsonschema = None
            print("note: python3-jsonschema missing, manifest schema check skipped")
        if jsonschema:
            sdir = os.path.join(HERE, "..", "..", "schemas")
            with open(os.path.join(sdir, "manifest.schema.json")) as f:
                ms = json.load(f)
            with open(os.path.join(sdir, "augment.schema.json")) as f:
                aus = json.load(f)
            resolver = jsonschema.RefResolver(base_uri=ms["$id"], referrer=ms, store={aus["$id"]: aus})
            errs = []
            for inst, sub in [(man["augmentation"], ms["properties"]["augmentation"])] + \
                    [(e, ms["properties"]["records"]["items"]) for e in man["records"]]:
                errs += [e.message for e in jsonschema.Draft202012Validator(sub, resolver=resolver).iter_errors(inst)]
            check(not errs, f"manifest augmentation and entries follow the schema: {errs[:3]}")
        check(json.dumps(man["statistics"], sort_keys=True) == json.dumps(pman["statistics"], sort_keys=True),
              "statistics describe the source cases once (equal to the plain dataset's)")
        # Originals: the plain records, byte for byte (metadata and tensors).
        same = all(json.dumps(by_case[(i, -1)][1]["metadata"]) == json.dumps(precs[i]["metadata"]) and
                   all(np.array_equal(by_case[(i, -1)][1]["tensors"][t], precs[i]["tensors"][t]) for t in ("image", "mask"))
                   for i in range(ncases))
        check(same, "originals equal the plain conversion's records")
        # Record metadata of the copies.
        ok_meta = []
        for i in range(ncases):
            for k in range(K):
                e, rec = by_case[(i, k)]
                m = rec["metadata"]
                au = m.get("augmentation", {})
                ok_meta.append(m["key"] == precs[i]["metadata"]["key"] + f":aug{k}" and au.get("copy") == k and
                               au.get("case") == i and au.get("epoch") == k and au.get("seed") == S and
                               au.get("pipeline") == "nnunet" and isinstance(au.get("params"), dict) and
                               "matrix" in au["params"] and "mirror" in au["params"] and
                               au.get("sample_id") == i and e["key"] == m["key"])
        check(all(ok_meta), f"copy metadata complete ({ok_meta.count(False)} bad)")
        # The loader on the plain dataset, epochs 0..K-1: the same samples.
        samples = loader_samples(cirrdata, plain, K, mode="volume", patch=None, augment="nnunet", seed=S)
        compare_copies("volume/nnunet", by_case, samples, K, ncases)
        # Copies differ from each other and from the original (the augmentation did something).
        differ = sum(not np.array_equal(by_case[(0, k)][1]["tensors"]["image"], by_case[(0, -1)][1]["tensors"]["image"])
                     for k in range(K))
        check(differ >= 1, "some copy of case 0 differs from its original")
        # The affine of a copy maps each voxel to the world point it was sampled from:
        # world(o) = A_src (center + M (o - h)); check at a few voxels.
        errs = []
        for i in range(ncases):
            for k in range(K):
                m = by_case[(i, k)][1]["metadata"]
                au = m["augmentation"]
                if not au["affine_exact"]:
                    continue
                A = np.array(by_case[(i, -1)][1]["metadata"]["affine"])
                Mx = np.array(au["params"]["matrix"])
                c = np.array(au["params"]["center"])
                h = (np.array(au["patch"]) - 1) / 2.0
                for o in ([0, 0, 0], [3, 5, 7], list(np.array(au["patch"]) - 1)):
                    srcv = c + Mx @ (np.array(o, float) - h)
                    w1 = A @ np.append(srcv, 1.0)
                    w2 = np.array(m["affine"]) @ np.append(np.array(o, float), 1.0)
                    errs.append(np.abs(w1 - w2).max())
        check(errs and max(errs) < 1e-6, f"copy affines map voxels to their sampled world points (max err {max(errs or [0]):.3g})")
        # inspect shows pipeline, K and seed.
        r = run([cli, "inspect", aug])
        check(r.returncode == 0 and "3 copies per case" in r.stdout and "pipeline nnunet" in r.stdout and f"seed {S}" in r.stdout,
              f"inspect: {r.stdout[-600:]} {r.stderr}")
        r = run([cli, "inspect", aug, "--json"])
        check(r.returncode == 0 and json.loads(r.stdout).get("augmentation", {}).get("copies") == K, "inspect --json augmentation")
        r = run([cli, "verify", aug, "--quiet"])
        check(r.returncode == 0, f"verify augmented dataset: {r.stderr}")
        # Rerunning the same command is a no-op; another seed into the same directory is refused.
        r = run([cli, "convert", "--layout", "cirrmri600", src, "--out", aug, "--recipe", recipe, "--augment", "nnunet",
                 "--copies", str(K), "--seed", str(S), "--quiet"])
        check(r.returncode == 0, f"rerun of the same augmented conversion: {r.stderr}")
        r = run([cli, "convert", "--layout", "cirrmri600", src, "--out", aug, "--recipe", recipe, "--augment", "nnunet",
                 "--copies", str(K), "--seed", str(S + 1), "--quiet"])
        check(r.returncode == 1 and "another recipe" in r.stderr, f"another seed into the same directory is refused: {r.stderr}")
        # Usage errors.
        r = run([cli, "convert", "--layout", "cirrmri600", src, "--out", os.path.join(work, "x"), "--copies", "2"])
        check(r.returncode == 2 and "--copies needs --augment" in r.stderr, f"--copies without --augment: {r.stderr}")
        r = run([cli, "convert", "--layout", "cirrmri600", src, "--out", os.path.join(work, "x"), "--augment", "nnunet",
                 "--mode", "patch"])
        check(r.returncode == 2 and "--patch" in r.stderr, f"patch mode without --patch: {r.stderr}")

        # ---- patch mode, fixed patch, foreground-centred, no originals; the Vulkan warp when there is one ----
        P = (24, 20, 8)
        augp = os.path.join(work, "augp")
        r = run([cli, "convert", "--layout", "cirrmri600", src, "--out", augp, "--recipe", recipe, "--augment", "nnunet",
                 "--copies", "2", "--seed", "77", "--mode", "patch", "--patch", "%d,%d,%d" % P, "--foreground-fraction", "1",
                 "--no-original", "--device", "vulkan", "--json"])
        check(r.returncode == 0, f"patch-mode convert: {r.stderr}")
        summary = json.loads(r.stdout) if r.returncode == 0 else {}
        man, _, by_case = records_by_case(augp)
        check(man["counts"]["records"] == 2 * ncases and all((i, -1) not in by_case for i in range(ncases)),
              "--no-original: only the copies")
        check(all(by_case[(i, k)][1]["metadata"]["augmentation"]["foreground_centred"] for i in range(ncases) for k in range(2)),
              "foreground fraction 1: every copy centred on the mask")
        samples = loader_samples(cirrdata, plain, 2, mode="patch", patch=P, augment="nnunet", seed=77, foreground_fraction=1.0)
        if summary.get("device") == "vulkan":
            # The GPU warp equals the CPU's within gpu.h's tolerance (1e-7 of the range; masks exact but
            # for positions within 1e-7 voxel of a half-integer).
            worst, mask_bad = 0.0, 0
            for (k, i), (img, msk, _) in samples.items():
                rec = by_case[(i, k)][1]["tensors"]
                rng = max(float(np.ptp(img)), 1e-6)
                worst = max(worst, float(np.abs(rec["image"] - img).max()) / rng)
                mask_bad += int(np.count_nonzero(rec["mask"] != msk))
            check(worst < 1e-5 and mask_bad <= 2, f"vulkan copies equal the loader's within tolerance (rel {worst:.3g}, masks {mask_bad})")
        else:
            check("device_note" in summary and "CPU" in summary["device_note"], f"vulkan fallback names its reason: {summary}")
            compare_copies("patch/nnunet", by_case, samples, 2, ncases)
        # cdshard reads the corners as written.
        corners_ok = all(list(by_case[(i, k)][1]["metadata"]["augmentation"]["corner"]) == list(samples[(k, i)][2])
                         for (k, i) in samples)
        check(corners_ok, "stored corners equal the loader's batch corners")

        # ---- slice mode, cirrhosisstage, float16 records ----
        recipe2d = harness.write_json(os.path.join(work, "small2d.json"), SMALL_2D_RECIPE)
        stage = os.path.join(work, "stage")
        r = run([cli, "convert", "--layout", "cirrmri600", src, "--out", stage, "--recipe", recipe2d, "--quiet"])
        check(r.returncode == 0, f"2D staging-recipe convert: {r.stderr}")
        stage_aug = os.path.join(work, "stage-aug")
        r = run([cli, "convert", "--layout", "cirrmri600", src, "--out", stage_aug, "--recipe", recipe2d, "--augment",
                 "cirrhosisstage", "--copies", "2", "--seed", "9", "--mode", "slice", "--quiet"])
        check(r.returncode == 0, f"slice-mode convert: {r.stderr}")
        man, _, by_case = records_by_case(stage_aug)
        nst = len(cdshard.read_dataset(stage)[1])
        bad = []
        with cirrdata.Loader(stage, batch_size=1, seed=9, split="*", threads=2, mode="slice", augment="cirrhosisstage") as l:
            for k in range(2):
                for b in l:
                    i, z = int(b["index"][0]), int(b["slice"][0])
                    rec = by_case[(i, k)][1]["tensors"]
                    want = b["image"][0][..., 0].astype(np.float16)
                    if rec["image"].dtype != np.float16 or not np.array_equal(rec["image"][..., z].view(np.uint16), want.view(np.uint16)):
                        bad.append((i, k, z, "image"))
                    if not np.array_equal(rec["mask"][..., z], b["mask"][0][..., 0]):
                        bad.append((i, k, z, "mask"))
        check(not bad and len(by_case) == 3 * nst, f"slice mode: every slice of every copy equals the loader's (float16): {bad[:4]}")
        m = by_case[(0, 1)][1]["metadata"]["augmentation"]
        check(len(m.get("slices", [])) == by_case[(0, 1)][1]["tensors"]["image"].shape[3] and m["affine_exact"] is False,
              "slice-mode metadata: one parameter set per slice, affine marked inexact")

        # ---- export-batch ----
        for fmt in ("npy", "nifti"):
            out = os.path.join(work, "export-" + fmt)
            r = run([cli, "export-batch", aug, "--split", "train", "--out", out, "--format", fmt])
            check(r.returncode == 0, f"export-batch {fmt}: {r.stderr}")
            man, recs, _ = records_by_case(aug)
            n_ok = n_train = 0
            for e, rec in zip(man["records"], recs):
                if e["split"] != "train":
                    continue
                n_train += 1
                copy = "orig" if e["copy"] == -1 else "aug%d" % e["copy"]
                stem = os.path.join(out, "%s_%s_%s" % (e["patient_id"], e["sequence"], copy))
                img, msk = rec["tensors"]["image"], rec["tensors"]["mask"]
                if fmt == "npy":
                    a_img, a_msk = np.load(stem + "_image.npy"), np.load(stem + "_mask.npy")
                    with open(stem + ".json") as f:
                        side = json.load(f)  # the sidecar: the copy and the affine of the sampled grid
                    ok = (a_img.dtype == img.dtype and np.array_equal(a_img, img) and np.array_equal(a_msk, msk) and
                          side["copy"] == e["copy"] and np.allclose(side["affine"], rec["metadata"]["affine"], atol=0))
                else:
                    ni, nm = nib.load(stem + "_image.nii.gz"), nib.load(stem + "_mask.nii.gz")
                    A = np.array(rec["metadata"]["affine"])
                    ok = (np.allclose(ni.affine, A, atol=1e-4) and np.allclose(nm.affine, A, atol=1e-4) and
                          np.array_equal(np.asanyarray(ni.dataobj), img[0]) and np.array_equal(np.asanyarray(nm.dataobj), msk[0]))
                n_ok += bool(ok)
            check(n_train > 0 and n_ok == n_train, f"export-batch {fmt}: {n_ok} of {n_train} train records equal")
            files = os.listdir(out) if os.path.isdir(out) else []
            data = [f for f in files if not f.endswith(".json")]
            check(len(data) == 2 * n_train and len(files) - len(data) == (n_train if fmt == "npy" else 0),
                  f"export-batch {fmt}: {len(data)} data files and {len(files) - len(data)} sidecars for {n_train} records")
        r = run([cli, "export-batch", aug, "--split", "nosuch", "--out", os.path.join(work, "e3"), "--format", "npy"])
        check(r.returncode == 1 and "nosuch" in r.stderr, f"export-batch of an empty split fails naming it: {r.stderr}")
        r = run([cli, "export-batch", aug, "--out", os.path.join(work, "e4"), "--format", "png"])
        check(r.returncode == 2, f"export-batch bad format is a usage error: {r.stderr}")

        # ---- preview --variants ----
        png = os.path.join(work, "variants.png")
        r = run([cli, "preview", aug, "--variants", "1", "-o", png])
        check(r.returncode == 0 and os.path.getsize(png) > 1000 and "4 record" in r.stdout, f"preview --variants: {r.stdout} {r.stderr}")
        r = run([cli, "preview", plain, "--variants", "0", "-o", png])
        check(r.returncode == 1 and "augment" in r.stderr, f"preview --variants on a plain dataset: {r.stderr}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return harness.summary("augshards")


if __name__ == "__main__":
    sys.exit(main())
