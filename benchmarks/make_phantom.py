#!/usr/bin/python3
"""Writes a deterministic, MRI-like int16 abdominal phantom as NIfTI (.nii or .nii.gz).

    /usr/bin/python3 benchmarks/make_phantom.py OUT.nii.gz [--shape 512,512,72] [--level 6] [--seed 600]

The volume imitates an axial T2-weighted abdominal scan of the size found in CirrMRI600+
(512 x 512 in-plane, a few dozen 3 mm slices): a body ellipse with a subcutaneous fat rim, muscle,
a (nodular) liver, spleen, kidneys, aorta, spine and some bowel gas; soft edges; a smooth coil bias
field; Rician noise (magnitude of complex Gaussian noise) whose amplitude is realistic inside the body
and lower outside it, as after a coil-combined, background-suppressed reconstruction. The background
is therefore small non-negative integers rather than exact zeros, which is what makes gzip's ratio
realistic (about 2-4x) instead of the 20x+ a noise-free phantom would give.

The file is written with nibabel (deterministic gzip: mtime 0) at the given gzip level (default 6,
the level of gzip, pigz and dcm2niix; nibabel's own default is 1). Affine: LPS-like (x towards
patient left is -x in RAS, y towards posterior), spacing 0.8 x 0.8 x 3.0 mm. The gzip ratio
(uncompressed file size / .nii.gz size) is printed.
"""

import argparse
import os
import sys

import numpy as np
import nibabel as nib


def parse_shape(text):
    parts = [int(p) for p in text.split(",")]
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError("shape must be three positive integers, e.g. 512,512,72")
    return tuple(parts)


def smooth_inside(r, width):
    """Soft indicator of r < 1 (r is a normalised ellipse radius); width in radius units."""
    return 1.0 / (1.0 + np.exp(np.clip((r - 1.0) / width, -40.0, 40.0)))


def ellipse_r(x, y, cx, cy, ax, ay, angle=0.0):
    c, s = np.cos(angle), np.sin(angle)
    u = (x - cx) * c + (y - cy) * s
    v = -(x - cx) * s + (y - cy) * c
    return np.sqrt((u / ax) ** 2 + (v / ay) ** 2)


class LowFreqField:
    """A smooth random field: a sum of a few random low-frequency plane waves (deterministic)."""

    def __init__(self, rng, nwaves, kmax, kzmax):
        self.k = rng.uniform(-kmax, kmax, size=(nwaves, 2)).astype(np.float32)
        self.kz = rng.uniform(-kzmax, kzmax, size=nwaves).astype(np.float32)
        self.phase = rng.uniform(0, 2 * np.pi, size=nwaves).astype(np.float32)
        self.amp = (rng.uniform(0.5, 1.0, size=nwaves) / np.sqrt(nwaves)).astype(np.float32)

    def slice(self, x, y, z):
        out = np.zeros_like(x)
        for (kx, ky), kz, ph, a in zip(self.k, self.kz, self.phase, self.amp):
            out += a * np.cos(kx * x + ky * y + kz * z + ph)
        return out


