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

Networks: torchvision's mobilenet_v3_small and convnext_base with a 3-way head
(cirrdata.models.build), exported by tools/scripts/export_weights.py --random --random-bn (random
weights AND random normalisation parameters: batch-norm statistics and affine, LayerNorm affine,
layer scales in [0.1, 0.5] instead of ConvNeXt's 1e-6, which would hide every block), run by
cirrdata.Model and compared with torchvision's forward on the same tensors: max|ours - torch| <=
1e-4 * max|torch| in float32 (measured ~1e-6 on the C executor, ~1e-5 on lavapipe), on the C
executor and on Vulkan (lavapipe, validation layer on, every run on the device). float16 storage
(fp16=True) within FP16_TOL = 1e-2: every stored weight and activation is rounded to binary16 (2^-11
relative each); MobileNetV3-Small stores ~50 tensors between input and logits and ConvNeXt ~6 per
block, but independent roundings add like sqrt(count) and each layer norm re-normalises, so the
logits move by ~1e-3 (measured: 0.4e-3 to 0.7e-3 for MobileNetV3, 0.7e-3 for the small ConvNeXt,
1.1e-3 to 4.1e-3 for ConvNeXt-Base at 64x64, two seeds),
while a wrong op, stride or layout gives O(1). 1e-2 is the margin model_torch uses for ResNet-18.
The default suite keeps to seconds: MobileNetV3-Small at 2x3x256x256 and 1x3x97x131 (C and Vulkan,
fp16 once); ConvNeXt as torchvision's own ConvNeXt class at reduced widths and depths (the same CNBlock,
LayerNorm2d, Permute, layer scale and StochasticDepth code, converted by the exporter's convert_graph)
on C and Vulkan. ConvNeXt-Base itself (88M parameters: an 11 s export and a 350 MB file, 20 GFLOP per
256x256 image, seconds per pass on lavapipe even at 64x64, where its GEMMs use a fraction of each
64-wide tile, and ~10 s for torch's own 256x256 pass) runs with
CIRRDATA_SLOW_TESTS=1: C at 1x3x256x256 and 1x3x64x64, Vulkan fp32 and fp16 at 1x3x64x64. The
sanitizer build does not register this test (tests/meson.build): its C code runs there in nn_graph
and nn_vk_norm. Run by hand against an ASan library, only the small ConvNeXt runs, on C.
Ends with one line `nets_cnn: N passed, M failed`.
"""
import json
import os
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from asan_reexec import env_without_asan  # noqa: E402
import nets_common  # noqa: E402
from nets_common import check, compare_net, rel_err, vulkan_device  # noqa: E402

OP_TOL = 1e-5


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


# ---------------------------------------------------------------- networks

def export_cli(arch, path, seed):
    cmd = [sys.executable, os.path.join(REPO, 'tools', 'scripts', 'export_weights.py'), '--arch', arch, '--random',
           '--random-bn', '--seed', str(seed), '-o', path, '--quiet']
    # pure Python: without the ASan runtime (see test_model_torch.py)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env_without_asan())
    if r.returncode != 0:
        raise RuntimeError('export failed: %s\n%s%s' % (' '.join(cmd), r.stdout, r.stderr))


def torch_net(arch, path):
    import torch
    from cirrdata import models, safetensors_io
    tensors, meta = safetensors_io.read(path)
    net = models.build(arch, int(meta['cirrdata.classes']))
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in tensors.items()}, strict=False)
    return net.eval()


def small_convnext(path, seed):
    """torchvision's ConvNeXt class at widths 16/32/48/64, depths 1/2/1/1 with a 3-way head, with
    random weights and normalisation parameters (the exporter's randomise_bn), converted by the
    exporter's convert_graph and written as export() does. Returns the torch module."""
    import torch
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt
    from cirrdata import safetensors_io
    sys.path.insert(0, os.path.join(REPO, 'tools', 'scripts'))
    import export_weights as ew
    torch.manual_seed(seed)
    net = ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, 48, 2), CNBlockConfig(48, 64, 1),
                    CNBlockConfig(64, None, 1)], stochastic_depth_prob=0.1, num_classes=3)
    ew.randomise_bn(net, torch, torch.Generator().manual_seed(seed + 1))
    net.eval()
    gm = torch.fx.symbolic_trace(net)
    graph, used = ew.convert_graph(gm, torch, 3)
    sd = {k: v for k, v in net.state_dict().items()}
    ew.check_graph(graph, {k: tuple(v.shape) for k, v in sd.items()})
    assert set(used) == set(sd), 'unused tensors: %s' % (set(sd) - set(used))
    meta = {'cirrdata.format': '1', 'cirrdata.arch': 'convnext-small-test', 'cirrdata.classes': '3',
            'cirrdata.in_channels': '3', 'cirrdata.graph': json.dumps(graph)}
    safetensors_io.write(path, {k: v.detach().float().contiguous().numpy() for k, v in sd.items()}, meta)
    ops = sorted({n['op'] for n in graph['nodes']})
    check({'layer_norm', 'linear', 'scale', 'gelu', 'conv2d', 'add'} <= set(ops),
          'small ConvNeXt exports to layer_norm/linear/scale nodes', ops)
    return net


