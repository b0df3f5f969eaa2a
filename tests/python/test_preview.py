#!/usr/bin/env python3
"""End-to-end tests of `cirrdata preview`: the PNG of one sample and of a loader batch is valid (chunk
CRCs, IHDR, IDAT inflating to height * (1 + width * 3) bytes, decoded here with zlib + struct), shows
the mask outline colour, is not blank, is byte-identical when made twice, puts the liver on the image
left of the axial view (radiological convention), gets one row per channel; and bad inputs (missing
dataset, sample out of range, unwritable output) exit 1 with one line naming the problem. Prints one
line per failure and ends with `preview: N passed, M failed`."""
import os
import shutil
import struct
import sys
import tempfile
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cdshard  # noqa: E402  (the independent reader written from schemas/shard-format.md)
import harness  # noqa: E402
from harness import check, run  # noqa: E402

OUTLINE = (255, 48, 48)    # tools/render/planes.c C_OUTLINE
FRAME = (70, 70, 80)       # tools/render/planes.c C_FRAME
MARGIN = 16                # tools/render/preview_draw.c MARGIN: the first panel's left edge


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def read_png(path):
    """Decodes an 8-bit RGB, non-interlaced PNG with zlib + struct; returns (pixels (H, W, 3) uint8, problems)."""
    problems = []
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None, ["bad PNG signature"]
    pos, chunks = 8, []
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            problems.append(f"bad CRC in chunk {kind!r}")
        chunks.append((kind, body))
        pos += 12 + length
        if kind == b"IEND":
            break
    if pos != len(data):
        problems.append(f"{len(data) - pos} bytes after IEND (or no IEND)")
    if not chunks or chunks[0][0] != b"IHDR":
        return None, problems + ["first chunk is not IHDR"]
    w, h, depth, ctype, comp, filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if w <= 0 or h <= 0:
        problems.append(f"IHDR size {w} x {h}")
    if (depth, ctype, comp, filt, interlace) != (8, 2, 0, 0, 0):
        return None, problems + [f"not 8-bit RGB non-interlaced: {depth, ctype, comp, filt, interlace}"]
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride = w * 3
    if len(raw) != h * (1 + stride):
        return None, problems + [f"IDAT inflates to {len(raw)} bytes, expected {h * (1 + stride)}"]
    out = np.zeros((h, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int64)
    for y in range(h):
        ft = raw[y * (1 + stride)]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=y * (1 + stride) + 1).astype(np.int64)
        if ft == 0:
            cur = line
        elif ft == 1:  # Sub: a running sum per channel
            cur = line.reshape(w, 3).cumsum(axis=0).reshape(-1) % 256
        elif ft == 2:
            cur = (line + prev) % 256
        elif ft in (3, 4):
            cur = [0] * stride
            lp, pp = line.tolist(), prev.tolist()
            for i in range(stride):
                a = cur[i - 3] if i >= 3 else 0
                c = pp[i - 3] if i >= 3 else 0
                pred = (a + pp[i]) // 2 if ft == 3 else _paeth(a, pp[i], c)
                cur[i] = (lp[i] + pred) & 0xFF
            cur = np.array(cur, dtype=np.int64)
        else:
            return None, problems + [f"row {y}: unknown filter type {ft}"]
        out[y] = cur
        prev = cur
    return out.reshape(h, w, 3), problems


def check_picture(path, what, want_outline=True):
    """Valid PNG, outline colour present (when wanted), grey pixels with variance; returns the pixels."""
    if not check(os.path.isfile(path), f"{what}: {path} was not written"):
        return None
    px, problems = read_png(path)
    check(not problems, f"{what}: {'; '.join(problems)}")
    if px is None:
        return None
    try:  # a second decoder, where Debian's Pillow is installed
        from PIL import Image
        with Image.open(path) as im:
            check(np.array_equal(np.asarray(im.convert("RGB")), px), f"{what}: Pillow decodes other pixels than ours")
    except ImportError:
        pass
    h, w, _ = px.shape
    check(w > 0 and h > 0, f"{what}: size {w} x {h}")
    outline = np.all(px == OUTLINE, axis=2)
    if want_outline:
        check(outline.sum() >= 20, f"{what}: the outline colour {OUTLINE} appears on {outline.sum()} pixels")
    grey = (px[..., 0] == px[..., 1]) & (px[..., 1] == px[..., 2])
    values = px[..., 0][grey].astype(np.float64)
    check(values.size > 1000 and values.var() > 100,
          f"{what}: looks blank ({values.size} grey pixels, variance {values.var() if values.size else 0:.1f})")
    return px


def first_panel(px):
    """Bounds (x0, x1, y0, y1) of the first (axial) panel: inside the 1-pixel frame that starts at MARGIN - 1."""
    frame = np.all(px == FRAME, axis=2)
    col = frame[:, MARGIN - 1]
    ys = np.nonzero(col)[0]
    if ys.size < 2:
        return None
    ymid = (ys[0] + ys[-1]) // 2
    xs = np.nonzero(frame[ymid, MARGIN:])[0]
    if xs.size == 0:
        return None
    return MARGIN, MARGIN + int(xs[0]), int(ys[0]) + 1, int(ys[-1])


