"""Which attempt may write a sector's scratch: a token file beside the sector's files.

A phase stamps the sector's scratch directory with its lease's fencing token before it
computes, and the backend checks the stamp before each write. An attempt that outlived its
lease (its worker froze, then woke) finds a larger token there and stops instead of writing
over the files of the attempt that took its place. External processors get the token and
the file's name in their request, to check it the same way.
"""

from __future__ import annotations

from pathlib import Path

from sealpool.errors import PhaseError

LEASE_FILE = ".lease"


def stamp_scratch(scratch: Path, token: int, what: str) -> None:
    """Mark ``scratch`` as written by the attempt holding ``token`` from now on; a stale
    PhaseError when a newer attempt (a larger token) has marked it already."""
    scratch.mkdir(parents=True, exist_ok=True)
    if _scratch_token(scratch) > token:
        raise PhaseError(f"{what}: a newer attempt owns {scratch}: stopped", retry=False)
    staged = scratch / f"{LEASE_FILE}.{token}"
    staged.write_text(str(token))
    staged.replace(scratch / LEASE_FILE)


def check_scratch(scratch: Path, token: int, what: str) -> None:
    """Refuse (a PhaseError) to write ``scratch`` unless the attempt holding ``token`` owns
    it: an attempt that outlived its lease never writes over the live one's files."""
    owner = _scratch_token(scratch)
    if owner not in (0, token):
        raise PhaseError(
            f"{what}: scratch {scratch} belongs to attempt {owner}, not {token}: stopped",
            retry=False,
        )


def _scratch_token(scratch: Path) -> int:
    try:
        return int((scratch / LEASE_FILE).read_text())
    except (OSError, ValueError):
        return 0
