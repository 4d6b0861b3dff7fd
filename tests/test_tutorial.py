"""docs/tutorial.md, run as written (one machine standing in for both of its machines)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import wait_until

DOCS = Path(__file__).parents[1] / "docs"
SEALPOOL = [sys.executable, "-c", "from sealpool.cli import main; main()"]


@pytest.mark.slow
def test_two_machine_tutorial(tmp_path: Path) -> None:
    root = tmp_path / "sealpool-tutorial"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALPOOL_")}
    env.update(
        SEALPOOL_DATA_DIR=str(root / "pool"),
        SEALPOOL_TIME_SCALE="2000",
        SEALPOOL_TICKET_CONFIDENCE="10",
        SEALPOOL_TICK_S="0.5",
        SEALPOOL_SERVER_PASSWORD="choose-a-long-one",
    )

    def sealpool(*args: str) -> str:
        done = subprocess.run(
            [*SEALPOOL, *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

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
