"""Controls on a finished ticket (003, 002 table 3.1, 000 §5.1): change the mask or the weights in one
way, train exactly like the ticket, report beside it."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ticketlab.masks import Mask, masked_state
from ticketlab.registry import Registry

StateDict = dict[str, torch.Tensor]
# fn(mask, start, dense_start, fresh, generator) -> (mask, start)
Control = Callable[[Mask, StateDict, StateDict, StateDict, torch.Generator], "tuple[Mask, StateDict]"]
CONTROLS: Registry[Control] = Registry("control")


def _permutation(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randperm(n, generator=generator)


@CONTROLS.register("reinit")
def reinit(mask: Mask, start: StateDict, dense_start: StateDict, fresh: StateDict, g: torch.Generator):
    """Same mask, fresh random weights (003's random reinitialisation)."""
    return mask.clone(), masked_state(fresh, mask)


@CONTROLS.register("shuffle_weights")
def shuffle_weights(mask: Mask, start: StateDict, dense_start: StateDict, fresh: StateDict, g: torch.Generator):
    """Same mask; the kept values of each layer permuted among the kept positions (002 table 3.1 A)."""
    out = {k: v.clone() for k, v in start.items()}
    for name, keep in mask.items():
        flat, where = out[name].reshape(-1), keep.reshape(-1).nonzero().flatten()
        flat[where] = flat[where[_permutation(len(where), g)]]
    return mask.clone(), out


def _shuffled_mask(mask: Mask, g: torch.Generator) -> tuple[Mask, dict[str, torch.Tensor]]:
    perms = {name: _permutation(keep.numel(), g) for name, keep in mask.items()}
    return Mask({n: k.reshape(-1)[perms[n]].reshape(k.shape) for n, k in mask.items()}), perms


@CONTROLS.register("shuffle_mask")
def shuffle_mask(mask: Mask, start: StateDict, dense_start: StateDict, fresh: StateDict, g: torch.Generator):
    """Each layer's mask permuted, the kept values moving with it (002 table 3.1 B): same per-layer
    density and same values, new topology."""
    new, perms = _shuffled_mask(mask, g)
    out = {k: v.clone() for k, v in start.items()}
    for name, perm in perms.items():
        out[name] = start[name].reshape(-1)[perm].reshape(start[name].shape)
    return new, out


@CONTROLS.register("shuffle_mask_reinit")
def shuffle_mask_reinit(mask: Mask, start: StateDict, dense_start: StateDict, fresh: StateDict, g: torch.Generator):
    """Each layer's mask permuted and fresh random weights."""
    new, _ = _shuffled_mask(mask, g)
    return new, masked_state(fresh, new)


@CONTROLS.register("random_same_layer_density")
def random_same_layer_density(
    mask: Mask, start: StateDict, dense_start: StateDict, fresh: StateDict, g: torch.Generator
):
    """A random mask with the ticket's per-layer densities, on the dense rewind-point weights (for IMP:
    the initialisation), i.e. random pruning with the ticket's layer-wise budget."""
    new, _ = _shuffled_mask(mask, g)
    return new, masked_state(dense_start, new)
