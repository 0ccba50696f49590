"""Resource budgets: parsing, feasibility, and the enforcement of over-budget proposals.

A budget is ``METRIC <= LIMIT`` with ``METRIC`` one of latency, energy, size, bops. The limit
is absolute with a unit (``12ms``, ``3.5mJ``, ``1.2MB``, ``2.5G`` BOPs) or a ratio
``0.5x`` of a stated reference: the all-w8a8 cost on the same hardware for latency, energy
and BOPs, and the fp32 weight size for size (as in the paper).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from haq.errors import HaqError
from haq.hardware.table import METRICS, CostTable

_UNITS: dict[str, dict[str, float]] = {
    "latency": {"s": 1.0, "ms": 1e-3, "us": 1e-6},
    "energy": {"j": 1.0, "mj": 1e-3, "uj": 1e-6},
    "size": {"b": 1.0, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1024.0, "mib": 1024.0**2},
    "bops": {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12},
}
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Budget:
    """``metric <= limit`` in base units (s, J, B, BOPs per image), with how it was given."""

    metric: str
    limit: float
    text: str
    reference: str  # "w8a8", "fp32" or "absolute"

    def describe(self) -> str:
        return f"{self.metric} <= {format_value(self.metric, self.limit)} ({self.text})"


def format_value(metric: str, value: float) -> str:
    """A value with a readable unit: 12.3 ms, 3.2 mJ, 1.25 MB, 2.1 GBOPs."""
    if metric == "latency":
        return f"{value * 1e3:.4g} ms"
    if metric == "energy":
        return f"{value * 1e3:.4g} mJ"
    if metric == "size":
        return f"{value / 1e6:.4g} MB" if value >= 1e5 else f"{value / 1e3:.4g} kB"
    return f"{value / 1e9:.4g} GBOPs"


def reference_value(metric: str, table: CostTable) -> float:
    """What ``1x`` means: w8a8 cost, or fp32 weight size for ``size``."""
    if metric == "size":
        return table.fp32_size_bytes()
    return table.uniform_cost(8).total(metric)


def parse_budget(metric: str, text: str, table: CostTable) -> Budget:
    """Parse ``0.5x`` or ``12ms``-style text for ``metric`` against ``table``."""
    if metric not in METRICS:
        raise HaqError(f"unknown budget metric {metric!r}; valid: {', '.join(METRICS)}")
    if not table.metric_available(metric):
        raise HaqError(
            f"hardware {table.hardware.name!r} has no {metric} model; choose another budget or hardware"
        )
    m = _NUMBER.match(text)
    if not m:
        raise HaqError(
            f"--{metric} {text!r} is malformed; use a ratio like 0.5x or a value like {_example(metric)}"
        )
    value, unit = float(m.group(1)), m.group(2).lower()
    if not math.isfinite(value) or value <= 0:
        raise HaqError(f"--{metric} {text!r} must be a positive finite number")
    if unit == "x":
        ref = "fp32" if metric == "size" else "w8a8"
        return _finite(Budget(metric, value * reference_value(metric, table), text, ref))
    if metric == "latency" and table.meta.get("relative_latency"):
        raise HaqError(
            f"--latency {text!r}: {table.hardware.source} has no time unit (a HAQ lookup in "
            "cycles); give a ratio such as 0.5x"
        )
    units = _UNITS[metric]
    if unit not in units:
        valid = ", ".join(u for u in units if u) or "none"
        raise HaqError(
            f"--{metric} {text!r}: unknown unit {unit!r}; valid units: {valid}, or x for a ratio"
        )
    return _finite(Budget(metric, value * units[unit], text, "absolute"))


def _finite(budget: Budget) -> Budget:
    if not math.isfinite(budget.limit):
        raise HaqError(f"--{budget.metric} {budget.text!r} is too large to be a budget")
    return budget


def _example(metric: str) -> str:
    return {"latency": "12ms", "energy": "3.5mJ", "size": "1.2MB", "bops": "2.5G"}[metric]


def _fits(table: CostTable, w: np.ndarray, a: np.ndarray, budgets: Sequence[Budget]) -> bool:
    cost = table.policy_cost(w, a)
    return all(cost.total(b.metric) <= b.limit * (1 + 1e-9) for b in budgets)


def check_feasible(
    table: CostTable,
    budgets: Sequence[Budget],
    min_bit: int,
    pinned_w: np.ndarray,
    pinned_a: np.ndarray,
) -> None:
    """Refuse budgets that even the all-``min_bit`` policy (pins kept) cannot meet."""
    n = len(table.layers)
    w = np.where(pinned_w > 0, pinned_w, min_bit)
    a = np.where(pinned_a > 0, pinned_a, min_bit)
    assert w.shape == (n,)
    cost = table.policy_cost(w, a)
    for b in budgets:
        lowest = cost.total(b.metric)
        if lowest > b.limit * (1 + 1e-9):
            raise HaqError(
                f"budget {b.describe()} is infeasible: the smallest achievable {b.metric} with "
                f"{min_bit}-bit layers (pinned layers kept) is {format_value(b.metric, lowest)}"
            )


def enforce(
    table: CostTable,
    w_bits: np.ndarray,
    a_bits: np.ndarray,
    budgets: Sequence[Budget],
    min_bit: int,
    pinned_w: np.ndarray,
    pinned_a: np.ndarray,
    weights_only: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Lower bits as the reference code does until every budget holds.

    Rounds walk the layers from last to first; in each layer the activation bit is lowered by
    one and the budgets checked, then the weight bit. Pinned entries (> 0 in ``pinned_*``) are
    never changed. Returns new arrays; the inputs are not modified.
    """
    w, a = w_bits.copy(), a_bits.copy()
    if not budgets or _fits(table, w, a, budgets):
        return w, a
    n = len(w)
    while True:
        changed = False
        for i in range(n - 1, -1, -1):
            if not weights_only and pinned_a[i] == 0 and a[i] > min_bit:
                a[i] -= 1
                changed = True
                if _fits(table, w, a, budgets):
                    return w, a
            if pinned_w[i] == 0 and w[i] > min_bit:
                w[i] -= 1
                changed = True
                if _fits(table, w, a, budgets):
                    return w, a
        if not changed:
            raise HaqError("budget cannot be met even with every free layer at the minimum bits")


