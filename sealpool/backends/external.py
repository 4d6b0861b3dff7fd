"""The external-processor backend: one configured program computes every phase.

Protocol: the program gets the PhaseRequest as one JSON object on stdin and prints one JSON
object on stdout, the phase's outputs. It may print ``{"error": "...", "retry": false}``
to fail the phase. It runs pinned to the slot's cores, with ``CUDA_VISIBLE_DEVICES`` set to
the slot's GPUs (empty for a slot without a GPU), in a process group of its own that is
killed on timeout or when the phase's lease is lost.

Aggregate: for a prove-commit batch the pump asks once for one SnarkPack aggregate of its
sectors' proofs (:class:`~sealpool.backends.base.AggregateRequest`, unpinned)::

    {"phase": "Aggregate", "miner": "f01000", "sectors": [7, 8, 9, 10], "seal_proof": 8,
     "aggregate_type": "SnarkPackV2", "proofs": ["<hex>", ...]}

and reads ``{"aggregate": "<hex>"}``; an error makes the batch try again at the next pump.

Outputs are kept in the sector's record and sent with every later request, so they may be
at most ``MAX_OUTPUT_BYTES`` (64 KiB) of JSON. A larger artefact (a real Commit1 output is
megabytes) goes to a file in the sector's temp directory (``temp_path``; in Finalize also
``cache_path``), reported under ``files`` by name::

    {"files": {"c1_output": {"path": "/scratch/f01000-7/c1-output.json",
                             "sha256": "<64 hex digits>", "bytes": 8388608}}}

sealpool checks each one (under the sector's directories, that size, that sha256) before
the phase completes; later phases find the entry in ``inputs`` — on the host that wrote the
file, or wherever that directory is shared. Finalize copies (or moves) the sealed file to
``sealed_path`` and the cache files (at least ``p_aux``, ``t_aux`` and the
``sc-02-data-tree-r-last*.dat`` files) into ``cache_path``, both in a lotus storage path
(:mod:`sealpool.proving_layout`), and reports ``sealed_bytes``, ``sealed_sha256`` and
``cache_files`` (file name → bytes): sealpool checks them there, and only then removes the
scratch directory itself.

Pipes: the request is written while stdout and stderr are read, in one loop that also keeps
the timeout, so a processor that starts reading late (behind the pin wrapper's start-up)
still gets all of a large request. On timeout or cancel the group is killed and reading
stops at once, whatever still holds the pipes (a descendant that left the group); a
processor that exits while a descendant keeps its pipes open is waited for
``EXIT_GRACE_S``, then its group is killed.

Fencing: the request carries ``token``, the fencing token of this attempt's lease, and
sealpool stamps the sector's temp directory with it (``.lease``) before starting the
processor. A processor that writes the scratch over a long time should check that file
still holds its token before each write: a larger one means this attempt outlived its
lease and another took the sector over (sealpool also kills the group when it notices).

Its environment is built from an allow-list, never inherited whole (ours holds the Redis
URL with its password and the chain node's token): ``BASE_ENV``, the names in the
``processor_env`` setting, then the slot's own ``env``.

Failures: a timeout, a non-zero exit, or a reported file that is missing or doesn't match
is transient (tried again with back-off); output that isn't a JSON object, is over the cap,
or reports a file outside the sector's directories is permanent (the processor and sealpool
disagree on the protocol).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sealpool.backends.base import AggregateRequest, PhaseRequest, Slot, check_file
from sealpool.errors import PhaseError

BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER")
DEFAULT_TIMEOUT_S = 24 * 3600.0
MAX_OUTPUT_BYTES = 64 << 10  # a phase's outputs JSON; bigger artefacts go to files
STDERR_TAIL = 2000
POLL_S = 0.2
EXIT_GRACE_S = 2.0  # after the processor exited, for the pipes its descendants hold
REAP_S = 5.0  # for a killed processor to be reaped (one stuck in the kernel is left)
CHUNK = 1 << 16
SHA256 = re.compile(r"[0-9a-f]{64}")
UNPINNED = Slot(host="", temp_dirs=(), sealed_dirs=())  # an Aggregate runs on no slot


def slot_argv(argv: Sequence[str], slot: Slot) -> list[str]:
    """``argv`` wrapped so that it starts on the slot's cores (unchanged without cores)."""
    if not slot.cores:
        return list(argv)
    cores = ",".join(map(str, slot.cores))
    return [sys.executable, "-m", "sealpool.backends.pin", "--cores", cores, "--", *argv]


def slot_env(slot: Slot, passed: Sequence[str] = ()) -> dict[str, str]:
    """The processor's environment: our ``BASE_ENV`` and ``passed`` variables (those set),
    the slot's extras and its GPU selection."""
    names = (*BASE_ENV, *passed)
    env = {name: os.environ[name] for name in names if name in os.environ} | slot.env
    if slot.gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, slot.gpus))
    return env


