"""The ilp and greedy strategies: planners on exact cost tables, sensitivities, runs."""

from __future__ import annotations

import itertools
import json
import os

import numpy as np
import pytest
import torch

from haq.checkpoint import load_checkpoint
from haq.data import load_dataset, search_split
from haq.errors import HaqError
from haq.evaluation import EvalSetup
from haq.hardware import load_hardware
from haq.hardware.table import cost_table
from haq.search.budget import enforce, parse_budget
from haq.search.planners import act_weights, plan_greedy, plan_ilp
from haq.search.runner import Search, search
from haq.search.sensitivity import measure_sensitivity
from tests.conftest import conv_spec, linear_spec
from tests.test_search import _strip, tiny_cfg


@pytest.fixture(scope="module")
def small_table():
    layers = [
        conv_spec(3, 16, 3, 16, name="c0"),
        conv_spec(16, 16, 3, 16, groups=16, name="dw"),
        conv_spec(16, 32, 1, 16, name="pw"),
        linear_spec(32, 10, name="fc"),
    ]
    layers = [type(s)(**{**s.__dict__, "index": i}) for i, s in enumerate(layers)]
    return cost_table(layers, load_hardware("bitfusion"))


def _score(n: int, seed: int) -> np.ndarray:
    """A made-up sensitivity: falls with bits, differently per layer and operand."""
    rng = np.random.default_rng(seed)
    bits = np.arange(1, 9, dtype=np.float64)
    sw = rng.uniform(0.5, 5.0, (n, 1)) * 2.0 ** (-bits)[None, :]
    sa = rng.uniform(0.5, 5.0, (n, 1)) * 2.0 ** (-bits)[None, :]
    return sw[:, :, None] + sa[:, None, :]


def _enumerate(table, budgets, score, lo, hi):
    """Every policy with bits in lo..hi, sorted by total score, keeping those within budget."""
    n = len(table.layers)
    pairs = [(w, a) for w in range(lo, hi + 1) for a in range(lo, hi + 1)]
    found = []
    for combo in itertools.product(pairs, repeat=n):
        w = np.array([p[0] for p in combo])
        a = np.array([p[1] for p in combo])
        cost = table.policy_cost(w, a)
        if all(cost.total(b.metric) <= b.limit * (1 + 1e-9) for b in budgets):
            found.append((float(score[np.arange(n), w - 1, a - 1].sum()), w, a))
    return sorted(found, key=lambda t: t[0])


@pytest.mark.parametrize("seed", [0, 1])
def test_ilp_finds_the_enumerated_optimum_under_two_budgets(small_table, seed):
    budgets = [
        parse_budget("energy", "0.55x", small_table),
        parse_budget("bops", "0.3x", small_table),
    ]
    score = _score(4, seed)
    none = np.zeros(4, np.int64)
    best = _enumerate(small_table, budgets, score, 2, 4)
    plans = plan_ilp(small_table, budgets, score, 2, 4, none, none, k=3)
    assert len(plans) == 3
    totals = [float(score[np.arange(4), w - 1, a - 1].sum()) for w, a in plans]
    # the k best by enumeration, in order (ties aside)
    np.testing.assert_allclose(totals, [t for t, _, _ in best[:3]], rtol=1e-9)
    np.testing.assert_array_equal(plans[0][0], best[0][1])
    assert len({(tuple(w), tuple(a)) for w, a in plans}) == 3  # distinct policies
    for w, a in plans:
        cost = small_table.policy_cost(w, a)
        assert all(cost.total(b.metric) <= b.limit * (1 + 1e-9) for b in budgets)
        assert w.min() >= 2 and a.max() <= 4


def test_ilp_excludes_given_policies(small_table):
    budgets = [parse_budget("bops", "0.3x", small_table)]
    score = _score(4, 2)
    none = np.zeros(4, np.int64)
    best = _enumerate(small_table, budgets, score, 2, 4)
    first = plan_ilp(small_table, budgets, score, 2, 4, none, none)
    (second,) = plan_ilp(small_table, budgets, score, 2, 4, none, none, exclude=first)
    total = float(score[np.arange(4), second[0] - 1, second[1] - 1].sum())
    assert total == pytest.approx(best[1][0], rel=1e-9)  # the runner-up by enumeration
    everything = [(w, a) for _, w, a in best]
    assert plan_ilp(small_table, budgets, score, 2, 4, none, none, exclude=everything) == []


