"""The checkpointed state of a search (``state.pt``): what the loop and the strategy need to
continue a run exactly where it stopped."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class SearchState:
    """Everything needed to continue a run after a crash."""

    episode: int = 0
    best_reward: float = -np.inf
    best_episode: int = -1
    cache: dict[str, float] = field(default_factory=dict)
    evaluations: int = 0  # policies evaluated (cache hits not counted)
    random_rng: dict[str, Any] | None = None
    agent: dict[str, Any] | None = None
    sensitivity: dict[str, Any] | None = None  # ilp / greedy: Sensitivity.to_dict()
    plan: list[tuple[list[int], list[int]]] | None = None  # ilp / greedy: (w, a) per episode
    busy_s: float = 0.0  # seconds the evaluation workers spent evaluating
    pool_wall_s: float = 0.0  # seconds x workers of the rounds' evaluation phases
    # a copy of every record the checkpoint covers (None: a checkpoint written before copies)
    records: list[dict[str, Any]] | None = None
    extra: dict[str, Any] | None = None  # a strategy's own state (ilp-refine: its evaluations)


def policy_key(w: np.ndarray, a: np.ndarray) -> str:
    """A policy's key in the evaluation cache: ``"w/a,w/a,..."`` per layer."""
    return ",".join(f"{x}/{y}" for x, y in zip(w.tolist(), a.tolist(), strict=True))
