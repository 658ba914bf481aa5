"""ResNet-32 for 32×32 images (He et al. 2016, §4.2), as used by the LDAM and class-balanced
loss papers: a 3×3 convolution to 16 channels, three stages of five basic blocks of widths
16/32/64 (stride 2 at the first block of stages 2 and 3), option-A shortcuts, global average
pooling and a linear classifier. About 0.46 M parameters (464,154 for 10 classes).

Option-A shortcuts have no parameters: where a block halves the resolution and doubles the width,
the identity is subsampled (``x[:, :, ::2, ::2]``) and zero channels are added, half before and
half after the input's channels (as in the reference implementation of the LDAM paper).
Convolutions and the classifier use Kaiming-normal initialisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lt_bench.backbones.heads import Fp32Linear


class ShortcutA(nn.Module):
    """Parameter-free shortcut: stride-2 subsampling and symmetric zero-padding of channels."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.stride = stride
        self.pad = planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            before = self.pad // 2
            x = F.pad(x, (0, 0, 0, 0, before, self.pad - before))
        return x

    def extra_repr(self) -> str:
        return f"stride={self.stride}, zero_channels={self.pad}"


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = ShortcutA(in_planes, planes, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet with option-A shortcuts; depth = 6·blocks + 2."""

    def __init__(self, num_classes: int, blocks: int = 5, widths: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages, in_planes = [], widths[0]
        for i, planes in enumerate(widths):
            layers = []
            for j in range(blocks):
                layers.append(BasicBlock(in_planes, planes, stride=2 if (i > 0 and j == 0) else 1))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = Fp32Linear(in_planes, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return out.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor, return_features: bool = False):
        features = self.features(x)
        logits = self.fc(features)
        return (logits, features) if return_features else logits


def resnet32(num_classes: int) -> nn.Module:
    """ResNet-32 for CIFAR (He et al. 2016), option-A shortcuts, ~0.46 M parameters."""
    return CifarResNet(num_classes, blocks=5)
