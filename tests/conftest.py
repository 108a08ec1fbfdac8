import os

import pytest
import torch

from ticketlab.data import load_dataset
from ticketlab.hardware import blas as gemm

# ticketlab.prune prints a line per finished level to stderr by default; tests that check it unset this
os.environ.setdefault("TICKETLAB_QUIET", "1")
# The sparse training path (ticketlab.training.sparse) is chosen by timing under "auto": tests stay
# deterministic and keep the user cache untouched with it off; its own tests turn it on. Set the variable
# to "on" to run the suite on the sparse path.
os.environ.setdefault("TICKETLAB_SPARSE_TRAINING", "off")
# Likewise whether a level's controls train stacked (ticketlab.training.stack_choice): "auto" times it; the
# suite stacks them always, its own tests turn "auto" on.
os.environ.setdefault("TICKETLAB_STACK_CONTROLS", "on")
# Likewise Adam over the kept weights only (ticketlab.hardware.adam_choice): equal to the dense step to the
# last bit or so, chosen by timing under "auto"; off here, its own tests turn it on and test the choice.
os.environ.setdefault("TICKETLAB_COMPACT_ADAM", "off")


@pytest.fixture(scope="session")
def synthetic():
    """The small synthetic dataset (1x28x28, 10 classes) with a validation split."""
    return load_dataset("synthetic", val_size=200, seed=0)


@pytest.fixture(autouse=True, scope="session")
def _layout_cache(tmp_path_factory):
    """Layouts measured by the tests' sweeps go to a cache of their own, never the user's."""
    import os

    before = os.environ.get("TICKETLAB_CACHE_DIR")
    os.environ["TICKETLAB_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if before is None:
        del os.environ["TICKETLAB_CACHE_DIR"]
    else:
        os.environ["TICKETLAB_CACHE_DIR"] = before


@pytest.fixture(autouse=True)
def _few_threads():
    # Two cores on CI: one intra-op thread keeps small tests fast and timings stable.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def openblas():
    """OpenBLAS as the backend for the test (wherever the CPU has AVX-512), then back to the default."""
    chosen = gemm.set_backend("openblas")
    if chosen.name != "openblas":
        gemm.set_backend(None)
        pytest.skip(chosen.reason)
    yield
    gemm.set_backend(None)


@pytest.fixture
def torch_gemm():
    gemm.set_backend("torch")
    yield
    gemm.set_backend(None)
