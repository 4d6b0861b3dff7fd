"""The external-processor backend: protocol, failures, CPU pinning and GPU selection."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from sealpool.backends import ExternalBackend, PhaseRequest, Slot
from sealpool.backends.pin import parse_cores
from sealpool.errors import ConfigError, InvalidSectorId, PhaseError
from sealpool.storage import sector_dir

PROCESSOR = [sys.executable, str(Path(__file__).parents[1] / "docs/examples/processor.py")]


def request(tmp_path: Path, phase: str = "AddPiece") -> PhaseRequest:
    return PhaseRequest(
        sector_id="f01000-1",
        miner="f01000",
        number=1,
        phase=phase,
        sector_size=2048,
        temp_path=str(tmp_path / "f01000-1"),
        sealed_path=None,
        ticket=None,
        seed=None,
        deal_ids=[],
        inputs={},
    )


def slot(tmp_path: Path, **resources) -> Slot:
    return Slot(host="h", temp_dirs=(tmp_path,), sealed_dirs=(tmp_path,), **resources)


def run(argv: list[str], tmp_path: Path, timeout: float | None = None, **resources) -> dict:
    backend = ExternalBackend(argv, {"AddPiece": timeout} if timeout else None)
    return backend.run(request(tmp_path), slot(tmp_path, **resources), threading.Event())


def test_example_processor_runs_on_the_slot_cores_and_gpus(tmp_path: Path) -> None:
    core = sorted(os.sched_getaffinity(0))[-1]
    outputs = run(PROCESSOR, tmp_path, cores=(core,), gpus=(1,), env={"EXTRA": "1"})
    assert outputs["processor"] == "example" and outputs["comm_d"]
    assert parse_cores(outputs["cpus_allowed"]) == {core}
    assert outputs["cuda_visible_devices"] == "1"
    assert (tmp_path / "f01000-1" / "unsealed").exists()
    unpinned = run(PROCESSOR, tmp_path, gpus=())
    assert parse_cores(unpinned["cpus_allowed"]) == set(os.sched_getaffinity(0))
    assert unpinned["cuda_visible_devices"] == ""  # a slot without a GPU sees none


def test_non_zero_exit_is_transient_with_the_stderr_tail(tmp_path: Path) -> None:
    argv = [
        sys.executable,
        "-c",
        "import sys; sys.stderr.write('x' * 5000 + 'GPU lost'); sys.exit(7)",
    ]
    with pytest.raises(PhaseError, match=r"processor exited 7: x+GPU lost$") as failure:
        run(argv, tmp_path)
    assert failure.value.retry and len(str(failure.value)) < 2200


def test_output_that_is_not_a_json_object_is_permanent(tmp_path: Path) -> None:
    for printed in ("'not json'", "'[1, 2]'"):
        with pytest.raises(PhaseError, match="printed no JSON object") as failure:
            run([sys.executable, "-c", f"print({printed})"], tmp_path)
        assert not failure.value.retry


def test_processor_reported_error_keeps_its_retry_flag(tmp_path: Path) -> None:
    code = "import json; print(json.dumps({'error': 'bad piece', 'retry': False}))"
    with pytest.raises(PhaseError, match="AddPiece of f01000-1: bad piece") as failure:
        run([sys.executable, "-c", code], tmp_path)
    assert not failure.value.retry


def test_timeout_kills_the_processor_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    code = (
        f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', "
        f"'import time; time.sleep(60)']); open({str(pidfile)!r}, 'w').write(str(p.pid)); "
        f"time.sleep(60)"
    )
    with pytest.raises(PhaseError, match=r"timed out after 0\.5s") as failure:
        run([sys.executable, "-c", code], tmp_path, timeout=0.5)
    assert failure.value.retry
    child = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(child, 0)  # the grandchild went down with the group
            threading.Event().wait(0.05)


def test_missing_program_is_permanent(tmp_path: Path) -> None:
    with pytest.raises(PhaseError, match="cannot start /nonexistent/proc") as failure:
        run(["/nonexistent/proc"], tmp_path)
    assert not failure.value.retry


def test_sector_paths_stay_inside_their_root(tmp_path: Path) -> None:
    assert sector_dir(tmp_path, "f01000-3") == (tmp_path / "f01000-3").resolve()
    for bad in ("../f01000-3", "f01000-3/../../x", "/etc/passwd", "f01000-3/.."):
        with pytest.raises(InvalidSectorId):
            sector_dir(tmp_path, bad)
    (tmp_path / "f01000-4").symlink_to("/tmp")
    with pytest.raises(ConfigError, match="escapes storage root"):
        sector_dir(tmp_path, "f01000-4")
