"""A chain behind a Filecoin node's JSON-RPC API (lotus ``/rpc/v1``).

Calls used: ``Filecoin.ChainHead``, ``Filecoin.StateGetRandomnessFromTickets`` (tickets),
``Filecoin.StateGetRandomnessFromBeacon`` (seeds), ``Filecoin.StateMinerInfo`` (the sender:
the first control address, else the worker), ``Filecoin.MpoolPushMessage`` (the node signs
and sends; ``MsgUuid`` makes a repeated push return the first message),
``Filecoin.StateSearchMsg`` (landing, replacements allowed),
``Filecoin.StateSectorPreCommitInfo`` (PreCommitEpoch), ``Filecoin.StateMinerAllocated``
(sector numbers taken),
``Filecoin.StateMinerPreCommitDepositForPower`` and
``Filecoin.StateMinerInitialPledgeForSector``, ``Filecoin.WalletBalance`` and
``Filecoin.StateMinerAvailableBalance`` (funds). Parameters are the CBOR sealpool's
:mod:`sealpool.chain.messages` builds.

Errors name the method and the node's host only: the URL may carry a token, and these
messages end up in sectors' histories.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

from sealpool.chain.base import RandomnessPurpose, Receipt
from sealpool.chain.messages import PreCommit
from sealpool.errors import ChainError, ConfigError
from sealpool.secrets import redact_url, url_host

# Domain separation tags of Filecoin randomness.
SEAL_RANDOMNESS = 5
INTERACTIVE_SEAL_CHALLENGE_SEED = 6


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
        self._sender: str | None = None

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

    def sender(self) -> str:
        """The address messages go from: the miner's first control address, else its worker."""
        if self._sender is None:
            info = self.call("Filecoin.StateMinerInfo", self.miner, [])
            self._sender = (info.get("ControlAddresses") or [info["Worker"]])[0]
        return self._sender

    def push(self, method: int, params: bytes, value: int, uuid: str, max_fee: int = 0) -> str:
        message = {
            "Version": 0, "To": self.miner, "From": self.sender(), "Nonce": 0,
            "Value": str(value), "GasLimit": 0, "GasFeeCap": "0", "GasPremium": "0",
            "Method": method, "Params": base64.b64encode(params).decode(),
        }  # fmt: skip
        spec = {"MaxFee": str(max_fee), "MsgUuid": uuid, "MaximizeFeeCap": False}
        return self.call("Filecoin.MpoolPushMessage", message, spec)["CID"]["/"]

    def search(self, cid: str) -> Receipt | None:
        found = self.call("Filecoin.StateSearchMsg", [], {"/": cid}, -1, True)
        if not found:
            return None
        receipt = found["Receipt"]
        return Receipt(
            cid=found["Message"]["/"],
            exit_code=int(receipt["ExitCode"]),
            height=int(found["Height"]),
            returned=base64.b64decode(receipt.get("Return") or ""),
        )

    def precommit_epoch(self, number: int) -> int | None:
        found = self.call("Filecoin.StateSectorPreCommitInfo", self.miner, number, [])
        return int(found["PreCommitEpoch"]) if found else None

    def allocated(self) -> list[int]:
        return [int(run) for run in self.call("Filecoin.StateMinerAllocated", self.miner, [])]

    def available_balance(self) -> int:
        wallet = int(self.call("Filecoin.WalletBalance", self.sender()))
        return wallet + int(self.call("Filecoin.StateMinerAvailableBalance", self.miner, []))

    def precommit_deposit(self, sector: PreCommit) -> int:
        info = {
            "SealProof": sector.seal_proof, "SectorNumber": sector.number,
            "SealedCID": {"/": str(sector.comm_r)}, "SealRandEpoch": sector.ticket_epoch,
            "DealIDs": list(sector.deal_ids), "Expiration": sector.expiration,
            "UnsealedCid": {"/": str(sector.comm_d)} if sector.comm_d else None,
        }  # fmt: skip
        return int(self.call("Filecoin.StateMinerPreCommitDepositForPower", self.miner, info, []))

    def initial_pledge(self, sector_size: int, duration: int) -> int:
        method = "Filecoin.StateMinerInitialPledgeForSector"
        return int(self.call(method, duration, sector_size, 0, []))
