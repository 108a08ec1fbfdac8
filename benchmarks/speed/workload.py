"""What every row trains: the data, the models, random masks, and the nominal FLOPs charged to it.

FLOP formula (stated, nominal): training = 6 x MACs per example x examples (2 forward + 4 backward);
for an MLP the MACs are the weight-matrix entries, for a conv net they are counted with forward hooks
(output elements x in-channels x kernel area). The input layer's input gradient is never computed, so
the real work is a little less than nominal; every trainer is charged the same formula.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ticketlab.data import load_dataset
from ticketlab.data.dataset import Dataset
from ticketlab.masks import prunable_parameters, select
from ticketlab.models import build_model, initialize

FLOP_FORMULA = "6 x MACs per example x examples (2 forward + 4 backward)"


def load_data(val_size: int = 5000) -> tuple[Dataset, str]:
    """Real Fashion-MNIST when it can be found, else synthetic data of the same size (55,000 x 1x28x28)."""
    try:
        return load_dataset("fashion-mnist", val_size=val_size, seed=0, download=False), "fashion-mnist"
    except FileNotFoundError:  # not present here: synthetic of the same size
        g = torch.Generator().manual_seed(0)
        n_train = 60000 - val_size
        return Dataset(
            name="synthetic-fmnist-size",
            x_train=torch.randn(n_train, 1, 28, 28, generator=g),
            y_train=torch.randint(10, (n_train,), generator=g),
            x_val=torch.randn(val_size, 1, 28, 28, generator=g),
            y_val=torch.randint(10, (val_size,), generator=g),
            x_test=torch.randn(10000, 1, 28, 28, generator=g),
            y_test=torch.randint(10, (10000,), generator=g),
            num_classes=10,
            augment=None,
        ), "synthetic (Fashion-MNIST size)"


def without_eval(data: Dataset) -> Dataset:
    """The same training split with empty validation/test splits: the trainers are timed on training only,
    the same work as the plain loop."""
    empty = data.x_train[:0]
    return dataclasses.replace(data, x_val=empty, y_val=data.y_train[:0], x_test=empty, y_test=data.y_train[:0])


def build(name: str) -> nn.Module:
    """A zoo model for 1x28x28 inputs and 10 classes, initialised with seed 0."""
    return initialize(build_model(name, input_shape=(1, 28, 28), num_classes=10), seed=0)


def plain_model(name: str) -> nn.Module:
    """The plain loop's model: LeNet-300-100 as anyone would write it (PyTorch's own ``nn.Linear``), other
    models from the zoo."""
    if name == "lenet300":
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10)
        )
    return build(name)


def macs_per_example(model: nn.Module) -> int:
    """Multiply-accumulates of one forward pass on a 1x28x28 input (Linear and Conv layers)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Linear):
            total += module.in_features * module.out_features
        else:
            k = module.kernel_size[0] * module.kernel_size[1]
            total += output[0].numel() * (module.in_channels // module.groups) * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    for h in handles:
        h.remove()
    return total


def random_masks(model: nn.Module, k: int, density: float) -> list:
    """``k`` seeded random masks keeping ``density`` of the prunable weights."""
    out = []
    for i in range(k):
        g = torch.Generator().manual_seed(100 + i)
        out.append(
            select({n: torch.rand(p.shape, generator=g) for n, p in prunable_parameters(model).items()}, density)
        )
    return out
