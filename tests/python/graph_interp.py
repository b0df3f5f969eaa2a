"""A plain-torch interpreter of the cirrdata.graph document (schemas/model-graph.md and the issue-17 ops
of the lead's op contract), for tests: each op is written from its definition there, with elementary
torch operations, independently of the network code in python/cirrdata/ (no nn.Module, no
F.layer_norm / F.softplus / F.pad / F.conv1d; window and token orders spelt out with loops).

    out = run(graph, tensors, x)   # graph: the document; tensors: name -> torch tensor; x: (N, C, H, W)

Every tensor is 4-D NCHW float32 except after `flatten` (N, F); a token sequence is its image,
token t = h*W + w.
"""
import math

import torch
import torch.nn.functional as F


class InterpError(Exception):
    pass


def _t(tensors, name):
    return None if name is None else tensors[name].float()


def _chan(v):
    return v.reshape(1, -1, 1, 1)


def conv2d(n, a, T):
    return F.conv2d(a[0], _t(T, n['weight']), _t(T, n['bias']), tuple(n['stride']), tuple(n['padding']),
                    tuple(n['dilation']), n['groups'])


def batch_norm(n, a, T):
    x = a[0]
    inv = 1.0 / torch.sqrt(_t(T, n['running_var']) + n['eps'])
    return (x - _chan(_t(T, n['running_mean']))) * _chan(inv * _t(T, n['weight'])) + _chan(_t(T, n['bias']))


def linear(n, a, T):
    x, w, b = a[0], _t(T, n['weight']), _t(T, n['bias'])
    if x.dim() == 2:
        y = x @ w.t()
        return y if b is None else y + b
    if x.shape[1] != w.shape[1]:
        raise InterpError("node '%s': %d channels, linear takes %d" % (n['name'], x.shape[1], w.shape[1]))
    N, _, H, W = x.shape
    y = torch.matmul(w, x.reshape(N, -1, H * W)).reshape(N, -1, H, W)  # at every (h, w)
    return y if b is None else y + _chan(b)


def layer_norm(n, a, T):
    x = a[0]
    mu = x.mean(dim=1, keepdim=True)
    var = ((x - mu) ** 2).mean(dim=1, keepdim=True)  # biased
    y = (x - mu) / torch.sqrt(var + n['eps'])
    if n['weight'] is not None:
        y = y * _chan(_t(T, n['weight']))
    if n['bias'] is not None:
        y = y + _chan(_t(T, n['bias']))
    return y


def scale(n, a, T):
    w = _t(T, n['weight']).reshape(-1)
    y = a[0] * _chan(w)
    return y if n['bias'] is None else y + _chan(_t(T, n['bias']))


def mul(n, a, T):
    x, s = a
    if s.shape != x.shape and tuple(s.shape) != (x.shape[0], x.shape[1], 1, 1):
        raise InterpError("node '%s': mul of %s by %s" % (n['name'], tuple(x.shape), tuple(s.shape)))
    return x * s


def add(n, a, T):
    if a[0].shape != a[1].shape:
        raise InterpError("node '%s': add of %s and %s" % (n['name'], tuple(a[0].shape), tuple(a[1].shape)))
    return a[0] + a[1]


def slice_(n, a, T):
    x = a[0]
    s, k = n['start'], n['length']
    if s < 0 or k < 1 or s + k > x.shape[1]:
        raise InterpError("node '%s': slice [%d, %d) of %d channels" % (n['name'], s, s + k, x.shape[1]))
    return x[:, s:s + k]


def concat(n, a, T):
    x, y = a
    if x.shape[0] != y.shape[0] or x.shape[2:] != y.shape[2:]:
        raise InterpError("node '%s': concat of %s and %s" % (n['name'], tuple(x.shape), tuple(y.shape)))
    return torch.cat([x, y], dim=1)


def attention(n, a, T):
    q, k, v = a
    N, C, Hq, Wq = q.shape
    heads = n['heads']
    d = C // heads
    Lk = k.shape[2] * k.shape[3]
    outs = []
    for h in range(heads):
        Q = q[:, h * d:(h + 1) * d].reshape(N, d, Hq * Wq)
        K = k[:, h * d:(h + 1) * d].reshape(N, d, Lk)
        V = v[:, h * d:(h + 1) * d].reshape(N, d, Lk)
        s = n['scale'] * torch.einsum('nit,nis->nts', Q, K)
        e = torch.exp(s - s.max(dim=2, keepdim=True).values)
        p = e / e.sum(dim=2, keepdim=True)
        outs.append(torch.einsum('nts,njs->njt', p, V))
    return torch.cat(outs, dim=1).reshape(N, C, Hq, Wq)


def softplus(n, a, T):
    x, beta, thr = a[0], n['beta'], n['threshold']
    return torch.where(x * beta > thr, x, torch.log1p(torch.exp(beta * x)) / beta)


def dwconv1d(n, a, T):
    x = a[0]
    N, C, H, W = x.shape
    w = _t(T, n['weight'])  # (C, 1, K)
    K = w.shape[2]
    left, right = n['padding']
    if left + right != K - 1:
        raise InterpError("node '%s': padding %r for kernel %d" % (n['name'], n['padding'], K))
    seq = x.reshape(N, C, H * W)
    padded = torch.cat([seq.new_zeros(N, C, left), seq, seq.new_zeros(N, C, right)], dim=2)
    y = sum(w[:, 0, j].reshape(1, C, 1) * padded[:, :, j:j + H * W] for j in range(K))
    if n['bias'] is not None:
        y = y + _t(T, n['bias']).reshape(1, C, 1)
    return y.reshape(N, C, H, W)


