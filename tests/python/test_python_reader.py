#!/usr/bin/python3
"""Converted datasets read three ways: the independent reader, the Python binding, and nibabel.

  /usr/bin/python3 tests/python/test_python_reader.py --cirrdata build/tools/cirrdata \
      --lib build/libcirrdata/libcirrdata.so [--workdir DIR] [--keep]

Makes a small synthetic CirrMRI600+ dataset (`cirrdata synth --cases 6 --seed 3`) and converts it
three times: `--recipe raw`, `--recipe nnunet-3d`, and `--recipe raw --shard-size 1M` (several
shards).  Then checks:
  (a) tests/python/cdshard.py (written from schemas/shard-format.md alone, no C) reads every dataset
      and verifies every checksum, size, offset and padding byte; `cirrdata verify` accepts them;
  (b) the ctypes binding (python/cirrdata) returns identical arrays (bit for bit, same dtype and
      shape) and metadata for every record, plus len / negative indices / IndexError / read_region;
  (c) raw recipe: the stored image equals nibabel's as_closest_canonical(nib.load(src)).get_fdata()
      cast to the stored dtype (float32 with scaling: within float32 rounding), the mask equals the
      canonical mask exactly, and the affine equals the canonical affine within 1e-5;
  (d) damage (a byte flipped inside a chunk, a record header, the index; a truncated shard) makes
      cdshard raise, `cirrdata verify` exit 1 naming the shard file (and record), and the binding
      raise CirrdataError when the damaged record is read;
  (e) manifests whose shard path is '../x.cds', '/etc/passwd', ... are refused by the binding, by
      cdshard and by `cirrdata verify`.
Prints one line per failure and ends with exactly one line `python reader: N passed, M failed`.
"""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # keep the source tree clean

import numpy as np  # noqa: E402
import nibabel as nib  # noqa: E402
import xxhash  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), 'python'))
import cdshard  # noqa: E402
import harness  # noqa: E402
from asan_reexec import reexec_under_asan  # noqa: E402
from harness import Checks  # noqa: E402

TIMEOUT_S = 600
cirrdata = None  # the binding, imported in main() once CIRRDATA_LIB is set


def run(cmd):
    return harness.run_rc(cmd, timeout=TIMEOUT_S)


def raises(fn, exc):
    """(True, message) when fn() raises exc; (False, what happened) otherwise."""
    try:
        fn()
    except exc as e:
        return True, str(e)
    except Exception as e:  # noqa: BLE001
        return False, 'raised %s instead: %s' % (type(e).__name__, e)
    return False, 'did not raise'


def same_array(a, b):
    """Bit-identical: same dtype, shape and bytes (NaNs and -0.0 included)."""
    return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
            and a.shape == b.shape and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes())


def clone(good, d, copy=()):
    """A copy of dataset GOOD at D: the manifest and the shards listed in COPY (paths relative to the
    dataset) are copied, the other shards hard-linked (cheap; they are never modified)."""
    shutil.rmtree(d, ignore_errors=True)
    for dirpath, _, files in os.walk(good):
        rel = os.path.relpath(dirpath, good)
        os.makedirs(os.path.join(d, rel), exist_ok=True)
        for f in files:
            src, dst = os.path.join(dirpath, f), os.path.join(d, rel, f)
            if f == 'manifest.json' or os.path.normpath(os.path.join(rel, f)) in {os.path.normpath(x) for x in copy}:
                shutil.copyfile(src, dst)
            else:
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copyfile(src, dst)


def names_record(msg, n):
    return re.search(r'record\D{0,3}%d\b' % n, msg) is not None


# ----------------------------------------------------------------------------- (a) + (b)

DTYPE_NAMES = ('uint8', 'int16', 'float16', 'float32')
SCHEMA = os.path.join(os.path.dirname(os.path.dirname(HERE)), 'schemas', 'manifest.schema.json')


def schema_dtypes():
    """The values manifest.schema.json allows for tensors.*.dtype."""
    try:
        sc = json.load(open(SCHEMA))
        return tuple(sc['properties']['tensors']['additionalProperties']['properties']['dtype']['enum'])
    except (OSError, ValueError, KeyError, TypeError):
        return DTYPE_NAMES


