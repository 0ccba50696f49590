"""``haq``: the paper's DDPG agent. Each episode it walks the layers, one action per weight
(and activation) decision from its actor plus truncated-normal noise (uniform in the warm-up),
and learns from the whole episode with the reward of the enforced policy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from haq.search.ddpg import DDPG, PAPER_SIGMA_DECAY
from haq.search.env import STATE_DIM, Episode
from haq.search.strategies.base import Draft, Proposal, Strategy, StrategyInfo

if TYPE_CHECKING:
    from haq.search.setup import SearchContext
    from haq.search.state import SearchState


class Agent(Strategy):
    def __init__(self, ctx: SearchContext, progress: bool = True) -> None:
        super().__init__(ctx, progress)
        self.episode = Episode(ctx.table.layers, self.weights_only)
        self.agent = DDPG(STATE_DIM, len(self.episode), self.cfg.ddpg)

    def warm(self, episode: int) -> bool:
        return episode < self.cfg.ddpg.warmup_episodes

    def redraws(self, episode: int) -> int:
        return 0 if self.warm(episode) else self.cfg.ddpg.redraws

    def ask(self, episode: int, widen: int = 0) -> Draft:
        states, actions, prev = [], [], 0.0
        for t in range(len(self.episode)):
            s = self.episode.state(t, prev)
            prev = self.agent.act(s, episode, widen=widen)
            states.append(s)
            actions.append(prev)
        w, a = self.episode.actions_to_bits(actions, self.cfg.min_bit, self.cfg.max_bit)
        return Draft(w, a, np.stack(states), np.asarray(actions, dtype=np.float32))

    def tell(self, episode: int, draft: Draft, enforced: Proposal, reward: float) -> None:
        """Store the episode as the actor took it (its own actions and the states it saw, as
        the reference code does) with the reward of the enforced policy; then update."""
        assert draft.states is not None and draft.actions is not None
        self.agent.observe_episode(draft.states, draft.actions, reward)
        if not self.warm(episode):
            self.agent.update(len(draft.states))

    def describe(self, episode: int, widen: int) -> dict[str, Any]:
        if self.warm(episode):
            return {"phase": "warmup", "sigma": None}
        return {"phase": "search", "sigma": self.agent.sigma(episode, widen)}

    def save(self, state: SearchState) -> None:
        state.agent = self.agent.state_dict()

    def load(self, state: SearchState) -> None:
        if state.agent is None:
            raise ValueError("no agent state")
        self.agent.load_state_dict(state.agent)


INFO = StrategyInfo("haq", "HAQ agent", 60, seeded=True, factory=Agent)
# the paper's agent as the reference code runs it: its enforcement, no anchor episode, the
# literal per-episode noise decay 0.99 (the paper searched 600 episodes: --episodes 600)
PAPER = StrategyInfo(
    "haq-paper", "HAQ agent, the paper's settings", 60, seeded=True, factory=Agent,
    overrides={"enforce": "reference", "ddpg.anchor": False, "ddpg.sigma_decay": PAPER_SIGMA_DECAY},
)  # fmt: skip
