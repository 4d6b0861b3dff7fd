"""Flower runs against a sealpool farm and its API lists the workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sealpool.server import free_port
from sealpool.store import SectorState

from farm_helpers import worker


@pytest.mark.slow
def test_flower_lists_the_farm_workers(farm_env: Path, prefix: str, redis_url: str) -> None:
    port = free_port()
    env = {**os.environ, "FLOWER_UNAUTHENTICATED_API": "true", "SEALPOOL_REDIS_URL": redis_url}
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "sealpool.app", "flower", f"--port={port}",
         "--address=127.0.0.1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        with worker(prefix, phases=[SectorState.PRE_COMMIT_1], concurrency=1):
            listed: dict = {}
            deadline = time.monotonic() + 60
            while f"test-{prefix}@hostA" not in listed and time.monotonic() < deadline:
                try:
                    url = f"http://127.0.0.1:{port}/api/workers?refresh=1"
                    with urllib.request.urlopen(url, timeout=10) as reply:
                        listed = json.loads(reply.read())
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    time.sleep(0.5)
        assert f"test-{prefix}@hostA" in listed
        queues = {q["name"] for q in listed[f"test-{prefix}@hostA"]["active_queues"]}
        assert queues == {f"{prefix}.pc1", f"{prefix}.pc1@hostA"}
    finally:
        flower.terminate()
        flower.wait(timeout=10)
