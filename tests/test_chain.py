"""Chain adapters: the sim chain on Redis, the RPC chain against a local JSON-RPC fake."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cbor2
import pytest
import redis
from chain_helpers import landed, precommit_of

from sealpool.chain import Receipt, RpcChain, SimChain
from sealpool.chain.commitments import SEALED, UNSEALED, commitment_cid
from sealpool.chain.messages import (
    PRE_COMMIT_SECTOR_BATCH2,
    Activation,
    ParamsError,
    PreCommit,
    decode_precommits,
    decode_prove_commits,
    encode_precommits,
    encode_prove_commits,
)
from sealpool.chain.policy import seed_epoch
from sealpool.chain.rpc import cbor_bytes, id_address_bytes
from sealpool.chain.sim import DEPOSIT, PLEDGE, sim_aggregate, sim_proof
from sealpool.errors import ChainError, ConfigError

from helpers import wait_until


def test_sim_chain_clock_and_randomness(client: redis.Redis, prefix: str) -> None:
    chain = SimChain(client, prefix, time_scale=3000, start_epoch=500)
    other = SimChain(client, prefix, time_scale=3000, start_epoch=500)  # another process
    first = chain.head()
    wait_until(lambda: chain.head() >= first + 4, 30)
    before, seen, after = chain.head(), other.head(), chain.head()
    assert before <= seen <= after  # one clock: no timing slack needed
    assert chain.randomness("ticket", 7, "f01000") == other.randomness("ticket", 7, "f01000")
    assert chain.randomness("ticket", 7, "f01000") != chain.randomness("seed", 7, "f01000")
    with pytest.raises(ChainError, match="beyond the head"):
        chain.randomness("seed", chain.head() + 100, "f01000")


def test_sim_chain_head_is_on_the_redis_server_clock(
    client: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = SimChain(client, prefix, time_scale=1, start_epoch=500)  # epochs of 30 s
    monkeypatch.setattr(time, "time", lambda: 0.0)  # another machine, its clock at 1970
    skewed = SimChain(client, prefix, time_scale=1, start_epoch=500)
    assert skewed.head() == chain.head() == 500


def test_messages_encode_the_actor_layouts() -> None:
    comm_r = commitment_cid(SEALED, bytes(32))
    assert str(comm_r).startswith("bagboea4b5abc")  # as lotus prints CommR
    assert str(commitment_cid(UNSEALED, bytes(32))).startswith("baga6ea4sea")
    params = encode_precommits([PreCommit(8, 7, comm_r, 100, 600_000)])
    cid_bytes = b"\x01\x82\xe2\x03\x81\xe8\x02\x20" + bytes(32)
    # [[ [8, 7, tag42(0x00 + CID), 100, [], 600000, null] ]]
    expected = b"\x81\x81\x87\x08\x07\xd8\x2a\x58\x29\x00" + cid_bytes
    assert params == expected + b"\x18\x64\x80\x1a\x00\x09\x27\xc0\xf6"
    assert decode_precommits(params)[0].comm_r == comm_r
    proof = encode_prove_commits([Activation(7, b"p" * 1920)])
    assert proof[:3] == b"\x86\x81\x82" and proof[-4:] == b"\x40\xf6\xf5\xf4"
    assert decode_prove_commits(proof) == ([Activation(7, b"p" * 1920)], None)
    for bad in (b"\x81\x80\x00", cbor2.dumps([[[8, 7, bytes(41), 100, [], 1, None]]]), b"\xff"):
        with pytest.raises(ParamsError):
            decode_precommits(bad)


def test_sim_chain_enforces_the_actor_rules(client: redis.Redis, prefix: str) -> None:
    chain = SimChain(client, prefix, time_scale=3000, start_epoch=10_000)
    head = chain.head()
    first = precommit_of(chain, 1)
    cid = chain.push(PRE_COMMIT_SECTOR_BATCH2, encode_precommits([first]), DEPOSIT, "u1")
    assert chain.push(PRE_COMMIT_SECTOR_BATCH2, b"", 0, "u1") == cid  # same MsgUuid: no send
    assert landed(chain, cid).exit_code == 0
    assert head < chain.precommit_epoch(1) < landed(chain, cid).height

    def one(number: int, **changes: int) -> bytes:
        return encode_precommits([precommit_of(chain, number, **changes)])

    refused = {
        "again": (28, one(1), DEPOSIT, 16),
        "twice": (28, encode_precommits([precommit_of(chain, 2), precommit_of(chain, 2)]), 0, 16),
        "old ticket": (28, one(3, ticket_epoch=head - 4000), DEPOSIT, 16),
        "future ticket": (28, one(4, ticket_epoch=head + 50), DEPOSIT, 16),
        "short expiry": (28, one(5, expiration=head + 1000), DEPOSIT, 16),
        "proof type": (28, one(6, seal_proof=3), DEPOSIT, 16),
        "no deposit": (28, one(7), 0, 19),
        "hex params": (28, encode_precommits([first]).hex().encode(), DEPOSIT, 21),
        "removed method": (6, one(8), DEPOSIT, 22),
        "too early": (34, encode_prove_commits([Activation(1, b"p" * 1920)]), 0, 18),
        "not precommitted": (34, encode_prove_commits([Activation(9, b"p" * 1920)]), 0, 17),
    }  # fmt: skip
    for name, (method, params, value, exit_code) in refused.items():
        receipt = landed(chain, chain.push(method, params, value, name))
        assert receipt.exit_code == exit_code, name
    assert chain.precommit_epoch(2) is None and chain.precommit_epoch(7) is None
    chain.fund(DEPOSIT - 1)
    with pytest.raises(ChainError, match="not enough funds"):
        chain.push(28, encode_precommits([precommit_of(chain, 10)]), DEPOSIT, "poor")


def test_sim_chain_checks_the_seed_of_a_proof(client: redis.Redis, prefix: str) -> None:
    chain = SimChain(client, prefix, time_scale=30_000, start_epoch=10_000)
    sectors = [precommit_of(chain, n) for n in (1, 2, 3, 4)]
    cid = chain.push(28, encode_precommits(sectors), 4 * DEPOSIT, "batch")
    assert landed(chain, cid).exit_code == 0
    epoch = chain.precommit_epoch(1)
    wait_until(lambda: chain.head() > seed_epoch(epoch) + 6, 20)

    def proof(number: int, seed_at: int) -> bytes:
        ticket = chain.randomness("ticket", sectors[number - 1].ticket_epoch, "f01000")
        seed = chain.randomness("seed", seed_at, "f01000")
        comm_r = sectors[number - 1].comm_r.encode("base32")
        return sim_proof("f01000", number, comm_r, ticket, seed)

    wrong = encode_prove_commits([Activation(1, proof(1, epoch + 1 + 150))])  # seed off by one
    assert landed(chain, chain.push(34, wrong, PLEDGE, "wrong")).exit_code == 16
    proofs = [proof(n, seed_epoch(epoch)) for n in (1, 2, 3, 4)]
    aggregate = encode_prove_commits(
        [Activation(n, b"") for n in (1, 2, 3, 4)], aggregate=sim_aggregate(proofs)
    )
    assert landed(chain, chain.push(34, aggregate, 4 * PLEDGE, "agg")).exit_code == 0
    assert set(chain.proven()) == {1, 2, 3, 4} and chain.messages_sent() == {28: 1, 34: 2}


def test_id_address_encoding() -> None:
    assert id_address_bytes("f01000") == bytes([0x00, 0xE8, 0x07])
    assert id_address_bytes("t00") == bytes([0x00, 0x00])
    assert cbor_bytes(b"\x00\xe8\x07") == b"\x43\x00\xe8\x07"


class FakeLotus(BaseHTTPRequestHandler):
    """Answers the JSON-RPC calls sealpool makes, in lotus's shapes."""

    calls: list[dict] = []
    height = 4242

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeLotus.calls.append({**request, "auth": self.headers.get("Authorization")})
        method, params = request["method"], request["params"]
        result: object = None
        error = None
        if method == "Filecoin.ChainHead":
            result = {"Height": self.height, "Cids": [{"/": "bafy-head"}], "Blocks": []}
        elif method in (
            "Filecoin.StateGetRandomnessFromTickets",
            "Filecoin.StateGetRandomnessFromBeacon",
        ):
            tag, epoch, entropy, tsk = params
            assert isinstance(tag, int) and isinstance(epoch, int) and tsk == []
            base64.b64decode(entropy)
            result = base64.b64encode(bytes([tag, epoch % 256]) * 16).decode()
        elif method == "Filecoin.StateMinerInfo":
            result = {"Owner": "f0100", "Worker": "f0101", "ControlAddresses": ["f0102"]}
        elif method == "Filecoin.MpoolPushMessage":
            message, spec = params
            assert message["Method"] in (28, 34) and message["From"] == "f0102"
            assert spec["MaxFee"] == "0" and spec["MsgUuid"]
            result = {
                "Message": message,
                "Signature": {"Type": 1, "Data": ""},
                "CID": {"/": f"bafy-msg-{message['Method']}"},
            }
        elif method == "Filecoin.StateSearchMsg":
            tsk, cid, limit, allow_replaced = params
            assert tsk == [] and limit == -1 and allow_replaced is True
            if cid["/"] == "bafy-msg-28":  # replaced by a fee-bumped copy
                result = {
                    "Message": {"/": "bafy-bumped"},
                    "Receipt": {"ExitCode": 0},
                    "Height": 4240,
                }
            elif cid["/"] == "bafy-msg-34":
                result = {"Message": cid, "Receipt": {"ExitCode": 16}, "Height": 4241}
        elif method == "Filecoin.StateSectorPreCommitInfo":
            result = {"PreCommitEpoch": 4239, "PreCommitDeposit": "7"} if params[1] == 1 else None
        elif method == "Filecoin.StateMinerPreCommitDepositForPower":
            assert params[1]["SealedCID"]["/"].startswith("bagboea4b5abc")
            result = "1000"
        elif method == "Filecoin.StateMinerInitialPledgeForSector":
            assert params[1:] == [34359738368, 0, []]
            result = "5000"
        else:
            error = {"code": -32601, "message": f"method '{method}' not found"}
        body = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": request["id"],
                **({"error": error} if error else {"result": result}),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def lotus() -> Iterator[str]:
    FakeLotus.calls = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeLotus)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/rpc/v1"
    httpd.shutdown()
    httpd.server_close()


