"""Conv-2/4/6 of Frankle & Carbin 2019 (figure 2; scaled-down VGG for CIFAR-10): pairs of 3x3 convs
(64, 64 | 128, 128 | 256, 256), each pair followed by 2x2 max-pooling, then FC 256-256-out."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.models._common import MODELS, no_arg, pooled_size

_WIDTHS = (64, 128, 256)


class ConvN(nn.Module):
    """``pairs`` conv pairs; no BatchNorm (the LTH paper's Conv-N have none)."""

    def __init__(self, pairs: int, input_shape: tuple[int, int, int], num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.dropout = dropout
        convs: list[nn.Module] = []
        for width_out in _WIDTHS[:pairs]:
            convs += [nn.Conv2d(channels, width_out, 3, padding=1), nn.Conv2d(width_out, width_out, 3, padding=1)]
            channels = width_out
        self.convs = nn.ModuleList(convs)
        # Flatten size from the input (16x16x64 = 16384 for Conv-2 on CIFAR), so 28x28 works too.
        flat = channels * pooled_size(height, pairs) * pooled_size(width, pairs)
        self.fc1 = nn.Linear(flat, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc3 = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            if i % 2 == 1:
                x = F.max_pool2d(x, 2)
        x = x.flatten(1)
        for fc in (self.fc1, self.fc2):
            x = F.relu(fc(x))
            if self.dropout:  # Frankle & Carbin 2019 §3 apply dropout to the FC layers of Conv-N
                x = F.dropout(x, self.dropout, self.training)
        return self.fc3(x)


def _register(pairs: int) -> None:
    name = f"conv{2 * pairs}"

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
        return ConvN(pairs, tuple(input_shape), num_classes, dropout)

    build.__name__ = name
    build.__doc__ = f"Conv-{2 * pairs} (Frankle & Carbin 2019, figure 2)."
    MODELS.register(name)(build)
    MODELS.alias(f"conv-{2 * pairs}", name)


for _pairs in (1, 2, 3):
    _register(_pairs)
