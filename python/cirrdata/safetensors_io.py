"""A small pure-Python (numpy) safetensors reader and writer, for the model exporter and the tests.

File layout (https://huggingface.co/docs/safetensors): u64 little-endian header length N, N bytes of
UTF-8 JSON {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
then the byte buffer the offsets index. The writer pads the header with spaces to a multiple of 8
so the buffer starts 8-byte aligned, as the reference implementation does; tensors are written in
the order given, back to back, C order, little-endian.

Needs only numpy (no torch, no `safetensors` package).
"""
import json
import os
import stat
import struct

import numpy as np

__all__ = ['DTYPES', 'write', 'read', 'read_header']

# safetensors dtype name <-> numpy dtype (little-endian). BF16 has no numpy dtype: read() returns it
# widened to float32, and write() refuses it.
DTYPES = {'F64': '<f8', 'F32': '<f4', 'F16': '<f2', 'I64': '<i8', 'I32': '<i4', 'I16': '<i2', 'I8': 'i1',
          'U8': 'u1', 'BOOL': '?'}
MAX_HEADER = 100 * 1024 * 1024


def _st_dtype(arr):
    d = arr.dtype.newbyteorder('<') if arr.dtype.byteorder == '>' else arr.dtype
    for name, npd in DTYPES.items():
        if np.dtype(npd) == d:
            return name
    raise ValueError('dtype %s cannot be written to safetensors' % arr.dtype)


def write(path, tensors, metadata=None):
    """Writes `tensors` (an ordered mapping name -> numpy array) and `metadata` (str -> str) to path.
    Returns the number of bytes written."""
    header = {}
    blobs = []
    offset = 0
    for name, arr in tensors.items():
        if name == '__metadata__':
            raise ValueError("'__metadata__' is reserved and cannot name a tensor")
        arr = np.asarray(arr)
        st = _st_dtype(arr)
        data = np.ascontiguousarray(arr, dtype=np.dtype(DTYPES[st])).tobytes(order='C')
        header[name] = {'dtype': st, 'shape': [int(s) for s in arr.shape],
                        'data_offsets': [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ValueError('metadata must map str to str (%r: %r)' % (k, type(v).__name__))
        header['__metadata__'] = dict(metadata)
    text = json.dumps(header, separators=(',', ':'), ensure_ascii=False).encode('utf-8')
    text += b' ' * (-len(text) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    return 8 + len(text) + offset


def read_header(data):
    """Parses and checks the header of a file's bytes; returns (header dict, buffer start)."""
    if len(data) < 8:
        raise ValueError('truncated: %d bytes' % len(data))
    (n,) = struct.unpack_from('<Q', data, 0)
    if n > MAX_HEADER or n > len(data) - 8:
        raise ValueError('bad header length %d for a %d-byte file' % (n, len(data)))

    def no_dups(pairs):
        d = {}
        for k, v in pairs:
            if k in d:
                raise ValueError('duplicate key %r in the header' % k)
            d[k] = v
        return d

    header = json.loads(bytes(data[8:8 + n]).decode('utf-8'), object_pairs_hook=no_dups)
    if not isinstance(header, dict):
        raise ValueError('header is not a JSON object')
    return header, 8 + n


_KINDS = ((stat.S_ISFIFO, 'a FIFO'), (stat.S_ISDIR, 'a directory'), (stat.S_ISCHR, 'a character device'),
          (stat.S_ISBLK, 'a block device'), (stat.S_ISSOCK, 'a socket'))


def _read_regular(path):
    """The bytes of a regular file. Opened without blocking and checked first: open() of a FIFO without
    a writer would wait forever. Anything but a regular file is a ValueError naming its kind."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((k for test, k in _KINDS if test(mode)), 'not a file')
            raise ValueError('%s: not a regular file (%s)' % (path, kind))
        os.set_blocking(fd, True)
        with os.fdopen(fd, 'rb') as f:
            fd = -1
            return f.read()
    finally:
        if fd >= 0:
            os.close(fd)


def read(path):
    """Returns (tensors: dict name -> numpy array in file order, metadata: dict). BF16 is returned as
    float32 (exact). Offsets, sizes and overlaps are checked."""
    data = _read_regular(path)
    header, start = read_header(data)
    buf = memoryview(data)[start:]
    metadata = header.pop('__metadata__', {}) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError('__metadata__ must map str to str')
    tensors = {}
    spans = []
    for name, info in header.items():
        dt, shape, (b, e) = info['dtype'], info['shape'], info['data_offsets']
        if any((not isinstance(s, int)) or s < 0 for s in shape):
            raise ValueError('tensor %r: bad shape %r' % (name, shape))
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        size = 2 if dt == 'BF16' else np.dtype(DTYPES[dt]).itemsize
        if not (0 <= b <= e <= len(buf)) or e - b != count * size:
            raise ValueError('tensor %r: bad data_offsets %r' % (name, [b, e]))
        spans.append((b, e, name))
        if dt == 'BF16':
            raw = np.frombuffer(buf[b:e], dtype='<u2').astype(np.uint32) << 16
            arr = raw.view(np.float32)
        else:
            arr = np.frombuffer(buf[b:e], dtype=DTYPES[dt]).copy()
        tensors[name] = arr.reshape(shape)
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise ValueError('tensors %r and %r overlap' % (n0, n1))
    return tensors, metadata
