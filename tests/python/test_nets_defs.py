#!/usr/bin/python3
"""PVTv2-b2 and MambaVision-T (python/cirrdata/pvt_v2.py, mambavision.py): names, sizes, checkpoint
loading, upstream quirks, and their emitted cirrdata.graph documents against the PyTorch forward.

  /usr/bin/python3 tests/python/test_nets_defs.py [--full]

Checks:
  (a) parity: the graph each network emits, run by tests/python/graph_interp.py (every op written from
      its definition with plain torch, independently of the network code), gives the network's eval()
      logits within 1e-5 of max |logit|, with random weights, random biases and random normalisation
      statistics/affines: PVTv2-b2 at 64x64 (batch 2); MambaVision-T's structure at 24 instead of 80
      channels (the same code at about a tenth of the cost) at 256x256 (the 16x16 -> 28x28 and 8x8 -> 14x14 padding, batch 2),
      224x224 (no padding), 64x64 (4x4 padded to one 14x14 window, 2x2 to 7x7), 96x80 with layer
      scale; narrow PVTv2 at 256x256 and 72x40. The full-width MambaVision-T graph's slices, heads and
      scan fields are checked node by node. --full adds the full-width MambaVision-T at 64x64 and
      256x256 and PVTv2-b2 at 256x256 (a minute or more of CPU);
  (b) the state_dict keys equal the names upstream's code gives (key counts per stage, every tensor of
      block 0 of each stage with its shape, written here from reading timm's pvt_v2.py and NVlabs'
      mamba_vision.py) and the parameter counts derived from those formulas: PVTv2-b2 25,362,856 and
      MambaVision-T 31,794,248 with a 1000-class head;
  (c) loading: a bare state_dict, {'state_dict'}, {'model'}, {'model_state_dict'} with 'module.', a
      wrapper's prefix (encoder., module.model.backbone.), an
      nn.Module and (PVTv2) the original PVT repository's names all give identical logits; a head of
      another class count and a missing tensor fail naming the tensor; export_weights.py exports an
      original-names checkpoint whose file graph reproduces the logits, and --random --random-bn
      mambavision_t;
  (d) the quirks kept from upstream: MambaVision's dt bias is added twice (equal to a hand-written mixer
      adding it twice, not once; no difference when the bias is 0), and padded tokens take part (a level
      equals windows cut from the zero-padded map, and differs from running the real tokens alone).
Ends with exactly one line `nets_defs: N passed, M failed`. Loads no libcirrdata.
"""
import contextlib
import copy
import importlib
import io
import json
import math
import os
import re
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, 'tools', 'scripts'))
from harness import Checks  # noqa: E402

TOL = 1e-5


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def randomise(model, seed, ew, torch):
    """Random normalisation statistics and affines (the exporter's --random-bn draw), random values for
    every other 1-D parameter (biases, D, layer scales, dt bias) and A_log, and weights of standard
    deviation 1/sqrt(fan-in), so every term is of the order of the others: with upstream's 0.02
    initialisation the scan's C.h term is lost beside D.u and a wrong dt bias would go unseen."""
    gen = torch.Generator().manual_seed(seed)
    ew.randomise_bn(model, torch, gen)
    norms = {id(p) for m in model.modules() if isinstance(m, (torch.nn.LayerNorm, torch.nn.BatchNorm2d))
             for p in m.parameters()}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if id(p) in norms:
                continue
            if p.dim() == 1 or name.endswith('A_log'):
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p[0].numel()))
    return model.eval()


# ---------------------------------------------------------------- (a) parity

