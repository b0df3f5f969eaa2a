#!/usr/bin/env python3
"""Corruption sweep over a small converted dataset: random single-bit flips (in chunk data, record
headers, the record index, the shard header, alignment padding and manifest.json), truncations at random
points and zero-filled 4 KiB pages. Seeded, so every run damages the same bytes.

For every case:
  * `cirrdata verify` (the C function cd_dataset_verify through ctypes, and the CLI for every 8th case)
    must fail and name the damaged file; where the damage is in a record (its header or a chunk), the
    record number too. Shard bytes are all covered by the manifest's whole-file XXH3-128, so verify
    detects every change to a shard, padding included.
  * the loader (cirrdata.Loader, skip_corrupt=False, every record, volume mode, no augmentation) must
    either raise an error naming the damaged file (and record) or deliver batches identical to those of
    the undamaged dataset (voxels, masks, labels, indices). Flips in data the loader reads (headers,
    index, chunks) must raise; flips in padding (zero bytes between 4 KiB-aligned regions that no
    reader uses) must change nothing delivered.
Manifest damage: the manifest ends with a checksum of its own (manifest_xxh3, schemas/shard-format.md),
which cd_dataset_open checks first, so every flip, truncation or zeroed page anywhere in manifest.json,
its last newline included, must make both verify and the loader fail naming manifest.json.

  /usr/bin/python3 tests/python/test_corruption.py --cirrdata build/tools/cirrdata --lib build/libcirrdata/libcirrdata.so
Environment: CIRRDATA_SLOW_TESTS=1 runs 10x as many cases. Ends with `corruption: N passed, M failed`
and one line of counts per kind of damage.
"""
import ctypes
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True
import cdshard  # noqa: E402
import harness  # noqa: E402
from harness import check  # noqa: E402


class Verifier:
    """cd_dataset_verify through ctypes: in-process, so hundreds of cases cost no process starts."""

    def __init__(self, lib):
        from cirrdata import _lib as L
        self.L = L
        self.fn = lib.cd_dataset_verify
        self.fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(L.CdError)]
        self.fn.restype = ctypes.c_int

    def __call__(self, d):
        err = self.L.CdError()
        rc = self.fn(os.fsencode(d), None, None, ctypes.byref(err))
        return rc, err.message.decode("utf-8", "replace")


def load_all(Loader, d):
    """Every record once, in a fixed order, as stored (volume mode, no augmentation)."""
    out = []
    with Loader(d, batch_size=1, mode="volume", patch=None, seed=1, split="*", threads=1, io="pread",
                cache_bytes=0) as l:
        for b in l:
            out.append((b["image"].copy(), b["mask"].copy() if b["mask"] is not None else None,
                        b["label"].copy(), b["index"].copy()))
    return out


def same(a, b):
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            if (u is None) != (v is None) or (u is not None and not np.array_equal(u, v)):
                return False
    return True


def old_manifests(args, cirrdata, verify, ds, src, recipe, original, manifest_path):
    """A format_version 1 manifest (no checksum) is refused with a message that says what to do, and
    running the same convert command again rewrites the dataset in place, byte for byte as before; so does
    a manifest whose checksum fails. The independent reader agrees with the library on the checksum."""
    good = original[manifest_path]
    try:
        cdshard.check_manifest_sum(good, manifest_path)
        err = ""
    except ValueError as e:
        err = str(e)
    check(not err, f"cdshard accepts the library's manifest checksum: {err}")
    m = json.loads(good)
    m.pop("manifest_xxh3")
    m["format_version"] = 1
    conv = [args.cirrdata, "convert", "--layout", "nnunet", src, "--out", ds, "--recipe", recipe, "--shard-size", "300K",
            "--quiet"]
    for what, data in (("format_version 1", json.dumps(m, indent=1).encode() + b"\n"),
                       ("a flipped bit", good[:100] + bytes([good[100] ^ 8]) + good[101:]),
                       ("one byte appended", good + b"\n"),
                       ("upper-case checksum digits", good[:-36] + good[-36:-4].upper() + good[-4:])):
        with open(manifest_path, "wb") as f:
            f.write(data)
        if data == good:
            continue  # upper-casing changed nothing (all digits): not a damage
        try:
            cdshard.check_manifest_sum(data, manifest_path)
            refused = ""
        except ValueError as e:
            refused = str(e)
        check(manifest_path in refused, f"{what}: cdshard must refuse it")
        rc, msg = verify(ds)
        want = "format_version 1" if what.startswith("format") else "damaged"
        check(rc != 0 and manifest_path in msg and want in msg, f"{what}: verify: rc {rc}, {msg!r}")
        if what.startswith("format"):
            check("run the same `cirrdata convert` command again" in msg, f"{what}: the message says what to do: {msg!r}")
        try:
            cirrdata.Dataset(ds).close()
            raised = ""
        except cirrdata.CirrdataError as e:
            raised = str(e)
        check(manifest_path in raised, f"{what}: cirrdata.Dataset must refuse it naming manifest.json: {raised!r}")
        r = subprocess.run(conv, capture_output=True, text=True, timeout=300)
        check(r.returncode == 0, f"{what}: the same convert again: {r.stderr.strip()}")
        same = all(open(p, "rb").read() == b for p, b in original.items())
        check(same, f"{what}: convert again rewrote the dataset with the same bytes")
        rc, msg = verify(ds)
        check(rc == 0, f"{what}: after convert again the dataset verifies: {msg}")
        for p, b in original.items():
            with open(p, "wb") as f:
                f.write(b)