def check_fails(cmd, what, needle):
    """Exit 1, exactly one line on stderr, naming the problem (needle: a substring it must contain)."""
    r = run(cmd)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    check(r.returncode == 1, f"{what}: exit {r.returncode}, expected 1 (stderr: {r.stderr.strip()!r})")
    check(len(lines) == 1, f"{what}: expected one line on stderr, got {len(lines)}: {r.stderr.strip()!r}")
    check(bool(lines) and needle in lines[0], f"{what}: the message should name {needle!r}: {r.stderr.strip()!r}")
    return r


def main():
    ap = harness.parser(lib=None)
    ap.add_argument("--keep", action="store_true", help="keep the work directory (to look at the PNGs)")
    args = ap.parse_args()
    cli = args.cirrdata
    work = tempfile.mkdtemp(prefix="cirrdata-preview-", dir=args.workdir)
    try:
        src, ds = os.path.join(work, "src"), os.path.join(work, "ds")
        r = run([cli, "synth", "--layout", "cirrmri600", src, "--cases", "4", "--seed", "2", "--quiet"])
        check(r.returncode == 0, f"synth: {r.stderr.strip()}")
        r = run([cli, "convert", "--layout", "cirrmri600", src, "--out", ds, "--quiet"])
        if not check(r.returncode == 0, f"convert: {r.stderr.strip()}"):
            return
        manifest, records = cdshard.read_dataset(ds)
        nrec = len(records)

        # One sample: valid, outlined, not blank, deterministic.
        a, b = os.path.join(work, "s0.png"), os.path.join(work, "s0-again.png")
        r = run([cli, "preview", ds, "--sample", "0", "-o", a])
        check(r.returncode == 0, f"preview --sample 0: {r.stderr.strip()}")
        px = check_picture(a, "preview --sample 0")
        # The window it reports: NumPy's 0.5 and 99.5 percentiles of the sample.
        img = records[0]["tensors"]["image"][0].astype(np.float64)
        want = (np.percentile(img, 0.5), np.percentile(img, 99.5))
        try:
            got = tuple(float(v) for v in r.stdout.split("window")[1].split()[0].split(".."))
        except (IndexError, ValueError):
            got = None
        check(got is not None and np.allclose(got, want, rtol=1e-5, atol=1e-4),
              f"window {got} differs from numpy's percentiles {want} (stdout {r.stdout.strip()!r})")
        r = run([cli, "preview", ds, "--sample", "0", "-o", b])
        check(r.returncode == 0 and open(a, "rb").read() == open(b, "rb").read(),
              "preview --sample 0 twice gives different bytes")

        # Radiological convention: the liver (the mask; on the patient's right = high x in RAS+) lies in
        # the left half of the axial panel, and anterior (high y) is up.
        meta = records[0]["metadata"]
        mask = records[0]["tensors"]["mask"][0]
        X, Y, Z = mask.shape
        xs, ys, zs = np.nonzero(mask)
        check(xs.size > 0 and xs.mean() > X / 2, "synthetic liver is not on the patient's right (x > middle)")
        if px is not None and xs.size:
            panel = first_panel(px)
            if check(panel is not None, "cannot find the axial panel's frame"):
                x0, x1, y0, y1 = panel
                sp = meta["spacing"]
                check(abs((x1 - x0) / (y1 - y0) - (X * sp[0]) / (Y * sp[1])) < 0.02,
                      f"axial panel {x1 - x0} x {y1 - y0} px does not have the physical aspect "
                      f"{X * sp[0]:.0f} x {Y * sp[1]:.0f} mm")
                oy, ox = np.nonzero(np.all(px[y0:y1, x0:x1] == OUTLINE, axis=2))
                if check(ox.size > 0, "no outline in the axial panel"):
                    # The outline's centre in the panel against the mask's centre in the slice, flipped.
                    zc = (zs.min() + zs.max()) // 2
                    sx, sy = np.nonzero(mask[:, :, zc])
                    want_u = 1 - (sx.mean() + 0.5) / X
                    want_v = 1 - (sy.mean() + 0.5) / Y
                    got_u = (ox.mean() + 0.5) / (x1 - x0)
                    got_v = (oy.mean() + 0.5) / (y1 - y0)
                    check(got_u < 0.5, f"liver outline centre at {got_u:.2f} of the axial panel width: not on the image left")
                    check(abs(got_u - want_u) < 0.08 and abs(got_v - want_v) < 0.08,
                          f"axial outline centre ({got_u:.2f}, {got_v:.2f}) differs from the flipped mask centre "
                          f"({want_u:.2f}, {want_v:.2f})")

        # Another record with --size; a smaller picture.
        c = os.path.join(work, "s-last.png")
        r = run([cli, "preview", ds, "--sample", str(nrec - 1), "--size", "160", "-o", c])
        check(r.returncode == 0, f"preview --sample {nrec - 1} --size 160: {r.stderr.strip()}")
        pc = check_picture(c, "preview --size 160")
        if px is not None and pc is not None:
            check(pc.shape[0] < px.shape[0], f"--size 160 is not smaller: {pc.shape} vs {px.shape}")

        # Two channels (--pair-t1t2): one row per channel, so a taller picture.
        pair = os.path.join(work, "pair")
        r = run([cli, "convert", "--layout", "cirrmri600", src, "--out", pair, "--pair-t1t2", "--quiet"])
        if check(r.returncode == 0, f"convert --pair-t1t2: {r.stderr.strip()}"):
            p2 = os.path.join(work, "pair.png")
            r = run([cli, "preview", pair, "--sample", "0", "-o", p2])
            check(r.returncode == 0, f"preview of a 2-channel record: {r.stderr.strip()}")
            pp = check_picture(p2, "preview of a 2-channel record")
            if px is not None and pp is not None:
                check(pp.shape[0] > px.shape[0] * 1.4, f"2-channel picture {pp.shape} is not about two rows tall ({px.shape})")

        # A batch: no augmentation (the outline must show: a third of the samples are centred on the
        # mask), then nnU-Net augmentation; each deterministic.
        for aug, outline in (("none", True), ("nnunet", False)):
            o1, o2 = os.path.join(work, f"batch-{aug}.png"), os.path.join(work, f"batch-{aug}-again.png")
            cmd = [cli, "preview", ds, "--batch", "--augment", aug, "--seed", "5", "--batch-size", "4"]
            r = run(cmd + ["-o", o1])
            check(r.returncode == 0, f"preview --batch --augment {aug}: {r.stderr.strip()}")
            check_picture(o1, f"preview --batch --augment {aug}", want_outline=outline)
            r = run(cmd + ["-o", o2])
            check(r.returncode == 0 and os.path.isfile(o2) and open(o1, "rb").read() == open(o2, "rb").read(),
                  f"preview --batch --augment {aug} twice gives different bytes")
        # Slice mode needs a 2D recipe: cirrhosisstage-2d (3 channels, float16) with its augmentation.
        cs = os.path.join(work, "cs")
        r = run([cli, "convert", "--layout", "cirrmri600", src, "--out", cs, "--recipe", "cirrhosisstage-2d", "--quiet"])
        if check(r.returncode == 0, f"convert --recipe cirrhosisstage-2d: {r.stderr.strip()}"):
            o3 = os.path.join(work, "batch-slice.png")
            r = run([cli, "preview", cs, "--batch", "--mode", "slice", "--augment", "cirrhosisstage", "--batch-size", "3",
                     "--seed", "1", "-o", o3])
            check(r.returncode == 0, f"preview --batch --mode slice: {r.stderr.strip()}")
            check_picture(o3, "preview --batch --mode slice", want_outline=False)
            o4 = os.path.join(work, "cs0.png")
            r = run([cli, "preview", cs, "--sample", "0", "-o", o4])
            check(r.returncode == 0, f"preview of a float16 3-channel record: {r.stderr.strip()}")
            check_picture(o4, "preview of a float16 3-channel record")

        # Bad inputs: exit 1 with one line naming the problem, and no picture left behind.
        missing = os.path.join(work, "no-such-dataset")
        out = os.path.join(work, "bad.png")
        check_fails([cli, "preview", missing, "--sample", "0", "-o", out], "missing dataset", missing)
        check_fails([cli, "preview", ds, "--sample", str(nrec), "-o", out], "sample out of range", f"sample {nrec}")
        check_fails([cli, "preview", ds, "--sample", "999999", "-o", out], "sample far out of range", "out of range")
        blocker = os.path.join(work, "a-file")
        with open(blocker, "w") as f:
            f.write("not a directory\n")
        unwritable = os.path.join(blocker, "x.png")
        check_fails([cli, "preview", ds, "--sample", "0", "-o", unwritable], "unwritable output", unwritable)
        check_fails([cli, "preview", ds, "--batch", "-o", os.path.join(work, "nodir", "b.png")], "unwritable batch output",
                    os.path.join(work, "nodir", "b.png"))
        check_fails([cli, "preview", ds, "--batch", "--sample", "1000", "-o", out], "batch out of range", "batch 1000")
        check_fails([cli, "preview", missing, "--batch", "-o", out], "missing dataset (--batch)", missing)
        check(not os.path.exists(out), "a failed preview left a picture behind")
        # Wrong usage: exit 2.
        for argv, what in (([ds, "--sample", "0"], "no -o"), ([ds, "-o", out], "no --sample"),
                           ([ds, "--sample", "0", "--seed", "3", "-o", out], "--seed without --batch"),
                           ([ds, "--sample", "-1", "-o", out], "negative --sample"),
                           ([ds, "--batch", "--patch", "4,4", "-o", out], "bad --patch")):
            r = run([cli, "preview"] + argv)
            check(r.returncode == 2, f"{what}: exit {r.returncode}, expected 2 ({r.stderr.strip()!r})")
        r = run([cli, "preview", "--help"])
        check(r.returncode == 0 and "radiological" in r.stdout.lower(), "preview --help")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        harness.summary("preview")


if __name__ == "__main__":
    main()
    sys.exit(1 if harness.CHECKS.failed else 0)
