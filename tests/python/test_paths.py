#!/usr/bin/env python3
"""Paths from a manifest, a metadata CSV or dataset.json never make the tools read or write outside the
dataset and input roots: `..`, absolute paths and symbolic links leading out are refused (or the case is
skipped with the reason), while links that stay inside still work. The files outside are valid data, so
reading them would show up as extra records. Ends with `paths: N passed, M failed`.

  /usr/bin/python3 tests/python/test_paths.py --cirrdata build/tools/cirrdata --lib build/libcirrdata/libcirrdata.so
"""
import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True
import harness  # noqa: E402
from harness import check  # noqa: E402


def run(cmd):
    r = harness.run(cmd, timeout=300)
    check(not harness.sanitizer_report(r.stderr), f"sanitizer report from {cmd[1]}: {r.stderr[-800:]}")
    return r


def main():
    args = harness.parser().parse_args()
    cirrdata = harness.load_binding(args.lib)
    from cirrdata.loader import Loader
    cli = args.cirrdata
    work = tempfile.mkdtemp(prefix="cirrdata-paths-", dir=args.workdir)
    try:
        src, recipe = harness.tiny_source(work, ncases=3)
        conv = [cli, "convert", "--layout", "nnunet", "--recipe", recipe, "--quiet"]
        ds = os.path.join(work, "ds")
        r = run(conv + [src, "--out", ds, "--shard-size", "100K"])
        check(r.returncode == 0, f"convert: {r.stderr.strip()}")
        with open(os.path.join(ds, "manifest.json")) as f:
            manifest = json.load(f)
        outside = os.path.join(work, "outside")
        os.makedirs(outside)

        def dataset_refused(d, needle, what):
            """verify (CLI), cirrdata.Dataset and the Loader must all refuse d, naming needle."""
            r = run([cli, "verify", d, "--quiet"])
            check(r.returncode == 1 and needle in r.stderr, f"{what}: verify: {r.returncode} {r.stderr.strip()!r}")
            for name, make in (("Dataset", lambda: cirrdata.Dataset(d)),
                               ("Loader", lambda: Loader(d, batch_size=1, mode="volume", patch=None, split="*"))):
                try:
                    h = make()
                    if name == "Dataset":
                        [h[i] for i in range(len(h))]
                    else:
                        [b for b in h]
                    h.close()
                    check(False, f"{what}: {name} accepted it")
                except cirrdata.CirrdataError as e:
                    check(needle in str(e), f"{what}: {name} message {e}")

        # 1. Manifest shard paths: '..', absolute, and symbolic links leading out.
        for bad_path in ("../outside/x.cds", "/etc/passwd", "shards/../../outside/x.cds", "shards//x.cds"):
            d = os.path.join(work, "m-bad")
            shutil.rmtree(d, ignore_errors=True)
            shutil.copytree(ds, d)
            m = json.loads(json.dumps(manifest))
            m["shards"][0]["path"] = bad_path
            harness.write_manifest(d, m)  # a valid manifest_xxh3: only the path rule can refuse it
            dataset_refused(d, "not a plain relative path", f"shard path {bad_path!r}")

        first = manifest["shards"][0]["path"]
        d = os.path.join(work, "m-link-file")
        shutil.copytree(ds, d)
        shutil.copy(os.path.join(d, first), os.path.join(outside, "s.cds"))  # a valid shard, outside
        os.remove(os.path.join(d, first))
        os.symlink(os.path.join(outside, "s.cds"), os.path.join(d, first))
        dataset_refused(d, "outside the dataset", "a shard that is a symbolic link leading out")

        d = os.path.join(work, "m-link-dir")
        shutil.copytree(ds, d)
        shutil.move(os.path.join(d, "shards"), os.path.join(outside, "shards"))
        os.symlink(os.path.join(outside, "shards"), os.path.join(d, "shards"))
        dataset_refused(d, "outside the dataset", "shards/ as a symbolic link leading out")

        # A link that stays inside the dataset is fine.
        d = os.path.join(work, "m-link-inside")
        shutil.copytree(ds, d)
        os.makedirs(os.path.join(d, "store"))
        shutil.move(os.path.join(d, first), os.path.join(d, "store", "s.cds"))
        os.symlink(os.path.join("..", "store", "s.cds"), os.path.join(d, first))
        r = run([cli, "verify", d, "--quiet"])
        check(r.returncode == 0, f"a symbolic link inside the dataset must verify: {r.stderr.strip()}")

        # merge refuses a part whose shard leads out (before writing anything).
        parts = []
        for i in (1, 2):
            p = os.path.join(work, f"part{i}")
            r = run(conv + [src, "--out", p, "--part", f"{i}/2"])
            check(r.returncode == 0, f"--part {i}/2: {r.stderr.strip()}")
            parts.append(p)
        with open(os.path.join(parts[1], "manifest.json")) as f:
            p2 = json.load(f)["shards"][0]["path"]
        shutil.move(os.path.join(parts[1], p2), os.path.join(outside, "p2.cds"))
        os.symlink(os.path.join(outside, "p2.cds"), os.path.join(parts[1], p2))
        merged = os.path.join(work, "merged")
        r = run([cli, "merge", merged] + parts)
        check(r.returncode == 1 and "outside the dataset" in r.stderr, f"merge with a part linking out: {r.stderr.strip()}")
        check(not os.path.exists(os.path.join(merged, "manifest.json")), "a refused merge left a manifest")

        # 2. dataset.json (MSD / nnU-Net v1 'training' list): '..', absolute, links leading out.
        nn = os.path.join(work, "nn")
        shutil.copytree(src, nn)
        ext = os.path.join(outside, "ext")
        harness.make_source(ext, ncases=1, seed=99)  # valid data: if it were read it would become a record
        os.symlink(os.path.join(ext, "imagesTr", "case00_0000.nii.gz"), os.path.join(nn, "imagesTr", "link_0000.nii.gz"))
        os.symlink(os.path.join(ext, "labelsTr", "case00.nii.gz"), os.path.join(nn, "labelsTr", "link.nii.gz"))
        os.symlink(os.path.join(ext, "imagesTr"), os.path.join(nn, "extImages"))
        os.symlink(os.path.join(ext, "labelsTr"), os.path.join(nn, "extLabels"))
        good = [{"image": f"./imagesTr/case{i:02d}_0000.nii.gz", "label": f"./labelsTr/case{i:02d}.nii.gz"} for i in range(3)]
        hostile = [
            {"image": "../outside/ext/imagesTr/case00_0000.nii.gz", "label": "../outside/ext/labelsTr/case00.nii.gz"},
            {"image": os.path.join(ext, "imagesTr", "case00_0000.nii.gz"), "label": os.path.join(ext, "labelsTr", "case00.nii.gz")},
            {"image": "./imagesTr/link_0000.nii.gz", "label": "./labelsTr/link.nii.gz"},
            {"image": "extImages/case00_0000.nii.gz", "label": "extLabels/case00.nii.gz"},
            {"image": "imagesTr/../../outside/ext/imagesTr/case00_0000.nii.gz", "label": "./labelsTr/case00.nii.gz"},
        ]
        with open(os.path.join(nn, "dataset.json"), "w") as f:
            json.dump({"channel_names": {"0": "MRI"}, "labels": {"background": 0, "liver": 1},
                       "numTraining": 8, "file_ending": ".nii.gz", "training": good + hostile}, f)
        out = os.path.join(work, "nn-out")
        r = run(conv + [nn, "--out", out])
        check(r.returncode == 0, f"nnunet v1 with hostile entries: {r.stderr.strip()}")
        if r.returncode == 0:
            with open(os.path.join(out, "manifest.json")) as f:
                m = json.load(f)
            check(m["counts"]["records"] == 3, f"only the 3 good entries may be converted, got {m['counts']['records']}")
            esc = [s for s in m["source"]["skipped"] if "escapes the dataset" in s["reason"]]
            check(len(esc) == len(hostile), f"each hostile entry must be skipped as escaping: {m['source']['skipped']}")
        r = run(conv + [nn, "--out", os.path.join(work, "nn-strict"), "--strict"])
        check(r.returncode == 1 and "escapes the dataset" in r.stderr, f"--strict: {r.stderr.strip()}")

        # 3. nnU-Net v2 (listing imagesTr): a symlinked imagesTr leading out, and a file_ending that is a path.
        v2 = os.path.join(work, "v2")
        os.makedirs(v2)
        os.symlink(os.path.join(ext, "imagesTr"), os.path.join(v2, "imagesTr"))
        shutil.copytree(os.path.join(ext, "labelsTr"), os.path.join(v2, "labelsTr"))
        shutil.copy(os.path.join(ext, "dataset.json"), os.path.join(v2, "dataset.json"))
        r = run(conv + [v2, "--out", os.path.join(work, "v2-out")])
        check(r.returncode == 1 and "no training cases" in r.stderr, f"v2 with imagesTr linking out: {r.returncode} {r.stderr.strip()}")
        r = run(conv + [v2, "--out", os.path.join(work, "v2-strict"), "--strict"])
        check(r.returncode == 1 and "escapes the dataset" in r.stderr, f"v2 --strict: {r.stderr.strip()}")
        v2b = os.path.join(work, "v2b")
        shutil.copytree(src, v2b)
        with open(os.path.join(v2b, "dataset.json"), "w") as f:
            json.dump({"channel_names": {"0": "MRI"}, "labels": {"background": 0, "liver": 1}, "numTraining": 3,
                       "file_ending": "/../../outside/ext/labelsTr/case00.nii.gz"}, f)
        r = run(conv + [v2b, "--out", os.path.join(work, "v2b-out")])
        check(r.returncode == 1 and "file_ending" in r.stderr, f"file_ending with a path: {r.returncode} {r.stderr.strip()}")

        # 4. CirrMRI600+ metadata CSV: patient IDs are only matched against listed file names, never
        # used as paths; image files that are symbolic links (here to valid data outside) are not read.
        cm = os.path.join(work, "cm")
        r = run([cli, "synth", "--layout", "cirrmri600", cm, "--cases", "3", "--seed", "4", "--quiet"])
        check(r.returncode == 0, f"synth: {r.stderr.strip()}")
        meta = os.path.join(cm, "Metadata")
        while os.path.isdir(os.path.join(meta, "Metadata")):
            meta = os.path.join(meta, "Metadata")
        csvs = [os.path.join(meta, n) for n in os.listdir(meta) if n.endswith(".csv")]
        for c in csvs:
            with open(c, "a") as f:
                f.write("\n../../outside/evil,50,1,2\n/etc/passwd,50,1,2\n")
        t1 = os.path.join(cm, "Cirrhosis_T1_3D", "Cirrhosis_T1_3D")
        os.symlink(os.path.join(ext, "imagesTr", "case00_0000.nii.gz"), os.path.join(t1, "train_images", "9999.nii.gz"))
        os.symlink(os.path.join(ext, "labelsTr", "case00.nii.gz"), os.path.join(t1, "train_masks", "9999.nii.gz"))
        out = os.path.join(work, "cm-out")
        r = run([cli, "convert", "--layout", "cirrmri600", cm, "--out", out, "--quiet"])
        check(r.returncode == 0, f"cirrmri600 with hostile CSV rows: {r.stderr.strip()}")
        if r.returncode == 0:
            with open(os.path.join(out, "manifest.json")) as f:
                m = json.load(f)
            ids = {e["patient_id"] for e in m["records"]}
            check("9999" not in ids and not any("/" in i for i in ids), f"records from outside or from CSV paths: {sorted(ids)}")
            check(not any("outside" in json.dumps(s) for s in m["source"]["skipped"]), "a path outside was visited")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return harness.summary("paths")


if __name__ == "__main__":
    sys.exit(main())
