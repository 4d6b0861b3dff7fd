"""`sealpool storage gc`: scratch directories a host no longer needs are listed, then removed,
and nothing else: not a live sector's, not a stray file, not through a link."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from sealpool.cli import cli
from sealpool.store import SectorState, SectorStore
from sealpool.store.scratch import ScratchLedger, ScratchPath

from helpers import place

HOUR_AGO = time.time() - 3600 - 60


def bound(store: SectorStore, state: SectorState, host: str) -> str:
    """A sector in ``state`` whose temp data is on ``host``."""
    sector = place(store, state)
    store.move(
        sector.id,
        state,
        actor="test",
        updates={"host": host},
        sources=[state],
        expected_version=sector.version,
    )
    return sector.id


def scratch(root: Path, name: str, age_s: float = 7200) -> Path:
    """A sector directory with one file, last changed ``age_s`` ago."""
    path = root / name
    path.mkdir(parents=True)
    (path / "layer").write_bytes(b"x" * 1000)
    for each in (path / "layer", path):
        os.utime(each, (time.time() - age_s, time.time() - age_s))
    return path


def write_profile(tmp_path: Path) -> Path:
    """The profile of ``hostA``, its scratch under ``tmp_path/hostA/temp``."""
    profile = tmp_path / "hostA.toml"
    profile.write_text(
        f'host = "hostA"\n[storage]\ntemp = [{{ path = "{tmp_path}/hostA/temp" }}]\n'
        f'sealed = [{{ path = "{tmp_path}/sealed" }}]\n[phases.pc1]\nslots = 1\n'
    )
    return profile


def gc(profile: Path, *options: str) -> dict:
    result = CliRunner().invoke(cli, ["storage", "gc", "--profile", str(profile), *options])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_gc_removes_exactly_what_no_sector_needs_here(
    cli_env: str, store: SectorStore, tmp_path: Path
) -> None:
    root, outside = tmp_path / "hostA" / "temp", tmp_path / "outside"
    profile = write_profile(tmp_path)
    proving = bound(store, SectorState.PROVING, "hostA")
    live = bound(store, SectorState.PRE_COMMIT_1, "hostA")
    elsewhere = bound(store, SectorState.PRE_COMMIT_1, "hostB")
    unbound = place(store, SectorState.ADD_PIECE).id  # an AddPiece may be about to write
    for sector in (proving, live, elsewhere, unbound):
        scratch(root, sector)
    fresh = scratch(root, "f01000-900", age_s=60)  # unknown to the pool, but just written
    (root / "notes.txt").write_text("not a sector")
    scratch(root, "lost+found")
    scratch(root, "f01000-0900")  # not an id sealpool writes
    scratch(outside, "victim")
    (root / "f01000-901").symlink_to(outside / "victim")  # named like a sector, a link
    ledger = ScratchLedger(store.client, store.prefix)
    for sector in (proving, live):
        assert ledger.reserve("hostA", sector, 10, [ScratchPath(str(root), 10**12)])

    listed = gc(profile, "--dry-run", "--json")
    assert listed["host"] == "hostA" and listed["dry_run"] is True
    assert {(d["sector"], d["reason"]) for d in listed["directories"]} == {
        (proving, "Proving"),
        (elsewhere, "bound to hostB"),
    }
    assert all(d["bytes"] == 1000 for d in listed["directories"]) and listed["bytes"] == 2000
    assert all((root / sector).is_dir() for sector in (proving, elsewhere))  # dry run
    assert set(ledger.reservations("hostA")) == {proving, live}

    table = CliRunner().invoke(cli, ["storage", "gc", "--profile", str(profile), "--dry-run"])
    assert table.exit_code == 0 and "1000 B" in table.stdout and "bound to hostB" in table.stdout

    removed = gc(profile, "--json")
    assert {d["sector"] for d in removed["directories"]} == {proving, elsewhere}
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [live, unbound, fresh.name, "f01000-0900", "f01000-901", "lost+found", "notes.txt"]
    )
    assert (outside / "victim" / "layer").read_bytes() == b"x" * 1000
    assert set(ledger.reservations("hostA")) == {live}

    assert gc(profile, "--min-age", "0", "--json")["directories"] == [
        {
            "sector": "f01000-900",
            "root": str(root),
            "path": str(fresh),
            "bytes": 1000,
            "reason": "not in the pool",
        }
    ]
    assert (root / live).is_dir() and (root / "f01000-901").is_symlink()


@pytest.mark.usefixtures("cli_env")
def test_gc_names_a_bad_profile_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["storage", "gc", "--profile", str(tmp_path / "none.toml")])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {tmp_path / 'none.toml'}: cannot read profile")


def test_gc_removes_nothing_from_an_empty_or_absent_pool(
    cli_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = write_profile(tmp_path)
    kept = scratch(tmp_path / "hostA" / "temp", "f01000-1")
    result = CliRunner().invoke(cli, ["storage", "gc", "--profile", str(profile)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: pool '{cli_env}' holds no sector: wrong redis_url")
    monkeypatch.delenv("SEALPOOL_REDIS_URL")  # never an embedded server: an empty pool
    result = CliRunner().invoke(cli, ["storage", "gc", "--profile", str(profile)])
    assert result.exit_code == 1 and "no Redis: set SEALPOOL_REDIS_URL" in result.output
    assert (kept / "layer").is_file()
