"""The simulated backend: sleeps each phase's (time-scaled) duration and writes small real
files where a real sealer writes big ones, so routing and storage can be checked for real.

Each sector's scratch directory carries a ``.host`` marker naming the host that wrote it. A
phase that reads scratch files on another host counts those bytes as ``cross_host_bytes``
(a real farm would have to copy them over the network); sealpool's routing keeps it at 0.

The paths come from the sector's record in Redis, so before touching one the backend checks
that it resolves to ``<root>/<sector id>`` under one of the slot's temp (or, for Finalize's
target, sealed) directories: a bad record can't make it write or delete anything else.

Finalize copies the sealed file and the cache files lotus proves with (``p_aux``, ``t_aux``,
``sc-02-data-tree-r-last*.dat``) into a lotus storage path (:mod:`sealpool.proving_layout`)
and reports their sizes and the sealed file's sha256, as a processor does; the scratch is
left for the step, which removes it only once the copies match (see
``sealpool.sealing_tasks.steps.finalize``).
"""

from __future__ import annotations

import hashlib
import random
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sealpool.backends.base import AggregateRequest, PhaseRequest, Slot, file_sha256
from sealpool.chain.commitments import SEALED, UNSEALED, commitment_cid
from sealpool.chain.sim import sim_aggregate, sim_proof
from sealpool.config import Settings
from sealpool.errors import PhaseError
from sealpool.paths import sector_dir_in
from sealpool.proving_layout import cache_names, find_sector_files
from sealpool.scratch_lease import check_scratch

LAYERS = 11
FILE_BYTES = 4096
HOST_MARKER = ".host"
SEALED_FILE, CACHE_DIR = "sealed", "cache"  # in the scratch
MOST_CACHE_FILES = len(cache_names(64 << 30))
SCRATCH_BYTES = (1 + LAYERS + MOST_CACHE_FILES + 1) * FILE_BYTES  # unsealed, layers, cache, sealed
SEALED_BYTES = (1 + MOST_CACHE_FILES) * FILE_BYTES  # sealed file and the cache files kept with it
READS_SCRATCH = frozenset({"PreCommit1", "PreCommit2", "Commit1", "Finalize"})
TOUCHES_SCRATCH = READS_SCRATCH | {"AddPiece"}


def _digest(*parts: object) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def sector_path(request: PhaseRequest, path: str, roots: Sequence[Path], role: str) -> Path:
    """``path`` resolved, if it is ``<root>/<sector id>`` for one of ``roots``; else a
    permanent PhaseError (nothing outside the slot's directories is written or deleted)."""
    if resolved := sector_dir_in(path, roots, request.sector_id):
        return resolved
    raise PhaseError(
        f"{request.phase} of {request.sector_id}: refused {role} path {path!r}: not "
        f"<{role} dir>/{request.sector_id} under this slot's {role} dirs",
        retry=False,
    )


