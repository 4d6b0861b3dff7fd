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

    def push(self, method: int, params: bytes, value: int, uuid: str, max_fee: int = 0) -> str:
        """Send a message to the miner actor from its worker or a control address; the CID.

        A ``uuid`` sent before returns that message again and sends nothing (MsgUuid).
        ``max_fee``: the most attoFIL of gas it may burn (0: the node's default).
        """
        ...

    def search(self, cid: str) -> Receipt | None:
        """The receipt of the message ``cid`` (or of its replacement); None while pending."""
        ...

    def precommit_epoch(self, number: int) -> int | None:
        """The on-chain PreCommitEpoch of sector ``number``; None without a precommit."""
        ...

    def allocated(self) -> list[int]:
        """The miner's allocated sector numbers, as bitfield run lengths (first run unset;
        see :mod:`sealpool.chain.bitfield`): no new sector may take one of them."""
        ...

    def precommit_deposit(self, sector: PreCommit) -> int:
        """The precommit deposit of ``sector`` in attoFIL."""
        ...

    def available_balance(self) -> int:
        """attoFIL a message's value can draw on: the sender's wallet balance plus the
        miner actor's available balance."""
        ...

    def initial_pledge(self, sector_size: int, duration: int) -> int:
        """The initial pledge of a sector of ``sector_size`` bytes kept ``duration`` epochs."""
        ...
