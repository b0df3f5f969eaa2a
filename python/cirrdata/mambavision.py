"""MambaVision-T (Hatamizadeh & Kautz, "MambaVision: A Hybrid Mamba-Transformer Vision Backbone", CVPR
2025) in plain PyTorch with NVlabs' parameter names (mambavision/models/mamba_vision.py, as the staging
paper's lib/MambaVision uses it), so their checkpoints (mambavision_tiny_1k, the paper's best_model.pth)
load as they are. No mamba_ssm, einops or timm: the selective scan is written out below (the
sequence of mamba_ssm's selective_scan_ref, fp32). Written from reading upstream; computes what it
computes in eval(), quirks included:

  patch_embed.conv_down   Conv 3x3 s2 (3->32, no bias), BN eps 1e-4, ReLU, Conv 3x3 s2 (32->80), BN eps 1e-4, ReLU
  levels.0, levels.1      ConvBlocks: conv1 3x3 (bias), BN, GELU(tanh), conv2 3x3, BN, + input;
                          then downsample.reduction.0 = Conv 3x3 s2 (no bias), channels x2
  levels.2, levels.3      the map is zero-padded right and bottom to a multiple of the window (14, 7)
                          -- at 256x256 the 16x16 map becomes 28x28 and the 8x8 one 14x14 -- and cut into
                          windows; padded tokens take part in every block; then the windows are put
                          back and the padding cropped. Blocks: x = x + mixer(norm1(x)); x = x + mlp(norm2(x))
                          (LayerNorm eps 1e-5, no layer scale for -T). The first half of a level's blocks
                          (depth 8: 0-3; depth 4: 0-1) mix with MambaVisionMixer, the rest with attention
                          (qkv with bias, softmax(q k^T / sqrt(40)) v, proj).
  MambaVisionMixer        in_proj (no bias) split in x and z; each: depthwise Conv1d k=3 'same' (no bias), SiLU;
                          x_proj(x) -> dt (rank ceil(dim/16)), B, C (8 states each); dt = dt_proj(dt) *with*
                          its bias, and the scan adds dt_proj.bias again (delta_bias; NVlabs issue 32):
                          the bias counts twice; softplus; selective scan with the D skip; concat(y, z); out_proj
  norm, head              BatchNorm2d(640) over the map, global average pool, Linear(640, classes)

The graph document (`cirrdata_graph`) is built by walking these modules; tools/scripts/export_weights.py
uses it instead of torch.fx.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .graph_emit import GraphBuilder

__all__ = ['MambaVision', 'mambavision_t', 'selective_scan']

TINY = dict(dim=80, in_dim=32, depths=(1, 3, 8, 4), num_heads=(2, 4, 8, 16), window_size=(8, 8, 14, 7),
            mlp_ratio=4)


def selective_scan(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False):
    """mamba_ssm's selective scan (z=None), sequential over tokens, fp32.
    u, delta (b, d, l); A (d, n); B, C (b, n, l); D, delta_bias (d). Returns (b, d, l)."""
    u = u.float()
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    dA = torch.exp(delta.unsqueeze(-1) * A[:, None, :])                 # (b, d, l, n)
    dBu = (delta * u).unsqueeze(-1) * B.float().transpose(1, 2)[:, None]  # (b, d, l, n)
    Ct = C.float().transpose(1, 2)                                        # (b, l, n)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    # unbind, not dA[:, :, t]: a slice's gradient is a whole zero tensor per step, unbind's one stack
    for a_t, bu_t, c_t in zip(dA.unbind(2), dBu.unbind(2), Ct.unbind(1)):
        h = a_t * h + bu_t
        ys.append((h * c_t[:, None, :]).sum(-1))
    y = torch.stack(ys, dim=2)
    return y if D is None else y + u * D.float()[:, None]


class ConvBlock(nn.Module):
    def __init__(self, dim, layer_scale=None):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, 1, 1)
        self.norm1 = nn.BatchNorm2d(dim, eps=1e-5)
        self.act1 = nn.GELU(approximate='tanh')
        self.conv2 = nn.Conv2d(dim, dim, 3, 1, 1)
        self.norm2 = nn.BatchNorm2d(dim, eps=1e-5)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim)) if isinstance(layer_scale, (int, float)) else None

    def forward(self, x):
        y = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        if self.gamma is not None:
            y = y * self.gamma.view(1, -1, 1, 1)
        return x + y


class MambaVisionMixer(nn.Module):
    def __init__(self, d_model, d_state=8, d_conv=3):
        super().__init__()
        d = d_model // 2  # expand 1: x and z get half of d_model each
        self.dt_rank = math.ceil(d_model / 16)
        self.d_state = d_state
        self.in_proj = nn.Linear(d_model, d_model, bias=False)
        self.x_proj = nn.Linear(d, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d, bias=True)
        # upstream's dt initialisation (overwritten by MambaVision's Linear init, as upstream's is)
        std = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(d) * (math.log(0.1) - math.log(0.001)) + math.log(0.001)).clamp(min=1e-4)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d, 1))
        self.D = nn.Parameter(torch.ones(d))
        self.out_proj = nn.Linear(d_model, d_model, bias=False)
        self.conv1d_x = nn.Conv1d(d, d, kernel_size=d_conv, groups=d, bias=False)
        self.conv1d_z = nn.Conv1d(d, d, kernel_size=d_conv, groups=d, bias=False)

    def forward(self, h):
        """h (B, L, D) -> (B, L, D)."""
        b, l, _ = h.shape
        x, z = self.in_proj(h).transpose(1, 2).chunk(2, dim=1)
        d = x.shape[1]
        x = F.silu(F.conv1d(x, self.conv1d_x.weight, self.conv1d_x.bias, padding='same', groups=d))
        z = F.silu(F.conv1d(z, self.conv1d_z.weight, self.conv1d_z.bias, padding='same', groups=d))
        dbc = self.x_proj(x.transpose(1, 2).reshape(b * l, d))
        dt, Bm, Cm = torch.split(dbc, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = self.dt_proj(dt).reshape(b, l, d).transpose(1, 2)     # includes dt_proj.bias ...
        Bm = Bm.reshape(b, l, -1).transpose(1, 2)
        Cm = Cm.reshape(b, l, -1).transpose(1, 2)
        y = selective_scan(x, dt, -torch.exp(self.A_log.float()), Bm, Cm, self.D,
                           delta_bias=self.dt_proj.bias, delta_softplus=True)  # ... and adds it again
        return self.out_proj(torch.cat([y, z], dim=1).transpose(1, 2))


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, num_heads, attention, mlp_ratio, layer_scale=None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.mixer = Attention(dim, num_heads) if attention else MambaVisionMixer(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        use = isinstance(layer_scale, (int, float))
        self.gamma_1 = nn.Parameter(layer_scale * torch.ones(dim)) if use else None
        self.gamma_2 = nn.Parameter(layer_scale * torch.ones(dim)) if use else None

    def forward(self, x):
        y = self.mixer(self.norm1(x))
        x = x + (y if self.gamma_1 is None else self.gamma_1 * y)
        y = self.mlp(self.norm2(x))
        return x + (y if self.gamma_2 is None else self.gamma_2 * y)


class Downsample(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.reduction = nn.Sequential(nn.Conv2d(dim, 2 * dim, 3, 2, 1, bias=False))

    def forward(self, x):
        return self.reduction(x)


class PatchEmbed(nn.Module):
    def __init__(self, in_chans, in_dim, dim):
        super().__init__()
        self.conv_down = nn.Sequential(
            nn.Conv2d(in_chans, in_dim, 3, 2, 1, bias=False), nn.BatchNorm2d(in_dim, eps=1e-4), nn.ReLU(),
            nn.Conv2d(in_dim, dim, 3, 2, 1, bias=False), nn.BatchNorm2d(dim, eps=1e-4), nn.ReLU())

    def forward(self, x):
        return self.conv_down(x)


def window_partition(x, ws):
    """(B, C, H, W), H and W multiples of ws -> (B * H/ws * W/ws, ws*ws, C) windows, row-major."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // ws, ws, w // ws, ws).permute(0, 2, 4, 3, 5, 1).reshape(-1, ws * ws, c)


