"""Chain adapters: the sim chain on Redis, the RPC chain against a local JSON-RPC fake."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis

from sealpool.chain import Message, RpcChain, SimChain
from sealpool.chain.rpc import cbor_bytes, id_address_bytes
from sealpool.errors import ChainError, ConfigError


def test_sim_chain_clock_randomness_and_messages(client: redis.Redis, prefix: str) -> None:
    chain = SimChain(client, prefix, time_scale=3000, start_epoch=500)
    other = SimChain(client, prefix, time_scale=3000, start_epoch=500)  # another process
    first = chain.head()
    time.sleep(0.05)  # 5 epochs of 10 ms
    assert chain.head() >= first + 4 and abs(other.head() - chain.head()) <= 1
    assert chain.randomness("ticket", 7, "f01000") == other.randomness("ticket", 7, "f01000")
    assert chain.randomness("ticket", 7, "f01000") != chain.randomness("seed", 7, "f01000")
    sent = chain.submit("precommit", "f01000-1", "ab")
    assert chain.submit("precommit", "f01000-1", "ab") == sent  # recorded once
    assert chain.landed(sent) is None or chain.landed(sent) > first
    time.sleep(0.03)
    assert chain.landed(sent) == chain.submitted("precommit")["f01000-1"] + 1
    assert chain.landed(Message("x", "f01000-2", "precommit")) is None


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
        elif method == "Filecoin.MpoolPushMessage":
            message, spec = params
            assert message["Method"] in (6, 7) and spec == {"MaxFee": "0"}
            result = {
                "Message": message,
                "Signature": {"Type": 1, "Data": ""},
                "CID": {"/": f"bafy-msg-{message['Method']}"},
            }
        elif method == "Filecoin.StateSearchMsg":
            _tsk, cid, _limit, _allow_replaced = params
            if cid["/"] == "bafy-msg-6":
                result = {"Message": cid, "Receipt": {"ExitCode": 0}, "Height": 4240}
            elif cid["/"] == "bafy-msg-7":
                result = {"Message": cid, "Receipt": {"ExitCode": 16}, "Height": 4241}
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
    precommit = chain.submit("precommit", "f01000-1", "8201")
    push = FakeLotus.calls[-1]["params"][0]
    assert push["To"] == "f01000" and base64.b64decode(push["Params"]) == b"\x82\x01"
    assert chain.landed(precommit) == 4240
    provecommit = chain.submit("provecommit", "f01000-1", "")
    with pytest.raises(ChainError, match="exit code 16"):
        chain.landed(provecommit)
    assert chain.landed(Message("bafy-unknown", "f01000-1", "precommit")) is None


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
