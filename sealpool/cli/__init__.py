"""The ``sealpool`` command line: one group per noun, thin commands over library calls."""

from __future__ import annotations

from sealpool.cli.main import cli, main

__all__ = ["cli", "main"]
