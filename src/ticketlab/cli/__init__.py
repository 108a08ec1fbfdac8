"""The ``ticketlab`` command (typer): ``app`` holds train/prune/run/data, every other module of this package
adds one command group with ``register(app)``; ``common`` holds what they share."""

from ticketlab.cli.app import app, main

__all__ = ["app", "main"]