def check_manifest(c, m, recs, label):
    """The parts of manifest.schema.json that tie the manifest to the records (no jsonschema here)."""
    req = ['format', 'format_version', 'created_by', 'recipe', 'source', 'counts', 'statistics', 'tensors',
           'shards', 'records']
    c.check(all(k in m for k in req), '%s: manifest has the required keys' % label,
            'missing %s' % [k for k in req if k not in m])
    bad = []
    allowed = schema_dtypes()
    for name, t in m.get('tensors', {}).items():
        if t.get('dtype') not in allowed:
            bad.append('tensors.%s.dtype %r not one of %s (manifest.schema.json)' % (name, t.get('dtype'), allowed))
        stored = {r['tensors'][name].dtype.name for r in recs if name in r['tensors']}
        if t.get('dtype') in DTYPE_NAMES and stored != {t['dtype']}:
            bad.append('tensors.%s.dtype %r but records store %s' % (name, t['dtype'], sorted(stored)))
        if t.get('dtype') == 'mixed' and len(stored) < 2:
            bad.append('tensors.%s.dtype "mixed" but every record stores %s' % (name, sorted(stored)))
        ch = {r['tensors'][name].shape[0] for r in recs if name in r['tensors']}
        if ch and ch != {t.get('channels')}:
            bad.append('tensors.%s.channels %r but records have %s' % (name, t.get('channels'), sorted(ch)))
    c.check(not bad, '%s: manifest "tensors" matches the schema and the records' % label, '; '.join(bad))
    bad = []
    for n, (mr, r) in enumerate(zip(m.get('records', []), recs)):
        img = r['tensors'].get('image')
        if 'shape' in mr and img is not None and list(mr['shape']) != list(img.shape[1:]):
            bad.append('records[%d].shape %s != stored %s' % (n, mr['shape'], img.shape[1:]))
        if isinstance(mr.get('dtype'), str) and img is not None and mr['dtype'] != img.dtype.name:
            bad.append('records[%d].dtype %r but its image is %s' % (n, mr['dtype'], img.dtype.name))
        msk = r['tensors'].get('mask')
        if 'foreground_voxels' in mr and msk is not None and mr['foreground_voxels'] != int(np.count_nonzero(msk)):
            bad.append('records[%d].foreground_voxels %s != %d' % (n, mr['foreground_voxels'], np.count_nonzero(msk)))
    counts = m.get('counts', {})
    for k, field in (('by_split', 'split'), ('by_sequence', 'sequence'), ('by_label', 'label')):
        want = {}
        for r in recs:
            v = str(r['metadata'].get(field))
            want[v] = want.get(v, 0) + 1
        if counts.get(k) != want:
            bad.append('counts.%s %s != %s' % (k, counts.get(k), want))
    c.check(not bad, '%s: manifest records/counts match the records' % label, '; '.join(bad[:4]))

