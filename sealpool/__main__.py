"""``python -m sealpool``: the same as the ``sealpool`` command."""

from sealpool.cli.main import main

main()
