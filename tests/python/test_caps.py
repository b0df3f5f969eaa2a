#!/usr/bin/env python3
"""The run-time caps of cirrdata/limits.h, set through their environment variables: each cap lowered just
below an input's size makes the CLI (or the binding) refuse that input with a message that names the
file, the cap and the variable that raises it; set exactly to the size, the same command succeeds.
Also: a malformed variable is an error (not ignored), `cirrdata limits` reports the caps, and
cirrdata.limits() / set_limits() work.

  CIRRDATA_MAX_DIM, CIRRDATA_MAX_VOXELS, CIRRDATA_MAX_BYTES   cirrdata info / export of a NIfTI file
  CIRRDATA_MAX_JSON_BYTES   manifest.json (verify, cirrdata.Dataset), a recipe file and an nnU-Net
                            dataset.json (convert), a model's cirrdata.graph metadata (cirrdata.Model)
  CIRRDATA_MAX_CSV_BYTES    the CirrMRI600+ metadata CSVs (convert --layout cirrmri600)

  /usr/bin/python3 tests/python/test_caps.py --cirrdata build/tools/cirrdata --lib build/libcirrdata/libcirrdata.so
Ends with `caps: N passed, M failed`.
"""
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True
import harness  # noqa: E402
from harness import check  # noqa: E402

VARS = ("CIRRDATA_MAX_DIM", "CIRRDATA_MAX_VOXELS", "CIRRDATA_MAX_BYTES", "CIRRDATA_MAX_JSON_BYTES",
        "CIRRDATA_MAX_CSV_BYTES")
ROOT = os.path.dirname(os.path.dirname(HERE))


def env_with(**caps):
    """The environment without any cap variable, plus the given ones."""
    e = {k: v for k, v in os.environ.items() if k not in VARS}
    e.update({k: str(v) for k, v in caps.items()})
    return e


def run(cmd, **caps):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env_with(**caps), stdin=subprocess.DEVNULL)
    check(not harness.sanitizer_report(r.stderr), f"sanitizer report from {cmd[1]}: {r.stderr[-800:]}")
    return r


def lowered_then_raised(what, cmd, var, size, needles):
    """cmd fails (exit 1) with var=size-1, naming every needle, and succeeds with var=size."""
    r = run(cmd, **{var: size - 1})
    ok = r.returncode == 1 and all(n in r.stderr for n in needles)
    check(ok, f"{what}: {var}={size - 1} must fail naming {needles}: exit {r.returncode}, {r.stderr.strip()!r}")
    r = run(cmd, **{var: size})
    check(r.returncode == 0, f"{what}: {var}={size} must pass: exit {r.returncode}, {r.stderr.strip()!r}")


