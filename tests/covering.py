"""Parametrizations that meet every pair of option values without running the whole product.

A reference test over shapes x forms x options x dtypes grows as the product of its axes. The axes that pick
a code path are crossed in full (`full`); the others (`pairwise`: shapes, axes, dtypes, ...) take values
chosen greedily so that every value of every axis meets every value of every other axis in some case
(pairwise coverage, the usual combinatorial-testing criterion). Deterministic: the same cases every run.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any


def covering_cases(
    full: Sequence[tuple[str, Sequence[Any]]], pairwise: Sequence[tuple[str, Sequence[Any]]]
) -> tuple[str, list[tuple[Any, ...]]]:
    """``(argnames, cases)`` for ``pytest.mark.parametrize``.

    Args:
        full: ``(argnames, values)`` axes crossed in full. An axis whose argnames hold several names
            ("shape,axis") has tuple values, flattened into the case.
        pairwise: ``(argnames, values)`` axes whose values are chosen per case for pairwise coverage.

    Returns:
        The comma-joined argnames of all axes, and one flattened tuple per case.
    """
    axes = [*full, *pairwise]
    sizes = [len(values) for _, values in axes]
    n_full = len(full)
    # Pairs still to meet: (axis a, value i, axis b, value j), a < b, not both crossed in full.
    uncovered = {
        (a, i, b, j)
        for a, b in itertools.combinations(range(len(axes)), 2)
        if b >= n_full
        for i in range(sizes[a])
        for j in range(sizes[b])
    }

    def pair(axis: int, value: int, other: int, other_value: int) -> tuple[int, int, int, int]:
        return (axis, value, other, other_value) if axis < other else (other, other_value, axis, value)

    def gain(row: list[int | None], axis: int, value: int) -> int:
        return sum(
            pair(axis, value, other, known) in uncovered
            for other, known in enumerate(row)
            if other != axis and known is not None
        )

    def complete(row: list[int | None]) -> list[int]:
        for axis in range(len(axes)):
            if row[axis] is None:
                row[axis] = max(range(sizes[axis]), key=lambda value: (gain(row, axis, value), -value))
        filled = [int(v) for v in row if v is not None]
        for a, b in itertools.combinations(range(len(axes)), 2):
            uncovered.discard((a, filled[a], b, filled[b]))
        return filled

    rows = [complete([*core, *([None] * len(pairwise))]) for core in itertools.product(*map(range, sizes[:n_full]))]
    while uncovered:  # leftovers: a case seeded with one missing pair
        a, i, b, j = min(uncovered)
        row: list[int | None] = [None] * len(axes)
        row[a], row[b] = i, j
        rows.append(complete(row))

    def flatten(axis: int, value: Any) -> tuple[Any, ...]:
        return tuple(value) if "," in axes[axis][0] else (value,)

    cases = [sum((flatten(axis, axes[axis][1][v]) for axis, v in enumerate(row)), ()) for row in rows]
    return ",".join(name for name, _ in axes), cases
