#!/usr/bin/python3
"""Exports a PyTorch image classifier to a cirrdata model file (schemas/model-graph.md).

  tools/scripts/export_weights.py --arch resnet18 CHECKPOINT.pt -o model.safetensors [--classes 3]
  tools/scripts/export_weights.py --arch cirrnet-small --random [--random-bn] [--seed 0] -o model.safetensors

CHECKPOINT may be a state_dict, a dict holding one under 'state_dict', 'model' or 'model_state_dict'
(as training scripts save them), or a whole pickled nn.Module; a 'module.' prefix (DataParallel /
DistributedDataParallel) is removed, and so is a wrapper's prefix shared by every key (a trainer that
holds the network as `model.`, `encoder.` or `backbone.`) when no key fits the network without it. The architecture comes from python/cirrdata/models.py
(build(arch, classes)); the weights are loaded strictly (only BatchNorm's num_batches_tracked may be
absent), the model is put in eval() and traced with torch.fx, and the traced graph is written as the
"cirrdata.graph" metadata JSON beside every state_dict tensor as F32. An op the graph format does not
have is an error naming the node.
pvt_v2_b2 and mambavision_t are not traced: their modules build the graph themselves (cirrdata/pvt_v2.py,
cirrdata/mambavision.py); a PVTv2 checkpoint with the original PVT repository's names (patch_embed1,
block1.0, norm1, dwconv.dwconv) is renamed to timm's first.

--random exports a freshly initialised model instead of a checkpoint (seeded by --seed);
--random-bn also draws the normalisation parameters at random: every BatchNorm's weight, bias,
running_mean and running_var, every LayerNorm's weight and bias, and layer scales (ConvNeXt), so a
parity test exercises batch-norm folding and the per-channel ops with non-trivial values.

Channels-last code (ConvNeXt: permute to NHWC, LayerNorm / Linear over the last dimension, permute
back) maps onto the NCHW graph without transposes: see convert_graph.

Exit status: 0 on success, 1 for a bad checkpoint or a model that cannot be exported, 2 for wrong usage.
Needs /usr/bin/python3 with torch and torchvision; safetensors is written by cirrdata/safetensors_io.py
(numpy only).
"""
import argparse
import importlib
import json
import math
import operator
import os
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
PKG_DIR = os.path.join(os.path.dirname(os.path.dirname(HERE)), 'python', 'cirrdata')  # HERE: tools/scripts

DEFAULT_CLASS_NAMES = {3: 'mild,moderate,severe', 4: 'mild,moderate,severe,healthy'}
MAX_NODE_NAME = 127


class ExportError(Exception):
    pass


def import_cirrdata_modules():
    """Imports cirrdata.models and cirrdata.safetensors_io without running cirrdata/__init__.py,
    which loads libcirrdata.so through ctypes: exporting needs no built library. The package is
    registered under its real name, so whole pickled models that reference cirrdata.models.* load."""
    if 'cirrdata' not in sys.modules:
        pkg = types.ModuleType('cirrdata')
        pkg.__path__ = [PKG_DIR]
        pkg.__file__ = os.path.join(PKG_DIR, '__init__.py')
        sys.modules['cirrdata'] = pkg
    return importlib.import_module('cirrdata.models'), importlib.import_module('cirrdata.safetensors_io')


# ---------------------------------------------------------------- checkpoint loading

def extract_state_dict(obj, where):
    """The state_dict inside a loaded checkpoint object (see the module docstring), 'module.' removed."""
    checkpoint = importlib.import_module('cirrdata.checkpoint')
    try:
        return checkpoint.strip_module_prefix(checkpoint.state_dict_of(obj, where))
    except ValueError as e:
        raise ExportError(str(e))


def load_weights(model, sd, torch):
    """Loads sd into model strictly, except that BatchNorm's num_batches_tracked may be absent."""
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # size mismatches are raised even when strict=False
        lines = [l.strip() for l in str(e).splitlines() if 'size mismatch' in l]
        raise ExportError('checkpoint does not fit the architecture: %s%s' % (
            '; '.join(lines[:3]) or str(e).splitlines()[0], ' (are --arch and --classes right?)' if lines else ''))
    missing = [k for k in missing if not k.endswith('num_batches_tracked')]
    if missing or unexpected:
        raise ExportError('checkpoint does not fit the architecture: ' +
                          importlib.import_module('cirrdata.checkpoint').mismatch(missing, unexpected))


