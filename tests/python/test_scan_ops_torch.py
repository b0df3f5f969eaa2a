#!/usr/bin/python3
"""MambaVision's graph ops on the C executor (cirrdata.Model, device='cpu') against PyTorch.

  /usr/bin/python3 tests/python/test_scan_ops_torch.py --lib build/libcirrdata/libcirrdata.so

Each case writes a safetensors model with a hand-written cirrdata.graph (schemas/model-graph.md) and
compares the logits (the last node flattened) with a formulation written here in torch 1.13:
- softplus against F.softplus (beta, threshold; inputs straddling the threshold, a negative one)
- dwconv1d against F.conv1d(groups=C) on the flattened tokens after F.pad([left, right]) (K = 1, 3
  with 'same' [1, 1], 4 with PyTorch's 'same' [1, 2], 5 with [3, 1]; bias or not)
- selective_scan against mamba_ssm's selective_scan_ref formula (delta + delta_bias, softplus, the
  exp(delta A) / delta B u recurrence, y = C h + D u): S = 8 states, D = 80 at L = 196 (14x14) and
  D = 160 at L = 49 (7x7), batch 2 and 3; delta_softplus on and off (off: delta made positive by a
  softplus node), D and delta_bias present or null. delta, B and C come from 1x1 convolutions of u.
- window_partition (one window per image: the right/bottom zero padding as the output) and
  window_reverse (the crop) against MambaVision's window_partition / window_reverse with F.pad and
  the crop; then the mixer's pattern through them: partition, dwconv1d, 1x1 convs to B and C, the
  scan with softplus, reverse with like = the input, at 16x16 with window 14 (padded to 28x28), 8x8
  with window 7 (14x14), odd 9x11 with window 4, and an exact multiple. Padded tokens take part in
  the scan (their delta is the conv's bias and decays the state of the real tokens after them).
Tolerance: max|ours - torch| <= 1e-5 * max|torch|. Both compute in float32: softplus differs by the
libm's and PyTorch's exp/log1p (an ulp or two, ~1e-7), the conv by its summation order; the scan's
state is a sum of decaying terms (|exp(dt A)| < 1), so rounding does not compound: over L = 196
steps it stays ~1e-6 of the output's scale here, while a wrong token order, padding, bias or state
update is O(1). The window copies themselves are exact (checked as such where the op stands alone).
Ends with one line `scan_ops_torch: N passed, M failed`.
"""
import json
import os
import sys
import tempfile

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402

TOL = 1e-5  # see the module docstring
CHECKS = harness.Checks(detail_limit=0)
check = CHECKS.check


class Graph:
    """A model file under construction: nodes, parameter tensors, the input's channels."""

    def __init__(self, channels):
        self.channels = channels
        self.nodes = []
        self.tensors = {}

    def param(self, name, arr):
        import numpy as np
        self.tensors[name] = np.ascontiguousarray(arr, dtype=np.float32)
        return name

    def node(self, name, op, inputs, **fields):
        self.nodes.append(dict(name=name, op=op, inputs=inputs, **fields))
        return name

    def run(self, tmp, x, tag):
        """Flattens the last node, writes the file, runs x through cirrdata.Model on the CPU."""
        import cirrdata
        from cirrdata import safetensors_io
        last = self.nodes[-1]['name']
        self.node('out', 'flatten', [last], start_dim=1)
        graph = {'version': 1, 'input': {'name': 'x', 'channels': self.channels}, 'output': 'out', 'nodes': self.nodes}
        n = x.shape[0]
        path = os.path.join(tmp, tag + '.safetensors')
        meta = {'cirrdata.format': '1', 'cirrdata.arch': 'test-' + tag, 'cirrdata.in_channels': str(self.channels),
                'cirrdata.classes': str(self.out_per_image), 'cirrdata.graph': json.dumps(graph)}
        safetensors_io.write(path, self.tensors, meta)
        with cirrdata.Model(path, device='cpu', threads=2) as m:
            return m.predict(x).reshape(n, -1)

    out_per_image = 0  # the flattened output's values per image (the model's 'classes')


