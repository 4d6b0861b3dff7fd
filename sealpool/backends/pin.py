"""Run a program on given CPU cores: ``python -m sealpool.backends.pin --cores 0,1 -- ARGV``.

The affinity is set in this process, then ``exec`` replaces it with the program, which
inherits the affinity from its first instruction on (no window where it runs unpinned).
"""

from __future__ import annotations

import os
import sys


def parse_cores(text: str) -> set[int]:
    """``"0-3,8"`` → ``{0, 1, 2, 3, 8}``."""
    cores: set[int] = set()
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        cores.update(range(int(first), int(last or first) + 1))
    return cores


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 4 or args[0] != "--cores" or args[2] != "--":
        sys.exit("usage: python -m sealpool.backends.pin --cores LIST -- PROGRAM [ARGS...]")
    os.sched_setaffinity(0, parse_cores(args[1]))
    os.execvp(args[3], args[3:])


if __name__ == "__main__":
    main()
