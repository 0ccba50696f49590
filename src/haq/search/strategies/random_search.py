"""``random``: every episode draws one action per decision uniformly in [0, 1), mapped to
bits like the agent's actions (the paper's random-search baseline)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from haq.search.env import Episode
from haq.search.strategies.base import Draft, Strategy, StrategyInfo

if TYPE_CHECKING:
    from haq.search.setup import SearchContext
    from haq.search.state import SearchState


class RandomSearch(Strategy):
    def __init__(self, ctx: SearchContext, progress: bool = True) -> None:
        super().__init__(ctx, progress)
        self.episode = Episode(ctx.table.layers, self.weights_only)
        self.rng = np.random.default_rng(self.cfg.ddpg.seed + 1)  # the search seed

    def ask(self, episode: int, widen: int = 0) -> Draft:
        actions = self.rng.uniform(0.0, 1.0, len(self.episode))
        w, a = self.episode.actions_to_bits(actions, self.cfg.min_bit, self.cfg.max_bit)
        return Draft(w, a)

    def save(self, state: SearchState) -> None:
        state.random_rng = dict(self.rng.bit_generator.state)

    def load(self, state: SearchState) -> None:
        if state.random_rng is None:
            raise ValueError("no random-search state")
        self.rng.bit_generator.state = state.random_rng


INFO = StrategyInfo("random", "random search", 60, seeded=True, factory=RandomSearch)
