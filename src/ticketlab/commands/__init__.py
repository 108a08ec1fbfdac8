"""CLI commands beyond the core ones in ``ticketlab.cli``: each module defines ``register(app)``."""
