"""Slow end-to-end checks on real Fashion-MNIST (Debian's dataset-fashion-mnist); run in CI."""

import os
import re
from pathlib import Path

import pytest

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not FASHION.exists() and not os.environ.get("TICKETLAB_DATA"), reason="Fashion-MNIST not installed"
)


@pytest.fixture(autouse=True)
def _two_threads():
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.mark.slow
@needs_fashion
def test_dense_lenet300_reaches_88_5_percent_on_fashion_mnist():
    """Issue 2's quality check: SGD lr 0.1, batch 60, <= 20 epochs."""
    from ticketlab.api import train_dense
    from ticketlab.config.recipe import Recipe

    result = train_dense("lenet300", "fashion-mnist", Recipe(steps="20ep", batch_size=60, lr=0.1), device="cpu")
    epochs = (result.end_step - result.start_step) / result.steps_per_epoch
    print(f"test acc {result.final['test_acc']:.4f}, {result.wall_time / epochs:.2f} s/epoch")
    assert result.final["test_acc"] >= 0.885


@pytest.mark.slow
@needs_fashion
def test_readme_python_example_runs(tmp_path, monkeypatch):
    code = re.search(r"```python\n(.*?)```", Path(__file__).parents[1].joinpath("README.md").read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    table = namespace["result"].table()
    tickets = table[table["control"] == "ticket"]
    assert tickets["density"].min() == pytest.approx(0.2, abs=1e-4)
    assert (tickets["test_acc"] > 0.75).all()
    assert len(namespace["frame"]) == len(table)