def randomise_bn(model, torch, gen):
    """Draws BatchNorm statistics and affine parameters so folding them is actually exercised. The
    ranges keep every channel's scale weight/sqrt(var+eps) within about [0.6, 1.7], so deep networks
    neither blow up nor vanish. LayerNorm affines are drawn from the same ranges."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm) and m.weight is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 0.4 + 0.8)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                if m.running_mean is not None:
                    m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                    m.running_var.copy_(torch.rand(c, generator=gen) * 1.0 + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(c, generator=gen) * 0.4 + 0.8)
                    m.bias.copy_(torch.randn(c, generator=gen) * 0.1)
        # the other normalisation parameters, drawn after every batch norm's (so the batch-norm-only
        # models draw exactly what they did before): LayerNorm affine (ConvNeXt's LayerNorm2d too)
        # like the batch norms', and layer scales (ConvNeXt initialises them to 1e-6, which would
        # hide the blocks) in [0.1, 0.5]
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm) and m.elementwise_affine:
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 0.4 + 0.8)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
        for name, p in model.named_parameters():
            if name.split('.')[-1] == 'layer_scale':
                p.copy_(torch.rand(p.shape, generator=gen) * 0.4 + 0.1)


# ---------------------------------------------------------------- fx graph -> cirrdata.graph

def _pair(v, what, node):
    if isinstance(v, int):
        return [v, v]
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return [int(v[0]), int(v[1])]
    raise ExportError("node '%s': %s %r is not an int or a pair of ints" % (node.name, what, v))


def _arg(node, pos, name, default=None):
    """Argument `name` of a call, positional (index pos of node.args) or keyword."""
    if name in node.kwargs:
        return node.kwargs[name]
    if pos < len(node.args):
        return node.args[pos]
    return default


# Layout tags of fx values (see convert_graph): the graph's tensors are NCHW; PyTorch code that works
# channels-last permutes them to NHWC and back. 'nhwc' is the same graph tensor seen through such a
# permute, 'flat' the (N, F) result of a flatten. Ops that work over the last dimension (LayerNorm,
# Linear) are over C on 'nhwc' and over F on 'flat'; on plain 'nchw' they would be over W.
NCHW, NHWC, FLAT = 'nchw', 'nhwc', 'flat'


def convert_graph(gm, torch, in_channels):
    """The "cirrdata.graph" document of a traced GraphModule. Raises ExportError naming the node of
    any op the format lacks.

    Every fx value carries a layout tag (NCHW, NHWC, FLAT above): x.permute(0, 2, 3, 1) of an NCHW
    value is the same graph tensor tagged NHWC, and permute(0, 3, 1, 2) turns it back (torchvision's
    Permute module too), so ConvNeXt's channels-last blocks need no transposes: LayerNorm and Linear
    on NHWC become layer_norm / linear over C. A parameter read in forward() (get_attr: ConvNeXt's
    layer_scale, LayerNorm2d's F.layer_norm weight) may be a layer_norm's weight or bias or a factor
    of a mul (then a `scale`); anything else is refused naming the node. Values that are (N, C, 1, 1)
    by construction (an adaptive average pool to 1x1, 1x1 convolutions and elementwise ops of it) are
    tagged pooled, so that a mul of one with a full-size tensor puts the full-size one first (the
    graph's broadcast operand is the second; squeeze-and-excitation writes scale * input)."""
    import torch.nn as nn
    import torch.nn.functional as F

    nodes = []
    names = {}     # fx node -> graph tensor name (identity ops map to their input's name)
    layout = {}    # fx node -> NCHW / NHWC / FLAT
    pooled = set()  # fx nodes whose value is (N, C, 1, 1) whatever the input size
    attrs = {}     # get_attr fx node -> state_dict name
    used = set()   # parameter names the graph references
    input_name = None
    output_name = None

    def ref(node, v, what='input'):
        if isinstance(v, torch.fx.Node) and v in attrs:
            raise ExportError("node '%s': %s '%s' is a parameter used as a tensor (only a layer norm's weight/bias "
                              "or a factor of a multiplication can be)" % (node.name, what, attrs[v]))
        if not isinstance(v, torch.fx.Node):
            raise ExportError("node '%s': %s %r is not a tensor from the graph" % (node.name, what, v))
        return names[v]

    def lay(v):
        return layout.get(v, NCHW)

    def need(node, v, want, what):
        if lay(v) not in want:
            raise ExportError("node '%s': %s on a %s tensor (this op needs %s; a permute is missing or not "
                              "supported)" % (node.name, what, lay(v).upper(), ' or '.join(w.upper() for w in want)))

    def param(prefix, attr, required=True):
        full = prefix + '.' + attr
        if full not in state_names:
            if required:
                raise ExportError("module '%s' has no tensor '%s' in the state_dict" % (prefix, full))
            return None
        used.add(full)
        return full

    state_names = set(gm.state_dict().keys())

    def emit(node, op, inputs, **fields):
        if len(node.name.encode()) > MAX_NODE_NAME:
            raise ExportError("node '%s': name longer than %d bytes" % (node.name, MAX_NODE_NAME))
        d = {'name': node.name, 'op': op, 'inputs': inputs}
        d.update(fields)
        nodes.append(d)
        names[node] = node.name
        # the layout and pooled tags carry over from the first input (ops that change them set them)
        src = node.args[0] if node.args and isinstance(node.args[0], torch.fx.Node) else None
        if src is not None:
            layout[node] = lay(src)
            if src in pooled and op not in ('flatten',):
                pooled.add(node)

    def alias(node, src, new_layout=None):
        """node is src's tensor (an identity, or the same storage through a permute)."""
        names[node] = ref(node, src)
        layout[node] = new_layout or lay(src)
        if src in pooled:
            pooled.add(node)

    def permute(node, src, dims):
        dims = [int(d) for d in dims] if isinstance(dims, (list, tuple)) else None
        if dims == [0, 2, 3, 1] and lay(src) == NCHW:
            alias(node, src, NHWC)
        elif dims == [0, 3, 1, 2] and lay(src) == NHWC:
            alias(node, src, NCHW)
        else:
            raise ExportError("node '%s': permute%s of a %s tensor (only NCHW -> NHWC (0, 2, 3, 1) and back "
                              "(0, 3, 1, 2) are supported)" % (node.name, tuple(dims) if dims else '(?)',
                                                              lay(src).upper()))

    def param_of(node, v, what):
        """The state_dict name of a get_attr parameter, or None for None."""
        if v is None:
            return None
        if not (isinstance(v, torch.fx.Node) and v in attrs):
            raise ExportError("node '%s': %s is not a parameter of the model" % (node.name, what))
        used.add(attrs[v])
        return attrs[v]

    def layer_norm(node, src, shape, weight, bias, eps):
        need(node, src, (NHWC, FLAT), 'layer_norm over the last dimension')
        shape = [shape] if isinstance(shape, int) else list(shape)
        if len(shape) != 1:
            raise ExportError("node '%s': layer_norm over %d dimensions (only the channels, one dimension, is "
                              "supported)" % (node.name, len(shape)))
        emit(node, 'layer_norm', [ref(node, src)], weight=weight, bias=bias, eps=float(eps))

    def linear(node, src, weight, bias):
        need(node, src, (NHWC, FLAT), 'linear over the last dimension')
        emit(node, 'linear', [ref(node, src)], weight=weight, bias=bias)

    def mul(node, a, b):
        pa = isinstance(a, torch.fx.Node) and a in attrs
        pb = isinstance(b, torch.fx.Node) and b in attrs
        if pa and pb:
            raise ExportError("node '%s': a product of two parameters" % node.name)
        if pa or pb:  # layer scale: parameter * tensor
            p, x = (a, b) if pa else (b, a)
            name = param_of(node, p, 'the factor')
            shape = tuple(state_shapes[name])
            ok = (lay(x) == NCHW and len(shape) == 3 and shape[1:] == (1, 1)) or (
                lay(x) in (NHWC, FLAT) and len(shape) == 1)
            if not ok:
                raise ExportError("node '%s': parameter '%s' of shape %s times a %s tensor (a per-channel factor "
                                  "is (C, 1, 1) on NCHW or (C) on NHWC)" % (node.name, name, shape, lay(x).upper()))
            emit(node, 'scale', [ref(node, x)], weight=name, bias=None)
            layout[node] = lay(x)
            return
        if not (isinstance(a, torch.fx.Node) and isinstance(b, torch.fx.Node)):
            raise ExportError("node '%s': a product with a constant (%r) is not supported" % (
                node.name, b if isinstance(a, torch.fx.Node) else a))
        if lay(a) != lay(b) or lay(a) != NCHW:
            raise ExportError("node '%s': a product of %s and %s tensors (only NCHW ones are supported)" % (
                node.name, lay(a).upper(), lay(b).upper()))
        if a in pooled and b not in pooled:  # the broadcast (N, C, 1, 1) operand goes second
            a, b = b, a
        emit(node, 'mul', [ref(node, a), ref(node, b)])
        layout[node] = NCHW
        if a in pooled and b in pooled:
            pooled.add(node)
        else:
            pooled.discard(node)

    def one_input(node):
        if not node.args:
            raise ExportError("node '%s' (%s) has no input" % (node.name, node.target))
        return [ref(node, node.args[0])]

    def softmax(node, dim):
        if dim != 1:
            raise ExportError("node '%s': softmax over dim %r (only dim=1 is supported)" % (node.name, dim))
        need(node, node.args[0], (NCHW, FLAT), 'softmax over dim 1')
        emit(node, 'softmax', one_input(node), dim=1)

    def flatten(node, start, end):
        if start != 1 or end != -1:
            raise ExportError("node '%s': flatten(start_dim=%r, end_dim=%r) (only start_dim=1, end_dim=-1 is "
                              "supported)" % (node.name, start, end))
        need(node, node.args[0], (NCHW, FLAT), 'flatten')
        emit(node, 'flatten', one_input(node), start_dim=1)
        layout[node] = FLAT

    def add(node, a, b, alpha=1):
        if alpha != 1:
            raise ExportError("node '%s': add with alpha=%r (only 1 is supported)" % (node.name, alpha))
        if isinstance(a, torch.fx.Node) and isinstance(b, torch.fx.Node) and lay(a) != lay(b):
            raise ExportError("node '%s': a sum of %s and %s tensors" % (node.name, lay(a).upper(), lay(b).upper()))
        emit(node, 'add', [ref(node, a), ref(node, b)])
        if not (a in pooled and b in pooled):
            pooled.discard(node)

    def max_pool(node, kernel, stride, padding, dilation, ceil_mode, return_indices=False):
        if return_indices:
            raise ExportError("node '%s': max_pool2d with return_indices" % node.name)
        need(node, node.args[0], (NCHW,), 'max_pool2d')
        emit(node, 'max_pool2d', one_input(node), kernel=_pair(kernel, 'kernel', node),
             stride=_pair(stride if stride not in (None, []) else kernel, 'stride', node),
             padding=_pair(padding, 'padding', node), dilation=_pair(dilation, 'dilation', node),
             ceil_mode=bool(ceil_mode))

    def avg_pool(node, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override=None):
        if divisor_override is not None:
            raise ExportError("node '%s': avg_pool2d with divisor_override" % node.name)
        need(node, node.args[0], (NCHW,), 'avg_pool2d')
        emit(node, 'avg_pool2d', one_input(node), kernel=_pair(kernel, 'kernel', node),
             stride=_pair(stride if stride not in (None, []) else kernel, 'stride', node),
             padding=_pair(padding, 'padding', node), ceil_mode=bool(ceil_mode),
             count_include_pad=bool(count_include_pad))

    def adaptive_avg(node, size):
        out = _pair(size, 'output_size', node) if size is not None and not (
            isinstance(size, (tuple, list)) and None in size) else None
        if out is None:
            raise ExportError("node '%s': adaptive_avg_pool2d with output_size %r (None sizes are not "
                              "supported)" % (node.name, size))
        need(node, node.args[0], (NCHW,), 'adaptive_avg_pool2d')
        emit(node, 'adaptive_avg_pool2d', one_input(node), output_size=out)
        if out == [1, 1]:
            pooled.add(node)
        else:
            pooled.discard(node)

    relu_fns = {F.relu, torch.relu, torch.relu_}
    # activations with one input and no parameters: function -> op
    act_fns = {F.silu: 'silu', F.hardswish: 'hardswish', F.hardsigmoid: 'hardsigmoid'}
    act_modules = ((nn.SiLU, 'silu'), (nn.Hardswish, 'hardswish'), (nn.Hardsigmoid, 'hardsigmoid'))

    def gelu(node, approximate):
        if approximate not in ('none', 'tanh'):
            raise ExportError("node '%s': gelu with approximate=%r (only 'none' and 'tanh' are supported)"
                              % (node.name, approximate))
        emit(node, 'gelu' if approximate == 'none' else 'gelu_tanh', one_input(node))

    add_fns = {operator.add, operator.iadd, torch.add}
    mul_fns = {operator.mul, operator.imul, torch.mul}
    try:
        from torchvision.ops import stochastic_depth as _sd_fn
        from torchvision.ops.misc import Permute as _PermuteModule
    except ImportError:
        _sd_fn, _PermuteModule = None, None
    state_shapes = {k: tuple(v.shape) for k, v in gm.state_dict().items()}
    for node in gm.graph.nodes:
        if node.op == 'placeholder':
            if input_name is not None:
                raise ExportError("node '%s': the model takes more than one input" % node.name)
            input_name = node.name
            names[node] = node.name
        elif node.op == 'output':
            out = node.args[0]
            if not isinstance(out, torch.fx.Node):
                raise ExportError('the model returns %s, not a single tensor' % type(out).__name__)
            if lay(out) == NHWC:
                raise ExportError("node '%s': the model returns a channels-last (NHWC) tensor" % node.name)
            output_name = ref(node, out)
        elif node.op == 'call_module':
            m = gm.get_submodule(node.target)
            t = node.target
            if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d)) and node.args:
                need(node, node.args[0], (NCHW,), type(m).__name__)
            if isinstance(m, nn.Conv2d):
                if isinstance(m.padding, str) or m.padding_mode != 'zeros':
                    raise ExportError("node '%s': Conv2d with padding %r, padding_mode '%s' (only explicit zero "
                                      "padding is supported)" % (node.name, m.padding, m.padding_mode))
                emit(node, 'conv2d', one_input(node), weight=param(t, 'weight'),
                     bias=param(t, 'bias') if m.bias is not None else None,
                     stride=_pair(m.stride, 'stride', node), padding=_pair(m.padding, 'padding', node),
                     dilation=_pair(m.dilation, 'dilation', node), groups=int(m.groups))
                if tuple(m.kernel_size) != (1, 1) or _pair(m.padding, 'padding', node) != [0, 0]:
                    pooled.discard(node)
            elif isinstance(m, nn.BatchNorm2d):
                if not m.affine or not m.track_running_stats or m.running_mean is None:
                    raise ExportError("node '%s': BatchNorm2d without affine parameters or running statistics"
                                      % node.name)
                emit(node, 'batch_norm', one_input(node), weight=param(t, 'weight'), bias=param(t, 'bias'),
                     running_mean=param(t, 'running_mean'), running_var=param(t, 'running_var'),
                     eps=float(m.eps))
            elif isinstance(m, nn.ReLU):
                emit(node, 'relu', one_input(node))
            elif isinstance(m, nn.GELU):
                gelu(node, m.approximate)
            elif any(isinstance(m, k) for k, _ in act_modules):
                emit(node, next(op for k, op in act_modules if isinstance(m, k)), one_input(node))
            elif isinstance(m, nn.MaxPool2d):
                max_pool(node, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, m.return_indices)
            elif isinstance(m, nn.AvgPool2d):
                avg_pool(node, m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad,
                         m.divisor_override)
            elif isinstance(m, nn.AdaptiveAvgPool2d):
                adaptive_avg(node, m.output_size)
            elif isinstance(m, nn.Linear):
                linear(node, node.args[0], param(t, 'weight'), param(t, 'bias') if m.bias is not None else None)
            elif isinstance(m, nn.LayerNorm):
                layer_norm(node, node.args[0], m.normalized_shape,
                           param(t, 'weight') if m.elementwise_affine else None,
                           param(t, 'bias') if m.elementwise_affine else None, m.eps)
            elif _PermuteModule is not None and isinstance(m, _PermuteModule):
                permute(node, node.args[0], m.dims)
            elif isinstance(m, (nn.Dropout, nn.Dropout2d)):
                emit(node, 'dropout', one_input(node))
            elif isinstance(m, nn.Flatten):
                flatten(node, m.start_dim, m.end_dim)
            elif isinstance(m, nn.Softmax):
                softmax(node, m.dim)
            elif isinstance(m, nn.Identity):
                alias(node, node.args[0])
            else:
                raise ExportError("node '%s': module '%s' of type %s is not supported by the cirrdata graph "
                                  "format (schemas/model-graph.md)" % (node.name, t, type(m).__name__))
        elif node.op == 'call_function':
            f = node.target
            if f in add_fns:
                add(node, _arg(node, 0, 'input'), _arg(node, 1, 'other'), _arg(node, 2, 'alpha', 1))
            elif f in mul_fns:
                mul(node, _arg(node, 0, 'input'), _arg(node, 1, 'other'))
            elif f is torch.permute:
                permute(node, node.args[0], _arg(node, 1, 'dims'))
            elif f is F.layer_norm:
                layer_norm(node, node.args[0], _arg(node, 1, 'normalized_shape'),
                           param_of(node, _arg(node, 2, 'weight'), 'the weight'),
                           param_of(node, _arg(node, 3, 'bias'), 'the bias'), _arg(node, 4, 'eps', 1e-5))
            elif f is F.linear:
                linear(node, node.args[0], param_of(node, _arg(node, 1, 'weight'), 'the weight'),
                       param_of(node, _arg(node, 2, 'bias'), 'the bias'))
            elif _sd_fn is not None and f is _sd_fn:
                # StochasticDepth: the identity at inference (training=False, as traced after eval())
                if _arg(node, 3, 'training', True):
                    raise ExportError("node '%s': stochastic_depth in training mode" % node.name)
                alias(node, node.args[0])
            elif f in relu_fns:
                emit(node, 'relu', one_input(node))
            elif f is F.gelu:
                gelu(node, _arg(node, 1, 'approximate', 'none'))
            elif f in act_fns:
                emit(node, act_fns[f], one_input(node))
            elif f is torch.flatten:
                flatten(node, _arg(node, 1, 'start_dim', 0), _arg(node, 2, 'end_dim', -1))
            elif f in (torch.softmax, F.softmax):
                softmax(node, _arg(node, 1, 'dim'))
            elif f in (F.dropout, torch.dropout):
                emit(node, 'dropout', one_input(node))
            elif f is F.adaptive_avg_pool2d:
                adaptive_avg(node, _arg(node, 1, 'output_size'))
            elif f in (F.max_pool2d, torch.max_pool2d):
                max_pool(node, _arg(node, 1, 'kernel_size'), _arg(node, 2, 'stride'), _arg(node, 3, 'padding', 0),
                         _arg(node, 4, 'dilation', 1), _arg(node, 5, 'ceil_mode', False),
                         _arg(node, 6, 'return_indices', False))
            elif f in (F.avg_pool2d,):
                avg_pool(node, _arg(node, 1, 'kernel_size'), _arg(node, 2, 'stride'), _arg(node, 3, 'padding', 0),
                         _arg(node, 4, 'ceil_mode', False), _arg(node, 5, 'count_include_pad', True),
                         _arg(node, 6, 'divisor_override'))
            else:
                raise ExportError("node '%s': function %s is not supported by the cirrdata graph format "
                                  "(schemas/model-graph.md)" % (node.name, getattr(f, '__name__', f)))
        elif node.op == 'call_method':
            mth = node.target
            if mth in ('add', 'add_'):
                add(node, node.args[0], _arg(node, 1, 'other'), _arg(node, 2, 'alpha', 1))
            elif mth in ('mul', 'mul_'):
                mul(node, node.args[0], _arg(node, 1, 'other'))
            elif mth == 'permute':
                dims = node.args[1:] if len(node.args) > 2 else _arg(node, 1, 'dims')
                permute(node, node.args[0], dims)
            elif mth in ('relu', 'relu_'):
                emit(node, 'relu', one_input(node))
            elif mth == 'flatten':
                flatten(node, _arg(node, 1, 'start_dim', 0), _arg(node, 2, 'end_dim', -1))
            elif mth == 'softmax':
                softmax(node, _arg(node, 1, 'dim'))
            elif mth == 'contiguous':
                alias(node, node.args[0])
            else:
                raise ExportError("node '%s': method .%s() is not supported by the cirrdata graph format "
                                  "(schemas/model-graph.md)" % (node.name, mth))
        elif node.op == 'get_attr':  # a parameter read in forward(): see the docstring
            if node.target not in state_shapes:
                raise ExportError("node '%s': attribute '%s' is not a tensor of the state_dict" % (
                    node.name, node.target))
            attrs[node] = node.target
        else:
            raise ExportError("node '%s': op %s (%s) is not supported by the cirrdata graph format"
                              % (node.name, node.op, node.target))
    if input_name is None or output_name is None:
        raise ExportError('the traced graph has no input or no output')
    if output_name == input_name:
        raise ExportError('the model returns its input unchanged')
    return {'version': 1, 'input': {'name': input_name, 'channels': int(in_channels)},
            'output': output_name, 'nodes': nodes}, used


