"""Weight initialisations. Each draws all randomness from the given CPU ``torch.Generator`` (one layer
after another in module order), so a (model, init, seed) triple gives bit-identical weights whatever the
global RNG state or the model's device; 000 appendix A.1 needs one shared initialisation per seed."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ticketlab.models._common import INITS

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a Linear or Conv weight: channels times kernel size."""
    receptive = math.prod(weight.shape[2:])
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def _layers(model: nn.Module) -> list[nn.Module]:
    """Linear/Conv layers in module order, after resetting every BN layer (weight 1, bias 0, fresh running
    statistics). Checks every module first, so a model we cannot initialise is left untouched."""
    layers, norms = [], []
    for name, module in model.named_modules():
        if isinstance(module, _WEIGHTED):
            layers.append(module)
        elif isinstance(module, _NORMS):
            norms.append(module)
        elif any(True for _ in module.parameters(recurse=False)):
            raise TypeError(f"cannot initialise {name!r}: {type(module).__name__} is not Linear, Conv or BatchNorm")
    for norm in norms:
        if norm.affine:
            norm.weight.fill_(1.0)
            norm.bias.zero_()
        if norm.track_running_stats:
            norm.reset_running_stats()
    return layers


def _normal(weight: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    # Sample on the generator's (CPU) device, then copy: the same numbers on every device.
    return torch.empty(weight.shape, dtype=torch.float32).normal_(0.0, std, generator=generator)


def _apply(model: nn.Module, sample: Callable[[torch.Tensor], torch.Tensor]) -> None:
    with torch.no_grad():
        for layer in _layers(model):
            layer.weight.copy_(sample(layer.weight))
            if layer.bias is not None:
                layer.bias.zero_()


RELU_GAIN = math.sqrt(2.0)


def kaiming_std(weight: torch.Tensor) -> float:
    """He et al. 2015: std = sqrt(2 / fan_in) keeps the activation variance constant through ReLUs."""
    return RELU_GAIN / math.sqrt(fans(weight)[0])


@INITS.register("kaiming_normal")
def kaiming_normal(model: nn.Module, generator: torch.Generator) -> None:
    """N(0, 2 / fan_in) weights, zero biases, BN weight 1 and bias 0 (default of LTH work, 003)."""
    _apply(model, lambda w: _normal(w, kaiming_std(w), generator))


@INITS.register("xavier")
def xavier(model: nn.Module, generator: torch.Generator) -> None:
    """Glorot & Bengio 2010: N(0, 2 / (fan_in + fan_out)) (gain 1), zero biases."""

    def sample(w: torch.Tensor) -> torch.Tensor:
        fan_in, fan_out = fans(w)
        return _normal(w, math.sqrt(2.0 / (fan_in + fan_out)), generator)

    _apply(model, sample)


@INITS.register("signed_constant")
def signed_constant(model: nn.Module, generator: torch.Generator) -> None:
    """Zhou et al. 2019 (004 §2): every weight is +-std of its layer's Kaiming distribution, the sign
    drawn from a Kaiming normal sample; isolates the role of the sign from that of the magnitude."""

    def sample(w: torch.Tensor) -> torch.Tensor:
        std = kaiming_std(w)
        # >= 0 rather than sign(): a sample of exactly 0 must not give a zero weight.
        return torch.where(_normal(w, std, generator) >= 0, std, -std)

    _apply(model, sample)


BIMODAL_MODE, BIMODAL_SPREAD = 2.0, 0.5  # in units of the layer's Kaiming std


@INITS.register("bimodal")
def bimodal(model: nn.Module, generator: torch.Generator) -> None:
    """The control of Scores as Weights (000 §5.4): the tickets of every criterion keep initial weights
    from the two tails of the Kaiming normal (000 §5.1, "a bi-modal distribution of initial values"), so
    the network starts in such a distribution. Our parameters, as 000 gives none: sign of the Kaiming
    normal draw of the same seed (the signs SaW transfers), magnitude |N(2, 0.5²)| Kaiming stds, i.e.
    two modes at ±2 std, as dense data-free weights."""
    kaiming_normal(model, generator)
    magnitudes = torch.Generator().manual_seed((generator.initial_seed() * 0x9E3779B1 + 1) % (1 << 63))

    def sample(w: torch.Tensor) -> torch.Tensor:
        std = kaiming_std(w)
        size = (BIMODAL_MODE + BIMODAL_SPREAD * _normal(w, 1.0, magnitudes)).abs() * std
        return torch.where(w >= 0, size, -size)

    _apply(model, sample)
