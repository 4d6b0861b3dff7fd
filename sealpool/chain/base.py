"""What sealpool needs from a Filecoin chain, whatever provides it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from sealpool.chain.messages import PreCommit

RandomnessPurpose = Literal["ticket", "seed"]


@dataclass(frozen=True)
class Receipt:
    """A message executed on chain."""

    cid: str  # the message that executed: a replacement's (fee bump) when it was replaced
    exit_code: int
    height: int  # the first tipset carrying the receipt (one above the execution)
    returned: bytes = b""


class Chain(Protocol):
    """Epochs, randomness, the miner's state, and messages to the miner actor."""

    miner: str

    def head(self) -> int:
        """The current chain height (epoch)."""
        ...

    def randomness(self, purpose: RandomnessPurpose, epoch: int, miner: str) -> str:
        """Hex of the 32 bytes of seal randomness (ticket) or challenge randomness (seed)."""
        ...

    def push(self, method: int, params: bytes, value: int, uuid: str) -> str:
        """Send a message to the miner actor from its worker or a control address; the CID.

        A ``uuid`` sent before returns that message again and sends nothing (MsgUuid).
        """
        ...

    def search(self, cid: str) -> Receipt | None:
        """The receipt of the message ``cid`` (or of its replacement); None while pending."""
        ...

    def precommit_epoch(self, number: int) -> int | None:
        """The on-chain PreCommitEpoch of sector ``number``; None without a precommit."""
        ...

    def precommit_deposit(self, sector: PreCommit) -> int:
        """The precommit deposit of ``sector`` in attoFIL."""
        ...

    def initial_pledge(self, sector_size: int, duration: int) -> int:
        """The initial pledge of a sector of ``sector_size`` bytes kept ``duration`` epochs."""
        ...
