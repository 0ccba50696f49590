"""``greedy``: from the top bits, lower one operand bit at a time where the sensitivity per
cost saved is least, until every budget fits; one policy."""

from __future__ import annotations

import numpy as np

from haq.search.sensitivity import Sensitivity
from haq.search.strategies.base import StrategyInfo
from haq.search.strategies.planned import Planned


class Greedy(Planned):
    def make_plan(self, sens: Sensitivity) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self.greedy(sens.pair_table())]


INFO = StrategyInfo("greedy", "greedy on sensitivities", 1, seeded=False, factory=Greedy)
