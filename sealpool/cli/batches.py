"""``sealpool batches``: precommit and prove-commit batches, open, sent, landed or failed."""

from __future__ import annotations

from dataclasses import asdict

import click
from rich.console import Console

from sealpool.chain.batching import METHODS, BatchBook, fil
from sealpool.cli.context import CliContext, pass_context
from sealpool.cli.render import emit, json_option, table


@click.command("batches")
@click.option("--limit", default=20, show_default=True, help="Newest batches shown.")
@json_option
@pass_context
def batches(ctx: CliContext, limit: int, as_json: bool) -> None:
    """Batches of precommits and prove-commits: members, method, value, CID, state."""
    book = BatchBook(ctx.store.client, ctx.store.prefix, ctx.settings)
    found = book.batches(limit)

    def human(console: Console) -> None:
        rows = [
            [b.id, b.state, METHODS[b.kind], len(b.members), fil(b.value), b.cid or "-",
             " ".join(filter(None, (b.cut, b.reason)))]
            for b in found
        ]  # fmt: skip
        columns = ["batch", "state", "method", "sectors", "value", "cid", "why"]
        console.print(table("sealpool batches", columns, rows))

    emit([asdict(b) for b in found], as_json, human)