# ---------------------------------------------------------------- schema check

_FIELDS = {
    'conv2d': ('weight', 'bias', 'stride', 'padding', 'dilation', 'groups'),
    'batch_norm': ('weight', 'bias', 'running_mean', 'running_var', 'eps'),
    'relu': (), 'dropout': (), 'add': (),
    'gelu': (), 'gelu_tanh': (), 'silu': (), 'hardswish': (), 'hardsigmoid': (),
    'max_pool2d': ('kernel', 'stride', 'padding', 'dilation', 'ceil_mode'),
    'avg_pool2d': ('kernel', 'stride', 'padding', 'ceil_mode', 'count_include_pad'),
    'adaptive_avg_pool2d': ('output_size',),
    'flatten': ('start_dim',),
    'linear': ('weight', 'bias'),
    'softmax': ('dim',),
    'layer_norm': ('weight', 'bias', 'eps'),
    'mul': (),
    'scale': ('weight', 'bias'),
}
# The ops of the transformer networks (issue 17; cirrdata/pvt_v2.py, cirrdata/mambavision.py emit them).
_FIELDS.update({
    'concat': (), 'slice': ('start', 'length'), 'attention': ('heads', 'scale'), 'softplus': ('beta', 'threshold'),
    'dwconv1d': ('weight', 'bias', 'padding'),
    'selective_scan': ('A_log', 'D', 'delta_bias', 'delta_softplus'),
    'window_partition': ('window',), 'window_reverse': ('window',),
})
_INPUTS = {'add': 2, 'mul': 2, 'concat': 2, 'window_reverse': 2, 'attention': 3, 'selective_scan': 4}