def parity(c, pv, mv, gi, ew, torch, full, pvt3, mv3):
    torch.manual_seed(0)
    narrow_pvt = dict(embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4), depths=(1, 1, 2, 1))
    # MambaVision-T's depths and windows at 24 instead of 80 channels (head dim 24, dt ranks 6 and 12) run
    # the same code at about a tenth of the cost; the full width costs seconds per window on a busy CPU
    # (--full runs it)
    narrow_mv = dict(dim=24, in_dim=8, depths=(1, 2, 3, 4), num_heads=(1, 2, 4, 8))
    cases = [
        ('pvt_v2_b2 64x64 batch 2', lambda: pvt3, (2, 3, 64, 64)),
        ('narrow PVTv2 72x40', lambda: pv.PVTv2(3, **narrow_pvt), (1, 3, 72, 40)),
        ('narrow PVTv2 256x256', lambda: pv.PVTv2(3, **narrow_pvt), (1, 3, 256, 256)),
        ('narrow MambaVision 256x256 batch 2', lambda: mv.MambaVision(3, **narrow_mv), (2, 3, 256, 256)),
        ('narrow MambaVision 224x224', lambda: mv.MambaVision(3, **narrow_mv), (1, 3, 224, 224)),
        ('narrow MambaVision 64x64', lambda: mv.MambaVision(3, **narrow_mv), (1, 3, 64, 64)),
        ('narrow MambaVision 96x80 layer scale', lambda: mv.MambaVision(3, layer_scale=0.5, layer_scale_conv=0.7,
                                                                         **narrow_mv), (1, 3, 96, 80)),
    ]
    if full:
        cases += [('mambavision_t 64x64', lambda: mv3, (1, 3, 64, 64)),
                  ('pvt_v2_b2 256x256', lambda: pvt3, (1, 3, 256, 256)),
                  ('mambavision_t 256x256', lambda: mv3, (1, 3, 256, 256))]
    for i, (label, make, shape) in enumerate(cases):
        model = randomise(make(), 10 + i, ew, torch)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(i))
        graph, used = model.cirrdata_graph(3)
        sd = model.state_dict()
        ew.check_graph(graph, {k: tuple(v.shape) for k, v in sd.items()})
        c.check(used == {k for k in sd if not k.endswith('num_batches_tracked')}, label + ': graph uses every tensor',
                sorted(set(sd) - used)[:5])
        with torch.no_grad():
            ref = model(x)
            keep = {}
            out = gi.run(graph, sd, x, keep)
        r = rel(out, ref)
        c.check(out.shape == ref.shape and r <= TOL, label + ': graph == forward', 'relative %.3g' % r)
        if full:
            print('%s: relative difference %.3g' % (label, r))
        if 'narrow MambaVision 256' in label:
            # the padding really happens: the windows of levels 2 and 3 are 14x14 (4 of 28x28) and 7x7 (4 of 14x14)
            wp = [(n['name'], tuple(keep[n['name']].shape)) for n in graph['nodes'] if n['op'] == 'window_partition']
            c.check(wp == [('levels.2.window_partition', (8, 96, 14, 14)), ('levels.3.window_partition', (8, 192, 7, 7))],
                    label + ': windows of the padded maps', wp)
    ops = {}
    mv_nodes = mv3.cirrdata_graph(3)[0]['nodes']
    for n in mv_nodes:
        ops[n['op']] = ops.get(n['op'], 0) + 1
    want = {'selective_scan': 6, 'attention': 6, 'dwconv1d': 12, 'window_partition': 2, 'window_reverse': 2,
            'layer_norm': 24, 'gelu_tanh': 4, 'gelu': 12, 'batch_norm': 11}
    c.check(all(ops.get(k) == v for k, v in want.items()), 'mambavision_t graph op counts', ops)
    scan = next(n for n in mv_nodes if n['op'] == 'selective_scan')
    c.check(scan['delta_bias'] == 'levels.2.blocks.0.mixer.dt_proj.bias' and scan['delta_softplus'] is True
            and scan['A_log'] == 'levels.2.blocks.0.mixer.A_log' and scan['D'] == 'levels.2.blocks.0.mixer.D',
            'selective_scan node fields', scan)
    by = {n['name']: n for n in mv_nodes}
    p = 'levels.3.blocks.1.mixer.'
    sl = [(by[p + t]['inputs'], by[p + t]['start'], by[p + t]['length']) for t in ('x', 'z', 'dt', 'B', 'C')]
    c.check(sl == [([p + 'in_proj'], 0, 320), ([p + 'in_proj'], 320, 320), ([p + 'x_proj'], 0, 40),
                   ([p + 'x_proj'], 40, 8), ([p + 'x_proj'], 48, 8)], 'mambavision_t: x/z and dt/B/C slices', sl)
    p = 'levels.2.blocks.7.mixer.'
    att = by[p + 'attention']
    sl = [(by[p + t]['start'], by[p + t]['length']) for t in 'qkv']
    c.check(sl == [(0, 320), (320, 320), (640, 320)] and att['heads'] == 8
            and abs(att['scale'] - 40 ** -0.5) < 1e-12, 'mambavision_t: attention q/k/v, 8 heads of 40', (sl, att))
    p = 'levels.3.blocks.0.mixer.conv1d_'
    c.check(all(by[p + t]['padding'] == [1, 1] and by[p + t]['bias'] is None for t in 'xz'),
            "mambavision_t: conv1d 'same' padding, no bias", [by[p + t] for t in 'xz'])


