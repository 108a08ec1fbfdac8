import pytest
import torch

from ticketlab.data import load_dataset


@pytest.fixture(scope="session")
def synthetic():
    """The small synthetic dataset (1x28x28, 10 classes) with a validation split."""
    return load_dataset("synthetic", val_size=200, seed=0)


@pytest.fixture(autouse=True)
def _few_threads():
    # Two cores on CI: one intra-op thread keeps small tests fast and timings stable.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
