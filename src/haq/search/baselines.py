"""Baseline strategies evaluated in the same harness as the agent."""

from __future__ import annotations

import numpy as np

from haq.hardware.table import CostTable
from haq.search.budget import Budget, _fits


def largest_uniform_bits(
    table: CostTable,
    budgets: list[Budget],
    min_bit: int,
    max_bit: int,
    pinned_w: np.ndarray,
    pinned_a: np.ndarray,
    weights_only: bool = False,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The paper's fixed-precision row: the largest b with w = a = b in every free layer
    (pinned layers kept) that fits every budget; None if even ``min_bit`` does not fit."""
    n = len(table.layers)
    for b in range(max_bit, min_bit - 1, -1):
        w = np.where(pinned_w > 0, pinned_w, b)
        a = np.full(n, 8) if weights_only else np.where(pinned_a > 0, pinned_a, b)
        if _fits(table, w, a, budgets):
            return w.astype(np.int64), a.astype(np.int64)
    return None
