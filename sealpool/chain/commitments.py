"""CommR and CommD as the CIDs the chain takes (filecoin-project/go-fil-commcid).

CommR: CIDv1, codec fil-commitment-sealed (0xf102), multihash poseidon-bls12_381-a2-fc1
(0xb401). CommD: codec fil-commitment-unsealed (0xf101), multihash sha2-256-trunc254-padded
(0x1012). Both carry a 32-byte digest; nothing here computes one.
"""

from __future__ import annotations

from multiformats import CID, multihash, varint
from multiformats.multihash import raw

SEALED = ("fil-commitment-sealed", "poseidon-bls12_381-a2-fc1")
UNSEALED = ("fil-commitment-unsealed", "sha2-256-trunc254-padded")
DIGEST_BYTES = 32


def _not_computed(data: bytes, size: int | None = None) -> bytes:
    raise NotImplementedError("sealpool wraps commitment digests, it never computes them")


for _codec, _hash in (SEALED, UNSEALED):
    if not raw.exists(_hash):
        raw.register(_hash, _not_computed, DIGEST_BYTES)


def commitment_cid(kind: tuple[str, str], digest: bytes) -> CID:
    """The CID of a 32-byte commitment ``digest`` of ``kind`` (SEALED or UNSEALED)."""
    if len(digest) != DIGEST_BYTES:
        raise ValueError(f"a commitment has {DIGEST_BYTES} bytes, not {len(digest)}")
    codec, hashfun = kind
    code = multihash.get(hashfun).code
    return CID("base32", 1, codec, varint.encode(code) + varint.encode(DIGEST_BYTES) + digest)


def parse_commitment(kind: tuple[str, str], text: str) -> CID:
    """The CID in ``text`` if it is a commitment of ``kind``; ValueError naming it if not."""
    cid = CID.decode(text)
    if (cid.version, cid.codec.name, cid.hashfun.name) != (1, *kind) or len(
        cid.raw_digest
    ) != DIGEST_BYTES:
        raise ValueError(f"{text!r} is not a {kind[0]} CID with a {kind[1]} digest")
    return cid
