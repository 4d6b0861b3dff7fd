"""The contract between a phase task and whatever computes the phase."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sealpool.errors import PhaseError
from sealpool.proving_layout import SectorFiles, cache_names

SECTOR_BYTES: dict[str, int] = {
    "2KiB": 2 << 10,
    "8MiB": 8 << 20,
    "512MiB": 512 << 20,
    "32GiB": 32 << 30,
    "64GiB": 64 << 30,
}
SEALED_OUTPUTS = ("sealed_bytes", "sealed_sha256", "cache_files")  # Finalize's, checked
HASH_CHUNK = 1 << 20


@dataclass
class GpuHold:
    """When a running phase held its slot's exclusive GPU locks (those of its GPU groups).

    Filled in by the slot pool that takes and releases the locks, in milliseconds on the
    Redis server's clock: ``from_ms`` read once every lock is held, ``to_ms`` read before
    the first is released, so the window lies inside the time the locks were held and two
    phases' windows on one lock never overlap. ``lost`` says a lock was lost meanwhile (see
    ``SlotPool.acquire``): the phase did not have the GPU to itself all along.
    """

    host: str
    locks: tuple[str, ...]  # lock names, "gpu-<index>"
    from_ms: int | None = None
    to_ms: int | None = None
    lost: bool = False

    def as_json(self) -> dict[str, Any] | None:
        """The window as recorded in the phase's outputs (``gpu_held``); None until it
        closed."""
        if self.from_ms is None or self.to_ms is None:
            return None
        held = {"host": self.host, "locks": list(self.locks), "ms": [self.from_ms, self.to_ms]}
        return {**held, "lost": True} if self.lost else held


@dataclass(frozen=True)
class Slot:
    """The resources one running phase gets on its host."""

    host: str
    temp_dirs: tuple[Path, ...]
    sealed_dirs: tuple[Path, ...]
    cores: tuple[int, ...] | None = None
    gpus: tuple[int, ...] | None = None
    env: dict[str, str] = field(default_factory=dict)
    gpu_hold: GpuHold | None = field(default=None, compare=False)  # when it has GPU locks


@dataclass(frozen=True)
class PhaseRequest:
    """Everything a backend is told about the phase to compute (sent as JSON to processors)."""

    sector_id: str
    miner: str
    number: int
    phase: str
    sector_size: int
    temp_path: str
    sealed_path: str | None  # Finalize's: the sealed file to write (a lotus storage path's)
    ticket: dict[str, Any] | None
    seed: dict[str, Any] | None
    deal_ids: list[int]
    inputs: dict[str, Any]
    token: int = 0  # the attempt's fencing token: write scratch only while .lease holds it
    cache_path: str | None = None  # Finalize's: the directory to put the cache files in


@dataclass(frozen=True)
class AggregateRequest:
    """Proofs of several sectors to fold into one SnarkPack aggregate (sent as JSON to
    processors, with ``"phase": "Aggregate"`` and the proofs in hex)."""

    miner: str
    sectors: list[int]  # ascending, as the message lists them
    seal_proof: int  # RegisteredSealProof
    proofs: list[bytes]
    aggregate_type: str = "SnarkPackV2"

    def as_json(self) -> dict[str, Any]:
        return {
            "phase": "Aggregate", "miner": self.miner, "sectors": self.sectors,
            "seal_proof": self.seal_proof, "aggregate_type": self.aggregate_type,
            "proofs": [proof.hex() for proof in self.proofs],
        }  # fmt: skip


class Backend(Protocol):
    """Computes one phase of one sector and returns that phase's outputs; aggregates the
    proofs of a prove-commit batch."""

    def run(self, request: PhaseRequest, slot: Slot, cancelled: threading.Event) -> dict[str, Any]:
        """Compute the phase; raise PhaseError on failure. Stop early once ``cancelled``."""
        ...

    def aggregate(self, request: AggregateRequest) -> bytes:
        """The aggregate proof of ``request.proofs``; PhaseError on failure."""
        ...


def file_sha256(path: Path) -> str:
    """The sha256 of the file at ``path``, in hex."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_file(path: Path, size: int, sha256: str | None, what: str) -> None:
    """A retryable PhaseError unless ``path`` is a file of ``size`` bytes (with ``sha256``,
    when given), as the processor reported: a mismatch is a write that went wrong."""
    if not path.is_file():
        raise PhaseError(f"{what}: {path} is not a file the processor wrote", retry=True)
    if (actual := path.stat().st_size) != size:
        raise PhaseError(
            f"{what}: {path} has {actual} bytes, not the {size} the processor reported",
            retry=True,
        )
    if sha256 is not None and (digest := file_sha256(path)) != sha256:
        raise PhaseError(
            f"{what}: {path} has sha256 {digest}, not the {sha256} the processor reported",
            retry=True,
        )


def check_sealed(files: SectorFiles, sector_size: int, outputs: dict[str, Any], what: str) -> None:
    """Check Finalize's files against its outputs: the sealed file of ``sealed_bytes``
    bytes with ``sealed_sha256``, and in the cache directory each of ``cache_files`` (name
    → bytes), which must name every file lotus needs to prove the sector. Outputs that
    don't say are a permanent PhaseError."""
    size, digest, cache = (outputs.get(name) for name in SEALED_OUTPUTS)
    if not (
        type(size) is int
        and isinstance(digest, str)
        and isinstance(cache, dict)
        and cache
        and all("/" not in name and name not in ("", ".", "..") for name in cache)
        and all(type(each) is int for each in cache.values())
    ):
        got = f"sealed_bytes={size!r}, sealed_sha256={digest!r}, cache_files={cache!r}"
        raise PhaseError(
            f"{what}: outputs must give sealed_bytes, sealed_sha256 and cache_files "
            f"(file name → bytes) to check the sealed sector with; got {got:.300}",
            retry=False,
        )
    if missing := [name for name in cache_names(sector_size) if name not in cache]:
        raise PhaseError(
            f"{what}: cache_files: {', '.join(missing)} missing; lotus needs them to prove "
            "the sector",
            retry=False,
        )
    check_file(files.sealed, size, digest, what)
    for name, each in cache.items():
        check_file(files.cache / name, each, None, what)
