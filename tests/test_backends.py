"""The backends: the external processor's protocol, failures, CPU pinning, GPU selection and
environment; the paths the sim backend may touch."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from sealpool.backends import ExternalBackend, PhaseRequest, SimBackend, Slot, make_backend
from sealpool.backends.external import BASE_ENV
from sealpool.backends.pin import parse_cores
from sealpool.config import Settings, load_settings
from sealpool.errors import ConfigError, InvalidSectorId, PhaseError
from sealpool.storage import sector_dir

from helpers import wait_until

PROCESSOR = [sys.executable, str(Path(__file__).parents[1] / "docs/examples/processor.py")]
ENV_DUMPER = [
    sys.executable,
    "-c",
    "import json, os, sys; sys.stdin.read(); print(json.dumps(dict(os.environ)))",
]


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


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


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
    # 5 s: time enough for a loaded machine to start the grandchild before the timeout
    with pytest.raises(PhaseError, match=r"timed out after 5\.0s") as failure:
        run([sys.executable, "-c", code], tmp_path, timeout=5.0)
    assert failure.value.retry
    child = int(pidfile.read_text())
    wait_until(lambda: gone(child), timeout_s=30, what="the grandchild went down with the group")


def test_timeout_holds_though_an_escaped_descendant_keeps_the_pipes(tmp_path: Path) -> None:
    pidfile = tmp_path / "escaped.pid"
    escaped = "import os, time; os.setsid(); time.sleep(60)"  # out of the killed group
    code = (
        f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', "
        f"{escaped!r}]); open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    )
    started = time.monotonic()
    try:
        with pytest.raises(PhaseError, match=r"timed out after 5\.0s") as failure:
            run([sys.executable, "-c", code], tmp_path, timeout=5.0)
        assert pidfile.exists()  # the descendant did escape before the timeout
        assert time.monotonic() - started < 5.0 + 25  # not the descendant's 60 s
        assert failure.value.retry
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_processor_that_exits_leaving_a_child_on_its_stdout_returns_its_outputs(
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "child.pid"
    script = f'sleep 60 & echo $! > {pidfile}; echo \'{{"comm_d": "x"}}\''
    started = time.monotonic()
    outputs = run(["sh", "-c", script], tmp_path, timeout=120)
    assert outputs == {"comm_d": "x"}
    assert time.monotonic() - started < 30  # neither the child's 60 s nor the 120 s timeout
    child = int(pidfile.read_text())
    wait_until(lambda: gone(child), timeout_s=30, what="the child went down with the group")


def test_large_request_reaches_a_processor_that_reads_late(tmp_path: Path) -> None:
    code = (
        "import json, sys, time; time.sleep(1); r = json.load(sys.stdin); "
        "print(json.dumps({'got': len(r['inputs']['Commit1']['c1_output'])}))"
    )
    big = dataclasses.replace(
        request(tmp_path, "Commit2"), inputs={"Commit1": {"c1_output": "a" * (4 << 20)}}
    )
    backend = ExternalBackend([sys.executable, "-c", code], {"Commit2": 60})
    assert backend.run(big, slot(tmp_path), threading.Event()) == {"got": 4 << 20}


def test_output_over_the_cap_is_refused_in_one_line(tmp_path: Path) -> None:
    code = "import json; print(json.dumps({'c1_output': 'a' * (1 << 20)}))"
    with pytest.raises(PhaseError, match="over the 64 KiB cap") as failure:
        run([sys.executable, "-c", code], tmp_path)
    assert not failure.value.retry and "\n" not in str(failure.value)
    assert len(str(failure.value)) < 400


# Writes a 1 MiB artefact into the sector's scratch and reports it (argv[1]: how to lie).
FILE_WRITER = """
import hashlib, json, os, sys
request = json.load(sys.stdin)
os.makedirs(request["temp_path"], exist_ok=True)
path = os.path.join(request["temp_path"], "c1-output.json")
data = b"x" * (1 << 20)
open(path, "wb").write(data)
entry = {"path": path, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
if sys.argv[1] == "checksum":
    entry["sha256"] = "0" * 64
elif sys.argv[1] == "outside":
    entry["path"] = os.path.join(os.path.dirname(request["temp_path"]), "elsewhere")
    open(entry["path"], "wb").write(data)
print(json.dumps({"files": {"c1_output": entry}}))
"""


def test_file_output_is_checked_and_its_checksum_recorded(tmp_path: Path) -> None:
    outputs = run([sys.executable, "-c", FILE_WRITER, "honest"], tmp_path)
    path = tmp_path / "f01000-1" / "c1-output.json"
    assert outputs == {
        "files": {
            "c1_output": {
                "path": str(path),
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "bytes": 1 << 20,
            }
        }
    }
    lied = r"c1-output\.json has sha256 [0-9a-f]{64}, not the 0{64} the processor reported"
    with pytest.raises(PhaseError, match=lied) as lie:
        run([sys.executable, "-c", FILE_WRITER, "checksum"], tmp_path)
    assert lie.value.retry
    with pytest.raises(PhaseError, match=r"files\.c1_output\.path .*elsewhere.* not under") as out:
        run([sys.executable, "-c", FILE_WRITER, "outside"], tmp_path)
    assert not out.value.retry


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


def test_processor_gets_an_allow_listed_environment_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEALPOOL_REDIS_URL", "redis://:hunter2@redis.lan/0")
    monkeypatch.setenv("SEALPOOL_CHAIN_RPC_TOKEN", "jwt-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    monkeypatch.setenv("FIL_PROOFS_PARAMETER_CACHE", "/var/tmp/filecoin-proof-parameters")
    monkeypatch.setenv("SEALPOOL_PROCESSOR", json.dumps(ENV_DUMPER))
    monkeypatch.setenv("SEALPOOL_BACKEND", "external")
    monkeypatch.setenv("SEALPOOL_PROCESSOR_ENV", '["FIL_PROOFS_PARAMETER_CACHE", "RUST_LOG"]')
    backend = make_backend(load_settings())
    resources = slot(tmp_path, gpus=(0,), env={"FIL_PROOFS_USE_GPU_TREE_BUILDER": "1"})
    seen = backend.run(request(tmp_path), resources, threading.Event())
    seen.pop("LC_CTYPE", None)  # set by Python itself in a C locale (PEP 538)
    assert seen == {
        **{name: os.environ[name] for name in BASE_ENV if name in os.environ},
        "FIL_PROOFS_PARAMETER_CACHE": "/var/tmp/filecoin-proof-parameters",
        "FIL_PROOFS_USE_GPU_TREE_BUILDER": "1",
        "CUDA_VISIBLE_DEVICES": "0",
    }


@pytest.mark.parametrize("phase", ["AddPiece", "PreCommit1", "Finalize"])
def test_sim_backend_touches_nothing_outside_the_slot_dirs(tmp_path: Path, phase: str) -> None:
    temp, sealed, victim = tmp_path / "temp", tmp_path / "sealed", tmp_path / "victim"
    for path in (temp, sealed, victim / "f01000-1"):
        path.mkdir(parents=True)
    (victim / "f01000-1" / "keep").write_text("precious")
    (temp / "f01000-2").symlink_to(victim / "f01000-1")
    resources = Slot(host="h", temp_dirs=(temp,), sealed_dirs=(sealed,))
    backend = SimBackend(Settings(phase_seconds={}))
    outside = [
        ("f01000-1", str(victim / "f01000-1"), None),  # another directory altogether
        ("f01000-1", str(temp / ".." / "victim" / "f01000-1"), None),  # '..' out of the root
        ("f01000-2", str(temp / "f01000-2"), None),  # a symlink out of the root
        ("f01000-1", str(temp), None),  # the root itself
        ("f01000-3", str(temp / "f01000-1"), None),  # another sector's directory
    ]
    if phase == "Finalize":
        outside.append(("f01000-1", str(temp / "f01000-1"), str(victim / "f01000-1")))
        # the sector's sealed file in the right path, but its cache directory elsewhere
        outside.append(("f01000-1", str(temp / "f01000-1"), str(sealed / "sealed/s-t01000-1")))
    for sector_id, temp_path, sealed_path in outside:
        bad = dataclasses.replace(
            request(tmp_path, phase),
            sector_id=sector_id,
            temp_path=temp_path,
            sealed_path=sealed_path or str(sealed / "sealed" / f"s-t0{sector_id[2:]}"),
            cache_path=str(victim / "f01000-1"),
            inputs={"PreCommit1": {"labels": "x"}},
        )
        with pytest.raises(PhaseError, match=f"{phase} of {sector_id}: refused") as refused:
            backend.run(bad, resources, threading.Event())
        assert not refused.value.retry and "\n" not in str(refused.value)
    assert (victim / "f01000-1" / "keep").read_text() == "precious"
    assert sorted(p.name for p in victim.rglob("*")) == ["f01000-1", "keep"]
    assert list(sealed.iterdir()) == []
