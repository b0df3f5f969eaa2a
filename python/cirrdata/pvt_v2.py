"""PVTv2-b2 (Wang et al., "PVT v2: Improved Baselines with Pyramid Vision Transformer", 2022) in plain
PyTorch, with timm's parameter names (timm/models/pvt_v2.py), so timm checkpoints load as they are and
the original repository's (whai362/PVT classification/pvt_v2.py, the staging paper's lib/pvt) load
after `remap_state_dict`. Written from reading both; computes what they compute in eval():

  patch_embed   Conv2d 7x7 stride 4 pad 3 + LayerNorm (eps 1e-5) over the channels of every pixel
  stages.i      (i > 0: downsample = Conv2d 3x3 stride 2 pad 1 + LayerNorm eps 1e-5), then blocks:
                x = x + attn(norm1(x)); x = x + mlp(norm2(x))   (norm1/norm2: LayerNorm eps 1e-6)
                attn: q = Linear(x); spatial reduction where sr > 1 (sr = Conv2d k=s=sr on the token
                map, LayerNorm eps 1e-5), kv = Linear (k first, then v); softmax(q k^T / sqrt(d)) v per
                head; proj = Linear
                mlp: fc1, depthwise Conv2d 3x3 (bias) on the token map, exact GELU, fc2
                then the stage norm (LayerNorm eps 1e-6)
  head          mean over the last stage's tokens, Linear(512, classes)

pvt_v2_b2: dims 64/128/320/512, heads 1/2/5/8, depths 3/4/6/3, sr ratios 8/4/2/1, MLP ratios 8/8/4/4,
qkv bias. Initialisation as timm's (truncated-normal Linear weights, fan-out normal convolutions).

`cirrdata_graph(in_channels)` gives the network as a cirrdata.graph document (schemas/model-graph.md),
built by walking these modules; tools/scripts/export_weights.py uses it instead of torch.fx.
"""
import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from .graph_emit import GraphBuilder

__all__ = ['PVTv2', 'pvt_v2_b2', 'remap_original_names']

B2 = dict(embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), depths=(3, 4, 6, 3),
          sr_ratios=(8, 4, 2, 1), mlp_ratios=(8, 8, 4, 4))


class MlpWithDepthwiseConv(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, bias=True, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x, hw):
        x = self.fc1(x)
        b, n, c = x.shape
        x = self.dwconv(x.transpose(1, 2).reshape(b, c, hw[0], hw[1]))
        x = self.act(x.flatten(2).transpose(1, 2))
        return self.fc2(x)


class Attention(nn.Module):
    """Spatial-reduction attention."""

    def __init__(self, dim, num_heads, sr_ratio):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.q = nn.Linear(dim, dim, bias=True)
        self.kv = nn.Linear(dim, dim * 2, bias=True)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)  # eps 1e-5, as upstream
        else:
            self.sr = None
            self.norm = None

    def forward(self, x, hw):
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.num_heads, self.head_dim).permute(0, 2, 1, 3)
        if self.sr is not None:
            x = self.sr(x.transpose(1, 2).reshape(b, c, hw[0], hw[1])).flatten(2).transpose(1, 2)
            x = self.norm(x)
        kv = self.kv(x).reshape(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(x)


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio, sr_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MlpWithDepthwiseConv(dim, int(dim * mlp_ratio))

    def forward(self, x, hw):
        x = x + self.attn(self.norm1(x), hw)
        return x + self.mlp(self.norm2(x), hw)


class OverlapPatchEmbed(nn.Module):
    def __init__(self, patch_size, stride, in_chans, embed_dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)  # eps 1e-5, as upstream

    def forward(self, x):
        """(B, C, H, W) image -> (B, H'*W', D) tokens, (H', W')."""
        x = self.proj(x)
        hw = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), hw