def check_graph(graph, shapes):
    """Checks a graph document against schemas/model-graph.md (fields, references, limits, tensor
    shapes as far as they are static). `shapes` maps tensor name -> shape tuple. Raises ExportError."""
    def fail(node, msg):
        raise ExportError("graph node '%s': %s" % (node.get('name'), msg))

    if graph.get('version') != 1 or set(graph) != {'version', 'input', 'output', 'nodes'}:
        raise ExportError('graph: wrong top-level keys or version')
    inp = graph['input']
    if set(inp) != {'name', 'channels'} or not isinstance(inp['channels'], int) or inp['channels'] < 1:
        raise ExportError('graph: bad input %r' % inp)
    nodes = graph['nodes']
    if not 1 <= len(nodes) <= 4096:
        raise ExportError('graph: %d nodes (1..4096 allowed)' % len(nodes))
    seen = {inp['name']}
    for n in nodes:
        op = n.get('op')
        if op not in _FIELDS:
            fail(n, 'unknown op %r' % op)
        want = {'name', 'op', 'inputs'} | set(_FIELDS[op])
        if set(n) != want:
            fail(n, 'fields %s, expected %s' % (sorted(n), sorted(want)))
        name = n['name']
        if not isinstance(name, str) or not name or len(name.encode()) > MAX_NODE_NAME or name in seen:
            fail(n, 'name empty, too long or not unique')
        k = _INPUTS.get(op, 1)
        if len(n['inputs']) != k or any(i not in seen for i in n['inputs']):
            fail(n, 'inputs %r must be %d earlier node(s)' % (n['inputs'], k))
        for key in ('kernel', 'stride', 'dilation'):
            if key in n and not (len(n[key]) == 2 and all(isinstance(v, int) and 1 <= v <= 64 for v in n[key])):
                fail(n, '%s %r outside 1..64' % (key, n[key]))
        if 'padding' in n:
            if not (len(n['padding']) == 2 and all(isinstance(v, int) and 0 <= v <= 64 for v in n['padding'])):
                fail(n, 'padding %r outside 0..64' % (n['padding'],))
            if op in ('max_pool2d', 'avg_pool2d') and any(2 * p > kk for p, kk in zip(n['padding'], n['kernel'])):
                fail(n, 'pool padding %r above half the kernel %r' % (n['padding'], n['kernel']))
        if op == 'adaptive_avg_pool2d' and not all(isinstance(v, int) and 1 <= v <= 64 for v in n['output_size']):
            fail(n, 'output_size outside 1..64')
        if op in ('flatten', 'softmax') and n.get('start_dim', n.get('dim')) != 1:
            fail(n, 'start_dim/dim must be 1')
        for key in ('ceil_mode', 'count_include_pad'):
            if key in n and not isinstance(n[key], bool):
                fail(n, '%s is not a boolean' % key)
        for key in ('weight', 'bias', 'running_mean', 'running_var', 'A_log', 'D', 'delta_bias'):
            if key in n and n[key] is not None and n[key] not in shapes:
                fail(n, '%s %r is not a tensor of the file' % (key, n[key]))
        check_new_op(n, shapes, fail)
        if op == 'conv2d':
            w = shapes[n['weight']]
            g = n['groups']
            if len(w) != 4 or not isinstance(g, int) or g < 1 or w[0] % g:
                fail(n, 'weight shape %r / groups %r' % (w, g))
            if n['bias'] is not None and shapes[n['bias']] != (w[0],):
                fail(n, 'bias shape')
            if not all(1 <= v <= 64 for v in w[2:]):
                fail(n, 'kernel size outside 1..64')
        if op == 'batch_norm':
            c = shapes[n['weight']]
            if len(c) != 1 or any(shapes[n[k]] != c for k in ('bias', 'running_mean', 'running_var')):
                fail(n, 'batch-norm tensor shapes differ')
            if not (isinstance(n['eps'], float) and math.isfinite(n['eps']) and n['eps'] > 0):
                fail(n, 'eps must be finite and > 0')
        if op == 'linear':
            w = shapes[n['weight']]
            if len(w) != 2 or (n['bias'] is not None and shapes[n['bias']] != (w[0],)):
                fail(n, 'linear weight/bias shapes')
        if op in ('layer_norm', 'scale'):
            w = shapes[n['weight']] if n['weight'] is not None else None
            b = shapes[n['bias']] if n['bias'] is not None else None
            if op == 'scale' and (w is None or not (len(w) == 1 or (len(w) == 3 and w[1:] == (1, 1)))):
                fail(n, 'scale weight shape %r (C) or (C, 1, 1)' % (w,))
            if op == 'layer_norm' and w is not None and len(w) != 1:
                fail(n, 'layer_norm weight shape %r' % (w,))
            if b is not None and (len(b) != 1 or (w is not None and b[0] != w[0])):
                fail(n, '%s bias shape %r' % (op, b))
        if op == 'layer_norm' and not (isinstance(n['eps'], float) and math.isfinite(n['eps']) and n['eps'] > 0):
            fail(n, 'eps must be finite and > 0')
        seen.add(name)
    if graph['output'] not in seen or graph['output'] == inp['name']:
        raise ExportError('graph: output %r is not a node' % graph['output'])


