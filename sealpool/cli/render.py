"""Output of CLI results: a rich table for people, one JSON document with ``--json``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
import pydantic_core
from rich.console import Console
from rich.table import Table

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


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    """A rich table with ``columns`` and ``rows`` (cells shown with ``str``, None as ``-``)."""
    result = Table(title=title)
    for column in columns:
        result.add_column(column)
    for row in rows:
        result.add_row(*("-" if cell is None else str(cell) for cell in row))
    return result
