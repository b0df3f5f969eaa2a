#!/usr/bin/python3
"""The graph ops slice, concat and attention (libcirrdata/nn/ref_attention.c) against PyTorch.

  /usr/bin/python3 tests/python/test_nn_attention.py --lib build/libcirrdata/libcirrdata.so

Small model files are written here by hand (safetensors with a "cirrdata.graph", schemas/model-graph.md)
and run through cirrdata.Model on the C executor. The reference is PyTorch 1.13 written the way the
upstream networks compute attention on (B, L, C) token sequences, with reshape/permute/softmax:
- MambaVision's window attention: one qkv linear, reshape (B, L, 3, heads, d), q * scale @ k^T, softmax,
  @ v, transpose back, proj; here at 7x7 = 49 and 14x14 = 196 tokens and odd maps (5x9), heads 1/2/5,
  batch 3; followed by a concat with the input (the mixer's concat of its two branches).
- PVTv2's spatial-reduction attention: q linear on every token, a stride-sr convolution of the map,
  kv linear on the reduced tokens, reshape (B, Lk, 2, heads, d), q @ k^T * scale, softmax, @ v, proj; here
  Lq = 1024 with Lk = 16 (sr 8, head dim 64 as in PVTv2 stage 1), odd maps whose reduced map is 3x2,
  heads 1/2/5.
The token-wise linears are 1x1 convolutions in the graph (the same sum over channels at every token;
the `linear` over tokens is another op's concern). The graph ends in a flatten so that the Model
returns the whole attention output, compared element by element: max|ours - torch| <= 1e-5 max|torch|
(both float32, sums in other orders: ~1e-7 here; a wrong head split, scale or key gives O(1)).
Also: a Model run with one thread equals one with two bitwise (the split is over independent rows).
The files and the PyTorch results are made by a child process of this script (--make DIR) that loads
no libcirrdata: run against a sanitizer build (meson runs this test in the normal build only) it runs
without the ASan runtime, which makes torch's start several times slower (tests/python/asan_reexec.py);
this process compares, with numpy alone.
Ends with one line `nn_attention: N passed, M failed`.
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from asan_reexec import env_without_asan, reexec_under_asan  # noqa: E402
from harness import Checks  # noqa: E402

C = Checks()
TOL = 1e-5


def write_model(path, tensors, nodes, output, in_ch, classes):
    """A safetensors file: float32 tensors (name -> array) and the graph metadata."""
    import numpy as np
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype='<f4').tobytes()
        header[name] = {'dtype': 'F32', 'shape': list(a.shape), 'data_offsets': [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    graph = {'version': 1, 'input': {'name': 'x', 'channels': in_ch}, 'output': output, 'nodes': nodes}
    header['__metadata__'] = {'cirrdata.format': '1', 'cirrdata.arch': 'attention-test',
                              'cirrdata.classes': str(classes), 'cirrdata.in_channels': str(in_ch),
                              'cirrdata.graph': json.dumps(graph)}
    h = json.dumps(header).encode()
    h += b' ' * (-len(h) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)) + h + b''.join(blobs))


def conv1x1(name, src, w, b):
    return {'name': name, 'op': 'conv2d', 'inputs': [src], 'weight': w, 'bias': b, 'stride': [1, 1],
            'padding': [0, 0], 'dilation': [1, 1], 'groups': 1}


def as_conv(w):
    """A (O, I) linear weight as the (O, I, 1, 1) 1x1 convolution applying it at every token."""
    return w.reshape(w.shape[0], w.shape[1], 1, 1)


def run_model(path, x, threads):
    import cirrdata
    with cirrdata.Model(path, device='cpu', threads=threads) as m:
        return m.predict(x)


def save_case(tmp, tag, label, x, ref, threads_check):
    """Writes x and the torch result (B, L, C), in our flatten order (B, C * L), for compare()."""
    import numpy as np
    np.save(os.path.join(tmp, tag + '_x.npy'), x)
    np.save(os.path.join(tmp, tag + '_ref.npy'), ref.transpose(1, 2).reshape(ref.shape[0], -1).numpy())
    with open(os.path.join(tmp, 'cases.txt'), 'a') as f:
        f.write(json.dumps({'tag': tag, 'label': label, 'threads': threads_check}) + '\n')


def compare(tmp, case):
    import numpy as np
    tag, label = case['tag'], case['label']
    path = os.path.join(tmp, tag + '.safetensors')
    x, want = np.load(os.path.join(tmp, tag + '_x.npy')), np.load(os.path.join(tmp, tag + '_ref.npy'))
    ours = run_model(path, x, 2)
    scale = float(np.abs(want).max())
    err = float(np.abs(ours - want).max()) / scale if ours.shape == want.shape else float('inf')
    if C.check(ours.shape == want.shape and err <= TOL and scale > 0, label,
               'rel err %.3g (shape %s vs %s)' % (err, ours.shape, want.shape)):
        print('ok   %s: rel err %.2g' % (label, err))
    if case['threads']:
        one = run_model(path, x, 1)
        C.check((one == ours).all(), '%s: 1 thread equals 2 threads bitwise' % label)


def window_case(tmp, rng, n, c, h, w, heads, tag):
    """MambaVision's Attention on the h*w tokens of x (one window), then concat(proj, x)."""
    import numpy as np
    import torch
    d = c // heads
    scale = d ** -0.5
    t = {'qkv.weight': rng.standard_normal((3 * c, c)).astype(np.float32) * c ** -0.5,
         'qkv.bias': rng.standard_normal(3 * c).astype(np.float32) * 0.1,
         'proj.weight': rng.standard_normal((c, c)).astype(np.float32) * c ** -0.5,
         'proj.bias': rng.standard_normal(c).astype(np.float32) * 0.1}
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    nodes = [conv1x1('qkv', 'x', 'qkv.weight', 'qkv.bias'),
             {'name': 'q', 'op': 'slice', 'inputs': ['qkv'], 'start': 0, 'length': c},
             {'name': 'k', 'op': 'slice', 'inputs': ['qkv'], 'start': c, 'length': c},
             {'name': 'v', 'op': 'slice', 'inputs': ['qkv'], 'start': 2 * c, 'length': c},
             {'name': 'attn', 'op': 'attention', 'inputs': ['q', 'k', 'v'], 'heads': heads, 'scale': scale},
             conv1x1('proj', 'attn', 'proj.weight', 'proj.bias'),
             {'name': 'cat', 'op': 'concat', 'inputs': ['proj', 'x']},
             {'name': 'flat', 'op': 'flatten', 'inputs': ['cat'], 'start_dim': 1}]
    path = os.path.join(tmp, 'window_%s.safetensors' % tag)
    files = {k: (as_conv(v) if v.ndim == 2 else v) for k, v in t.items()}
    write_model(path, files, nodes, 'flat', c, 2 * c * h * w)
    # upstream (NVlabs MambaVision Attention.forward, fused_attn=False) on x.flatten(2).transpose(1, 2)
    tok = torch.from_numpy(x).flatten(2).transpose(1, 2)
    B, L, _ = tok.shape
    qkv = torch.nn.functional.linear(tok, torch.from_numpy(t['qkv.weight']), torch.from_numpy(t['qkv.bias']))
    qkv = qkv.reshape(B, L, 3, heads, d).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    a = ((q * scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    y = (a @ v).transpose(1, 2).reshape(B, L, c)
    y = torch.nn.functional.linear(y, torch.from_numpy(t['proj.weight']), torch.from_numpy(t['proj.bias']))
    ref = torch.cat([y, tok], dim=2)  # concat along the features of each token
    save_case(tmp, 'window_' + tag, 'window attention %s (n %d, %d tokens, %d heads, d %d)' % (tag, n, L, heads, d),
              x, ref, True)


def sr_case(tmp, rng, n, c, h, w, heads, sr, tag):
    """PVTv2's Attention (linear=False, sr_ratio > 1; its LayerNorm on the reduced map left out)."""
    import numpy as np
    import torch
    d = c // heads
    scale = d ** -0.5
    t = {'q.weight': rng.standard_normal((c, c)).astype(np.float32) * c ** -0.5,
         'q.bias': rng.standard_normal(c).astype(np.float32) * 0.1,
         'sr.weight': rng.standard_normal((c, c, sr, sr)).astype(np.float32) * (c * sr * sr) ** -0.5,
         'sr.bias': rng.standard_normal(c).astype(np.float32) * 0.1,
         'kv.weight': rng.standard_normal((2 * c, c)).astype(np.float32) * c ** -0.5,
         'kv.bias': rng.standard_normal(2 * c).astype(np.float32) * 0.1,
         'proj.weight': rng.standard_normal((c, c)).astype(np.float32) * c ** -0.5,
         'proj.bias': rng.standard_normal(c).astype(np.float32) * 0.1}
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    nodes = [conv1x1('q', 'x', 'q.weight', 'q.bias'),
             {'name': 'sr', 'op': 'conv2d', 'inputs': ['x'], 'weight': 'sr.weight', 'bias': 'sr.bias',
              'stride': [sr, sr], 'padding': [0, 0], 'dilation': [1, 1], 'groups': 1},
             conv1x1('kv', 'sr', 'kv.weight', 'kv.bias'),
             {'name': 'k', 'op': 'slice', 'inputs': ['kv'], 'start': 0, 'length': c},
             {'name': 'v', 'op': 'slice', 'inputs': ['kv'], 'start': c, 'length': c},
             {'name': 'attn', 'op': 'attention', 'inputs': ['q', 'k', 'v'], 'heads': heads, 'scale': scale},
             conv1x1('proj', 'attn', 'proj.weight', 'proj.bias'),
             {'name': 'flat', 'op': 'flatten', 'inputs': ['proj'], 'start_dim': 1}]
    path = os.path.join(tmp, 'sr_%s.safetensors' % tag)
    files = {k: (as_conv(v) if v.ndim == 2 else v) for k, v in t.items()}
    write_model(path, files, nodes, 'flat', c, c * h * w)
    # upstream (timm / whai362 PVTv2 Attention.forward) on tokens x (B, N, C) with H, W
    F = torch.nn.functional
    xt = torch.from_numpy(x)
    tok = xt.flatten(2).transpose(1, 2)
    B, N, _ = tok.shape
    q = F.linear(tok, torch.from_numpy(t['q.weight']), torch.from_numpy(t['q.bias']))
    q = q.reshape(B, N, heads, d).permute(0, 2, 1, 3)
    x_ = tok.permute(0, 2, 1).reshape(B, c, h, w)
    x_ = F.conv2d(x_, torch.from_numpy(t['sr.weight']), torch.from_numpy(t['sr.bias']), stride=sr)
    x_ = x_.reshape(B, c, -1).permute(0, 2, 1)
    kv = F.linear(x_, torch.from_numpy(t['kv.weight']), torch.from_numpy(t['kv.bias']))
    kv = kv.reshape(B, -1, 2, heads, d).permute(2, 0, 3, 1, 4)
    k, v = kv[0], kv[1]
    a = ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1)
    y = (a @ v).transpose(1, 2).reshape(B, N, c)
    ref = F.linear(y, torch.from_numpy(t['proj.weight']), torch.from_numpy(t['proj.bias']))
    label = 'sr attention %s (n %d, Lq %d, Lk %d, %d heads, d %d)' % (tag, n, N, k.shape[2], heads, d)
    save_case(tmp, 'sr_' + tag, label, x, ref, False)


def make(tmp):
    """The child: every case's model file, input and PyTorch result into tmp (no libcirrdata here)."""
    import numpy as np
    import torch
    torch.set_num_threads(2)
    rng = np.random.default_rng(20261207)
    window_case(tmp, rng, 2, 64, 7, 7, 2, 'a')    # 49 tokens, d 32 (MambaVision stage 4)
    window_case(tmp, rng, 1, 64, 14, 14, 2, 'b')  # 196 tokens
    window_case(tmp, rng, 3, 40, 5, 9, 5, 'c')    # odd map, 5 heads of 8, batch 3
    window_case(tmp, rng, 1, 24, 3, 3, 1, 'd')    # one head
    sr_case(tmp, rng, 1, 64, 32, 32, 1, 8, 'a')   # Lq 1024, Lk 16, d 64 (PVTv2 stage 1)
    sr_case(tmp, rng, 2, 40, 13, 11, 5, 4, 'b')   # Lq 143, Lk 3x2 = 6, 5 heads
    sr_case(tmp, rng, 2, 32, 9, 7, 2, 2, 'c')     # Lq 63, Lk 4x3 = 12, 2 heads
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--lib')
    ap.add_argument('--make', help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make:
        return make(args.make)
    if not args.lib:
        ap.error('--lib is required')
    reexec_under_asan(args.lib)
    os.environ['CIRRDATA_LIB'] = os.path.abspath(args.lib)
    sys.path.insert(0, os.path.join(REPO, 'python'))
    with tempfile.TemporaryDirectory(prefix='cd-attn-') as tmp:
        r = subprocess.run([sys.executable, os.path.abspath(__file__), '--make', tmp], capture_output=True, text=True,
                           env=env_without_asan())
        if not C.check(r.returncode == 0, 'making the cases with PyTorch', r.stdout + r.stderr):
            return C.summary('nn_attention')
        with open(os.path.join(tmp, 'cases.txt')) as f:
            cases = [json.loads(line) for line in f]
        C.check(len(cases) == 7, 'all cases made', len(cases))
        for case in cases:
            try:
                compare(tmp, case)
            except Exception as e:
                C.crashed(e)
    return C.summary('nn_attention')


if __name__ == '__main__':
    sys.exit(main())
