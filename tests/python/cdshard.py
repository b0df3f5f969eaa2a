#!/usr/bin/python3
"""An independent reader of libcirrdata datasets, written from schemas/shard-format.md alone.

It never calls the C library: it is the second implementation the tests compare the C reader
against.  Only numpy, python3-zstandard and python3-xxhash are used.

    import cdshard
    records = cdshard.read_shard('DATASET/shards/shard-000-00000.cds')
    manifest, records = cdshard.read_dataset('DATASET')

A record is ``{'metadata': dict, 'tensors': {name: numpy array (C, X, Y, Z)}}``; read_dataset's
records also carry ``'shard'`` (the manifest's shard path) and ``'index'`` (the record's number in
that shard).  Every rule of the format is checked (magics, versions, all checksums, sizes, offsets,
alignment, reserved fields, zero padding); any violation raises ValueError whose message names the
file and, where it applies, the record, tensor and chunk.

``shard_layout(path)`` returns the verified byte layout of a shard (where each header, chunk and the
index lie) without decoding the chunks: tests use it to damage files at chosen places.
"""
import json
import os
import re
import struct

import numpy as np
import xxhash
import zstandard

__all__ = ['read_shard', 'read_dataset', 'shard_layout', 'check_shard_path', 'file_xxh3_128',
           'check_manifest_sum', 'seal_manifest', 'DTYPES', 'ALIGN']

ALIGN = 4096
SHARD_MAGIC = b'CDSHARD1'
RECORD_MAGIC = b'CDRECRD1'
FORMAT_VERSION = 1           # shard files
MANIFEST_FORMAT_VERSION = 2  # manifest.json (2: ends with its own checksum, manifest_xxh3)
MANIFEST_SUM_KEY = b'"manifest_xxh3": "'
MANIFEST_SUM_END = b'"\n}\n'
MANIFEST_SUM_TAIL = len(MANIFEST_SUM_KEY) + 32 + len(MANIFEST_SUM_END)  # 54
SHARD_HEADER_SIZE = 4096
INDEX_ENTRY_SIZE = 32
RECORD_FIXED_SIZE = 32
TENSOR_ENTRY_SIZE = 64
CHUNK_ENTRY_SIZE = 24
MAX_TENSORS = 16
MAX_META = 1 << 20
# dtype code -> numpy dtype (little-endian)
DTYPES = {1: np.dtype('<u1'), 2: np.dtype('<i2'), 3: np.dtype('<f2'), 4: np.dtype('<f4')}
CODECS = {0: 'raw', 1: 'zstd'}
REQUIRED_METADATA = ('patient_id', 'sequence', 'split', 'label', 'affine', 'spacing', 'orientation',
                     'original', 'mask_bbox', 'key')
SHARD_PATH_RE = re.compile(r'^[A-Za-z0-9._/-]+$')


def _u64(b, o):
    return struct.unpack_from('<Q', b, o)[0]


def _u32(b, o):
    return struct.unpack_from('<I', b, o)[0]


