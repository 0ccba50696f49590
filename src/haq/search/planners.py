"""Plan bit policies on the exact cost tables from a per-layer score (the ``ilp`` and
``greedy`` strategies). Pure numpy and scipy: nothing here touches the model.

``score[i, w-1, a-1]`` is the planned accuracy loss of layer i at (w, a) (a
:class:`~haq.search.sensitivity.Sensitivity` pair table); ``table.metric_table(m)`` gives the
exact per-layer cost of every budget metric at every pair. Both planners respect every
budget at once, the bit range and the pins.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence

import numpy as np
from scipy.optimize import LinearConstraint, milp
from scipy.sparse import csr_array

from haq.errors import HaqError
from haq.hardware.table import CostTable
from haq.search.budget import Budget

Bits = tuple[np.ndarray, np.ndarray]


def _options(
    n: int,
    min_bit: int,
    max_bit: int,
    pinned_w: np.ndarray,
    pinned_a: np.ndarray,
    weights_only: bool,
) -> list[tuple[int, int, int]]:
    """(layer, w, a) of every allowed choice; pinned operands keep their bits, k-means mode
    keeps activations at 8 bits."""
    free = range(min_bit, max_bit + 1)
    out = []
    for i in range(n):
        ws = [int(pinned_w[i])] if pinned_w[i] > 0 else free
        if weights_only:
            as_: Sequence[int] = [8]
        else:
            as_ = [int(pinned_a[i])] if pinned_a[i] > 0 else free
        out += [(i, w, a) for w in ws for a in as_]
    return out


@contextlib.contextmanager
def _solver_stdout_silenced() -> Iterator[None]:
    """HiGHS (1.12, in scipy) prints a stray debug line to the process's C stdout on some
    solves (ERGO-Code/HiGHS#2783); it tells a user nothing, so the solver's stdout goes to
    /dev/null while it runs (its status is checked instead)."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout at all (a daemon): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def plan_ilp(
    table: CostTable,
    budgets: Sequence[Budget],
    score: np.ndarray,
    min_bit: int,
    max_bit: int,
    pinned_w: np.ndarray,
    pinned_a: np.ndarray,
    weights_only: bool = False,
    k: int = 1,
    exclude: Sequence[Bits] = (),
    time_limit_s: float = 60.0,
) -> list[Bits]:
    """The ``k`` policies of least total score under every budget, best first (fewer if fewer
    exist), other than those in ``exclude``, by integer programming with HiGHS: one binary per
    (layer, choice), exactly one choice per layer, one row per budget; each excluded or found
    policy adds a cut that excludes it."""
    n = len(table.layers)
    opts = _options(n, min_bit, max_bit, pinned_w, pinned_a, weights_only)
    layer = np.array([o[0] for o in opts])
    wi = np.array([o[1] - 1 for o in opts])
    ai = np.array([o[2] - 1 for o in opts])
    cols = np.arange(len(opts))
    one_each = csr_array((np.ones(len(opts)), (layer, cols)), shape=(n, len(opts)))
    rows = [LinearConstraint(one_each, 1, 1)]
    for b in budgets:  # normalised by the limit, so HiGHS sees numbers near 1
        cost = table.metric_table(b.metric)[layer, wi, ai] / b.limit
        rows.append(LinearConstraint(cost[None, :], -np.inf, 1.0 + 1e-9))
    objective = score[layer, wi, ai]

    def cut(w: np.ndarray, a: np.ndarray) -> LinearConstraint:
        row = ((w[layer] == wi + 1) & (a[layer] == ai + 1)).astype(float)[None, :]
        return LinearConstraint(row, -np.inf, n - 1)

    rows += [cut(w, a) for w, a in exclude]
    found: list[Bits] = []
    for _ in range(k):
        with _solver_stdout_silenced():
            res = milp(
                objective,
                integrality=np.ones(len(opts)),
                bounds=(0, 1),
                constraints=rows,
                options={"time_limit": time_limit_s},
            )
        if res.x is None:
            break
        chosen = np.flatnonzero(res.x > 0.5)
        w, a = np.zeros(n, np.int64), np.zeros(n, np.int64)
        w[layer[chosen]], a[layer[chosen]] = wi[chosen] + 1, ai[chosen] + 1
        found.append((w, a))
        rows.append(cut(w, a))
    if not found and not exclude:
        raise HaqError("the integer program found no policy within every budget")
    return found


def plan_greedy(
    table: CostTable,
    budgets: Sequence[Budget],
    score: np.ndarray,
    min_bit: int,
    max_bit: int,
    pinned_w: np.ndarray,
    pinned_a: np.ndarray,
    weights_only: bool = False,
) -> Bits:
    """From every free operand at ``max_bit``, lower one bit at a time, each time the one with
    the least score increase per unit of cost saved (cost summed over the budgets still
    exceeded, each relative to its limit), until every budget holds."""
    n = len(table.layers)
    idx = np.arange(n)
    w = np.where(pinned_w > 0, pinned_w, max_bit).astype(np.int64)
    a = np.where(pinned_a > 0, pinned_a, 8 if weights_only else max_bit).astype(np.int64)
    costs = {b.metric: table.metric_table(b.metric) for b in budgets}
    operands = [("w", pinned_w)] if weights_only else [("w", pinned_w), ("a", pinned_a)]
    while True:
        over = [
            b for b in budgets if costs[b.metric][idx, w - 1, a - 1].sum() > b.limit * (1 + 1e-9)
        ]
        if not over:
            return w, a
        best: tuple[float, str, int] | None = None
        for operand, pinned in operands:
            movable = (pinned == 0) & ((w if operand == "w" else a) > min_bit)
            w2, a2 = (w - 1, a) if operand == "w" else (w, a - 1)
            w2, a2 = np.maximum(w2, 1), np.maximum(a2, 1)
            d_score = score[idx, w2 - 1, a2 - 1] - score[idx, w - 1, a - 1]
            saved = sum(
                (costs[b.metric][idx, w - 1, a - 1] - costs[b.metric][idx, w2 - 1, a2 - 1])
                / b.limit
                for b in over
            )
            ratio = np.where(movable & (saved > 0), d_score / np.where(saved > 0, saved, 1), np.inf)
            i = int(np.argmin(ratio))
            if np.isfinite(ratio[i]) and (best is None or ratio[i] < best[0]):
                best = (float(ratio[i]), operand, i)
        if best is None:
            raise HaqError("budget cannot be met even with every free layer at the minimum bits")
        _, operand, i = best
        if operand == "w":
            w[i] -= 1
        else:
            a[i] -= 1


def act_weights(k: int) -> list[float]:
    """The ``k`` weights of the activation sensitivities against the weight sensitivities that
    the ``ilp`` strategy plans with, one policy each: 1, 1/2, 2, 1/4, 4, ... The measured
    sensitivities are of the model before any finetune, which recovers part of the loss of
    either operand; how much of each is not known in advance, so the candidates span the
    trade-off and the evaluations pick."""
    return [2.0 ** ((j + 1) // 2 * (-1 if j % 2 else 1)) for j in range(k)]
