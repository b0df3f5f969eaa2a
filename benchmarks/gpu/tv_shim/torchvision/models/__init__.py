"""torchvision.models subset: the ResNets (see ../__init__.py)."""
from .resnet import resnet18, resnet34, resnet50, resnet101, resnet152  # noqa: F401
