#!/usr/bin/python3
"""tools/scripts/export_weights.py against PyTorch: tensors, metadata, the graph document and checkpoint forms.

  /usr/bin/python3 tests/python/test_export_weights.py [--lib BUILD/libcirrdata/libcirrdata.so]

Checks, for cirrnet-small and torchvision ResNet-18 (random weights and random batch-norm statistics
drawn here, saved as checkpoints, exported):
  (a) every tensor of the file equals the checkpoint's state_dict exactly (F32, same shape, C order),
      num_batches_tracked is not written, and the file is well formed (offsets back to back, header
      padded to 8 bytes) -- read with a reader written here from the safetensors spec;
  (b) every metadata key of schemas/model-graph.md is present with the right value;
  (c) the graph JSON obeys the document (fields per op, inputs earlier, unique names, limits, tensor
      shapes), checked by a validator written here from the doc, and running the graph with
      torch.nn.functional, op by op as the doc defines them, gives the model's eval() output
      (max |diff| <= 1e-5 of max |ref|: the same float32 kernels, only the summation order of the
      ops PyTorch fuses may differ);
  (d) a plain state_dict, {'state_dict': ...}, {'model_state_dict': ...} with DataParallel's
      'module.' prefix, {'model': nn.Module} and a whole pickled nn.Module all export the same file
      contents; --random is reproducible per --seed and equals build() after torch.manual_seed(seed);
  (e) an unknown --arch, a checkpoint of the wrong architecture or class count, a non-checkpoint
      file and a model with an op the format lacks fail with a clear message and a non-zero exit.
Ends with exactly one line `export_weights: N passed, M failed`.

The test loads no libcirrdata (the exporter is pure Python); --lib is accepted so the suite can pass it,
and with an ASan library the script re-executes itself as the other Python tests do.
"""
import contextlib
import importlib
import io
import json
import os
import shutil
import struct
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
EXPORTER = os.path.join(ROOT, 'tools', 'scripts', 'export_weights.py')
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, 'tools', 'scripts'))
import harness  # noqa: E402
from asan_reexec import reexec_under_asan  # noqa: E402
from harness import Checks  # noqa: E402

METADATA_KEYS = ('cirrdata.format', 'cirrdata.arch', 'cirrdata.classes', 'cirrdata.in_channels',
                 'cirrdata.input_size', 'cirrdata.graph')


def run(cmd):
    return harness.run_rc(cmd, timeout=300)


# ---------------------------------------------------------------- an independent reader (the spec)

def read_file(path):
    """(tensors: name -> (dtype, shape, bytes), metadata, problems) straight from the spec."""
    with open(path, 'rb') as f:
        data = f.read()
    problems = []
    (n,) = struct.unpack('<Q', data[:8])
    if n % 8:
        problems.append('header length %d is not a multiple of 8' % n)
    header = json.loads(data[8:8 + n].decode('utf-8'))
    meta = header.pop('__metadata__', {})
    buf = data[8 + n:]
    tensors = {}
    end = 0
    for name, info in header.items():  # written back to back in file order
        b, e = info['data_offsets']
        if b != end:
            problems.append('%s starts at %d, not %d' % (name, b, end))
        end = e
        tensors[name] = (info['dtype'], tuple(info['shape']), buf[b:e])
    if end != len(buf):
        problems.append('buffer has %d bytes, tensors end at %d' % (len(buf), end))
    return tensors, meta, problems


# ---------------------------------------------------------------- the graph document (schemas/model-graph.md)

OP_FIELDS = {
    'conv2d': {'weight', 'bias', 'stride', 'padding', 'dilation', 'groups'},
    'batch_norm': {'weight', 'bias', 'running_mean', 'running_var', 'eps'},
    'relu': set(), 'dropout': set(), 'add': set(),
    'gelu': set(), 'gelu_tanh': set(), 'silu': set(), 'hardswish': set(), 'hardsigmoid': set(),
    'max_pool2d': {'kernel', 'stride', 'padding', 'dilation', 'ceil_mode'},
    'avg_pool2d': {'kernel', 'stride', 'padding', 'ceil_mode', 'count_include_pad'},
    'adaptive_avg_pool2d': {'output_size'},
    'flatten': {'start_dim'},
    'linear': {'weight', 'bias'},
    'softmax': {'dim'},
}


