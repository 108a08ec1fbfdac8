"""VGG-11/13/16/19 (Simonyan & Zisserman 2014, configurations A/B/D/E) in the CIFAR form of 002 §3.4:
BatchNorm after every conv, and global average pooling + a single linear classifier instead of the
three large FC layers. VGG-16 has 14,724,042 parameters, exactly 002 table 1.1."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.models._common import MODELS, batchnorm, no_arg, no_dropout

# "M" = 2x2 max-pool.
CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    def __init__(
        self, config: list[int | str], in_channels: int, num_classes: int, bn_momentum: float, bn_eps: float
    ) -> None:
        super().__init__()
        self.plan: list[str] = []  # "C" conv+bn+relu, "M" pool, in order
        convs, bns = [], []
        channels = in_channels
        for item in config:
            if item == "M":
                self.plan.append("M")
                continue
            # No conv bias: the following BN's shift makes it redundant, and table 1.1's counts have none.
            convs.append(nn.Conv2d(channels, int(item), 3, padding=1, bias=False))
            bns.append(batchnorm(int(item), bn_momentum, bn_eps))
            self.plan.append("C")
            channels = int(item)
        self.convs = nn.ModuleList(convs)
        self.bns = nn.ModuleList(bns)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i = 0
        for step in self.plan:
            if step == "M":
                # ceil_mode: 32x32 pools exactly as floor (32->1), and 28x28 reaches 1x1 (28-14-7-4-2-1)
                # instead of vanishing at the fifth pool.
                x = F.max_pool2d(x, 2, ceil_mode=True)
            else:
                x = F.relu(self.bns[i](self.convs[i](x)))
                i += 1
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _register(name: str) -> None:
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
        return VGG(CONFIGS[name], input_shape[0], num_classes, bn_momentum, bn_eps)

    build.__name__ = name
    build.__doc__ = f"{name.upper()} with BatchNorm, CIFAR form (global pool + one linear layer, 002 §3.4)."
    MODELS.register(name)(build)
    MODELS.alias(name.replace("vgg", "vgg-"), name)
    MODELS.alias(f"{name}_bn", name)


for _name in CONFIGS:
    _register(_name)