def test_rpc_chain_speaks_lotus_json_rpc(lotus: str) -> None:
    chain = RpcChain(lotus, "secret-jwt", "f01000")
    assert chain.head() == 4242
    ticket = chain.randomness("ticket", 3342, "f01000")
    assert bytes.fromhex(ticket) == bytes([5, 3342 % 256]) * 16
    seed = chain.randomness("seed", 4000, "f01000")
    assert bytes.fromhex(seed)[0] == 6
    tickets_call = FakeLotus.calls[1]
    assert tickets_call["method"] == "Filecoin.StateGetRandomnessFromTickets"
    assert base64.b64decode(tickets_call["params"][2]) == b"\x43\x00\xe8\x07"
    assert tickets_call["auth"] == "Bearer secret-jwt"
    sector = PreCommit(8, 1, commitment_cid(SEALED, bytes(32)), 3342, 600_000)
    assert chain.precommit_deposit(sector) == 1000 and chain.initial_pledge(32 << 30, 9) == 5000
    precommit = chain.push(28, encode_precommits([sector]), 1000, "uuid-1")
    push = FakeLotus.calls[-1]["params"][0]
    assert push["To"] == "f01000" and push["Value"] == "1000"
    assert base64.b64decode(push["Params"]) == encode_precommits([sector])
    assert chain.search(precommit) == Receipt("bafy-bumped", 0, 4240)
    assert chain.precommit_epoch(1) == 4239 and chain.precommit_epoch(2) is None
    provecommit = chain.push(34, encode_prove_commits([Activation(1, b"p")]), 0, "uuid-2")
    assert chain.search(provecommit).exit_code == 16
    assert chain.search("bafy-unknown") is None


def test_rpc_chain_errors_are_one_line_naming_method_and_host_only(lotus: str) -> None:
    host = lotus.split("/")[2]
    with pytest.raises(ChainError) as refused:
        RpcChain(f"{lotus}?token=url-secret", "jwt-secret", "f01000").call("Filecoin.Nope")
    assert str(refused.value) == f"Filecoin.Nope at {host}: method 'Filecoin.Nope' not found"
    with pytest.raises(ChainError) as unreachable:
        RpcChain("http://127.0.0.1:1/rpc/v1?token=url-secret", None, "f01000", 2).head()
    assert str(unreachable.value).startswith("Filecoin.ChainHead at 127.0.0.1:1: ")
    errors = [refused, unreachable]
    for url in ("lotus:1234/rpc/v1?token=url-secret", "http://node:pw-secret@lotus:1234/rpc/v1"):
        with pytest.raises(ConfigError, match="must be an http:// or https:// URL") as bad:
            RpcChain(url, None, "f01000")
        errors.append(bad)
    for error in errors:
        assert "secret" not in str(error.value) and "\n" not in str(error.value)
