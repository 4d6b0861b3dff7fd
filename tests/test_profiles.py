"""Worker profiles: validation errors that name file, field and value; the resolved plan."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import traceback
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from sealpool.backends import ExternalBackend, PhaseRequest, Slot
from sealpool.backends.pin import parse_cores
from sealpool.cli import cli
from sealpool.config import Settings
from sealpool.errors import ConfigError, PhaseError
from sealpool.runtime import build_runtime
from sealpool.worker_profiles.machine import Machine, parse_cpu_list
from sealpool.worker_profiles.model import load_profile, parse_size
from sealpool.worker_profiles.plan import plan_profile
from sealpool.worker_profiles.slots import SlotPool, slot_reports

PROCESSOR = [sys.executable, str(Path(__file__).parents[1] / "docs/examples/processor.py")]
BOX = Machine(frozenset(range(8)), [[0, 1, 2, 3], [4, 5, 6, 7]], gpus=2)


def write(tmp_path: Path, body: str, backend: str = "sim") -> Path:
    for name in ("t1", "t2", "s1"):
        (tmp_path / name).mkdir(exist_ok=True)
    path = tmp_path / "box.toml"
    path.write_text(
        f'host = "box"\nbackend = "{backend}"\nprocessor = ["/bin/true"]\n'
        f'sector_size = "2KiB"\n[storage]\n'
        f'temp = [{{ path = "{tmp_path}/t1" }}, {{ path = "{tmp_path}/t2" }}]\n'
        f'sealed = [{{ path = "{tmp_path}/s1" }}]\n{body}'
    )
    return path


def errors(tmp_path: Path, body: str, backend: str = "sim", machine: Machine = BOX) -> list[str]:
    path = write(tmp_path, body, backend)
    try:
        return plan_profile(load_profile(path), path, machine).errors
    except ConfigError as exc:
        return str(exc).splitlines()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("[phases.PreCommit3]\nslots = 1\n", "phases: unknown phase 'PreCommit3'"),
        (
            "[phases.pc1]\nslots = 0\n",
            "phases.pc1.slots: Input should be greater than or equal to 1 (got 0)",
        ),
        (
            "[phases.pc1]\nslots = 2\ncores = [[0, 1]]\n",
            "phases.pc1: cores lists 1 slots but slots = 2",
        ),
        ("[phases.pc1]\nslots = 1\nsockets = 2\n", "phases.pc1.sockets: Extra inputs"),
        (
            "[phases.pc1]\nslots = 1\ncores = [[7, 8, 9]]\n",
            "phases.PreCommit1.cores[0]: cores 8,9 do not exist here (usable: 0,1,2,3,4,5,6,7)",
        ),
        (
            "[phases.pc1]\nslots = 2\ncores = [[0, 1], [1, 2]]\n",
            "phases.PreCommit1.cores[1]: core 1 is also given to phases.PreCommit1.cores[0]",
        ),
        (
            "[phases.pc1]\nslots = 1\ncores = [[3]]\n[phases.pc2]\nslots = 1\ncores = [[3]]\n",
            "phases.PreCommit2.cores[0]: core 3 is also given to phases.PreCommit1.cores[0]",
        ),
        (
            "[phases.pc1]\nslots = 3\ncores = 3\n",
            "phases.PreCommit1.cores: no 3 free cores sharing an L3 cache left for slots 2 of 3",
        ),
        (
            "[phases.c2]\nslots = 1\ngpus = [[2]]\n",
            "phases.Commit2.gpus[0]: GPU 2 is not present (this machine has 2)",
        ),
        (
            '[[gpu_groups]]\nphases = ["pc2", "c9"]\ngpus = [0]\n[phases.pc1]\nslots = 1\n',
            "gpu_groups.0.phases: unknown phase 'c9'",
        ),
        (
            '[phases.pc1]\nslots = 1\nmemory = "lots"\n',
            "phases.pc1.memory: 'lots' is not a size such as 500GiB or 2TB (got 'lots')",
        ),
    ],
)
def test_errors_name_file_field_and_value(tmp_path: Path, body: str, expected: str) -> None:
    found = errors(tmp_path, body)
    assert any(expected in line for line in found), found
    assert all(line.startswith(f"{tmp_path / 'box.toml'}: ") for line in found)


def test_gpus_without_a_driver(tmp_path: Path) -> None:
    no_driver = Machine(frozenset({0, 1}), [[0, 1]], gpus=None)
    body = "[phases.c2]\nslots = 1\ngpus = [[0]]\n"
    assert errors(tmp_path, body, "sim", no_driver) == []  # the sim backend needs no GPU
    assert errors(tmp_path, body, "external", no_driver) == [
        f"{tmp_path / 'box.toml'}: phases.Commit2.gpus[0]: GPUs 0 requested but no NVIDIA "
        "driver was found"
    ]
    assert errors(tmp_path, "[phases.pc1]\nslots = 1\n", "external", no_driver) == []


def test_storage_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "[phases.pc1]\nslots = 1\n", "external")
    text = path.read_text().replace(f'{tmp_path}/t2" }}', f'{tmp_path}/gone" }}')
    text = text.replace(f'"{tmp_path}/s1" }}', f'"{tmp_path}/s1", capacity = "1KiB" }}')
    path.write_text(text)
    found = plan_profile(load_profile(path), path, BOX).errors
    assert found == [
        f"{path}: storage.temp[1].path: {tmp_path}/gone does not exist or is not a directory",
        f"{path}: storage.sealed[0].path: {tmp_path}/s1 has 1.0 KiB for sealpool, one sector "
        "needs 2.0 KiB",
    ]
    if os.geteuid() == 0:  # root may write anywhere: check as an unprivileged user
        found = errors_as_nobody(text.replace(str(tmp_path), "{root}"))
    elif os.access("/proc/sys", os.W_OK):
        pytest.skip("/proc/sys is writable: no read-only directory to test with")
    else:
        path.write_text(text.replace(f"{tmp_path}/gone", "/proc/sys"))
        found = plan_profile(load_profile(path), path, BOX).errors
    assert "/proc/sys is not writable" in found[0], found


NOBODY = 65534


def errors_as_nobody(template: str) -> list[str]:
    """The plan's errors for the profile ``template`` (its directories under ``{root}``, its
    ``{root}/gone`` made /proc/sys), checked by a forked child that runs as user nobody.

    A fork rather than ``subprocess.run(user=...)``: nobody may not reach the interpreter
    (e.g. under /root); the forked child has every module loaded already.
    """
    root = Path(tempfile.mkdtemp(prefix="sealpool-nobody-"))
    try:
        root.chmod(0o755)
        for name in ("t1", "t2", "s1"):
            (root / name).mkdir()
            (root / name).chmod(0o777)  # writable for nobody: only /proc/sys is not
        path = root / "box.toml"
        path.write_text(template.replace("{root}/gone", "/proc/sys").replace("{root}", str(root)))
        profile = load_profile(path)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: drop to nobody, answer through the pipe, never return
            code = 2  # 2: could not become nobody; 1: the check itself failed
            try:
                os.close(read)
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                code = 1
                answer = {
                    "writable": os.access("/proc/sys", os.W_OK),
                    "errors": plan_profile(profile, path, BOX).errors,
                }
                os.write(write, json.dumps(answer).encode())
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(write)
        with os.fdopen(read) as pipe:
            reply = pipe.read()
        _, status = os.waitpid(pid, 0)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    code = os.waitstatus_to_exitcode(status)
    if code == 2:
        pytest.skip("could not become user nobody (see the child's traceback)")
    assert code == 0, "the check as user nobody failed (see the child's traceback)"
    answer = json.loads(reply)
    if answer["writable"]:
        pytest.skip("/proc/sys is writable even for nobody: no read-only directory to test with")
    return answer["errors"]


@pytest.mark.parametrize("sealed", ["t1", "t1/sealed", "."])
def test_temp_and_sealed_paths_that_overlap_are_refused(tmp_path: Path, sealed: str) -> None:
    path = write(tmp_path, "[phases.pc1]\nslots = 1\n")
    (tmp_path / sealed).mkdir(exist_ok=True)
    path.write_text(path.read_text().replace(f'"{tmp_path}/s1"', f'"{tmp_path}/{sealed}/"'))
    found = plan_profile(load_profile(path), path, BOX).errors
    temps = ["t1", "t2"] if sealed == "." else ["t1"]
    assert found == [
        f"{path}: storage.sealed[0].path: {(tmp_path / sealed).resolve()} overlaps "
        f"storage.temp[{index}].path {(tmp_path / temp).resolve()}: temp and sealed paths must "
        "be apart, neither inside the other"
        for index, temp in enumerate(temps)
    ]


def test_missing_processor_is_refused(tmp_path: Path) -> None:
    body = "[phases.pc1]\nslots = 1\n"
    for argv0 in (f"{tmp_path}/no-such-processor", "no-such-processor-on-path", str(tmp_path)):
        path = write(tmp_path, body, "external")
        path.write_text(path.read_text().replace('"/bin/true"', json.dumps(argv0)))
        assert plan_profile(load_profile(path), path, BOX).errors == [
            f"{path}: processor[0]: {argv0!r} is not an executable file nor a program on PATH"
        ]
    path.write_text(path.read_text().replace('backend = "external"', 'backend = "sim"'))
    assert plan_profile(load_profile(path), path, BOX).errors == []  # sim runs none


def test_phase_timeout_from_the_profile_wins_for_its_phase(
    tmp_path: Path, redis_url: str, prefix: str
) -> None:
    path = write(tmp_path, "[phases.pc1]\nslots = 1\nprocessor_timeout_s = 0.5\n", "external")
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    path.write_text(path.read_text().replace('["/bin/true"]', json.dumps(sleeper)))
    settings = Settings(
        redis_url=redis_url,
        profile=path,
        processor_timeout_s={"PreCommit1": 3600, "AddPiece": 7},
    )
    backend = build_runtime(settings, prefix).backend
    assert isinstance(backend, ExternalBackend)
    assert backend.timeouts_s == {"PreCommit1": 0.5, "AddPiece": 7}
    request = PhaseRequest(
        "f01000-1", "f01000", 1, "PreCommit1", 2048, str(tmp_path / "t1" / "f01000-1"),
        None, None, None, [], {},
    )  # fmt: skip
    slot = Slot("box", (tmp_path / "t1",), (tmp_path / "s1",))
    with pytest.raises(
        PhaseError, match=r"PreCommit1 of f01000-1: processor timed out after 0\.5s"
    ):
        backend.run(request, slot, threading.Event())
    bad = write(tmp_path, "[phases.pc1]\nslots = 1\nprocessor_timeout_s = 0\n")
    with pytest.raises(ConfigError, match=r"phases\.pc1\.processor_timeout_s: .*greater than 0"):
        load_profile(bad)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("host = \n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_profile(bad)
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read profile"):
        load_profile(tmp_path / "missing.toml")


def test_plan_allocates_cores_together_and_gpu_locks(tmp_path: Path) -> None:
    body = (
        "[phases.pc1]\nslots = 2\ncores = 3\n[phases.pc2]\nslots = 1\ncores = [[3]]\n"
        "gpus = [[0]]\n[phases.c2]\nslots = 2\ngpus = [[0], [1]]\n"
        '[[gpu_groups]]\nphases = ["PreCommit2", "Commit2"]\ngpus = [0]\n'
    )
    path = write(tmp_path, body)
    plan = plan_profile(load_profile(path), path, BOX)
    assert plan.errors == []
    pc1 = [slot.cores for slot in plan.slots_for("PreCommit1")]
    assert pc1 == [(0, 1, 2), (4, 5, 6)]  # each slot inside one L3 group, none overlapping
    assert plan.slots_for("PreCommit2")[0].locks == ("gpu-0",)
    assert [slot.locks for slot in plan.slots_for("Commit2")] == [("gpu-0",), ()]
    assert [p.role for p in plan.storage] == ["temp", "temp", "sealed"]


TIB = 1 << 40
GIB = 1 << 30


def test_slots_whose_memory_would_swap_are_refused_in_one_line(tmp_path: Path) -> None:
    body = '[phases.pc1]\nslots = 14\nmemory = "64GiB"\n[phases.c2]\nslots = 1\n'
    path = write(tmp_path, body, "external")
    profile = load_profile(path)
    big = replace(BOX, memory=TIB, swap=64 * GIB)
    assert plan_profile(profile, path, big).errors == []
    small = replace(BOX, memory=512 * GIB, swap=TIB)
    assert plan_profile(profile, path, small).errors == [
        f"{path}: phases.PreCommit1.memory: the slots need 900.0 GiB of RAM (PreCommit1 14 × "
        "64.0 GiB + 2.0 KiB shared, Commit2 1 × 2.0 KiB + 2.0 KiB shared, 4.0 GiB reserve) "
        "but this machine has 512.0 GiB: it would swap"
    ]  # swap is never counted: a sealing phase that swaps crawls


def test_memory_defaults_follow_lotus_and_the_profile_overrides_them(tmp_path: Path) -> None:
    body = "[phases.ap]\nslots = 1\n[phases.pc1]\nslots = 14\n[phases.c2]\nslots = 1\n"
    path = write(tmp_path, body, "external")
    path.write_text(path.read_text().replace('"2KiB"', '"32GiB"'))
    memory = plan_profile(load_profile(path), path, BOX).memory
    assert [(m.phase, m.slots, m.per_slot, m.shared) for m in memory.phases] == [
        ("AddPiece", 1, 4 * GIB, GIB),
        ("PreCommit1", 14, 64 * GIB, 10 << 20),
        ("Commit2", 1, 150 * GIB, 32 * GIB),  # its Groth parameters, once per host
    ]
    assert memory.reserve == 4 * GIB and memory.ram is None  # an unknown machine: no check
    assert memory.need == 4 * GIB + 5 * GIB + 14 * 64 * GIB + (10 << 20) + 182 * GIB
    override = '[phases.c2]\nslots = 1\nmemory = "200GiB"\nshared_memory = "40 GB"\n'
    path.write_text(path.read_text().split("[phases.ap]")[0] + override)
    path.write_text(path.read_text().replace("[storage]", 'memory_reserve = "16GiB"\n[storage]'))
    memory = plan_profile(load_profile(path), path, BOX).memory
    assert [(m.per_slot, m.shared, m.total) for m in memory.phases] == [
        (200 * GIB, 40 * 10**9, 200 * GIB + 40 * 10**9)
    ]
    assert memory.reserve == 16 * GIB
    path.write_text(path.read_text().replace('"16GiB"', "-1"))
    with pytest.raises(ConfigError) as refused:
        load_profile(path)
    assert str(refused.value) == (
        f"{path}: memory_reserve: -1 is not a size such as 500GiB or 2TB (got -1)"
    )


def test_the_sim_backend_needs_only_the_memory_a_profile_names(tmp_path: Path) -> None:
    path = write(tmp_path, '[phases.pc1]\nslots = 2\n[phases.c2]\nslots = 1\nmemory = "1KiB"\n')
    tiny = replace(BOX, memory=2048, swap=0)
    plan = plan_profile(load_profile(path), path, tiny)
    assert [m.total for m in plan.memory.phases] == [0, 1024]
    assert plan.memory.need == 1024 and plan.errors == []


def test_sizes_and_cpu_lists() -> None:
    assert parse_size("2TiB") == 2 << 40 and parse_size("500 GB") == 500 * 10**9
    assert parse_size(1024) == 1024
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")
    assert parse_cpu_list("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]


def test_profile_check_command(tmp_path: Path) -> None:
    good = write(tmp_path, "[phases.pc1]\nslots = 2\n[phases.c2]\nslots = 1\n")
    result = CliRunner().invoke(cli, ["profile", "check", str(good), "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert [(s["phase"], s["index"]) for s in plan["slots"]] == [
        ("PreCommit1", 0),
        ("PreCommit1", 1),
        ("Commit2", 0),
    ]
    assert all(p["free"] > 0 for p in plan["storage"])
    assert plan["memory"]["ram"] > 0 and isinstance(plan["memory"]["swap"], int)
    assert [m["per_slot"] for m in plan["memory"]["phases"]] == [0, 0]  # the sim backend
    result = CliRunner().invoke(cli, ["profile", "check", str(good)])
    assert result.exit_code == 0 and "\nRAM here " in result.output, result.output
    bad = write(tmp_path, "[phases.pc1]\nslots = 1\ncores = [[999]]\n")
    result = CliRunner().invoke(cli, ["profile", "check", str(bad)])
    assert result.exit_code == 1
    assert result.output.startswith(
        f"Error: {bad}: phases.PreCommit1.cores[0]: cores 999 do not exist here"
    )


def test_slot_pins_the_thread_and_the_processor_sees_its_cores_and_gpu(
    tmp_path: Path, client: redis.Redis, prefix: str
) -> None:
    core = max(os.sched_getaffinity(0))
    machine = Machine(frozenset(os.sched_getaffinity(0)), [sorted(os.sched_getaffinity(0))], gpus=2)
    path = write(
        tmp_path,
        f"[phases.pc2]\nslots = 1\ncores = [[{core}]]\ngpus = [[1]]\n"
        'env = { FIL_PROOFS_USE_GPU_TREE_BUILDER = "1" }\n',
        "external",
    )
    plan = plan_profile(load_profile(path), path, machine)
    pool = SlotPool(
        client,
        prefix,
        "box",
        plan.slots_for("PreCommit2"),
        [tmp_path / "t1"],
        [tmp_path / "s1"],
        heartbeat_s=0.2,
    )
    pool.register()
    try:
        before = os.sched_getaffinity(0)
        with pool.acquire("f01000-1", "PreCommit2") as slot:
            assert os.sched_getaffinity(0) == {core}  # the in-process thread is pinned too
            (busy,) = slot_reports(client, prefix)
            assert (busy.state, busy.sector, busy.phase) == ("busy", "f01000-1", "PreCommit2")
            request = PhaseRequest(
                "f01000-1",
                "f01000",
                1,
                "AddPiece",
                2048,
                str(tmp_path / "t1" / "f01000-1"),
                None,
                None,
                None,
                [],
                {},
            )
            outputs = ExternalBackend(PROCESSOR).run(request, slot, threading.Event())
        assert os.sched_getaffinity(0) == before
        assert parse_cores(outputs["cpus_allowed"]) == {core}
        assert outputs["cuda_visible_devices"] == "1"
        (idle,) = slot_reports(client, prefix)
        assert idle.state == "idle" and idle.sector is None and idle.busy_share > 0
    finally:
        pool.unregister()
    assert slot_reports(client, prefix) == []
