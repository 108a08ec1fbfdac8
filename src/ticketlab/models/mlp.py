"""Fully connected networks: LeNet-300-100 (LeCun et al. 1998; the MNIST net of Frankle & Carbin 2019)
and any MLP given by its layer sizes (784-200-30-10 in 004, 784-400-400-400-10 in 002 table 3.1)."""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.hardware.blas import Linear
from ticketlab.models._common import MODELS, flat_size, no_arg


class MLP(nn.Module):
    """Linear layers with ReLU between them; ``layers[-1]`` is the output layer.

    Dropout (if any) follows every hidden activation, as in Frankle & Carbin 2019 §4 (003 "Dropout").
    The layers are ``ticketlab.hardware.blas.Linear``: ``nn.Linear`` whose product runs on OpenBLAS on CPUs where
    that is the faster BLAS (PyTorch's own kernels everywhere else).
    """

    def __init__(self, sizes: list[int], dropout: float = 0.0) -> None:
        super().__init__()
        self.sizes = list(sizes)
        self.dropout = dropout
        self.layers = nn.ModuleList(Linear(a, b) for a, b in itertools.pairwise(sizes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
            if self.dropout:
                x = F.dropout(x, self.dropout, self.training)
        return self.layers[-1](x)


def parse_sizes(arg: str | None) -> list[int]:
    """``"784-400-10"`` -> ``[784, 400, 10]``."""
    if not arg:
        raise ValueError("model 'mlp' needs its layer sizes, e.g. 'mlp:784-400-400-400-10'")
    try:
        sizes = [int(s) for s in arg.replace("_", "-").split("-")]
    except ValueError:
        raise ValueError(f"mlp sizes must be integers joined by '-', e.g. 'mlp:784-300-100-10', got {arg!r}") from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"mlp sizes need at least input and output size, all >= 1, got {arg!r}")
    return sizes


@MODELS.register("mlp")
def mlp(
    arg: str | None,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    bn_momentum: float,
    bn_eps: float,
    dropout: float,
) -> nn.Module:
    """``mlp:<in>-<hidden>...-<out>``; the sizes must agree with the data so a spec cannot silently
    describe a different network than the one trained."""
    sizes = parse_sizes(arg)
    if sizes[0] != flat_size(input_shape):
        raise ValueError(
            f"mlp first size (input features) must be prod(input_shape) = "
            f"{math.prod(input_shape)} for input_shape {tuple(input_shape)}, got {sizes[0]}"
        )
    if sizes[-1] != num_classes:
        raise ValueError(f"mlp last size (num_classes) must be {num_classes}, got {sizes[-1]}")
    return MLP(sizes, dropout)


@MODELS.register("lenet300")
def lenet300(
    arg: str | None,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    bn_momentum: float,
    bn_eps: float,
    dropout: float,
) -> nn.Module:
    """LeNet-300-100: 784-300-100-10 on MNIST (266,200 weights); input and output follow the data."""
    no_arg("lenet300", arg)
    return MLP([flat_size(input_shape), 300, 100, num_classes], dropout)


MODELS.alias("lenet300_100", "lenet300")
MODELS.alias("lenet_300_100", "lenet300")
MODELS.alias("lenet-300-100", "lenet300")