class Stage(nn.Module):
    def __init__(self, dim_in, dim, depth, num_heads, sr_ratio, mlp_ratio, downsample):
        super().__init__()
        self.downsample = OverlapPatchEmbed(3, 2, dim_in, dim) if downsample else None
        self.blocks = nn.ModuleList([Block(dim, num_heads, mlp_ratio, sr_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x, hw):
        """Tokens (B, L, C) of an hw map in, tokens out (after the stage norm)."""
        if self.downsample is not None:
            b, _, c = x.shape
            x, hw = self.downsample(x.transpose(1, 2).reshape(b, c, hw[0], hw[1]))
        for blk in self.blocks:
            x = blk(x, hw)
        return self.norm(x), hw


class PVTv2(nn.Module):
    def __init__(self, classes=1000, in_chans=3, embed_dims=B2['embed_dims'], num_heads=B2['num_heads'],
                 depths=B2['depths'], sr_ratios=B2['sr_ratios'], mlp_ratios=B2['mlp_ratios']):
        super().__init__()
        self.patch_embed = OverlapPatchEmbed(7, 4, in_chans, embed_dims[0])
        self.stages = nn.Sequential(*[
            Stage(embed_dims[max(i - 1, 0)], embed_dims[i], depths[i], num_heads[i], sr_ratios[i], mlp_ratios[i],
                  downsample=i > 0) for i in range(len(depths))])
        self.head = nn.Linear(embed_dims[-1], classes)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                m.bias.data.zero_()

    def forward(self, x):
        x, hw = self.patch_embed(x)
        for stage in self.stages:
            x, hw = stage(x, hw)
        return self.head(x.mean(dim=1))

    @staticmethod
    def remap_state_dict(sd):
        return remap_original_names(sd)

    def cirrdata_graph(self, in_channels=3):
        """(graph document, set of state_dict names it uses)."""
        return emit_graph(self, in_channels)


def pvt_v2_b2(classes=1000, in_chans=3):
    return PVTv2(classes=classes, in_chans=in_chans, **B2)


_ORIG = re.compile(r'^(?:patch_embed(\d)|block(\d)\.(\d+)|norm(\d))\.')


def remap_original_names(sd):
    """The original PVT repository's names (patch_embed1..4, block1..4.j, norm1..4, mlp.dwconv.dwconv)
    -> timm's; a state_dict already in timm's names (patch_embed.proj.weight) is returned unchanged."""
    if 'patch_embed.proj.weight' in sd or not any(_ORIG.match(k) for k in sd):
        return sd
    out = type(sd)() if isinstance(sd, dict) else {}

    def rename(m):
        if m.group(1):
            i = int(m.group(1))
            return 'patch_embed.' if i == 1 else 'stages.%d.downsample.' % (i - 1)
        if m.group(2):
            return 'stages.%d.blocks.%s.' % (int(m.group(2)) - 1, m.group(3))
        return 'stages.%d.norm.' % (int(m.group(4)) - 1)

    for k, v in sd.items():
        out[_ORIG.sub(rename, k).replace('.dwconv.dwconv.', '.dwconv.')] = v
    return out


def emit_graph(model, in_channels=3):
    """The cirrdata.graph document of a PVTv2, op by op as forward() computes it. Token tensors (B, L, C)
    are the (B, C, H, W) maps they come from (ops_spec: token t = h*W + w at channel c), so the
    transposes and reshapes of forward() are no nodes."""
    g = GraphBuilder(model, in_channels)
    pe = model.patch_embed
    x = g.conv2d(pe.proj, g.input)
    x = g.layer_norm(pe.norm, x)
    for stage in model.stages:
        if stage.downsample is not None:
            x = g.conv2d(stage.downsample.proj, x)
            x = g.layer_norm(stage.downsample.norm, x)
        for blk in stage.blocks:
            p = g.name_of(blk)
            a = blk.attn
            h = g.layer_norm(blk.norm1, x)
            q = g.linear(a.q, h)
            kv_in = h
            if a.sr is not None:
                kv_in = g.layer_norm(a.norm, g.conv2d(a.sr, h))
            kv = g.linear(a.kv, kv_in)
            c = a.q.out_features
            k = g.op(p + '.attn.k', 'slice', kv, start=0, length=c)
            v = g.op(p + '.attn.v', 'slice', kv, start=c, length=c)
            o = g.op(p + '.attn.attention', 'attention', q, k, v, heads=a.num_heads, scale=float(a.scale))
            x = g.op(p + '.add1', 'add', x, g.linear(a.proj, o))
            m = blk.mlp
            h = g.linear(m.fc1, g.layer_norm(blk.norm2, x))
            h = g.op(p + '.mlp.act', 'gelu', g.conv2d(m.dwconv, h))
            x = g.op(p + '.add2', 'add', x, g.linear(m.fc2, h))
        x = g.layer_norm(stage.norm, x)
    x = g.op('pool', 'adaptive_avg_pool2d', x, output_size=[1, 1])  # mean over tokens
    x = g.op('flatten', 'flatten', x, start_dim=1)
    return g.document(g.linear(model.head, x)), g.used
