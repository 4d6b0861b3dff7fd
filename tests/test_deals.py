"""Deal packing by Filecoin's piece rules, and pieces refused on `deals add` in one line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from sealpool.cli import cli
from sealpool.deals import DealBook, check_piece, fits, piece_offsets
from sealpool.runtime import runtime
from sealpool.supervisor import Supervisor
from sealpool.worker_profiles.plan import SlotPlan
from sealpool.worker_profiles.slots import SlotPool

GiB = 1 << 30
CID = "baga6ea4seaq" + "a" * 52


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_pieces_align_to_their_own_size() -> None:
    assert piece_offsets([8 * GiB, 16 * GiB]) == [0, 16 * GiB]  # 8 GiB of zero pieces between
    assert fits([16 * GiB, 16 * GiB], 32 * GiB)
    assert fits([16 * GiB, 8 * GiB, 8 * GiB], 32 * GiB)
    assert not fits([8 * GiB, 16 * GiB, 8 * GiB], 32 * GiB)  # 32 GiB in all, but misaligned
    with pytest.raises(ValueError, match="larger than the 34359738368-byte sector"):
        check_piece(1 << 40, 32 * GiB)
    for size in (3 * GiB, 1, 0, 64):
        with pytest.raises(ValueError, match=f"piece size {size}: must be a power of two"):
            check_piece(size, 32 * GiB)


def test_two_16_gib_deals_share_a_32_gib_sector(
    farm_env: Path,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    registered: Callable[..., SlotPool],
) -> None:
    monkeypatch.setenv("SEALPOOL_CREATE_INTERVAL_S", "0")
    monkeypatch.setenv("SEALPOOL_SECTOR_SIZE", "32GiB")
    runtime.cache_clear()
    rt = runtime(prefix)
    registered("hostA", [SlotPlan("PreCommit1", i, None, None, {}) for i in range(2)])
    book = DealBook(rt.store.client, prefix)
    for deal_id in (7, 8, 9):
        book.add(deal_id, 16 * GiB, sector_bytes=32 * GiB)
    report = Supervisor(rt, "sup").tick()
    started = rt.store.get_many(report.started)
    assert [s.deal_ids for s in started] == [[7, 8], [9]]
    assert book.sector_of(7) == book.sector_of(8) == started[0].id and book.waiting() == []


@pytest.mark.usefixtures("cli_env")
def test_deals_add_refuses_bad_pieces_in_one_line(tmp_path: Path) -> None:
    for size, reason in [
        ("1TiB", "piece size 1099511627776: larger than the 34359738368-byte sector"),
        ("3GiB", "piece size 3221225472: must be a power of two"),
        ("1", "piece size 1: must be a power of two"),
        ("0", "piece size 0: must be a power of two"),
        ("lots", "--piece-size: 'lots' is not a size"),
    ]:
        code, out = run("deals", "add", "5", "--piece-size", size)
        assert code == 1 and out.startswith(f"Error: {reason}"), out
        assert len(out.strip().splitlines()) == 1, out
    code, out = run("deals", "add", "5", "--piece-size", "16GiB", "--piece-cid", "bafy")
    assert code == 1 and out.startswith("Error: piece CID 'bafy': expected"), out
    big = tmp_path / "piece.car"
    big.write_bytes(b"x" * 255)  # a 256-byte piece holds 254 unpadded bytes
    code, out = run("deals", "add", "5", "--piece-size", "256", "--source", str(big))
    assert code == 1 and "255 bytes, more than a 256-byte piece holds (254" in out, out
    assert json.loads(run("deals", "list", "--json")[1]) == []
    big.write_bytes(b"x" * 254)
    code, out = run(
        "deals", "add", "5", "--piece-size", "256", "--piece-cid", CID, "--source", str(big),
        "--json",
    )  # fmt: skip
    assert code == 0, out
    (deal,) = json.loads(out)
    assert (deal["piece_cid"], deal["source"]) == (CID, str(big.resolve()))
    code, out = run("deals", "add", "6", "--piece-size", "8GiB", "--source", "https://x.io/p.car")
    assert code == 0, out
    listed = json.loads(run("deals", "list", "--json")[1])
    assert [(d["deal_id"], d["source"]) for d in listed] == [
        (5, str(big.resolve())),
        (6, "https://x.io/p.car"),
    ]
