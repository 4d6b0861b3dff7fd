"""Several miners on one pool: which miner the next sector is for, and its sector numbers.

Scratch ledgers and GPU locks belong to hosts, not miners, so every miner's sectors share
them: two miners never overbook a machine. What is per miner: the share of new sectors,
the priority tier, a cap on sectors sealing at once, CC fill, the sector-number range, and
the chain's view of the miner actor.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from sealpool.chain import Chain
from sealpool.chain.bitfield import highest_in
from sealpool.config import MinerConfig, Settings
from sealpool.errors import ConfigError
from sealpool.store import SectorState, SectorStore, parse_sector_id

S = SectorState
# A sector counts against its miner's max_sealing from its start until it is sealed.
SEALING = (
    S.ADD_PIECE, S.PRE_COMMIT_1, S.PRE_COMMIT_2, S.PRE_COMMITTING, S.WAIT_SEED,
    S.COMMIT_1, S.COMMIT_2, S.COMMITTING, S.FINALIZE,
)  # fmt: skip


def configured(settings: Settings) -> list[MinerConfig]:
    """The miners of the pool: the ``miners`` setting, else the one ``miner``."""
    return settings.miners or [MinerConfig(id=settings.miner)]


def named(settings: Settings, miner: str | None) -> MinerConfig:
    """The configured miner ``miner`` (the first one when None); ConfigError if unknown."""
    miners = configured(settings)
    if miner is None:
        return miners[0]
    for each in miners:
        if each.id == miner:
            return each
    known = ", ".join(each.id for each in miners)
    raise ConfigError(f"miner {miner!r} is not configured (miners: {known})")


def number_range(miner: MinerConfig, chain: Chain) -> tuple[int, int | None]:
    """The sector numbers ``miner`` may still give: above every number allocated on chain
    within its range, up to its ``last_number``."""
    highest = highest_in(chain.allocated(), miner.first_number, miner.last_number)
    floor = miner.first_number if highest is None else highest + 1
    return floor, miner.last_number


def sealing_counts(store: SectorStore, miners: list[MinerConfig]) -> Counter[str]:
    """Sectors of each miner started and not yet sealed: from the state counts for one
    miner, else from the state indexes' ids (a read of every sector in flight)."""
    if len(miners) == 1:
        counts = store.counts()
        return Counter({miners[0].id: sum(sum(counts[state].values()) for state in SEALING)})
    return Counter(
        parse_sector_id(sector_id)[0]
        for state in SEALING
        for sector_id in store.ids_in_state(state)
    )


def below_cap(miner: MinerConfig, counts: Counter[str]) -> bool:
    """Whether ``miner`` may start one more sector."""
    return miner.max_sealing is None or counts[miner.id] < miner.max_sealing


def ranked(
    miners: list[MinerConfig], counts: Counter[str], wanted: Callable[[MinerConfig], bool]
) -> list[MinerConfig]:
    """The ``wanted`` miners below their cap, the one to get the next sector first: lowest
    priority, then fewest sealing sectors for its share (ties: in configured order)."""
    return sorted(
        (m for m in miners if wanted(m) and below_cap(m, counts)),
        key=lambda m: (m.priority, counts[m.id] / m.share),
    )


def miner_rows(store: SectorStore, settings: Settings) -> list[dict[str, object]]:
    """Each configured miner with its sectors sealing and the sector numbers it gave."""
    miners = configured(settings)
    counts = sealing_counts(store, miners)
    return [
        {
            "miner": miner.id, "sealing": counts[miner.id], "max_sealing": miner.max_sealing,
            "share": miner.share, "priority": miner.priority,
            "last_number": store.last_number(miner.id), "numbers_up_to": miner.last_number,
        }
        for miner in miners
    ]  # fmt: skip
