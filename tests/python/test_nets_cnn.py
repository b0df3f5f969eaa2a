#!/usr/bin/python3
"""The CNN-family graph ops and networks (issue 17) against PyTorch: layer_norm, linear over (N, C, H, W),
mul, scale and a standalone batch_norm, then torchvision's MobileNetV3-Small and ConvNeXt-Base.

  /usr/bin/python3 tests/python/test_nets_cnn.py --lib build/libcirrdata/libcirrdata.so
  CIRRDATA_SLOW_TESTS=1 ... (ConvNeXt-Base at 2x3x256x256 on Vulkan too)

Ops: each op alone in a hand-written graph (schemas/model-graph.md) with parameters drawn at random,
run by cirrdata.Model on the C executor (threads 1 and 2) and compared with what torch 1.13 computes
for the same tensors (F.layer_norm on x.permute(0, 2, 3, 1), F.linear on channels-last, x * b,
x * layer_scale (C, 1, 1) + bias, F.batch_norm in eval): odd shapes (1-pixel axes, C of 1, 7, 300,
batch 3), max|ours - torch| <= 1e-5 * max|torch| (float32 sums in another order; the layer norm's
reference is torch in float64, see op_cases). The C executor must give bitwise-equal results with
1 and 2 threads.

Networks: see the second half of the docstring at NETWORKS below. Ends with one line
`nets_cnn: N passed, M failed`.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from asan_reexec import reexec_under_asan  # noqa: E402
import vk_test  # noqa: E402

PASSED = 0
FAILED = 0
OP_TOL = 1e-5


def check(ok, name, detail=''):
    global PASSED, FAILED
    if ok:
        PASSED += 1
        print('ok   %s%s' % (name, (': ' + str(detail)) if detail != '' else ''))
    else:
        FAILED += 1
        print('FAIL %s%s' % (name, (': ' + str(detail)[:600]) if detail != '' else ''))
    return ok


def rel_err(ours, ref):
    import numpy as np
    return float(np.max(np.abs(ours - ref)) / max(float(np.max(np.abs(ref))), 1e-30))


def write_model(path, nodes, output, in_ch, classes, tensors):
    """A cirrdata model file of a hand-written graph (classes: the output's channels)."""
    from cirrdata import safetensors_io
    graph = {'version': 1, 'input': {'name': 'x', 'channels': in_ch}, 'output': output, 'nodes': nodes}
    meta = {'cirrdata.format': '1', 'cirrdata.arch': 'ops', 'cirrdata.classes': str(classes),
            'cirrdata.in_channels': str(in_ch), 'cirrdata.graph': json.dumps(graph)}
    safetensors_io.write(path, {k: v.astype('float32') for k, v in tensors.items()}, meta)


def run_graph(tmp, name, nodes, output, x, classes, tensors):
    """Runs the graph (ending in a flatten) on x (N, C, H, W) on the C executor with 1 and 2 threads
    (they must agree bitwise); the result (N, classes)."""
    import cirrdata
    import numpy as np
    path = os.path.join(tmp, name + '.safetensors')
    write_model(path, nodes, output, x.shape[1], classes, tensors)
    outs = []
    for threads in (1, 2):
        with cirrdata.Model(path, device='cpu', threads=threads) as m:
            outs.append(m.predict(x))
    check(np.array_equal(outs[0], outs[1]), '%s: threads 1 and 2 agree bitwise' % name)
    return outs[0]


def op_cases(tmp, rng):
    import numpy as np
    import torch
    import torch.nn.functional as F

    def flat(nodes, last):
        return nodes + [{'name': 'out', 'op': 'flatten', 'inputs': [last], 'start_dim': 1}], 'out'

    def compare(name, nodes, last, x, tensors, ref):
        nodes, out = flat(nodes, last)
        ref = ref.reshape(ref.shape[0], -1)
        ours = run_graph(tmp, name, nodes, out, x, ref.shape[1], tensors)
        e = rel_err(ours, ref)
        check(ours.shape == ref.shape and e <= OP_TOL, '%s vs torch' % name, 'rel %.2e' % e)

    # layer_norm over C at every position, with and without weight/bias
    for (n, c, h, w, aff, eps) in [(2, 7, 5, 3, True, 1e-6), (3, 300, 1, 4, True, 1e-5), (1, 1, 3, 3, True, 1e-5),
                                   (2, 33, 9, 1, False, 1e-3)]:
        x = rng.standard_normal((n, c, h, w)).astype(np.float32) * 3 + 1
        wt = rng.standard_normal(c).astype(np.float32)
        bs = rng.standard_normal(c).astype(np.float32)
        # in float64: torch's float32 kernel computes x * rstd - mean * rstd, whose rounding (about
        # |x| / sqrt(eps) * 2^-24) is all there is of a C = 1 layer norm (exactly its bias)
        t = torch.from_numpy(x).double().permute(0, 2, 3, 1)
        ref = F.layer_norm(t, (c,), torch.from_numpy(wt).double() if aff else None,
                           torch.from_numpy(bs).double() if aff else None, eps).permute(0, 3, 1, 2).numpy()
        node = {'name': 'ln', 'op': 'layer_norm', 'inputs': ['x'], 'weight': 'w' if aff else None,
                'bias': 'b' if aff else None, 'eps': eps}
        compare('layer_norm %dx%dx%dx%d%s' % (n, c, h, w, '' if aff else ' no affine'), [node], 'ln', x,
                {'w': wt, 'b': bs} if aff else {}, ref)
    # linear over C at every position (channels-last nn.Linear), with and without bias; then a flat one
    for (n, i, o, h, w, bias) in [(2, 17, 9, 5, 7, True), (1, 96, 130, 3, 1, False), (3, 5, 4, 1, 1, True)]:
        x = rng.standard_normal((n, i, h, w)).astype(np.float32)
        wt = (rng.standard_normal((o, i)) / np.sqrt(i)).astype(np.float32)
        bs = rng.standard_normal(o).astype(np.float32)
        ref = F.linear(torch.from_numpy(x).permute(0, 2, 3, 1), torch.from_numpy(wt),
                       torch.from_numpy(bs) if bias else None).permute(0, 3, 1, 2).numpy()
        node = {'name': 'fc', 'op': 'linear', 'inputs': ['x'], 'weight': 'w', 'bias': 'b' if bias else None}
        compare('linear over C %dx%dx%dx%d -> %d' % (n, i, h, w, o), [node], 'fc', x,
                {'w': wt, 'b': bs} if bias else {'w': wt}, ref)
    # mul: equal shapes (x * gelu(x)) and squeeze-and-excitation (x * hardsigmoid(avgpool(x)))
    x = rng.standard_normal((3, 6, 5, 7)).astype(np.float32)
    t = torch.from_numpy(x)
    compare('mul equal shapes', [{'name': 'g', 'op': 'gelu', 'inputs': ['x']},
                                 {'name': 'm', 'op': 'mul', 'inputs': ['x', 'g']}], 'm', x, {}, (t * F.gelu(t)).numpy())
    compare('mul broadcast (N, C, 1, 1)',
            [{'name': 'p', 'op': 'adaptive_avg_pool2d', 'inputs': ['x'], 'output_size': [1, 1]},
             {'name': 'hs', 'op': 'hardsigmoid', 'inputs': ['p']},
             {'name': 'm', 'op': 'mul', 'inputs': ['x', 'hs']}], 'm', x, {},
            (t * F.hardsigmoid(F.adaptive_avg_pool2d(t, 1))).numpy())
    # scale: torchvision's layer_scale (C, 1, 1) and a (C) weight with a bias, on the input itself
    x = rng.standard_normal((2, 7, 3, 5)).astype(np.float32)
    t = torch.from_numpy(x)
    ls = rng.standard_normal((7, 1, 1)).astype(np.float32)
    bs = rng.standard_normal(7).astype(np.float32)
    compare('scale (C, 1, 1)', [{'name': 's', 'op': 'scale', 'inputs': ['x'], 'weight': 'ls', 'bias': None}], 's', x,
            {'ls': ls}, (torch.from_numpy(ls) * t).numpy())
    compare('scale (C) with bias', [{'name': 's', 'op': 'scale', 'inputs': ['x'], 'weight': 'w', 'bias': 'b'}], 's', x,
            {'w': ls.reshape(7), 'b': bs}, (t * torch.from_numpy(ls) + torch.from_numpy(bs)[:, None, None]).numpy())
    # a batch norm on the input (no convolution to fold into): a scale with bias at load
    mean = rng.standard_normal(7).astype(np.float32)
    var = rng.random(7).astype(np.float32) + 0.1
    ref = F.batch_norm(t, torch.from_numpy(mean), torch.from_numpy(var), torch.from_numpy(ls.reshape(7)),
                       torch.from_numpy(bs), False, 0.0, 1e-5).numpy()
    compare('standalone batch_norm', [{'name': 'bn', 'op': 'batch_norm', 'inputs': ['x'], 'weight': 'w', 'bias': 'b',
                                       'running_mean': 'm', 'running_var': 'v', 'eps': 1e-5}], 'bn', x,
            {'w': ls.reshape(7), 'b': bs, 'm': mean, 'v': var}, ref)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--lib', required=True)
    args = ap.parse_args()
    os.environ['CIRRDATA_VK_VALIDATION'] = '1'
    reexec_under_asan(args.lib)
    os.environ['CIRRDATA_LIB'] = os.path.abspath(args.lib)
    sys.path.insert(0, os.path.join(REPO, 'python'))
    import numpy as np
    import torch
    torch.set_num_threads(2)
    rng = np.random.default_rng(20261207)
    with tempfile.TemporaryDirectory(prefix='cd-nets-') as tmp:
        for group in (lambda: op_cases(tmp, rng),):
            try:
                group()
            except Exception as e:  # a crash in one group is one failure, not the end of the run
                import traceback
                traceback.print_exc()
                check(False, 'group', repr(e))
    print('nets_cnn: %d passed, %d failed' % (PASSED, FAILED))
    return 1 if FAILED else 0


if __name__ == '__main__':
    sys.exit(main())
