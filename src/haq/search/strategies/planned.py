"""The strategies that plan on measured sensitivities (``ilp``, ``greedy``): before the first
episode they measure every free layer's sensitivity at every bit width and plan the policies
to evaluate; both are saved with the checkpoint, so a resumed run repeats neither."""

from __future__ import annotations

import time
from abc import abstractmethod
from typing import TYPE_CHECKING

import numpy as np

from haq.search.planners import Bits, plan_greedy, plan_ilp
from haq.search.sensitivity import Sensitivity, measure_sensitivity
from haq.search.strategies.base import Draft, Strategy

if TYPE_CHECKING:
    from collections.abc import Sequence

    from haq.search.state import SearchState


class Planned(Strategy):
    plan: list[tuple[list[int], list[int]]]

    @abstractmethod
    def make_plan(self, sens: Sensitivity) -> list[tuple[np.ndarray, np.ndarray]]:
        """The policies to evaluate, from the measured sensitivities."""

    def prepare(self, state: SearchState) -> float | None:
        if state.plan is not None:  # planned before the checkpoint
            self.plan = state.plan
            return None
        c, cfg = self.ctx, self.cfg
        if state.sensitivity is None:
            sens = measure_sensitivity(
                c.setup, cfg.mode, range(cfg.min_bit, cfg.max_bit + 1), c.pinned_w, c.pinned_a,
                images=cfg.sensitivity_images, progress=self.progress,
            )  # fmt: skip
            state.sensitivity = sens.to_dict()
        t0 = time.perf_counter()
        plans = self.make_plan(Sensitivity.from_dict(state.sensitivity))
        state.plan = self.plan = [(w.tolist(), a.tolist()) for w, a in plans]
        return time.perf_counter() - t0

    def total(self) -> int:
        return min(int(self.cfg.episodes or 1), len(self.plan))

    def ask(self, episode: int, widen: int = 0) -> Draft:
        w, a = self.plan[episode]
        return Draft(np.array(w), np.array(a))

    def ilp(self, score: np.ndarray, exclude: Sequence[Bits] = ()) -> list[Bits]:
        """The policy of least total ``score`` under the run's budgets, bits and pins, other
        than those in ``exclude`` (none if every allowed policy is excluded)."""
        c = self.ctx
        return plan_ilp(c.table, c.budgets, score, self.cfg.min_bit, self.cfg.max_bit,
                        c.pinned_w, c.pinned_a, self.weights_only, k=1, exclude=exclude)  # fmt: skip

    def greedy(self, score: np.ndarray) -> Bits:
        c = self.ctx
        return plan_greedy(c.table, c.budgets, score, self.cfg.min_bit, self.cfg.max_bit,
                           c.pinned_w, c.pinned_a, self.weights_only)  # fmt: skip