def test_ilp_candidates_span_the_operand_trade_off(small_table):
    """A heavier weight on the activation sensitivities buys activation bits with weight bits."""
    assert act_weights(5) == [1.0, 0.5, 2.0, 0.25, 4.0] and act_weights(1) == [1.0]
    rng = np.random.default_rng(5)
    bits = np.arange(1, 9, dtype=np.float64)
    sw = rng.uniform(0.5, 5.0, (4, 1)) * 2.0 ** (-bits)[None, :]
    sa = rng.uniform(0.5, 5.0, (4, 1)) * 2.0 ** (-bits)[None, :]
    budgets = [parse_budget("bops", "0.3x", small_table)]
    none = np.zeros(4, np.int64)
    a_bits = []
    for lam in (0.05, 1.0, 20.0):
        score = sw[:, :, None] + lam * sa[:, None, :]
        ((w, a),) = plan_ilp(small_table, budgets, score, 2, 8, none, none)
        a_bits.append(int(a.sum()) - int(w.sum()))
    assert a_bits[0] < a_bits[1] < a_bits[2]


def test_planners_respect_pins_and_every_budget(small_table):
    budgets = [
        parse_budget("latency", "0.9x", small_table),
        parse_budget("energy", "0.6x", small_table),
        parse_budget("size", "0.2x", small_table),
    ]
    score = _score(4, 3)
    pw, pa = np.array([8, 0, 0, 8]), np.array([8, 0, 0, 8])
    greedy = plan_greedy(small_table, budgets, score, 2, 8, pw, pa)
    ilp = plan_ilp(small_table, budgets, score, 2, 8, pw, pa)[0]
    for w, a in (greedy, ilp):
        assert (w[[0, 3]] == 8).all() and (a[[0, 3]] == 8).all()
        cost = small_table.policy_cost(w, a)
        assert all(cost.total(b.metric) <= b.limit * (1 + 1e-9) for b in budgets)

    # the ILP is optimal for the planned score: never worse than greedy or the paper's
    # enforcement from all-8-bit
    def total(wa):
        return float(score[np.arange(4), wa[0] - 1, wa[1] - 1].sum())

    enforced = enforce(small_table, np.full(4, 8), np.full(4, 8), budgets, 2, pw, pa)
    assert total(ilp) <= total(greedy) + 1e-12 and total(ilp) <= total(enforced) + 1e-12


def test_greedy_lowers_the_cheapest_loss_per_cost_first(small_table):
    """Lowering the depthwise weights costs almost no score: greedy takes them first."""
    budgets = [parse_budget("size", "0.249x", small_table)]  # just under w8 everywhere
    score = np.ones((4, 8, 8))
    bits = np.arange(1, 9)
    score[1] = 1.0 - 0.01 * bits[:, None]  # depthwise: almost free to lower
    for i in (0, 2, 3):
        score[i] = 1.0 - 1.0 * bits[:, None]
    none = np.zeros(4, np.int64)
    w, a = plan_greedy(small_table, budgets, score, 2, 8, none, none)
    # one bit off the 144 depthwise weights saves 18 B, enough for the 5.6 B over budget
    np.testing.assert_array_equal(w, [8, 7, 8, 8])
    assert (a == 8).all()  # activations do not count for size


def test_planners_refuse_an_infeasible_budget(small_table):
    budgets = [parse_budget("bops", "0.01x", small_table)]
    none = np.zeros(4, np.int64)
    with pytest.raises(HaqError, match="no policy within every budget"):
        plan_ilp(small_table, budgets, _score(4, 0), 2, 8, none, none)
    with pytest.raises(HaqError, match="cannot be met"):
        plan_greedy(small_table, budgets, _score(4, 0), 2, 8, none, none)