def enforce_level(
    table: CostTable,
    w_bits: np.ndarray,
    a_bits: np.ndarray,
    budgets: Sequence[Budget],
    min_bit: int,
    pinned_w: np.ndarray,
    pinned_a: np.ndarray,
    weights_only: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Lower bits one at a time, always the free operand with the most bits (ties: the last
    layer first, its activation before its weight, as in :func:`enforce`), until every budget
    holds. From 8 bits everywhere this is :func:`enforce`'s result; on a mixed proposal the
    operands proposed low keep their bits, where each round of :func:`enforce` lowers every
    free operand. Not in the paper (docs/search.md, "Agent robustness")."""
    w, a = w_bits.copy(), a_bits.copy()
    n = len(w)
    # candidates in tie-break order: a[n-1], w[n-1], a[n-2], w[n-2], ...
    free = np.stack([(pinned_a == 0) & (not weights_only), pinned_w == 0], 1)[::-1].ravel()
    while not _fits(table, w, a, budgets):
        bits = np.stack([a, w], 1)[::-1].ravel().astype(float)
        bits[~free | (bits <= min_bit)] = -np.inf
        k = int(np.argmax(bits))  # the first maximum: the tie-break order above
        if bits[k] == -np.inf:
            raise HaqError("budget cannot be met even with every free layer at the minimum bits")
        (w if k % 2 else a)[n - 1 - k // 2] -= 1
    return w, a


ENFORCERS = {"reference": enforce, "level": enforce_level}
