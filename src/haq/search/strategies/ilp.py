"""``ilp``: an integer program (HiGHS) over the exact per-layer costs of every budget, once
for each of ``episodes`` weightings of activation against weight sensitivity; each plan
differs from the earlier ones."""

from __future__ import annotations

import numpy as np

from haq.search.planners import act_weights
from haq.search.sensitivity import Sensitivity
from haq.search.strategies.base import StrategyInfo
from haq.search.strategies.planned import Planned


class ILP(Planned):
    def make_plan(self, sens: Sensitivity) -> list[tuple[np.ndarray, np.ndarray]]:
        plans: list[tuple[np.ndarray, np.ndarray]] = []
        for act_weight in act_weights(int(self.cfg.episodes or 1)):
            score = sens.pair_table(act_weight)
            plans += self.ilp(score, exclude=plans)
        return plans


INFO = StrategyInfo("ilp", "ILP on sensitivities", 5, seeded=False, factory=ILP)
