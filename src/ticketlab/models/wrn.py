"""Wide ResNets WRN-d-k (Zagoruyko & Komodakis 2016): a 3x3 conv with 16 filters, three stages of
n = (d - 4) / 6 pre-activation blocks (BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3) with 16k, 32k, 64k
filters, a 1x1 conv shortcut where the shape changes, final BN-ReLU, global average pooling and one linear
layer. WRN-16-4 has 2,752,570 parameters, WRN-28-10 36,479,194, exactly 002 table 1.1."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.models._common import MODELS, batchnorm, no_arg


class WideBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, dropout: float, bn_momentum: float, bn_eps: float) -> None:
        super().__init__()
        self.dropout = dropout
        self.bn1 = batchnorm(in_ch, bn_momentum, bn_eps)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn2 = batchnorm(out_ch, bn_momentum, bn_eps)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.shortcut = (
            nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False) if stride != 1 or in_ch != out_ch else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = F.relu(self.bn2(out))
        if self.dropout:  # Zagoruyko & Komodakis 2016 §2.4: dropout between the two convs of a block
            out = F.dropout(out, self.dropout, self.training)
        out = self.conv2(out)
        # The projection sees the pre-activated input, as in the authors' code (He et al. 2016b).
        skip = x if self.shortcut is None else self.shortcut(pre)
        return out + skip


class WideResNet(nn.Module):
    def __init__(
        self,
        depth: int,
        widen: int,
        in_channels: int,
        num_classes: int,
        dropout: float,
        bn_momentum: float,
        bn_eps: float,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        self.conv = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        channels = 16
        for stage, width in enumerate((16 * widen, 32 * widen, 64 * widen)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(WideBlock(channels, width, stride, dropout, bn_momentum, bn_eps))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.bn = batchnorm(channels, bn_momentum, bn_eps)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.conv(x))
        x = F.relu(self.bn(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _register(depth: int, widen: int) -> None:
    name = f"wrn{depth}_{widen}"

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
        return WideResNet(depth, widen, input_shape[0], num_classes, dropout, bn_momentum, bn_eps)

    build.__name__ = name
    build.__doc__ = f"WRN-{depth}-{widen} (Zagoruyko & Komodakis 2016)."
    MODELS.register(name)(build)
    MODELS.alias(f"wrn-{depth}-{widen}", name)


for _depth, _widen in ((16, 4), (16, 8), (28, 10)):
    _register(_depth, _widen)
