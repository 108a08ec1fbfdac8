"""ticketlab: find, train and study sparse subnetworks (lottery tickets) with PyTorch."""

from __future__ import annotations

__version__ = "0.1.0"

_API = {"train_dense", "prune", "load_results"}


def __getattr__(name: str):
    # The API imports torch; keep ``import ticketlab`` (and ``ticketlab --help``) light until it is used.
    if name in _API:
        from ticketlab import api

        return getattr(api, name)
    raise AttributeError(name)
