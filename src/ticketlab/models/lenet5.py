"""LeNet-5 (LeCun et al. 1998) in the common 28x28 form: conv(6, 5x5, pad 2)-pool-conv(16, 5x5)-pool-
fc 120-84-out, ReLU and max-pooling instead of the original tanh and subsampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.models._common import MODELS, no_arg, pooled_size


class LeNet5(nn.Module):
    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.dropout = dropout
        self.conv1 = nn.Conv2d(channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        # Flatten size from the input: 16*5*5 = 400 for 28x28, 16*6*6 = 576 for 32x32.
        h = pooled_size(pooled_size(height, 1) - 4, 1)
        w = pooled_size(pooled_size(width, 1) - 4, 1)
        self.fc1 = nn.Linear(16 * h * w, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.flatten(1)
        for fc in (self.fc1, self.fc2):
            x = F.relu(fc(x))
            if self.dropout:  # between FC layers only, as for the MLPs
                x = F.dropout(x, self.dropout, self.training)
        return self.fc3(x)


@MODELS.register("lenet5")
def lenet5(
    arg: str | None,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    bn_momentum: float,
    bn_eps: float,
    dropout: float,
) -> nn.Module:
    """LeNet-5: 61,706 parameters on 28x28 MNIST."""
    no_arg("lenet5", arg)
    if min(input_shape[1:]) < 12:
        raise ValueError(f"lenet5 needs inputs of at least 12x12, got input_shape {tuple(input_shape)}")
    return LeNet5(tuple(input_shape), num_classes, dropout)
