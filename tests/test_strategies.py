"""Strategies as plug-ins (issue 33) and the agent's presets (issue 35): the registry feeds the
CLI and the summaries, the loop runs any Strategy object, the no-learning control acts like
the agent without learning, and ``haq-paper`` fixes the paper's settings."""

from __future__ import annotations

import numpy as np
import pytest

from haq.errors import HaqError
from haq.search.config import STRATEGIES, SearchConfig
from haq.search.ddpg import PAPER_SIGMA_DECAY, DDPGConfig
from haq.search.rundir import RunDir
from haq.search.runner import Search, search
from haq.search.setup import build_context
from haq.search.strategies import REGISTRY, Draft, Strategy
from haq.search.strategies.control import Control
from tests.test_search import TIMING_KEYS, tiny_cfg


def test_the_registry_is_what_config_and_cli_offer():
    assert set(STRATEGIES) == {"auto", *REGISTRY}
    for name, info in REGISTRY.items():
        assert info.name == name and info.label and info.default_episodes >= 1
    assert {"haq", "haq-paper", "haq-control", "ilp", "greedy", "random", "uniform"} <= set(
        REGISTRY
    )
    assert SearchConfig(strategy="ilp").resolved().episodes == REGISTRY["ilp"].default_episodes


def test_haq_paper_fixes_the_papers_settings_and_refuses_a_contradiction():
    cfg = SearchConfig(strategy="haq-paper").resolved()
    assert cfg.enforce == "reference" and not cfg.ddpg.anchor
    assert cfg.ddpg.sigma_decay == PAPER_SIGMA_DECAY
    with pytest.raises(HaqError, match="fixes --sigma-decay 0.99; it was given 0.98"):
        SearchConfig(strategy="haq-paper", ddpg=DDPGConfig(sigma_decay=0.98)).resolved()


class Fixed(Strategy):
    """A user's strategy: the same all-4-bit draft every episode."""

    def ask(self, episode: int, widen: int = 0) -> Draft:
        n = len(self.ctx.table.layers)
        return Draft(np.full(n, 4), np.full(n, 4))


def test_the_loop_runs_any_strategy_object(tiny_ckpt, tmp_path):
    cfg = tiny_cfg(tiny_ckpt, strategy="random", episodes=3).resolved()
    ctx = build_context(cfg)
    summary = Search(ctx, tmp_path, progress=False, strategy=Fixed(ctx), run_id="x").run()
    records = RunDir(tmp_path).read_episodes()
    assert len(records) == 3 and [r["cached"] for r in records] == [False, True, True]
    assert summary["best"]["w_bits"][1:3] == [4, 4]  # pins kept the first and last layers


def test_the_setup_shows_its_stages(tiny_ckpt, capsys, tmp_path):
    """With progress on, the setup before the first episode and the summary after the last
    name each stage as it starts (on stderr); without it, the setup prints nothing."""
    cfg = tiny_cfg(tiny_ckpt, strategy="random", episodes=1).resolved()
    build_context(cfg, progress=True)
    err = capsys.readouterr().err
    for stage in (
        "setup",
        "data",
        "calibration (",
        "clips for bits 1-8",
        "full-precision accuracy (",
    ):
        assert stage in err, (stage, err)
    build_context(cfg)
    assert capsys.readouterr().err == ""
    search(cfg, tmp_path / "run", progress=True)  # and the summary's evaluations at the end
    err = capsys.readouterr().err
    assert "summary:" in err and "the largest uniform policy" in err
    assert "the best policy on 300 unseen images" in err


def test_the_control_acts_like_the_agent_but_never_learns(tiny_ckpt, tmp_path):
    runs = {}
    for name in ("haq", "haq-control"):
        search(tiny_cfg(tiny_ckpt, strategy=name, episodes=6), tmp_path / name, progress=False)
        runs[name] = [
            {k: v for k, v in r.items() if k not in TIMING_KEYS}
            for r in RunDir(tmp_path / name).read_episodes()
        ]
    warm = tiny_cfg(tiny_ckpt).ddpg.warmup_episodes
    assert runs["haq"][:warm] == runs["haq-control"][:warm]  # same draws in the warm-up
    cfg = tiny_cfg(tiny_ckpt, strategy="haq-control", episodes=6).resolved()
    control = Control(build_context(cfg), progress=False)
    draft = control.ask(warm + 50)  # past the warm-up: noise shrinks around the top bit
    assert draft.actions is not None and draft.actions.mean() > 0.8
    control.tell(warm, draft, None, 1.0)  # type: ignore[arg-type]
    assert control.agent.buffer.size == 0


def test_ilp_refine_starts_as_the_ilp_then_plans_new_policies_and_resumes_exactly(
    tiny_ckpt, tmp_path
):
    """ilp-refine: its first plans are the ILP's, each later one is new (never a cache hit)
    and within the budget, and a run grown on resume equals an uninterrupted one."""

    def cfg(strategy: str, episodes: int) -> SearchConfig:
        return tiny_cfg(tiny_ckpt, strategy=strategy, episodes=episodes, sensitivity_images=64,
                        budgets={"energy": "0.9x"}, keep_8bit=["none"])  # fmt: skip

    def records(run):
        return [
            {k: v for k, v in r.items() if k not in TIMING_KEYS}
            for r in RunDir(run).read_episodes()
        ]

    search(cfg("ilp", 3), tmp_path / "ilp", progress=False)
    summary = search(cfg("ilp-refine", 6), tmp_path / "refine", progress=False)
    ours = records(tmp_path / "refine")
    assert [(r["w_bits"], r["a_bits"]) for r in ours[:3]] == [
        (r["w_bits"], r["a_bits"]) for r in records(tmp_path / "ilp")
    ]
    assert not any(r["cached"] for r in ours) and len(ours) == 6
    limit = summary["budgets"]["energy"]["limit"]
    assert all(r["cost"]["energy"] <= limit * (1 + 1e-9) for r in ours)
    search(cfg("ilp-refine", 4), tmp_path / "grown", progress=False)
    search(None, tmp_path / "grown", resume=True, progress=False, episodes=6)
    assert records(tmp_path / "grown") == ours