def test_sensitivity_is_measured_without_changing_the_model(tiny_ckpt):
    model, _ = load_checkpoint(tiny_ckpt)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ft, ho, _ = search_split(load_dataset("digits"), 600, 300)
    setup = EvalSetup.build(model, ft, ho)
    pw, pa = np.array([8, 0, 0, 0]), np.array([8, 0, 0, 0])
    sens = measure_sensitivity(setup, "linear", range(2, 9), pw, pa, images=128, progress=False)
    # pinned first layer: nothing measured; its input is the image anyway
    assert (sens.weights[0] == 0).all() and (sens.acts[0] == 0).all()
    assert sens.passes == 3 * 7 * 2 + 1
    # fewer bits hurt more: 2-bit weights are far more sensitive than 8-bit ones
    assert (sens.weights[1:, 1] > sens.weights[1:, 7]).all()
    assert (sens.acts[1:, 1] > sens.acts[1:, 7]).all()
    assert (sens.weights[1:, 1:] >= 0).all()  # a KL divergence
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.requires_grad for p in model.parameters())
    assert not any("QuantLayer" in type(m).__name__ for m in model.modules())
    k = measure_sensitivity(setup, "kmeans", range(2, 5), pw, pa, images=64, progress=False)
    assert (k.acts == 0).all() and (k.weights[1:, 1] > k.weights[1:, 3]).all()
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("strategy", ["ilp", "greedy"])
def test_planner_strategies_run_within_every_budget(tiny_ckpt, tmp_path, strategy):
    cfg = tiny_cfg(tiny_ckpt, strategy=strategy, budgets={"energy": "0.9x", "bops": "0.6x"})
    cfg.episodes = None  # the strategy's default: 5 ILP candidates, 1 greedy policy
    cfg.sensitivity_images = 64
    s = search(cfg, tmp_path / strategy, progress=False)
    assert s["episodes"] == (5 if strategy == "ilp" else 1)
    lines = (tmp_path / strategy / "episodes.jsonl").read_text().splitlines()
    for line in lines:
        r = json.loads(line)
        assert r["cost"]["energy"] <= s["budgets"]["energy"]["limit"] * (1 + 1e-9)
        assert r["cost"]["bops"] <= s["budgets"]["bops"]["limit"] * (1 + 1e-9)
        assert not r["enforced"]  # planned within budget: enforcement has nothing to do
    cost = s["search_cost"]
    assert cost["sensitivity_passes"] == 2 * 7 * 2 + 1  # two free layers, 2..8 bits, w and a
    # the search's own evaluations; the uniform comparison at the end is not its cost
    assert cost["policy_evaluations"] == s["episodes"]
    assert cost["wall_s"] > s["timing_s"]["sensitivity"] > 0
    assert s["best"]["check_top1"] is not None and s["uniform"]["check_top1"] is not None
    saved = json.loads((tmp_path / strategy / "config.json").read_text())
    assert saved["episodes"] == s["episodes"]


def test_ilp_resume_reuses_the_sensitivities(tiny_ckpt, tmp_path, monkeypatch):
    cfg = tiny_cfg(tiny_ckpt, strategy="ilp", episodes=4, sensitivity_images=64)
    search(cfg, tmp_path / "a", progress=False)
    original = Search.save_state
    calls = {"n": 0}

    def crash(self):
        calls["n"] += 1
        if calls["n"] == 3:  # the plan and two episodes are saved, the third is not
            raise KeyboardInterrupt
        original(self)

    monkeypatch.setattr(Search, "save_state", crash)
    cfg = tiny_cfg(tiny_ckpt, strategy="ilp", episodes=4, sensitivity_images=64)
    with pytest.raises(KeyboardInterrupt):
        search(cfg, tmp_path / "b", progress=False)
    monkeypatch.setattr(Search, "save_state", original)

    def no_second_measurement(*args, **kwargs):
        raise AssertionError("the sensitivities were measured again")

    monkeypatch.setattr("haq.search.strategies.planned.measure_sensitivity", no_second_measurement)
    search(None, tmp_path / "b", resume=True, progress=False)
    assert _strip(tmp_path / "a" / "episodes.jsonl") == _strip(tmp_path / "b" / "episodes.jsonl")


