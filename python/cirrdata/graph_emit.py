"""Builds a "cirrdata.graph" document (schemas/model-graph.md) op by op, for networks whose forward pass
torch.fx cannot express in the format's ops (token reshapes, windows): cirrdata/pvt_v2.py and
cirrdata/mambavision.py walk their own modules and call the methods here, one per graph node.

Tensor names are the state_dict names: a module's parameters are found under the module's name in
model.named_modules(), so the graph cannot refer to a tensor the file does not hold. Node names are
module names (a node that is one module's whole output) or a module name plus a suffix.
Pure Python (no torch import): the modules passed in are only read.
"""

MAX_NODE_NAME = 127


class GraphError(ValueError):
    pass


class GraphBuilder:
    """Collects nodes in execution order; `used` is the set of state_dict names referenced."""

    def __init__(self, model, in_channels, input_name='x'):
        self.module_names = {id(m): n for n, m in model.named_modules()}
        self.state_names = set(model.state_dict().keys())
        self.input = input_name
        self.in_channels = int(in_channels)
        self.nodes = []
        self.seen = {input_name}
        self.used = set()

    # ---------------------------------------------------------------- bookkeeping

    def name_of(self, module):
        n = self.module_names.get(id(module))
        if n is None:
            raise GraphError('module %r is not part of the model' % type(module).__name__)
        return n

    def tensor(self, module, attr, required=True):
        """The state_dict name of module.<attr>, or None where the module has no such tensor and it is optional."""
        full = self.name_of(module) + '.' + attr
        if full not in self.state_names:
            if required:
                raise GraphError("module '%s' has no tensor '%s' in the state_dict" % (self.name_of(module), full))
            return None
        self.used.add(full)
        return full

    def node(self, name, op, inputs, **fields):
        if not name or len(name.encode()) > MAX_NODE_NAME or name in self.seen:
            raise GraphError("node name %r is empty, longer than %d bytes or not unique" % (name, MAX_NODE_NAME))
        for i in inputs:
            if i not in self.seen:
                raise GraphError("node '%s': input %r is not an earlier node" % (name, i))
        d = {'name': name, 'op': op, 'inputs': list(inputs)}
        d.update(fields)
        self.nodes.append(d)
        self.seen.add(name)
        return name

    def document(self, output):
        if output not in self.seen or output == self.input:
            raise GraphError('output %r is not a node' % output)
        return {'version': 1, 'input': {'name': self.input, 'channels': self.in_channels},
                'output': output, 'nodes': self.nodes}

    # ---------------------------------------------------------------- one module -> one node

    def conv2d(self, m, x, name=None):
        def pair(v):
            return [int(v[0]), int(v[1])] if isinstance(v, (tuple, list)) else [int(v), int(v)]
        if isinstance(m.padding, str) or m.padding_mode != 'zeros':
            raise GraphError("conv '%s': padding %r / mode %r" % (self.name_of(m), m.padding, m.padding_mode))
        return self.node(name or self.name_of(m), 'conv2d', [x], weight=self.tensor(m, 'weight'),
                         bias=self.tensor(m, 'bias', False), stride=pair(m.stride), padding=pair(m.padding),
                         dilation=pair(m.dilation), groups=int(m.groups))

    def linear(self, m, x, name=None):
        return self.node(name or self.name_of(m), 'linear', [x], weight=self.tensor(m, 'weight'),
                         bias=self.tensor(m, 'bias', False))

    def layer_norm(self, m, x, name=None):
        if len(m.normalized_shape) != 1:
            raise GraphError("layer norm '%s' over %r, not one feature dim" % (self.name_of(m), m.normalized_shape))
        return self.node(name or self.name_of(m), 'layer_norm', [x], weight=self.tensor(m, 'weight', False),
                         bias=self.tensor(m, 'bias', False), eps=float(m.eps))

    def batch_norm(self, m, x, name=None):
        return self.node(name or self.name_of(m), 'batch_norm', [x], weight=self.tensor(m, 'weight'),
                         bias=self.tensor(m, 'bias'), running_mean=self.tensor(m, 'running_mean'),
                         running_var=self.tensor(m, 'running_var'), eps=float(m.eps))

    def op(self, name, op, *inputs, **fields):
        """A node without parameters (relu, gelu, add, slice, attention, ...)."""
        return self.node(name, op, list(inputs), **fields)
