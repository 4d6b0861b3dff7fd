"""Two checks on storage paths that the profile check, the phases and the sim backend share.

Kept apart from :mod:`sealpool.storage` (which reads the sim backend's sizes) so that the
backends can use them too.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def sector_dir_in(path: str | Path, roots: Iterable[Path], sector_id: str) -> Path | None:
    """``path`` resolved, if it is ``<root>/<sector_id>`` for one of ``roots``; else None
    (a path read from the pool's records is trusted no further than that)."""
    if not path:
        return None
    resolved = Path(path).resolve()
    if resolved.name == sector_id and any(resolved.parent == root.resolve() for root in roots):
        return resolved
    return None


def overlap(first: Path, second: Path) -> bool:
    """Whether two resolved paths are the same, or one lies inside the other."""
    return first == second or first in second.parents or second in first.parents