def main():
    ap = harness.parser()
    ap.add_argument("--cases", type=int, default=0, help="number of damage cases (default 400; 4000 with CIRRDATA_SLOW_TESTS=1)")
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args()
    cirrdata = harness.load_binding(args.lib)
    from cirrdata.loader import Loader

    ncases = args.cases or (4000 if os.environ.get("CIRRDATA_SLOW_TESTS") == "1" else 400)
    work = tempfile.mkdtemp(prefix="cirrdata-corrupt-", dir=args.workdir)
    t0 = time.monotonic()
    try:
        src, recipe = harness.tiny_source(work)
        ds = os.path.join(work, "ds")
        # Two records per shard: two shards, so the tests see that the right one is named.
        r = subprocess.run([args.cirrdata, "convert", "--layout", "nnunet", src, "--out", ds, "--recipe", recipe,
                            "--shard-size", "300K", "--quiet"], capture_output=True, text=True, timeout=300)
        check(r.returncode == 0, f"convert: {r.stderr.strip()}")
        if r.returncode:
            return 1
        verify = Verifier(cirrdata._LIB)
        rc, msg = verify(ds)
        check(rc == 0, f"the undamaged dataset must verify: {msg}")
        clean = load_all(Loader, ds)
        check(len(clean) == 4, f"expected 4 records, got {len(clean)}")

        manifest_path = os.path.join(ds, "manifest.json")
        with open(manifest_path) as f:
            m = json.load(f)
        shards = [os.path.join(ds, s["path"]) for s in m["shards"]]
        check(len(shards) >= 2, f"expected at least 2 shards, got {len(shards)}")
        original = {p: open(p, "rb").read() for p in shards + [manifest_path]}

        # Byte regions of each shard: (start, end, kind, record or None).
        regions = []
        for p in shards:
            lay = cdshard.shard_layout(p)
            covered = [(0, 4096, "shard_header", None), (lay["index_offset"], lay["index_offset"] + lay["index_size"], "index", None)]
            for rec in lay["records"]:
                covered.append((rec["offset"], rec["offset"] + rec["header_size"], "record_header", rec["record"]))
                for t in rec["tensors"]:
                    for ch in t["chunks"]:
                        covered.append((ch["offset"], ch["offset"] + ch["stored_size"], "chunk", rec["record"]))
            covered.sort()
            pos = 0
            for s, e, kind, rn in covered:
                regions.append((p, s, e, kind, rn))
                if s > pos:
                    regions.append((p, pos, s, "padding", None))
                pos = e
            if pos < lay["file_size"]:
                regions.append((p, pos, lay["file_size"], "padding", None))
        by_kind = {}
        for reg in regions:
            by_kind.setdefault(reg[3], []).append(reg)
        mlen = len(original[manifest_path])  # every byte, trailing whitespace too

        # The mix of cases: flips weighted by kind (not by bytes, or padding and chunks would crowd out
        # the headers), then truncations and zeroed pages.
        rng = random.Random(args.seed)
        mix = [("flip", "chunk", 0.26), ("flip", "record_header", 0.14), ("flip", "index", 0.05),
               ("flip", "shard_header", 0.05), ("flip", "padding", 0.10), ("flip", "manifest", 0.14),
               ("truncate", "shard", 0.10), ("truncate", "manifest", 0.04), ("zero_page", "shard", 0.10),
               ("zero_page", "manifest", 0.02)]
        weights = [w for _, _, w in mix]

        def pick_in(kind):
            regs = by_kind[kind]
            sizes = [e - s for _, s, e, _, _ in regs]
            p, s, e, k, rn = rng.choices(regs, weights=sizes)[0]
            return p, rng.randrange(s, e), rn

        def record_at(p, off):
            for q, s, e, k, rn in regions:
                if q == p and s <= off < e:
                    return k, rn
            return "padding", None

        counts = {}

        def names_location(msg):
            return target in msg and (rn is None or f"record {rn}" in msg)

        for case in range(ncases):
            action, where, _ = rng.choices(mix, weights=weights)[0]
            kind, rn, target = where, None, None
            if action == "flip":
                if where == "manifest":
                    target, off = manifest_path, rng.randrange(mlen)
                else:
                    target, off, rn = pick_in(where)
                bit = rng.randrange(8)
                data = bytearray(original[target])
                data[off] ^= 1 << bit
                desc = f"flip bit {bit} of byte {off} ({kind}) in {os.path.basename(target)}"
            elif action == "truncate":
                target = manifest_path if where == "manifest" else rng.choice(shards)
                size = mlen if where == "manifest" else len(original[target])
                off = rng.randrange(size)
                data = bytearray(original[target][:off])
                kind = "truncate_" + where
                desc = f"truncate {os.path.basename(target)} to {off} of {len(original[target])} bytes"
            else:
                target = manifest_path if where == "manifest" else rng.choice(shards)
                pages = [i for i in range(0, len(original[target]), 4096) if any(original[target][i:i + 4096])]
                off = rng.choice(pages)
                data = bytearray(original[target])
                data[off:off + 4096] = bytes(len(data[off:off + 4096]))
                kind = "zero_page_" + where
                if target != manifest_path:
                    k, rn = record_at(target, off)
                    kind += "_" + k
                desc = f"zero the 4 KiB page at {off} of {os.path.basename(target)}"
            counts.setdefault(kind, [0, 0, 0])  # cases, detected by verify, loader raised
            counts[kind][0] += 1
            with open(target, "wb") as f:
                f.write(data)
            try:
                rc, msg = verify(ds)
                named = names_location(msg)
                is_padding = kind == "padding"
                check(rc != 0 and named, f"{desc}: verify must fail naming the file{' and record %d' % rn if rn is not None else ''}: rc {rc}, {msg!r}")
                counts[kind][1] += rc != 0
                if case % 8 == 0:
                    r = subprocess.run([args.cirrdata, "verify", ds, "--quiet"], capture_output=True, text=True, timeout=120)
                    if rc != 0:
                        check(r.returncode == 1 and target in r.stderr and not harness.sanitizer_report(r.stderr),
                              f"{desc}: cirrdata verify exit {r.returncode}: {r.stderr.strip()!r}")
                    else:
                        check(r.returncode == 0, f"{desc}: the CLI and the C function disagree: {r.stderr.strip()!r}")
                try:
                    got = load_all(Loader, ds)
                    raised = None
                except cirrdata.CirrdataError as e:
                    raised = str(e)
                if raised is None:
                    check(same(got, clean), f"{desc}: the loader delivered data that differs from the undamaged dataset")
                    must_raise = not (is_padding or kind.endswith("_padding"))
                    check(not must_raise, f"{desc}: the loader read damaged data without an error")
                else:
                    counts[kind][2] += 1
                    check(names_location(raised),
                          f"{desc}: the loader's error must name the file{' and record %d' % rn if rn is not None else ''}: {raised!r}")
            finally:
                with open(target, "wb") as f:
                    f.write(original[target])
        rc, msg = verify(ds)
        check(rc == 0, f"after restoring, the dataset must verify again: {msg}")
        old_manifests(args, cirrdata, verify, ds, src, recipe, original, manifest_path)
        print(f"{ncases} cases in {time.monotonic() - t0:.1f} s (seed {args.seed})")
        print(f"{'damage':<34} {'cases':>6} {'verify failed':>14} {'loader raised':>14}")
        for k in sorted(counts):
            c = counts[k]
            print(f"{k:<34} {c[0]:>6} {c[1]:>14} {c[2]:>14}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return harness.summary("corruption")


if __name__ == "__main__":
    sys.exit(main())