# ---------------------------------------------------------------- (b) names and sizes

def pvt_expected(classes=1000):
    """(key -> shape) of timm's pvt_v2_b2, from timm/models/pvt_v2.py: OverlapPatchEmbed (proj, norm),
    stages.i (downsample for i > 0, blocks.j: norm1, attn.q, attn.kv, attn.proj, attn.sr + attn.norm
    where sr_ratio > 1, norm2, mlp.fc1, mlp.dwconv, mlp.fc2; norm), head."""
    dims, depths, srs, ratios = (64, 128, 320, 512), (3, 4, 6, 3), (8, 4, 2, 1), (8, 8, 4, 4)
    keys = {}

    def lin(p, i, o):
        keys[p + '.weight'] = (o, i)
        keys[p + '.bias'] = (o,)

    def ln(p, c):
        keys[p + '.weight'] = (c,)
        keys[p + '.bias'] = (c,)

    keys['patch_embed.proj.weight'] = (64, 3, 7, 7)
    keys['patch_embed.proj.bias'] = (64,)
    ln('patch_embed.norm', 64)
    for i, (c, d, sr, r) in enumerate(zip(dims, depths, srs, ratios)):
        s = 'stages.%d' % i
        if i:
            keys[s + '.downsample.proj.weight'] = (c, dims[i - 1], 3, 3)
            keys[s + '.downsample.proj.bias'] = (c,)
            ln(s + '.downsample.norm', c)
        for j in range(d):
            b = '%s.blocks.%d' % (s, j)
            ln(b + '.norm1', c)
            lin(b + '.attn.q', c, c)
            lin(b + '.attn.kv', c, 2 * c)
            lin(b + '.attn.proj', c, c)
            if sr > 1:
                keys[b + '.attn.sr.weight'] = (c, c, sr, sr)
                keys[b + '.attn.sr.bias'] = (c,)
                ln(b + '.attn.norm', c)
            ln(b + '.norm2', c)
            lin(b + '.mlp.fc1', c, c * r)
            keys[b + '.mlp.dwconv.weight'] = (c * r, 1, 3, 3)
            keys[b + '.mlp.dwconv.bias'] = (c * r,)
            lin(b + '.mlp.fc2', c * r, c)
        ln(s + '.norm', c)
    lin('head', 512, classes)
    return keys


