"""Search strategies as plug-ins, one file each, and their registry.

A strategy is a :class:`~haq.search.strategies.base.Strategy`: ``ask`` drafts an episode's
policy, ``tell`` gives it the reward of the enforced policy, ``save``/``load`` keep its part
of the checkpoint, ``prepare`` runs once before the first episode. To add one, write a file
with a subclass and its :class:`StrategyInfo`, and list it in ``REGISTRY`` below: the CLI's
choices, default episode counts, summary labels and benchmarks read the registry.
"""

from __future__ import annotations

from haq.search.strategies import agent, control, greedy, ilp, random_search, refine, uniform
from haq.search.strategies.base import Draft, Proposal, Strategy, StrategyInfo

REGISTRY: dict[str, StrategyInfo] = {
    info.name: info
    for info in (
        agent.INFO,
        random_search.INFO,
        uniform.INFO,
        ilp.INFO,
        greedy.INFO,
        agent.PAPER,
        control.INFO,
        refine.INFO,
    )
}

__all__ = ["REGISTRY", "Draft", "Proposal", "Strategy", "StrategyInfo"]