def _write(path: Path, seed: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    block = hashlib.sha256(seed.encode()).digest()
    path.write_bytes(block * (FILE_BYTES // len(block)))


class SimBackend:
    """Time-scaled phases that leave real files behind."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def run(self, request: PhaseRequest, slot: Slot, cancelled: threading.Event) -> dict[str, Any]:
        if request.phase in TOUCHES_SCRATCH:
            scratch = sector_path(request, request.temp_path, slot.temp_dirs, "temp")
        else:
            scratch = Path(request.temp_path)
        reads = request.phase in READS_SCRATCH
        cross_host = self._cross_host_bytes(scratch, slot) if reads else 0
        seconds = self.settings.wall_seconds(self._farm_seconds(request, slot))
        if cancelled.wait(seconds):
            raise PhaseError(f"{request.phase} of {request.sector_id} cancelled", retry=True)
        if request.phase in TOUCHES_SCRATCH:
            check_scratch(scratch, request.token, f"{request.phase} of {request.sector_id}")
        outputs = getattr(self, f"_{request.phase.lower()}")(request, scratch, slot)
        return {**outputs, "cross_host_bytes": cross_host, "host": slot.host}

    def aggregate(self, request: AggregateRequest) -> bytes:
        """The sim chain's aggregate of the proofs (:func:`sealpool.chain.sim.sim_aggregate`)."""
        return sim_aggregate(request.proofs)

    def _farm_seconds(self, request: PhaseRequest, slot: Slot) -> float:
        """The phase's time, drawn from the spread and scaled by the host's factor."""
        settings = self.settings
        seconds = settings.phase_seconds.get(request.phase, 0.0)
        spread = settings.sim_spread
        if spread:
            draw = random.Random(f"{settings.sim_seed}:{request.sector_id}:{request.phase}")
            seconds *= draw.uniform(1 - spread, 1 + spread)
        return seconds * settings.sim_host_factor.get(slot.host, 1.0)

    @staticmethod
    def _cross_host_bytes(scratch: Path, slot: Slot) -> int:
        marker = scratch / HOST_MARKER
        if not marker.exists() or marker.read_text() == slot.host:
            return 0
        return sum(path.stat().st_size for path in scratch.rglob("*") if path.is_file())

    def _addpiece(self, request: PhaseRequest, scratch: Path, slot: Slot) -> dict[str, Any]:
        scratch.mkdir(parents=True, exist_ok=True)
        (scratch / HOST_MARKER).write_text(slot.host)
        _write(scratch / "unsealed", _digest(request.sector_id, request.deal_ids))
        return {"comm_d": _digest("comm_d", request.sector_id, request.deal_ids)}

    def _precommit1(self, request: PhaseRequest, scratch: Path, slot: Slot) -> dict[str, Any]:
        if not (scratch / "unsealed").exists():
            raise PhaseError(f"{request.sector_id}: no unsealed data in {scratch}", retry=False)
        ticket = (request.ticket or {}).get("value", "")
        for layer in range(1, LAYERS + 1):
            _write(scratch / CACHE_DIR / f"sc-02-data-layer-{layer}.dat", f"{ticket}:{layer}")
        return {"labels": _digest("pc1", request.sector_id, ticket)}

    def _precommit2(self, request: PhaseRequest, scratch: Path, slot: Slot) -> dict[str, Any]:
        labels = request.inputs["PreCommit1"]["labels"]
        for name in cache_names(request.sector_size):
            _write(scratch / CACHE_DIR / name, f"{labels}:{name}")
        _write(scratch / SEALED_FILE, labels)
        comm_r = commitment_cid(SEALED, bytes.fromhex(_digest("comm_r", labels)))
        unsealed = request.inputs["AddPiece"]["comm_d"] if request.deal_ids else None
        comm_d = commitment_cid(UNSEALED, bytes.fromhex(unsealed)) if unsealed else None
        return {"comm_r": str(comm_r), "comm_d": str(comm_d) if comm_d else None}

    def _commit1(self, request: PhaseRequest, scratch: Path, slot: Slot) -> dict[str, Any]:
        if not (scratch / CACHE_DIR / "p_aux").exists():
            raise PhaseError(f"{request.sector_id}: no PC2 cache in {scratch}", retry=False)
        seed = (request.seed or {}).get("value", "")
        return {"c1_output": _digest("c1", request.inputs["PreCommit2"]["comm_r"], seed)}

    def _commit2(self, request: PhaseRequest, scratch: Path, slot: Slot) -> dict[str, Any]:
        comm_r = request.inputs["PreCommit2"]["comm_r"]
        ticket, seed = ((value or {}).get("value", "") for value in (request.ticket, request.seed))
        return {"proof": sim_proof(request.miner, request.number, comm_r, ticket, seed).hex()}

    def _finalize(self, request: PhaseRequest, scratch: Path, slot: Slot) -> dict[str, Any]:
        files = find_sector_files(
            request.sealed_path or "", slot.sealed_dirs, request.miner, request.number
        )
        if files is None or Path(request.cache_path or "").resolve() != files.cache:
            raise PhaseError(
                f"Finalize of {request.sector_id}: refused sealed path {request.sealed_path!r} "
                f"and cache path {request.cache_path!r}: not this sector's files in a lotus "
                "storage path under this slot's sealed dirs",
                retry=False,
            )
        names = cache_names(request.sector_size)
        files.cache.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(scratch / SEALED_FILE, files.sealed)
        for name in names:
            shutil.copyfile(scratch / CACHE_DIR / name, files.cache / name)
        return {  # of the files written in scratch: the step checks the copies against them
            "sealed_bytes": (scratch / SEALED_FILE).stat().st_size,
            "sealed_sha256": file_sha256(scratch / SEALED_FILE),
            "cache_files": {n: (scratch / CACHE_DIR / n).stat().st_size for n in names},
        }
