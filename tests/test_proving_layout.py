"""The hand-off to proving: Finalize lays sealed sectors out as lotus storage paths."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest

from sealpool.backends.base import check_sealed
from sealpool.errors import ConfigError, PhaseError
from sealpool.proving_layout import (
    cache_names,
    declare_store,
    find_sector_files,
    sector_files,
    sector_name,
)
from sealpool.runtime import runtime
from sealpool.sealing_tasks import start
from sealpool.store import SectorState

from farm_helpers import wait_for, worker

GIB32 = 32 << 30


def test_finalize_leaves_sectors_where_lotus_proves_them(
    farm_env: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEALPOOL_SECTOR_SIZE", "32GiB")
    store = runtime(prefix).store
    sectors = store.create_many("f01000", "cc", 2)
    with worker(prefix):
        for sector in sectors:
            start(store, sector.id, actor="test")
        done = wait_for(store, [s.id for s in sectors])
    root = (farm_env / "hostA" / "sealed").resolve()
    assert sorted(p.name for p in root.iterdir()) == ["cache", "sealed", "sectorstore.json"]
    meta = json.loads((root / "sectorstore.json").read_text())
    assert uuid.UUID(meta.pop("ID"))  # one ID for the path, written once
    assert meta == {
        "Weight": 10, "CanSeal": False, "CanStore": True, "MaxStorage": 0, "Groups": [],
        "AllowTo": [], "AllowTypes": [], "DenyTypes": [], "AllowMiners": [], "DenyMiners": [],
    }  # fmt: skip
    names = [f"s-t01000-{s.number}" for s in done]
    assert sorted(p.name for p in (root / "sealed").iterdir()) == sorted(names)
    assert sorted(p.name for p in (root / "cache").iterdir()) == sorted(names)
    for sector, name in zip(done, names, strict=True):
        assert sector.state is SectorState.PROVING, sector.last_error
        sealed, cache = root / "sealed" / name, root / "cache" / name
        assert sector.sealed_path == str(sealed)
        digest = hashlib.sha256(sealed.read_bytes()).hexdigest()
        assert digest == sector.outputs["Finalize"]["sealed_sha256"]
        expected = ["p_aux", "t_aux", *(f"sc-02-data-tree-r-last-{i}.dat" for i in range(8))]
        assert sorted(p.name for p in cache.iterdir()) == sorted(expected)


def test_sector_names_are_lotus_and_stay_in_their_root(tmp_path: Path) -> None:
    assert sector_name("f01000", 7) == sector_name("t01000", 7) == "s-t01000-7"
    assert sector_name("f0001000", 7) == "s-t01000-7"  # the actor id, as lotus prints it
    for miner, number in (("f1abc", 1), ("f01000/../x", 1), ("../f01000", 1), ("f01000", -1)):
        with pytest.raises(ValueError, match="not an ID address and sector number"):
            sector_name(miner, number)
    files = sector_files(tmp_path, "f01000", 7)
    assert files.sealed == tmp_path.resolve() / "sealed" / "s-t01000-7"
    assert files.cache == tmp_path.resolve() / "cache" / "s-t01000-7"
    elsewhere = tmp_path / "other"
    assert find_sector_files(files.sealed, [tmp_path], "f01000", 7) == files
    assert find_sector_files(files.sealed, [elsewhere], "f01000", 7) is None
    assert find_sector_files(files.sealed, [tmp_path], "f01000", 8) is None
    assert find_sector_files(files.cache, [tmp_path], "f01000", 7) is None
    assert find_sector_files("", [tmp_path], "f01000", 7) is None


def test_cache_files_lotus_checks_before_proving() -> None:
    assert cache_names(2 << 10) == ("p_aux", "t_aux", "sc-02-data-tree-r-last.dat")
    assert len(cache_names(GIB32)) == 2 + 8 and len(cache_names(64 << 30)) == 2 + 16


def test_an_existing_sectorstore_json_is_kept(tmp_path: Path) -> None:
    ours = declare_store(tmp_path / "fresh")
    assert declare_store(tmp_path / "fresh") == ours  # written once
    edited = {"ID": "e5c0d3f2-0000-4000-8000-000000000001", "Weight": 50, "CanStore": True}
    (tmp_path / "attached").mkdir()
    (tmp_path / "attached" / "sectorstore.json").write_text(json.dumps(edited))
    assert declare_store(tmp_path / "attached") == edited
    assert {p.name for p in (tmp_path / "attached").iterdir() if p.is_dir()} == {"sealed", "cache"}
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "sectorstore.json").write_text('{"Weight": 10}')
    with pytest.raises(ConfigError, match=r"broken/sectorstore.json: ID: missing"):
        declare_store(tmp_path / "broken")


def test_finalize_outputs_without_the_proving_cache_files_are_refused(tmp_path: Path) -> None:
    files = sector_files(tmp_path, "f01000", 3)
    outputs = {"sealed_bytes": 4, "sealed_sha256": "0" * 64, "cache_files": {"p_aux": 64}}
    with pytest.raises(PhaseError) as refused:
        check_sealed(files, GIB32, outputs, "Finalize of f01000-3")
    message = str(refused.value)
    assert message.startswith("Finalize of f01000-3: cache_files: t_aux, sc-02-data-tree-r-last-0")
    assert message.endswith("missing; lotus needs them to prove the sector")
    assert not refused.value.retry