def rel_err(ours, ref):
    import numpy as np
    return float(np.max(np.abs(ours - ref)) / max(float(np.max(np.abs(ref))), 1e-30))


def compare(ours, ref, name, tol=TOL):
    ref = ref.reshape(ours.shape)
    e = rel_err(ours, ref)
    return check(e <= tol, name, 'max|diff|/max|ref| %.2e (allowed %.0e)' % (e, tol))


# ---------------------------------------------------------------- the torch formulations

def scan_ref(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False):
    """mamba_ssm's selective_scan_ref with z = None: u, delta (b, d, l); A (d, n); B, C (b, n, l)."""
    import torch
    import torch.nn.functional as F
    u, delta = u.float(), delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    if delta_softplus:
        delta = F.softplus(delta)
    b, d, n = u.shape[0], A.shape[0], A.shape[1]
    h = A.new_zeros((b, d, n))
    dA = torch.exp(torch.einsum('bdl,dn->bdln', delta, A))
    dBu = torch.einsum('bdl,bnl,bdl->bdln', delta, B, u)
    ys = []
    for i in range(u.shape[2]):
        h = dA[:, :, i] * h + dBu[:, :, i]
        ys.append(torch.einsum('bdn,bn->bd', h, C[:, :, i]))
    y = torch.stack(ys, dim=2)
    return y if D is None else y + u * D[:, None]


def mv_window_partition(x, ws):
    """MambaVision's window_partition: (B, C, H, W) -> (B * windows, ws * ws, C)."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // ws, ws, w // ws, ws)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(-1, ws * ws, c)


def mv_window_reverse(windows, ws, h, w):
    """MambaVision's window_reverse: (B * windows, ws * ws, C) -> (B, C, H, W)."""
    b = int(windows.shape[0] / (h * w / ws / ws))
    x = windows.reshape(b, h // ws, w // ws, ws, ws, -1)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, windows.shape[2], h, w)


def mv_pad(x, ws):
    import torch.nn.functional as F
    h, w = x.shape[2], x.shape[3]
    return F.pad(x, (0, (ws - w % ws) % ws, 0, (ws - h % ws) % ws))


def tokens_to_windows_nchw(t, ws):
    """(Bw, ws * ws, C) tokens -> the graph's (Bw, C, ws, ws)."""
    return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], ws, ws)


def conv1d_tokens(x, w, b, pad):
    """Depthwise conv1d over the flattened tokens of (N, C, H, W) with zero padding [left, right]."""
    import torch.nn.functional as F
    n, c, h, ww = x.shape
    t = F.pad(x.reshape(n, c, h * ww), tuple(pad))
    return F.conv1d(t, w, b, groups=c).reshape(n, c, h, ww)


# ---------------------------------------------------------------- cases

def test_softplus(tmp, rng):
    import numpy as np
    import torch
    import torch.nn.functional as F
    # (beta, threshold, input scale): around PyTorch's default threshold, a steep beta, beta < 1, a
    # negative threshold (every x * beta above it passes through)
    for beta, thr, scale in [(1.0, 20.0, 30.0), (2.0, 5.0, 4.0), (0.5, 3.0, 10.0), (1.5, -1.0, 3.0)]:
        x = (rng.standard_normal((2, 3, 7, 5)) * scale).astype(np.float32)
        x[0, 0, 0, :] = np.array([thr / beta, np.nextafter(thr / beta, np.float32(1e9)), -80, 80, 0], np.float32)
        g = Graph(3)
        g.node('sp', 'softplus', ['x'], beta=beta, threshold=thr)
        g.out_per_image = 3 * 7 * 5
        ours = g.run(tmp, x, 'softplus')
        ref = F.softplus(torch.from_numpy(x), beta=beta, threshold=thr).numpy()
        compare(ours, ref, 'softplus beta %g threshold %g' % (beta, thr))


