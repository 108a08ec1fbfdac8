"""Model zoo and initialisations: ``build_model("resnet20", input_shape=(3, 32, 32))`` then
``initialize(model, "kaiming_normal", seed)``.

Models are plain ``nn.Module``s of Linear / Conv2d / BatchNorm2d layers whose last module is the output
``nn.Linear``; masks live outside them (see ``ticketlab.masks``). Activations are out-of-place
(``F.relu``) so that criteria can differentiate through the weights with ``torch.func.functional_call``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ticketlab.models._common import INITS, MODELS, ModelBuilder, StateDict, snapshot
from ticketlab.registry import Registry, UnknownNameError, split_name

# Importing the family modules registers their models and initialisations (``init`` under another name:
# ``initialize`` below has a parameter called init).
from ticketlab.models import conv, lenet5, mlp, resnet, vgg, wrn  # noqa: F401  isort: skip
from ticketlab.models import init as _inits  # noqa: F401  isort: skip

__all__ = [
    "INITS",
    "MODELS",
    "ModelBuilder",
    "Registry",
    "StateDict",
    "UnknownNameError",
    "build_model",
    "initialize",
    "snapshot",
    "split_name",
]


def build_model(
    name: str,
    *,
    input_shape: tuple[int, int, int] = (1, 28, 28),
    num_classes: int = 10,
    bn_momentum: float = 0.1,
    bn_eps: float = 1e-5,
    dropout: float = 0.0,
) -> nn.Module:
    """Build the registered model ``name`` (``"lenet300"``, ``"mlp:784-400-10"``, ``"wrn-16-4"``...) for
    data of ``input_shape`` (C, H, W) and ``num_classes`` classes.

    Weights are PyTorch's defaults (drawn from the global RNG); call :func:`initialize` for the seeded,
    reproducible initialisation every experiment should start from. ``bn_momentum`` follows PyTorch's
    convention (weight of the new batch statistic): TensorFlow's mu = 0.99 of 002 §3.4 is 0.01 here.
    """
    builder = MODELS.get(name)  # raises UnknownNameError listing the allowed names
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (channels, height, width) of positive ints, got {input_shape}")
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if not 0.0 <= bn_momentum <= 1.0:
        raise ValueError(f"bn_momentum must be in [0, 1] (PyTorch convention), got {bn_momentum}")
    if not bn_eps > 0.0:
        raise ValueError(f"bn_eps must be > 0, got {bn_eps}")
    _, arg = split_name(name)
    return builder(
        arg,
        input_shape=shape,
        num_classes=int(num_classes),
        bn_momentum=float(bn_momentum),
        bn_eps=float(bn_eps),
        dropout=float(dropout),
    )


def initialize(model: nn.Module, init: str = "kaiming_normal", seed: int = 0) -> nn.Module:
    """Initialise ``model`` in place with the registered ``init`` from a private generator seeded with
    ``seed``: the same seed gives bit-identical weights, whatever the global RNG. Returns ``model``."""
    fn = INITS.get(init)
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    with torch.no_grad():
        fn(model, generator)
    return model


def num_parameters(model: nn.Module) -> int:
    """All parameters (weights, biases, BN affine), as counted in 002 table 1.1."""
    return sum(math.prod(p.shape) for p in model.parameters())
