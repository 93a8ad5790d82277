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

import pytest

# The tf.function variant of a check whose eager variant runs in the quick subset (-m "not slow"): each
# variant traces a fresh function (0.1-1 s of CPU), so across the option tables the compiled variants were
# a quarter of the quick subset's time. The full suite runs them; the compiled and XLA paths keep quick
# tests of their own (test_losses_xla.py).
COMPILED = pytest.param("tf.function", marks=pytest.mark.slow, id="tf.function")


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


def product_quick_pairs(*axes: tuple[str, Sequence[Any]]) -> tuple[str, list[Any]]:
    """The full product of ``axes`` for ``pytest.mark.parametrize``, with the quick subset meeting every pair.

    The cases of ``covering_cases(full=[], pairwise=axes)`` run in the quick subset (``-m "not slow"``); every
    other case of the product is marked ``slow`` and runs in the full suite. A bug that needs two option
    values together is then caught by the quick subset, one that needs three by the full suite.
    """
    argnames, quick = covering_cases([], axes)

    def flatten(names: str, value: Any) -> tuple[Any, ...]:
        return tuple(value) if "," in names else (value,)

    cases, quick_rows = [], []
    for row in itertools.product(*(range(len(values)) for _, values in axes)):
        case = sum((flatten(names, values[i]) for (names, values), i in zip(axes, row)), ())
        cases.append(pytest.param(*case, marks=[] if case in quick else [pytest.mark.slow]))
        quick_rows += [row] if case in quick else []
    # The quick rows must meet every pair of values of every two axes (checked here, at collection).
    for a, b in itertools.combinations(range(len(axes)), 2):
        met = {(row[a], row[b]) for row in quick_rows}
        if len(met) != len(axes[a][1]) * len(axes[b][1]):
            raise ValueError(f"the quick cases miss pairs of {axes[a][0]!r} and {axes[b][0]!r}")
    return argnames, cases
