#!/usr/bin/env python3
"""How `cirrdata convert`'s CPU time grows with the number of shards it writes.

Makes an nnU-Net set of N tiny cases (8 x 8 x 8 int16, 1.5 KB of .nii.gz each), converts it with the raw
recipe and a shard size so small that every record gets its own shard (N shards), and reports the CPU
time (user + sys of the child) for each N and each CLI given. Linear scaling keeps the time per shard
flat as N grows; the library before the append-only journal rewrote every record entry at every shard
(quadratic). Runs alternate between the CLIs, ROUNDS times; the median is reported.

    benchmarks/shard_count.py --cirrdata build/tools/cirrdata [--cirrdata OTHER/cirrdata] [--cases 1000 3000]
"""
import argparse
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time


def make_source(root, n):
    import numpy as np
    import nibabel as nib
    rng = np.random.default_rng(1)
    os.makedirs(os.path.join(root, "imagesTr"))
    os.makedirs(os.path.join(root, "labelsTr"))
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    mask = np.zeros((8, 8, 8), np.uint8)
    mask[2:6, 2:6, 2:6] = 1
    for i in range(n):
        img = rng.integers(0, 1000, (8, 8, 8)).astype(np.int16)
        nib.save(nib.Nifti1Image(img, aff), os.path.join(root, "imagesTr", f"c{i:05d}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(mask, aff), os.path.join(root, "labelsTr", f"c{i:05d}.nii.gz"))
    with open(os.path.join(root, "dataset.json"), "w") as f:
        f.write('{"channel_names": {"0": "MRI"}, "labels": {"background": 0, "liver": 1}, "numTraining": %d, '
                '"file_ending": ".nii.gz"}' % n)


def cpu_of(cmd):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.time() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cirrdata", action="append", required=True)
    ap.add_argument("--cases", type=int, nargs="+", default=[1000, 3000])
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", 3)))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="cirrdata-shardcount-")
    try:
        recipe = os.path.join(work, "raw.json")
        with open(recipe, "w") as f:
            f.write('{"name": "raw-8", "version": 1, "chunk": [8, 8, 8]}')
        results = {}
        for n in args.cases:
            src = os.path.join(work, f"src{n}")
            make_source(src, n)
            for r in range(args.rounds):
                order = args.cirrdata if r % 2 == 0 else args.cirrdata[::-1]
                for cli in order:
                    out = os.path.join(work, "out")
                    shutil.rmtree(out, ignore_errors=True)
                    cpu, wall = cpu_of([cli, "convert", "--layout", "nnunet", src, "--out", out, "--recipe", recipe,
                                        "--shard-size", "4K", "--threads", "1", "--quiet"])
                    shards = len(os.listdir(os.path.join(out, "shards")))
                    assert shards == n, f"{shards} shards for {n} cases"
                    results.setdefault((cli, n), []).append((cpu, wall))
        print(f"| CLI | shards | CPU s (median of {args.rounds}) | wall s | CPU ms per shard |")
        print("|---|---:|---:|---:|---:|")
        for (cli, n), v in results.items():
            cpu = statistics.median(x[0] for x in v)
            wall = statistics.median(x[1] for x in v)
            print(f"| {cli} | {n} | {cpu:.2f} | {wall:.2f} | {1000 * cpu / n:.2f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