def make_phantom(shape, seed):
    nx, ny, nz = shape
    rng = np.random.default_rng(seed)
    # In-plane coordinates in [-1, 1]; x is the array's first axis (left-right), y the second (AP).
    xs = np.linspace(-1.0, 1.0, nx, dtype=np.float32)
    ys = np.linspace(-1.0, 1.0, ny, dtype=np.float32)
    x, y = np.meshgrid(xs, ys, indexing="ij")
    liver_tex = LowFreqField(rng, 24, 40.0, 6.0)    # regenerative nodules of a cirrhotic liver
    tissue_tex = LowFreqField(rng, 12, 12.0, 3.0)   # gentle tissue heterogeneity
    bias = LowFreqField(rng, 6, 2.5, 1.0)           # receive-coil bias field
    sigma_body, sigma_bg = 14.0, 2.0                # Rician noise sigma inside / outside the body
    vol = np.empty(shape, dtype=np.int16)
    edge = 2.0 / min(nx, ny)                        # about one voxel of edge softness
    for k in range(nz):
        z = np.float32(-1.0 + 2.0 * k / max(nz - 1, 1))  # feet (-1) to head (+1)
        zz = np.full_like(x, z)
        # Body outline: slightly larger in the lower abdomen, anterior wall a bit rounder.
        bx, by = 0.86 - 0.04 * z, 0.58 - 0.03 * z
        r_body = ellipse_r(x, y, 0.0, 0.04, bx, by)
        body = smooth_inside(r_body, edge / bx * 1.5)
        inner = smooth_inside(ellipse_r(x, y, 0.0, 0.04, bx - 0.06, by - 0.06), edge / bx * 2)
        img = 820.0 * body                           # subcutaneous fat (bright on T2 TSE)
        img += (330.0 - 820.0) * inner               # muscle / abdominal wall inside the fat rim
        # Liver: large, on the patient's right (array x < 0 here), fades out towards the feet.
        liver_extent = np.clip((z + 0.7) / 0.6, 0.0, 1.0)
        if liver_extent > 0:
            r_liver = ellipse_r(x, y, -0.33 + 0.05 * z, -0.02, 0.42 * liver_extent + 0.05, 0.40,
                                angle=0.25)
            liver = smooth_inside(r_liver, edge * 3) * inner
            tex = 1.0 + 0.12 * liver_tex.slice(x, y, zz)
            img += (260.0 * tex - 330.0) * liver
            # Hepatic vessels: bright tubular structures.
            for cx, cy, a in ((-0.30, 0.00, 0.035), (-0.42, 0.12, 0.025), (-0.18, -0.15, 0.02)):
                v = smooth_inside(ellipse_r(x, y, cx + 0.02 * z, cy, a, a * 1.2), edge * 6) * liver
                img += (700.0 - 260.0) * v
        # Spleen: patient's left, upper abdomen.
        if z > -0.2:
            spleen = smooth_inside(ellipse_r(x, y, 0.55, 0.20, 0.13, 0.22, angle=-0.5), edge * 4)
            img += (520.0 - 330.0) * spleen * inner
        # Kidneys: mid abdomen, both sides of the spine; cortex brighter than medulla.
        if -0.6 < z < 0.4:
            for side in (-1.0, 1.0):
                rk = ellipse_r(x, y, side * 0.30, 0.28, 0.10, 0.15, angle=side * 0.4)
                kid = smooth_inside(rk, edge * 4) * inner
                med = smooth_inside(rk / 0.6, edge * 6) * inner
                img += (650.0 - 330.0) * kid + (480.0 - 650.0) * med
        # Spine: vertebral body (dark cortex, medium marrow) and spinal canal (CSF, very bright).
        vert = smooth_inside(ellipse_r(x, y, 0.0, 0.36, 0.09, 0.08), edge * 3)
        marrow = smooth_inside(ellipse_r(x, y, 0.0, 0.36, 0.075, 0.065), edge * 3)
        canal = smooth_inside(ellipse_r(x, y, 0.0, 0.49, 0.035, 0.03), edge * 3)
        img += (60.0 - 330.0) * vert + (420.0 - 60.0) * marrow + (1100.0 - 330.0) * canal
        # Aorta (flow void: dark) and IVC.
        img += (40.0 - 330.0) * smooth_inside(ellipse_r(x, y, 0.06, 0.22, 0.04, 0.04), edge * 3)
        img += (500.0 - 330.0) * smooth_inside(ellipse_r(x, y, -0.10, 0.18, 0.05, 0.035), edge * 3)
        # Bowel with gas (dark) and fluid (bright) in the anterior abdomen.
        for i in range(5):
            cx = -0.1 + 0.12 * i + 0.05 * np.sin(3 * z + i)
            cy = -0.30 + 0.06 * np.cos(2 * z + 2 * i)
            b = smooth_inside(ellipse_r(x, y, cx, cy, 0.06, 0.05), edge * 4) * inner
            img += ((15.0 if i % 2 else 900.0) - 330.0) * b
        # Heterogeneity and coil bias (smooth, multiplicative), then Rician noise.
        img *= (1.0 + 0.05 * tissue_tex.slice(x, y, zz)) * (1.0 + 0.25 * bias.slice(x, y, zz))
        sigma = sigma_bg + (sigma_body - sigma_bg) * body
        n1 = rng.standard_normal(img.shape, dtype=np.float32)
        n2 = rng.standard_normal(img.shape, dtype=np.float32)
        mag = np.sqrt((img + sigma * n1) ** 2 + (sigma * n2) ** 2)
        vol[:, :, k] = np.clip(np.rint(mag), 0, 32767).astype(np.int16)
    return vol


def lps_like_affine(shape, spacing):
    """Voxel axes pointing to patient Left, Posterior, Superior (RAS matrix diag(-dx, -dy, dz)),
    centred on the volume, as a DICOM-derived axial scan."""
    nx, ny, nz = shape
    aff = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    aff[:3, 3] = [spacing[0] * (nx - 1) / 2, spacing[1] * (ny - 1) / 2, -spacing[2] * (nz - 1) / 2]
    return aff


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="output path (.nii or .nii.gz)")
    p.add_argument("--shape", type=parse_shape, default=(512, 512, 72))
    p.add_argument("--level", type=int, default=6, help="gzip level 1..9 (default 6)")
    p.add_argument("--seed", type=int, default=600)
    args = p.parse_args(argv)

    vol = make_phantom(args.shape, args.seed)
    spacing = (0.8, 0.8, 3.0)
    img = nib.Nifti1Image(vol, lps_like_affine(args.shape, spacing))
    img.header.set_zooms(spacing)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = b"libcirrdata benchmark phantom"
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    nib.openers.Opener.default_compresslevel = args.level
    nib.save(img, args.out)

    raw = 352 + vol.nbytes  # NIfTI-1 single file: 348-byte header + 4-byte extension flag
    size = os.path.getsize(args.out)
    ratio = raw / size
    print(f"{args.out}: shape {args.shape} int16, {raw} bytes uncompressed, {size} bytes on disk, "
          f"gzip ratio {ratio:.2f}x (level {args.level}), "
          f"min {int(vol.min())} max {int(vol.max())} mean {float(vol.mean()):.1f}")
    if args.out.endswith(".gz") and not 2.0 <= ratio <= 4.0:
        print(f"warning: gzip ratio {ratio:.2f} outside the realistic 2-4x range", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
