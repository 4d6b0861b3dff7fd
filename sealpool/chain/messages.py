"""Miner actor messages: their parameters as the actor decodes them (DAG-CBOR, cbor2).

Layouts from builtin-actors ``actors/miner/src/types.rs`` (tuples, fields in order):
PreCommitSectorBatchParams2 ``[sectors]`` of SectorPreCommitInfo ``[seal_proof,
sector_number, sealed_cid, seal_rand_epoch, deal_ids, expiration, unsealed_cid|null]``;
ProveCommitSectors3Params ``[sector_activations, sector_proofs, aggregate_proof,
aggregate_proof_type|null, require_activation_success, require_notification_success]`` with
SectorActivationManifest ``[sector_number, pieces]`` and PieceActivationManifest ``[cid,
size, verified_allocation_key|null, notify]``. A CID is tag 42 over ``0x00`` + its bytes.

``decode_*`` read parameters back as strictly as the actor does: any other shape raises
:class:`ParamsError` (the actor's exit code 21, serialization).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import cbor2
from multiformats import CID

from sealpool.chain.commitments import SEALED, UNSEALED

PRE_COMMIT_SECTOR_BATCH2 = 28
PROVE_COMMIT_SECTORS3 = 34
CID_TAG = 42
SNARK_PACK_V2 = 1


class ParamsError(ValueError):
    """Parameters that don't decode to the method's layout (exit code 21)."""


@dataclass(frozen=True)
class PreCommit:
    """One SectorPreCommitInfo."""

    seal_proof: int
    number: int
    comm_r: CID
    ticket_epoch: int
    expiration: int
    comm_d: CID | None = None  # None: a CC sector (zero data)
    deal_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Piece:
    """One PieceActivationManifest (no verified allocation, no notification)."""

    cid: CID
    size: int


@dataclass(frozen=True)
class Activation:
    """One sector to prove: its number, its pieces (none for CC) and its proof."""

    number: int
    proof: bytes
    pieces: tuple[Piece, ...] = field(default=())


def _cid(cid: CID) -> cbor2.CBORTag:
    return cbor2.CBORTag(CID_TAG, b"\x00" + bytes(cid))


def encode_precommits(sectors: list[PreCommit]) -> bytes:
    """PreCommitSectorBatchParams2 of ``sectors``."""
    return cbor2.dumps(
        [
            [
                [s.seal_proof, s.number, _cid(s.comm_r), s.ticket_epoch, list(s.deal_ids),
                 s.expiration, _cid(s.comm_d) if s.comm_d else None]
                for s in sectors
            ]
        ]
    )  # fmt: skip


def encode_prove_commits(sectors: list[Activation], aggregate: bytes | None = None) -> bytes:
    """ProveCommitSectors3Params of ``sectors``: their own proofs, or one ``aggregate``
    proof (SnarkPackV2) for all; every activation must succeed."""
    activations = [[s.number, [[_cid(p.cid), p.size, None, []] for p in s.pieces]] for s in sectors]
    proofs = [] if aggregate else [s.proof for s in sectors]
    kind = SNARK_PACK_V2 if aggregate else None
    return cbor2.dumps([activations, proofs, aggregate or b"", kind, True, False])


def decode_precommits(params: bytes) -> list[PreCommit]:
    """The sectors of PreCommitSectorBatchParams2 ``params``; ParamsError if malformed."""
    (sectors,) = _array(_loads(params), 1, "params")
    result = []
    for entry in _list(sectors, "sectors"):
        proof, number, comm_r, rand, deals, expiration, comm_d = _array(entry, 7, "sector")
        result.append(
            PreCommit(
                seal_proof=_int(proof), number=_uint(number), comm_r=_read_cid(comm_r, SEALED),
                ticket_epoch=_int(rand), expiration=_int(expiration),
                comm_d=None if comm_d is None else _read_cid(comm_d, UNSEALED),
                deal_ids=tuple(_uint(d) for d in _list(deals, "deal_ids")),
            )
        )  # fmt: skip
    return result


def decode_prove_commits(params: bytes) -> tuple[list[Activation], bytes | None]:
    """The activations of ProveCommitSectors3Params ``params`` and the aggregate proof
    (None when each sector has its own); ParamsError if malformed."""
    fields = _array(_loads(params), 6, "params")
    activations, proofs, aggregate, kind, require_activation, require_notify = fields
    if not isinstance(aggregate, bytes) or not all(
        isinstance(flag, bool) for flag in (require_activation, require_notify)
    ):
        raise ParamsError("aggregate_proof must be bytes and the require flags booleans")
    proofs = _list(proofs, "sector_proofs")
    if not all(isinstance(p, bytes) for p in proofs):
        raise ParamsError("sector_proofs must be byte strings")
    if (kind is None) != (not aggregate) or (kind is not None and _int(kind) != SNARK_PACK_V2):
        raise ParamsError("aggregate_proof_type must be given exactly with an aggregate proof")
    result = []
    for index, entry in enumerate(_list(activations, "sector_activations")):
        number, pieces = _array(entry, 2, "activation")
        parsed = []
        for piece in _list(pieces, "pieces"):
            cid, size, allocation, notify = _array(piece, 4, "piece")
            if allocation is not None or _list(notify, "notify"):
                raise ParamsError("verified allocations and notifications are not sent")
            parsed.append(Piece(cid=_read_cid(cid, UNSEALED), size=_uint(size)))
        proof = proofs[index] if index < len(proofs) else b""
        result.append(Activation(number=_uint(number), proof=proof, pieces=tuple(parsed)))
    return result, (aggregate or None)


def _loads(params: bytes) -> Any:
    stream = io.BytesIO(params)
    try:
        value = cbor2.CBORDecoder(stream).decode()
    except (cbor2.CBORDecodeError, ValueError) as exc:
        raise ParamsError(f"not CBOR: {exc}") from None
    if stream.tell() != len(params):
        raise ParamsError(f"{len(params) - stream.tell()} bytes after the parameters")
    return value


def _array(value: Any, size: int, what: str) -> list[Any]:
    if not isinstance(value, list) or len(value) != size:
        raise ParamsError(f"{what} must be an array of {size} fields")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ParamsError(f"{what} must be an array")
    return value


def _int(value: Any) -> int:
    if type(value) is not int:
        raise ParamsError(f"expected an integer, got {value!r:.40}")
    return value


def _uint(value: Any) -> int:
    if _int(value) < 0:
        raise ParamsError(f"expected an unsigned integer, got {value}")
    return value


def _read_cid(value: Any, kind: tuple[str, str]) -> CID:
    if not (
        isinstance(value, cbor2.CBORTag)
        and value.tag == CID_TAG
        and isinstance(value.value, bytes)
        and value.value[:1] == b"\x00"
    ):
        raise ParamsError("a CID must be tag 42 over 0x00 and the CID's bytes")
    try:
        cid = CID.decode(value.value[1:])
    except Exception as exc:  # multiformats raises several kinds for bad bytes
        raise ParamsError(f"bad CID bytes: {exc}") from None
    if (cid.codec.name, cid.hashfun.name) != kind:
        raise ParamsError(f"{cid} is not a {kind[0]} CID")
    return cid