def graph_problems(g, shapes):
    """Everything in g that breaks the document; empty when it is valid."""
    out = []
    if set(g) != {'version', 'input', 'output', 'nodes'} or g['version'] != 1:
        return ['top level: %s' % sorted(g)]
    if set(g['input']) != {'name', 'channels'}:
        out.append('input: %r' % g['input'])
    known = {g['input']['name']: None}
    if not 1 <= len(g['nodes']) <= 4096:
        out.append('%d nodes' % len(g['nodes']))
    for n in g['nodes']:
        nm, op = n.get('name'), n.get('op')
        if op not in OP_FIELDS:
            out.append('%s: op %r' % (nm, op))
            continue
        if set(n) != {'name', 'op', 'inputs'} | OP_FIELDS[op]:
            out.append('%s: fields %s' % (nm, sorted(n)))
            continue
        if not isinstance(nm, str) or not nm or len(nm.encode()) > 127 or nm in known:
            out.append('%s: bad or repeated name' % nm)
        if len(n['inputs']) != (2 if op == 'add' else 1) or any(i not in known for i in n['inputs']):
            out.append('%s: inputs %r' % (nm, n['inputs']))
        for k in ('kernel', 'stride', 'dilation'):
            if k in n and (len(n[k]) != 2 or not all(type(v) is int and 1 <= v <= 64 for v in n[k])):
                out.append('%s: %s %r' % (nm, k, n[k]))
        if 'padding' in n:
            if len(n['padding']) != 2 or not all(type(v) is int and 0 <= v <= 64 for v in n['padding']):
                out.append('%s: padding %r' % (nm, n['padding']))
            elif op.endswith('pool2d') and any(p * 2 > k for p, k in zip(n['padding'], n['kernel'])):
                out.append('%s: pool padding above half the kernel' % nm)
        for k in ('ceil_mode', 'count_include_pad'):
            if k in n and type(n[k]) is not bool:
                out.append('%s: %s not boolean' % (nm, k))
        if op == 'flatten' and n['start_dim'] != 1 or op == 'softmax' and n['dim'] != 1:
            out.append('%s: dim must be 1' % nm)
        if op == 'adaptive_avg_pool2d' and not all(type(v) is int and 1 <= v <= 64 for v in n['output_size']):
            out.append('%s: output_size %r' % (nm, n['output_size']))
        for k in ('weight', 'bias', 'running_mean', 'running_var'):
            if k in n and n[k] is not None and n[k] not in shapes:
                out.append('%s: %s %r is not in the file' % (nm, k, n[k]))
        try:
            if op == 'conv2d':
                o, cg, kh, kw = shapes[n['weight']]
                if type(n['groups']) is not int or n['groups'] < 1 or o % n['groups']:
                    out.append('%s: groups' % nm)
                if n['bias'] is not None and shapes[n['bias']] != (o,):
                    out.append('%s: bias shape' % nm)
            elif op == 'batch_norm':
                c = shapes[n['weight']]
                if len(c) != 1 or any(shapes[n[k]] != c for k in ('bias', 'running_mean', 'running_var')):
                    out.append('%s: batch-norm shapes' % nm)
                if not (type(n['eps']) is float and 0 < n['eps'] < 1):
                    out.append('%s: eps %r' % (nm, n['eps']))
            elif op == 'linear':
                o, i = shapes[n['weight']]
                if n['bias'] is not None and shapes[n['bias']] != (o,):
                    out.append('%s: bias shape' % nm)
        except (KeyError, ValueError) as e:
            out.append('%s: %r' % (nm, e))
        known[nm] = n
    if g['output'] not in known or g['output'] == g['input']['name']:
        out.append('output %r' % g['output'])
    return out


