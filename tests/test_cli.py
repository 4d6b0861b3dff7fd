"""The CLI against a real Redis: results, --json, and one clear line for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sealpool.cli import cli


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def stats() -> dict:
    code, out = run("pool", "stats", "--json")
    assert code == 0, out
    return json.loads(out)


@pytest.mark.usefixtures("cli_env")
def test_add_list_show_stats() -> None:
    code, out = run("sectors", "add", "--kind", "cc", "--count", "3", "--json")
    assert code == 0, out
    added = json.loads(out)
    assert [s["state"] for s in added] == ["Pending"] * 3
    code, out = run("sectors", "add", "--kind", "deal", "--deal-id", "11")
    assert code != 0 and "deal 11 is not waiting" in out and "Traceback" not in out
    assert run("deals", "add", "11", "--piece-size", "1024")[0] == 0
    code, out = run("sectors", "add", "--kind", "deal", "--deal-id", "11", "--json")
    deal = json.loads(out)[0]
    assert deal["kind"] == "deal" and deal["deal_ids"] == [11]
    assert stats()["states"]["Pending"] == {"deal": 1, "cc": 3}
    assert stats()["total"] == 4
    code, out = run("sectors", "list", "--state", "pending", "--kind", "cc", "--json")
    assert [s["id"] for s in json.loads(out)] == [s["id"] for s in added]
    code, out = run("sectors", "show", deal["id"], "--json")
    shown = json.loads(out)
    assert shown["sector"]["id"] == deal["id"]
    assert [h["event"] for h in shown["history"]] == ["create"]
    code, out = run("sectors", "list")
    assert code == 0 and deal["id"] in out
    code, out = run("pool", "stats")
    assert code == 0 and "Pending" in out


@pytest.mark.usefixtures("cli_env")
def test_add_with_request_id_is_idempotent() -> None:
    first = run("sectors", "add", "--kind", "cc", "--count", "2", "--request-id", "r", "--json")
    again = run("sectors", "add", "--kind", "cc", "--count", "2", "--request-id", "r", "--json")
    assert first == again
    assert stats()["total"] == 2


def error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, output
    return lines[0]


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["sectors", "show", "f01000-x"], "invalid sector id 'f01000-x'"),
        (["sectors", "show", "../etc"], "invalid sector id '../etc'"),
        (["sectors", "show", "f01000-77"], "no sector 'f01000-77'"),
        (["sectors", "list", "--state", "Sealing"], "'Sealing' is not one of"),
        (["sectors", "add", "--kind", "big"], "'big' is not one of"),
        (["sectors", "add", "--kind", "cc", "--count", "0"], "--count"),
        (
            ["--redis-url", "redis://127.0.0.1:1/0", "pool", "stats"],
            "cannot reach Redis at redis://127.0.0.1:1/0",
        ),
        (["--redis-url", "http://x", "pool", "stats"], "--redis-url: "),
        (["--redis-url", "notaurl", "pool", "stats"], "--redis-url: "),
    ],
)
def test_bad_input_gives_one_clear_line_and_changes_nothing(args: list[str], expected: str) -> None:
    run("sectors", "add", "--kind", "cc")
    before = stats()
    code, out = run(*args)
    assert code != 0
    assert expected in error_line(out)
    assert stats() == before


@pytest.mark.usefixtures("cli_env")
def test_config_file_errors_name_file_field_and_value(tmp_path: Path) -> None:
    config = tmp_path / "sealpool.toml"
    config.write_text('miner = "x99"\n')
    code, out = run("--config", str(config), "pool", "stats")
    line = error_line(out)
    assert code != 0 and str(config) in line and "miner" in line and "x99" in line
    code, out = run("--config", str(tmp_path / "missing.toml"), "pool", "stats")
    assert "missing.toml: config file not found" in error_line(out)


@pytest.mark.usefixtures("cli_env")
def test_config_file_is_read(tmp_path: Path) -> None:
    config = tmp_path / "sealpool.toml"
    config.write_text('miner = "f09999"\n')
    code, out = run("--config", str(config), "sectors", "add", "--kind", "cc", "--json")
    assert code == 0, out
    assert json.loads(out)[0]["id"] == "f09999-1"
