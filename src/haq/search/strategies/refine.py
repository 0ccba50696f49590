"""``ilp-refine``: the ILP that learns from its evaluations (issue 35, item 3).

The ILP plans from a sensitivity model measured before any finetune; every evaluation says
how wrong that model is. This strategy starts with the ILP's first three plans (activation
weighted 1, 1/2, 2 against weights), then, before each further episode, fits a correction of
the model to every policy evaluated so far and plans the best policy not yet evaluated under
the corrected model:

    predicted loss(policy) = sum over layer kinds k and operands o of
                             alpha[k, o] * (sum of the sensitivities of kind k's layers at
                                            the policy's bits of operand o)

``alpha`` (8 numbers at most: conv, depthwise, pointwise, linear x weights, activations) is
fitted by ridge regression on the measured accuracy losses, shrunk towards one common scale,
and kept positive. Deterministic for a run; its evaluations are kept in the checkpoint, so a
resumed run plans exactly as an uninterrupted one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from haq.search.planners import act_weights
from haq.search.sensitivity import Sensitivity
from haq.search.strategies.base import Draft, Proposal, StrategyInfo
from haq.search.strategies.planned import Planned

if TYPE_CHECKING:
    from haq.search.state import SearchState

SEED_PLANS = 3
RIDGE = 1.0  # how strongly the fit is pulled towards one common scale


class Refine(Planned):
    def make_plan(self, sens: Sensitivity) -> list[tuple[np.ndarray, np.ndarray]]:
        plans: list[tuple[np.ndarray, np.ndarray]] = []
        for act_weight in act_weights(min(SEED_PLANS, int(self.cfg.episodes or 1))):
            plans += self.ilp(sens.pair_table(act_weight), exclude=plans)
        return plans

    def prepare(self, state: SearchState) -> float | None:
        spent = super().prepare(state)
        assert state.sensitivity is not None
        self.sens = Sensitivity.from_dict(state.sensitivity)
        state.extra = state.extra or {}
        self.evaluated: list = state.extra.setdefault("refine", [])  # (w, a, loss) per episode
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []  # asked, not yet told
        return spent

    def total(self) -> int:
        return int(self.cfg.episodes or 1)

    def ask(self, episode: int, widen: int = 0) -> Draft:
        if episode < len(self.plan):
            return super().ask(episode)
        known = [(np.array(w), np.array(a)) for w, a, _ in self.evaluated]
        known += [(np.array(w), np.array(a)) for w, a in self.plan] + self.pending
        found = self.ilp(self.corrected_score(), exclude=known)
        if not found:  # every policy the budget allows was evaluated: repeat the best
            w, a, _ = min(self.evaluated, key=lambda e: e[2])
            return Draft(np.array(w), np.array(a))
        self.pending.append(found[0])
        return Draft(*found[0])

    def tell(self, episode: int, draft: Draft, enforced: Proposal, reward: float) -> None:
        """Keep the evaluation: the loss against full precision is -10 x the reward."""
        self.evaluated.append((enforced.w.tolist(), enforced.a.tolist(), -10.0 * reward))
        self.pending = [p for p in self.pending if not (np.array_equal(p[0], enforced.w) and np.array_equal(p[1], enforced.a))]  # fmt: skip

    def corrected_score(self) -> np.ndarray:
        """The [L, 8, 8] score table of the sensitivity model corrected by the fit."""
        kinds = sorted({s.kind for s in self.ctx.table.layers})
        group = np.array([kinds.index(s.kind) for s in self.ctx.table.layers])
        alpha = self._fit(group, len(kinds))
        fw, fa = alpha[2 * group], alpha[2 * group + 1]
        return fw[:, None, None] * self.sens.weights[:, :, None] + fa[:, None, None] * self.sens.acts[:, None, :]  # fmt: skip

    def _features(self, group: np.ndarray, n_kinds: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.arange(len(group))
        x = np.zeros((len(self.evaluated), 2 * n_kinds))
        for p, (w, a, _) in enumerate(self.evaluated):
            sw = self.sens.weights[rows, np.array(w) - 1]
            sa = self.sens.acts[rows, np.array(a) - 1]
            x[p, 0::2] = np.bincount(group, weights=sw, minlength=n_kinds)
            x[p, 1::2] = np.bincount(group, weights=sa, minlength=n_kinds)
        return x, np.array([e[2] for e in self.evaluated], dtype=np.float64)

    def _fit(self, group: np.ndarray, n_kinds: int) -> np.ndarray:
        """alpha by ridge regression towards one common scale, kept positive."""
        x, y = self._features(group, n_kinds)
        base = x.sum(axis=1)
        scale = float(base @ y / (base @ base)) if base @ base > 0 else 1.0
        prior = np.full(x.shape[1], max(scale, 1e-9))
        reg = RIDGE * np.diag((x**2).mean(axis=0) + 1e-12)
        alpha = prior + np.linalg.solve(x.T @ x + reg, x.T @ (y - x @ prior))
        return np.maximum(alpha, 0.05 * prior)


INFO = StrategyInfo(
    "ilp-refine", "ILP refined on its evaluations", 10, seeded=False, factory=Refine
)