def mv_expected(classes=1000):
    """(key -> shape) of NVlabs' mamba_vision_T, from mambavision/models/mamba_vision.py: PatchEmbed's
    conv_down Sequential (0 conv, 1 BN, 2 ReLU, 3 conv, 4 BN), levels 0-1 of ConvBlocks (conv1, norm1,
    conv2, norm2; no gamma as layer_scale_conv is None), levels 2-3 of Blocks (norm1, mixer, norm2,
    mlp.fc1/fc2; no gamma_1/gamma_2 as layer_scale is None) whose mixer is MambaVisionMixer (A_log, D,
    in_proj, x_proj, dt_proj, out_proj, conv1d_x, conv1d_z: parameters first, then submodules) for the
    first half and Attention (qkv, proj) for the second, downsample.reduction.0 on levels 0-2, the
    BatchNorm2d norm and the head."""
    keys = {}

    def bn(p, c):
        for t in ('weight', 'bias', 'running_mean', 'running_var'):
            keys[p + '.' + t] = (c,)
        keys[p + '.num_batches_tracked'] = ()

    def lin(p, i, o, bias=True):
        keys[p + '.weight'] = (o, i)
        if bias:
            keys[p + '.bias'] = (o,)

    def ln(p, c):
        keys[p + '.weight'] = (c,)
        keys[p + '.bias'] = (c,)

    keys['patch_embed.conv_down.0.weight'] = (32, 3, 3, 3)
    bn('patch_embed.conv_down.1', 32)
    keys['patch_embed.conv_down.3.weight'] = (80, 32, 3, 3)
    bn('patch_embed.conv_down.4', 80)
    for i, depth in enumerate((1, 3, 8, 4)):
        c = 80 * 2 ** i
        lv = 'levels.%d' % i
        first_attention = depth // 2 + 1 if depth % 2 else depth // 2
        for j in range(depth):
            b = '%s.blocks.%d' % (lv, j)
            if i < 2:
                keys[b + '.conv1.weight'] = (c, c, 3, 3)
                keys[b + '.conv1.bias'] = (c,)
                bn(b + '.norm1', c)
                keys[b + '.conv2.weight'] = (c, c, 3, 3)
                keys[b + '.conv2.bias'] = (c,)
                bn(b + '.norm2', c)
                continue
            ln(b + '.norm1', c)
            m = b + '.mixer'
            if j < first_attention:
                d, r = c // 2, math.ceil(c / 16)
                keys[m + '.A_log'] = (d, 8)
                keys[m + '.D'] = (d,)
                lin(m + '.in_proj', c, c, bias=False)
                lin(m + '.x_proj', d, r + 16, bias=False)
                lin(m + '.dt_proj', r, d)
                lin(m + '.out_proj', c, c, bias=False)
                keys[m + '.conv1d_x.weight'] = (d, 1, 3)
                keys[m + '.conv1d_z.weight'] = (d, 1, 3)
            else:
                lin(m + '.qkv', c, 3 * c)
                lin(m + '.proj', c, c)
            ln(b + '.norm2', c)
            lin(b + '.mlp.fc1', c, 4 * c)
            lin(b + '.mlp.fc2', 4 * c, c)
        if i < 3:
            keys[lv + '.downsample.reduction.0.weight'] = (2 * c, c, 3, 3)
    bn('norm', 640)
    lin('head', 640, classes)
    return keys


def pvt_param_count(classes):
    """Learnable parameters of pvt_v2_b2, term by term from the module definitions."""
    n = 3 * 64 * 49 + 64 + 2 * 64
    prev = 64
    for c, d, sr, r in zip((64, 128, 320, 512), (3, 4, 6, 3), (8, 4, 2, 1), (8, 8, 4, 4)):
        if c != 64:
            n += prev * c * 9 + c + 2 * c
        h = c * r
        block = 2 * c + (c * c + c) + (2 * c * c + 2 * c) + (c * c + c) + 2 * c + (c * h + h) + (9 * h + h) + (h * c + c)
        if sr > 1:
            block += c * c * sr * sr + c + 2 * c
        n += d * block + 2 * c
        prev = c
    return n + 512 * classes + classes


def mv_param_count(classes):
    """Learnable parameters of mamba_vision_T (BatchNorm running statistics are buffers, not counted)."""
    n = 3 * 32 * 9 + 2 * 32 + 32 * 80 * 9 + 2 * 80
    for i, depth in enumerate((1, 3, 8, 4)):
        c = 80 * 2 ** i
        if i < 2:
            n += depth * (2 * (c * c * 9 + c) + 2 * 2 * c)
        else:
            d, r = c // 2, math.ceil(c / 16)
            mlp = 2 * c + (c * 4 * c + 4 * c) + (4 * c * c + c)
            mamba = 2 * c + c * c + d * (r + 16) + (r * d + d) + d * 8 + d + c * c + 2 * d * 3 + mlp
            attn = 2 * c + (c * 3 * c + 3 * c) + (c * c + c) + mlp
            first_attention = depth // 2
            n += first_attention * mamba + (depth - first_attention) * attn
        if i < 3:
            n += c * 2 * c * 9
    return n + 2 * 640 + 640 * classes + classes


