#!/usr/bin/python3
"""Hostile and broken inputs for the cirrdata CLI.

  /usr/bin/python3 tests/python/test_bad_input.py --cirrdata build/tools/cirrdata [--workdir DIR]

Each hostile file is made from a valid small file (built with nibabel headers) and given to both
`info --json` and `export`.  Expectations (unless a case says otherwise):
  * exit status exactly 1 (never a signal, never 0 for a broken file);
  * stderr is one line, "cirrdata: <FILE>: <problem>", containing the path we passed;
  * no "AddressSanitizer" / "runtime error" in stderr (the suite also runs under ASan/UBSan);
  * done within 10 s, and the child's peak RSS below 300 MB (gzip bombs and huge headers must be
    refused before anything is allocated).
`info` only reads the header: for files whose header is valid but whose voxel data is broken
(truncated data, bad gzip trailer, vox_offset past the end, headers too big for the cap) `info`
may succeed (exit 0) or fail (exit 1); `export` must fail.  Headers that are themselves invalid must
make both fail.  Prints one line per failure and finally `bad input: N passed, M failed`.
"""
import argparse
import gzip
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np
import nibabel as nib

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nifti_corpus as nc  # noqa: E402

TIMEOUT_S = 10.0
RSS_LIMIT_KB = 300 * 1024
SANITIZER_MARKS = ('AddressSanitizer', 'runtime error', 'LeakSanitizer', 'MemorySanitizer')

H = {1}        # invalid header: info and export must both fail
D = {0, 1}     # header fine, data broken: info may succeed (export must fail)


# ----------------------------------------------------------------------------- process running

def run_measured(cmd, env=None):
    """(rc, stdout, stderr, peak_rss_kb, seconds).  rc < 0: killed by that signal; rc None: timeout."""
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        p = subprocess.Popen(cmd, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, env=env)
        status = rusage = None
        while True:
            pid, st, ru = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                status, rusage = st, ru
                break
            if time.monotonic() - t0 > TIMEOUT_S:
                p.kill()
                _, st, ru = os.wait4(p.pid, 0)
                status, rusage = None, ru
                break
            time.sleep(0.002)
        p.returncode = -1  # reaped here; keep Popen from waiting again
        elapsed = time.monotonic() - t0
        fo.seek(0)
        fe.seek(0)
        out = fo.read().decode('utf-8', 'replace')
        err = fe.read().decode('utf-8', 'replace')
    rc = None if status is None else os.waitstatus_to_exitcode(status)
    return rc, out, err, rusage.ru_maxrss, elapsed


# ----------------------------------------------------------------------------- file builders

class Files:
    def __init__(self, work):
        self.work = work
        self.rng = np.random.default_rng(1234)

    def p(self, name):
        return os.path.join(self.work, name)

    def write(self, name, data, gz=None):
        path = self.p(name)
        if gz is None:
            gz = name.endswith('.gz')
        if gz:
            data = gzip.compress(data, compresslevel=6, mtime=0)
        with open(path, 'wb') as f:
            f.write(data)
        return path

    def header(self, version=1, pair=False, dtype='int16', shape=(16, 17, 9), endian='<', **kw):
        aff = nc.affine_from(np.eye(3), (1.0, 1.5, 2.0), (-8, -12, -9))
        return nc.make_header(version=version, pair=pair, dtype=dtype, shape=shape, endian=endian,
                              zooms=(1.0, 1.5, 2.0) + (1.0,) * 4, qform=aff, qcode=1, sform=aff, scode=1,
                              **kw)

    def data_bytes(self, hdr, shape=None):
        shape = shape or tuple(hdr.get_data_shape())
        dt = hdr.get_data_dtype()
        a = nc.make_data(dt.newbyteorder('=').name, shape, self.rng)
        return a.astype(dt).tobytes(order='F')

    @staticmethod
    def single_bytes(hdr, data, data_at=None):
        """Header bytes exactly as set (no nibabel validation) + extension flag + padding + data.
        The data goes at data_at (default: the header's vox_offset): a patched, lying vox_offset
        does not move it."""
        hb = hdr.binaryblock + b'\0' * 4
        off = int(hdr['vox_offset']) if data_at is None else data_at
        off = max(off, len(hb))
        return hb + b'\0' * (off - len(hb)) + data

    def valid_single(self, version=1, dtype='int16', shape=(16, 17, 9), endian='<', **kw):
        hdr = self.header(version=version, dtype=dtype, shape=shape, endian=endian, **kw)
        hdr['vox_offset'] = 352 if version == 1 else 544
        return hdr, self.single_bytes(hdr, self.data_bytes(hdr))

    def patched(self, name, version=1, fields=None, data=None, shape=(16, 17, 9), dtype='int16',
                endian='<'):
        """A single file whose header fields are overwritten raw (any value, valid or not)."""
        hdr = self.header(version=version, dtype=dtype, shape=shape, endian=endian)
        hdr['vox_offset'] = 352 if version == 1 else 544
        if data is None:
            data = self.data_bytes(hdr)
        for key, val in (fields or {}).items():
            if isinstance(val, tuple):  # (index, value) into an array field
                arr = hdr[key].copy()
                arr[val[0]] = val[1]
                hdr[key] = arr
            else:
                hdr[key] = val
        return self.write(name, self.single_bytes(hdr, data, data_at=352 if version == 1 else 544))


