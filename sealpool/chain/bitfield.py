"""Sets of sector numbers as the chain shows them: go-bitfield's JSON run lengths.

A bitfield's JSON (``StateMinerAllocated``) lists alternating run lengths, the first run
unset: ``{0, 1, 2, 8, 9}`` is ``[0, 3, 5, 2]``.
"""

from __future__ import annotations

from collections.abc import Iterable


def runs_of(numbers: Iterable[int]) -> list[int]:
    """The run lengths of the set ``numbers``."""
    runs: list[int] = []
    end = 0  # one past the last number covered by ``runs``
    for number in sorted(set(numbers)):
        if runs and number == end:
            runs[-1] += 1
        else:
            runs += [number - end, 1]
        end = number + 1
    return runs


def highest_in(runs: list[int], first: int = 0, last: int | None = None) -> int | None:
    """The highest number of the set ``runs`` within ``[first, last]``; None if none."""
    highest, start = None, 0
    for index, length in enumerate(runs):
        if length < 0:
            raise ValueError(f"bitfield run lengths must not be negative, got {length}")
        end = start + length - 1  # this run covers [start, end]
        if index % 2 and length and end >= first and (last is None or start <= last):
            highest = end if last is None else min(end, last)
        start += length
    return highest
