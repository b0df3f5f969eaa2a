#!/usr/bin/python3
"""The Python peer of `cirrdata convert`: what a typical user writes today.

    convert_peer.py SRC_ROOT OUT_DIR --recipe raw|nnunet-3d --processes N
                    [--order 1|3] [--frames chunk|whole] [--target-spacing X,Y,Z]

Walks the CirrMRI600+ layout (Cirrhosis_T1_3D/Cirrhosis_T1_3D/{split}_images + _masks,
Cirrhosis_T2_3D/{split}_images + _masks; Healthy_subjects is not walked, and a case whose
Radiological Evaluation is not 1, 2 or 3 in Metadata/{T1,T2}_age_gender_evaluation.csv is skipped:
the cases `cirrdata convert` converts by default). Each case, in a multiprocessing Pool(N):

  nibabel load of image and mask, nib.as_closest_canonical (RAS by permutation/flips, as ours);
  raw:       voxels as stored (np.asanyarray(dataobj): int16 stays int16, uint8 -> int16... as our
             'auto' dtype: int8/int16/uint16<=32767 -> int16, uint8 -> uint8, scaled or float ->
             float32); mask -> uint8;
  nnunet-3d: image float32 (get_fdata), scipy.ndimage.zoom to the target spacing (order 1 by
             default; --order 3 is the cubic B-spline our recipe uses), mask zoom order 0 (ours:
             linear one-hot + argmax), crop both to the image's nonzero bounding box, z-score over
             the nonzero voxels, float32;
  C-order (X, Y, Z) arrays (np.ascontiguousarray), each compressed with python-zstandard level 3:
  --frames chunk (default): one frame per 64^3 chunk (arr[a:a+64, b:b+64, c:c+64].tobytes(), the
  same frames our shards hold), frames concatenated in OUT_DIR/<seq>_<id>_{image,mask}.zst plus
  OUT_DIR/index.json with shapes, dtypes and frame sizes; --frames whole: one frame of the whole
  array.

The nnunet-3d target spacing is computed like ours (per-axis median of the RAS spacings of the
images; if max/min > 3 the coarsest axis takes its 10th percentile) unless --target-spacing is given.

Prints one JSON line: cases, seconds (wall time after imports, walk + spacing + pool + index
included), cases_per_s, bytes_read (compressed input files), voxel_bytes (stored tensors,
uncompressed), bytes_written.
"""
import argparse
import csv
import json
import multiprocessing as mp
import os
import sys
import time

import nibabel as nib
import numpy as np
import scipy.ndimage as ndi
import zstandard

CHUNK = 64
LEVEL = 3


def find_nested(root, name):
    p = os.path.join(root, name)
    if not os.path.isdir(p):
        return None
    while os.path.isdir(os.path.join(p, name)):
        p = os.path.join(p, name)
    return p


def read_labels(meta, seq):
    path = os.path.join(meta, f"{seq}_age_gender_evaluation.csv")
    if not os.path.isfile(path):
        path = os.path.join(meta, "CirrMRI600+_CompleteData_age_gender_evaluation.csv")
    labels = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        for row in csv.DictReader(f):
            try:
                labels[row["Patient ID"].strip()] = int(row["Radiological Evaluation"])
            except (KeyError, ValueError):
                pass
    return labels


def walk(root):
    meta = find_nested(root, "Metadata")
    cases = []
    for seq in ("T1", "T2"):
        seqdir = find_nested(root, f"Cirrhosis_{seq}_3D")
        if not seqdir:
            continue
        labels = read_labels(meta, seq)
        for split in ("train", "valid", "test"):
            idir = os.path.join(seqdir, f"{split}_images")
            mdir = os.path.join(seqdir, f"{split}_masks")
            if not os.path.isdir(idir):
                continue
            names = [n for n in os.listdir(idir) if n.endswith((".nii.gz", ".nii"))]
            for n in sorted(names, key=lambda s: (not s.split(".")[0].isdigit(), int(s.split(".")[0]) if s.split(".")[0].isdigit() else 0, s)):
                pid = n.split(".")[0]
                mask = os.path.join(mdir, n)
                if not os.path.isfile(mask) or labels.get(pid) not in (1, 2, 3):
                    continue
                cases.append((f"{seq}_{pid}", os.path.join(idir, n), mask))
    return cases


def median_spacing(cases, threshold=3.0):
    sp = []
    for _, img, _ in cases:
        h = nib.load(img)
        ornt = nib.orientations.io_orientation(h.affine)
        z = h.header.get_zooms()[:3]
        ras = [0.0, 0.0, 0.0]
        for a in range(3):
            ras[int(ornt[a, 0])] = float(z[a])
        sp.append(ras)
    sp = np.array(sp)
    med = np.percentile(sp, 50, axis=0)
    p10 = np.percentile(sp, 10, axis=0)
    if med.max() / med.min() > threshold:
        c = int(np.argmax(med))
        med[c] = p10[c]
    return [float(x) for x in med]


