"""RAM a profile's slots need, against what this machine has.

Each phase needs, per slot, its peak memory, and once per host a shared part that all its
slots use (Commit2's Groth parameters). The defaults are lotus' resource table
(``storage/sealer/storiface/resources.go``, ``ResourceTable``): ``MaxMemory`` per slot,
``BaseMinMemory`` shared; a profile overrides either per phase (``memory``,
``shared_memory``). On top comes ``memory_reserve`` for the OS and the worker processes.

The check is static, and that suffices: a phase only runs inside one of its slots, so the
slots' sum is the most the phases can take at once; unlike scratch, memory is given back when
the phase ends, so no ledger is needed. Swap is not counted: a sealing phase that swaps runs
many times slower (SDR reads its layers at random).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sealpool.backends.base import SECTOR_BYTES
from sealpool.routing import QUEUE_NAMES
from sealpool.store import SectorState
from sealpool.worker_profiles.model import Profile

_K, _M, _G = 1 << 10, 1 << 20, 1 << 30
S = SectorState
# Phase → sector size → (peak per slot, shared once per host), from lotus' ResourceTable
# (MaxMemory, BaseMinMemory). Finalize has no row there: lotus' Fetch row (moving files)
# stands in. The chain phases (PreCommitting, WaitSeed, Committing) only send messages.
LOTUS_MEMORY: dict[SectorState, dict[str, tuple[int, int]]] = {
    S.ADD_PIECE: {"64GiB": (8 * _G, _G), "32GiB": (4 * _G, _G), "512MiB": (_G, _G),
                  "8MiB": (8 * _M, 8 * _M), "2KiB": (2 * _K, 2 * _K)},
    S.PRE_COMMIT_1: {"64GiB": (128 * _G, 10 * _M), "32GiB": (64 * _G, 10 * _M),
                     "512MiB": (_G, _M), "8MiB": (8 * _M, 8 * _M), "2KiB": (2 * _K, 2 * _K)},
    S.PRE_COMMIT_2: {"64GiB": (30 * _G, _G), "32GiB": (15 * _G, _G), "512MiB": (3 * _G // 2, _G),
                     "8MiB": (8 * _M, 8 * _M), "2KiB": (2 * _K, 2 * _K)},
    S.COMMIT_1: {"64GiB": (_G, _G), "32GiB": (_G, _G), "512MiB": (_G, _G),
                 "8MiB": (8 * _M, 8 * _M), "2KiB": (2 * _K, 2 * _K)},
    S.COMMIT_2: {"64GiB": (190 * _G, 64 * _G), "32GiB": (150 * _G, 32 * _G),
                 "512MiB": (3 * _G // 2, 10 * _G), "8MiB": (8 * _M, 8 * _M),
                 "2KiB": (2 * _K, 2 * _K)},
    S.FINALIZE: {size: (_M, 0) for size in SECTOR_BYTES},
}  # fmt: skip


@dataclass(frozen=True)
class PhaseMemory:
    """One phase's need: ``slots`` × ``per_slot`` + ``shared`` = ``total`` bytes."""

    phase: str
    slots: int
    per_slot: int
    shared: int
    total: int


@dataclass
class MemoryPlan:
    """The profile's need (its phases' and the reserve) and the machine's RAM and swap."""

    phases: list[PhaseMemory] = field(default_factory=list)
    reserve: int = 0
    need: int = 0
    ram: int | None = None
    swap: int | None = None


def memory_plan(profile: Profile, ram: int | None, swap: int | None) -> MemoryPlan:
    """What ``profile``'s slots need: lotus' figures for its sector size where it sets none
    (none at all for the sim backend, which holds no sector in memory)."""
    plan = MemoryPlan(ram=ram, swap=swap, reserve=_reserve(profile))
    for phase in QUEUE_NAMES:
        slots = profile.phase_slots(phase)
        if slots is None:
            continue
        default = (0, 0)
        if profile.backend != "sim":
            default = LOTUS_MEMORY.get(phase, {}).get(profile.sector_size, (0, 0))
        per_slot = default[0] if slots.memory is None else slots.memory
        shared = default[1] if slots.shared_memory is None else slots.shared_memory
        total = slots.slots * per_slot + shared
        plan.phases.append(PhaseMemory(phase.value, slots.slots, per_slot, shared, total))
    plan.need = plan.reserve + sum(each.total for each in plan.phases)
    return plan


def _reserve(profile: Profile) -> int:
    named = "memory_reserve" in profile.model_fields_set
    return profile.memory_reserve if named or profile.backend != "sim" else 0