def main():
    args = harness.parser(__doc__).parse_args()
    for v in VARS:  # this process and the binding start from the defaults
        os.environ.pop(v, None)
    cirrdata = harness.load_binding(args.lib)
    import numpy as np
    import nibabel as nib
    cli = os.path.abspath(args.cirrdata)
    work = tempfile.mkdtemp(prefix="cirrdata-caps-", dir=args.workdir)
    try:
        # ---- NIfTI: dims, voxels, decompressed bytes (info reads the header, export the voxels)
        nii = os.path.join(work, "v.nii.gz")
        img = np.arange(23 * 17 * 5, dtype=np.int16).reshape(23, 17, 5)
        nib.save(nib.Nifti1Image(img, np.eye(4)), nii)
        npy = os.path.join(work, "v.npy")
        lowered_then_raised("info, largest dim 23", [cli, "info", nii], "CIRRDATA_MAX_DIM", 23,
                            [nii, "dim[1] = 23", "NIfTI dimension cap of 22", "CIRRDATA_MAX_DIM"])
        lowered_then_raised("export, 1955 voxels", [cli, "export", nii, "-o", npy], "CIRRDATA_MAX_VOXELS", 1955,
                            [nii, "1955 voxels", "voxel count cap of 1954", "CIRRDATA_MAX_VOXELS"])
        # .nii.gz: the inflated bytes up to the volume's end (header and extensions included); .nii: the volume.
        with gzip.open(nii) as f:
            inflated = int(struct.unpack("<f", f.read(112)[108:112])[0]) + img.nbytes  # vox_offset (NIfTI-1, byte 108)
        lowered_then_raised(f"export, {inflated} inflated bytes", [cli, "export", nii, "-o", npy], "CIRRDATA_MAX_BYTES",
                            inflated, [nii, "above the decompressed size cap of", "CIRRDATA_MAX_BYTES"])
        raw = os.path.join(work, "v.nii")
        nib.save(nib.Nifti1Image(img, np.eye(4)), raw)
        lowered_then_raised("export .nii, 3910 bytes", [cli, "export", raw, "-o", npy], "CIRRDATA_MAX_BYTES", img.nbytes,
                            [raw, "is 3.8 KiB, above the decompressed size cap of 3.8 KiB", "CIRRDATA_MAX_BYTES"])
        check(np.array_equal(np.load(npy), img), "export at the cap gives nibabel's voxels")

        # ---- JSON: recipe file and dataset.json (convert), manifest.json (verify, Dataset)
        src, recipe = harness.tiny_source(work, ncases=2)
        rsize = os.path.getsize(recipe)
        ds = os.path.join(work, "ds")
        conv = [cli, "convert", "--layout", "nnunet", src, "--recipe", recipe, "--quiet"]
        r = run(conv + ["--out", os.path.join(work, "r-low")], CIRRDATA_MAX_JSON_BYTES=rsize - 1)
        check(r.returncode == 1 and recipe in r.stderr and "JSON size cap" in r.stderr
              and "CIRRDATA_MAX_JSON_BYTES" in r.stderr, f"convert, recipe above the JSON cap: {r.stderr.strip()!r}")
        # dataset.json made larger than the recipe, so a cap between the two stops only dataset.json.
        dj = os.path.join(src, "dataset.json")
        with open(dj) as f:
            d = json.load(f)
        d["description"] = "x" * (rsize + 100)
        harness.write_json(dj, d)
        djsize = os.path.getsize(dj)
        r = run(conv + ["--out", os.path.join(work, "dj-low")], CIRRDATA_MAX_JSON_BYTES=djsize - 1)
        check(r.returncode == 1 and dj in r.stderr and "JSON size cap" in r.stderr,
              f"convert, dataset.json above the JSON cap: {r.stderr.strip()!r}")
        r = run(conv + ["--out", ds], CIRRDATA_MAX_JSON_BYTES=djsize)
        check(r.returncode == 0, f"convert with the JSON cap at dataset.json's size: {r.stderr.strip()!r}")
        manifest = os.path.join(ds, "manifest.json")
        msize = os.path.getsize(manifest)
        lowered_then_raised("verify, manifest.json", [cli, "verify", ds, "--quiet"], "CIRRDATA_MAX_JSON_BYTES", msize,
                            [manifest, "is above the JSON size cap", "(raise it with CIRRDATA_MAX_JSON_BYTES)"])

        # ---- malformed values are errors where the cap is used, not ignored
        for bad in ("12X", "0", "-5", "1.5G", " 5", "5MiBB"):
            r = run([cli, "verify", ds, "--quiet"], CIRRDATA_MAX_JSON_BYTES=bad)
            check(r.returncode == 1 and f"CIRRDATA_MAX_JSON_BYTES='{bad}' is not a valid cap" in r.stderr,
                  f"CIRRDATA_MAX_JSON_BYTES={bad!r}: {r.returncode} {r.stderr.strip()!r}")
        # the grammar of --max-bytes: 8GiB, 5MB and 512m are all valid caps
        for good in ("8GiB", "5MB", "512m"):
            r = run([cli, "verify", ds, "--quiet"], CIRRDATA_MAX_JSON_BYTES=good)
            check(r.returncode == 0, f"CIRRDATA_MAX_JSON_BYTES={good!r} must be a valid cap: {r.stderr.strip()!r}")
        r = run([cli, "verify", ds, "--quiet"], CIRRDATA_MAX_CSV_BYTES="lots")  # a cap verify does not use
        check(r.returncode == 0, f"a malformed cap that verify does not use: {r.stderr.strip()!r}")
        r = run([cli, "verify", ds, "--quiet"], CIRRDATA_MAX_JSON_BYTES="")
        check(r.returncode == 0, f"an empty variable counts as unset: {r.stderr.strip()!r}")
        r = run([cli, "info", nii], CIRRDATA_MAX_DIM="64M", CIRRDATA_MAX_VOXELS="1G", CIRRDATA_MAX_BYTES="2g")
        check(r.returncode == 0, f"suffixed values: {r.stderr.strip()!r}")
        r = run([cli, "limits", "--json"], CIRRDATA_MAX_DIM="64M", CIRRDATA_MAX_CSV_BYTES="3k")
        lim = json.loads(r.stdout) if r.returncode == 0 else {}
        check(lim.get("max_dim", {}).get("value") == 64 << 20 and lim.get("max_csv_bytes", {}).get("value") == 3072
              and lim.get("max_json_bytes", {}).get("value") == 512 << 20
              and lim.get("max_json_bytes", {}).get("env") == "CIRRDATA_MAX_JSON_BYTES",
              f"cirrdata limits --json: {r.stdout[:300]!r} {r.stderr.strip()!r}")
        r = run([cli, "limits"], CIRRDATA_MAX_VOXELS="many")
        check(r.returncode == 1 and "CIRRDATA_MAX_VOXELS='many'" in r.stderr, f"cirrdata limits, malformed: {r.stderr.strip()!r}")

        # ---- CSV: the CirrMRI600+ metadata tables
        syn = os.path.join(work, "synth")
        r = run([cli, "synth", "--cases", "1", "--quiet", "--no-healthy", syn])
        check(r.returncode == 0, f"synth: {r.stderr.strip()!r}")
        csvs = sorted(os.path.join(syn, "Metadata", n) for n in os.listdir(os.path.join(syn, "Metadata")) if n.endswith(".csv"))
        big = max(csvs, key=os.path.getsize)
        csize = os.path.getsize(big)
        r = run([cli, "convert", "--layout", "cirrmri600", syn, "--out", os.path.join(work, "c-low"), "--quiet"],
                CIRRDATA_MAX_CSV_BYTES=csize - 1)
        named = [c for c in csvs if c in r.stderr]
        check(r.returncode == 1 and named and os.path.getsize(named[0]) == csize and "CSV size cap" in r.stderr
              and "CIRRDATA_MAX_CSV_BYTES" in r.stderr, f"convert, a CSV above the cap: {r.stderr.strip()!r}")
        r = run([cli, "convert", "--layout", "cirrmri600", syn, "--out", os.path.join(work, "c-ok"), "--quiet"],
                CIRRDATA_MAX_CSV_BYTES=csize)
        check(r.returncode == 0, f"convert, the CSV cap at the largest CSV's size: {r.stderr.strip()!r}")

        # ---- the binding: limits(), set_limits(), and the caps applying to Dataset and Model
        d = cirrdata.limits(defaults=True)
        check(d == {"max_dim": 1 << 20, "max_voxels": 1 << 31, "max_decompressed_bytes": 8 << 30,
                    "max_json_bytes": 512 << 20, "max_csv_bytes": 64 << 20}, f"defaults {d}")
        check(cirrdata.limits() == d, f"with no variable set, limits() are the defaults: {cirrdata.limits()}")
        now = cirrdata.set_limits(max_json_bytes=msize - 1)
        check(now["max_json_bytes"] == msize - 1 and now["max_dim"] == d["max_dim"], f"set_limits gives {now}")
        try:
            cirrdata.Dataset(ds).close()
            check(False, "Dataset under a JSON cap below the manifest's size opened")
        except cirrdata.CirrdataError as e:
            check(manifest in str(e) and "CIRRDATA_MAX_JSON_BYTES" in str(e), f"Dataset message: {e}")
        cirrdata.set_limits(max_json_bytes=msize)
        with cirrdata.Dataset(ds) as dd:
            check(len(dd) == 2, "Dataset at the cap opens")
        model = os.path.join(ROOT, "tests", "fuzz", "corpus", "safetensors", "tiny_graph.safetensors")
        with open(model, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            glen = len(json.loads(f.read(n))["__metadata__"]["cirrdata.graph"].encode())
        cirrdata.set_limits(max_json_bytes=glen - 1)
        try:
            cirrdata.Model(model).close()
            check(False, "Model under a JSON cap below its graph's size loaded")
        except cirrdata.CirrdataError as e:
            check("cirrdata.graph" in str(e) and "JSON size cap" in str(e), f"Model message: {e}")
        cirrdata.set_limits(max_json_bytes=glen)
        try:
            cirrdata.Model(model).close()
            loaded = ""
        except cirrdata.CirrdataError as e:
            loaded = str(e)
        check(not loaded, f"Model at the cap: {loaded}")
        try:
            cirrdata.set_limits(max_dim=1 << 63)
            check(False, "set_limits accepted 2^63")
        except cirrdata.CirrdataError as e:
            check("max_dim" in str(e), f"set_limits(2^63) message: {e}")
        try:
            cirrdata.set_limits(max_size=1)
            refused = False
        except TypeError:
            refused = True
        check(refused, "set_limits refuses an unknown name")
        back = cirrdata.set_limits(max_json_bytes=None)
        check(back == d, f"set_limits(...=None) returns to the defaults: {back}")
        # A malformed variable reaches the binding as an error, in a fresh process (the environment is read once).
        code = ("import cirrdata\ntry:\n    cirrdata.limits()\nexcept cirrdata.CirrdataError as e:\n    print(e)\n"
                "print(cirrdata.set_limits(max_voxels=5)['max_voxels'])\n")
        e = env_with(CIRRDATA_MAX_VOXELS="5Q", PYTHONPATH=harness.PYTHON_DIR)
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=120)
        check("CIRRDATA_MAX_VOXELS='5Q' is not a valid cap" in p.stdout and p.stdout.strip().endswith("5"),
              f"binding with a malformed variable: {p.stdout!r} {p.stderr[-400:]!r}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return harness.summary("caps")


if __name__ == "__main__":
    sys.exit(main())