class ExternalBackend:
    """Runs a configured processor program per phase."""

    def __init__(
        self,
        argv: Sequence[str],
        timeouts_s: dict[str, float] | None = None,
        passed_env: Sequence[str] = (),
    ) -> None:
        if not argv:
            raise PhaseError("backend 'external' needs a processor argv", retry=False)
        self.argv = list(argv)
        self.timeouts_s = timeouts_s or {}
        self.passed_env = tuple(passed_env)

    def run(self, request: PhaseRequest, slot: Slot, cancelled: threading.Event) -> dict[str, Any]:
        what = f"{request.phase} of {request.sector_id}"
        outputs = self._ask(dataclasses.asdict(request), slot, cancelled, what)
        _check_files(request, outputs.get("files", {}), what)
        return outputs

    def aggregate(self, request: AggregateRequest) -> bytes:
        """The processor's ``{"aggregate": "<hex>"}`` for an Aggregate request."""
        what = f"Aggregate of {request.miner} sectors {request.sectors}"
        outputs = self._ask(request.as_json(), UNPINNED, threading.Event(), what)
        try:
            return bytes.fromhex(outputs["aggregate"])
        except (KeyError, TypeError, ValueError):
            shown = f"{outputs.get('aggregate')!r:.100}"
            why = f"{what}: aggregate: not proof bytes in hex: {shown}"
            raise PhaseError(why, retry=False) from None

    def _ask(
        self, request: dict[str, Any], slot: Slot, cancelled: threading.Event, what: str
    ) -> dict[str, Any]:
        """Run the processor on ``request``: the JSON object it printed, or a PhaseError."""
        timeout_s = self.timeouts_s.get(request["phase"], DEFAULT_TIMEOUT_S)
        try:
            process = subprocess.Popen(
                slot_argv(self.argv, slot), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=slot_env(slot, self.passed_env), start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            raise PhaseError(f"{what}: cannot start {self.argv[0]}: {exc}", retry=False) from None
        payload = json.dumps(request).encode()
        stdout, printed, stderr = _exchange(process, payload, timeout_s, cancelled, what)
        tail = stderr.decode(errors="replace")[-STDERR_TAIL:].strip()
        if process.returncode != 0:
            raise PhaseError(f"{what}: processor exited {process.returncode}: {tail}", retry=True)
        if printed > MAX_OUTPUT_BYTES:
            raise PhaseError(
                f"{what}: processor printed {printed} bytes of outputs, over the "
                f"{MAX_OUTPUT_BYTES >> 10} KiB cap: write large outputs to files in the "
                "sector's directory and report them under 'files'",
                retry=False,
            )
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


def _exchange(
    process: subprocess.Popen[bytes],
    payload: bytes,
    timeout_s: float,
    cancelled: threading.Event,
    what: str,
) -> tuple[bytes, int, bytes]:
    """Write ``payload`` to the processor while reading what it prints, until it exits and
    its pipes close: the first ``MAX_OUTPUT_BYTES`` + 1 bytes of stdout, how many it
    printed, and the tail of stderr. A PhaseError on timeout or cancel, its group killed."""
    deadline = time.monotonic() + timeout_s
    stdin, out, err = process.stdin, process.stdout, process.stderr
    assert stdin and out and err  # all three are pipes
    view, sent = memoryview(payload), 0
    stdout, printed, stderr = bytearray(), 0, bytearray()
    exited_at: float | None = None
    with selectors.DefaultSelector() as selector:
        for pipe, event in ((stdin, selectors.EVENT_WRITE), (out, selectors.EVENT_READ),
                            (err, selectors.EVENT_READ)):  # fmt: skip
            os.set_blocking(pipe.fileno(), False)
            selector.register(pipe, event, pipe)
        try:
            while process.poll() is None or selector.get_map():
                now = time.monotonic()
                if cancelled.is_set() or now > deadline:
                    _kill_group(process)
                    reason = "cancelled" if cancelled.is_set() else f"timed out after {timeout_s}s"
                    raise PhaseError(f"{what}: processor {reason}", retry=True)
                if process.returncode is not None:
                    exited_at = now if exited_at is None else exited_at
                    if now - exited_at > EXIT_GRACE_S:  # a descendant holds the pipes
                        _kill_group(process)
                        break
                for key, _ in selector.select(POLL_S):
                    pipe = key.data
                    try:
                        if pipe is stdin:
                            sent += os.write(key.fd, view[sent : sent + CHUNK])
                            done = sent == len(view)
                        else:
                            data = os.read(key.fd, CHUNK)
                            done = not data
                            if pipe is out:
                                stdout += data[: MAX_OUTPUT_BYTES + 1 - len(stdout)]
                                printed += len(data)
                            else:
                                stderr = (stderr + data)[-STDERR_TAIL:]
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:  # it stopped reading: its exit status tells why
                        done = True
                    if done:  # all written (closing stdin is the request's end), or EOF
                        selector.unregister(pipe)
                        pipe.close()
        finally:
            for pipe in (stdin, out, err):
                pipe.close()
    return bytes(stdout), printed, bytes(stderr)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the processor's process group; reap the processor if it goes within REAP_S."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return  # the group is gone already
    with contextlib.suppress(subprocess.TimeoutExpired):  # stuck in the kernel: left to Popen
        process.wait(REAP_S)


def _check_files(request: PhaseRequest, files: object, what: str) -> None:
    """Check the artefacts an outputs' ``files`` reports: each under the sector's temp or
    cache directory, of its size and sha256 (see the module docstring)."""
    if not isinstance(files, dict):
        raise PhaseError(
            f"{what}: files: not an object of name → entry: {files!r:.100}", retry=False
        )
    roots = [Path(path).resolve() for path in (request.temp_path, request.cache_path) if path]
    for name, entry in files.items():
        field = f"files.{name}"
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("path"), str)
            and isinstance(entry.get("sha256"), str)
            and SHA256.fullmatch(entry["sha256"])
            and type(entry.get("bytes")) is int
        ):
            raise PhaseError(
                f"{what}: {field}: not {{path, sha256 (hex), bytes}}: {entry!r:.200}", retry=False
            )
        path = Path(entry["path"]).resolve()
        if not any(root in path.parents for root in roots):
            shown = " or ".join(map(str, roots)) or "none (no temp or cache path)"
            raise PhaseError(
                f"{what}: {field}.path {entry['path']!r} is not under the sector's "
                f"directories: {shown}",
                retry=False,
            )
        check_file(path, entry["bytes"], entry["sha256"], what)
