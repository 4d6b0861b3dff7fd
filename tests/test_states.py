"""Every legal and illegal transition, through the store against a real Redis."""

from __future__ import annotations

import pytest

from sealpool.errors import ChangedMeanwhile, IllegalTransition
from sealpool.store import PhaseStatus, SectorState, SectorStore, allowed_sources

from helpers import place

S = SectorState
FORWARD = [
    (S.PENDING, S.ADD_PIECE), (S.ADD_PIECE, S.PRE_COMMIT_1), (S.PRE_COMMIT_1, S.PRE_COMMIT_2),
    (S.PRE_COMMIT_2, S.PRE_COMMITTING), (S.PRE_COMMITTING, S.WAIT_SEED),
    (S.WAIT_SEED, S.COMMIT_1), (S.COMMIT_1, S.COMMIT_2), (S.COMMIT_2, S.COMMITTING),
    (S.COMMITTING, S.FINALIZE), (S.FINALIZE, S.PROVING),
]  # fmt: skip
WORK = [S.ADD_PIECE, S.PRE_COMMIT_1, S.PRE_COMMIT_2, S.PRE_COMMITTING, S.WAIT_SEED,
        S.COMMIT_1, S.COMMIT_2, S.COMMITTING, S.FINALIZE]  # fmt: skip
LIVE = [S.PENDING, *WORK]


def expected_legal() -> set[tuple[SectorState, SectorState]]:
    """The state machine of issue 2 and the recovery moves, written out by hand."""
    legal = set(FORWARD)
    legal |= {(src, S.FAILED) for src in LIVE}
    legal |= {(src, S.ABORTED) for src in [*LIVE, S.FAILED]}
    legal |= {(S.FAILED, phase) for phase in WORK}  # retry / resume
    legal |= {
        (src, S.PRE_COMMIT_1) for src in (S.PRE_COMMIT_1, S.PRE_COMMIT_2, S.PRE_COMMITTING)
    }  # re-ticket
    legal |= {(src, S.ADD_PIECE) for src in (S.ADD_PIECE, S.PRE_COMMIT_1, S.PRE_COMMIT_2)}
    return legal  # host lost before the precommit: restart


def test_table_matches_the_state_machine() -> None:
    coded = {(src, dst) for dst in S for src in allowed_sources(dst)}
    assert coded == expected_legal()


@pytest.mark.parametrize("source", list(S), ids=str)
def test_every_move_from(store: SectorStore, source: SectorState) -> None:
    legal = expected_legal()
    for target in S:
        sector = place(store, source)
        history_before = store.history(sector.id)
        if (source, target) in legal:
            version = sector.version if target is source else None  # a self-move needs it
            moved = store.move(sector.id, target, actor="test", expected_version=version)
            assert moved.state is target
            assert moved.status == (PhaseStatus.QUEUED if target in WORK else None)
            assert moved.version == sector.version + 1
            assert store.history(sector.id)[-1].to_state == target.value
            assert sector.id in store.ids_in_state(target)
            if target is not source:
                assert sector.id not in store.ids_in_state(source)
        else:
            with pytest.raises(IllegalTransition, match=f"{source} → {target}"):
                store.move(sector.id, target, actor="test")
            assert store.get(sector.id) == sector
            assert store.history(sector.id) == history_before
            assert sector.id in store.ids_in_state(source)


@pytest.mark.parametrize("state", [S.ADD_PIECE, S.PRE_COMMIT_1], ids=str)
def test_a_move_to_the_same_state_needs_the_version_read(
    store: SectorStore, state: SectorState
) -> None:
    sector = place(store, state)
    with pytest.raises(IllegalTransition):
        store.move(sector.id, state, actor="second supervisor")
    store.move(sector.id, state, actor="first", expected_version=sector.version)
    with pytest.raises(ChangedMeanwhile):
        store.move(sector.id, state, actor="second", expected_version=sector.version)
    assert [e.actor for e in store.history(sector.id)].count("first") == 1