def check_new_op(n, shapes, fail):
    """Fields and tensor shapes of the issue-17 ops (the lead's op contract)."""
    op = n['op']

    def vec(key, c=None):
        s = shapes[n[key]]
        if len(s) != 1 or (c is not None and s[0] != c):
            fail(n, '%s shape %r, expected (%s)' % (key, s, 'C' if c is None else c))
        return s[0]

    def positive(key, top):
        if not (isinstance(n[key], int) and not isinstance(n[key], bool) and 1 <= n[key] <= top):
            fail(n, '%s %r outside 1..%d' % (key, n[key], top))

    if op in ('layer_norm', 'scale'):
        c = None
        if n['weight'] is not None:
            s = shapes[n['weight']]
            if op == 'scale' and len(s) == 3 and s[1:] == (1, 1):
                s = s[:1]
            if len(s) != 1:
                fail(n, 'weight shape %r' % (s,))
            c = s[0]
        elif op == 'scale':
            fail(n, 'scale without a weight')
        if n['bias'] is not None:
            vec('bias', c)
        if op == 'layer_norm' and not (isinstance(n['eps'], float) and math.isfinite(n['eps']) and n['eps'] > 0):
            fail(n, 'eps must be finite and > 0')
    elif op == 'slice':
        if not (isinstance(n['start'], int) and n['start'] >= 0):
            fail(n, 'start %r' % (n['start'],))
        positive('length', 1 << 20)
    elif op == 'attention':
        positive('heads', 4096)
        if not (isinstance(n['scale'], float) and math.isfinite(n['scale']) and n['scale'] > 0):
            fail(n, 'scale must be finite and > 0')
    elif op == 'softplus':
        if not all(isinstance(n[k], (int, float)) and math.isfinite(n[k]) for k in ('beta', 'threshold')) \
                or n['beta'] <= 0:
            fail(n, 'beta must be > 0, threshold finite')
    elif op == 'dwconv1d':
        w = shapes[n['weight']]
        if len(w) != 3 or w[1] != 1 or not 1 <= w[2] <= 64:
            fail(n, 'weight shape %r, expected (C, 1, K) with K 1..64' % (w,))
        if n['bias'] is not None:
            vec('bias', w[0])
        if sum(n['padding']) != w[2] - 1:
            fail(n, 'padding %r does not sum to K - 1 = %d' % (n['padding'], w[2] - 1))
    elif op == 'selective_scan':
        a = shapes[n['A_log']]
        if len(a) != 2:
            fail(n, 'A_log shape %r, expected (D, S)' % (a,))
        for key in ('D', 'delta_bias'):
            if n[key] is not None:
                vec(key, a[0])
        if not isinstance(n['delta_softplus'], bool):
            fail(n, 'delta_softplus is not a boolean')
    elif op in ('window_partition', 'window_reverse'):
        positive('window', 64)


