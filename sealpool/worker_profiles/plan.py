"""Resolving a profile against this machine: every slot's cores, GPUs and paths, or the
reasons it can't run here — each one line naming the file, the field and the value."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import psutil

from sealpool.paths import overlap
from sealpool.routing import QUEUE_NAMES
from sealpool.storage import format_bytes, scratch_bytes, sealed_bytes
from sealpool.worker_profiles.machine import Machine
from sealpool.worker_profiles.memory import MemoryPlan, memory_plan
from sealpool.worker_profiles.model import PhaseSlots, Profile


@dataclass(frozen=True)
class SlotPlan:
    """One slot: what a phase running in it gets."""

    phase: str
    index: int
    cores: tuple[int, ...] | None
    gpus: tuple[int, ...] | None
    env: dict[str, str]
    locks: tuple[str, ...] = ()


@dataclass(frozen=True)
class PathPlan:
    """One storage path and the room on it."""

    role: str
    path: str
    capacity: int | None
    free: int | None


@dataclass
class Plan:
    """A profile resolved on a machine."""

    host: str
    backend: str
    slots: list[SlotPlan] = field(default_factory=list)
    storage: list[PathPlan] = field(default_factory=list)
    memory: MemoryPlan = field(default_factory=MemoryPlan)
    errors: list[str] = field(default_factory=list)

    def slots_for(self, phase: str) -> list[SlotPlan]:
        return [slot for slot in self.slots if slot.phase == phase]


def plan_profile(profile: Profile, source: Path, machine: Machine | None = None) -> Plan:
    """Resolve ``profile`` (read from ``source``) on ``machine`` (this one by default)."""
    machine = machine or Machine.here()
    plan = Plan(profile.host, profile.backend)
    resolver = _Resolver(profile, source, machine, plan)
    for phase in QUEUE_NAMES:
        slots = profile.phase_slots(phase)
        if slots is not None:
            resolver.phase(phase.value, slots)
    resolver.auto_cores()
    resolver.storage()
    resolver.memory()
    resolver.apart()
    resolver.processor()
    return plan


class _Resolver:
    def __init__(self, profile: Profile, source: Path, machine: Machine, plan: Plan) -> None:
        self.profile, self.source, self.machine, self.plan = profile, source, machine, plan
        self.owner: dict[int, str] = {}
        self.pending: list[tuple[str, PhaseSlots, int]] = []

    def error(self, field_name: str, message: str) -> None:
        self.plan.errors.append(f"{self.source}: {field_name}: {message}")

    def phase(self, phase: str, slots: PhaseSlots) -> None:
        for index in range(slots.slots):
            cores = None
            if isinstance(slots.cores, list):
                cores = self.explicit_cores(phase, index, slots.cores[index])
            elif isinstance(slots.cores, int):
                self.pending.append((phase, slots, index))
            gpus = self.gpus(phase, index, slots.gpus[index]) if slots.gpus else None
            self.plan.slots.append(
                SlotPlan(phase, index, cores, gpus, dict(slots.env), self.locks(phase, gpus))
            )

    def explicit_cores(self, phase: str, index: int, cores: list[int]) -> tuple[int, ...]:
        where = f"phases.{phase}.cores[{index}]"
        missing = [core for core in cores if core not in self.machine.cores]
        if missing:
            usable = ",".join(map(str, sorted(self.machine.cores)))
            self.error(where, f"cores {_list(missing)} do not exist here (usable: {usable})")
        for core in cores:
            if core in self.owner:
                self.error(where, f"core {core} is also given to {self.owner[core]}")
            elif core not in missing:
                self.owner[core] = where
        return tuple(cores)

    def auto_cores(self) -> None:
        """Give count-based slots whole runs of free cores that share an L3 cache."""
        short: dict[str, list[int]] = {}
        for phase, slots, index in self.pending:
            count = int(slots.cores)  # type: ignore[arg-type]
            free_groups = [
                [c for c in group if c not in self.owner] for group in self.machine.groups
            ]
            group = next((g for g in free_groups if len(g) >= count), None)
            if group is None:
                short.setdefault(phase, []).append(index)
                continue
            chosen = tuple(group[:count])
            for core in chosen:
                self.owner[core] = f"phases.{phase}.cores (slot {index})"
            position = next(
                i for i, s in enumerate(self.plan.slots) if s.phase == phase and s.index == index
            )
            self.plan.slots[position] = replace(self.plan.slots[position], cores=chosen)
        for phase, indices in short.items():
            count = self.profile.phases[phase].cores
            self.error(
                f"phases.{phase}.cores",
                f"no {count} free cores sharing an L3 cache "
                f"left for slots {_list(indices)} of {self.profile.phases[phase].slots}",
            )

    def gpus(self, phase: str, index: int, gpus: list[int]) -> tuple[int, ...]:
        where = f"phases.{phase}.gpus[{index}]"
        present = self.machine.gpus
        if present is None:
            if self.profile.backend != "sim":
                self.error(where, f"GPUs {_list(gpus)} requested but no NVIDIA driver was found")
        else:
            for gpu in gpus:
                if not 0 <= gpu < present:
                    self.error(where, f"GPU {gpu} is not present (this machine has {present})")
        return tuple(gpus)

    def locks(self, phase: str, gpus: tuple[int, ...] | None) -> tuple[str, ...]:
        shared = {
            gpu
            for group in self.profile.gpu_groups
            if phase in group.phases
            for gpu in group.gpus
            if gpus and gpu in gpus
        }
        return tuple(f"gpu-{gpu}" for gpu in sorted(shared))

    def storage(self) -> None:
        needs = {
            "temp": scratch_bytes(self.profile.backend, self.profile.sector_size),
            "sealed": sealed_bytes(self.profile.backend, self.profile.sector_size),
        }
        for role in ("temp", "sealed"):
            for index, entry in enumerate(getattr(self.profile.storage, role)):
                where = f"storage.{role}[{index}].path"
                free = self.check_path(where, entry.path)
                self.plan.storage.append(PathPlan(role, str(entry.path), entry.capacity, free))
                room = min(free, entry.capacity or free) if free is not None else None
                if room is not None and room < needs[role]:
                    self.error(
                        where,
                        f"{entry.path} has {format_bytes(room)} for sealpool, one sector "
                        f"needs {format_bytes(needs[role])}",
                    )

    def memory(self) -> None:
        """Refuse slots whose memory, with the reserve, is more than this machine's RAM."""
        memory = memory_plan(self.profile, self.machine.memory, self.machine.swap)
        self.plan.memory = memory
        if memory.ram is None or memory.need <= memory.ram:
            return
        ranked = sorted(memory.phases, key=lambda each: each.total, reverse=True)
        parts = [
            f"{each.phase} {each.slots} × {format_bytes(each.per_slot)}"
            + (f" + {format_bytes(each.shared)} shared" if each.shared else "")
            for each in ranked
            if each.total
        ]
        parts.append(f"{format_bytes(memory.reserve)} reserve")
        self.error(
            f"phases.{ranked[0].phase}.memory",
            f"the slots need {format_bytes(memory.need)} of RAM ({', '.join(parts)}) but this "
            f"machine has {format_bytes(memory.ram)}: it would swap",
        )

    def apart(self) -> None:
        """Refuse sealed paths that are, contain or lie inside a temp path (resolved):
        Finalize would move a sector's files onto themselves, then remove its scratch."""
        temps = [entry.path.resolve() for entry in self.profile.storage.temp]
        for index, entry in enumerate(self.profile.storage.sealed):
            sealed = entry.path.resolve()
            for number, temp in enumerate(temps):
                if overlap(sealed, temp):
                    self.error(
                        f"storage.sealed[{index}].path",
                        f"{sealed} overlaps storage.temp[{number}].path {temp}: temp and "
                        "sealed paths must be apart, neither inside the other",
                    )

    def processor(self) -> None:
        """Refuse an external processor that is neither an executable file nor on PATH."""
        if self.profile.backend != "external" or not self.profile.processor:
            return
        program = self.profile.processor[0]
        if shutil.which(program) is None:
            self.error(
                "processor[0]",
                f"{program!r} is not an executable file nor a program on PATH",
            )

    def check_path(self, where: str, path: Path) -> int | None:
        if not path.is_dir():
            self.error(where, f"{path} does not exist or is not a directory")
            return None
        if not os.access(path, os.W_OK | os.X_OK):
            self.error(where, f"{path} is not writable")
            return None
        return psutil.disk_usage(str(path)).free


def _list(values: list[int]) -> str:
    return ",".join(map(str, values))
