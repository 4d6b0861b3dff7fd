"""What sealpool needs from a Filecoin chain, whatever provides it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

MessageKind = Literal["precommit", "provecommit"]
RandomnessPurpose = Literal["ticket", "seed"]


@dataclass(frozen=True)
class Message:
    """A message sent to the chain for a sector."""

    cid: str
    sector_id: str
    kind: MessageKind


class Chain(Protocol):
    """A source of epochs and randomness that carries sectors' messages."""

    def head(self) -> int:
        """The current chain height (epoch)."""
        ...

    def randomness(self, purpose: RandomnessPurpose, epoch: int, miner: str) -> str:
        """Hex of the 32 bytes of seal randomness (ticket) or challenge randomness (seed)."""
        ...

    def submit(self, kind: MessageKind, sector_id: str, params: str) -> Message:
        """Send a precommit or provecommit; ``params`` is the hex of its CBOR parameters.

        Callers record the returned message in the sector before waiting for it, so a
        retried phase waits for the message already sent instead of sending another.
        """
        ...

    def landed(self, message: Message) -> int | None:
        """The epoch where the message was executed successfully, None while pending.

        Raises ChainError when it was executed and failed.
        """
        ...