def test_dwconv1d(tmp, rng):
    import numpy as np
    import torch
    for k, pad, bias, shape in [(3, [1, 1], False, (2, 80, 14, 14)), (4, [1, 2], True, (3, 6, 5, 7)),
                                (1, [0, 0], True, (1, 4, 3, 3)), (5, [3, 1], True, (2, 5, 1, 9)),
                                (3, [1, 1], True, (1, 3, 1, 2))]:
        n, c, h, w = shape
        x = rng.standard_normal(shape).astype(np.float32)
        wt = (rng.standard_normal((c, 1, k)) / np.sqrt(k)).astype(np.float32)
        bt = rng.standard_normal(c).astype(np.float32) if bias else None
        g = Graph(c)
        g.node('conv', 'dwconv1d', ['x'], weight=g.param('conv.weight', wt),
               bias=g.param('conv.bias', bt) if bias else None, padding=pad)
        g.out_per_image = c * h * w
        ours = g.run(tmp, x, 'dwconv1d')
        ref = conv1d_tokens(torch.from_numpy(x), torch.from_numpy(wt), torch.from_numpy(bt) if bias else None, pad)
        compare(ours, ref.numpy(), 'dwconv1d K=%d padding %s bias %s %s' % (k, pad, bias, shape))
    # PyTorch's own padding='same' (Conv1d) for K = 3 and 4 is the [left, right] the graph states
    x = torch.from_numpy(rng.standard_normal((1, 4, 3, 5)).astype(np.float32))
    for k, pad in [(3, [1, 1]), (4, [1, 2])]:
        conv = torch.nn.Conv1d(4, 4, k, groups=4, padding='same', bias=False)
        same = conv(x.reshape(1, 4, 15)).reshape(1, 4, 3, 5)
        mine = conv1d_tokens(x, conv.weight, None, pad)
        check(torch.equal(same, mine), 'Conv1d padding=\'same\' K=%d is padding %s' % (k, pad))


def scan_graph(rng, d, s, softplus, with_d, with_bias):
    """x (N, d, H, W) = u; delta, B, C from 1x1 convolutions of u (delta through a softplus node when
    the scan's delta_softplus is off, as it must be positive). Returns the graph and its parameters."""
    import numpy as np
    g = Graph(d)
    p = {}
    p['wd'] = (rng.standard_normal((d, d, 1, 1)) / np.sqrt(d)).astype(np.float32)
    p['bd'] = (rng.standard_normal(d) * 0.5).astype(np.float32)
    p['wb'] = (rng.standard_normal((s, d, 1, 1)) / np.sqrt(d)).astype(np.float32)
    p['wc'] = (rng.standard_normal((s, d, 1, 1)) / np.sqrt(d)).astype(np.float32)
    # MambaVision's initialisation: A_log = log(1..S) per channel (here perturbed), D ones (here
    # random), dt bias the inverse softplus of dt in [1e-3, 0.1] (here a wider spread)
    p['A_log'] = (np.log(np.arange(1, s + 1, dtype=np.float32))[None, :] +
                  rng.standard_normal((d, s)).astype(np.float32) * 0.3).astype(np.float32)
    p['D'] = rng.standard_normal(d).astype(np.float32)
    # (without the scan's softplus, delta + delta_bias must stay positive: a small positive bias)
    p['dbias'] = (rng.uniform(-4.0, 1.0, d) if softplus else rng.uniform(0.0, 0.3, d)).astype(np.float32)
    g.node('delta_lin', 'conv2d', ['x'], weight=g.param('dl.weight', p['wd']), bias=g.param('dl.bias', p['bd']),
           stride=[1, 1], padding=[0, 0], dilation=[1, 1], groups=1)
    delta = 'delta_lin'
    if not softplus:
        delta = g.node('delta_sp', 'softplus', ['delta_lin'], beta=1.0, threshold=20.0)
    g.node('B', 'conv2d', ['x'], weight=g.param('B.weight', p['wb']), bias=None, stride=1, padding=0, dilation=1,
           groups=1)
    g.node('C', 'conv2d', ['x'], weight=g.param('C.weight', p['wc']), bias=None, stride=1, padding=0, dilation=1,
           groups=1)
    g.node('scan', 'selective_scan', ['x', delta, 'B', 'C'], A_log=g.param('A_log', p['A_log']),
           D=g.param('D', p['D']) if with_d else None, delta_bias=g.param('dbias', p['dbias']) if with_bias else None,
           delta_softplus=softplus)
    return g, p


