"""Output of CLI results: a rich table for people, one JSON document with ``--json``.

Tables fit 80 columns: light borders, cells wrapped (never cut), work phases by their
queue's short name, sizes and times humanized; ``--json`` keeps the raw values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

import click
import pydantic_core
from rich import box
from rich.console import Console
from rich.table import Table

from sealpool.routing import QUEUE_NAMES

SHORT_NAMES: dict[str, str] = {phase.value: name for phase, name in QUEUE_NAMES.items()}

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def emit(data: Any, as_json: bool, human: Callable[[Console], None]) -> None:
    """Print ``data`` (models, dataclasses, plain values) as one line of JSON, or let
    ``human`` draw it on a rich console."""
    if as_json:
        print_json(data)
    else:
        human(Console())


def print_json(data: Any) -> None:
    """Print ``data`` as one line of JSON."""
    click.echo(pydantic_core.to_json(data, fallback=str))


def print_json_chunks(chunks: Iterable[list[bytes]]) -> None:
    """Print one line holding a JSON array of the items' JSON (bytes each), written a
    chunk at a time as they come (a listing of a whole state is never held at once)."""
    out = click.get_binary_stream("stdout")
    out.write(b"[")
    separator = b""
    for chunk in chunks:
        if chunk:
            out.write(separator + b",".join(chunk))
            separator = b","
    out.write(b"]\n")
    out.flush()


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    """A rich table with ``columns`` and ``rows`` (cells shown with ``str``, None as ``-``),
    its cells wrapped rather than cut when the terminal is narrow."""
    result = Table(
        title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True
    )
    for column in columns:
        result.add_column(column, overflow="fold")
    for row in rows:
        result.add_row(*("-" if cell is None else str(cell) for cell in row))
    return result


def short(state: str) -> str:
    """A work phase by its queue's name (``PreCommitting`` → ``precommit``); other states
    (``Pending``, ``Proving``, ``Failed``, ``Aborted``) as they are."""
    return SHORT_NAMES.get(state, state)


def duration(seconds: float) -> str:
    """``0.25`` → ``250ms``, ``4.2`` → ``4.2s``, ``725`` → ``12m05s``, ``11_100`` → ``3h05m``,
    ``180_000`` → ``2d02h``."""
    if seconds < 1:
        return f"{1000 * seconds:.0f}ms"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def utc(at_ms: int) -> str:
    """Epoch milliseconds as a UTC time to the second: ``2026-11-26 12:33:55``."""
    return datetime.fromtimestamp(at_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
