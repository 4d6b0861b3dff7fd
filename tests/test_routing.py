"""Routing is a pure function: queues, host binding and priorities, no broker needed."""

from __future__ import annotations

import pytest

from sealpool.routing import QUEUE_NAMES, TEMP_PHASES, host_queues, priority, route, route_task
from sealpool.store import WORK_PHASES, SectorState

S = SectorState


def test_temp_phases_go_to_the_host_queue_once_bound() -> None:
    assert route("p", S.ADD_PIECE, "cc")["queue"] == "p.ap"
    assert route("p", S.PRE_COMMIT_1, "cc", "h1")["queue"] == "p.pc1@h1"
    assert route("p", S.PRE_COMMIT_2, "deal", "h1")["queue"] == "p.pc2@h1"
    assert route("p", S.COMMIT_1, "cc", "h2")["queue"] == "p.c1@h2"
    assert route("p", S.FINALIZE, "cc", "h2")["queue"] == "p.finalize@h2"


def test_phases_that_need_no_temp_data_stay_shared() -> None:
    for phase in (S.PRE_COMMITTING, S.WAIT_SEED, S.COMMIT_2, S.COMMITTING):
        assert phase not in TEMP_PHASES
        assert route("p", phase, "cc", "h1")["queue"] == f"p.{QUEUE_NAMES[phase]}"


def test_deals_before_cc_and_later_phases_first() -> None:
    for phase in WORK_PHASES:
        assert priority(phase, "deal") < priority(phase, "cc")
        assert 0 <= priority(phase, "deal") <= 4 and 5 <= priority(phase, "cc") <= 9
    ranks = [priority(phase, "cc") for phase in WORK_PHASES]
    assert ranks == sorted(ranks, reverse=True)  # further along → smaller step → sooner
    assert priority(S.ADD_PIECE, "cc", urgent=True) == 0


def test_router_routes_only_sealpool_tasks() -> None:
    kwargs = {"pool": "p", "sector_id": "f01000-1", "kind": "deal", "host": "h1"}
    assert route_task("sealpool.pc2", (), kwargs, {}) == {"queue": "p.pc2@h1", "priority": 2}
    assert route_task("celery.ping", (), {}, {}) is None


@pytest.mark.parametrize("host", ["h1", "gpu-box.local"])
def test_host_queues(host: str) -> None:
    queues = host_queues("p", [S.PRE_COMMIT_2, S.COMMIT_2], host)
    assert queues == ["p.pc2", "p.c2", f"p.pc2@{host}"]
