"""``haq-control``: the agent that never learns, the control every claim about the agent is
measured against (issue 35). Same warm-up (uniform draws, the anchor episode), same
truncated-normal noise and its decay, same enforcement and redraws as ``haq``; but its actor
is fixed at the top bit (mean action 1) and it stores and learns nothing. An audit found the
default agent's best equal to this control's on the noiseless proxy (docs/search.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from haq.search.ddpg import DDPG
from haq.search.env import STATE_DIM
from haq.search.strategies.agent import Agent
from haq.search.strategies.base import Draft, Proposal, StrategyInfo

if TYPE_CHECKING:
    from haq.search.setup import SearchContext


class TopBitDDPG(DDPG):
    """The agent's acting with its actor replaced by the constant top bit."""

    def mean_action(self, state: np.ndarray) -> float:
        return 1.0


class Control(Agent):
    def __init__(self, ctx: SearchContext, progress: bool = True) -> None:
        super().__init__(ctx, progress)
        self.agent = TopBitDDPG(STATE_DIM, len(self.episode), self.cfg.ddpg)

    def tell(self, episode: int, draft: Draft, enforced: Proposal, reward: float) -> None:
        """Learns nothing."""


INFO = StrategyInfo(
    "haq-control", "no-learning control (agent fixed at the top bit)", 60, seeded=True,
    factory=Control,
)  # fmt: skip
