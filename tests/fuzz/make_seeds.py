#!/usr/bin/python3
"""Regenerates the seed corpora in tests/fuzz/corpus/ (small valid inputs, each < 64 KiB).

Usage: tests/fuzz/make_seeds.py --lib BUILD/libcirrdata/libcirrdata.so [--cirrdata BUILD/tools/cirrdata]
                                [--only manifest,csv,...]

  nifti     small NIfTI-1/NIfTI-2 files written by nibabel (several dtypes, 3D and 4D, scaling, sform),
            stored uncompressed (the target gzip-wraps them itself), and compressed files: valid, with
            zero trailers for the target to fill in, and damaged (see gzip_seeds)
  shard     shards written by the library's own writer (cd_record_builder / cd_shard_writer): raw and
            zstd chunks, uint8/int16/float16/float32, 1 and 2 channels, 0, 1 and 3 records; every
            XXH3 field set to 0, which fuzz_shard.c fills in (so mutants get past the checksums)
  manifest  a minimal hand-written manifest and, with --cirrdata, the manifest of a converted
            3-case synthetic dataset ('cirrdata synth --cases 3' + 'convert')
  recipe    every preset as canonical JSON (cd_recipe_to_json) plus a few hand-written recipes
  augment   every built-in pipeline as canonical JSON (cd_aug_pipeline_to_json)
  csv       CirrMRI600+-style metadata tables: BOM, CRLF, quotes, embedded newlines, short rows
  safetensors  model files: every dtype, unaligned data, and tiny cirrdata.graph models using every op
"""
import argparse
import ctypes as C
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import nibabel as nib

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, 'corpus')
MAX_SEED = 64 << 10


class Err(C.Structure):
    _fields_ = [('status', C.c_int), ('message', C.c_char * 512)]


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    assert len(data) < MAX_SEED, (target, name, len(data))
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)


def nifti_seeds(tmp):
    rng = np.random.default_rng(0)
    cases = [
        ('i16_n1.nii', nib.Nifti1Image, (6, 5, 4), np.int16, False),
        ('u8_n1.nii.gz', nib.Nifti1Image, (8, 8, 3), np.uint8, False),
        ('f32_n2.nii', nib.Nifti2Image, (4, 4, 4), np.float32, False),
        ('f64_4d_n1.nii', nib.Nifti1Image, (3, 3, 2, 2), np.float64, False),
        ('i16_scaled_n1.nii', nib.Nifti1Image, (5, 4, 3), np.int16, True),
        ('u16_n2.nii', nib.Nifti2Image, (3, 4, 5), np.uint16, False),
    ]
    for name, cls, shape, dt, scaled in cases:
        data = (rng.integers(0, 100, size=shape)).astype(dt)
        aff = np.diag([1.5, 0.8, 3.0, 1.0])
        aff[:3, 3] = [-10, 5, 2]
        img = cls(data, aff)
        img.set_qform(aff, code=1)
        img.set_sform(aff, code=2)
        if scaled:
            img.header.set_slope_inter(0.5, -3.0)
        p = os.path.join(tmp, name)
        nib.save(img, p)
        if name.endswith('.gz'):  # the target gzip-wraps its input itself: store the plain bytes
            import gzip
            with gzip.open(p, 'rb') as f:
                raw = f.read()
            name = name[:-3]
        else:
            with open(p, 'rb') as f:
                raw = f.read()
        put('nifti', name, raw)
    # big-endian
    img = nib.Nifti1Image(np.arange(24, dtype='>i2').reshape(2, 3, 4), np.eye(4))
    p = os.path.join(tmp, 'be.nii')
    nib.save(img, p)
    hdr = img.header.copy()
    hdr = hdr.as_byteswapped('>')
    with open(p, 'wb') as f:
        hdr.set_data_offset(352)
        f.write(hdr.binaryblock)
        f.write(b'\0' * (352 - 348))
        f.write(np.arange(24, dtype='>i2').reshape(2, 3, 4).tobytes(order='F'))
    with open(p, 'rb') as f:
        put('nifti', 'i16_be_n1.nii', f.read())
    gzip_seeds(tmp)