def window_reverse(windows, ws, h, w):
    b = windows.shape[0] // ((h // ws) * (w // ws))
    x = windows.reshape(b, h // ws, w // ws, ws, ws, -1).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, windows.shape[2], h, w)


class MambaVisionLayer(nn.Module):
    def __init__(self, dim, depth, num_heads, window_size, conv, downsample, mlp_ratio,
                 layer_scale=None, layer_scale_conv=None):
        super().__init__()
        self.conv = conv
        self.window_size = window_size
        if conv:
            self.blocks = nn.ModuleList([ConvBlock(dim, layer_scale_conv) for _ in range(depth)])
        else:
            first_attention = depth // 2 + 1 if depth % 2 else depth // 2  # upstream's transformer_blocks
            self.blocks = nn.ModuleList([Block(dim, num_heads, i >= first_attention, mlp_ratio, layer_scale)
                                         for i in range(depth)])
        self.downsample = Downsample(dim) if downsample else None

    def forward(self, x):
        if not self.conv:
            _, _, h, w = x.shape
            ws = self.window_size
            pad_r, pad_b = (ws - w % ws) % ws, (ws - h % ws) % ws
            x = F.pad(x, (0, pad_r, 0, pad_b))
            hp, wp = x.shape[2], x.shape[3]
            x = window_partition(x, ws)
        for blk in self.blocks:
            x = blk(x)
        if not self.conv:
            x = window_reverse(x, ws, hp, wp)[:, :, :h, :w].contiguous()
        return x if self.downsample is None else self.downsample(x)


class MambaVision(nn.Module):
    def __init__(self, classes=1000, in_chans=3, dim=TINY['dim'], in_dim=TINY['in_dim'], depths=TINY['depths'],
                 num_heads=TINY['num_heads'], window_size=TINY['window_size'], mlp_ratio=TINY['mlp_ratio'],
                 layer_scale=None, layer_scale_conv=None):
        super().__init__()
        self.patch_embed = PatchEmbed(in_chans, in_dim, dim)
        self.levels = nn.ModuleList([
            MambaVisionLayer(dim * 2 ** i, depths[i], num_heads[i], window_size[i], conv=i < 2,
                             downsample=i < len(depths) - 1, mlp_ratio=mlp_ratio, layer_scale=layer_scale,
                             layer_scale_conv=layer_scale_conv) for i in range(len(depths))])
        nf = dim * 2 ** (len(depths) - 1)
        self.norm = nn.BatchNorm2d(nf)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(nf, classes)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):  # upstream's: every Linear, dt_proj included
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.patch_embed(x)
        for level in self.levels:
            x = level(x)
        x = torch.flatten(self.avgpool(self.norm(x)), 1)
        return self.head(x)

    def cirrdata_graph(self, in_channels=3):
        """(graph document, set of state_dict names it uses)."""
        return emit_graph(self, in_channels)


