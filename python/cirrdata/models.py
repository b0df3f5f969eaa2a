"""The cirrhosis staging networks as PyTorch modules (needs torch and torchvision).

    from cirrdata.models import build
    model = build('resnet18', classes=3)     # torchvision ResNet-18 with a 3-way fc

`build(arch, classes)` knows torchvision's resnet18/34/50/101/152, vgg11/13/16/19 (and the _bn
variants), mobilenet_v3_small and convnext_base, with the classifier replaced by a `classes`-way Linear
exactly as the staging code does (ResNet: `fc = Linear(fc.in_features, classes)`; VGG:
`classifier[6] = Linear(4096, classes)`; MobileNetV3-Small: `classifier[3]`; ConvNeXt-Base:
`classifier[2]`, both `Linear(in_features, classes)`), "cirrnet-small", a small torchvision-style
ResNet for training on a few CPU cores (CirrNetSmall below), and the staging paper's transformers
"pvt_v2_b2" (cirrdata/pvt_v2.py, timm's names) and "mambavision_t" (cirrdata/mambavision.py, NVlabs'
names), each with a `classes`-way head.
Weights are freshly initialised (torchvision's initialisation; no download).

`import cirrdata` does not import this module, so the package keeps working without torch.
"""
import torch
import torch.nn as nn
import torchvision
from torchvision.models.resnet import BasicBlock, conv1x1

RESNETS = ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152')
VGGS = ('vgg11', 'vgg13', 'vgg16', 'vgg19', 'vgg11_bn', 'vgg13_bn', 'vgg16_bn', 'vgg19_bn')
# torchvision model -> index of the classifier's last Linear (the staging code replaces it)
HEADS = {'mobilenet_v3_small': 3, 'convnext_base': 2}
ARCHS = RESNETS + VGGS + tuple(HEADS) + ('cirrnet-small',)
ARCHS = ARCHS + ('pvt_v2_b2', 'mambavision_t')  # self-contained definitions with upstream names

__all__ = ['ARCHS', 'CirrNetSmall', 'build']


class CirrNetSmall(nn.Module):
    """torchvision-style ResNet from BasicBlock for training on a few CPU cores: a patchifying stem conv
    3->24 k4 s4 (no padding) + BN + ReLU, maxpool k3 s2 p1, three stages of one BasicBlock each
    (24->48, 48->96, 96->192, all stride 2 with a conv1x1 + BN downsample), adaptive average pool to
    1x1, flatten, fc 192->classes. Attribute names follow torchvision (conv1, bn1, relu, maxpool,
    layer1..3, avgpool, fc), so state_dict keys look alike.

    Why this shape: on 256x256 slices most of a ResNet's CPU time goes to the full-resolution stem and
    its batch norm. A 4x4/4 stem sees every pixel once (4x4 pixels of ~1.6 mm: the scale of the
    parenchymal texture that tells the stages apart) at a sixteenth of the resolution, so a training
    step costs about a third of a stride-2 5x5 stem's and three times as many steps fit a few CPU
    minutes; the channels saved there pay for wider later stages."""

    def __init__(self, classes=3, in_channels=3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 24, kernel_size=4, stride=4, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._stage(24, 48)
        self.layer2 = self._stage(48, 96)
        self.layer3 = self._stage(96, 192)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(192, classes)
        # torchvision ResNet's initialisation
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    @staticmethod
    def _stage(inplanes, planes):
        downsample = nn.Sequential(conv1x1(inplanes, planes, 2), nn.BatchNorm2d(planes))
        return nn.Sequential(BasicBlock(inplanes, planes, stride=2, downsample=downsample))

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def build(arch, classes=3):
    """A freshly initialised `arch` with a `classes`-way head. ValueError for an unknown arch."""
    classes = int(classes)
    if classes < 1:
        raise ValueError('classes must be >= 1, not %d' % classes)
    if arch in RESNETS:
        model = getattr(torchvision.models, arch)(weights=None)
        model.fc = nn.Linear(model.fc.in_features, classes)
        return model
    if arch in VGGS:
        model = getattr(torchvision.models, arch)(weights=None)
        model.classifier[6] = nn.Linear(4096, classes)
        return model
    if arch in HEADS:
        model = getattr(torchvision.models, arch)(weights=None)
        i = HEADS[arch]
        model.classifier[i] = nn.Linear(model.classifier[i].in_features, classes)
        return model
    if arch == 'cirrnet-small':
        return CirrNetSmall(classes)
    if arch == 'pvt_v2_b2':
        from .pvt_v2 import pvt_v2_b2
        return pvt_v2_b2(classes)
    if arch == 'mambavision_t':
        from .mambavision import mambavision_t
        return mambavision_t(classes)
    raise ValueError("unknown architecture '%s' (known: %s)" % (arch, ', '.join(ARCHS)))