def names_and_sizes(c, models, torch, pvt3, mv3):
    for label, model, want, count, literal in (
            ('pvt_v2_b2', pvt3, pvt_expected(), pvt_param_count(1000), 25362856),
            ('mambavision_t', mv3, mv_expected(), mv_param_count(1000), 31794248)):
        head = model.head  # the 3-class network with upstream's 1000-class head (built once: CPU time)
        model.head = torch.nn.Linear(head.in_features, 1000)
        got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        c.check(list(got) == list(want), label + ': state_dict keys (and order) as upstream',
                'missing %s, extra %s' % (sorted(set(want) - set(got))[:6], sorted(set(got) - set(want))[:6]))
        bad = [(k, got[k], want[k]) for k in want if k in got and got[k] != want[k]]
        c.check(not bad, label + ': tensor shapes as upstream', bad[:4])
        params = sum(p.numel() for p in model.parameters())
        model.head = head
        c.check(params == count == literal, label + ': parameter count', '%d (derived %d)' % (params, count))
    # per-stage key counts, read off upstream: PVT blocks carry 20 tensors with sr (stages 0-2), 16 without;
    # MambaVision ConvBlocks 14 (BN buffers included), Mamba blocks 17, attention blocks 12
    sd = pvt3.state_dict()
    per = [sum(1 for k in sd if k.startswith('stages.%d.blocks.' % i)) for i in range(4)]
    c.check(per == [3 * 20, 4 * 20, 6 * 20, 3 * 16], 'pvt_v2_b2 block tensors per stage', per)
    sd = mv3.state_dict()
    per = [sum(1 for k in sd if k.startswith('levels.%d.blocks.' % i)) for i in range(4)]
    c.check(per == [14, 3 * 14, 4 * 17 + 4 * 12, 2 * 17 + 2 * 12], 'mambavision_t block tensors per level', per)
    c.check('pvt_v2_b2' in models.ARCHS and 'mambavision_t' in models.ARCHS
            and 'pvt_v2_b2' in models.__doc__, 'models.ARCHS lists both (export_weights builds them below)')


def constants(c, pvt3, mv3):
    """eps, GELU kind and attention scale of every node, as upstream sets them (too small a difference for
    the parity check to see reliably)."""
    bad = []
    for n in pvt3.cirrdata_graph(3)[0]['nodes']:
        name, op = n['name'], n['op']
        if op == 'layer_norm':
            small = re.search(r'(blocks\.\d+\.norm[12]|^stages\.\d\.norm)$', name) is not None  # timm LayerNorm
            if n['eps'] != (1e-6 if small else 1e-5) or not re.search(r'norm[12]?$', name):
                bad.append((name, n['eps']))
        elif op in ('gelu', 'gelu_tanh', 'silu', 'relu'):
            if op != 'gelu' or not name.endswith('.mlp.act'):
                bad.append((name, op))
        elif op == 'attention' and n['scale'] != 0.125:
            bad.append((name, n['heads'], n['scale']))  # head dim 64 in every stage of b2 (64/1 ... 512/8)
    count = sum(1 for n in pvt3.cirrdata_graph(3)[0]['nodes'] if n['op'] == 'layer_norm')
    c.check(not bad and count == 1 + 3 + 16 * 2 + 4 + 13, 'pvt_v2_b2: LayerNorm eps 1e-6 in blocks and stage norms, '
            '1e-5 in embeddings and sr; exact GELU; scale 1/8', (bad[:5], count))
    bad = []
    for n in mv3.cirrdata_graph(3)[0]['nodes']:
        name, op = n['name'], n['op']
        if op == 'batch_norm' and n['eps'] != (1e-4 if name.startswith('patch_embed') else 1e-5):
            bad.append((name, n['eps']))
        if op == 'layer_norm' and n['eps'] != 1e-5:
            bad.append((name, n['eps']))
        if op in ('gelu', 'gelu_tanh') and (op == 'gelu_tanh') != name.startswith(('levels.0.', 'levels.1.')):
            bad.append((name, op))
    c.check(not bad, 'mambavision_t: BN eps 1e-4 in the stem, 1e-5 elsewhere; LayerNorm 1e-5; tanh GELU in conv '
            'blocks only', bad[:5])


