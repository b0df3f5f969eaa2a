"""Loads a checkpoint as users have it into a cirrdata.models network (needs torch).

    from cirrdata.models import build
    from cirrdata.checkpoint import load_checkpoint
    model = build('pvt_v2_b2', classes=3)
    load_checkpoint(model, torch.load('best_model.pth', map_location='cpu'))

Accepted: a bare state_dict; a dict holding one under 'state_dict', 'model_state_dict' or 'model'
(training scripts, timm, NVlabs' MambaVision); a whole nn.Module; keys with DataParallel's 'module.'
prefix. A network with a `remap_state_dict(sd)` method renames other upstream spellings first
(cirrdata.pvt_v2: the original PVT repository's patch_embed1 / block1.0 / norm1 / dwconv.dwconv).
Loading is strict: a missing or unexpected tensor, or one of another shape (a head of another class
count than the model was built for), is a ValueError naming it. Only BatchNorm's num_batches_tracked
may be absent.
"""
import torch

__all__ = ['load_checkpoint', 'state_dict_of', 'strip_module_prefix', 'strip_wrapper_prefix']


def state_dict_of(obj, where='checkpoint'):
    """The state_dict inside a loaded checkpoint object."""
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        for key in ('state_dict', 'model_state_dict', 'model'):
            if key in obj and isinstance(obj[key], (dict, torch.nn.Module)):
                return state_dict_of(obj[key], where + "['%s']" % key)
        bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        if not obj or bad:
            raise ValueError('%s is not a state_dict: %s' % (
                where, 'it is empty' if not obj else "entry '%s' is a %s, not a tensor" % (bad[0], type(obj[bad[0]]).__name__)))
        return obj
    raise ValueError('%s holds a %s, not a state_dict, a dict with one, or an nn.Module' % (where, type(obj).__name__))


def strip_module_prefix(sd):
    """Removes DataParallel's 'module.' prefix (from every key that has it)."""
    return {(k[len('module.'):] if k.startswith('module.') else k): v for k, v in sd.items()}


def strip_wrapper_prefix(sd, own_keys):
    """A network saved inside a wrapper (a trainer's `model.`, `encoder.` or `backbone.` attribute):
    when no key of sd is one of the model's (own_keys) and every key starts with the same first name
    P, the keys without "P." (repeatedly, for nested wrappers); else sd unchanged."""
    own = set(own_keys)
    while sd and not any(k in own for k in sd):
        first = {k.split('.', 1)[0] for k in sd}
        if len(first) != 1 or any('.' not in k for k in sd):
            break
        cut = len(first.pop()) + 1
        sd = {k[cut:]: v for k, v in sd.items()}
    return sd


def mismatch(missing, unexpected):
    """'N missing tensor(s): a, b; M unexpected tensor(s): c' (the first five of each)."""
    parts = []
    if missing:
        parts.append('%d missing tensor(s): %s' % (len(missing), ', '.join(missing[:5])))
    if unexpected:
        parts.append('%d unexpected tensor(s): %s' % (len(unexpected), ', '.join(unexpected[:5])))
    return '; '.join(parts)


def load_checkpoint(model, obj, where='checkpoint'):
    """Loads obj (see the module docstring) into model strictly; returns model."""
    sd = strip_wrapper_prefix(strip_module_prefix(state_dict_of(obj, where)), model.state_dict().keys())
    remap = getattr(model, 'remap_state_dict', None)
    if remap is not None:
        sd = remap(sd)
    own = model.state_dict()
    for k, v in sd.items():
        if k in own and tuple(own[k].shape) != tuple(v.shape):
            raise ValueError("%s: tensor '%s' has shape %s, the model's is %s%s" % (
                where, k, list(v.shape), list(own[k].shape),
                ' (a head for another number of classes)' if k.startswith('head.') else ''))
    missing = [k for k in own if k not in sd and not k.endswith('num_batches_tracked')]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise ValueError('%s does not fit %s: %s' % (where, type(model).__name__, mismatch(missing, unexpected)))
    model.load_state_dict(sd, strict=False)
    return model
