"""Redis over TLS with a password, for real: a private TLS server carries the CLI, the
supervisor's broker and a farm of ``sealpool worker`` processes.

The embedded Valkey is built without TLS, so these tests start the system's
``redis-server`` (skipped where there is none, or it lacks TLS) with a throw-away
self-signed certificate.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from sealpool.cli.main import cli
from sealpool.farm import LocalFarm
from sealpool.server import free_port
from sealpool.store import SectorState, SectorStore

PASSWORD = "s3cret"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, written under ``directory``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def tls_url(port: int, ca: Path, password: str | None = PASSWORD) -> str:
    auth = f":{password}@" if password else ""
    return f"rediss://{auth}127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """Port and CA file of a private TLS-only, password-protected redis-server."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    cert, key = self_signed(tmp_path_factory.mktemp("tls"))
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
         "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
         "--tls-auth-clients", "no", "--requirepass", PASSWORD, "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    client = redis.Redis.from_url(tls_url(port, cert), socket_timeout=1.0)
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                pytest.skip(f"redis-server has no TLS here: {process.stdout.read()[-300:]!r}")
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield port, cert
    finally:
        process.terminate()
        process.wait()


def test_cli_works_over_tls_and_refuses_a_bad_password_or_certificate(
    tls_server: tuple[int, Path], prefix: str, tmp_path: Path
) -> None:
    port, ca = tls_server

    def sealpool(url: str, *args: str):
        env = {"SEALPOOL_REDIS_URL": url, "SEALPOOL_KEY_PREFIX": prefix}
        return CliRunner().invoke(cli, list(args), env=env)

    added = sealpool(tls_url(port, ca), "sectors", "add", "--kind", "cc", "--count", "2", "--json")
    assert added.exit_code == 0, added.output
    assert len(json.loads(added.output)) == 2
    other_ca, _ = self_signed(tmp_path / "other")
    for url, reason in (
        (tls_url(port, ca, password="wrong"), "invalid username-password"),
        (tls_url(port, ca, password=None), "authentication required"),
        (tls_url(port, other_ca), "certificate verify failed"),
    ):
        refused = sealpool(url, "pool", "stats", "--json")
        lines = refused.output.strip().splitlines()
        assert refused.exit_code != 0 and len(lines) == 1, refused.output
        assert "cannot reach Redis" in lines[0] and reason.lower() in lines[0].lower()
        assert "wrong" not in lines[0] and PASSWORD not in lines[0]  # passwords never shown
    stats = sealpool(tls_url(port, ca), "pool", "stats", "--json")
    assert json.loads(stats.output)["states"]["Pending"] == {"deal": 0, "cc": 2}


def test_a_farm_seals_over_tls(tls_server: tuple[int, Path], prefix: str, tmp_path: Path) -> None:
    port, ca = tls_server
    url = tls_url(port, ca)
    env = {
        "SEALPOOL_REDIS_URL": url,
        "SEALPOOL_KEY_PREFIX": prefix,
        "SEALPOOL_TIME_SCALE": "2000",
        "SEALPOOL_PRECOMMIT_BATCH_WAIT_S": "0",  # each sector's messages sent at once
        "SEALPOOL_COMMIT_BATCH_WAIT_S": "0",
        "SEALPOOL_TICKET_CONFIDENCE": "10",
        "SEALPOOL_TICK_S": "0.5",
        "SEALPOOL_HEARTBEAT_S": "0.5",
    }
    store = SectorStore(redis.Redis.from_url(url, decode_responses=True), prefix=prefix)
    sectors = store.create_many("f01000", "cc", 2)
    with LocalFarm(prefix, ["hostA"], tmp_path / "farm", env=env):
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "sealpool", "supervisor"],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                states = {s.state for s in store.get_many(s.id for s in sectors)}
                if states == {SectorState.PROVING}:
                    break
                time.sleep(0.2)
        finally:
            supervisor.terminate()
            supervisor.wait()
    assert [s.state for s in store.get_many(s.id for s in sectors)] == [SectorState.PROVING] * 2
