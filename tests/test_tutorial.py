"""docs/tutorial.md, run as written: the demo and what it keeps, and the two-machine farm
(one machine standing in for both of its machines)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from helpers import wait_until

DOCS = Path(__file__).parents[1] / "docs"
SEALPOOL = [sys.executable, "-c", "from sealpool.cli import main; main()"]


def run(env: dict[str, str], *args: str, timeout_s: float = 120) -> str:
    """The output of ``sealpool ARGS`` in ``env``, after checking it succeeded."""
    done = subprocess.run(
        [*SEALPOOL, *args], env=env, capture_output=True, text=True, timeout=timeout_s
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any SEALPOOL_ variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALPOOL_")}
    return {**env, **extra}


@pytest.mark.slow
@pytest.mark.parametrize("own_server", [True, False], ids=["embedded", "SEALPOOL_REDIS_URL"])
def test_the_demo_keeps_its_pool_and_prints_how_to_look_at_it(
    tmp_path: Path, redis_url: str, own_server: bool
) -> None:
    env = clean_env(SEALPOOL_DATA_DIR=str(tmp_path / "data"), TMPDIR=str(tmp_path))
    if not own_server:
        env["SEALPOOL_REDIS_URL"] = redis_url
    out = run(env, "demo", "--sectors", "2", "--hosts", "1", "--time-scale", "4000", timeout_s=300)
    exports = dict(re.findall(r"^  export (SEALPOOL_\w+)=(\S+)$", out, re.M))
    env.update(exports)  # the commands the demo printed, pasted
    try:  # whatever fails below, the kept server is stopped and the kept keys deleted
        assert re.search(r"^measure +result", out, re.M), out  # the summary's header row
        wanted = {"SEALPOOL_KEY_PREFIX"} | ({"SEALPOOL_DATA_DIR"} if own_server else set())
        assert set(exports) == wanted, out
        (root,) = re.findall(r"^Afterwards: .*rm -r (\S+)$", out, re.M)
        assert Path(root).parent == tmp_path and (Path(root) / "logs").is_dir()
        assert not (tmp_path / "data").exists()  # the user's own pool is left alone
        if own_server:  # what docs/tutorial.md shows, up to the paths and the prefix
            shown = (DOCS / "tutorial.md").read_text().split("```text\n", 1)[1].split("```")[0]
            printed = out[out.index("The pool is kept") :]
            assert _anonymous(printed) == _anonymous(shown)
        sealed = json.loads(run(env, "sectors", "list", "--json"))
        assert [s["state"] for s in sealed] == ["Proving", "Proving"]
        assert "Proving" in run(env, "pool", "stats")
    finally:
        if own_server and "SEALPOOL_DATA_DIR" in exports:
            run(env, "server", "stop")
        elif not own_server and "SEALPOOL_KEY_PREFIX" in exports:
            client = redis.Redis.from_url(redis_url)
            keys = list(client.scan_iter(match=f"{exports['SEALPOOL_KEY_PREFIX']}*"))
            if keys:
                client.delete(*keys)
        for kept in tmp_path.glob("sealpool-demo-*"):
            shutil.rmtree(kept)


def _anonymous(text: str) -> str:
    """``text`` with the demo's directories and key prefix made the same every run."""
    text = re.sub(r"\S*/sealpool-demo-\w+", "ROOT", text)
    return re.sub(r"demo-[0-9a-f]{8}", "PREFIX", text).strip()


@pytest.mark.slow
def test_two_machine_tutorial(tmp_path: Path) -> None:
    root = tmp_path / "sealpool-tutorial"
    env = clean_env(
        SEALPOOL_DATA_DIR=str(root / "pool"),
        SEALPOOL_TIME_SCALE="2000",
        SEALPOOL_TICKET_CONFIDENCE="10",
        SEALPOOL_TICK_S="0.5",
        SEALPOOL_SERVER_PASSWORD="choose-a-long-one",
        SEALPOOL_PRECOMMIT_BATCH_WAIT_S="0",  # not a day's batch wait (43 s at this scale)
        SEALPOOL_COMMIT_BATCH_WAIT_S="0",
    )

    def sealpool(*args: str) -> str:
        return run(env, *args)

    start = ("server", "start", "--bind", "127.0.0.2", "--show-password", "--json")
    started = json.loads(sealpool(*start))
    assert started["url"].startswith("redis://:choose-a-long-one@127.0.0.2:")
    env["SEALPOOL_REDIS_URL"] = started["url"]
    workers = []
    try:
        for box in ("box-a", "box-b"):
            profile = tmp_path / f"{box}.toml"
            profile.write_text(
                (DOCS / "tutorial" / f"{box}.toml")
                .read_text()
                .replace("/tmp/sealpool-tutorial", str(root))
            )
            for sub in ("scratch", "sealed"):
                (root / box / sub).mkdir(parents=True)
            assert "\npc1 " in sealpool("profile", "check", str(profile))  # a row per slot
            workers.append(
                subprocess.Popen(
                    [*SEALPOOL, "worker", "--profile", str(profile)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        sealpool("deals", "add", "1", "2", "3", "--piece-size", "16GiB")
        sealpool("sectors", "add", "--kind", "cc", "--count", "2")
        deadline = time.monotonic() + 300  # the tutorial's command, run until the pool is sealed
        while True:
            sealpool("supervisor", "--ticks", "80")
            sealed = json.loads(sealpool("sectors", "list", "--state", "Proving", "--json"))
            if len(sealed) >= 4 or time.monotonic() > deadline:
                break
        assert len(sealed) == 4  # two 16 GiB deals share one 32 GiB sector
        assert sorted(d for s in sealed for d in s["deal_ids"]) == [1, 2, 3]
        assert {s["host"] for s in sealed} == {"box-a", "box-b"}
        slots: list[dict] = []

        def all_idle() -> bool:  # a slot goes idle just after its sector moves on
            slots[:] = json.loads(sealpool("workers", "--json"))
            return {s["state"] for s in slots} == {"idle"}

        wait_until(all_idle, timeout_s=60, what="every slot idle")
        assert len(slots) == 6 + 13
        assert "\npc1 " in sealpool("ratio")
    finally:
        for process in workers:
            process.send_signal(signal.SIGTERM)
        for process in workers:
            process.wait(timeout=60)
        sealpool("server", "stop")