def check_running_var(sd, graph):
    """running_var + eps > 0 (a reader rejects the file otherwise)."""
    for n in graph['nodes']:
        if n['op'] == 'batch_norm':
            v = sd[n['running_var']]
            if not bool(((v + n['eps']) > 0).all()):
                raise ExportError("graph node '%s': running_var + eps <= 0" % n['name'])


# ---------------------------------------------------------------- main

def parse_args(argv):
    p = argparse.ArgumentParser(prog='export_weights.py',
                                description='Export a PyTorch classifier checkpoint to a cirrdata model file '
                                            '(safetensors + cirrdata.graph).')
    p.add_argument('checkpoint', nargs='?', help='checkpoint (.pt/.pth): state_dict, dict with one, or nn.Module')
    p.add_argument('--arch', required=True, help='architecture (python/cirrdata/models.py ARCHS)')
    p.add_argument('-o', '--output', required=True, help='output .safetensors path')
    p.add_argument('--classes', type=int, default=3, help='number of classes (default 3)')
    p.add_argument('--random', action='store_true', help='export a randomly initialised model, no checkpoint')
    p.add_argument('--random-bn', action='store_true', help='with --random: random normalisation parameters too '
                                                           '(BatchNorm statistics, LayerNorm affine, layer scale)')
    p.add_argument('--seed', type=int, default=0, help='seed of --random / --random-bn (default 0)')
    p.add_argument('--input-size', default='256,256', help="nominal input 'H,W' (default 256,256)")
    p.add_argument('--class-names', default=None, help='comma-separated class names (default: the staging names '
                                                       'for 3 or 4 classes)')
    p.add_argument('--quiet', action='store_true', help='no summary line')
    a = p.parse_args(argv)
    if a.random == bool(a.checkpoint):
        p.error('give either CHECKPOINT or --random')
    if a.random_bn and not a.random:
        p.error('--random-bn needs --random')
    if a.classes < 1:
        p.error('--classes must be >= 1')
    try:
        hw = [int(v) for v in a.input_size.split(',')]
        assert len(hw) == 2 and min(hw) >= 1
    except (ValueError, AssertionError):
        p.error("--input-size must be 'H,W'")
    return p, a


