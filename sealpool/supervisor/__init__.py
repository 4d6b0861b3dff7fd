"""The supervisor: keeps the pool full, watches deadlines, recovers sectors, suggests ratios."""

from sealpool.supervisor.tick import Supervisor, TickReport

__all__ = ["Supervisor", "TickReport"]
