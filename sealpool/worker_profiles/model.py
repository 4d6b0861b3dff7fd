"""The worker profile: one TOML file describing what a machine runs and with what.

Example (see docs/examples/ for whole profiles)::

    host = "gpu-box-01"
    backend = "external"
    processor = ["/opt/sealpool/processor"]

    [storage]
    temp = [{ path = "/mnt/nvme0/scratch", capacity = "2TiB" }, { path = "/mnt/nvme1/scratch" }]
    sealed = [{ path = "/mnt/store" }]

    [phases.PreCommit2]
    slots = 1
    cores = [[0, 1, 2, 3, 4, 5]]      # explicit cores per slot, or a count per slot: cores = 6
    gpus = [[0]]                       # GPU indices per slot
    env = { FIL_PROOFS_USE_GPU_TREE_BUILDER = "1" }
    processor_timeout_s = 7200        # this phase's processor timeout (the setting's otherwise)
    memory = "20GiB"                   # RAM per slot (lotus' figure for the sector size otherwise)

    [[gpu_groups]]                     # these phases never run on these GPUs at once
    phases = ["PreCommit2", "Commit2"]
    gpus = [0]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Literal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sealpool.errors import ConfigError
from sealpool.routing import QUEUE_NAMES
from sealpool.store import SectorState

_UNITS = {"": 1, "B": 1, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40,
          "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}  # fmt: skip
_PHASE_NAMES = {
    **{phase.value.lower(): phase for phase in QUEUE_NAMES},
    **{short: phase for phase, short in QUEUE_NAMES.items()},
}


def parse_size(value: int | str) -> int:
    """Bytes in ``value``: an integer, or a string such as ``"2TiB"`` or ``"500 GB"``."""
    if isinstance(value, int) and value >= 0:
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(value))
    if not match or match[2].upper() not in _UNITS:
        raise ValueError(f"{value!r} is not a size such as 500GiB or 2TB")
    return int(float(match[1]) * _UNITS[match[2].upper()])


def parse_phase(name: str) -> SectorState:
    """The work phase named ``name`` (PreCommit1, pc1, …; case-insensitive)."""
    phase = _PHASE_NAMES.get(name.lower())
    if phase is None:
        known = ", ".join(p.value for p in QUEUE_NAMES)
        raise ValueError(f"unknown phase {name!r}; expected one of: {known}")
    return phase


def _optional_size(value: int | str | None) -> int | None:
    return None if value is None else parse_size(value)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoragePath(_Strict):
    """A directory sealpool may fill, with an optional cap on what it puts there."""

    path: Path
    capacity: int | None = Field(default=None, description="Most bytes to use (e.g. '2TiB').")

    _size = field_validator("capacity", mode="before")(_optional_size)


class Storage(_Strict):
    """Where temp (scratch) and sealed files go; several paths each."""

    temp: list[StoragePath] = Field(min_length=1)
    sealed: list[StoragePath] = Field(min_length=1)


class PhaseSlots(_Strict):
    """How many of a phase run at once, and the cores, GPUs and env each slot gets."""

    slots: int = Field(ge=1, le=1024)
    cores: int | list[list[int]] | None = Field(
        default=None, description="Cores per slot (a count, allocated), or each slot's list."
    )
    gpus: list[list[int]] | None = Field(default=None, description="GPU indices per slot.")
    env: dict[str, str] = Field(default_factory=dict)
    processor_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="Timeout of the external processor in this phase; wins over the "
        "processor_timeout_s setting for it.",
    )
    memory: int | None = Field(
        default=None, description="RAM each slot needs (e.g. '64GiB'); lotus' figure otherwise."
    )
    shared_memory: int | None = Field(
        default=None,
        description="RAM the phase needs once on the host, whatever its slots (Commit2's "
        "parameters); lotus' figure otherwise.",
    )

    _sizes = field_validator("memory", "shared_memory", mode="before")(_optional_size)

    @model_validator(mode="after")
    def _one_entry_per_slot(self) -> PhaseSlots:
        for name in ("cores", "gpus"):
            value = getattr(self, name)
            if isinstance(value, list) and len(value) != self.slots:
                raise ValueError(f"{name} lists {len(value)} slots but slots = {self.slots}")
        if isinstance(self.cores, int) and self.cores < 1:
            raise ValueError(f"cores must be at least 1 per slot, got {self.cores}")
        return self


class GpuGroup(_Strict):
    """GPUs that the listed phases share but never use at the same time."""

    phases: list[str] = Field(min_length=2)
    gpus: list[int] = Field(min_length=1)

    @field_validator("phases")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        return [parse_phase(name).value for name in names]


class Profile(_Strict):
    """Everything sealpool runs on one machine."""

    host: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    backend: Literal["sim", "external"] = "sim"
    processor: list[str] = Field(default_factory=list)
    sector_size: Literal["2KiB", "8MiB", "512MiB", "32GiB", "64GiB"] = "32GiB"
    storage: Storage
    phases: dict[str, PhaseSlots] = Field(min_length=1)
    gpu_groups: list[GpuGroup] = Field(default_factory=list)
    memory_reserve: int = Field(
        default=4 << 30, description="RAM kept for the OS and the worker processes."
    )

    _reserve = field_validator("memory_reserve", mode="before")(parse_size)

    @field_validator("phases")
    @classmethod
    def _known_phases(cls, phases: dict[str, PhaseSlots]) -> dict[str, PhaseSlots]:
        return {parse_phase(name).value: slots for name, slots in phases.items()}

    def phase_slots(self, phase: SectorState) -> PhaseSlots | None:
        return self.phases.get(phase.value)

    def processor_timeouts(self) -> dict[str, float]:
        """The phases' own ``processor_timeout_s``, for the phases that set one."""
        return {
            phase: slots.processor_timeout_s
            for phase, slots in self.phases.items()
            if slots.processor_timeout_s is not None
        }


def load_profile(path: Path) -> Profile:
    """Read and validate a profile; ConfigError names the file, field and bad value."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read profile: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(_lines(path, exc))) from None


def _lines(path: Path, exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "profile"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {field}: {message} (got {error.get('input')!r})")
    return lines