def gz_stream_of_zeros(header_bytes, nzero_bytes):
    """gzip member: header_bytes then nzero_bytes zeros, built in chunks (little memory)."""
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [co.compress(header_bytes)]
    chunk = b'\0' * (1 << 20)
    left = nzero_bytes
    while left > 0:
        n = min(left, len(chunk))
        parts.append(co.compress(chunk[:n]))
        left -= n
    parts.append(co.flush())
    return b''.join(parts)


def decompressed_prefix_len(gzbytes):
    d = zlib.decompressobj(31)
    try:
        return len(d.decompress(gzbytes))
    except zlib.error:
        return 0


# ----------------------------------------------------------------------------- cases

def pair_partners(path):
    """The other file(s) of a .hdr/.img pair.  For pairs an error that names the broken part (the
    .img when the .hdr was given) is accepted: it is the file at fault and belongs to the input."""
    for a, b in (('.hdr.gz', ('.img.gz', '.img')), ('.img.gz', ('.hdr', '.hdr.gz')),
                 ('.hdr', ('.img', '.img.gz')), ('.img', ('.hdr', '.hdr.gz'))):
        if path.endswith(a):
            return [path[:-len(a)] + x for x in b]
    return []


class Case:
    def __init__(self, name, path, info=H, export=H, contains=None, info_json=None, bomb=False,
                 env=None, extra_args=(), canonical=False, usage=None, err_paths=None, note=''):
        self.name = name
        self.path = path
        self.info = info            # accepted exit codes for info (None: do not run info)
        self.export = export        # accepted exit codes for export (None: do not run)
        self.contains = contains    # substring the export error must contain
        self.info_json = info_json  # callable(json) -> error text or None, when info exits 0
        self.bomb = bomb
        self.env = env
        self.extra_args = list(extra_args)
        self.canonical = canonical
        self.usage = usage          # a raw argv (usage test): expect exit 2
        # The error must name the file: the path given, or (pairs) the part of the pair at fault.
        self.err_paths = err_paths or ([path] + pair_partners(path) if path else [])
        self.note = note