# ---------------------------------------------------------------- (c) loading

def to_original_pvt(sd):
    """timm names -> the original PVT repository's (classification/pvt_v2.py: patch_embed1..4, block1..4,
    norm1..4, mlp.dwconv.dwconv), written here independently of pvt_v2.remap_original_names."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r'^patch_embed\.', 'patch_embed1.', k)
        k = re.sub(r'^stages\.(\d)\.downsample\.', lambda m: 'patch_embed%d.' % (int(m.group(1)) + 1), k)
        k = re.sub(r'^stages\.(\d)\.blocks\.(\d+)\.', lambda m: 'block%d.%s.' % (int(m.group(1)) + 1, m.group(2)), k)
        k = re.sub(r'^stages\.(\d)\.norm\.', lambda m: 'norm%d.' % (int(m.group(1)) + 1), k)
        out[k.replace('.mlp.dwconv.', '.mlp.dwconv.dwconv.')] = v
    return out


def loading(c, ck, gi, ew, stio, work, torch, pvt3, mv3):
    """PVTv2: identical logits for every form. MambaVision: identical tensors for every form (a full-width
    forward costs seconds; equal tensors give equal logits, as the PVTv2 forms show)."""
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    for label, src in (('pvt_v2_b2', pvt3), ('mambavision_t', mv3)):
        src = randomise(src, 3, ew, torch)
        with torch.no_grad():
            ref = src(x) if label == 'pvt_v2_b2' else None
        sd = {k: v.clone() for k, v in src.state_dict().items()}
        forms = [('bare', sd), ("{'state_dict'}", {'state_dict': sd, 'epoch': 3}), ("{'model'}", {'model': sd}),
                 ("{'model_state_dict'} + module.", {'model_state_dict': {'module.' + k: v for k, v in sd.items()}}),
                 ("a wrapper's encoder. prefix", {'model': {'encoder.' + k: v for k, v in sd.items()}}),
                 ("nested wrappers' module.model.backbone.",
                  {'module.model.backbone.' + k: v for k, v in sd.items()}),
                 ('nn.Module', src), ('without num_batches_tracked',
                                      {k: v for k, v in sd.items() if not k.endswith('num_batches_tracked')})]
        if label == 'pvt_v2_b2':
            orig = to_original_pvt(sd)
            names = ('patch_embed1.proj.weight', 'patch_embed4.norm.bias', 'block1.0.attn.sr.weight',
                     'block3.5.mlp.dwconv.dwconv.bias', 'block4.2.attn.kv.weight', 'norm4.weight', 'head.bias')
            c.check(all(k in orig for k in names), 'the original PVT names are spelt as upstream',
                    [k for k in names if k not in orig])
            forms += [('original PVT names', orig), ('original names + module.',
                                                      {'state_dict': {'module.' + k: v for k, v in orig.items()}}),
                      ('original names + backbone.', {'backbone.' + k: v for k, v in orig.items()})]
        dst = copy.deepcopy(src)
        for form, obj in forms:
            with torch.no_grad():
                for p in dst.parameters():
                    p.zero_()
            try:
                ck.load_checkpoint(dst, obj)
                got = dst.state_dict()
                ok = all(torch.equal(got[k], v) for k, v in sd.items() if not k.endswith('num_batches_tracked'))
                if ref is not None:
                    with torch.no_grad():
                        ok = ok and torch.equal(dst(x), ref)
                c.check(ok, '%s: %s loads to identical %s' % (label, form, 'logits' if ref is not None else 'tensors'))
            except Exception as e:  # noqa: BLE001
                c.check(False, '%s: %s loads' % (label, form), repr(e))
        wrong = dict(sd)
        wrong['head.weight'] = torch.zeros(1000, wrong['head.weight'].shape[1])
        wrong['head.bias'] = torch.zeros(1000)
        expect_error(c, label + ': a 1000-class head', lambda: ck.load_checkpoint(dst, wrong), ('head.weight', '1000'))
        drop = 'stages.2.blocks.1.attn.kv.weight' if label == 'pvt_v2_b2' else 'levels.2.blocks.1.mixer.A_log'
        missing = {k: v for k, v in sd.items() if k != drop}
        expect_error(c, label + ': a missing tensor', lambda: ck.load_checkpoint(dst, missing), (drop, 'missing'))
        extra = dict(sd, **{'levels.9.extra': torch.zeros(1)})
        expect_error(c, label + ': an unexpected tensor', lambda: ck.load_checkpoint(dst, extra), ('levels.9.extra',))

        if label == 'pvt_v2_b2':  # the exporter on the paper's kind of checkpoint: original names, wrapped
            path = os.path.join(work, 'pvt_orig.pth')
            torch.save({'state_dict': {'module.' + k: v for k, v in to_original_pvt(sd).items()}}, path)
            out = os.path.join(work, 'pvt.safetensors')
            rc, err = run_exporter(ew, ['--arch', 'pvt_v2_b2', path, '-o', out, '--quiet'])
            c.check(rc == 0, 'export_weights: original-names PVT checkpoint', err)
            if rc == 0:
                arrays, meta = stio.read(out)
                tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
                same = set(tensors) == set(sd) and all(torch.equal(tensors[k], sd[k]) for k in sd)
                c.check(same, 'export_weights: tensors under timm names, equal')
                with torch.no_grad():
                    got = gi.run(json.loads(meta['cirrdata.graph']), tensors, x)
                c.check(rel(got, ref) <= TOL, "export_weights: the file's graph gives the logits", rel(got, ref))
    out = os.path.join(work, 'mv.safetensors')
    rc, err = run_exporter(ew, ['--arch', 'mambavision_t', '--random', '--random-bn', '--seed', '2', '-o', out, '--quiet'])
    c.check(rc == 0, 'export_weights --random --random-bn mambavision_t', err)
    if rc == 0:
        arrays, meta = stio.read(out)
        graph = json.loads(meta['cirrdata.graph'])
        c.check(meta['cirrdata.arch'] == 'mambavision_t' and meta['cirrdata.classes'] == '3'
                and graph['output'] == 'head' and len(arrays) == 241
                and float(abs(arrays['levels.3.blocks.1.norm1.weight'] - 1).max()) > 0.01
                and float(abs(arrays['norm.running_var'] - 1).max()) > 0.01,
                'export_weights mambavision_t: metadata, tensors, random norms', (len(arrays), graph['output']))


def expect_error(c, label, fn, words):
    try:
        fn()
        c.check(False, label + ' is refused', 'it loaded')
    except ValueError as e:
        c.check(all(w in str(e) for w in words), label + ': the error names it', str(e))


def run_exporter(ew, argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = ew.main(argv)
        except SystemExit as e:
            rc = e.code
    return rc, err.getvalue()


# ---------------------------------------------------------------- (d) the upstream quirks

def dt_bias_twice(c, mv, torch, F):
    """MambaVisionMixer against a mixer written out here with the dt bias added `times` times."""
    torch.manual_seed(7)
    m = mv.MambaVisionMixer(32).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape) * 0.3)
        m.A_log.copy_(torch.rand(m.A_log.shape) * 2 - 1)
    h = torch.randn(2, 10, 32)

    def by_hand(times):
        d, L, r = 16, h.shape[1], m.dt_rank
        xz = h @ m.in_proj.weight.t()

        def conv_same(s, w):  # depthwise, kernel 3, zero padding 1 each side
            p = torch.cat([torch.zeros_like(s[:, :1]), s, torch.zeros_like(s[:, :1])], dim=1)
            return sum(p[:, j:j + L] * w[:, 0, j] for j in range(3))

        x = F.silu(conv_same(xz[..., :d], m.conv1d_x.weight))
        z = F.silu(conv_same(xz[..., d:], m.conv1d_z.weight))
        dbc = x @ m.x_proj.weight.t()
        dt, Bm, Cm = dbc[..., :r], dbc[..., r:r + 8], dbc[..., r + 8:]
        delta = F.softplus(dt @ m.dt_proj.weight.t() + times * m.dt_proj.bias)
        A = -torch.exp(m.A_log)
        state = torch.zeros(h.shape[0], d, 8)
        ys = []
        for t in range(L):
            state = torch.exp(delta[:, t, :, None] * A) * state + delta[:, t, :, None] * Bm[:, t, None, :] * x[:, t, :, None]
            ys.append((state * Cm[:, t, None, :]).sum(-1) + m.D * x[:, t])
        return torch.cat([torch.stack(ys, 1), z], -1) @ m.out_proj.weight.t()

    with torch.no_grad():
        got, twice, once = m(h), by_hand(2), by_hand(1)
        c.check(rel(got, twice) <= TOL, 'dt bias: the mixer adds it twice', rel(got, twice))
        c.check(rel(got, once) > 1e-2, 'dt bias: not once', rel(got, once))
        m.dt_proj.bias.zero_()
        got, once = m(h), by_hand(1)
        c.check(rel(got, once) <= TOL, 'dt bias 0: once and twice agree', rel(got, once))


def padded_tokens(c, mv, ew, torch, F):
    """A windowed level (window 14) on a 16x16 map: upstream pads to 28x28 and the zero tokens take part."""
    torch.manual_seed(8)
    level = randomise(mv.MambaVisionLayer(32, 2, 2, 14, conv=False, downsample=False, mlp_ratio=4), 9, ew, torch)

    def windows_alone(x):  # each window's tokens (cut at the map's edge) run through the blocks by themselves
        out = torch.empty_like(x)
        for i in range(0, x.shape[2], 14):
            for j in range(0, x.shape[3], 14):
                win = x[:, :, i:i + 14, j:j + 14]
                hh, ww = win.shape[2:]
                t = win.flatten(2).transpose(1, 2)
                for blk in level.blocks:
                    t = blk(t)
                out[:, :, i:i + hh, j:j + ww] = t.transpose(1, 2).reshape(x.shape[0], -1, hh, ww)
        return out

    with torch.no_grad():
        x14 = torch.randn(1, 32, 14, 14)
        c.check(rel(level(x14), windows_alone(x14)) <= TOL, 'padding: a 14x14 map (no padding) is one window')
        x = torch.randn(1, 32, 16, 16)
        got = level(x)
        padded = windows_alone(F.pad(x, (0, 12, 0, 12)))[:, :, :16, :16]
        c.check(rel(got, padded) <= TOL, 'padding: zeros right and bottom to 28x28, then cropped', rel(got, padded))
        alone = windows_alone(x)
        c.check(rel(got, alone) > 1e-2, 'padding: padded tokens take part (cropping first differs)', rel(got, alone))
        top_left = windows_alone(F.pad(x, (12, 0, 12, 0)))[:, :, 12:, 12:]
        c.check(rel(got, top_left) > 1e-2, 'padding: not left/top', rel(got, top_left))


def main():
    full = '--full' in sys.argv[1:]
    c = Checks()
    work = tempfile.mkdtemp(prefix='cirrdata-nets-')
    try:
        import torch
        import torch.nn.functional as F
        torch.set_num_threads(1)  # the suite runs tests side by side: threads would only contend
        ew = importlib.import_module('export_weights')
        models, stio = ew.import_cirrdata_modules()
        pv = importlib.import_module('cirrdata.pvt_v2')
        mv = importlib.import_module('cirrdata.mambavision')
        ck = importlib.import_module('cirrdata.checkpoint')
        gi = importlib.import_module('graph_interp')
        pvt3, mv3 = pv.pvt_v2_b2(3), mv.mambavision_t(3)  # shared: building costs seconds of CPU
        names_and_sizes(c, models, torch, pvt3, mv3)
        constants(c, pvt3, mv3)
        dt_bias_twice(c, mv, torch, F)
        padded_tokens(c, mv, ew, torch, F)
        parity(c, pv, mv, gi, ew, torch, full, pvt3, mv3)
        loading(c, ck, gi, ew, stio, work, torch, pvt3, mv3)
    except Exception as e:  # noqa: BLE001 - report, do not crash without the summary line
        c.crashed(e)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return c.summary('nets_defs')


if __name__ == '__main__':
    sys.exit(main())