def run_graph(g, params, x, torch):
    """Evaluates the graph with torch.nn.functional, each op as the document defines it."""
    F = torch.nn.functional
    P = lambda k: None if k is None else params[k]  # noqa: E731
    vals = {g['input']['name']: x}
    for n in g['nodes']:
        a = [vals[i] for i in n['inputs']]
        op = n['op']
        if op == 'conv2d':
            y = F.conv2d(a[0], P(n['weight']), P(n['bias']), n['stride'], n['padding'], n['dilation'], n['groups'])
        elif op == 'batch_norm':
            y = F.batch_norm(a[0], P(n['running_mean']), P(n['running_var']), P(n['weight']), P(n['bias']),
                             training=False, eps=n['eps'])
        elif op == 'relu':
            y = F.relu(a[0])
        elif op == 'gelu':
            y = F.gelu(a[0])
        elif op == 'gelu_tanh':
            y = F.gelu(a[0], approximate='tanh')
        elif op in ('silu', 'hardswish', 'hardsigmoid'):
            y = getattr(F, op)(a[0])
        elif op == 'max_pool2d':
            y = F.max_pool2d(a[0], n['kernel'], n['stride'], n['padding'], n['dilation'], n['ceil_mode'])
        elif op == 'avg_pool2d':
            y = F.avg_pool2d(a[0], n['kernel'], n['stride'], n['padding'], n['ceil_mode'], n['count_include_pad'])
        elif op == 'adaptive_avg_pool2d':
            y = F.adaptive_avg_pool2d(a[0], n['output_size'])
        elif op == 'flatten':
            y = torch.flatten(a[0], 1)
        elif op == 'linear':
            y = F.linear(a[0], P(n['weight']), P(n['bias']))
        elif op == 'add':
            y = a[0] + a[1]
        elif op == 'dropout':
            y = a[0]
        elif op == 'softmax':
            y = torch.softmax(a[0], 1)
        vals[n['name']] = y
    return vals[g['output']]


# ---------------------------------------------------------------- checks