def build_cases(F):
    cases = []
    add = cases.append

    # ---- positive controls: the harness itself must see success on valid input
    hdr, b = F.valid_single()
    base_nii = F.write('base.nii', b)
    base_gz = F.write('base.nii.gz', b)
    base_gz_bytes = open(base_gz, 'rb').read()
    hdr2, b2 = F.valid_single(version=2, endian='>')
    base2_nii = F.write('base2.nii', b2)
    add(Case('control_valid_nii', base_nii, info={0}, export={0}, canonical=True))
    add(Case('control_valid_nii_gz', base_gz, info={0}, export={0}))
    add(Case('control_valid_nifti2_be', base2_nii, info={0}, export={0}))
    add(Case('control_max_bytes_enough', base_nii, info={0}, export={0}, extra_args=['--max-bytes', '100000']))

    # ---- empty / random bytes
    add(Case('empty_nii', F.write('empty.nii', b''), note='empty file'))
    add(Case('empty_nii_gz', F.write('empty.nii.gz', b'', gz=False), note='empty .nii.gz (not even gzip)'))
    add(Case('empty_gzip_member', F.write('emptymember.nii.gz', b''), note='valid gzip of 0 bytes'))
    for n in (1, 4, 100, 347, 348, 352, 540, 1000, 10000):
        add(Case('random_%d' % n, F.write('random_%d.nii' % n, F.rng.bytes(n)), note='random bytes'))
    rb = bytearray(F.rng.bytes(2000))
    rb[0:4] = (348).to_bytes(4, 'little')
    add(Case('random_sizeof348', F.write('random_sizeof348.nii', bytes(rb)), note='sizeof_hdr 348, rest random'))
    rb[0:4] = (540).to_bytes(4, 'little')
    add(Case('random_sizeof540', F.write('random_sizeof540.nii', bytes(rb)), note='sizeof_hdr 540, rest random'))
    add(Case('random_not_gzip', F.write('random.nii.gz', F.rng.bytes(5000), gz=False), note='.nii.gz not gzip'))
    add(Case('random_in_gzip', F.write('random_in.nii.gz', F.rng.bytes(5000)), note='gzip of random bytes'))
    add(Case('gzip_magic_only', F.write('gzmagic.nii.gz', b'\x1f\x8b\x08\x00' + F.rng.bytes(40), gz=False),
             note='gzip magic then garbage'))

    # ---- truncated raw .nii (NIfTI-1 and NIfTI-2)
    for cut in (1, 100, 347, 348, 351, 352, 452, len(b) - 1):
        exp_info = H if cut < 348 else D
        add(Case('trunc_nii_%d' % cut, F.write('trunc_%d.nii' % cut, b[:cut]), info=exp_info, export={1},
                 note='raw .nii cut at %d of %d' % (cut, len(b))))
    for cut in (300, 539, 544, 700, len(b2) - 2):
        exp_info = H if cut < 540 else D
        add(Case('trunc_n2_%d' % cut, F.write('trunc2_%d.nii' % cut, b2[:cut]), info=exp_info, export={1},
                 note='NIfTI-2 cut at %d of %d' % (cut, len(b2))))

    # ---- truncated .nii.gz at several points (inside the gzip header, inside the NIfTI header,
    #      inside the data, inside the trailer)
    n = len(base_gz_bytes)
    for cut in sorted({3, 10, 20, 40, 80, 150, n // 2, n - 9, n - 8, n - 4, n - 1}):
        got = decompressed_prefix_len(base_gz_bytes[:cut])
        exp_info = H if got < 348 else D
        add(Case('trunc_gz_%d' % cut, F.write('trunc_gz_%d.nii.gz' % cut, base_gz_bytes[:cut], gz=False),
                 info=exp_info, export={1},
                 note='.nii.gz cut at %d of %d (%d bytes decompressible)' % (cut, n, got)))

    # ---- gzip trailer lies / corrupt deflate data
    def patched_gz(name, mutate):
        bb = bytearray(base_gz_bytes)
        mutate(bb)
        return F.write(name, bytes(bb), gz=False)

    isize = int.from_bytes(base_gz_bytes[-4:], 'little')
    for tag, val in (('plus1000', isize + 1000), ('minus1000', isize - 1000), ('zero', 0),
                     ('huge', 0xFFFFFFFF)):
        add(Case('gz_isize_%s' % tag,
                 patched_gz('isize_%s.nii.gz' % tag, lambda bb, v=val: bb.__setitem__(slice(-4, None), v.to_bytes(4, 'little'))),
                 info=D, export={1}, note='ISIZE trailer %d, real %d' % (val, isize)))
    add(Case('gz_crc_wrong', patched_gz('crc.nii.gz', lambda bb: bb.__setitem__(-8, bb[-8] ^ 0xFF)),
             info=D, export={1}, note='CRC32 trailer wrong'))
    add(Case('gz_deflate_corrupt', patched_gz('corrupt.nii.gz', lambda bb: bb.__setitem__(n // 2, bb[n // 2] ^ 0x55)),
             info=D, export={1}, note='a byte flipped in the middle of the deflate stream'))

    # ---- header dims larger than the data
    hdr_big = F.header(shape=(16, 17, 18))
    hdr_big['vox_offset'] = 352
    short = F.single_bytes(hdr_big, F.data_bytes(hdr_big, shape=(16, 17, 9)))
    add(Case('dims_exceed_gz_data', F.write('short.nii.gz', short), info=D, export={1},
             note='header 16x17x18, gzip holds 9 slices'))
    add(Case('dims_exceed_nii_data', F.write('short.nii', short), info=D, export={1},
             note='header 16x17x18, file holds 9 slices'))
    ph = F.header(pair=True, shape=(16, 17, 18))
    hb = io.BytesIO()
    ph.write_to(hb)
    short_img = F.data_bytes(ph, shape=(16, 17, 9))
    F.write('shortpair.hdr', hb.getvalue())
    F.write('shortpair.img', short_img)
    add(Case('pair_img_short', F.p('shortpair.hdr'), info=D, export={1}, note='.img shorter than header says'))
    F.write('shortpairgz.hdr', hb.getvalue())
    F.write('shortpairgz.img.gz', short_img)
    add(Case('pair_imggz_short', F.p('shortpairgz.hdr'), info=D, export={1}, note='.img.gz shorter than header says'))
    F.write('shortpairgz2.hdr', hb.getvalue())
    F.write('shortpairgz2.img.gz', gzip.compress(short_img)[:200], gz=False)
    add(Case('pair_imggz_truncated', F.p('shortpairgz2.img.gz'), info=D, export={1},
             note='truncated .img.gz, given the .img.gz path'))

    # ---- magic
    add(Case('magic_wrong', F.patched('magic.nii', fields={'magic': b'xyz'}), note='magic "xyz"'))
    add(Case('magic_n3', F.patched('magic3.nii', fields={'magic': b'n+3'}), note='magic "n+3"'))
    add(Case('magic_n2_in_v1', F.patched('magic21.nii', fields={'magic': b'n+2'}),
             note='NIfTI-1 sized header with n+2 magic'))
    ana = nib.AnalyzeImage(np.zeros((4, 5, 6), np.int16), np.eye(4))
    nib.save(ana, F.p('analyze.hdr'))
    add(Case('analyze_75_pair', F.p('analyze.hdr'), note='plain Analyze 7.5 (no magic)'))
    add(Case('analyze_75_img', F.p('analyze.img'), note='plain Analyze 7.5, given .img'))

    # ---- dim[0] and dims
    for v in (0, 8, -1, 100):
        add(Case('ndim_%s' % str(v).replace('-', 'm'), F.patched('ndim_%d.nii' % v, fields={'dim': (0, v)}),
                 note='dim[0]=%d' % v))
    add(Case('n2_ndim_8', F.patched('n2_ndim8.nii', version=2, fields={'dim': (0, 8)}), note='NIfTI-2 dim[0]=8'))
    for i in (1, 2, 3):
        for v in (0, -5):
            add(Case('dim%d_%s' % (i, str(v).replace('-', 'm')),
                     F.patched('dim%d_%d.nii' % (i, v), fields={'dim': (i, v)}), note='dim[%d]=%d' % (i, v)))
    add(Case('dim4_zero', F.patched('dim4_0.nii', fields={'dim': (slice(0, 5), [4, 16, 17, 9, 0])}),
             note='4D with dim[4]=0'))
    add(Case('n2_dim2_negative', F.patched('n2_dimneg.nii', version=2, fields={'dim': (2, -(1 << 40))}),
             note='NIfTI-2 dim[2]=-2^40'))

    # ---- int64 overflow and the allocation cap
    add(Case('n2_dims_overflow_3d', F.patched('ovf3.nii', version=2,
                                              fields={'dim': (slice(0, 4), [3, 1 << 31, 1 << 31, 1 << 31])}),
             note='NIfTI-2 2^31 x 2^31 x 2^31: voxel count overflows int64'))
    add(Case('n2_dims_overflow_7d', F.patched('ovf7.nii', version=2,
                                              fields={'dim': (slice(0, 8), [7] + [1 << 20] * 7)}),
             note='NIfTI-2 7 dims of 2^20: volume count overflows int64'))
    add(Case('n2_dims_overflow_bytes', F.patched('ovfb.nii', version=2, dtype='float64',
                                                 fields={'dim': (slice(0, 4), [3, 1 << 30, 1 << 30, 4])}),
             note='NIfTI-2 2^62 float64 voxels: byte count overflows 64 bits'))
    add(Case('n2_dims_int64_max', F.patched('ovfmax.nii', version=2,
                                            fields={'dim': (slice(0, 4), [3, (1 << 63) - 1, 2, 1])}),
             note='NIfTI-2 dim[1]=INT64_MAX'))
    add(Case('n1_dims_overflow_7d', F.patched('ovf1.nii', fields={'dim': (slice(0, 8), [7] + [32767] * 7)}),
             info=D, export={1}, bomb=True, note='NIfTI-1 7 dims of 32767 (~2^105 voxels)'))
    big = F.patched('cap32g.nii', fields={'dim': (slice(0, 4), [3, 4096, 4096, 2048])})
    add(Case('cap_exceeded_raw', big, info=D, export={1}, bomb=True,
             note='tiny .nii claiming 4096x4096x2048 int16 (32 GiB > 8 GiB cap)'))
    add(Case('cap_exceeded_f64', F.patched('cap64g.nii', dtype='float64',
                                           fields={'dim': (slice(0, 4), [3, 2048, 2048, 2048])}),
             info=D, export={1}, bomb=True, note='tiny .nii claiming 2048^3 float64 (64 GiB)'))
    add(Case('max_bytes_option', base_nii, info=D, export={1}, extra_args=['--max-bytes', '1000'],
             note='--max-bytes 1000 on a 4896-byte volume'))
    env = dict(os.environ, CIRRDATA_MAX_BYTES='1000')
    add(Case('max_bytes_env', base_nii, info=D, export={1}, env=env, note='CIRRDATA_MAX_BYTES=1000'))
    add(Case('max_bytes_option_gz', base_gz, info=D, export={1}, extra_args=['--max-bytes', '4000'],
             note='--max-bytes 4000 on a gzipped 4896-byte volume'))

    # ---- vox_offset
    add(Case('vox_offset_past_eof', F.patched('voxoff.nii', fields={'vox_offset': 1e6}), info=D, export={1},
             note='vox_offset 1e6 in a 5 kB file'))
    add(Case('vox_offset_past_eof_gz', F.write('voxoff.nii.gz', open(F.p('voxoff.nii'), 'rb').read()),
             info=D, export={1}, note='vox_offset 1e6 in a .nii.gz'))
    add(Case('n2_vox_offset_huge', F.patched('voxoff_huge.nii', version=2, fields={'vox_offset': (1 << 62)}),
             info=D, export={1}, note='NIfTI-2 vox_offset 2^62'))
    add(Case('n2_vox_offset_int64max', F.patched('voxoff_max.nii', version=2,
                                                 fields={'vox_offset': (1 << 63) - 1}),
             info=D, export={1}, note='NIfTI-2 vox_offset INT64_MAX (offset + size overflows)'))
    add(Case('n2_vox_offset_negative', F.patched('voxoff_neg.nii', version=2, fields={'vox_offset': -1000}), note='NIfTI-2 vox_offset -1000'))
    add(Case('n2_vox_offset_negative_gz', F.write('voxoff_neg.nii.gz', open(F.p('voxoff_neg.nii'), 'rb').read()),
             note='NIfTI-2 vox_offset -1000, gzipped'))
    add(Case('n1_vox_offset_negative', F.patched('voxoff_neg1.nii', fields={'vox_offset': -352.0}), note='NIfTI-1 vox_offset -352'))
    add(Case('n1_vox_offset_nan', F.patched('voxoff_nan.nii', fields={'vox_offset': np.nan}), note='NIfTI-1 vox_offset NaN'))

    # ---- datatype / bitpix
    for dt_code, bitpix, tag in ((4, 32, 'int16_bitpix32'), (16, 16, 'float32_bitpix16'), (4, 0, 'int16_bitpix0'),
                                 (2, 16, 'uint8_bitpix16'), (64, -64, 'float64_bitpix_neg')):
        add(Case('bitpix_' + tag, F.patched('bitpix_%s.nii' % tag, fields={'datatype': dt_code, 'bitpix': bitpix}),
                 note='datatype %d with bitpix %d' % (dt_code, bitpix)))

    def dtype_null(j):
        if j.get('dtype', 'missing') is not None:
            return 'info dtype should be null for an unsupported datatype, got %r' % (j.get('dtype'),)
        return None

    for code, bitpix, tag, info_rc in ((32, 64, 'complex64', {0}), (128, 24, 'rgb24', {0}),
                                       (1792, 128, 'complex128', {0}), (2304, 32, 'rgba32', {0}),
                                       (1536, 128, 'float128', {0}), (2048, 256, 'complex256', {0}),
                                       (999, 16, 'unknown999', {0, 1}), (1, 1, 'binary', {0, 1}),
                                       (0, 0, 'unknown0', {0, 1})):
        path = F.patched('dt_%s.nii' % tag, fields={'datatype': code, 'bitpix': bitpix})
        add(Case('unsupported_' + tag, path, info=info_rc, export={1}, contains='unsupported datatype',
                 info_json=dtype_null, note='datatype code %d' % code))

    # ---- pairs with a missing part
    ph = F.header(pair=True, shape=(4, 5, 6))
    hb = io.BytesIO()
    ph.write_to(hb)
    F.write('noimg.hdr', hb.getvalue())
    add(Case('hdr_without_img', F.p('noimg.hdr'), info={0}, export={1}, contains='.img',
             note='.hdr whose .img is missing (info reads the header only)'))
    F.write('nohdr.img', F.data_bytes(ph))
    add(Case('img_without_hdr', F.p('nohdr.img'), note='.img whose .hdr is missing'))
    F.write('n2noimg.hdr', nc.make_header(version=2, pair=True, shape=(4, 5, 6)).binaryblock)
    add(Case('n2_hdr_without_img', F.p('n2noimg.hdr'), info={0}, export={1}, contains='.img',
             note='NIfTI-2 .hdr whose .img is missing'))

    # ---- gzip bombs
    bomb_hdr = F.header(shape=(4096, 4096, 2048))
    bomb_hdr['vox_offset'] = 352
    bomb = gz_stream_of_zeros(bomb_hdr.binaryblock + b'\0' * 4, 64 << 20)
    add(Case('gz_bomb_32gib', F.write('bomb32g.nii.gz', bomb, gz=False), info=D, export={1}, bomb=True,
             note='%d-byte .nii.gz claiming 4096x4096x2048 int16 (32 GiB), 64 MiB of zeros inside' % len(bomb)))
    hdr1g = F.header(shape=(1024, 1024, 512))
    hdr1g['vox_offset'] = 352
    small_bomb = gz_stream_of_zeros(hdr1g.binaryblock + b'\0' * 4, 1 << 20)
    add(Case('gz_bomb_1gib_tiny', F.write('bomb1g.nii.gz', small_bomb, gz=False), info=D, export={1}, bomb=True,
             note='%d-byte .nii.gz claiming 1 GiB (under the cap): must fail fast, small memory'
             % len(small_bomb)))
    add(Case('raw_1gib_tiny', F.write('tiny1g.nii', hdr1g.binaryblock + b'\0' * 4 + b'\0' * 1000), info=D,
             export={1}, bomb=True, note='1 kB .nii claiming 1 GiB'))
    ph1g = F.header(pair=True, shape=(1024, 1024, 512))
    hb = io.BytesIO()
    ph1g.write_to(hb)
    F.write('bombpair.hdr', hb.getvalue())
    F.write('bombpair.img.gz', gz_stream_of_zeros(b'', 1 << 20), gz=False)
    add(Case('pair_gz_bomb_1gib', F.p('bombpair.hdr'), info=D, export={1}, bomb=True,
             note='.hdr claiming 1 GiB, tiny .img.gz'))
    n2big = F.header(version=2, shape=(1 << 20, 1 << 20, 1 << 10))
    n2big['vox_offset'] = 544
    n2bomb = gz_stream_of_zeros(n2big.binaryblock + b'\0' * 4, 1 << 20)
    add(Case('n2_gz_bomb_2pib', F.write('bombn2.nii.gz', n2bomb, gz=False), info=D, export={1}, bomb=True,
             note='NIfTI-2 .nii.gz claiming 2^50 int16 voxels'))

    # ---- not a file
    add(Case('nonexistent', F.p('does_not_exist.nii'), note='no such file'))
    add(Case('nonexistent_gz', F.p('does_not_exist.nii.gz'), note='no such file (.gz)'))
    os.makedirs(F.p('a_directory.nii'), exist_ok=True)
    add(Case('directory_nii', F.p('a_directory.nii'), note='a directory named .nii'))
    add(Case('directory', F.work, note='a directory'))
    os.makedirs(F.p('dirimg.img'), exist_ok=True)
    F.write('dirimg.hdr', io.BytesIO(F.header(pair=True).binaryblock).getvalue())
    add(Case('pair_img_is_directory', F.p('dirimg.hdr'), info=D, export={1}, note='.img is a directory'))

    # ---- non-finite geometry: must not crash; working or a clear error are both fine
    nf = [('pixdim1_nan', {'pixdim': (1, np.nan)}), ('pixdim2_inf', {'pixdim': (2, np.inf)}),
          ('pixdim_all_zero_noxform', {'pixdim': (slice(0, 8), [1, 0, 0, 0, 0, 0, 0, 0]), 'qform_code': 0,
                                       'sform_code': 0}),
          ('srow_x_nan', {'srow_x': (0, np.nan)}), ('srow_y_inf', {'srow_y': (3, np.inf)}),
          ('srow_all_nan', {'srow_x': (slice(0, 4), [np.nan] * 4), 'srow_y': (slice(0, 4), [np.nan] * 4),
                            'srow_z': (slice(0, 4), [np.nan] * 4)}),
          ('srow_zero', {'srow_x': (slice(0, 4), [0] * 4), 'srow_y': (slice(0, 4), [0] * 4),
                         'srow_z': (slice(0, 4), [0] * 4)}),
          ('quatern_nan_qform_only', {'quatern_b': np.nan, 'sform_code': 0}),
          ('quatern_too_big_qform_only', {'quatern_b': 2.0, 'quatern_c': 2.0, 'sform_code': 0}),
          ('qoffset_inf_qform_only', {'qoffset_x': np.inf, 'sform_code': 0}),
          ('qfac_nan', {'pixdim': (0, np.nan), 'sform_code': 0}),
          ('slope_inf_inter_nan', {'scl_slope': np.inf, 'scl_inter': np.nan}),
          ('slope_one_inter_nan', {'scl_slope': 1.0, 'scl_inter': np.nan}),
          ('slope_huge', {'scl_slope': 3e38, 'scl_inter': 3e38})]
    for tag, fields in nf:
        add(Case('nonfinite_' + tag, F.patched('nf_%s.nii' % tag, fields=fields), info={0, 1}, export={0, 1},
                 canonical=True, note='non-finite/degenerate geometry or scaling: no crash'))
    for tag, fields in nf[:6]:
        add(Case('n2_nonfinite_' + tag, F.patched('n2nf_%s.nii' % tag, version=2, fields=fields, endian='>'),
                 info={0, 1}, export={0, 1}, canonical=True, note='NIfTI-2 big endian, ' + tag))

    # ---- --volume out of range
    h4 = F.header(shape=(4, 3, 2, 5))
    h4['vox_offset'] = 352
    v4 = F.write('four.nii', F.single_bytes(h4, F.data_bytes(h4)))
    add(Case('volume_past_end', v4, info=None, export={1}, extra_args=['--volume', '5'], note='--volume 5 of 5'))
    add(Case('volume_huge', v4, info=None, export={1, 2}, extra_args=['--volume', '9223372036854775807'],
             note='--volume INT64_MAX'))
    add(Case('volume_negative', v4, info=None, export={1, 2}, extra_args=['--volume', '-1'], note='--volume -1'))
    add(Case('volume_on_3d', base_nii, info=None, export={1}, extra_args=['--volume', '1'],
             note='--volume 1 of a 3D file'))
    add(Case('volume_ok_control', v4, info=None, export={0}, extra_args=['--volume', '4'], note='--volume 4 of 5'))

    # ---- output not writable
    add(Case('output_dir_missing', base_nii, info=None, export={1},
             err_paths=[base_nii, F.p('no_such_dir/out.npy')], note='-o in a missing directory'))

    # ---- usage errors: exit 2
    for tag, argv in (('no_args', []), ('info_no_file', ['info']), ('export_no_output', ['export', base_nii]),
                      ('unknown_command', ['frobnicate', base_nii]), ('unknown_option', ['info', '--bogus', base_nii]),
                      ('max_bytes_garbage', ['export', base_nii, '-o', F.p('x.npy'), '--max-bytes', 'lots']),
                      ('volume_garbage', ['export', base_nii, '-o', F.p('x.npy'), '--volume', 'two']),
                      ('two_files', ['info', base_nii, base_gz])):
        add(Case('usage_' + tag, None, usage=argv, note='usage error'))
    return cases


# ----------------------------------------------------------------------------- checking

def check_run(case, what, cmd, accepted, fails, env=None, want_json=False, contains=None):
    rc, out, err, rss_kb, secs = run_measured(cmd, env=env)
    label = '%s [%s]' % (case.name, what)
    if case.note:
        label += ' (%s)' % case.note
    if rc is None:
        fails.append('FAIL %s: did not finish within %.0f s' % (label, TIMEOUT_S))
        return
    if rc < 0:
        fails.append('FAIL %s: killed by signal %d (%s); stderr: %r' % (
            label, -rc, signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else '?',
            err.strip()[:300]))
        return
    for mark in SANITIZER_MARKS:
        if mark in err:
            fails.append('FAIL %s: sanitizer report: %s' % (label, err.strip()[:600]))
            return
    if rss_kb > RSS_LIMIT_KB:
        fails.append('FAIL %s: peak RSS %d MB (limit %d MB)' % (label, rss_kb // 1024, RSS_LIMIT_KB // 1024))
    if rc not in accepted:
        fails.append('FAIL %s: exit %d, expected %s; stderr: %r' % (
            label, rc, '/'.join(str(x) for x in sorted(accepted)), err.strip()[:300]))
        return
    if rc == 2:
        if not err.strip():
            fails.append('FAIL %s: usage error without a message on stderr' % label)
        return
    if rc == 1:
        lines = err.rstrip('\n').split('\n')
        if len(lines) != 1 or not lines[0].startswith('cirrdata: '):
            fails.append('FAIL %s: stderr should be exactly one line "cirrdata: <FILE>: <problem>", got %r'
                         % (label, err[:400]))
        elif not any(p in lines[0] for p in case.err_paths):
            fails.append('FAIL %s: error does not name the file %s: %r' % (label, case.err_paths[0], lines[0]))
        if contains and contains not in err:
            fails.append('FAIL %s: error should mention %r: %r' % (label, contains, err.strip()))
        if out.strip() and want_json:
            fails.append('FAIL %s: failed but printed to stdout: %r' % (label, out[:200]))
    if rc == 0 and want_json:
        try:
            j = json.loads(out)
        except ValueError as e:
            fails.append('FAIL %s: exit 0 but stdout is not JSON (%s): %r' % (label, e, out[:200]))
            return
        if case.info_json and what == 'info':
            msg = case.info_json(j)
            if msg:
                fails.append('FAIL %s: %s' % (label, msg))


def run_case(case, cirrdata, outdir):
    fails = []
    if case.usage is not None:
        check_run(case, 'usage', [cirrdata] + case.usage, {2}, fails)
        return fails
    if case.info is not None:
        cmd = [cirrdata, 'info', case.path, '--json'] + [a for a in case.extra_args if not a.startswith('--volume')]
        if '--volume' in case.extra_args:
            cmd = None
        if cmd:
            check_run(case, 'info', cmd, case.info, fails, env=case.env, want_json=True)
    if case.export is not None:
        out = os.path.join(outdir, case.name + '.npy')
        if case.name == 'output_dir_missing':
            out = case.err_paths[1]
        cmd = [cirrdata, 'export', case.path, '-o', out, '--json'] + case.extra_args
        check_run(case, 'export', cmd, case.export, fails, env=case.env, want_json=True, contains=case.contains)
        if case.canonical:
            out = os.path.join(outdir, case.name + '_canon.npy')
            cmd = [cirrdata, 'export', case.path, '-o', out, '--canonical', '--json'] + case.extra_args
            check_run(case, 'export --canonical', cmd, case.export, fails, env=case.env, want_json=True,
                      contains=case.contains)
    return fails


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--cirrdata', required=True)
    ap.add_argument('--workdir', help='directory for the hostile files (kept); default: a temp dir')
    ap.add_argument('--filter', help='only cases whose name contains this substring')
    args = ap.parse_args(argv)
    cirrdata = os.path.abspath(args.cirrdata)
    if not os.access(cirrdata, os.X_OK):
        print('cirrdata binary not found or not executable: %s' % cirrdata)
        print('bad input: 0 passed, 1 failed')
        return 1
    tmp = None
    if args.workdir:
        work = os.path.abspath(args.workdir)
        os.makedirs(work, exist_ok=True)
        for sub in ('files', 'out'):  # only our own subdirectories are cleared
            shutil.rmtree(os.path.join(work, sub), ignore_errors=True)
    else:
        work = tmp = tempfile.mkdtemp(prefix='cirrdata_bad_')
    try:
        files = os.path.join(work, 'files')
        outdir = os.path.join(work, 'out')
        os.makedirs(files)
        os.makedirs(outdir)
        cases = build_cases(Files(files))
        if args.filter:
            cases = [c for c in cases if args.filter in c.name]
        passed = failed = 0
        for case in cases:
            fails = run_case(case, cirrdata, outdir)
            if fails:
                failed += 1
                for line in fails:
                    print(line)
            else:
                passed += 1
        print('bad input: %d passed, %d failed' % (passed, failed))
        return 1 if failed else 0
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