def gzip_seeds(tmp):
    """Compressed NIfTI files for fuzz_nifti.c, which reads input starting with 1f 8b as it is: valid
    gzip (nibabel's, and zlib's with FEXTRA/FNAME/FCOMMENT/FHCRC, stored blocks, two members, zero
    padding after the end), the same with 8 zero bytes as CRC32/ISIZE trailer (the target fills them in,
    so mutated deflate data reaches the whole decode), and damaged streams (truncated, CRC32 and ISIZE
    mismatches, garbage after the end, a corrupt deflate block)."""
    import zlib

    def deflate(raw, level=6):
        c = zlib.compressobj(level, zlib.DEFLATED, -15)
        return c.compress(raw) + c.flush()

    def member(raw, level=6, flags=b'', zero_trailer=False):
        head = b'\x1f\x8b\x08' + bytes([0]) + bytes(6) if not flags else flags
        trailer = bytes(8) if zero_trailer else (zlib.crc32(raw).to_bytes(4, 'little') +
                                                 (len(raw) & 0xffffffff).to_bytes(4, 'little'))
        return head + deflate(raw, level) + trailer

    def flagged_header(name=b'f.nii', comment=b'fuzz seed', extra=b'AB\x02\x00xy'):
        h = b'\x1f\x8b\x08' + bytes([4 | 8 | 16 | 2]) + bytes(4) + b'\x00\x03'
        h += len(extra).to_bytes(2, 'little') + extra + name + b'\x00' + comment + b'\x00'
        return h + (zlib.crc32(h) & 0xffff).to_bytes(2, 'little')

    rng = np.random.default_rng(3)
    img = nib.Nifti1Image(rng.integers(-200, 200, (7, 6, 5)).astype(np.int16), np.diag([0.9, 0.9, 3.0, 1.0]))
    p = os.path.join(tmp, 'gz.nii.gz')
    nib.save(img, p)
    with open(p, 'rb') as f:
        nib_gz = f.read()
    import gzip
    raw = gzip.decompress(nib_gz)
    put('nifti', 'gz_nibabel.nii.gz', nib_gz)
    put('nifti', 'gz_flags.nii.gz', member(raw, flags=flagged_header()))
    put('nifti', 'gz_stored.nii.gz', member(raw, level=0))
    put('nifti', 'gz_two_members.nii.gz', member(raw[:200]) + member(raw[200:]))
    put('nifti', 'gz_zero_padding.nii.gz', member(raw) + bytes(64))
    put('nifti', 'gz_seal.nii.gz', member(raw, zero_trailer=True))
    put('nifti', 'gz_seal_two_members.nii.gz', member(raw[:352], level=1, zero_trailer=True) +
        member(raw[352:], level=9, zero_trailer=True))
    good = member(raw)
    put('nifti', 'gz_bad_truncated.nii.gz', good[:len(good) // 2])
    bad = bytearray(good)
    bad[-8] ^= 0x55
    put('nifti', 'gz_bad_crc.nii.gz', bytes(bad))
    bad = bytearray(good)
    bad[-4] ^= 0x01
    put('nifti', 'gz_bad_isize.nii.gz', bytes(bad))
    put('nifti', 'gz_bad_trailing.nii.gz', good + b'not gzip')
    bad = bytearray(member(raw, level=1))
    bad[len(bad) // 2] ^= 0xff
    put('nifti', 'gz_bad_block.nii.gz', bytes(bad))


def zero_checksums(b):
    """The shard with 0 in every XXH3 field: fuzz_shard.c computes each zero checksum field before it
    writes the input, so mutants of these seeds keep reaching the checks behind the checksums."""
    b = bytearray(b)
    u32 = lambda o: int.from_bytes(b[o:o + 4], 'little')  # noqa: E731
    u64 = lambda o: int.from_bytes(b[o:o + 8], 'little')  # noqa: E731
    ioff, n = u64(24), u64(16)
    for i in range(n):
        off, hs = u64(ioff + 32 * i), u32(ioff + 32 * i + 8)
        nt, meta = u32(off + 12), u32(off + 16)
        p = off + 32 + 64 * nt + meta
        for t in range(nt):
            for _ in range(u32(off + 32 + 64 * t + 48)):
                b[p + 16:p + 24] = bytes(8)
                p += 24
        b[off + hs - 8:off + hs] = bytes(8)
    b[48:56] = bytes(8)
    b[4088:4096] = bytes(8)
    return bytes(b)


def shard_seeds(lib, tmp):
    lib.cd_record_builder_create.argtypes = [C.c_char_p, C.POINTER(C.c_void_p), C.POINTER(Err)]
    lib.cd_record_builder_add_tensor.argtypes = [C.c_void_p, C.c_char_p, C.c_int, C.c_uint32, C.POINTER(C.c_uint32),
                                                 C.POINTER(C.c_uint32), C.c_int, C.c_int, C.c_void_p, C.POINTER(Err)]
    lib.cd_record_builder_destroy.argtypes = [C.c_void_p]
    lib.cd_shard_writer_create.argtypes = [C.c_char_p, C.POINTER(C.c_void_p), C.POINTER(Err)]
    lib.cd_shard_writer_append.argtypes = [C.c_void_p, C.c_void_p, C.POINTER(Err)]
    lib.cd_shard_writer_finish.argtypes = [C.c_void_p, C.POINTER(C.c_uint64), C.c_char_p, C.POINTER(Err)]
    lib.cd_shard_writer_destroy.argtypes = [C.c_void_p]
    lib.cd_dtype_from_name.argtypes = [C.c_char_p]
    lib.cd_dtype_from_name.restype = C.c_int
    rng = np.random.default_rng(1)

    def check(st, err):
        if st != 0:
            raise RuntimeError(err.message.decode())

    def record(tensors, meta):
        err = Err()
        b = C.c_void_p()
        check(lib.cd_record_builder_create(json.dumps(meta).encode(), C.byref(b), C.byref(err)), err)
        for name, dtname, ch, shape, chunk, codec in tensors:
            npdt = {'uint8': np.uint8, 'int16': np.int16, 'float16': np.float16, 'float32': np.float32}[dtname]
            arr = np.ascontiguousarray((rng.standard_normal((ch,) + shape) * 20).astype(npdt))
            dcode = lib.cd_dtype_from_name(dtname.encode())
            sh = (C.c_uint32 * 3)(*shape)
            ck = (C.c_uint32 * 3)(*chunk)
            check(lib.cd_record_builder_add_tensor(b, name.encode(), dcode, ch, sh, ck, codec, 1,
                                                   arr.ctypes.data_as(C.c_void_p), C.byref(err)), err)
        return b

    def shard(name, records):
        err = Err()
        path = os.path.join(tmp, name)
        w = C.c_void_p()
        check(lib.cd_shard_writer_create(path.encode(), C.byref(w), C.byref(err)), err)
        for tensors, meta in records:
            b = record(tensors, meta)
            check(lib.cd_shard_writer_append(w, b, C.byref(err)), err)
            lib.cd_record_builder_destroy(b)
        size = C.c_uint64()
        h = C.create_string_buffer(33)
        check(lib.cd_shard_writer_finish(w, C.byref(size), h, C.byref(err)), err)
        lib.cd_shard_writer_destroy(w)
        with open(path, 'rb') as f:
            put('shard', name, zero_checksums(f.read()))

    img_mask = [('image', 'int16', 1, (8, 6, 5), (8, 6, 5), 1), ('mask', 'uint8', 1, (8, 6, 5), (4, 6, 5), 1)]
    shard('one_record_zstd.cds', [(img_mask, {'key': 'T1/1', 'label': 2})])
    shard('raw_f32_2ch.cds', [([('image', 'float32', 2, (5, 4, 3), (3, 4, 3), 0)], {'key': 'x'})])
    shard('three_records_mixed.cds', [
        ([('image', 'float16', 1, (6, 6, 2), (6, 6, 1), 1)], {'key': 'a'}),
        ([('image', 'uint8', 3, (4, 4, 1), (4, 4, 1), 0), ('mask', 'uint8', 1, (4, 4, 1), (4, 2, 1), 1)], {'key': 'b'}),
        ([('image', 'float32', 1, (1, 1, 1), (1, 1, 1), 1)], {'key': 'c', 'nested': {'v': [1, 2, 3]}}),
    ])
    shard('empty.cds', [])
    # The base of the structural variants: one tensor, two zstd chunks, 16 KiB.
    shard('two_chunks_zstd.cds', [([('image', 'int16', 1, (4, 3, 2), (2, 3, 2), 1)], {'key': 'z/1', 'label': 0})])
    structural_seeds()


def structural_seeds():
    """Variants of two_chunks_zstd.cds (checksum fields 0, so the target seals them) that each break one
    structural rule of schemas/shard-format.md behind the checksums: every replay of the corpus takes
    each of these checks, and mutants start next to them."""
    with open(os.path.join(CORPUS, 'shard', 'two_chunks_zstd.cds'), 'rb') as f:
        base = f.read()
    u32 = lambda b, o: int.from_bytes(b[o:o + 4], 'little')  # noqa: E731
    u64 = lambda b, o: int.from_bytes(b[o:o + 8], 'little')  # noqa: E731
    ioff = u64(base, 24)
    off, hs = u64(base, ioff), u32(base, ioff + 8)
    nt, meta = u32(base, off + 12), u32(base, off + 16)
    tables = off + 32 + 64 * nt + meta  # first chunk table entry

    def variant(name, edits):
        b = bytearray(base)
        for at, value in edits:
            b[at:at + len(value)] = value
        put('shard', 'structural_' + name + '.cds', bytes(b))

    le32 = lambda v: v.to_bytes(4, 'little')  # noqa: E731
    le64 = lambda v: v.to_bytes(8, 'little')  # noqa: E731
    variant('version2', [(8, le32(2))])
    variant('index_misaligned', [(ioff, le64(off + 8))])
    variant('index_header_small', [(ioff + 8, le32(16))])  # header_size below the fixed part + checksum
    variant('record_magic', [(off, b'CDRECRDX')])
    variant('tensor_count0', [(off + 12, le32(0))])
    variant('meta_size_off', [(off + 16, le32(meta + 4))])  # header size disagrees with its tables
    variant('dtype_bad', [(off + 32 + 16, bytes([9]))])
    variant('meta_array', [(off + 32 + 64 * nt, b'[' + b' ' * (meta - 2) + b']')])
    variant('chunk_misaligned', [(tables, le64(u64(base, tables) + 8))])
    variant('chunk_overlap', [(tables + 24, le64(u64(base, tables)))])  # chunk 1 on chunk 0's bytes
    zstd_at = u64(base, tables)
    variant('zstd_corrupt', [(zstd_at + 8, b'\xff\xff\xff\xff')])


def manifest_seeds(cirrdata, tmp):
    # Every seed carries a valid manifest_xxh3 (fuzz_manifest.c recomputes it for mutated inputs).
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'python'))
    from cdshard import seal_manifest
    put('manifest', 'minimal.json', seal_manifest({
        'format': 'cirrdata-dataset', 'format_version': 2,
        'shards': [{'path': 'shards/a.cds', 'size': 10, 'records': 2, 'xxh3_128': '0' * 32}],
        'records': [{'key': 'a', 'shard': 0, 'index': 0}, {'key': 'b', 'shard': 0, 'index': 1}]}))
    put('manifest', 'empty.json', seal_manifest({'format': 'cirrdata-dataset', 'format_version': 2,
                                                 'shards': [], 'records': []}))
    if not cirrdata:
        return
    src, out = os.path.join(tmp, 'synth'), os.path.join(tmp, 'ds')
    subprocess.run([cirrdata, 'synth', '--cases', '3', '--quiet', '--no-healthy', src], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([cirrdata, 'convert', '--layout', 'cirrmri600', src, '--out', out, '--quiet'], check=True,
                   stdout=subprocess.DEVNULL)
    with open(os.path.join(out, 'manifest.json'), 'rb') as f:
        data = f.read()
    if len(data) < MAX_SEED:
        put('manifest', 'synth3_raw.json', data)
    for name in os.listdir(os.path.join(src, 'Metadata')):
        if name.endswith('.csv'):
            with open(os.path.join(src, 'Metadata', name), 'rb') as f:
                put('csv', 'synth_' + name.replace('&', '_').replace('+', ''), f.read())


def recipe_seeds(lib):
    lib.cd_recipe_preset_names.restype = C.POINTER(C.c_char_p)
    lib.cd_recipe_preset.argtypes = [C.c_char_p, C.c_void_p, C.POINTER(Err)]
    lib.cd_recipe_to_json.argtypes = [C.c_void_p]
    lib.cd_recipe_to_json.restype = C.c_void_p
    lib.cd_aug_pipeline_load.argtypes = [C.c_char_p, C.POINTER(C.c_void_p), C.POINTER(Err)]
    lib.cd_aug_pipeline_to_json.argtypes = [C.c_void_p]
    lib.cd_aug_pipeline_to_json.restype = C.c_void_p
    lib.cd_aug_pipeline_destroy.argtypes = [C.c_void_p]
    libc = C.CDLL(None)
    libc.free.argtypes = [C.c_void_p]
    names = lib.cd_recipe_preset_names()
    buf = C.create_string_buffer(4096)  # larger than sizeof(cd_recipe)
    i = 0
    while names[i]:
        err = Err()
        if lib.cd_recipe_preset(names[i], buf, C.byref(err)) != 0:
            raise RuntimeError(err.message.decode())
        p = lib.cd_recipe_to_json(buf)
        put('recipe', names[i].decode() + '.json', C.string_at(p))
        libc.free(p)
        i += 1
    put('recipe', 'small_spacing.json', json.dumps({'name': 'fuzz', 'resample': {'spacing': [1, 1, 2.5]}}))
    put('recipe', 'shape_2d.json', json.dumps({'name': 'fuzz2d', 'slices': True, 'dtype': 'float16'}))
    for name in ('nnunet', 'cirrhosisstage', 'none'):
        err = Err()
        pl = C.c_void_p()
        if lib.cd_aug_pipeline_load(name.encode(), C.byref(pl), C.byref(err)) != 0:
            raise RuntimeError(err.message.decode())
        p = lib.cd_aug_pipeline_to_json(pl)
        put('augment', name + '.json', C.string_at(p))
        libc.free(p)
        lib.cd_aug_pipeline_destroy(pl)


def csv_seeds():
    put('csv', 'plain.csv', 'Patient ID,Age,Gender,Radiological Evaluation\n805,54,M,2\n806,61,F,3\n')
    put('csv', 'bom_crlf.csv', b'\xef\xbb\xbfPatient ID,Age,Gender\r\n1,40,F\r\n2,,M\r\n\r\n')
    put('csv', 'quotes.csv', 'id,"note, with comma",x\n1,"he said ""hi""",2\n2,"multi\nline",3\n3,"unterminated\n')
    put('csv', 'ragged.csv', 'a,b,c\n1\n1,2,3,4,5\n , ,\n"",,\n')


# ---- safetensors (H1): model files as tools/scripts/export_weights.py writes them, plus dtype and layout variety
def st_file(tensors, metadata=None, pad=True):
    """safetensors bytes from (name, dtype, shape, raw bytes) tuples, written back to back."""
    header, blobs, off = {}, [], 0
    for name, dt, shape, raw in tensors:
        header[name] = {'dtype': dt, 'shape': list(shape), 'data_offsets': [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata is not None:
        header['__metadata__'] = metadata
    text = json.dumps(header, separators=(',', ':')).encode()
    if pad:
        text += b' ' * (-len(text) % 8)
    return len(text).to_bytes(8, 'little') + text + b''.join(blobs)


def safetensors_seeds():
    rng = np.random.default_rng(6)
    f32 = lambda *shape: (rng.standard_normal(shape) * 0.3).astype('<f4')  # noqa: E731
    put('safetensors', 'empty.safetensors', st_file([]))
    put('safetensors', 'dtypes.safetensors', st_file([
        ('f32', 'F32', (2, 3), f32(2, 3).tobytes()),
        ('f16', 'F16', (3,), np.array([1, -2.5, 65504], '<f2').tobytes()),
        ('bf16', 'BF16', (2,), np.array([0x3F80, 0xC2F7], '<u2').tobytes()),
        ('f64', 'F64', (2, 1), np.array([0.1, 1e300], '<f8').tobytes()),
        ('i64', 'I64', (), np.array([7], '<i8').tobytes()),
        ('u8', 'U8', (1, 1, 1, 1, 1, 1, 1, 2), b'\x01\x02'),
        ('bool', 'BOOL', (1,), b'\x01'),
        ('empty', 'F32', (0, 4), b''),
    ], {'note': 'dtype variety'}, pad=False))  # unpadded: tensor data is not aligned
    # A tiny model with every op of schemas/model-graph.md: input 3 channels, 3 classes.
    c = 4
    t = [('conv.weight', 'F32', (c, 3, 3, 3), f32(c, 3, 3, 3).tobytes()),
         ('conv.bias', 'F32', (c,), f32(c).tobytes())]
    for k, v in (('weight', rng.uniform(0.5, 1.5, c)), ('bias', rng.normal(0, 0.1, c)),
                 ('running_mean', rng.normal(0, 0.1, c)), ('running_var', rng.uniform(0.5, 2, c))):
        t.append(('bn.' + k, 'F32', (c,), v.astype('<f4').tobytes()))
    t += [('dw.weight', 'F32', (c, 1, 3, 3), f32(c, 1, 3, 3).tobytes()),
          ('fc.weight', 'F32', (3, c * 4), f32(3, c * 4).tobytes()), ('fc.bias', 'F32', (3,), f32(3).tobytes())]
    graph = {'version': 1, 'input': {'name': 'x', 'channels': 3}, 'output': 'softmax', 'nodes': [
        {'name': 'conv', 'op': 'conv2d', 'inputs': ['x'], 'weight': 'conv.weight', 'bias': 'conv.bias',
         'stride': [1, 1], 'padding': [1, 1], 'dilation': [1, 1], 'groups': 1},
        {'name': 'bn', 'op': 'batch_norm', 'inputs': ['conv'], 'weight': 'bn.weight', 'bias': 'bn.bias',
         'running_mean': 'bn.running_mean', 'running_var': 'bn.running_var', 'eps': 1e-05},
        {'name': 'relu', 'op': 'relu', 'inputs': ['bn']},
        {'name': 'pool', 'op': 'max_pool2d', 'inputs': ['relu'], 'kernel': [3, 3], 'stride': [2, 2],
         'padding': [1, 1], 'dilation': [1, 1], 'ceil_mode': False},
        {'name': 'dw', 'op': 'conv2d', 'inputs': ['pool'], 'weight': 'dw.weight', 'bias': None,
         'stride': [1, 1], 'padding': [2, 2], 'dilation': [2, 2], 'groups': c},
        {'name': 'add', 'op': 'add', 'inputs': ['dw', 'pool']},
        {'name': 'avg', 'op': 'avg_pool2d', 'inputs': ['add'], 'kernel': [2, 2], 'stride': [1, 1],
         'padding': [1, 1], 'ceil_mode': True, 'count_include_pad': False},
        {'name': 'gap', 'op': 'adaptive_avg_pool2d', 'inputs': ['avg'], 'output_size': [2, 2]},
        {'name': 'flatten', 'op': 'flatten', 'inputs': ['gap'], 'start_dim': 1},
        {'name': 'drop', 'op': 'dropout', 'inputs': ['flatten']},
        {'name': 'fc', 'op': 'linear', 'inputs': ['drop'], 'weight': 'fc.weight', 'bias': 'fc.bias'},
        {'name': 'softmax', 'op': 'softmax', 'inputs': ['fc'], 'dim': 1}]}
    meta = {'cirrdata.format': '1', 'cirrdata.arch': 'tiny', 'cirrdata.classes': '3', 'cirrdata.in_channels': '3',
            'cirrdata.input_size': '16,16', 'cirrdata.class_names': 'mild,moderate,severe',
            'cirrdata.graph': json.dumps(graph, separators=(',', ':')), 'cirrdata.source': 'make_seeds.py'}
    put('safetensors', 'tiny_graph.safetensors', st_file(t, meta))
    # The same network as a ResNet-like stem only (conv without bias + bn + relu + maxpool + linear head).
    g2 = {'version': 1, 'input': {'name': 'x', 'channels': 3}, 'output': 'fc', 'nodes': [
        graph['nodes'][0], graph['nodes'][1], graph['nodes'][2], graph['nodes'][3],
        {'name': 'gap', 'op': 'adaptive_avg_pool2d', 'inputs': ['pool'], 'output_size': [2, 2]},
        {'name': 'flatten', 'op': 'flatten', 'inputs': ['gap'], 'start_dim': 1},
        {'name': 'fc', 'op': 'linear', 'inputs': ['flatten'], 'weight': 'fc.weight', 'bias': 'fc.bias'}]}
    meta2 = dict(meta, **{'cirrdata.graph': json.dumps(g2)})
    put('safetensors', 'stem_graph.safetensors', st_file([x for x in t if not x[0].startswith('dw.')], meta2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--lib', required=True)
    ap.add_argument('--cirrdata')
    ap.add_argument('--only', help='comma-separated targets to regenerate (default: all)')
    a = ap.parse_args()
    only = set(a.only.split(',')) if a.only else None

    def want(t):
        return only is None or t in only
    lib = C.CDLL(os.path.abspath(a.lib))
    tmp = tempfile.mkdtemp(prefix='cd-seeds-')
    try:
        if want('nifti'):
            nifti_seeds(tmp)
        if want('shard'):
            shard_seeds(lib, tmp)
        if want('manifest'):
            manifest_seeds(a.cirrdata, tmp)
        if want('recipe'):
            recipe_seeds(lib)
        if want('csv'):
            csv_seeds()
        if want('safetensors'):
            safetensors_seeds()
    finally:
        shutil.rmtree(tmp)
    total = 0
    for root, _, files in os.walk(CORPUS):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    print(f'corpus: {total} bytes')
    assert total < (1 << 20)


if __name__ == '__main__':
    sys.exit(main())
