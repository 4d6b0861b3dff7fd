"""A private Redis server for a benchmark run: SEALPOOL_REDIS_URL, or an embedded one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sealpool import server

HERE = Path(__file__).resolve().parent


def benchmark_pythonpath() -> str:
    """PYTHONPATH for worker processes that import the benchmarks' own Celery app modules."""
    return os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])


@contextmanager
def benchmark_redis() -> Iterator[str]:
    """Yield a Redis URL for the benchmark; an embedded server is stopped afterwards."""
    if os.environ.get("SEALPOOL_REDIS_URL"):
        yield os.environ["SEALPOOL_REDIS_URL"]
        return
    with tempfile.TemporaryDirectory(prefix="sealpool-bench-") as data_dir:
        info = server.start(Path(data_dir))
        try:
            yield info.url
        finally:
            server.stop(Path(data_dir))


def print_figures(
    title: str, figures: dict[str, float | bool], goals: dict[str, str], as_json: bool = False
) -> None:
    """A table of a benchmark's figures beside their goals (the figures as JSON with
    ``as_json``)."""
    if as_json:
        print(json.dumps(figures, indent=2))
        return
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("goal")
    for name, value in figures.items():
        if isinstance(value, bool):  # a goal met or not: shown beside its figure
            continue
        shown = (
            f"{value:,}"
            if isinstance(value, int)
            else f"{value:,.4f}"
            if value < 10
            else f"{value:,.0f}"
        )
        table.add_row(name, shown, goals.get(name, ""))
    Console().print(table)
