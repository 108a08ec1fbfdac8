"""Tickets out of a run directory: ``load_ticket`` (a plain ``nn.Module`` with the level's weights and
mask), exports (dense state dict, ONNX, sparse CSR module) and sparse inference."""

from ticketlab.tickets.export import FORMATS, Exported, export_ticket
from ticketlab.tickets.load import Ticket, TicketError, load_ticket
from ticketlab.tickets.sparse import SparseConv2d, SparseLinear, load_sparse, sparsify

__all__ = [
    "FORMATS",
    "Exported",
    "SparseConv2d",
    "SparseLinear",
    "Ticket",
    "TicketError",
    "export_ticket",
    "load_sparse",
    "load_ticket",
    "sparsify",
]
