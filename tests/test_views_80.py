"""Every CLI table read at 80 columns: no line wider, no cell cut, phases by distinct short
names, sizes and times humanized; ``--json`` keeps the raw values."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from chain_helpers import precommit_of
from click.testing import CliRunner
from rich.console import Console

from sealpool.chain import SimChain
from sealpool.chain.batching import BatchBook, Member, precommit_entry
from sealpool.chain.sim import DEPOSIT
from sealpool.cli import cli
from sealpool.cli.demo import _summary
from sealpool.cli.render import SHORT_NAMES, duration, table
from sealpool.config import Settings
from sealpool.demo import DemoResult
from sealpool.runtime import runtime
from sealpool.sealing_tasks import start
from sealpool.store import WORK_PHASES, SectorState
from sealpool.worker_profiles.plan import SlotPlan
from sealpool.worker_profiles.slots import SlotPool

from farm_helpers import wait_for, worker
from helpers import place, wait_until

WIDTH = 80
# A long value shortened on purpose says so: "<start>… (<length> chars)".
STATED_SHORTENING = re.compile(r"…(?! \(\d+ chars\))")


def at_80(*args: str) -> str:
    """The output of ``sealpool ARGS`` on an 80-column terminal, checked to fit it."""
    result = CliRunner(env={"COLUMNS": str(WIDTH)}).invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return fits(result.output)


def fits(output: str) -> str:
    """``output``, after checking no line is wider than 80 and nothing was cut."""
    wide = [line for line in output.splitlines() if len(line) > WIDTH]
    assert not wide, "\n".join(wide)
    assert not STATED_SHORTENING.search(output), output
    return output


def column(out: str, name: str, next_name: str) -> str:
    """The text of a table's column, its folded lines joined."""
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if name in line and next_name in line)
    start, end = lines[header].index(name), lines[header].index(next_name)
    return "".join(line[start:end].strip() for line in lines[header + 2 :])


def raw(*args: str) -> object:
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_duration_is_humanized() -> None:
    shown = [duration(s) for s in (0.25, 4.2, 42, 725, 11_100, 180_000)]
    assert shown == ["250ms", "4.2s", "42s", "12m05s", "3h05m", "2d02h"]


def test_workers_names_each_phase_distinctly(
    cli_env: str, registered: Callable[..., SlotPool]
) -> None:
    for phase in WORK_PHASES:
        registered("gpu-box-017.farm", [SlotPlan(phase.value, 0, tuple(range(32)), (0, 1), {})])
    out = at_80("workers")
    for phase in WORK_PHASES:
        assert re.search(rf"\s{SHORT_NAMES[phase.value]}\s", out), (phase, out)
    assert len(set(SHORT_NAMES.values())) == len(WORK_PHASES)
    assert "0-31" in out and "gpu-box-017.farm" in out
    assert {r["phase"] for r in raw("workers")} == {p.value for p in WORK_PHASES}  # type: ignore[union-attr]


def test_sealed_sector_list_show_and_ratio(farm_env: Path, prefix: str) -> None:
    store = runtime(prefix).store
    sector = store.create_many("f01000", "cc", 1)[0]
    with worker(prefix):
        start(store, sector.id, actor="test")
        assert wait_for(store, [sector.id])[0].state.value == "Proving"

    listed = at_80("sectors", "list")
    assert "retries" in listed and re.search(rf"{sector.id}\s.*Proving\s.*hostA\s+0\b", listed)

    shown = at_80("sectors", "show", sector.id)
    record = raw("sectors", "show", sector.id)
    assert isinstance(record, dict)
    ticket = record["sector"]["ticket"]["value"]
    assert ticket in shown  # a hash in full, never cut
    assert "UTC" in shown and str(record["sector"]["created_ms"]) not in shown
    assert "{" not in shown  # no raw dicts
    assert re.search(r"proof=\w+… \(\d+ chars\)", shown)  # the proof summarized, saying so
    for phase in record["sector"]["outputs"]:
        assert f"out {SHORT_NAMES[phase]} " in shown
    assert "pc2→precommit" in shown
    assert isinstance(record["sector"]["created_ms"], int)  # --json stays raw

    ratio = at_80("ratio", "--pc1", "4")
    assert "sectors/day in farm time (×2000)" in " ".join(ratio.split()), ratio
    per_day = float(re.search(r"([\d.]+) sectors/day", ratio).group(1))  # type: ignore[union-attr]
    wall = raw("ratio", "--pc1", "4")
    assert isinstance(wall, dict)
    assert per_day == pytest.approx(wall["sectors_per_day"] / 2000, abs=0.05)


