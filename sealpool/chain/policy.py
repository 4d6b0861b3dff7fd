"""The miner actor's sealing rules, as sealpool plans with them.

Constants from builtin-actors (``runtime/src/runtime/policy.rs``, ``actors/miner/src/
policy.rs``) and lotus (``storage/pipeline``); epochs are 30 s, 2880 a day. Functions take
what the rule depends on and nothing else, so the steps and the supervisor plan the same way.
"""

from __future__ import annotations

from sealpool.config import EPOCH_SECONDS, Settings
from sealpool.store import SectorState

S = SectorState
EPOCHS_PER_DAY = 2880
CHAIN_FINALITY = 900
MAX_PRE_COMMIT_RANDOMNESS_LOOKBACK = EPOCHS_PER_DAY + CHAIN_FINALITY  # 3780
PRE_COMMIT_CHALLENGE_DELAY = 150
MAX_PROVE_COMMIT_DURATION = 30 * EPOCHS_PER_DAY + PRE_COMMIT_CHALLENGE_DELAY  # 86550
MIN_SECTOR_EXPIRATION = 180 * EPOCHS_PER_DAY  # 518400
MAX_SECTOR_EXPIRATION_EXTENSION = 1278 * EPOCHS_PER_DAY  # 3680640
INTERACTIVE_POREP_CONFIDENCE = 6  # lotus storage/pipeline/constants.go
CC_LIFETIME_EPOCHS = 540 * EPOCHS_PER_DAY  # lotus CommittedCapacitySectorLifetime
# Registered seal proof V1_1 of each sector size (go-state-types abi/sector.go).
SEAL_PROOF = {"2KiB": 5, "8MiB": 6, "512MiB": 7, "32GiB": 8, "64GiB": 9}
TICKET_PHASES = (S.PRE_COMMIT_1, S.PRE_COMMIT_2, S.PRE_COMMITTING)  # a ticket must outlast


def ticket_expiry(ticket_epoch: int, max_age: int = MAX_PRE_COMMIT_RANDOMNESS_LOOKBACK) -> int:
    """The last epoch a precommit with this ticket may execute at."""
    return ticket_epoch + max_age


def ticket_work_epochs(settings: Settings, since: SectorState = S.PRE_COMMIT_1) -> float:
    """Epochs the phases from ``since`` to a landed precommit take (by the farm profile)."""
    todo = TICKET_PHASES[TICKET_PHASES.index(since) :]
    return sum(settings.phase_seconds.get(p.value, 0.0) for p in todo) / EPOCH_SECONDS


def seed_epoch(precommit_epoch: int, delay: int = PRE_COMMIT_CHALLENGE_DELAY) -> int:
    """The seed's epoch: the precommit's on-chain PreCommitEpoch plus the challenge delay."""
    return precommit_epoch + delay


def prove_commit_deadline(precommit_epoch: int) -> int:
    """The last epoch a prove-commit of this precommit may execute at."""
    return precommit_epoch + MAX_PROVE_COMMIT_DURATION


def expiration(head: int, ticket_epoch: int, lifetime: int = CC_LIFETIME_EPOCHS) -> int:
    """A CC sector's Expiration as lotus computes it (precommit_policy.go): ``lifetime``
    from the head less two days, raised to the actor's minimum for any landing before the
    ticket expires, capped at the actor's maximum for a landing after ``head``."""
    wanted = head + lifetime - 2 * EPOCHS_PER_DAY
    floor = max(
        head + MIN_SECTOR_EXPIRATION + EPOCHS_PER_DAY,
        ticket_epoch
        + MAX_PRE_COMMIT_RANDOMNESS_LOOKBACK
        + MAX_PROVE_COMMIT_DURATION
        + MIN_SECTOR_EXPIRATION,
    )
    return min(max(wanted, floor), head + MAX_SECTOR_EXPIRATION_EXTENSION)


def expiration_bounds(executed_at: int) -> tuple[int, int]:
    """The Expiration range the actor accepts in a precommit executed at ``executed_at``."""
    return (
        executed_at + MAX_PROVE_COMMIT_DURATION + MIN_SECTOR_EXPIRATION,
        executed_at + MAX_SECTOR_EXPIRATION_EXTENSION,
    )
