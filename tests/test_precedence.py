"""A profile over the settings: the fields it names win, the ones it leaves out don't; and
`sealpool profile check` says where each setting came from, or what is wrong, in JSON too."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sealpool.backends import ExternalBackend
from sealpool.cli import cli
from sealpool.config import load_settings
from sealpool.errors import ConfigError
from sealpool.runtime import build_runtime
from sealpool.worker_profiles.launcher import checked_profile

PROCESSOR = [sys.executable, str(Path(__file__).parents[1] / "docs/examples/processor.py")]


def profile(tmp_path: Path, head: str = "", phases: str = "[phases.pc1]\nslots = 1\n") -> Path:
    """A profile of host ``box`` with ``head`` (backend, processor…) and ``phases``."""
    for name in ("temp", "sealed"):
        (tmp_path / name).mkdir(exist_ok=True)
    path = tmp_path / "box.toml"
    path.write_text(
        f'host = "box"\nsector_size = "2KiB"\n{head}[storage]\n'
        f'temp = [{{ path = "{tmp_path}/temp" }}]\nsealed = [{{ path = "{tmp_path}/sealed" }}]\n'
        f"{phases}"
    )
    return path


def check(path: Path) -> tuple[int, dict]:
    result = CliRunner().invoke(cli, ["profile", "check", str(path), "--json"])
    return result.exit_code, json.loads(result.stdout)


@pytest.fixture
def external_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """``SEALPOOL_BACKEND=external`` and a processor, as the README shows."""
    monkeypatch.delenv("SEALPOOL_CONFIG", raising=False)
    monkeypatch.setenv("SEALPOOL_BACKEND", "external")
    monkeypatch.setenv("SEALPOOL_PROCESSOR", json.dumps(PROCESSOR))


@pytest.mark.usefixtures("external_env")
def test_a_profile_without_backend_keeps_the_environments(
    tmp_path: Path, redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = profile(tmp_path)
    monkeypatch.setenv("SEALPOOL_REDIS_URL", redis_url)
    monkeypatch.setenv("SEALPOOL_PROFILE", str(path))
    rt = build_runtime(load_settings(), prefix)
    assert (rt.settings.backend, rt.settings.processor) == ("external", PROCESSOR)
    assert isinstance(rt.backend, ExternalBackend)
    assert (rt.settings.host, rt.settings.temp_dirs) == ("box", [tmp_path / "temp"])

    code, report = check(path)
    assert code == 0, report
    assert report["backend"] == "external"
    assert report["settings"]["backend"] == {"value": "external", "source": "env"}
    assert report["settings"]["processor"] == {"value": PROCESSOR, "source": "env"}
    assert report["settings"]["host"] == {"value": "box", "source": "profile"}
    assert report["settings"]["sector_size"]["source"] == "profile"


@pytest.mark.usefixtures("external_env")
def test_a_backend_the_profile_names_wins_and_says_so(tmp_path: Path) -> None:
    code, report = check(profile(tmp_path, 'backend = "sim"\n'))
    assert code == 0, report
    assert report["settings"]["backend"] == {"value": "sim", "source": "profile"}
    result = CliRunner().invoke(cli, ["profile", "check", str(profile(tmp_path))])
    assert result.exit_code == 0, result.output
    assert re.search(r"backend\W+external\W+env\W", result.stdout), result.stdout


def test_sources_of_the_config_file_and_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SEALPOOL_BACKEND", "SEALPOOL_PROCESSOR", "SEALPOOL_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "sealpool.toml"
    config.write_text(f'backend = "external"\nprocessor = {json.dumps(PROCESSOR)}\n')
    path = profile(tmp_path)
    result = CliRunner().invoke(
        cli, ["--config", str(config), "profile", "check", str(path), "--json"]
    )
    settings = json.loads(result.stdout)["settings"]
    assert settings["backend"] == {"value": "external", "source": "config file"}
    _code, report = check(path)
    assert report["settings"]["backend"] == {"value": "sim", "source": "default"}


@pytest.mark.parametrize(
    ("head", "phases", "expected"),
    [
        ("", "[phases.pc1]\nslots = 0\n", "phases.pc1.slots: Input should be greater than"),
        ("", "[phases.pc9]\nslots = 1\n", "phases: unknown phase 'pc9'"),
        ("host = \n", "", "not valid TOML"),
        (
            'backend = "external"\n',
            "[phases.pc1]\nslots = 1\n",
            "processor: backend 'external' needs processor = [argv...] (in the profile, or "
            "SEALPOOL_PROCESSOR)",
        ),
    ],
)
def test_schema_errors_are_json_with_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, head: str, phases: str, expected: str
) -> None:
    for name in ("SEALPOOL_BACKEND", "SEALPOOL_PROCESSOR", "SEALPOOL_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    path = profile(tmp_path, head, phases)
    code, report = check(path)
    assert code == 1
    assert report["file"] == str(path)
    assert any(line.startswith(f"{path}: ") and expected in line for line in report["errors"])
    result = CliRunner().invoke(cli, ["profile", "check", str(path)])
    assert result.exit_code == 1
    (line,) = result.output.splitlines()  # one line each, the profile not repeated
    assert line.startswith(f"Error: {path}: ") and expected in line


def test_the_launcher_checks_the_profile_over_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SEALPOOL_BACKEND", "SEALPOOL_PROCESSOR"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "sealpool.toml"
    config.write_text('backend = "external"\n')
    monkeypatch.setenv("SEALPOOL_CONFIG", str(config))
    path = profile(tmp_path)
    with pytest.raises(ConfigError, match=r"box\.toml: processor: backend 'external' needs"):
        checked_profile(path)
    config.write_text(f'backend = "external"\nprocessor = {json.dumps(PROCESSOR)}\n')
    assert checked_profile(path)[0].backend == "external"
