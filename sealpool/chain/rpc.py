"""A chain behind a Filecoin node's JSON-RPC API (lotus ``/rpc/v1``).

Calls used: ``Filecoin.ChainHead``, ``Filecoin.StateGetRandomnessFromTickets`` (tickets),
``Filecoin.StateGetRandomnessFromBeacon`` (seeds), ``Filecoin.MpoolPushMessage`` (the node
signs and sends) and ``Filecoin.StateSearchMsg`` (landing). Message parameters are the CBOR
bytes made by the proof processor, passed through as given.

Errors name the method and the node's host only: the URL may carry a token, and these
messages end up in sectors' histories.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

from sealpool.chain.base import Message, MessageKind, RandomnessPurpose
from sealpool.errors import ChainError, ConfigError
from sealpool.secrets import redact_url, url_host

# Domain separation tags of Filecoin randomness.
SEAL_RANDOMNESS = 5
INTERACTIVE_SEAL_CHALLENGE_SEED = 6
# Miner actor methods: PreCommitSector and ProveCommitSector.
METHODS: dict[str, int] = {"precommit": 6, "provecommit": 7}


def id_address_bytes(miner: str) -> bytes:
    """The address bytes of an ID address such as ``f01000``: protocol 0, then a uvarint."""
    number = int(miner[2:])
    encoded = bytearray([0])
    while True:
        byte = number & 0x7F
        number >>= 7
        encoded.append(byte | (0x80 if number else 0))
        if not number:
            return bytes(encoded)


def cbor_bytes(payload: bytes) -> bytes:
    """``payload`` as a CBOR byte string (major type 2), the entropy randomness takes."""
    size = len(payload)
    if size < 24:
        return bytes([0x40 | size]) + payload
    if size < 256:
        return bytes([0x58, size]) + payload
    return bytes([0x59]) + size.to_bytes(2, "big") + payload


class RpcChain:
    """Epochs, randomness and messages from a Filecoin node."""

    def __init__(self, url: str, token: str | None, miner: str, timeout_s: float = 30.0) -> None:
        self.host = url_host(url)
        netloc = url.partition("://")[2].split("/", 1)[0]
        if not url.startswith(("http://", "https://")) or not self.host or self.host != netloc:
            raise ConfigError(
                f"chain_rpc_url {redact_url(url)!r} must be an http:// or https:// URL without "
                "user info (the node's token goes in chain_rpc_token)"
            )
        self.url = url
        self.token = token
        self.miner = miner
        self.timeout_s = timeout_s
        self._next_id = 0

    def call(self, method: str, *params: Any) -> Any:
        """One JSON-RPC 2.0 call; ChainError names the method on any failure."""
        self._next_id += 1
        body = json.dumps(
            {"jsonrpc": "2.0", "method": method, "params": list(params), "id": self._next_id}
        ).encode()
        request = urllib.request.Request(
            self.url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                reply = json.loads(response.read())
        except (OSError, ValueError) as exc:
            raise ChainError(f"{method} at {self.host}: {exc}") from None
        if reply.get("error"):
            error = reply["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise ChainError(f"{method} at {self.host}: {message}")
        return reply.get("result")

    def head(self) -> int:
        return int(self.call("Filecoin.ChainHead")["Height"])

    def randomness(self, purpose: RandomnessPurpose, epoch: int, miner: str) -> str:
        entropy = base64.b64encode(cbor_bytes(id_address_bytes(miner))).decode()
        if purpose == "ticket":
            method, tag = "Filecoin.StateGetRandomnessFromTickets", SEAL_RANDOMNESS
        else:
            method, tag = "Filecoin.StateGetRandomnessFromBeacon", INTERACTIVE_SEAL_CHALLENGE_SEED
        value = self.call(method, tag, epoch, entropy, [])
        return base64.b64decode(value).hex()

    def submit(self, kind: MessageKind, sector_id: str, params: str) -> Message:
        message = {
            "Version": 0, "To": self.miner, "From": self.miner, "Nonce": 0, "Value": "0",
            "GasLimit": 0, "GasFeeCap": "0", "GasPremium": "0", "Method": METHODS[kind],
            "Params": base64.b64encode(bytes.fromhex(params)).decode(),
        }  # fmt: skip
        signed = self.call("Filecoin.MpoolPushMessage", message, {"MaxFee": "0"})
        return Message(cid=signed["CID"]["/"], sector_id=sector_id, kind=kind)

    def landed(self, message: Message) -> int | None:
        found = self.call("Filecoin.StateSearchMsg", [], {"/": message.cid}, -1, True)
        if not found:
            return None
        exit_code = found["Receipt"]["ExitCode"]
        if exit_code != 0:
            raise ChainError(
                f"{message.kind} of {message.sector_id} failed on chain: exit code {exit_code}"
            )
        return int(found["Height"])
