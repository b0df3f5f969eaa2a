"""PyTorch helpers for cirrdata.Loader: torch tensors without copies, ranks from torch.distributed.

    from cirrdata.pytorch import TorchLoader
    loader = TorchLoader('out/liver-nnunet', batch_size=2, mode='patch', augment='nnunet', seed=42,
                         device='vulkan')   # or 'cpu' / 'auto': Loader's device, passed through
    for batch in loader:          # one epoch; batch['image'] is a torch.Tensor sharing the ring memory
        loss = model(batch['image'].to('cuda', non_blocking=True)) ...

When torch.distributed is initialised, rank and world size come from it (otherwise from the usual
environment variables RANK / WORLD_SIZE, as torchrun sets them). Tensors are views of the loader's
ring (torch.from_numpy): valid until the next batch is requested; .clone() to keep them.
"""
import torch

from .loader import Loader


def _distributed_rank_world():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return None, None


class TorchLoader:
    """A cirrdata.Loader yielding dicts of torch tensors (image, mask, label, index, corner)."""

    def __init__(self, path, **kwargs):
        rank, world = _distributed_rank_world()
        if world is not None and 'world_size' not in kwargs:
            kwargs['rank'], kwargs['world_size'] = rank, world
        self.loader = Loader(path, **kwargs)

    def __len__(self):
        return len(self.loader)

    @property
    def device(self):
        """What runs augmentation (Loader.device); pass device='vulkan' or 'auto' to use a GPU."""
        return self.loader.device

    def __iter__(self):
        for b in self.loader:
            out = {k: (torch.from_numpy(v) if v is not None and hasattr(v, 'shape') else v) for k, v in b.items()}
            yield out

    def state_dict(self):
        return self.loader.state_dict()

    def load_state_dict(self, state):
        self.loader.load_state_dict(state)

    def close(self):
        self.loader.close()
