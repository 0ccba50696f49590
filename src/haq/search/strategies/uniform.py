"""``uniform``: the largest w = a bit width that fits every budget, evaluated once."""

from __future__ import annotations

from haq.search.baselines import largest_uniform_bits
from haq.search.strategies.base import Draft, Strategy, StrategyInfo


class Uniform(Strategy):
    def total(self) -> int:
        return 1

    def ask(self, episode: int, widen: int = 0) -> Draft:
        c = self.ctx
        found = largest_uniform_bits(
            c.table, c.budgets, self.cfg.min_bit, self.cfg.max_bit, c.pinned_w, c.pinned_a,
            self.weights_only,
        )  # fmt: skip
        assert found is not None  # feasibility was checked before the search
        return Draft(found[0], found[1])


INFO = StrategyInfo("uniform", "uniform", 1, seeded=False, factory=Uniform)