def scan_torch(x, p, softplus, with_d, with_bias):
    import torch
    import torch.nn.functional as F
    t = {k: torch.from_numpy(v) for k, v in p.items()}
    n, d, h, w = x.shape
    delta = F.conv2d(x, t['wd'], t['bd'])
    if not softplus:
        delta = F.softplus(delta)
    B, C = F.conv2d(x, t['wb']), F.conv2d(x, t['wc'])
    A = -torch.exp(t['A_log'].float())
    flat = lambda v: v.reshape(n, v.shape[1], h * w)  # noqa: E731
    y = scan_ref(flat(x), flat(delta), A, flat(B), flat(C), t['D'] if with_d else None,
                 t['dbias'] if with_bias else None, softplus)
    return y.reshape(n, d, h, w)


def test_selective_scan(tmp, rng):
    import numpy as np
    import torch
    cases = [  # (N, D, S, H, W, delta_softplus, D skip, delta_bias)
        (2, 80, 8, 14, 14, True, True, True),   # MambaVision stage 3: a 14x14 window, d_inner / 2 = 80 at dim 160
        (3, 160, 8, 7, 7, True, True, True),    # stage 4: a 7x7 window
        (2, 80, 8, 14, 14, False, True, True),  # softplus off (delta positive from its own node)
        (2, 160, 8, 7, 7, True, False, False),  # no D, no delta_bias
        (1, 5, 3, 1, 9, False, False, True),    # odd sizes
        (2, 7, 1, 3, 1, True, True, False),     # one state
    ]
    for n, d, s, h, w, sp, wd, wb in cases:
        g, p = scan_graph(rng, d, s, sp, wd, wb)
        g.out_per_image = d * h * w
        x = rng.standard_normal((n, d, h, w)).astype(np.float32)
        ours = g.run(tmp, x, 'scan')
        with torch.no_grad():
            ref = scan_torch(torch.from_numpy(x), p, sp, wd, wb).numpy()
        compare(ours, ref, 'selective_scan N=%d D=%d S=%d L=%dx%d softplus %s D %s delta_bias %s' %
                (n, d, s, h, w, sp, wd, wb))