def randomise_bn(model, torch, seed):
    """Batch-norm statistics drawn here (not the exporter's --random-bn), so folding is exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.3)
                m.weight.copy_(torch.rand(c, generator=gen) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.1)
                m.num_batches_tracked.fill_(17)


def export(ew, args):
    """Runs the exporter in this process (torch is imported once); returns its exit status. What it
    printed on stderr is kept in LAST_STDERR."""
    global LAST_STDERR
    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf):
            return ew.main(args + ['--quiet'])
    except SystemExit as e:  # argparse usage errors
        return e.code
    finally:
        LAST_STDERR = buf.getvalue()


LAST_STDERR = ''


def check_export(c, path, model, arch, classes, torch, np, label, hw=64):
    """(a)-(c) for one exported file against the model it came from."""
    tensors, meta, problems = read_file(path)
    c.check(not problems, '%s: file layout' % label, problems)
    sd = {k: v for k, v in model.state_dict().items()}
    want = [k for k in sd if not k.endswith('num_batches_tracked')]
    c.check(list(tensors) == want, '%s: tensor names = state_dict order without num_batches_tracked' % label,
            (set(tensors) ^ set(want)) or 'order differs')
    bad = []
    for k in want:
        if k not in tensors:
            continue
        dt, shape, raw = tensors[k]
        ref = sd[k].detach().numpy()
        got = np.frombuffer(raw, dtype='<f4').reshape(shape) if dt == 'F32' else None
        if got is None or shape != ref.shape or not np.array_equal(got, ref):
            bad.append(k)
    c.check(not bad, '%s: every tensor equals the state_dict exactly' % label, bad[:5])

    missing = [k for k in METADATA_KEYS if k not in meta]
    c.check(not missing, '%s: metadata keys present' % label, missing)
    c.check(all(isinstance(v, str) for v in meta.values()), '%s: metadata values are strings' % label)
    c.check(meta.get('cirrdata.format') == '1' and meta.get('cirrdata.arch') == arch
            and meta.get('cirrdata.classes') == str(classes) and meta.get('cirrdata.in_channels') == '3'
            and meta.get('cirrdata.input_size') == '256,256', '%s: metadata values' % label,
            {k: v for k, v in meta.items() if k != 'cirrdata.graph'})
    c.check(meta.get('cirrdata.torch') == torch.__version__, '%s: cirrdata.torch' % label, meta.get('cirrdata.torch'))
    if classes == 3:
        c.check(meta.get('cirrdata.class_names') == 'mild,moderate,severe', '%s: class names' % label)
    try:
        g = json.loads(meta['cirrdata.graph'])
    except (KeyError, ValueError) as e:
        c.check(False, '%s: graph is JSON' % label, e)
        return tensors, meta
    shapes = {k: v[1] for k, v in tensors.items()}
    probs = graph_problems(g, shapes)
    c.check(not probs, '%s: graph valid per schemas/model-graph.md' % label, probs[:5])
    if probs:
        return tensors, meta
    used = {n[k] for n in g['nodes'] for k in ('weight', 'bias', 'running_mean', 'running_var') if n.get(k)}
    c.check(used == set(tensors), '%s: the graph uses every tensor' % label, set(tensors) ^ used)
    c.check(g['input']['channels'] == 3, '%s: input channels' % label)
    params = {k: torch.from_numpy(np.frombuffer(v[2], dtype='<f4').reshape(v[1]).copy()) for k, v in tensors.items()}
    x = torch.randn(2, 3, hw, hw, generator=torch.Generator().manual_seed(5))
    model.eval()
    with torch.no_grad():
        ref = model(x)
        got = run_graph(g, params, x, torch)
    err = float((got - ref).abs().max() / ref.abs().max())
    c.check(got.shape == ref.shape and err <= 1e-5, '%s: graph run with torch.nn.functional == model(x)' % label,
            'shape %s vs %s, rel err %.3g' % (tuple(got.shape), tuple(ref.shape), err))
    return tensors, meta


def checkpoint_forms(c, ew, models, work, torch, np):
    torch.manual_seed(11)
    model = models.build('cirrnet-small', 3)
    randomise_bn(model, torch, 12)
    model.eval()
    sd = model.state_dict()
    forms = {
        'plain': sd,
        'state_dict': {'state_dict': sd, 'epoch': 7, 'optimizer': {'lr': 0.1}},
        'module_prefix': {'model_state_dict': {'module.' + k: v for k, v in sd.items()}, 'epoch': 3},
        'model_module': {'model': model, 'epoch': 1},
        'whole_module': model,
    }
    outs = {}
    for name, obj in forms.items():
        ck = os.path.join(work, 'ck_%s.pt' % name)
        torch.save(obj, ck)
        out = os.path.join(work, 'ck_%s.safetensors' % name)
        rc = export(ew, ['--arch', 'cirrnet-small', ck, '-o', out])
        if c.check(rc == 0 and os.path.exists(out), 'checkpoint form %s exports' % name,
                   'exit %r: %s' % (rc, LAST_STDERR)):
            outs[name] = out
    if 'plain' not in outs:
        return
    tensors, meta = check_export(c, outs['plain'], model, 'cirrnet-small', 3, torch, np, 'cirrnet-small')
    c.check(meta.get('cirrdata.source') == 'ck_plain.pt', 'cirrdata.source names the checkpoint',
            meta.get('cirrdata.source'))
    for name, out in outs.items():
        t2, m2, _ = read_file(out)
        m2.pop('cirrdata.source', None)
        m1 = dict(meta)
        m1.pop('cirrdata.source', None)
        c.check(t2 == tensors and m2 == m1, 'checkpoint form %s exports identically to the plain state_dict' % name)

    # A checkpoint saved without num_batches_tracked (e.g. converted from another format) still loads.
    ck = os.path.join(work, 'ck_nobt.pt')
    torch.save({k: v for k, v in sd.items() if not k.endswith('num_batches_tracked')}, ck)
    out = os.path.join(work, 'ck_nobt.safetensors')
    c.check(export(ew, ['--arch', 'cirrnet-small', ck, '-o', out]) == 0 and read_file(out)[0] == tensors,
            'a state_dict without num_batches_tracked exports the same tensors')


def resnet18(c, ew, work, torch, torchvision, np):
    # A torchvision ResNet-18 with the staging head, built here from torchvision itself.
    torch.manual_seed(21)
    model = torchvision.models.resnet18(weights=None)
    model.fc = torch.nn.Linear(512, 3)
    randomise_bn(model, torch, 22)
    ck = os.path.join(work, 'r18.pt')
    torch.save({'state_dict': {'module.' + k: v for k, v in model.state_dict().items()}}, ck)
    out = os.path.join(work, 'r18.safetensors')
    rc, so, se = run([sys.executable, EXPORTER, '--arch', 'resnet18', ck, '-o', out])
    c.check(rc == 0 and so.startswith('exported resnet18: 11178051 params, 102 tensors, ') and out in so,
            'resnet18 CLI exports with a one-line summary', 'exit %d: %s %s' % (rc, so.strip(), se.strip()))
    if rc == 0:
        check_export(c, out, model, 'resnet18', 3, torch, np, 'resnet18')

    # --random --random-bn: reproducible per seed (checked on the small model), and for resnet18 equal
    # to torchvision's after torch.manual_seed(seed) for everything but batch norm, whose statistics are
    # no longer the defaults.
    blobs = []
    for i, seed in enumerate((4, 4, 5)):
        p = os.path.join(work, 'cs_random_%d.safetensors' % i)
        rc = export(ew, ['--arch', 'cirrnet-small', '--random', '--random-bn', '--seed', str(seed), '-o', p])
        c.check(rc == 0, 'cirrnet-small --random --random-bn --seed %d exports' % seed)
        with open(p, 'rb') as f:
            blobs.append(f.read())
    c.check(blobs[0] == blobs[1] and blobs[0] != blobs[2], '--random is reproducible per --seed and differs across seeds')
    p = os.path.join(work, 'r18_random.safetensors')
    c.check(export(ew, ['--arch', 'resnet18', '--random', '--random-bn', '--seed', '4', '-o', p]) == 0,
            'resnet18 --random --random-bn exports')
    tensors, meta, _ = read_file(p)
    torch.manual_seed(4)
    ref = torchvision.models.resnet18(weights=None)
    ref.fc = torch.nn.Linear(512, 3)
    ref_sd = ref.state_dict()
    non_bn = [k for k in tensors if 'bn' not in k and 'downsample.1' not in k]
    c.check(all(np.array_equal(np.frombuffer(tensors[k][2], '<f4').reshape(tensors[k][1]), ref_sd[k].numpy())
                for k in non_bn), '--random weights equal torchvision resnet18 after torch.manual_seed(seed)')
    rv = np.frombuffer(tensors['layer2.0.bn1.running_var'][2], '<f4')
    rm = np.frombuffer(tensors['layer2.0.bn1.running_mean'][2], '<f4')
    c.check(rv.std() > 0.05 and np.abs(rm).max() > 0 and rv.min() > 0, '--random-bn draws batch-norm statistics')
    # load the random file back into torchvision and check it end to end
    sd = {k: torch.from_numpy(np.frombuffer(v[2], '<f4').reshape(v[1]).copy()) for k, v in tensors.items()}
    missing, unexpected = ref.load_state_dict(sd, strict=False)
    c.check(not unexpected and all(k.endswith('num_batches_tracked') for k in missing),
            '--random file loads into torchvision resnet18', (missing, unexpected))
    check_export(c, p, ref, 'resnet18', 3, torch, np, 'resnet18 random')


def activations(c, ew, torch):
    # GELU (both forms), SiLU, Hardswish, Hardsigmoid as modules and as functions map to their ops
    nn, F = torch.nn, torch.nn.functional

    class Acts(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.mods = nn.Sequential(nn.GELU(), nn.GELU(approximate='tanh'), nn.SiLU(), nn.Hardswish(),
                                      nn.Hardsigmoid())

        def forward(self, x):
            x = self.mods(self.conv(x))
            x = F.gelu(x)
            x = F.gelu(x, approximate='tanh')
            return F.hardsigmoid(F.hardswish(F.silu(x)))
    model = Acts().eval()
    with torch.no_grad():
        model.conv.weight.mul_(8)  # spread the activations' inputs past +-3
    g, _ = ew.convert_graph(torch.fx.symbolic_trace(model), torch, 3)
    ops = [n['op'] for n in g['nodes']]
    want = ['conv2d', 'gelu', 'gelu_tanh', 'silu', 'hardswish', 'hardsigmoid', 'gelu', 'gelu_tanh', 'silu',
            'hardswish', 'hardsigmoid']
    c.check(ops == want, 'activation modules and functions map to their ops', ops)
    params = {k: v for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    names = {n.get('weight') for n in g['nodes']} | {n.get('bias') for n in g['nodes']}
    c.check({'conv.weight', 'conv.bias'} <= names, 'activations model: conv parameters named', names)
    with torch.no_grad():
        ref, got = model(x), run_graph(g, params, x, torch)
    c.check(torch.equal(ref, got), 'activations graph run with torch.nn.functional == model(x)',
            float((ref - got).abs().max()))


def errors(c, ew, models, work, torch):
    out = os.path.join(work, 'bad.safetensors')
    rc, so, se = run([sys.executable, EXPORTER, '--arch', 'resnet19', '--random', '-o', out])
    c.check(rc != 0 and "unknown --arch 'resnet19'" in se and 'resnet18' in se and not os.path.exists(out),
            'unknown --arch: clear error, non-zero exit', 'exit %d: %s' % (rc, se.strip()))
    c.check(export(ew, ['--arch', 'cirrnet-small', '-o', out]) == 2 and 'CHECKPOINT or --random' in LAST_STDERR,
            'neither checkpoint nor --random is a usage error', LAST_STDERR)
    torch.manual_seed(0)
    ck = os.path.join(work, 'cs4.pt')
    torch.save(models.build('cirrnet-small', 4).state_dict(), ck)
    rc = export(ew, ['--arch', 'cirrnet-small', ck, '-o', out])
    c.check(rc == 1 and not os.path.exists(out) and 'size mismatch for fc.weight' in LAST_STDERR,
            'a 4-class checkpoint with --classes 3 fails naming fc.weight', LAST_STDERR)
    rc = export(ew, ['--arch', 'resnet18', ck, '-o', out])
    c.check(rc == 1 and not os.path.exists(out) and 'does not fit the architecture' in LAST_STDERR,
            'a cirrnet-small checkpoint for --arch resnet18 fails', LAST_STDERR)
    rc = export(ew, ['--arch', 'cirrnet-small', '--classes', '4', ck, '-o', out])
    c.check(rc == 0 and json.loads(read_file(out)[1]['cirrdata.classes']) == 4, '--classes 4 exports the 4-class one')
    junk = os.path.join(work, 'junk.pt')
    with open(junk, 'wb') as f:
        f.write(b'not a checkpoint at all')
    rc = export(ew, ['--arch', 'cirrnet-small', junk, '-o', out + '2'])
    se = LAST_STDERR
    c.check(rc == 1 and 'junk.pt' in se and se.count('\n') == 1, 'a non-checkpoint file: one clear error',
            'exit %r: %s' % (rc, se.strip()[-300:]))
    # an op the format lacks (sigmoid) is named with its node
    ew_models = sys.modules['cirrdata.models']

    class WithSigmoid(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = models.build('cirrnet-small', 3)

        def forward(self, x):
            return torch.sigmoid(self.body(x))
    gm = torch.fx.symbolic_trace(WithSigmoid().eval())
    try:
        ew.convert_graph(gm, torch, 3)
        ok, msg = False, 'no error'
    except ew.ExportError as e:
        ok, msg = "node 'sigmoid'" in str(e) and 'sigmoid' in str(e), str(e)
    c.check(ok, 'an unsupported op is an error naming the node and the op', msg)
    c.check(ew_models is models, 'the exporter and the test share cirrdata.models')


def main():
    a = harness.parser(__doc__, cli=False, lib='optional').parse_args()
    if a.lib:
        reexec_under_asan(a.lib)
    c = Checks()
    work = a.workdir or tempfile.mkdtemp(prefix='cirrdata-export-')
    os.makedirs(work, exist_ok=True)
    try:
        import numpy as np
        import torch
        import torchvision
        torch.set_num_threads(2)
        ew = importlib.import_module('export_weights')
        models, _ = ew.import_cirrdata_modules()
        checkpoint_forms(c, ew, models, work, torch, np)
        resnet18(c, ew, work, torch, torchvision, np)
        errors(c, ew, models, work, torch)
        activations(c, ew, torch)
    except Exception as e:  # noqa: BLE001 - report, do not crash without the summary line
        c.crashed(e)
    finally:
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return c.summary('export_weights')


if __name__ == '__main__':
    sys.exit(main())