def export(a, models, stio):
    import numpy as np
    import torch
    import torch.fx

    if a.arch not in models.ARCHS:
        raise ExportError("unknown --arch '%s' (known: %s)" % (a.arch, ', '.join(models.ARCHS)))
    torch.manual_seed(a.seed)
    model = models.build(a.arch, a.classes)
    if a.random:
        source = 'random (seed %d%s)' % (a.seed, ', random batch norm' if a.random_bn else '')
        if a.random_bn:
            gen = torch.Generator().manual_seed(a.seed + 1)
            randomise_bn(model, torch, gen)
    else:
        source = os.path.basename(a.checkpoint)
        try:
            obj = torch.load(a.checkpoint, map_location='cpu')
        except FileNotFoundError:
            raise ExportError('%s: no such file' % a.checkpoint)
        except Exception as e:  # pickle, zip and torch errors all mean the same to the user
            raise ExportError('%s: cannot load as a PyTorch checkpoint: %s: %s' % (
                a.checkpoint, type(e).__name__, str(e).splitlines()[0] if str(e) else ''))
        sd = extract_state_dict(obj, a.checkpoint)
        # a network saved as an attribute of a trainer's wrapper (model., encoder., backbone.)
        sd = importlib.import_module('cirrdata.checkpoint').strip_wrapper_prefix(sd, model.state_dict().keys())
        if hasattr(model, 'remap_state_dict'):  # another upstream's names (the original PVT repository's)
            sd = model.remap_state_dict(sd)
        load_weights(model, sd, torch)
    model.eval()
    # Networks whose reshapes torch.fx cannot express in the format's ops emit their own graph.
    emit = getattr(model, 'cirrdata_graph', None)
    if emit is None:
        try:
            gm = torch.fx.symbolic_trace(model)
        except Exception as e:
            raise ExportError('torch.fx cannot trace %s: %s: %s' % (a.arch, type(e).__name__, e))

    sd = {k: v for k, v in model.state_dict().items() if not k.endswith('num_batches_tracked')}
    first_conv = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    in_channels = first_conv.in_channels if first_conv is not None else 3
    if emit is None:
        graph, used = convert_graph(gm, torch, in_channels)
    else:
        try:
            graph, used = emit(in_channels)
        except ValueError as e:
            raise ExportError('%s: %s' % (a.arch, e))
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    check_graph(graph, shapes)
    check_running_var(sd, graph)
    unused = [k for k in sd if k not in used]
    if unused:
        raise ExportError('state_dict tensors the traced graph never uses: %s' % ', '.join(unused[:5]))

    classes = graph_classes(graph, shapes)
    if classes != a.classes:
        raise ExportError('the model has %d outputs, not --classes %d' % (classes, a.classes))
    class_names = a.class_names if a.class_names is not None else DEFAULT_CLASS_NAMES.get(a.classes)
    if class_names is not None and len(class_names.split(',')) != a.classes:
        raise ExportError('--class-names has %d names for %d classes' % (len(class_names.split(',')), a.classes))

    meta = {
        'cirrdata.format': '1',
        'cirrdata.arch': a.arch,
        'cirrdata.classes': str(a.classes),
        'cirrdata.in_channels': str(in_channels),
        'cirrdata.input_size': a.input_size.replace(' ', ''),
        'cirrdata.graph': json.dumps(graph, separators=(',', ':')),
        'cirrdata.source': source,
        'cirrdata.torch': torch.__version__,
    }
    if class_names is not None:
        meta['cirrdata.class_names'] = class_names
    arrays = {k: v.detach().cpu().to(torch.float32).contiguous().numpy() for k, v in sd.items()}
    for k, v in arrays.items():
        if not np.isfinite(v).all():
            raise ExportError("tensor '%s' holds NaN or infinity" % k)
    out_dir = os.path.dirname(os.path.abspath(a.output))
    if not os.path.isdir(out_dir):
        raise ExportError('%s: the folder %s does not exist' % (a.output, out_dir))
    tmp = a.output + '.tmp-%d' % os.getpid()
    try:
        nbytes = stio.write(tmp, arrays, meta)
        os.replace(tmp, a.output)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise ExportError('%s: cannot write: %s' % (a.output, e.strerror or e))
    params = sum(int(p.numel()) for p in model.parameters())  # learnable ones; buffers are in the tensor count
    return params, len(arrays), nbytes