def check_dataset(c, exe, out, label):
    """Reads OUT with cdshard and the binding and compares. Returns (manifest, records) or None."""
    rc, so, se = run([exe, 'verify', out])
    c.check(rc == 0, '%s: cirrdata verify exits 0 on the intact dataset' % label, 'exit %s: %s' % (rc, se.strip()))
    leftovers = [f for _, _, fs in os.walk(out) for f in fs if f.endswith('.tmp')]
    c.check(not leftovers, '%s: no *.tmp files left behind' % label, leftovers)
    try:
        manifest, recs = cdshard.read_dataset(out)
    except ValueError as e:
        c.check(False, '%s: cdshard.read_dataset verifies every shard, record and chunk' % label, e)
        return None
    c.check(True, '%s: cdshard.read_dataset verifies every shard, record and chunk' % label)
    c.check(len(recs) > 0, '%s: dataset has records' % label)
    for r in recs:
        if 'image' not in r['tensors']:
            c.check(False, '%s: record %s has an image tensor' % (label, r['metadata'].get('key')))
            break
        m = r['tensors'].get('mask')
        if m is not None and not (m.dtype == np.uint8 and m.shape[0] == 1
                                  and m.shape[1:] == r['tensors']['image'].shape[1:]):
            c.check(False, '%s: record %s mask is uint8 (1, X, Y, Z) like the image'
                    % (label, r['metadata'].get('key')), '%s %s' % (m.dtype, m.shape))
            break
    check_manifest(c, manifest, recs, label)
    bad = []
    for r in recs:  # fg_locations (optional): up to 256 voxels inside the mask
        fl, msk = r['metadata'].get('fg_locations'), r['tensors'].get('mask')
        if fl is None or msk is None:
            continue
        pts = np.asarray(fl, dtype=np.int64).reshape(-1, 3)
        inside = np.all((pts >= 0) & (pts < np.asarray(msk.shape[1:])), axis=1)
        if len(pts) > 256 or not inside.all() or not np.all(msk[0][tuple(pts.T)] > 0) or \
                (len(pts) == 0) != (not msk.any()):
            bad.append('%s: %d fg_locations, %d outside the mask' % (r['metadata'].get('key'), len(pts),
                       int(np.sum(~inside)) + int(np.sum(msk[0][tuple(pts[inside].T)] == 0))))
    c.check(not bad, '%s: fg_locations lie in the mask (at most 256)' % label, '; '.join(bad[:4]))
    keys = [r['metadata'].get('key') for r in recs]
    c.check(len(set(keys)) == len(keys), '%s: record keys are unique' % label)

    try:
        ds = cirrdata.Dataset(out)
    except cirrdata.CirrdataError as e:
        c.check(False, '%s: binding opens the dataset' % label, e)
        return manifest, recs
    with ds:
        c.check(len(ds) == len(recs), '%s: len(ds) == manifest records' % label, '%d != %d' % (len(ds), len(recs)))
        c.check(ds.manifest == manifest, '%s: ds.manifest equals manifest.json' % label)
        bad = []
        for i, r in enumerate(recs):
            try:
                s = ds[i]
            except cirrdata.CirrdataError as e:
                bad.append('record %d: CirrdataError %s' % (i, e))
                continue
            meta = r['metadata']
            for k, v in meta.items():
                if k == 'affine':
                    if not (isinstance(s.get(k), np.ndarray) and s[k].shape == (4, 4)
                            and np.array_equal(s[k], np.asarray(v, dtype=np.float64))):
                        bad.append('record %d: affine %r != %r' % (i, s.get(k), v))
                elif s.get(k, KeyError) != v:
                    bad.append('record %d: metadata %r: %r != %r' % (i, k, s.get(k, '<missing>'), v))
            for name, arr in r['tensors'].items():
                if not same_array(s.get(name), arr):
                    got = s.get(name)
                    bad.append('record %d: tensor %r differs (%s %s vs %s %s)'
                               % (i, name, getattr(got, 'dtype', None), getattr(got, 'shape', None),
                                  arr.dtype, arr.shape))
            if 'mask' not in r['tensors'] and s.get('mask', 0) is not None:
                bad.append('record %d: no mask tensor but sample["mask"] is not None' % i)
            extra = set(s) - set(meta) - set(r['tensors']) - {'mask'}
            if extra:
                bad.append('record %d: unexpected keys %s' % (i, sorted(extra)))
        c.check(not bad, '%s: binding == cdshard for all %d records (arrays bit for bit, metadata)'
                % (label, len(recs)), '; '.join(bad[:4]))
        if recs:
            last = ds[-1]
            c.check(same_array(last['image'], recs[-1]['tensors']['image']) and
                    last['key'] == recs[-1]['metadata']['key'], '%s: ds[-1] is the last record' % label)
            ok, msg = raises(lambda: ds[len(recs)], IndexError)
            c.check(ok, '%s: ds[len] raises IndexError' % label, msg)
            ok, msg = raises(lambda: ds[-len(recs) - 1], IndexError)
            c.check(ok, '%s: ds[-len-1] raises IndexError' % label, msg)
            # read_region: a box sticking out of the volume on both sides of x, inside on y, z.
            img = recs[0]['tensors']['image']
            C, X, Y, Z = img.shape
            start, size = (-3, Y // 3, 1), (X + 6, max(1, Y // 3), max(1, Z - 2))
            want = np.zeros((C,) + size, img.dtype)
            want[:, 3:3 + X] = img[:, :, start[1]:start[1] + size[1], start[2]:start[2] + size[2]]
            try:
                got = ds.read_region(0, start, size)
                c.check(same_array(got, want), '%s: read_region (box partly outside) == cdshard slice, zero fill'
                        % label)
            except cirrdata.CirrdataError as e:
                c.check(False, '%s: read_region' % label, e)
    ok, msg = raises(lambda: len(ds[0]), ValueError)
    c.check(ok, '%s: a closed dataset refuses reads with ValueError' % label, msg)
    return manifest, recs


# ----------------------------------------------------------------------------- (c)

def src_path(manifest, p):
    if p is None or os.path.isabs(p):
        return p
    return os.path.join(manifest.get('source', {}).get('root', ''), p)


def check_raw_vs_nibabel(c, manifest, recs):
    bad = []
    scaled = 0
    for r in recs:
        meta, t = r['metadata'], r['tensors']
        key = meta.get('key')
        try:
            src = src_path(manifest, meta['original']['path'])
            orig = nib.load(src)
            img = nib.as_closest_canonical(orig)
        except Exception as e:  # noqa: BLE001
            bad.append('%s: cannot load original %r: %s' % (key, meta.get('original'), e))
            continue
        ref = img.get_fdata()
        stored = t['image']
        if stored.shape != (1,) + ref.shape:
            bad.append('%s: image shape %s, canonical source %s' % (key, stored.shape, ref.shape))
            continue
        slope, inter = orig.dataobj.slope, orig.dataobj.inter
        is_scaled = not ((slope is None or np.isnan(slope) or slope == 1) and
                         (inter is None or np.isnan(inter) or inter == 0))
        want = ref.astype(stored.dtype)
        if is_scaled and stored.dtype == np.float32:
            scaled += 1
            diff = np.abs(stored[0].astype(np.float64) - want.astype(np.float64))
            tol = 2 * np.spacing(np.abs(want)).astype(np.float64)
            if not np.all(diff <= tol):
                bad.append('%s: scaled image differs beyond float32 rounding (max diff %g)' % (key, diff.max()))
        elif not np.array_equal(stored[0], want):
            bad.append('%s: image != canonical source cast to %s (%d voxels differ)'
                       % (key, stored.dtype, int(np.sum(stored[0] != want))))
        if not np.array_equal(ref, want.astype(np.float64)):
            bad.append('%s: stored dtype %s is not lossless for source %s'
                       % (key, stored.dtype, img.get_data_dtype()))
        aff = np.asarray(meta['affine'], dtype=np.float64)
        if not np.allclose(aff, img.affine, rtol=0, atol=1e-5):
            bad.append('%s: affine %s != canonical %s' % (key, aff.tolist(), img.affine.tolist()))
        if not np.allclose(meta['spacing'], img.header.get_zooms()[:3], rtol=0, atol=1e-5):
            bad.append('%s: spacing %s != canonical zooms %s' % (key, meta['spacing'], img.header.get_zooms()[:3]))
        orient = meta['orientation']
        if (''.join(orient) if isinstance(orient, list) else orient) != ''.join(nib.aff2axcodes(img.affine)):
            bad.append('%s: orientation %r' % (key, orient))
        if list(meta['original'].get('shape', [])) [:3] != list(orig.shape[:3]):
            bad.append('%s: original.shape %s != %s' % (key, meta['original'].get('shape'), orig.shape))
        mpath = src_path(manifest, meta.get('mask_path'))
        if 'mask' in t:
            if not mpath:
                bad.append('%s: mask stored but no mask_path in metadata' % key)
                continue
            mimg = nib.as_closest_canonical(nib.load(mpath))
            mref = mimg.get_fdata()
            if t['mask'].shape != (1,) + mref.shape or not np.array_equal(t['mask'][0], mref.astype(np.uint8)):
                bad.append('%s: mask != canonical mask %s' % (key, mpath))
                continue
            if not np.allclose(mimg.affine, img.affine, atol=1e-5):
                bad.append('%s: mask affine differs from image affine' % key)
            nz = np.argwhere(mref > 0)
            want_bbox = None if len(nz) == 0 else [[int(nz[:, d].min()), int(nz[:, d].max()) + 1] for d in range(3)]
            if meta['mask_bbox'] != want_bbox:
                bad.append('%s: mask_bbox %s != %s' % (key, meta['mask_bbox'], want_bbox))
            if 'foreground_voxels' in meta and meta['foreground_voxels'] != len(nz):
                bad.append('%s: foreground_voxels %s != %d' % (key, meta['foreground_voxels'], len(nz)))
        elif mpath:
            bad.append('%s: metadata names mask %s but no mask tensor is stored' % (key, mpath))
    c.check(not bad, 'raw: %d records == nibabel canonical image/mask/affine (%d scaled)' % (len(recs), scaled),
            '; '.join(bad[:4]))


# ----------------------------------------------------------------------------- (d)

def flip(path, offset):
    with open(path, 'r+b') as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


def damage_cases(out, manifest):
    """[(label, shard index, mutate(path, layout), record numbers of that shard that must fail or None
    for all, whether verify's message must name the record)]."""
    def chunk(path, lay):
        rec = lay['records'][-1]
        t = rec['tensors'][0]
        ch = t['chunks'][len(t['chunks']) // 2]
        flip(path, ch['offset'] + ch['stored_size'] // 2)
        return [rec['record']], True

    def rec_header(path, lay):
        rec = lay['records'][len(lay['records']) // 2]
        flip(path, rec['metadata_offset'] + 3)
        return [rec['record']], True

    def rec_table(path, lay):
        rec = lay['records'][0]
        flip(path, rec['offset'] + 32 + 24)  # shape_x of the first tensor
        return [rec['record']], True

    def index(path, lay):
        flip(path, lay['index_offset'] + 32 * (lay['record_count'] - 1) + 16)
        return None, False

    def trunc_mid(path, lay):
        with open(path, 'r+b') as f:
            f.truncate(lay['file_size'] // 2)
        return None, False

    def trunc_one(path, lay):
        with open(path, 'r+b') as f:
            f.truncate(lay['file_size'] - 1)
        return None, False

    return [('byte flipped in a chunk', chunk), ('byte flipped in a record header (metadata)', rec_header),
            ('byte flipped in a record header (tensor table)', rec_table),
            ('byte flipped in the index', index), ('shard truncated to half', trunc_mid),
            ('shard truncated by one byte', trunc_one)]


def check_damage(c, exe, good, work, label):
    """Damages one shard of a copy of GOOD in each way of damage_cases and checks every reader."""
    manifest = json.load(open(os.path.join(good, 'manifest.json')))
    nshards = len(manifest['shards'])
    target = 1 if nshards > 1 else 0   # damage the second shard: shard 0's records must still read
    for n, (what, mutate) in enumerate(damage_cases(good, manifest)):
        what = '%s, %s' % (label, what)
        d = os.path.join(work, 'damaged-%d' % n)
        spath_rel = manifest['shards'][target]['path']
        clone(good, d, [spath_rel])
        spath = os.path.join(d, *spath_rel.split('/'))
        base = os.path.basename(spath)
        lay = cdshard.shard_layout(spath)
        bad_recs, must_name_record = mutate(spath, lay)
        if bad_recs is None:
            bad_recs = list(range(lay['record_count']))
        # cdshard: the shard alone, and the dataset
        ok, msg = raises(lambda: cdshard.read_shard(spath), ValueError)
        c.check(ok and base in msg, 'damage "%s": cdshard.read_shard raises naming the file' % what, msg)
        if ok and must_name_record:
            c.check(names_record(msg, bad_recs[0]), 'damage "%s": cdshard names record %d' % (what, bad_recs[0]), msg)
        ok, msg = raises(lambda: cdshard.read_dataset(d), ValueError)
        c.check(ok, 'damage "%s": cdshard.read_dataset raises' % what, msg)
        # cirrdata verify
        rc, so, se = run([exe, 'verify', d])
        c.check(rc == 1, 'damage "%s": cirrdata verify exits 1' % what, 'exit %s: %s %s' % (rc, so.strip(), se.strip()))
        text = so + se
        c.check(base in text, 'damage "%s": verify names the shard file %s' % (what, base), text.strip())
        if must_name_record:
            c.check(names_record(text, bad_recs[0]), 'damage "%s": verify names record %d' % (what, bad_recs[0]),
                    text.strip())
        c.check('AddressSanitizer' not in text and 'runtime error' not in text,
                'damage "%s": no sanitizer report' % what, text[-300:])
        # binding: the damaged records raise CirrdataError naming the file; other shards still read
        dsidx = {(r['shard'], r['index']): i for i, r in enumerate(manifest['records'])}
        try:
            ds = cirrdata.Dataset(d)
        except cirrdata.CirrdataError as e:
            c.check(False, 'damage "%s": binding opens the dataset (shards are opened on first use)' % what, e)
            continue
        with ds:
            for rn in bad_recs:
                i = dsidx[(target, rn)]
                ok, msg = raises(lambda: ds[i], cirrdata.CirrdataError)
                c.check(ok and base in msg, 'damage "%s": binding ds[%d] (shard record %d) raises CirrdataError '
                        'naming the file' % (what, i, rn), msg)
            others = [rn for rn in range(lay['record_count']) if rn not in bad_recs]
            if others:  # per-record verification: the shard's other records are unaffected
                i = dsidx[(target, others[0])]
                ok = True
                try:
                    ds[i]
                except cirrdata.CirrdataError as e:
                    ok = e
                c.check(ok is True, 'damage "%s": the shard\'s undamaged record %d still reads' % (what, others[0]), ok)
            if nshards > 1:
                i = dsidx[(0, 0)]
                ok = True
                try:
                    ds[i]
                except cirrdata.CirrdataError as e:
                    ok = e
                c.check(ok is True, 'damage "%s": records of an intact shard still read' % what, ok)
        shutil.rmtree(d, ignore_errors=True)


# ----------------------------------------------------------------------------- (d') forged shards

def _put(buf, off, fmt, val):
    struct.pack_into(fmt, buf, off, val)


def _reseal(buf, lay):
    """Recomputes every record header checksum, the index checksum and the shard header checksum, so
    that only structural checks can find what was changed."""
    for rec in lay['records']:
        o, h = rec['offset'], rec['header_size']
        _put(buf, o + h - 8, '<Q', xxhash.xxh3_64_intdigest(bytes(buf[o:o + h - 8])))
    io, isz = lay['index_offset'], lay['index_size']
    _put(buf, 48, '<Q', xxhash.xxh3_64_intdigest(bytes(buf[io:io + isz])))
    _put(buf, 4088, '<Q', xxhash.xxh3_64_intdigest(bytes(buf[:4088])))


def forge_cases():
    """[(what, forge(buf, lay) -> dataset record number that must fail)]: valid checksums, bad structure."""
    def chunk_entry(lay, r, k=0):
        """Byte offset of chunk table entry k (of the first tensor) of record r."""
        rec = lay['records'][r]
        return rec['metadata_offset'] + _meta_size(rec) + 24 * k, rec['tensors'][0]

    def f_chunk_past_eof(buf, lay):
        off, _ = chunk_entry(lay, 1)
        _put(buf, off, '<Q', -(-lay['file_size'] // 4096) * 4096 + 4096)  # aligned, past EOF
        return 1

    def f_raw_size(buf, lay):
        off, _ = chunk_entry(lay, 1)
        _put(buf, off + 12, '<I', struct.unpack_from('<I', buf, off + 12)[0] * 2)
        return 1

    def f_dtype(buf, lay):
        _put(buf, lay['records'][1]['offset'] + 32 + 16, '<B', 9)
        return 1

    def f_shape(buf, lay):
        o = lay['records'][1]['offset'] + 32 + 24
        _put(buf, o, '<I', struct.unpack_from('<I', buf, o)[0] + 1)  # X + 1: chunk grid or extents change
        return 1

    def f_record_number(buf, lay):
        _put(buf, lay['records'][1]['offset'] + 24, '<Q', 7)
        return 1

    def f_index_points_to_other(buf, lay):
        io = lay['index_offset']
        buf[io + 32:io + 64] = buf[io:io + 32]  # entry 1 := entry 0 (record_number says 0)
        return 1

    def f_meta_size(buf, lay):
        _put(buf, lay['records'][1]['offset'] + 16, '<I', (1 << 20) + 1)
        return 1

    def f_tensor_count(buf, lay):
        _put(buf, lay['records'][1]['offset'] + 12, '<I', 0)
        return 1

    return [('chunk offset past the end of the file', f_chunk_past_eof), ('chunk raw_size doubled', f_raw_size),
            ('tensor dtype code 9', f_dtype), ('tensor shape_x + 1', f_shape),
            ('record_number wrong', f_record_number), ('index entry 1 = entry 0', f_index_points_to_other),
            ('meta_size above 1 MiB', f_meta_size), ('tensor_count 0', f_tensor_count)]


def _meta_size(rec):
    return rec['header_size'] - 8 - 32 - 64 * len(rec['tensors']) - 24 * sum(len(t['chunks']) for t in rec['tensors'])


PROBE = r"""
import sys
import cirrdata
try:
    with cirrdata.Dataset(sys.argv[1]) as ds:
        ds[int(sys.argv[2])]
except cirrdata.CirrdataError as e:
    print(e)
    sys.exit(3)
sys.exit(0)
"""


def check_forged(c, exe, good, work):
    """Shards whose checksums are all valid but whose structure is not: every reader must refuse them
    (the manifest is updated too, so verify cannot rely on the whole-file hash)."""
    manifest = json.load(open(os.path.join(good, 'manifest.json')))
    dsidx = {(r['shard'], r['index']): i for i, r in enumerate(manifest['records'])}
    multi = [n for n, sh in enumerate(manifest['shards']) if sh['records'] >= 2]
    if not c.check(bool(multi), 'forged: the dataset has a shard with 2 or more records'):
        return
    target = multi[0]
    sp_rel = manifest['shards'][target]['path']
    for n, (what, forge) in enumerate(forge_cases()):
        d = os.path.join(work, 'forged-%d' % n)
        clone(good, d, [sp_rel])
        spath = os.path.join(d, *sp_rel.split('/'))
        base = os.path.basename(spath)
        lay = cdshard.shard_layout(spath)
        buf = bytearray(open(spath, 'rb').read())
        rn = forge(buf, lay)
        _reseal(buf, lay)
        with open(spath, 'wb') as f:
            f.write(buf)
        m = json.loads(json.dumps(manifest))
        m['shards'][target]['xxh3_128'] = cdshard.file_xxh3_128(spath)
        harness.write_manifest(d, m)  # with a valid manifest_xxh3: only the forged shard is wrong
        ok, msg = raises(lambda: cdshard.read_shard(spath), ValueError)
        c.check(ok and base in msg, 'forged "%s": cdshard refuses' % what, msg)
        rc, so, se = run([exe, 'verify', d])
        c.check(rc == 1 and base in so + se, 'forged "%s": cirrdata verify exits 1 naming the shard' % what,
                'exit %s: %s' % (rc, (so + se).strip()))
        env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(cirrdata.__file__)),
                   PYTHONDONTWRITEBYTECODE='1')
        p = subprocess.run([sys.executable, '-c', PROBE, d, str(dsidx[(target, rn)])], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env, timeout=TIMEOUT_S)
        out = (p.stdout + p.stderr).decode('utf-8', 'replace').strip()
        c.check(p.returncode == 3 and base in out, 'forged "%s": binding raises CirrdataError on record %d'
                % (what, rn), 'exit %s: %s' % (p.returncode, out[-300:]))
        shutil.rmtree(d, ignore_errors=True)


# ----------------------------------------------------------------------------- (e)

def check_bad_paths(c, exe, good, work):
    manifest = json.load(open(os.path.join(good, 'manifest.json')))
    shard0 = os.path.join(good, *manifest['shards'][0]['path'].split('/'))
    parent = os.path.join(work, 'escape')
    base = os.path.basename(shard0)
    for n, bad in enumerate(['../x.cds', '/etc/passwd', 'ABS', 'shards/../shards/' + base, '../ds-4/shards/' + base,
                             'shards//' + base]):
        shutil.rmtree(parent, ignore_errors=True)
        d = os.path.join(parent, 'ds-%d' % n)
        clone(good, d)
        # make the escaping path point at a real, valid copy of the shard (size and hash match), so only
        # the path rule can refuse it
        shutil.copyfile(shard0, os.path.join(parent, 'x.cds'))
        if bad == 'ABS':
            bad = os.path.abspath(os.path.join(parent, 'x.cds'))
        m = json.loads(json.dumps(manifest))
        m['shards'][0]['path'] = bad
        if bad == '/etc/passwd' and os.path.exists(bad):
            m['shards'][0]['size'] = max(4096, os.path.getsize(bad))
        harness.write_manifest(d, m)  # a valid manifest_xxh3: only the path rule can refuse it
        ok, msg = raises(lambda: cirrdata.Dataset(d), cirrdata.CirrdataError)
        c.check(ok, 'shard path %r: binding refuses the manifest at open' % bad, msg)
        ok, msg = raises(lambda: cdshard.read_dataset(d), ValueError)
        c.check(ok, 'shard path %r: cdshard refuses' % bad, msg)
        rc, so, se = run([exe, 'verify', d])
        c.check(rc == 1, 'shard path %r: cirrdata verify exits 1' % bad, 'exit %s: %s' % (rc, se.strip()))
    shutil.rmtree(parent, ignore_errors=True)


# ----------------------------------------------------------------------------- main

def binding_basics(c, work):
    v = cirrdata.version()
    c.check(re.fullmatch(r'\d+\.\d+\.\d+.*', v) is not None, 'cirrdata.version() is a version', v)
    ok, msg = raises(lambda: cirrdata.Dataset(os.path.join(work, 'no-such-dataset')), cirrdata.CirrdataError)
    c.check(ok and 'no-such-dataset' in msg, 'missing dataset: CirrdataError naming the path', msg)
    empty = os.path.join(work, 'not-json')
    os.makedirs(empty, exist_ok=True)
    with open(os.path.join(empty, 'manifest.json'), 'w') as f:
        f.write('{"format": "cirrdata-dataset", ')
    ok, msg = raises(lambda: cirrdata.Dataset(empty), cirrdata.CirrdataError)
    c.check(ok and 'manifest.json' in msg, 'truncated manifest: CirrdataError naming manifest.json', msg)


def main():
    global cirrdata
    ap = harness.parser(__doc__)
    ap.add_argument('--keep', action='store_true')
    a = ap.parse_args()
    reexec_under_asan(a.lib)
    c = Checks()
    exe = os.path.abspath(a.cirrdata)
    os.environ['CIRRDATA_LIB'] = os.path.abspath(a.lib)
    work = a.workdir or tempfile.mkdtemp(prefix='cirrdata-pyreader-')
    os.makedirs(work, exist_ok=True)
    try:
        import cirrdata as _cd
        cirrdata = _cd
        c.check(os.path.samefile(cirrdata.library_path(), a.lib), 'binding loaded the --lib library',
                cirrdata.library_path())
        binding_basics(c, work)

        src = os.path.join(work, 'src')
        shutil.rmtree(src, ignore_errors=True)
        rc, so, se = run([exe, 'synth', '--layout', 'cirrmri600', src, '--cases', '6', '--seed', '3', '--quiet'])
        if not c.check(rc == 0, 'synth exits 0', 'exit %s: %s' % (rc, se.strip())):
            raise SystemExit
        outs = {}
        for label, extra in (('raw', ['--recipe', 'raw']), ('nnunet-3d', ['--recipe', 'nnunet-3d']),
                             ('raw-1M', ['--recipe', 'raw', '--shard-size', '1M']),
                             ('raw-12M', ['--recipe', 'raw', '--shard-size', '12M'])):
            out = os.path.join(work, 'out-' + label)
            shutil.rmtree(out, ignore_errors=True)
            rc, so, se = run([exe, 'convert', '--layout', 'cirrmri600', src] + extra + ['--out', out, '--quiet'])
            if c.check(rc == 0, '%s: convert exits 0' % label, 'exit %s: %s' % (rc, se.strip())):
                outs[label] = out
        results = {}
        for label, out in outs.items():
            results[label] = check_dataset(c, exe, out, label)
        if results.get('raw'):
            check_raw_vs_nibabel(c, *results['raw'])
        for label in ('raw-1M', 'raw-12M'):
            if not results.get(label):
                continue
            m, recs = results[label]
            c.check(len(m['shards']) > 1, '%s: --shard-size gives several shards' % label, len(m['shards']))
            if results.get('raw'):
                a_ = {r['metadata']['key']: r for r in results['raw'][1]}
                diff = [r['metadata']['key'] for r in recs
                        if r['metadata']['key'] not in a_
                        or r['metadata'] != a_[r['metadata']['key']]['metadata']
                        or set(r['tensors']) != set(a_[r['metadata']['key']]['tensors'])
                        or not all(same_array(v, a_[r['metadata']['key']]['tensors'][k])
                                   for k, v in r['tensors'].items())]
                c.check(not diff and len(recs) == len(results['raw'][1]),
                        '%s: same records as raw (only the sharding differs)' % label, diff[:5])
        # damage, forgery and path escapes on the dataset with several shards of several records each
        # (verify must name the right record; the intact shards and records must still read)
        dmg = 'raw-12M' if results.get('raw-12M') else 'raw' if results.get('raw') else None
        if dmg:
            check_damage(c, exe, outs[dmg], work, dmg)
            check_forged(c, exe, outs[dmg], work)
            check_bad_paths(c, exe, outs[dmg], work)
    except SystemExit:
        pass
    except Exception as e:  # noqa: BLE001 - report, do not crash without the summary line
        c.crashed(e)
    finally:
        if not a.keep and not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return c.summary('python reader')


if __name__ == '__main__':
    sys.exit(main())
