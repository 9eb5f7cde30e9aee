"""Selective-acknowledgement ranges: sets of segment indices as [first, end) pairs."""
from __future__ import annotations

from collections.abc import Iterable


def to_ranges(indices: Iterable[int]) -> list[list[int]]:
    ranges: list[list[int]] = []
    for index in sorted(set(indices)):
        if ranges and ranges[-1][1] == index:
            ranges[-1][1] = index + 1
        else:
            ranges.append([index, index + 1])
    return ranges


def from_ranges(ranges: Iterable[list[int]], count: int) -> set[int]:
    """Indices named by ranges, clipped to 0..count-1 so a hostile range cannot cost memory."""
    indices: set[int] = set()
    for first, end in ranges:
        indices.update(range(max(0, first), min(end, count)))
    return indices
