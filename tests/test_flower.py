"""Flower runs against a sealpool farm: its API lists the workers, and the tasks they run
once Flower has turned their task events on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from sealpool.farm import LocalFarm
from sealpool.runtime import runtime
from sealpool.sealing_tasks import start
from sealpool.server import free_port
from sealpool.store import SectorState


@pytest.mark.slow
def test_flower_lists_the_farm_workers_and_their_tasks(
    farm_env: Path, prefix: str, redis_url: str
) -> None:
    port = free_port()
    env = {**os.environ, "FLOWER_UNAUTHENTICATED_API": "true", "SEALPOOL_REDIS_URL": redis_url}
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "sealpool.app", "flower", f"--port={port}",
         "--address=127.0.0.1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        with LocalFarm(prefix, ["hostA"], farm_env / "farm", slots={SectorState.ADD_PIECE: 1}):
            listed = poll(port, "workers?refresh=1", lambda found: "ap@hostA" in found)
            queues = {q["name"] for q in listed["ap@hostA"]["active_queues"]}
            assert queues == {f"{prefix}.ap", f"{prefix}.ap@hostA"}
            store = runtime(prefix).store

            def ap_succeeded(tasks: dict) -> bool:
                return any(
                    t["name"] == "sealpool.ap" and t["state"] == "SUCCESS" for t in tasks.values()
                )

            def one_more_sector() -> None:  # events flow once Flower turned them on (every 5 s)
                start(store, store.create("f01000", "cc").id)

            assert ap_succeeded(poll(port, "tasks", ap_succeeded, before_each=one_more_sector))
    finally:
        flower.terminate()
        flower.wait(timeout=10)


def poll(
    port: int,
    path: str,
    done: Callable[[dict], bool],
    before_each: Callable[[], None] = lambda: None,
    timeout_s: float = 60.0,
) -> dict:
    """Flower's API answer at ``path`` once ``done`` says so (or the last one at the timeout);
    ``before_each`` runs before every request."""
    answer: dict = {}
    deadline = time.monotonic() + timeout_s
    while not done(answer) and time.monotonic() < deadline:
        before_each()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/{path}", timeout=10) as reply:
                answer = json.loads(reply.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    return answer
