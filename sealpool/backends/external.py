"""The external-processor backend: one configured program computes every phase.

Protocol: the program gets the PhaseRequest as one JSON object on stdin and prints one JSON
object on stdout, the phase's outputs. It may print ``{"error": "...", "retry": false}``
to fail the phase. It runs pinned to the slot's cores, with ``CUDA_VISIBLE_DEVICES`` set to
the slot's GPUs (empty for a slot without a GPU) and the slot's extra environment, in a
process group of its own that is killed on timeout or when the phase's lease is lost.

Failures: a timeout or a non-zero exit is transient (tried again with back-off), output that
isn't a JSON object is permanent (the processor and sealpool disagree on the protocol).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from sealpool.backends.base import PhaseRequest, Slot
from sealpool.errors import PhaseError

DEFAULT_TIMEOUT_S = 24 * 3600.0
STDERR_TAIL = 2000
POLL_S = 0.2


def slot_argv(argv: Sequence[str], slot: Slot) -> list[str]:
    """``argv`` wrapped so that it starts on the slot's cores (unchanged without cores)."""
    if not slot.cores:
        return list(argv)
    cores = ",".join(map(str, slot.cores))
    return [sys.executable, "-m", "sealpool.backends.pin", "--cores", cores, "--", *argv]


def slot_env(slot: Slot) -> dict[str, str]:
    """The processor's environment: ours, the slot's extras and its GPU selection."""
    env = {**os.environ, **slot.env}
    if slot.gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, slot.gpus))
    return env


class ExternalBackend:
    """Runs a configured processor program per phase."""

    def __init__(self, argv: Sequence[str], timeouts_s: dict[str, float] | None = None) -> None:
        if not argv:
            raise PhaseError("backend 'external' needs a processor argv", retry=False)
        self.argv = list(argv)
        self.timeouts_s = timeouts_s or {}

    def run(self, request: PhaseRequest, slot: Slot, cancelled: threading.Event) -> dict[str, Any]:
        timeout_s = self.timeouts_s.get(request.phase, DEFAULT_TIMEOUT_S)
        what = f"{request.phase} of {request.sector_id}"
        try:
            process = subprocess.Popen(
                slot_argv(self.argv, slot), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=slot_env(slot), start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            raise PhaseError(f"{what}: cannot start {self.argv[0]}: {exc}", retry=False) from None
        stdout, stderr = self._communicate(process, request, timeout_s, cancelled, what)
        tail = stderr.decode(errors="replace")[-STDERR_TAIL:].strip()
        if process.returncode != 0:
            raise PhaseError(f"{what}: processor exited {process.returncode}: {tail}", retry=True)
        try:
            outputs = json.loads(stdout)
        except ValueError:
            outputs = None
        if not isinstance(outputs, dict):
            shown = stdout.decode(errors="replace")[:200]
            raise PhaseError(
                f"{what}: processor printed no JSON object: {shown!r} {tail}", retry=False
            )
        if "error" in outputs:
            raise PhaseError(f"{what}: {outputs['error']}", retry=bool(outputs.get("retry")))
        return outputs

    @staticmethod
    def _communicate(
        process: subprocess.Popen[bytes],
        request: PhaseRequest,
        timeout_s: float,
        cancelled: threading.Event,
        what: str,
    ) -> tuple[bytes, bytes]:
        """Feed the request, collect the output; kill the group on timeout or cancel."""
        payload: bytes | None = json.dumps(dataclasses.asdict(request)).encode()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return process.communicate(payload, timeout=POLL_S)
            except subprocess.TimeoutExpired:
                payload = None
                if cancelled.is_set() or time.monotonic() > deadline:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.communicate()
                    reason = "cancelled" if cancelled.is_set() else f"timed out after {timeout_s}s"
                    raise PhaseError(f"{what}: processor {reason}", retry=True) from None
