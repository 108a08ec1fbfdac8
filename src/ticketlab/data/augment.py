"""Train-time augmentation on whole batches (airbench style: tensor ops, no per-image Python loop).

A dataset names its augmentation (``Dataset.augment``, e.g. ``"cifar"``); the trainer core looks it up in
``AUGMENTATIONS`` and calls it on each training batch with a generator seeded by (seed, step).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ticketlab.registry import Registry

PAD = 4

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]  # (batch, generator) -> new batch
AUGMENTATIONS: Registry[Augmentation] = Registry("augmentation")


@AUGMENTATIONS.register("cifar")
def cifar_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The standard CIFAR augmentation (He et al. 2016): reflect-pad 4 pixels, random crop back to the
    input size, horizontal flip with p = 0.5, chosen independently per image.

    All random numbers are drawn on the generator's device and then moved to ``x``'s device, so a CPU
    generator works with CUDA batches and the result depends only on the generator's state, not on where
    ``x`` lives. Returns a new tensor; ``x`` is not modified.
    """
    b, _, h, w = x.shape
    if b == 0:
        return x.clone()
    dev = generator.device
    dy = torch.randint(0, 2 * PAD + 1, (b,), generator=generator, device=dev).to(x.device)
    dx = torch.randint(0, 2 * PAD + 1, (b,), generator=generator, device=dev).to(x.device)
    flip = (torch.rand(b, generator=generator, device=dev) < 0.5).to(x.device)
    padded = F.pad(x, (PAD, PAD, PAD, PAD), mode="reflect")
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (B, H) source rows in the padded image
    cols = dx[:, None] + torch.arange(w, device=x.device)  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # a flip reads the crop's columns backwards
    # Two gathers (rows, then columns) instead of one 4-index advanced index: same result, less indexing memory.
    out = padded.gather(2, rows[:, None, :, None].expand(b, x.shape[1], h, padded.shape[3]))
    return out.gather(3, cols[:, None, None, :].expand(b, x.shape[1], h, w))
