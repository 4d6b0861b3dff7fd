"""What this machine has: usable CPU cores grouped by shared L3 cache, NVIDIA GPUs, RAM."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import psutil

CPU_SYSFS = Path("/sys/devices/system/cpu")


def parse_cpu_list(text: str) -> list[int]:
    """``"0-3,8"`` → ``[0, 1, 2, 3, 8]``."""
    cores: list[int] = []
    for part in filter(None, text.strip().split(",")):
        first, _, last = part.partition("-")
        cores.extend(range(int(first), int(last or first) + 1))
    return cores


def l3_groups(cores: set[int]) -> list[list[int]]:
    """``cores`` split into groups sharing an L3 cache (one group if sysfs doesn't say)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for core in sorted(cores):
        shared = CPU_SYSFS / f"cpu{core}" / "cache" / "index3" / "shared_cpu_list"
        try:
            key = tuple(parse_cpu_list(shared.read_text()))
        except (OSError, ValueError):
            key = ()
        groups.setdefault(key, []).append(core)
    return list(groups.values())


def gpu_count() -> int | None:
    """NVIDIA GPUs seen by NVML, or None when no driver is installed."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # pynvml raises NVMLError subclasses or OSError without a driver
        return None
    try:
        return int(pynvml.nvmlDeviceGetCount())
    finally:
        pynvml.nvmlShutdown()


@dataclass(frozen=True)
class Machine:
    """The facts a profile is checked against."""

    cores: frozenset[int]
    groups: list[list[int]] = field(default_factory=list)
    gpus: int | None = None
    memory: int | None = None  # bytes of RAM; None: unknown, not checked
    swap: int | None = None

    @classmethod
    def here(cls) -> Machine:
        cores = set(os.sched_getaffinity(0))
        ram, swap = psutil.virtual_memory().total, psutil.swap_memory().total
        return cls(frozenset(cores), l3_groups(cores), gpu_count(), ram, swap)
