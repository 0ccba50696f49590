"""What every search strategy is: it drafts a policy for an episode (``ask``) and hears the
reward of the policy the budget let through (``tell``); it saves its own part of the run's
checkpoint. The loop (:mod:`haq.search.runner`) enforces budgets, evaluates, caches and
records; it never tests which strategy it runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from haq.search.setup import SearchContext
    from haq.search.state import SearchState


@dataclass
class Draft:
    """A strategy's policy before budget enforcement; the agent adds the states it saw and
    the actions it took (what it learns from)."""

    w: np.ndarray
    a: np.ndarray
    states: np.ndarray | None = None
    actions: np.ndarray | None = None


@dataclass
class Proposal:
    """An episode's policy: the draft, the enforced bits that are evaluated, and how many
    times the draft was redrawn because its enforced policy was already known."""

    draft: Draft
    w: np.ndarray
    a: np.ndarray
    redraws: int = 0

    @property
    def enforced(self) -> bool:
        return bool((self.w != self.draft.w).any() or (self.a != self.draft.a).any())


class Strategy(ABC):
    """The base strategy: no planning, ``episodes`` episodes, nothing learned or saved;
    a subclass says at least how it drafts a policy (``ask``)."""

    def __init__(self, ctx: SearchContext, progress: bool = True) -> None:
        self.ctx, self.cfg, self.progress = ctx, ctx.cfg, progress
        self.weights_only = ctx.cfg.mode == "kmeans"

    def prepare(self, state: SearchState) -> float | None:
        """Work before the first episode (the planners measure and plan here, once: what
        they find goes into ``state``); the seconds it took, None if nothing ran."""
        return None

    def total(self) -> int:
        """How many episodes the search runs."""
        return int(self.cfg.episodes or 1)

    def redraws(self, episode: int) -> int:
        """How often an episode may draw again when its enforced policy is already known."""
        return 0

    @abstractmethod
    def ask(self, episode: int, widen: int = 0) -> Draft:
        """The episode's draft (``widen``: the how-many-th redraw)."""

    def tell(self, episode: int, draft: Draft, enforced: Proposal, reward: float) -> None:
        """The reward of ``enforced`` (the draft after enforcement), in episode order."""
        return None  # by default: nothing

    def describe(self, episode: int, widen: int) -> dict[str, Any]:
        """The record's ``phase`` and ``sigma`` (the agent's exploration) of an episode."""
        return {"phase": "search", "sigma": None}

    def save(self, state: SearchState) -> None:
        """Write this strategy's part of the checkpoint into ``state``."""
        return None  # by default: nothing

    def load(self, state: SearchState) -> None:
        """Restore this strategy from a checkpoint's ``state`` (ValueError if it lacks it)."""
        return None  # by default: nothing


@dataclass(frozen=True)
class StrategyInfo:
    """A registry entry: what config, CLI, summaries and benchmarks know of a strategy."""

    name: str
    label: str  # in summaries and reports
    default_episodes: int  # policies evaluated when --episodes is not given
    seeded: bool  # its result depends on the search seed
    factory: Callable[..., Strategy]
    # a preset: options it fixes ("enforce", "ddpg.anchor", ...), applied by SearchConfig
    overrides: dict[str, Any] = field(default_factory=dict)