def selective_scan(n, a, T):
    u, delta, Bm, Cm = a
    N, D, H, W = u.shape
    L = H * W
    A = -torch.exp(_t(T, n['A_log']))  # (D, S)
    u, delta = u.reshape(N, D, L), delta.reshape(N, D, L)
    Bm, Cm = Bm.reshape(N, -1, L), Cm.reshape(N, -1, L)
    if n['delta_bias'] is not None:
        delta = delta + _t(T, n['delta_bias']).reshape(1, D, 1)
    if n['delta_softplus']:
        delta = torch.where(delta <= 20, torch.log1p(torch.exp(delta)), delta)
    h = u.new_zeros(N, D, A.shape[1])
    y = u.new_empty(N, D, L)
    for t in range(L):
        dt = delta[:, :, t:t + 1]                                  # (N, D, 1)
        h = torch.exp(dt * A) * h + dt * Bm[:, None, :, t] * u[:, :, t:t + 1]
        y[:, :, t] = (h * Cm[:, None, :, t]).sum(dim=2)
    if n['D'] is not None:
        y = y + _t(T, n['D']).reshape(1, D, 1) * u
    return y.reshape(N, D, H, W)


def window_partition(n, a, T):
    x = a[0]
    ws = n['window']
    N, C, H, W = x.shape
    nh, nw = -(-H // ws), -(-W // ws)
    padded = x.new_zeros(N, C, nh * ws, nw * ws)
    padded[:, :, :H, :W] = x
    wins = [padded[b, :, i * ws:(i + 1) * ws, j * ws:(j + 1) * ws]
            for b in range(N) for i in range(nh) for j in range(nw)]  # column fastest
    return torch.stack(wins)


def window_reverse(n, a, T):
    x, like = a
    ws = n['window']
    N, _, H, W = like.shape
    nh, nw = -(-H // ws), -(-W // ws)
    if x.shape[0] != N * nh * nw or tuple(x.shape[2:]) != (ws, ws):
        raise InterpError("node '%s': %s is not the %dx%d windows of %s" % (n['name'], tuple(x.shape), ws, ws,
                                                                             tuple(like.shape)))
    out = x.new_zeros(N, x.shape[1], nh * ws, nw * ws)
    k = 0
    for b in range(N):
        for i in range(nh):
            for j in range(nw):
                out[b, :, i * ws:(i + 1) * ws, j * ws:(j + 1) * ws] = x[k]
                k += 1
    return out[:, :, :H, :W]


def adaptive_avg_pool2d(n, a, T):
    x = a[0]
    oh, ow = n['output_size']
    H, W = x.shape[2:]
    rows = []
    for i in range(oh):
        h0, h1 = (i * H) // oh, -(-((i + 1) * H) // oh)
        cols = []
        for j in range(ow):
            w0, w1 = (j * W) // ow, -(-((j + 1) * W) // ow)
            cols.append(x[:, :, h0:h1, w0:w1].mean(dim=(2, 3)))
        rows.append(torch.stack(cols, dim=2))
    return torch.stack(rows, dim=2)


def _erf_gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _tanh_gelu(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


OPS = {
    'conv2d': conv2d, 'batch_norm': batch_norm, 'linear': linear, 'layer_norm': layer_norm, 'scale': scale,
    'mul': mul, 'add': add, 'slice': slice_, 'concat': concat, 'attention': attention, 'softplus': softplus,
    'dwconv1d': dwconv1d, 'selective_scan': selective_scan, 'window_partition': window_partition,
    'window_reverse': window_reverse, 'adaptive_avg_pool2d': adaptive_avg_pool2d,
    'relu': lambda n, a, T: a[0].clamp(min=0),
    'gelu': lambda n, a, T: _erf_gelu(a[0]),
    'gelu_tanh': lambda n, a, T: _tanh_gelu(a[0]),
    'silu': lambda n, a, T: a[0] * torch.sigmoid(a[0]),
    'hardswish': lambda n, a, T: a[0] * (a[0] + 3).clamp(0, 6) / 6,
    'hardsigmoid': lambda n, a, T: (a[0] + 3).clamp(0, 6) / 6,
    'dropout': lambda n, a, T: a[0],
    'flatten': lambda n, a, T: a[0].reshape(a[0].shape[0], -1),
    'softmax': lambda n, a, T: torch.softmax(a[0], dim=1),
    'max_pool2d': lambda n, a, T: F.max_pool2d(a[0], n['kernel'], n['stride'], n['padding'], n['dilation'],
                                               ceil_mode=n['ceil_mode']),
    'avg_pool2d': lambda n, a, T: F.avg_pool2d(a[0], n['kernel'], n['stride'], n['padding'], n['ceil_mode'],
                                               n['count_include_pad']),
}


def run(graph, tensors, x, keep=None):
    """The graph's output for input x. keep: a dict that receives every node's tensor when given."""
    env = {graph['input']['name']: x.float()}
    for n in graph['nodes']:
        f = OPS.get(n['op'])
        if f is None:
            raise InterpError("node '%s': op %r unknown to the interpreter" % (n['name'], n['op']))
        env[n['name']] = f(n, [env[i] for i in n['inputs']], tensors)
    if keep is not None:
        keep.update(env)
    return env[graph['output']]
