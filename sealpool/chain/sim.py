"""A strict simulated chain: epochs from a shared clock, the miner actor's rules on messages.

The genesis time is set once in Redis (SET NX) from the server's clock, which every head is
read from too, so every process of a farm sees the same head; farm time runs ``time_scale``
times faster than wall time, an epoch is 30 farm seconds.
Each miner's actor state (precommits, sectors, allocated numbers, balance, messages) has
keys of its own. A pushed message executes at the next epoch E (under a lock, so two
processes never race on the actor's state) and its receipt shows at E + 1, as lotus reports it.

The actor's checks, with its exit codes (go-state-types exitcode): only methods 28 and 34
(22 otherwise); parameters decoded, never trusted (21); the miner's seal proof, the ticket
window ``E - 3780 <= SealRandEpoch < E``, the expiration window, and sector numbers neither
repeated nor allocated before (16); the deposit against the miner's balance plus the value
sent (19); a prove-commit only after PreCommitEpoch + 150 (18), of a precommitted sector
(17), before its prove-commit deadline, with a proof of its ticket and seed (16); aggregates
of 4..819 sectors. The sender's wallet pays ``value`` (the node refuses a push it can't pay).
"""

from __future__ import annotations

import hashlib
import json
import uuid as uuids

import cbor2
import redis

from sealpool.chain import policy
from sealpool.chain.base import RandomnessPurpose, Receipt
from sealpool.chain.bitfield import runs_of
from sealpool.chain.messages import (
    PRE_COMMIT_SECTOR_BATCH2,
    PROVE_COMMIT_SECTORS3,
    Activation,
    ParamsError,
    PreCommit,
    decode_precommits,
    decode_prove_commits,
)
from sealpool.config import EPOCH_SECONDS
from sealpool.errors import ChainError

OK, NOT_FOUND, ILLEGAL_ARGUMENT, FORBIDDEN, INSUFFICIENT_FUNDS = 0, 17, 16, 18, 19
SERIALIZATION, UNHANDLED_MESSAGE = 21, 22
MAX_MESSAGE_BYTES = 64 << 10  # lotus' mpool cap
MIN_AGGREGATE, MAX_AGGREGATE = 4, 819
DEPOSIT = 2 * 10**17  # attoFIL per sector, a calibnet-like order of magnitude
PLEDGE = 5 * 10**18
PROOF_BYTES = 1920


