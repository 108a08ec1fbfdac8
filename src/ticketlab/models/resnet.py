"""CIFAR ResNet-20/56/110 (He et al. 2016a §4.2): a 3x3 conv with 16 filters, three stages of n basic
blocks with 16, 32, 64 filters (the first block of stages 2 and 3 halves the resolution), global average
pooling and one linear layer; depth = 6n + 2. Post-activation blocks, BatchNorm after every conv.

Shortcut where the shape changes: a 1x1 stride-2 conv without BatchNorm (He et al.'s option B
projection). We chose it because it reproduces 002 table 1.1 exactly (ResNet-20: 272,282 parameters);
option A (zero-padded identity, the paper's CIFAR choice) gives 269,722 (-0.9%) and a 1x1 conv + BN
projection gives 272,474 (+0.07%). The conv-only projection is also what TensorFlow's official CIFAR
ResNet uses, whose BN settings (mu = 0.997, eps = 1e-5) are those 002 §3.4 reports for its ResNets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.models._common import MODELS, batchnorm, no_arg, no_dropout


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, bn_momentum: float, bn_eps: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = batchnorm(out_ch, bn_momentum, bn_eps)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = batchnorm(out_ch, bn_momentum, bn_eps)
        self.shortcut = (
            nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False) if stride != 1 or in_ch != out_ch else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + skip)  # out-of-place add: pruning criteria differentiate through the weights


class ResNet(nn.Module):
    def __init__(
        self, blocks_per_stage: int, in_channels: int, num_classes: int, bn_momentum: float, bn_eps: float
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn = batchnorm(16, bn_momentum, bn_eps)
        blocks: list[nn.Module] = []
        channels = 16
        for stage, width in enumerate((16, 32, 64)):
            for i in range(blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(channels, width, stride, bn_momentum, bn_eps))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = self.blocks(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _register(depth: int) -> None:
    name = f"resnet{depth}"

    def build(
        arg: str | None,
        *,
        input_shape: tuple[int, int, int],
        num_classes: int,
        bn_momentum: float,
        bn_eps: float,
        dropout: float,
    ) -> nn.Module:
        no_arg(name, arg)
        no_dropout(name, dropout)
        return ResNet((depth - 2) // 6, input_shape[0], num_classes, bn_momentum, bn_eps)

    build.__name__ = name
    build.__doc__ = f"ResNet-{depth} for CIFAR (He et al. 2016a), {(depth - 2) // 6} blocks per stage."
    MODELS.register(name)(build)
    MODELS.alias(f"resnet-{depth}", name)
    MODELS.alias(f"resnet_{depth}", name)


for _depth in (20, 56, 110):
    _register(_depth)