def test_two_seeded_runs_record_the_same_episodes(tiny_ckpt, tmp_path):
    search(tiny_cfg(tiny_ckpt), tmp_path / "one", progress=False)
    search(tiny_cfg(tiny_ckpt), tmp_path / "two", progress=False)
    assert _strip(tmp_path / "one" / "episodes.jsonl") == _strip(
        tmp_path / "two" / "episodes.jsonl"
    )


def test_search_flags_come_from_the_config_dataclass(capsys):
    from haq.cli import build_parser
    from haq.options import given_options
    from haq.search.config import SearchConfig

    parser = build_parser()
    args = parser.parse_args(
        [
            "search",
            "--warmup",
            "3",
            "--search-seed",
            "7",
            "--bops",
            "0.25x",
            "--energy",
            "1mJ",
            "--keep-8bit",
            "first",
            "--per-channel",
            "--strategy",
            "ilp",
            "--finetune-steps",
            "4",
            "--no-anchor",
        ]
    )
    given = given_options(args, SearchConfig)
    assert given == {
        "ddpg": {"warmup_episodes": 3, "seed": 7, "anchor": False},
        "budgets": {"bops": "0.25x", "energy": "1mJ"},
        "keep_8bit": ["first"],
        "per_channel": True,
        "strategy": "ilp",
        "finetune_steps": 4,
    }
    cfg = SearchConfig().with_overrides(given)
    assert cfg.ddpg.warmup_episodes == 3 and cfg.ddpg.hidden == 300  # others keep defaults
    assert cfg.budgets == {"bops": "0.25x", "energy": "1mJ"} and cfg.lr == 0.01
    assert given_options(parser.parse_args(["search"]), SearchConfig) == {}
    assert SearchConfig().ddpg.anchor is True  # on by default, --no-anchor turns it off
    legacy = SearchConfig().to_dict()
    del legacy["ddpg"]["anchor"]  # a run configured before the anchor existed ran without it
    assert SearchConfig.from_dict(legacy).ddpg.anchor is False
    assert SearchConfig().enforce == "level"  # the default; runs saved before it ran reference
    del legacy["enforce"]
    assert SearchConfig.from_dict(legacy).enforce == "reference"
    with pytest.raises(SystemExit):
        parser.parse_args(["search", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for flag, default in (("--finetune-steps", 16), ("--heldout-size", 2000), ("--warmup", 20)):
        assert f"{flag} N" in help_text and f"(default: {default})" in help_text


def test_cli_resume_refuses_another_out(capsys, tmp_path):
    from haq.cli import main

    code = main(["search", "--resume", str(tmp_path / "a"), "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and "do not give --out" in err and "Traceback" not in err


def test_auto_strategy_is_resolved_and_saved(tiny_ckpt, tmp_path):
    from haq.search.config import RECOMMENDED, recommended_strategy

    assert recommended_strategy({"latency": "0.5x"}) == RECOMMENDED["latency"]
    cfg = tiny_cfg(tiny_ckpt, strategy="auto", sensitivity_images=32)
    cfg.episodes = None
    s = search(cfg, tmp_path / "auto", progress=False)
    saved = json.loads((tmp_path / "auto" / "config.json").read_text())
    assert saved["strategy"] == s["strategy"] == recommended_strategy(cfg.budgets) != "auto"


def test_solver_output_on_the_c_stdout_is_silenced(capfd):
    """HiGHS can print a stray debug line from C (ERGO-Code/HiGHS#2783); it must not reach
    the user's terminal, and the stdout must work again after the solve."""
    from haq.search.planners import _solver_stdout_silenced

    with _solver_stdout_silenced():
        os.write(1, b"HighsMipSolverData::transformNewIntegerFeasibleSolution\n")
    print("after", flush=True)
    assert capfd.readouterr().out == "after\n"


def test_solver_silencing_without_a_stdout():
    """A process with no stdout (fd 1 closed, as some daemons run) still plans."""
    import subprocess
    import sys

    code = (
        "import os\n"
        "os.close(1)\n"
        "from haq.search.planners import _solver_stdout_silenced\n"
        "with _solver_stdout_silenced():\n"
        "    pass\n"
        "os.write(2, b'planned')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert done.returncode == 0 and done.stderr.endswith(b"planned"), done.stderr