def _ceil_div(a, b):
    return -(-a // b)


def _xxh64(data):
    return xxhash.xxh3_64_intdigest(bytes(data))


def file_xxh3_128(path):
    """XXH3-128 (seed 0) of a whole file as 32 lowercase hex digits (canonical, as `xxhsum -H2`)."""
    h = xxhash.xxh3_128()
    with open(path, 'rb') as f:
        while True:
            block = f.read(1 << 22)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


class _Ctx:
    """Builds error messages: 'FILE: record R: tensor 'T': chunk K: problem'."""

    def __init__(self, path):
        self.path = path

    def fail(self, msg, record=None, tensor=None, chunk=None):
        parts = [str(self.path)]
        if record is not None:
            parts.append('record %d' % record)
        if tensor is not None:
            parts.append('tensor %r' % tensor)
        if chunk is not None:
            parts.append('chunk %d' % chunk)
        raise ValueError(': '.join(parts + [msg]))


# ----------------------------------------------------------------------------- layout

def _parse_header(ctx, data):
    size = len(data)
    if size < SHARD_HEADER_SIZE:
        ctx.fail('file is %d bytes, shorter than the %d-byte shard header' % (size, SHARD_HEADER_SIZE))
    h = data[:SHARD_HEADER_SIZE]
    if h[0:8] != SHARD_MAGIC:
        ctx.fail('bad shard magic %r (want %r)' % (bytes(h[0:8]), SHARD_MAGIC))
    version = _u32(h, 8)
    if version != FORMAT_VERSION:
        ctx.fail('unsupported format_version %d (want %d)' % (version, FORMAT_VERSION))
    stored = _u64(h, 4088)
    actual = _xxh64(h[:4088])
    if stored != actual:
        ctx.fail('shard header checksum mismatch (stored %016x, computed %016x)' % (stored, actual))
    header_size = _u32(h, 12)
    if header_size != SHARD_HEADER_SIZE:
        ctx.fail('shard header_size %d (want %d)' % (header_size, SHARD_HEADER_SIZE))
    record_count, index_offset, index_size, file_size, index_xxh3 = struct.unpack_from('<5Q', h, 16)
    if any(h[56:4088]):
        ctx.fail('reserved bytes 56..4087 of the shard header are not zero')
    if index_size != record_count * INDEX_ENTRY_SIZE:
        ctx.fail('index_size %d != record_count %d * %d' % (index_size, record_count, INDEX_ENTRY_SIZE))
    if index_offset % ALIGN:
        ctx.fail('index_offset %d is not a multiple of %d' % (index_offset, ALIGN))
    if index_offset < SHARD_HEADER_SIZE:
        ctx.fail('index_offset %d lies inside the shard header' % index_offset)
    if index_offset + index_size != file_size:
        ctx.fail('index_offset %d + index_size %d != file_size %d' % (index_offset, index_size, file_size))
    if file_size != size:
        ctx.fail('file is %d bytes but its header says %d (truncated or extended)' % (size, file_size))
    index = data[index_offset:index_offset + index_size]
    actual = _xxh64(index)
    if actual != index_xxh3:
        ctx.fail('index checksum mismatch (stored %016x, computed %016x)' % (index_xxh3, actual))
    return record_count, index_offset, index_size, file_size


def _parse_record(ctx, data, rec_no, rec_off, hdr_size, rec_size):
    """Verifies one record header; returns (metadata, tensors) without reading chunk bytes."""
    if hdr_size < RECORD_FIXED_SIZE + TENSOR_ENTRY_SIZE + 8:
        ctx.fail('record header_size %d is too small' % hdr_size, rec_no)
    if rec_size < hdr_size:
        ctx.fail('record_size %d is smaller than header_size %d' % (rec_size, hdr_size), rec_no)
    hb = data[rec_off:rec_off + hdr_size]
    if len(hb) != hdr_size:
        ctx.fail('record header runs past the end of the file', rec_no)
    if hb[0:8] != RECORD_MAGIC:
        ctx.fail('bad record magic %r (want %r)' % (bytes(hb[0:8]), RECORD_MAGIC), rec_no)
    stored = _u64(hb, hdr_size - 8)
    actual = _xxh64(hb[:hdr_size - 8])
    if stored != actual:
        ctx.fail('record header checksum mismatch (stored %016x, computed %016x)' % (stored, actual), rec_no)
    h_size, tensor_count, meta_size, reserved, number = struct.unpack_from('<4IQ', hb, 8)
    if h_size != hdr_size:
        ctx.fail('record header says header_size %d, index says %d' % (h_size, hdr_size), rec_no)
    if not 1 <= tensor_count <= MAX_TENSORS:
        ctx.fail('tensor_count %d outside 1..%d' % (tensor_count, MAX_TENSORS), rec_no)
    if meta_size > MAX_META:
        ctx.fail('meta_size %d above %d' % (meta_size, MAX_META), rec_no)
    if reserved != 0:
        ctx.fail('reserved field of the record header is %d, not 0' % reserved, rec_no)
    if number != rec_no:
        ctx.fail('record_number %d != its position %d in the index' % (number, rec_no), rec_no)
    pos = RECORD_FIXED_SIZE
    if pos + tensor_count * TENSOR_ENTRY_SIZE + meta_size + 8 > hdr_size:
        ctx.fail('tensor table and metadata do not fit in header_size %d' % hdr_size, rec_no)
    tensors = []
    names = set()
    for t in range(tensor_count):
        e = hb[pos:pos + TENSOR_ENTRY_SIZE]
        pos += TENSOR_ENTRY_SIZE
        raw_name = bytes(e[0:16])
        name_b = raw_name.rstrip(b'\0')
        if not name_b or b'\0' in name_b:
            ctx.fail('tensor %d: name %r is empty or not NUL-padded' % (t, raw_name), rec_no)
        if any(c < 0x20 or c > 0x7e for c in name_b):
            ctx.fail('tensor %d: name %r is not printable ASCII' % (t, raw_name), rec_no)
        name = name_b.decode('ascii')
        if name in names:
            ctx.fail('tensor name %r appears twice' % name, rec_no)
        names.add(name)
        dtype_code, codec, res16 = struct.unpack_from('<BBH', e, 16)
        C, X, Y, Z, cx, cy, cz, chunk_count, res32, res64 = struct.unpack_from('<8IIQ', e, 20)
        if dtype_code not in DTYPES:
            ctx.fail('unknown dtype code %d' % dtype_code, rec_no, name)
        if codec not in CODECS:
            ctx.fail('unknown codec %d' % codec, rec_no, name)
        if res16 or res32 or res64:
            ctx.fail('reserved fields of the tensor entry are not zero', rec_no, name)
        if min(C, X, Y, Z) < 1:
            ctx.fail('shape (%d, %d, %d, %d) has a zero extent' % (C, X, Y, Z), rec_no, name)
        if min(cx, cy, cz) < 1:
            ctx.fail('chunk extents (%d, %d, %d) must be >= 1' % (cx, cy, cz), rec_no, name)
        grid = (_ceil_div(X, cx), _ceil_div(Y, cy), _ceil_div(Z, cz))
        if chunk_count != grid[0] * grid[1] * grid[2]:
            ctx.fail('chunk_count %d != %d x %d x %d' % ((chunk_count,) + grid), rec_no, name)
        tensors.append({'name': name, 'dtype': DTYPES[dtype_code], 'codec': codec, 'shape': (C, X, Y, Z),
                        'chunk': (cx, cy, cz), 'grid': grid, 'chunk_count': chunk_count, 'chunks': []})
    meta_bytes = bytes(hb[pos:pos + meta_size])
    meta_off = pos
    pos += meta_size
    try:
        metadata = json.loads(meta_bytes.decode('utf-8'))
    except (UnicodeDecodeError, ValueError) as e:
        ctx.fail('metadata is not UTF-8 JSON (%s)' % e, rec_no)
    if not isinstance(metadata, dict):
        ctx.fail('metadata is a JSON %s, not an object' % type(metadata).__name__, rec_no)
    total_chunks = sum(t['chunk_count'] for t in tensors)
    want = RECORD_FIXED_SIZE + tensor_count * TENSOR_ENTRY_SIZE + meta_size + total_chunks * CHUNK_ENTRY_SIZE + 8
    if want != hdr_size:
        ctx.fail('header_size %d != %d computed from its tables' % (hdr_size, want), rec_no)
    header_end = rec_off + hdr_size
    rec_end = rec_off + rec_size
    last_end = header_end
    for t in tensors:
        C = t['shape'][0]
        for k in range(t['chunk_count']):
            off, stored_size, raw_size, cx3 = struct.unpack_from('<QIIQ', hb, pos)
            pos += CHUNK_ENTRY_SIZE
            a, rem = divmod(k, t['grid'][1] * t['grid'][2])
            b, c = divmod(rem, t['grid'][2])
            start = (a * t['chunk'][0], b * t['chunk'][1], c * t['chunk'][2])
            ext = tuple(min(t['shape'][1 + d], start[d] + t['chunk'][d]) - start[d] for d in range(3))
            want_raw = C * ext[0] * ext[1] * ext[2] * t['dtype'].itemsize
            if raw_size != want_raw:
                ctx.fail('raw_size %d != %d (C x extents x itemsize)' % (raw_size, want_raw), rec_no, t['name'], k)
            if off % ALIGN:
                ctx.fail('chunk offset %d is not a multiple of %d' % (off, ALIGN), rec_no, t['name'], k)
            if off < header_end or off + stored_size > rec_end:
                ctx.fail('chunk bytes [%d, %d) lie outside the record body [%d, %d)'
                         % (off, off + stored_size, header_end, rec_end), rec_no, t['name'], k)
            if t['codec'] == 0 and stored_size != raw_size:
                ctx.fail('raw chunk stores %d bytes, raw_size is %d' % (stored_size, raw_size), rec_no, t['name'], k)
            if t['codec'] == 1 and stored_size == 0:
                ctx.fail('zstd chunk stores 0 bytes', rec_no, t['name'], k)
            last_end = max(last_end, off + stored_size)
            t['chunks'].append({'offset': off, 'stored_size': stored_size, 'raw_size': raw_size, 'xxh3': cx3,
                                'start': start, 'extent': ext})
    if last_end != rec_end:
        ctx.fail('record_size %d but its last chunk ends at %d bytes from the record start'
                 % (rec_size, last_end - rec_off), rec_no)
    return metadata, tensors, meta_off


def _check_padding(ctx, data, regions, file_size):
    """Every byte outside the format's regions is padding and must be zero."""
    regions = sorted(regions)
    pos = 0
    for start, end, what in regions:
        if start < pos:
            ctx.fail('%s at byte %d overlaps the region before it (ending at %d)' % (what, start, pos))
        if start > pos and np.frombuffer(data, np.uint8, start - pos, pos).any():
            nz = pos + int(np.flatnonzero(np.frombuffer(data, np.uint8, start - pos, pos))[0])
            ctx.fail('padding byte %d (before %s) is not zero' % (nz, what))
        pos = end
    if pos != file_size:
        ctx.fail('bytes after the last region (%d..%d)' % (pos, file_size))


def _is_int(v, lo=0):
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _augmentation_problem(a):
    """What is wrong with an augmented record's 'augmentation' object (shard-format.md,
    'Augmented records'), or None."""
    if not isinstance(a, dict):
        return 'not an object'
    for k in ('copy', 'case', 'seed', 'epoch'):
        if not _is_int(a.get(k)):
            return '%r must be an integer >= 0' % k
    if a['epoch'] != a['copy']:
        return 'epoch %r differs from copy %r' % (a['epoch'], a['copy'])
    if a.get('mode') not in ('volume', 'patch', 'slice'):
        return 'mode %r' % a.get('mode')
    for k in ('patch', 'source_shape'):
        v = a.get(k)
        if not (isinstance(v, list) and len(v) == 3 and all(_is_int(x, 1) for x in v)):
            return '%r must be 3 integers >= 1' % k
    if not isinstance(a.get('affine_exact'), bool):
        return 'affine_exact must be a boolean'
    if a['mode'] == 'slice':
        sl = a.get('slices')
        if not (isinstance(sl, list) and len(sl) == a['source_shape'][2] and
                all(isinstance(e, dict) and e.get('z') == z and isinstance(e.get('params'), dict) for z, e in enumerate(sl))):
            return 'slice mode needs one {"z", "params"} per slice, in order'
    else:
        if not isinstance(a.get('params'), dict) or 'matrix' not in a['params'] or 'center' not in a['params']:
            return 'params must be an object with matrix and center'
        c = a.get('corner')
        if not (isinstance(c, list) and len(c) == 3 and all(isinstance(x, int) for x in c)):
            return 'corner must be 3 integers'
    return None


def _layout(path, data, check_metadata=True):
    ctx = _Ctx(path)
    record_count, index_offset, index_size, file_size = _parse_header(ctx, data)
    index = data[index_offset:index_offset + index_size]
    records = []
    regions = [(0, SHARD_HEADER_SIZE, 'shard header'), (index_offset, index_offset + index_size, 'index')]
    prev_end = SHARD_HEADER_SIZE
    for i in range(record_count):
        rec_off, hdr_size, res32, rec_size, res64 = struct.unpack_from('<QIIQQ', index, i * INDEX_ENTRY_SIZE)
        if res32 or res64:
            ctx.fail('reserved fields of the index entry are not zero', i)
        if rec_off % ALIGN:
            ctx.fail('record_offset %d is not a multiple of %d' % (rec_off, ALIGN), i)
        if rec_off < prev_end:
            ctx.fail('record_offset %d overlaps the shard header or the previous record (ends at %d)'
                     % (rec_off, prev_end), i)
        if rec_off + rec_size > index_offset:
            ctx.fail('record [%d, %d) runs into the index at %d' % (rec_off, rec_off + rec_size, index_offset), i)
        metadata, tensors, meta_off = _parse_record(ctx, data, i, rec_off, hdr_size, rec_size)
        if check_metadata:
            missing = [k for k in REQUIRED_METADATA if k not in metadata]
            if missing:
                ctx.fail('metadata lacks required keys %s' % missing, i)
            if 'augmentation' in metadata:
                problem = _augmentation_problem(metadata['augmentation'])
                if problem:
                    ctx.fail('metadata augmentation: %s' % problem, i)
        prev_end = rec_off + rec_size
        regions.append((rec_off, rec_off + hdr_size, 'record %d header' % i))
        for t in tensors:
            for k, ch in enumerate(t['chunks']):
                regions.append((ch['offset'], ch['offset'] + ch['stored_size'],
                                'record %d tensor %r chunk %d' % (i, t['name'], k)))
        records.append({'record': i, 'offset': rec_off, 'header_size': hdr_size, 'record_size': rec_size,
                        'metadata_offset': rec_off + meta_off, 'metadata': metadata, 'tensors': tensors})
    _check_padding(ctx, data, regions, file_size)
    return {'path': path, 'file_size': file_size, 'record_count': record_count, 'index_offset': index_offset,
            'index_size': index_size, 'records': records}


def _read_file(path):
    with open(path, 'rb') as f:
        return f.read()


def shard_layout(path, check_metadata=True):
    """Verifies a shard's header, index, record headers and padding (not the chunk bytes) and returns
    {'file_size', 'record_count', 'index_offset', 'index_size', 'records': [{'offset', 'header_size',
    'record_size', 'metadata_offset', 'metadata', 'tensors': [{'name', 'dtype', 'codec', 'shape',
    'chunk', 'grid', 'chunks': [{'offset', 'stored_size', 'raw_size', 'xxh3', 'start', 'extent'}]}]}]}."""
    return _layout(path, _read_file(path), check_metadata)


# ----------------------------------------------------------------------------- decoding

def _decode_chunk(ctx, data, rec_no, t, k, ch):
    stored = bytes(data[ch['offset']:ch['offset'] + ch['stored_size']])
    actual = _xxh64(stored)
    if actual != ch['xxh3']:
        ctx.fail('chunk checksum mismatch (stored %016x, computed %016x)' % (ch['xxh3'], actual), rec_no, t['name'], k)
    if t['codec'] == 0:
        raw = stored
    else:
        try:
            params = zstandard.get_frame_parameters(stored)
        except zstandard.ZstdError as e:
            ctx.fail('not a zstd frame (%s)' % e, rec_no, t['name'], k)
        if params.content_size == zstandard.CONTENTSIZE_UNKNOWN:
            ctx.fail('zstd frame header lacks the content size', rec_no, t['name'], k)
        if params.content_size != ch['raw_size']:
            ctx.fail('zstd content size %d != raw_size %d' % (params.content_size, ch['raw_size']), rec_no, t['name'], k)
        obj = zstandard.ZstdDecompressor().decompressobj()
        try:
            raw = obj.decompress(stored)
        except zstandard.ZstdError as e:
            ctx.fail('zstd decoding failed (%s)' % e, rec_no, t['name'], k)
        if not obj.eof:
            ctx.fail('zstd frame is incomplete', rec_no, t['name'], k)
        if obj.unused_data:
            ctx.fail('%d bytes after the zstd frame' % len(obj.unused_data), rec_no, t['name'], k)
    if len(raw) != ch['raw_size']:
        ctx.fail('decoded %d bytes, raw_size is %d' % (len(raw), ch['raw_size']), rec_no, t['name'], k)
    C = t['shape'][0]
    return np.frombuffer(raw, t['dtype']).reshape((C,) + ch['extent'])


def _decode_records(path, data, layout):
    ctx = _Ctx(path)
    out = []
    for rec in layout['records']:
        tensors = {}
        for t in rec['tensors']:
            arr = np.empty(t['shape'], t['dtype'])
            for k, ch in enumerate(t['chunks']):
                (x, y, z), (ex, ey, ez) = ch['start'], ch['extent']
                arr[:, x:x + ex, y:y + ey, z:z + ez] = _decode_chunk(ctx, data, rec['record'], t, k, ch)
            tensors[t['name']] = arr
        out.append({'metadata': rec['metadata'], 'tensors': tensors})
    return out


def read_shard(path, check_metadata=True):
    """Reads and fully verifies one shard file. Returns its records in order, each
    {'metadata': dict, 'tensors': {name: ndarray (C, X, Y, Z)}}. check_metadata: require the
    metadata keys the format lists as required. Raises ValueError naming file/record/tensor/chunk."""
    data = _read_file(path)
    layout = _layout(path, data, check_metadata)
    return _decode_records(path, data, layout)


# ----------------------------------------------------------------------------- datasets

def check_shard_path(p):
    """Raises ValueError unless p is a manifest shard path the format allows: relative, '/'-separated,
    no '..' (or empty) components, characters [A-Za-z0-9._/-]."""
    if not isinstance(p, str) or not p:
        raise ValueError('shard path %r is not a non-empty string' % (p,))
    if p.startswith('/'):
        raise ValueError('shard path %r is absolute' % p)
    parts = p.split('/')
    if '..' in parts:
        raise ValueError('shard path %r contains a ".." component' % p)
    if '' in parts:
        raise ValueError('shard path %r has an empty component' % p)
    if not SHARD_PATH_RE.match(p):
        raise ValueError('shard path %r has characters outside [A-Za-z0-9._/-]' % p)


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError('duplicate key in a JSON object')
    return dict(pairs)


def check_manifest_sum(data, what='manifest.json'):
    """Checks a manifest's own checksum (shard-format.md, "Manifest checksum"): the bytes must end with
    exactly '"manifest_xxh3": "' + 32 lowercase hex digits + '"\\n}\\n', and the digits must be the
    XXH3-128 of every byte before that tail. Raises ValueError naming `what`."""
    tail = data[-MANIFEST_SUM_TAIL:]
    digits = tail[len(MANIFEST_SUM_KEY):len(MANIFEST_SUM_KEY) + 32]
    if (len(data) < MANIFEST_SUM_TAIL + 2 or not tail.startswith(MANIFEST_SUM_KEY) or not tail.endswith(MANIFEST_SUM_END)
            or not re.fullmatch(rb'[0-9a-f]{32}', digits)):
        raise ValueError('%s: does not end with its manifest_xxh3 checksum' % what)
    got = xxhash.xxh3_128_hexdigest(data[:-MANIFEST_SUM_TAIL])
    if got != digits.decode():
        raise ValueError('%s: XXH3-128 of the manifest is %s, manifest_xxh3 says %s' % (what, got, digits.decode()))


def seal_manifest(manifest):
    """The bytes of a manifest file for the dict `manifest` (any manifest_xxh3 in it is dropped),
    written as the spec lays it out: JSON with indent 1, then the checksum as the last member."""
    m = {k: v for k, v in manifest.items() if k != 'manifest_xxh3'}
    text = json.dumps(m, indent=1).encode()
    if not m or not text.endswith(b'\n}'):
        raise ValueError('a manifest must be a non-empty JSON object')
    body = text[:-2] + b',\n '
    return body + MANIFEST_SUM_KEY + xxhash.xxh3_128_hexdigest(body).encode() + MANIFEST_SUM_END


def read_dataset(root, check_metadata=True):
    """Reads and fully verifies a dataset directory. Returns (manifest, records): records in manifest
    order (sample index = position), each {'metadata', 'tensors', 'shard': manifest shard path,
    'index': record number in its shard}. Checks every shard's path, size and XXH3-128 against the
    manifest, every shard (read_shard), and that the manifest's records list names each record of
    each shard exactly once with the same key / patient_id / sequence / split / label."""
    mpath = os.path.join(root, 'manifest.json')
    try:
        with open(mpath, 'rb') as f:
            data = f.read()
    except OSError as e:
        raise ValueError('%s: cannot read manifest (%s)' % (mpath, e))
    check_manifest_sum(data, mpath)
    try:
        manifest = json.loads(data.decode('utf-8'), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError('%s: cannot read manifest (%s)' % (mpath, e))

    def bad(msg):
        raise ValueError('%s: %s' % (mpath, msg))

    if not isinstance(manifest, dict):
        bad('not a JSON object')
    if manifest.get('format') != 'cirrdata-dataset':
        bad('format is %r, not "cirrdata-dataset"' % manifest.get('format'))
    if manifest.get('format_version') != MANIFEST_FORMAT_VERSION:
        bad('format_version is %r, not %d' % (manifest.get('format_version'), MANIFEST_FORMAT_VERSION))
    if list(manifest)[-1] != 'manifest_xxh3':
        bad('manifest_xxh3 is not the last member')
    shards = manifest.get('shards')
    mrecords = manifest.get('records')
    if not isinstance(shards, list) or not isinstance(mrecords, list):
        bad('"shards" and "records" must be arrays')
    shard_records = []
    for n, s in enumerate(shards):
        if not isinstance(s, dict) or not all(k in s for k in ('path', 'size', 'records', 'xxh3_128')):
            bad('shards[%d] lacks path/size/records/xxh3_128' % n)
        try:
            check_shard_path(s['path'])
        except ValueError as e:
            bad('shards[%d]: %s' % (n, e))
        spath = os.path.join(root, *s['path'].split('/'))
        try:
            size = os.path.getsize(spath)
        except OSError as e:
            raise ValueError('%s: cannot stat (%s)' % (spath, e))
        if size != s['size']:
            raise ValueError('%s: file is %d bytes, manifest says %d' % (spath, size, s['size']))
        digest = file_xxh3_128(spath)
        if digest != s['xxh3_128']:
            raise ValueError('%s: XXH3-128 %s, manifest says %s' % (spath, digest, s['xxh3_128']))
        recs = read_shard(spath, check_metadata)
        if len(recs) != s['records']:
            raise ValueError('%s: holds %d records, manifest says %d' % (spath, len(recs), s['records']))
        shard_records.append(recs)
    counts = manifest.get('counts', {})
    if isinstance(counts, dict) and 'records' in counts and counts['records'] != len(mrecords):
        bad('counts.records %r != %d entries in "records"' % (counts['records'], len(mrecords)))
    seen = set()
    out = []
    for n, r in enumerate(mrecords):
        if not isinstance(r, dict):
            bad('records[%d] is not an object' % n)
        si, ri = r.get('shard'), r.get('index')
        if not isinstance(si, int) or not 0 <= si < len(shards):
            bad('records[%d]: shard %r out of range' % (n, si))
        if not isinstance(ri, int) or not 0 <= ri < len(shard_records[si]):
            bad('records[%d]: index %r out of range for %s' % (n, ri, shards[si]['path']))
        if (si, ri) in seen:
            bad('records[%d]: record %d of %s listed twice' % (n, ri, shards[si]['path']))
        seen.add((si, ri))
        rec = shard_records[si][ri]
        for k in ('key', 'patient_id', 'sequence', 'split', 'label'):
            if k in r and rec['metadata'].get(k) != r[k]:
                bad('records[%d]: %s %r but the record (%s #%d) says %r'
                    % (n, k, r[k], shards[si]['path'], ri, rec['metadata'].get(k)))
        out.append(dict(rec, shard=shards[si]['path'], index=ri))
    total = sum(len(x) for x in shard_records)
    if len(seen) != total:
        bad('"records" lists %d records, the shards hold %d' % (len(seen), total))
    return manifest, out