@pytest.mark.usefixtures("cli_env")
def test_pool_stats_and_deals_list() -> None:
    added = CliRunner().invoke(cli, ["sectors", "add", "--kind", "cc", "--count", "2"])
    assert added.exit_code == 0, added.output
    assert "PreCommitting" in at_80("pool", "stats")
    cid = "baga6ea4seaqao7s73y24kcutaosvacpdjgfe5pw76ooefnyqw4ynr3d2y6x2mpq"
    source = "https://deals.example.org/pieces/2024/06/" + "a" * 60 + ".car"
    deal = CliRunner().invoke(
        cli,
        ["deals", "add", "9", "--piece-size", "16GiB", "--piece-cid", cid, "--source", source],
    )
    assert deal.exit_code == 0, deal.output
    out = at_80("deals", "list")
    assert "16.0 GiB" in out and "UTC" in out
    assert column(out, "piece CID", "source") == cid  # folded, never cut
    assert column(out, "source", "added") == source
    assert raw("deals", "list")[0]["piece_size"] == 16 * 2**30  # type: ignore[index]


def test_pool_stats_shows_every_miner_and_stuck_phases(
    cli_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    miners = [
        {"id": "f01234567", "share": 3, "max_sealing": 1000, "priority": 2},
        {"id": "f07654321", "first_number": 9_000_000, "last_number": 9_999_999},
    ]
    monkeypatch.setenv("SEALPOOL_MINERS", json.dumps(miners))
    added = CliRunner().invoke(cli, ["sectors", "add", "--kind", "cc", "--miner", "f07654321"])
    assert added.exit_code == 0, added.output
    out = at_80("pool", "stats")
    assert "f01234567" in out and "f07654321" in out and "9000000" in out
    place(runtime(cli_env).store, SectorState.PRE_COMMIT_1)  # and no worker runs PC1
    assert "stuck: no live worker runs PreCommit1" in " ".join(at_80("pool", "stats").split())
    rows = raw("pool", "stats")["miners"]  # type: ignore[index]
    assert [r["numbers_up_to"] for r in rows] == [None, 9_999_999]


def precommit_member(chain: SimChain) -> Member:
    """Sector f01000-1's precommit, ready to enroll in a batch."""
    precommit = precommit_of(chain, 1)
    entry = precommit_entry(precommit)
    return Member("f01000-1", "precommit", "f01000", entry, DEPOSIT, precommit.ticket_epoch + 3780)


def test_batches_show_a_cid_in_full(client: redis.Redis, prefix: str, cli_env: str) -> None:
    settings = Settings(time_scale=3000, message_confidence=2, precommit_batch_wait_s=0)
    chain = SimChain(client, prefix, time_scale=3000, start_epoch=10_000)
    book = BatchBook(client, prefix, settings)
    member = book.enroll(precommit_member(chain), chain.head())

    def landed() -> bool:
        book.pump(lambda _miner: chain, None)
        return (book.member(member.sector_id) or member).outcome == "landed"

    wait_until(landed, timeout_s=60, what="the batch landed")
    out = at_80("batches")
    (batch,) = raw("batches")  # type: ignore[misc]
    assert batch["cid"] and column(out, "cid", "why") == batch["cid"]  # folded, never cut
    assert "landed" in out and member.sector_id not in out  # a count of sectors, not their ids


def test_profile_check_humanizes_sizes(tmp_path: Path, cli_env: str) -> None:
    for name in ("scratch", "sealed"):
        (tmp_path / name).mkdir()
    profile = tmp_path / "box.toml"
    phases = "".join(f"[phases.{p.value}]\nslots = 2\n" for p in WORK_PHASES)
    profile.write_text(
        f'host = "box-01"\nbackend = "sim"\nsector_size = "2KiB"\n'
        f'[storage]\ntemp = [{{ path = "{tmp_path}/scratch" }}]\n'
        f'sealed = [{{ path = "{tmp_path}/sealed" }}]\n{phases}'
    )
    out = at_80("profile", "check", str(profile))
    assert re.search(r"\d+\.\d [KMGT]iB", out), out
    assert all(re.search(rf"\s{name}\s", out) for name in SHORT_NAMES.values())
    assert "memory" in out and re.search(r"RAM here\s.*\d+\.\d [KMGT]iB", out), out
    data = raw("profile", "check", str(profile))
    assert isinstance(data, dict) and isinstance(data["storage"][0]["free"], int)
    assert isinstance(data["memory"]["need"], int)


def test_demo_summary_has_a_header_and_fits() -> None:
    result = DemoResult(
        sectors=20, hosts=2, time_scale=1000, sectors_sealed=20, sectors_failed=0,
        cross_host_bytes=0, elapsed_s=42.5, throughput_per_h=1200, bound_per_h=1500,
        bound_ratio=0.8, bottleneck="PreCommit1",
        phase_seconds={p.value: 3.6 for p in WORK_PHASES},
    )  # fmt: skip
    console = Console(width=WIDTH, record=True)
    console.print(table("sealpool demo", ["measure", "result"], _summary(result)))
    out = fits(console.export_text())
    assert "measure" in out and "mean pc1" in out and "1h00m farm (3.6s wall)" in out
