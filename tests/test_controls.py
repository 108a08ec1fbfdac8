"""Invariants of every control, parametrized over the registry."""

import pytest
import torch

from ticketlab.masks import select
from ticketlab.methods.controls import CONTROLS


def setup():
    g = torch.Generator().manual_seed(0)
    dense = {
        "a.weight": torch.randn(20, 30, generator=g),
        "a.bias": torch.randn(20, generator=g),
        "b.weight": torch.randn(5, 20, generator=g),
    }
    mask = select({k: v.abs() for k, v in dense.items() if k.endswith("weight")}, 0.3, "layerwise")
    start = {k: (v * mask[k] if k in mask else v.clone()) for k, v in dense.items()}
    fresh = {k: torch.randn(v.shape, generator=g) for k, v in dense.items()}
    return mask, start, dense, fresh


@pytest.mark.parametrize("name", CONTROLS.names())
def test_every_control_keeps_layer_densities_and_zeroes_pruned(name):
    mask, start, dense, fresh = setup()
    new_mask, new_start = CONTROLS.get(name)(mask, start, dense, fresh, torch.Generator().manual_seed(1))
    for k in mask:
        assert int(new_mask[k].sum()) == int(mask[k].sum())
        assert (new_start[k][~new_mask[k]] == 0).all()
    again = CONTROLS.get(name)(mask, start, dense, fresh, torch.Generator().manual_seed(1))
    assert again[0] == new_mask and all(torch.equal(again[1][k], new_start[k]) for k in new_start)


def test_shuffle_weights_permutes_values_within_the_same_mask():
    mask, start, dense, fresh = setup()
    m, s = CONTROLS.get("shuffle_weights")(mask, start, dense, fresh, torch.Generator().manual_seed(1))
    assert m == mask
    for k in mask:
        assert torch.equal(s[k][mask[k]].sort().values, start[k][mask[k]].sort().values)
        assert not torch.equal(s[k][mask[k]], start[k][mask[k]])
    assert torch.equal(s["a.bias"], start["a.bias"])


def test_shuffle_mask_moves_values_with_the_mask():
    mask, start, dense, fresh = setup()
    m, s = CONTROLS.get("shuffle_mask")(mask, start, dense, fresh, torch.Generator().manual_seed(1))
    assert m != mask
    for k in mask:
        assert torch.equal(s[k][m[k]].sort().values, start[k][mask[k]].sort().values)


def test_reinit_variants_use_fresh_weights():
    mask, start, dense, fresh = setup()
    m, s = CONTROLS.get("reinit")(mask, start, dense, fresh, torch.Generator().manual_seed(1))
    assert m == mask and torch.equal(s["a.weight"], fresh["a.weight"] * mask["a.weight"])
    m, s = CONTROLS.get("shuffle_mask_reinit")(mask, start, dense, fresh, torch.Generator().manual_seed(1))
    assert m != mask and torch.equal(s["a.weight"], fresh["a.weight"] * m["a.weight"])


def test_random_same_layer_density_uses_the_dense_rewind_point():
    mask, start, dense, fresh = setup()
    m, s = CONTROLS.get("random_same_layer_density")(mask, start, dense, fresh, torch.Generator().manual_seed(1))
    assert m != mask
    for k in mask:
        assert torch.equal(s[k][m[k]], dense[k][m[k]])