def sim_proof(miner: str, number: int, comm_r: str, ticket: str, seed: str) -> bytes:
    """The seal proof the sim backend makes and the sim chain checks: bound to the sector,
    its CommR, ticket and seed, so a proof made with the wrong seed is refused."""
    block = hashlib.sha256(f"porep:{miner}:{number}:{comm_r}:{ticket}:{seed}".encode()).digest()
    return (block * (PROOF_BYTES // len(block) + 1))[:PROOF_BYTES]


def sim_aggregate(proofs: list[bytes]) -> bytes:
    """The sim's SnarkPack aggregate of ``proofs``, in the activations' order."""
    return hashlib.sha256(b"".join(proofs)).digest() * 6


class Rejected(Exception):
    """The actor aborted the message with ``exit_code``."""

    def __init__(self, exit_code: int, why: str) -> None:
        super().__init__(why)
        self.exit_code = exit_code


class SimChain:
    """The default chain of the demo and the tests."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        time_scale: float = 1.0,
        start_epoch: int = 100_000,
        miner: str = "f01000",
        seal_proof: int = policy.SEAL_PROOF["32GiB"],
    ) -> None:
        self.client = client
        self.key = f"{prefix}:chain:{miner}"  # the miner actor's state; the clock is shared
        self.epoch_wall_s = EPOCH_SECONDS / time_scale
        self.start_epoch = start_epoch
        self.miner = miner
        self.seal_proof = seal_proof
        genesis = f"{prefix}:chain:genesis_ms"
        self.client.set(genesis, self._server_ms(), nx=True)
        self.genesis_ms = int(self.client.get(genesis))

    def head(self) -> int:
        """Epochs since genesis on the Redis server's clock, read with one ``TIME`` per call:
        processes on machines with skewed clocks see the same head, and no cached offset
        can drift across an epoch boundary (30 ms at the demo's time scales)."""
        elapsed_s = (self._server_ms() - self.genesis_ms) / 1000
        return self.start_epoch + int(elapsed_s / self.epoch_wall_s)

    def _server_ms(self) -> int:
        seconds, micros = self.client.time()
        return seconds * 1000 + micros // 1000

    def randomness(self, purpose: RandomnessPurpose, epoch: int, miner: str) -> str:
        if epoch > self.head():
            raise ChainError(f"randomness of epoch {epoch}: beyond the head {self.head()}")
        return hashlib.sha256(f"{purpose}:{epoch}:{miner}".encode()).hexdigest()

    def push(self, method: int, params: bytes, value: int, uuid: str, max_fee: int = 0) -> str:
        if len(params) > MAX_MESSAGE_BYTES:
            raise ChainError(f"message of {len(params)} bytes exceeds {MAX_MESSAGE_BYTES}")
        with self.client.lock(f"{self.key}:lock", timeout=30, blocking_timeout=30):
            if cid := self.client.hget(f"{self.key}:uuids", uuid):
                return cid
            if value > self.wallet():
                raise ChainError(f"not enough funds: sending {value} from {self.wallet()}")
            executed = self.head() + 1
            try:
                returned = self._execute(method, params, value, executed)
                exit_code = OK
            except Rejected as rejected:
                exit_code, returned = rejected.exit_code, b""
            cid = f"bafysim{uuids.uuid4().hex}"
            receipt = {"exit": exit_code, "height": executed + 1, "ret": returned.hex()}
            spent = self._spent() + (value if exit_code == OK else 0)
            pipe = self.client.pipeline()
            pipe.set(f"{self.key}:wallet_spent", spent)
            pipe.hset(f"{self.key}:messages", cid, json.dumps(receipt))
            pipe.hset(f"{self.key}:uuids", uuid, cid)
            pipe.hincrby(f"{self.key}:sent", str(method), 1)
            pipe.execute()
            return cid

    def search(self, cid: str) -> Receipt | None:
        raw = self.client.hget(f"{self.key}:messages", cid)
        if raw is None:
            return None
        receipt = json.loads(raw)
        if self.head() < receipt["height"]:
            return None
        return Receipt(cid, receipt["exit"], receipt["height"], bytes.fromhex(receipt["ret"]))

    def precommit_epoch(self, number: int) -> int | None:
        raw = self.client.hget(f"{self.key}:precommits", str(number))
        return json.loads(raw)["epoch"] if raw else None

    def allocated(self) -> list[int]:
        return runs_of(int(n) for n in self.client.smembers(f"{self.key}:allocated"))

    def precommit_deposit(self, sector: PreCommit) -> int:
        return DEPOSIT

    def available_balance(self) -> int:
        return self.wallet() + self._balance()

    def initial_pledge(self, sector_size: int, duration: int) -> int:
        return PLEDGE

    # The simulation's own controls and counters.

    def fund(self, wallet: int) -> None:
        """Give the sender's wallet ``wallet`` attoFIL (it starts without limit)."""
        self.client.set(f"{self.key}:wallet", wallet)
        self.client.set(f"{self.key}:wallet_spent", 0)

    def allocate(self, *numbers: int) -> None:
        """Mark ``numbers`` allocated, as sectors sealed before sealpool would have."""
        self.client.sadd(f"{self.key}:allocated", *numbers)

    def wallet(self) -> int:
        """What the sender's wallet can still pay."""
        given = self.client.get(f"{self.key}:wallet")
        return (int(given) if given is not None else 10**30) - self._spent()

    def messages_sent(self) -> dict[int, int]:
        """Messages pushed, by method."""
        return {int(m): int(n) for m, n in self.client.hgetall(f"{self.key}:sent").items()}

    def proven(self) -> dict[int, int]:
        """Every proven sector number with its activation epoch."""
        raw = self.client.hgetall(f"{self.key}:sectors")
        return {int(n): json.loads(record)["activation"] for n, record in raw.items()}

    # The actor.

    def _execute(self, method: int, params: bytes, value: int, executed: int) -> bytes:
        try:
            if method == PRE_COMMIT_SECTOR_BATCH2:
                return self._pre_commit(decode_precommits(params), value, executed)
            if method == PROVE_COMMIT_SECTORS3:
                return self._prove_commit(*decode_prove_commits(params), value, executed)
        except ParamsError as exc:
            raise Rejected(SERIALIZATION, str(exc)) from None
        raise Rejected(UNHANDLED_MESSAGE, f"method {method} is not a miner method")

    def _pre_commit(self, sectors: list[PreCommit], value: int, executed: int) -> bytes:
        if not sectors:
            raise Rejected(ILLEGAL_ARGUMENT, "no sectors")
        numbers = [s.number for s in sectors]
        low, high = policy.expiration_bounds(executed)
        for sector in sectors:
            if sector.seal_proof != self.seal_proof:
                raise Rejected(ILLEGAL_ARGUMENT, f"seal proof {sector.seal_proof}")
            lookback = executed - policy.MAX_PRE_COMMIT_RANDOMNESS_LOOKBACK
            if not lookback <= sector.ticket_epoch < executed:
                raise Rejected(ILLEGAL_ARGUMENT, f"ticket epoch {sector.ticket_epoch}")
            if not low <= sector.expiration <= high:
                raise Rejected(ILLEGAL_ARGUMENT, f"expiration {sector.expiration}")
            if sector.deal_ids:
                raise Rejected(ILLEGAL_ARGUMENT, "deal ids are activated by ProveCommitSectors3")
        allocated = self.client.smismember(f"{self.key}:allocated", numbers)
        if len(set(numbers)) != len(numbers) or any(allocated):
            raise Rejected(ILLEGAL_ARGUMENT, f"sector numbers taken: {numbers}")
        deposit = sum(self.precommit_deposit(s) for s in sectors)
        if self._balance() + value < deposit:
            raise Rejected(INSUFFICIENT_FUNDS, f"deposit {deposit} exceeds the balance")
        pipe = self.client.pipeline()  # MULTI: the actor's state changes all at once
        pipe.set(f"{self.key}:balance", self._balance() + value - deposit)
        pipe.sadd(f"{self.key}:allocated", *numbers)
        pipe.hset(
            f"{self.key}:precommits",
            mapping={
                str(s.number): json.dumps(
                    {"epoch": executed, "comm_r": s.comm_r.encode("base32"), "cc": s.comm_d is None,
                     "ticket_epoch": s.ticket_epoch, "deposit": DEPOSIT}
                )
                for s in sectors
            },
        )  # fmt: skip
        pipe.execute()
        return b""

    def _prove_commit(
        self, activations: list[Activation], aggregate: bytes | None, value: int, executed: int
    ) -> bytes:
        if aggregate is None and any(not a.proof for a in activations):
            raise Rejected(ILLEGAL_ARGUMENT, "one proof per sector, or one aggregate")
        if aggregate is not None and not MIN_AGGREGATE <= len(activations) <= MAX_AGGREGATE:
            raise Rejected(ILLEGAL_ARGUMENT, f"aggregate of {len(activations)} sectors")
        failures: list[int] = []
        expected: list[bytes] = []
        pledge_due, proven = 0, {}
        for index, activation in enumerate(activations):
            raw = self.client.hget(f"{self.key}:precommits", str(activation.number))
            if raw is None:
                raise Rejected(NOT_FOUND, f"no precommit of sector {activation.number}")
            precommit = json.loads(raw)
            if executed <= policy.seed_epoch(precommit["epoch"]):
                raise Rejected(FORBIDDEN, f"sector {activation.number} proven before its seed")
            expected.append(self._expected_proof(activation.number, precommit))
            if not self._activates(activation, precommit, executed) or (
                aggregate is None and activation.proof != expected[-1]
            ):
                failures.append(index)
                continue
            pledge_due += PLEDGE - precommit["deposit"]
            proven[str(activation.number)] = json.dumps({"activation": executed})
        if aggregate is not None and aggregate != sim_aggregate(expected):
            raise Rejected(ILLEGAL_ARGUMENT, "aggregate proof does not verify")
        if failures:  # RequireActivationSuccess is what sealpool sends
            raise Rejected(ILLEGAL_ARGUMENT, f"activations failed: {failures}")
        if self._balance() + value < pledge_due:
            raise Rejected(INSUFFICIENT_FUNDS, f"pledge {pledge_due} exceeds the balance")
        pipe = self.client.pipeline()
        pipe.set(f"{self.key}:balance", self._balance() + value - pledge_due)
        pipe.hset(f"{self.key}:sectors", mapping=proven)
        pipe.hdel(f"{self.key}:precommits", *proven)
        pipe.execute()
        return cbor2.dumps([len(proven), []])

    @staticmethod
    def _activates(activation: Activation, precommit: dict, executed: int) -> bool:
        """In time, with pieces exactly when the precommit named a CommD."""
        in_time = executed <= policy.prove_commit_deadline(precommit["epoch"])
        return in_time and precommit["cc"] == (not activation.pieces)

    def _expected_proof(self, number: int, precommit: dict) -> bytes:
        ticket = self.randomness("ticket", precommit["ticket_epoch"], self.miner)
        seed = self.randomness("seed", policy.seed_epoch(precommit["epoch"]), self.miner)
        return sim_proof(self.miner, number, precommit["comm_r"], ticket, seed)

    def _spent(self) -> int:
        return int(self.client.get(f"{self.key}:wallet_spent") or 0)

    def _balance(self) -> int:
        return int(self.client.get(f"{self.key}:balance") or 0)