def stored_dtype(img):
    """Our 'auto' dtype rule for raw: the stored dtype where lossless, else float32."""
    dt = img.get_data_dtype()
    slope, inter = img.dataobj.slope, img.dataobj.inter
    scaled = not (slope in (None, 1.0) or np.isnan(slope)) or not (inter in (None, 0.0) or np.isnan(inter))
    if scaled or dt.kind == "f":
        return np.float32
    if dt == np.uint8:
        return np.uint8
    return np.int16  # int8, int16 (and uint16 <= 32767)


def compress(cctx, arr, frames):
    if frames == "whole":
        b = cctx.compress(arr.tobytes())
        return [b], [len(b)]
    X, Y, Z = arr.shape
    out, sizes = [], []
    for a in range(0, X, CHUNK):
        for b in range(0, Y, CHUNK):
            for c in range(0, Z, CHUNK):
                f = cctx.compress(arr[a:a + CHUNK, b:b + CHUNK, c:c + CHUNK].tobytes())
                out.append(f)
                sizes.append(len(f))
    return out, sizes


_cfg = {}


def init(cfg):
    _cfg.update(cfg)
    _cfg["cctx"] = zstandard.ZstdCompressor(level=LEVEL)


def convert_case(case):
    key, ipath, mpath = case
    recipe, out, frames = _cfg["recipe"], _cfg["out"], _cfg["frames"]
    img = nib.load(ipath)
    msk = nib.load(mpath)
    dtype = stored_dtype(img)
    img = nib.as_closest_canonical(img)
    msk = nib.as_closest_canonical(msk)
    m = np.asanyarray(msk.dataobj)
    if m.dtype != np.uint8:
        m = np.clip(np.rint(np.where(m > 0, m, 0)), 0, 255).astype(np.uint8)
    if recipe == "raw":
        x = np.asanyarray(img.dataobj).astype(dtype, copy=False)
    else:
        x = img.get_fdata(dtype=np.float32)
        target = np.array(_cfg["target"])
        zooms = np.array(img.header.get_zooms()[:3], dtype=np.float64)
        factors = zooms / target
        x = ndi.zoom(x, factors, order=_cfg["order"])
        m = ndi.zoom(m, factors, order=0)
        nz = np.nonzero(x)
        if nz[0].size:
            box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in nz)
            x, m = x[box], m[box]
        sel = x[x != 0]
        if sel.size == 0:
            sel = x
        mean, sd = float(sel.mean(dtype=np.float64)), float(sel.std(dtype=np.float64))
        x = ((x - mean) / max(sd, 1e-8)).astype(np.float32)
    x = np.ascontiguousarray(x)
    m = np.ascontiguousarray(m)
    info = {"key": key, "shape": list(x.shape), "dtype": str(x.dtype), "voxel_bytes": x.nbytes + m.nbytes}
    written = 0
    for name, arr in (("image", x), ("mask", m)):
        parts, sizes = compress(_cfg["cctx"], arr, frames)
        with open(os.path.join(out, f"{key}_{name}.zst"), "wb") as f:
            for p in parts:
                f.write(p)
        info[f"{name}_frames"] = sizes
        written += sum(sizes)
    info["bytes_written"] = written
    info["bytes_read"] = os.path.getsize(ipath) + os.path.getsize(mpath)
    return info


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--recipe", choices=["raw", "nnunet-3d"], default="raw")
    ap.add_argument("--processes", type=int, default=os.cpu_count())
    ap.add_argument("--order", type=int, choices=[0, 1, 3], default=1, help="nnunet-3d image zoom order (default 1)")
    ap.add_argument("--frames", choices=["chunk", "whole"], default="chunk")
    ap.add_argument("--target-spacing", help="X,Y,Z mm (default: computed like ours)")
    a = ap.parse_args()
    t0 = time.perf_counter()
    os.makedirs(a.out, exist_ok=True)
    cases = walk(a.src)
    target = None
    if a.recipe == "nnunet-3d":
        target = [float(v) for v in a.target_spacing.split(",")] if a.target_spacing else median_spacing(cases)
    cfg = {"recipe": a.recipe, "out": a.out, "frames": a.frames, "order": a.order, "target": target}
    with mp.Pool(a.processes, initializer=init, initargs=(cfg,)) as pool:
        infos = pool.map(convert_case, cases, chunksize=1)
    with open(os.path.join(a.out, "index.json"), "w") as f:
        json.dump({"recipe": a.recipe, "target_spacing": target, "chunk": CHUNK, "frames": a.frames, "cases": infos}, f)
    dt = time.perf_counter() - t0
    print(json.dumps({
        "tool": "python-peer", "recipe": a.recipe, "processes": a.processes, "order": a.order if target else None,
        "frames": a.frames, "target_spacing": target, "cases": len(infos), "seconds": dt,
        "cases_per_s": len(infos) / dt, "bytes_read": sum(i["bytes_read"] for i in infos),
        "voxel_bytes": sum(i["voxel_bytes"] for i in infos), "bytes_written": sum(i["bytes_written"] for i in infos),
    }))


if __name__ == "__main__":
    sys.exit(main())
