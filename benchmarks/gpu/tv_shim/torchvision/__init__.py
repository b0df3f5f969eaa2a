"""A minimal stand-in for torchvision, for run_model.sh on a machine whose PyTorch has no torchvision
(the lent GPU machines ship torch alone): torchvision.models.resnet18/34/50/101/152 with torchvision's
module names, forward order and initialisation, which is all python/cirrdata/models.py and
tools/scripts/export_weights.py use for the ResNets. Not used when the real torchvision imports."""
from . import models  # noqa: F401

__version__ = '0.0-cirrdata-shim'