def graph_classes(graph, shapes):
    """Output count of the graph's result: the out-features of the last linear on the path to it."""
    by_name = {n['name']: n for n in graph['nodes']}
    n = by_name.get(graph['output'])
    while n is not None:
        if n['op'] == 'linear':
            return shapes[n['weight']][0]
        if n['op'] == 'conv2d':
            return shapes[n['weight']][0]
        n = by_name.get(n['inputs'][0])
    return -1


def main(argv=None):
    parser, a = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        models, stio = import_cirrdata_modules()
    except ImportError as e:
        print('export_weights.py: error: %s (run with /usr/bin/python3, which has torch and torchvision)' % e,
              file=sys.stderr)
        return 1
    if a.arch not in models.ARCHS:
        parser.print_usage(sys.stderr)
        print("export_weights.py: error: unknown --arch '%s' (known: %s)" % (a.arch, ', '.join(models.ARCHS)),
              file=sys.stderr)
        return 2
    try:
        params, ntensors, nbytes = export(a, models, stio)
    except ExportError as e:
        print('export_weights.py: error: %s' % e, file=sys.stderr)
        return 1
    if not a.quiet:
        print('exported %s: %d params, %d tensors, %d bytes -> %s' % (a.arch, params, ntensors, nbytes, a.output))
    return 0


if __name__ == '__main__':
    sys.exit(main())
