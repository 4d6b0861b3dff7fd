"""Output of CLI results: a rich table for people, one JSON document with ``--json``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if hasattr(value, "__dataclass_fields__"):
        return {name: _plain(getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def emit(data: Any, as_json: bool, human: Callable[[Console], None]) -> None:
    """Print ``data`` as JSON, or let ``human`` draw it on a rich console."""
    if as_json:
        click.echo(json.dumps(_plain(data), indent=2, default=str))
    else:
        human(Console())


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    """A rich table with ``columns`` and ``rows`` (cells shown with ``str``, None as ``-``)."""
    result = Table(title=title)
    for column in columns:
        result.add_column(column)
    for row in rows:
        result.add_row(*("-" if cell is None else str(cell) for cell in row))
    return result
