"""The sector record and its sector id, and how a record maps onto a Redis hash."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, Field

from sealpool.errors import InvalidSectorId
from sealpool.store.states import PhaseStatus, SectorState

SECTOR_ID_RE = re.compile(r"(?P<miner>[ft]0\d{1,19})-(?P<number>\d{1,19})")
SectorKind = Literal["deal", "cc"]

# Fields stored as JSON inside the hash; every other field is a plain string.
_JSON_FIELDS = frozenset({"deal_ids", "ticket", "seed", "deadlines", "outputs"})
_ATTEMPTS = "attempts."
_RUN = "run."


def parse_sector_id(sector_id: str) -> tuple[str, int]:
    """Split ``f01000-42`` into ``("f01000", 42)``; InvalidSectorId for anything else."""
    match = SECTOR_ID_RE.fullmatch(sector_id) if isinstance(sector_id, str) else None
    if match is None:
        raise InvalidSectorId(
            f"invalid sector id {sector_id!r}: expected <miner>-<number>, e.g. f01000-42"
        )
    return match["miner"], int(match["number"])


class Randomness(BaseModel):
    """Chain randomness fixed for a sector: the ticket (for PC1) or the seed (for C1)."""

    epoch: int
    value: str = Field(description="Hex-encoded 32 bytes of randomness.")


class Sector(BaseModel):
    """One sector of the pool, as the store holds it."""

    id: str
    miner: str
    number: int
    kind: SectorKind
    deal_ids: list[int] = Field(default_factory=list)
    priority: int = Field(default=5, ge=0, le=9, description="0 is the most urgent.")
    state: SectorState
    status: PhaseStatus | None = None
    host: str | None = Field(default=None, description="Host holding the sector's temp data.")
    temp_path: str | None = None
    sealed_path: str | None = None
    ticket: Randomness | None = None
    seed: Randomness | None = None
    deadlines: dict[str, int] = Field(
        default_factory=dict, description="Named deadlines in chain epochs."
    )
    deadline_epoch: int | None = Field(default=None, description="Earliest of the deadlines.")
    attempts: dict[str, int] = Field(default_factory=dict, description="Claims per phase.")
    lease_owner: str | None = None
    lease_token: int | None = None
    lease_expires_ms: int | None = None
    lease_since_ms: int | None = Field(default=None, description="When the lease was claimed.")
    last_error: str | None = None
    failed_phase: str | None = Field(default=None, description="Phase that failed for good.")
    outputs: dict[str, Any] = Field(
        default_factory=dict, description="Outputs of the phases so far (commitments, proofs)."
    )
    msg_id: str | None = Field(
        default=None, description="Id of the queued phase's live message (its Celery task id)."
    )
    msg_at_ms: int | None = Field(default=None, description="When that message may run.")
    msg_sent_ms: int | None = Field(default=None, description="When it went to the broker.")
    msg_holder: str | None = Field(
        default=None, description="The worker process (host|phase) holding it for a countdown."
    )
    runs: dict[str, str] = Field(
        default_factory=dict,
        description="The last completed run of each phase: '<claimed, ms after created> "
        "<ms it ran> <worker>' (kept when the history is compacted).",
    )
    created_ms: int
    updated_ms: int
    version: int = 0

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> Sector:
        """Rebuild a record from the strings of its Redis hash."""
        values: dict[str, Any] = {"attempts": {}, "runs": {}}
        for name, raw in fields.items():
            if name.startswith(_ATTEMPTS):
                values["attempts"][name[len(_ATTEMPTS) :]] = int(raw)
            elif name.startswith(_RUN):
                values["runs"][name[len(_RUN) :]] = raw
            else:
                values[name] = json.loads(raw) if name in _JSON_FIELDS else raw
        return cls.model_validate(values)


@lru_cache(maxsize=4096)
def _shared_json(raw: str) -> Any:
    """``json.loads`` of a stored JSON field, the same (read-only) object for the same text:
    most records repeat a few values (``[]``, ``{}``) that cost more to parse than to find."""
    return json.loads(raw)


def _converter(annotation: Any, name: str) -> Callable[[str], Any] | None:
    """How a hash string becomes the JSON value of field ``name`` (None: the string as is)."""
    if name in _JSON_FIELDS:
        return _shared_json
    return int if annotation in (int, int | None) else None


# Per field of a record: its converter and its JSON default (a shared, read-only value).
_PLAIN = {
    name: (
        _converter(info.annotation, name),
        None if info.is_required() else info.get_default(call_default_factory=True),
    )
    for name, info in Sector.model_fields.items()
}
_PLAIN_DEFAULTS = {name: default for name, (_conv, default) in _PLAIN.items()}
# How the scripts write a record's JSON (the listing form): per field, in order, its name,
# how its hash string goes in ("text": a JSON string, "raw": as it is (a number or stored
# JSON), "attempts"/"runs": the object of those prefixed fields) and its JSON when absent.
LISTING_FIELDS: tuple[tuple[str, str, str], ...] = tuple(
    (
        name,
        name if name in ("attempts", "runs") else "text" if conv is None else "raw",
        json.dumps(default, separators=(",", ":")),
    )
    for name, (conv, default) in _PLAIN.items()
)


def record_dict(fields: Mapping[str, str]) -> dict[str, Any]:
    """The JSON form of a record straight from its hash strings, without validation: what
    ``Sector.from_hash(fields).model_dump(mode="json")`` gives, at a fraction of the cost.

    For bulk reads of records the store wrote (and validated) itself; the defaults it
    fills in and its JSON fields are shared objects, to be serialized, not changed.
    """
    record = dict(_PLAIN_DEFAULTS)
    attempts: dict[str, int] = {}
    runs: dict[str, str] = {}
    for name, raw in fields.items():
        plain = _PLAIN.get(name)
        if plain is not None:
            record[name] = raw if plain[0] is None else plain[0](raw)
        elif name.startswith(_ATTEMPTS):
            attempts[name[len(_ATTEMPTS) :]] = int(raw)
        elif name.startswith(_RUN):
            runs[name[len(_RUN) :]] = raw
    record["attempts"], record["runs"] = attempts, runs
    return record


def encode_fields(values: dict[str, Any]) -> dict[str, str]:
    """Hash strings for ``values``; a None value becomes ``""``, which the scripts delete."""
    encoded: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            encoded[name] = ""
        elif name in _JSON_FIELDS:
            plain = value.model_dump() if isinstance(value, BaseModel) else value
            encoded[name] = json.dumps(plain, separators=(",", ":"))
        else:
            encoded[name] = str(value.value if hasattr(value, "value") else value)
    return encoded