def test_windows(tmp, rng):
    import numpy as np
    import torch
    import torch.nn.functional as F
    # window_partition alone where each image is one window: the output is the zero-padded image
    for n, c, h, w, ws in [(1, 4, 5, 6, 7), (2, 3, 5, 3, 5), (2, 2, 4, 4, 4)]:
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        g = Graph(c)
        g.node('part', 'window_partition', ['x'], window=ws)
        g.out_per_image = c * ws * ws
        ours = g.run(tmp, x, 'partition')
        ref = tokens_to_windows_nchw(mv_window_partition(mv_pad(torch.from_numpy(x), ws), ws), ws).numpy()
        check(np.array_equal(ours, ref.reshape(ours.shape)), 'window_partition %dx%dx%dx%d window %d (one window '
              'each) equals F.pad + window_partition' % (n, c, h, w, ws))
    # window_reverse alone with one window per image: the crop to like's H, W
    for n, c, ws, h, w in [(2, 3, 7, 5, 6), (1, 2, 4, 4, 4)]:
        x = rng.standard_normal((n, c, ws, ws)).astype(np.float32)
        g = Graph(c)
        g.node('like', 'adaptive_avg_pool2d', ['x'], output_size=[h, w])
        g.node('rev', 'window_reverse', ['x', 'like'], window=ws)
        g.out_per_image = c * h * w
        ours = g.run(tmp, x, 'reverse')
        t = torch.from_numpy(x)
        ref = mv_window_reverse(t.reshape(n, c, ws * ws).transpose(1, 2), ws, ws, ws)[:, :, :h, :w]
        check(np.array_equal(ours, ref.reshape(n, -1).numpy()), 'window_reverse %dx%dx%dx%d to %dx%d equals '
              'window_reverse + crop' % (n, c, ws, ws, h, w))
    # the mixer's pattern through the windows (padded tokens in the scan)
    for n, c, h, w, ws, s in [(2, 16, 16, 16, 14, 8), (2, 24, 8, 8, 7, 8), (1, 5, 9, 11, 4, 3), (1, 3, 8, 8, 4, 2)]:
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        wconv = (rng.standard_normal((c, 1, 3)) / np.sqrt(3)).astype(np.float32)
        bconv = (rng.standard_normal(c) * 0.5).astype(np.float32)
        wb = (rng.standard_normal((s, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
        bb = rng.standard_normal(s).astype(np.float32)
        wc = (rng.standard_normal((s, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
        bc = rng.standard_normal(s).astype(np.float32)
        a_log = (np.log(np.arange(1, s + 1, dtype=np.float32))[None, :] + 0.1 * rng.standard_normal((c, s))).astype(
            np.float32)
        dskip = rng.standard_normal(c).astype(np.float32)
        g = Graph(c)
        g.node('part', 'window_partition', ['x'], window=ws)
        g.node('conv', 'dwconv1d', ['part'], weight=g.param('conv.weight', wconv), bias=g.param('conv.bias', bconv),
               padding=[1, 1])
        g.node('B', 'conv2d', ['part'], weight=g.param('B.weight', wb), bias=g.param('B.bias', bb), stride=1,
               padding=0, dilation=1, groups=1)
        g.node('C', 'conv2d', ['part'], weight=g.param('C.weight', wc), bias=g.param('C.bias', bc), stride=1,
               padding=0, dilation=1, groups=1)
        g.node('scan', 'selective_scan', ['part', 'conv', 'B', 'C'], A_log=g.param('A_log', a_log),
               D=g.param('D', dskip), delta_bias=None, delta_softplus=True)
        g.node('rev', 'window_reverse', ['scan', 'x'], window=ws)
        g.out_per_image = c * h * w
        ours = g.run(tmp, x, 'windows')
        with torch.no_grad():
            t = torch.from_numpy(x)
            xp = mv_pad(t, ws)
            hp, wp = xp.shape[2], xp.shape[3]
            tok = mv_window_partition(xp, ws)  # (Bw, L, C)
            u = tok.transpose(1, 2)  # (Bw, C, L)
            delta = F.conv1d(F.pad(u, (1, 1)), torch.from_numpy(wconv), torch.from_numpy(bconv), groups=c)
            B = torch.einsum('blc,sc->bsl', tok, torch.from_numpy(wb[:, :, 0, 0])) + torch.from_numpy(bb)[None, :, None]
            C = torch.einsum('blc,sc->bsl', tok, torch.from_numpy(wc[:, :, 0, 0])) + torch.from_numpy(bc)[None, :, None]
            y = scan_ref(u, delta, -torch.exp(torch.from_numpy(a_log)), B, C, torch.from_numpy(dskip), None, True)
            ref = mv_window_reverse(y.transpose(1, 2), ws, hp, wp)[:, :, :h, :w]
        compare(ours, ref.numpy(), 'partition, dwconv1d, scan, reverse %dx%dx%dx%d window %d (padded to %dx%d)' %
                (n, c, h, w, ws, hp, wp))


def main():
    harness.load_binding(harness.parser(cli=False).parse_args().lib)
    import numpy as np
    import torch
    torch.set_num_threads(2)
    rng = np.random.default_rng(20261207)
    with tempfile.TemporaryDirectory(prefix='cd-scan-') as tmp:
        for fn in (test_softplus, test_dwconv1d, test_selective_scan, test_windows):
            try:
                fn(tmp, rng)
            except Exception as e:  # one crashing group is one failure
                import traceback
                traceback.print_exc()
                check(False, fn.__name__, repr(e))
    return CHECKS.summary('scan_ops_torch')


if __name__ == '__main__':
    sys.exit(main())
