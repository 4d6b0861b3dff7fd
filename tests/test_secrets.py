"""Passwords and tokens never reach a message: URLs are redacted wherever they are shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sealpool.cli import cli
from sealpool.config import load_settings
from sealpool.errors import ConfigError
from sealpool.secrets import redact_url

SECRET = "hunter2"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        (f"redis://:{SECRET}@10.0.0.5:6380/3", "redis://:***@10.0.0.5:6380/3"),
        (f"rediss://alice:{SECRET}@redis.lan:6380/0", "rediss://alice:***@redis.lan:6380/0"),
        (f"redis://:{SECRET}@x@redis.lan/1", "redis://:***@redis.lan/1"),  # '@' in the password
        ("redis://alice@redis.lan/0", "redis://alice@redis.lan/0"),
        (
            f"unix://alice@/run/redis.sock?db=2&password={SECRET}",
            "unix://alice@/run/redis.sock?db=2&password=***",
        ),
        (
            f"rediss://redis.lan:6380/0?ssl_ca_certs=/etc/ca.pem&Password={SECRET}",
            "rediss://redis.lan:6380/0?ssl_ca_certs=/etc/ca.pem&Password=***",
        ),
        (f"http://lotus:1234/rpc/v1?token={SECRET}", "http://lotus:1234/rpc/v1?token=***"),
    ],
)
def test_redact_url_hides_passwords_and_keeps_host_port_and_db(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def error_line(*args: str, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(cli, list(args), env=env)
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{SECRET}@127.0.0.1:1/0",
        f"redis://default:{SECRET}@127.0.0.1:1/0?password={SECRET}",
        f"unix:///nonexistent/redis.sock?password={SECRET}",
    ],
)
def test_unreachable_redis_is_named_without_its_password(url: str) -> None:
    line = error_line("--redis-url", url, "pool", "stats")
    assert line.startswith("Error: cannot reach Redis at ") and SECRET not in line
    assert "***" in line


def test_a_bad_setting_never_shows_a_password_or_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEALPOOL_REDIS_URL", f"http://:{SECRET}@redis.lan:6379/0")
    with pytest.raises(ConfigError) as bad_url:
        load_settings()
    message = str(bad_url.value)
    assert "redis_url" in message and "redis.lan:6379" in message and SECRET not in message
    monkeypatch.delenv("SEALPOOL_REDIS_URL")
    config = tmp_path / "sealpool.toml"
    for entry in (f"chain_rpc_token = [{SECRET!r}]", f"redis_password = {SECRET!r}"):
        config.write_text(entry + "\n")
        with pytest.raises(ConfigError) as bad:
            load_settings(config)
        message = str(bad.value)
        assert str(config) in message and "***" in message and SECRET not in message


def test_settings_repr_hides_the_urls_and_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEALPOOL_REDIS_URL", f"redis://:{SECRET}@redis.lan/0")
    monkeypatch.setenv("SEALPOOL_CHAIN_RPC_TOKEN", SECRET)
    assert SECRET not in repr(load_settings())
