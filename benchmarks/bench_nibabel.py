#!/usr/bin/python3
"""Times nibabel decoding a NIfTI file into a numpy array: np.asarray(nib.load(f).dataobj).

    /usr/bin/python3 benchmarks/bench_nibabel.py FILE.nii[.gz] [--repeat N]

Imports are excluded; one untimed warm-up call first (warm page cache, warm imports), then N timed
calls (default 15) with time.perf_counter. For an uncompressed .nii nibabel would by default return a
lazy numpy.memmap (nothing is read until the voxels are touched), so the file is loaded with
mmap=False, which reads the voxels into memory like the other candidates; --allow-mmap measures
nibabel's default instead. For .nii.gz mmap does not apply and the call is exactly
np.asarray(nib.load(f).dataobj). Prints one JSON line: median and min seconds and MB/s
(1 MB = 1e6 bytes) of the array's bytes, the same denominator bench_decode uses (voxel bytes).
"""

import argparse
import json
import statistics
import sys
import time

import numpy as np
import nibabel as nib


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file")
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--allow-mmap", action="store_true",
                   help="let nibabel memory-map an uncompressed file (lazy; no voxel is read)")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be >= 1")

    kw = {} if args.allow_mmap or args.file.endswith(".gz") else {"mmap": False}
    arr = np.asarray(nib.load(args.file, **kw).dataobj)  # warm-up
    nbytes = arr.nbytes
    del arr
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        arr = np.asarray(nib.load(args.file, **kw).dataobj)
        t1 = time.perf_counter()
        times.append(t1 - t0)
        del arr
    med, mn = statistics.median(times), min(times)
    print(json.dumps({
        "file": args.file,
        "nibabel": nib.__version__,
        "numpy": np.__version__,
        "voxel_bytes": nbytes,
        "load_kwargs": {k: str(v) for k, v in kw.items()},
        "repeat": args.repeat,
        "median_s": round(med, 6),
        "min_s": round(mn, 6),
        "median_MBps": round(nbytes / 1e6 / med, 1),
        "max_MBps": round(nbytes / 1e6 / mn, 1),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
