"""``python -m ticketlab.cli``: the ``ticketlab`` command."""

from ticketlab.cli.app import main

main()
