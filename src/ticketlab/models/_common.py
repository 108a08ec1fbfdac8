"""Registries and small helpers shared by every model family.

Kept in a private module so each family file can register itself with ``@MODELS.register`` next to its
builder without a circular import through ``ticketlab.models``.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import nn

from ticketlab.registry import Registry, UnknownNameError, split_name

StateDict = dict[str, torch.Tensor]


class ModelBuilder(Protocol):
    def __call__(
        self,
        arg: str | None,
        *,
        input_shape: tuple[int, int, int],
        num_classes: int,
        bn_momentum: float,
        bn_eps: float,
        dropout: float,
    ) -> nn.Module: ...


class AliasRegistry(Registry):
    """A :class:`Registry` that also resolves alternative spellings (``wrn-16-4`` -> ``wrn16_4``).

    Aliases are kept out of :meth:`names`, so tests parametrized over ``MODELS.names()`` build each
    architecture once.
    """

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self._aliases: dict[str, str] = {}

    def alias(self, alias: str, target: str) -> None:
        self._aliases[alias.lower()] = target.lower()

    def canonical(self, name: str) -> str:
        """``"WRN-16-4"`` -> ``"wrn16_4"``; ``"mlp:784-10"`` keeps its argument."""
        key, arg = split_name(name)
        key = self._aliases.get(key, key)
        return key if arg is None else f"{key}:{arg}"

    def aliases(self, name: str) -> list[str]:
        """The other spellings of a registered name (``wrn16_4`` -> ``["wrn-16-4"]``)."""
        return sorted(a for a, target in self._aliases.items() if target == name.lower())

    def get(self, name: str):  # type: ignore[override]
        key, _ = split_name(self.canonical(name))
        if key not in self._entries:
            raise UnknownNameError(self.unknown_message(name))
        return self._entries[key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and split_name(self.canonical(name))[0] in self._entries


MODELS: AliasRegistry = AliasRegistry("model")
INITS: Registry = Registry("init")


def no_arg(name: str, arg: str | None) -> None:
    """Fixed architectures take no ``:argument``; a stray one is a typo, not something to ignore."""
    if arg is not None:
        raise ValueError(f"model {name!r} takes no argument, got {name}:{arg}")


def no_dropout(name: str, dropout: float) -> None:
    """VGG-BN and ResNets conventionally have no dropout; refuse rather than silently ignore it."""
    if dropout:
        raise ValueError(
            f"model {name!r} has no dropout (the architecture uses none); dropout must be 0, got {dropout}"
        )


def batchnorm(channels: int, momentum: float, eps: float) -> nn.BatchNorm2d:
    # One constructor so bn_momentum/bn_eps reach every BN layer (002 §3.3.3 shows they matter for
    # iterative pruning). PyTorch convention: momentum = weight of the new batch statistic, so 002's
    # TensorFlow-style mu = 0.99 is bn_momentum = 0.01.
    return nn.BatchNorm2d(channels, eps=eps, momentum=momentum)


def pooled_size(size: int, pools: int) -> int:
    """Side length after ``pools`` 2x2 max-pools with floor rounding (nn.MaxPool2d default)."""
    for _ in range(pools):
        size //= 2
    if size < 1:
        raise ValueError(f"input too small: {pools} 2x2 poolings leave nothing")
    return size


def flat_size(input_shape: tuple[int, int, int]) -> int:
    return math.prod(input_shape)


def snapshot(model: nn.Module) -> StateDict:
    """A CPU copy of the model's state (weights and buffers)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
