"""A recorded lotus JSON-RPC conversation, replayed: RpcChain must send exactly the recorded
requests (method, params with sealpool's CBOR, token) and read lotus' documented replies."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cbor2
import pytest

from sealpool.chain import RpcChain
from sealpool.chain.commitments import SEALED, parse_commitment
from sealpool.chain.messages import (
    PRE_COMMIT_SECTOR_BATCH2,
    PROVE_COMMIT_SECTORS3,
    Activation,
    PreCommit,
    encode_precommits,
    encode_prove_commits,
)
from sealpool.chain.policy import expiration, seed_epoch
from sealpool.errors import ChainError

RECORDING = json.loads((Path(__file__).parent / "fixtures/lotus_conversation.json").read_text())
SECTOR = RECORDING["sector"]


class RecordedNode(ThreadingHTTPServer):
    """A lotus node that answers each request with the next recorded reply, if the request
    is the recorded one (body and ``Authorization``); else a JSON-RPC error, noted."""

    def __init__(self, exchanges: list[dict[str, Any]], token: str) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.exchanges, self.token = list(exchanges), token
        self.differences: list[str] = []
        self.lock = threading.Lock()

    def answer(self, body: dict[str, Any], authorization: str | None) -> dict[str, Any]:
        with self.lock:
            expected = self.exchanges[0]["request"] if self.exchanges else None
            if body == expected and authorization == f"Bearer {self.token}":
                return self.exchanges.pop(0)["response"]
            got = f"{authorization} {json.dumps(body)}"[:2000]
            self.differences.append(f"expected {json.dumps(expected)[:2000]}, got {got}")
            return {"jsonrpc": "2.0", "id": body.get("id"), "error": {"code": -32600,
                    "message": "request differs from the recording"}}  # fmt: skip


class Handler(BaseHTTPRequestHandler):
    server: RecordedNode

    def do_POST(self) -> None:
        assert self.path == "/rpc/v1"
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        reply = json.dumps(self.server.answer(body, self.headers.get("Authorization"))).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        """Quiet: the test reports what differed."""


@pytest.fixture
def node() -> Iterator[RecordedNode]:
    server = RecordedNode(RECORDING["exchanges"], RECORDING["token"])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(30)


def chain_of(server: RecordedNode, token: str = RECORDING["token"]) -> RpcChain:
    host, port = server.server_address[:2]
    return RpcChain(f"http://{host}:{port}/rpc/v1", token, RECORDING["miner"])


def test_one_sector_through_precommit_and_prove_commit(node: RecordedNode) -> None:
    """The calls sealpool's phases make for one CC sector, in their order."""
    chain, miner = chain_of(node), RECORDING["miner"]
    head = chain.head()
    assert chain.allocated() == [0, 7]  # 0..6 taken: the sector gets 7
    ticket_epoch = head - 900
    assert chain.randomness("ticket", ticket_epoch, miner) == "11" * 32
    precommit = PreCommit(
        seal_proof=8, number=SECTOR["number"],
        comm_r=parse_commitment(SEALED, SECTOR["comm_r"]), ticket_epoch=ticket_epoch,
        expiration=expiration(head, ticket_epoch),
    )  # fmt: skip
    deposit = chain.precommit_deposit(precommit)
    assert chain.available_balance() >= deposit
    params = encode_precommits([precommit])
    (uuid1, uuid2), (fee1, fee2) = SECTOR["msg_uuids"], SECTOR["max_fees"]
    with pytest.raises(ChainError, match=r"MpoolPushMessage at 127\.0\.0\.1:\d+: .*not enough"):
        chain.push(PRE_COMMIT_SECTOR_BATCH2, params, deposit, uuid1, max_fee=fee1)
    pushed = chain.push(PRE_COMMIT_SECTOR_BATCH2, params, deposit, uuid1, max_fee=fee1)
    assert chain.search(pushed) is None  # not landed yet
    landed = chain.search(pushed)
    assert landed is not None and landed.exit_code == 0
    assert landed.cid != pushed  # replaced by a fee bump: the replacement is what executed
    assert chain.search(landed.cid) == landed  # followed by its own CID from then on
    precommit_epoch = chain.precommit_epoch(SECTOR["number"])
    assert precommit_epoch is not None and precommit_epoch < landed.height
    head = chain.head()
    assert chain.randomness("seed", seed_epoch(precommit_epoch), miner) == "22" * 32
    pledge = chain.initial_pledge(32 << 30, precommit.expiration - head)
    proof = bytes.fromhex(SECTOR["proof"])
    activation = encode_prove_commits([Activation(SECTOR["number"], proof)])
    value = max(0, pledge - deposit)
    proved = chain.push(PROVE_COMMIT_SECTORS3, activation, value, uuid2, max_fee=fee2)
    receipt = chain.search(proved)
    assert receipt is not None and receipt.cid == proved and receipt.exit_code == 0
    assert cbor2.loads(receipt.returned) == [1, []]  # BatchReturn: one success
    assert node.differences == [] and node.exchanges == []


def test_a_request_that_differs_from_the_recording_is_refused(node: RecordedNode) -> None:
    with pytest.raises(ChainError, match=r"ChainHead at 127\.0\.0\.1:\d+: request differs"):
        chain_of(node, token="another-token").head()
    assert len(node.differences) == 1 and "Bearer another-token" in node.differences[0]


def test_recorded_params_are_the_actor_layouts() -> None:
    """The recording's CBOR, read without sealpool's decoders (CHAIN.md §2)."""
    pushes = [
        exchange["request"]["params"][0]
        for exchange in RECORDING["exchanges"]
        if exchange["request"]["method"] == "Filecoin.MpoolPushMessage"
    ]
    precommit, prove = (base64.b64decode(message["Params"]) for message in (pushes[0], pushes[2]))
    assert precommit[:3] == bytes([0x81, 0x81, 0x87])  # [[SectorPreCommitInfo of 7 fields]]
    ((info,),) = cbor2.loads(precommit)
    comm_r = parse_commitment(SEALED, SECTOR["comm_r"])
    assert info[:3] == [8, 7, cbor2.CBORTag(42, b"\x00" + bytes(comm_r))]
    assert info[4] == [] and info[6] is None  # no deal ids; CC: no UnsealedCid
    assert prove[:1] == bytes([0x86])
    assert cbor2.loads(prove) == [
        [[7, []]],
        [bytes.fromhex(SECTOR["proof"])],
        b"",
        None,
        True,
        False,
    ]
    assert all(message["From"] == "f01002" and message["To"] == "f01000" for message in pushes)