def export_refusals():
    """Channels-last code the graph cannot express is refused by the exporter naming the fx node."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    sys.path.insert(0, os.path.join(REPO, 'tools', 'scripts'))
    import export_weights as ew

    class LnOverW(nn.Module):  # LayerNorm on NCHW normalises over W, not C
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.norm = nn.LayerNorm(8)

        def forward(self, x):
            return self.norm(self.conv(x))

    class OddPermute(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return self.conv(x).permute(0, 1, 3, 2)

    class ParamAdd(nn.Module):  # a parameter as an add operand
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.shift = nn.Parameter(torch.zeros(4, 1, 1))

        def forward(self, x):
            return self.conv(x) + self.shift

    class ConvOnNhwc(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return self.conv(x.permute(0, 2, 3, 1))

    class NhwcOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 4)

        def forward(self, x):
            return F.gelu(self.fc(x.permute(0, 2, 3, 1)))

    for cls, needles in ((LnOverW, ("'norm'", 'NCHW')), (OddPermute, ("'permute'", 'permute(0, 1, 3, 2)')),
                         (ParamAdd, ("'add'", "'shift'")), (ConvOnNhwc, ("'conv'", 'NHWC')),
                         (NhwcOut, ('NHWC',))):
        try:
            ew.convert_graph(torch.fx.symbolic_trace(cls().eval()), torch, 3)
            msg = None
        except ew.ExportError as e:
            msg = str(e)
        check(msg is not None and all(n in msg for n in needles), 'exporter refuses %s naming the node' % cls.__name__,
              msg)


def networks(tmp, rng, asan, slow):
    vk = None
    if not asan:
        path = os.path.join(tmp, 'mobilenet_v3_small.safetensors')
        export_cli('mobilenet_v3_small', path, 21)
        net = torch_net('mobilenet_v3_small', path)
        big = [(2, 256, 256), (1, 97, 131)]
        compare_net(path, net, 'mobilenet_v3_small cpu', big, rng, 'cpu')
        vk = vulkan_device(path)
    if vk:
        compare_net(path, net, 'mobilenet_v3_small vulkan', big, rng, 'vulkan')
        compare_net(path, net, 'mobilenet_v3_small vulkan fp16', [(2, 256, 256)], rng, 'vulkan', fp16=True)
    spath = os.path.join(tmp, 'convnext-small.safetensors')
    snet = small_convnext(spath, 22)
    compare_net(spath, snet, 'small ConvNeXt cpu', [(2, 96, 80), (1, 33, 47)], rng, 'cpu')
    if vk:
        compare_net(spath, snet, 'small ConvNeXt vulkan', [(2, 96, 80), (1, 33, 47)], rng, 'vulkan')
        compare_net(spath, snet, 'small ConvNeXt vulkan fp16', [(2, 96, 80)], rng, 'vulkan', fp16=True)
    if slow:
        path = os.path.join(tmp, 'convnext_base.safetensors')
        export_cli('convnext_base', path, 23)
        net = torch_net('convnext_base', path)
        compare_net(path, net, 'convnext_base cpu', [(1, 256, 256), (1, 64, 64)], rng, 'cpu')
        if vk:
            compare_net(path, net, 'convnext_base vulkan', [(1, 64, 64)], rng, 'vulkan')
            compare_net(path, net, 'convnext_base vulkan fp16', [(1, 64, 64)], rng, 'vulkan', fp16=True)


def main():
    rng, slow = nets_common.start()
    asan = bool(os.environ.get('CIRRDATA_ASAN_REEXEC'))
    with tempfile.TemporaryDirectory(prefix='cd-nets-') as tmp:
        for group in (lambda: op_cases(tmp, rng), export_refusals, lambda: networks(tmp, rng, asan, slow)):
            try:
                group()
            except Exception as e:  # a crash in one group is one failure, not the end of the run
                import traceback
                traceback.print_exc()
                check(False, 'group', repr(e))
    return nets_common.CHECKS.summary('nets_cnn')


if __name__ == '__main__':
    sys.exit(main())