def mambavision_t(classes=1000, in_chans=3):
    return MambaVision(classes=classes, in_chans=in_chans, **TINY)


def _mixer(g, p, m, x):
    """MambaVisionMixer on tokens x (windows as maps): nodes named p + '.*'."""
    d = m.D.shape[0]
    xz = g.linear(m.in_proj, x)
    xs = g.op(p + '.x', 'slice', xz, start=0, length=d)
    zs = g.op(p + '.z', 'slice', xz, start=d, length=d)
    branches = []
    for conv, s, tag in ((m.conv1d_x, xs, 'x'), (m.conv1d_z, zs, 'z')):
        k = conv.kernel_size[0]
        c = g.node(g.name_of(conv), 'dwconv1d', [s], weight=g.tensor(conv, 'weight'),
                   bias=g.tensor(conv, 'bias', False), padding=[(k - 1) // 2, k - 1 - (k - 1) // 2])  # 'same'
        branches.append(g.op(p + '.silu_' + tag, 'silu', c))
    xs, zs = branches
    dbc = g.linear(m.x_proj, xs)
    dt = g.op(p + '.dt', 'slice', dbc, start=0, length=m.dt_rank)
    bm = g.op(p + '.B', 'slice', dbc, start=m.dt_rank, length=m.d_state)
    cm = g.op(p + '.C', 'slice', dbc, start=m.dt_rank + m.d_state, length=m.d_state)
    delta = g.linear(m.dt_proj, dt)  # with its bias; delta_bias below adds it a second time
    y = g.node(p + '.scan', 'selective_scan', [xs, delta, bm, cm], A_log=g.tensor(m, 'A_log'),
               D=g.tensor(m, 'D'), delta_bias=g.tensor(m.dt_proj, 'bias'), delta_softplus=True)
    return g.linear(m.out_proj, g.op(p + '.cat', 'concat', y, zs))


def _attention(g, p, m, x):
    c = m.proj.in_features
    qkv = g.linear(m.qkv, x)
    q, k, v = (g.op(p + '.' + t, 'slice', qkv, start=i * c, length=c) for i, t in enumerate('qkv'))
    o = g.op(p + '.attention', 'attention', q, k, v, heads=m.num_heads, scale=float(m.scale))
    return g.linear(m.proj, o)


def _scaled(g, name, y, gamma_owner, attr):
    if getattr(gamma_owner, attr) is None:
        return y
    return g.node(name, 'scale', [y], weight=g.tensor(gamma_owner, attr), bias=None)


def emit_graph(model, in_channels=3):
    """The cirrdata.graph document of a MambaVision, op by op as forward() computes it. A level's
    windows are the graph tensor (B * windows, C, ws, ws): each window's tokens are its row-major pixels,
    as upstream's window_partition orders them."""
    g = GraphBuilder(model, in_channels)
    cd = model.patch_embed.conv_down
    x = g.input
    for i in (0, 3):
        x = g.batch_norm(cd[i + 1], g.conv2d(cd[i], x))
        x = g.op(g.name_of(cd[i + 2]), 'relu', x)
    for level in model.levels:
        lp = g.name_of(level)
        if level.conv:
            for blk in level.blocks:
                p = g.name_of(blk)
                y = g.batch_norm(blk.norm1, g.conv2d(blk.conv1, x))
                y = g.op(g.name_of(blk.act1), 'gelu_tanh', y)
                y = g.batch_norm(blk.norm2, g.conv2d(blk.conv2, y))
                y = _scaled(g, p + '.layer_scale', y, blk, 'gamma')
                x = g.op(p + '.add', 'add', x, y)
        else:
            unpadded = x
            x = g.op(lp + '.window_partition', 'window_partition', x, window=level.window_size)
            for blk in level.blocks:
                p = g.name_of(blk)
                h = g.layer_norm(blk.norm1, x)
                if isinstance(blk.mixer, MambaVisionMixer):
                    y = _mixer(g, p + '.mixer', blk.mixer, h)
                else:
                    y = _attention(g, p + '.mixer', blk.mixer, h)
                x = g.op(p + '.add1', 'add', x, _scaled(g, p + '.layer_scale1', y, blk, 'gamma_1'))
                h = g.op(p + '.mlp.act', 'gelu', g.linear(blk.mlp.fc1, g.layer_norm(blk.norm2, x)))
                y = g.linear(blk.mlp.fc2, h)
                x = g.op(p + '.add2', 'add', x, _scaled(g, p + '.layer_scale2', y, blk, 'gamma_2'))
            x = g.op(lp + '.window_reverse', 'window_reverse', x, unpadded, window=level.window_size)
        if level.downsample is not None:
            x = g.conv2d(level.downsample.reduction[0], x)
    x = g.batch_norm(model.norm, x)  # standalone: a reader turns it into a per-channel scale + bias
    x = g.op('avgpool', 'adaptive_avg_pool2d', x, output_size=[1, 1])
    x = g.op('flatten', 'flatten', x, start_dim=1)
    return g.document(g.linear(model.head, x)), g.used
