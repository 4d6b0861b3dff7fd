"""Recorded lotus JSON-RPC conversations, replayed: RpcChain must send exactly the recorded
requests (method, params with sealpool's CBOR, token) and read lotus' documented replies.
One takes a sector through precommit and prove-commit; one sends a batch of precommits."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cbor2
import pytest
import redis

from sealpool.chain import RpcChain
from sealpool.chain.batching import BatchBook, Member, precommit_entry
from sealpool.chain.commitments import SEALED, commitment_cid, parse_commitment
from sealpool.chain.messages import (
    PRE_COMMIT_SECTOR_BATCH2,
    PROVE_COMMIT_SECTORS3,
    Activation,
    PreCommit,
    decode_precommits,
    encode_precommits,
    encode_prove_commits,
)
from sealpool.chain.policy import expiration, seed_epoch
from sealpool.config import Settings
from sealpool.errors import ChainError

from helpers import wait_until

FIXTURES = Path(__file__).parent / "fixtures"
RECORDING = json.loads((FIXTURES / "lotus_conversation.json").read_text())
SECTOR = RECORDING["sector"]
BATCH = json.loads((FIXTURES / "lotus_batch_conversation.json").read_text())


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


@contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[None]:
    """``server`` answering in a thread of its own, until the block ends."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(30)


@pytest.fixture
def node() -> Iterator[RecordedNode]:
    server = RecordedNode(RECORDING["exchanges"], RECORDING["token"])
    with serving(server):
        yield server


@pytest.fixture
def batch_node() -> Iterator[RecordedNode]:
    server = RecordedNode(BATCH["exchanges"], BATCH["token"])
    with serving(server):
        yield server


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


def send_batch(
    chain: RpcChain, client: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> BatchBook:
    """Enroll the recording's sectors in one precommit batch and pump it until it landed
    (its MsgUuid the recorded one)."""
    msg_uuid = uuid.UUID(BATCH["msg_uuid"])
    monkeypatch.setattr("sealpool.chain.batching.uuid.uuid4", lambda: msg_uuid)
    settings = Settings(precommit_batch_wait_s=0, message_confidence=2)
    book = BatchBook(client, prefix, settings)
    ticket_epoch, head = BATCH["ticket_epoch"], BATCH["head"]
    for number, deposit in zip(BATCH["numbers"], BATCH["deposits"], strict=True):
        comm_r = commitment_cid(SEALED, bytes([number]) * 32)
        precommit = PreCommit(8, number, comm_r, ticket_epoch, expiration(head, ticket_epoch))
        entry = precommit_entry(precommit)
        book.enroll(Member(f"f01000-{number}", "precommit", "f01000", entry, deposit, 0), head)

    def landed() -> bool:
        book.pump(lambda _miner: chain, None)
        return all(book.member(f"f01000-{n}").outcome for n in BATCH["numbers"])  # type: ignore[union-attr]

    wait_until(landed, 30)
    return book


def test_a_batch_of_three_precommits_is_one_push_of_their_summed_deposit(
    batch_node: RecordedNode, client: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    book = send_batch(chain_of(batch_node, BATCH["token"]), client, prefix, monkeypatch)
    assert batch_node.differences == [] and batch_node.exchanges == []
    requests = [exchange["request"] for exchange in BATCH["exchanges"]]
    pushes = [r["params"] for r in requests if r["method"] == "Filecoin.MpoolPushMessage"]
    assert len(pushes) == 1
    ((message, spec),) = pushes
    assert message["Method"] == PRE_COMMIT_SECTOR_BATCH2 and message["From"] == "f01002"
    assert message["Value"] == str(sum(BATCH["deposits"]))
    assert spec["MsgUuid"] == BATCH["msg_uuid"]
    precommits = decode_precommits(base64.b64decode(message["Params"]))
    assert [p.number for p in precommits] == BATCH["numbers"]
    members = [book.member(f"f01000-{n}") for n in BATCH["numbers"]]
    assert {(m.outcome, m.cid) for m in members if m} == {("landed", BATCH["landed_cid"])}
