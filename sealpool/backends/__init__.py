"""Pluggable computation of sealing phases: simulated, or an external processor."""

from __future__ import annotations

from sealpool.backends.base import (
    SECTOR_BYTES,
    AggregateRequest,
    Backend,
    GpuHold,
    PhaseRequest,
    Slot,
)
from sealpool.backends.external import ExternalBackend
from sealpool.backends.sim import SimBackend
from sealpool.config import Settings


def make_backend(settings: Settings) -> Backend:
    """The backend the settings name."""
    if settings.backend == "external":
        return ExternalBackend(
            settings.processor, settings.processor_timeout_s, settings.processor_env
        )
    return SimBackend(settings)


__all__ = [
    "SECTOR_BYTES",
    "AggregateRequest",
    "Backend",
    "ExternalBackend",
    "GpuHold",
    "PhaseRequest",
    "SimBackend",
    "Slot",
    "make_backend",
]
