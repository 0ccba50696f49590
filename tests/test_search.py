"""The search: budgets, the environment, the agent, the runner (tiny model, digits data)."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from haq.checkpoint import CheckpointMeta, save_checkpoint
from haq.cli import main
from haq.errors import HaqError
from haq.hardware import load_hardware
from haq.hardware.table import cost_table
from haq.layers import extract_layers
from haq.models import create_model
from haq.policy import Policy
from haq.search.budget import check_feasible, enforce, enforce_level, parse_budget
from haq.search.config import SearchConfig
from haq.search.ddpg import DDPG, DDPGConfig, stretched_sigma_decay
from haq.search.env import STATE_DIM, Episode, action_to_bits
from haq.search.runner import Search, search
from haq.search.setup import build_context
from tests.conftest import conv_spec

TIMING_KEYS = ("seconds", "eval_seconds", "run")  # and the run id: another per run


@pytest.fixture(scope="module")
def mbv2_table():
    layers = extract_layers(create_model("mobilenet_v2_fmnist"), (1, 28, 28))
    return {hw: cost_table(layers, load_hardware(hw)) for hw in ("bismo-edge", "bitfusion")}


def tiny_cfg(ckpt: str, **kw) -> SearchConfig:
    cfg = SearchConfig(
        model="tests.conftest:TinyNet",
        checkpoint=ckpt,
        dataset="digits",
        hardware="bitfusion",
        budgets={"energy": "0.85x"},
        strategy="haq",
        episodes=6,
        finetune_steps=1,
        finetune_size=600,
        heldout_size=300,
        check_size=300,
        batch_size=32,
        ddpg=DDPGConfig(warmup_episodes=2, seed=0),
    )
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def _strip(path):
    return [
        {k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS}
        for line in path.read_text().splitlines()
    ]


# --- budgets ---------------------------------------------------------------------------------
def test_budget_parsing(mbv2_table):
    t = mbv2_table["bitfusion"]
    ref = t.uniform_cost(8)
    assert parse_budget("latency", "0.5x", t).limit == pytest.approx(0.5 * ref.total("latency"))
    assert parse_budget("latency", "12ms", t).limit == pytest.approx(0.012)
    assert parse_budget("energy", "3.5mJ", t).limit == pytest.approx(3.5e-3)
    assert parse_budget("size", "1.2MB", t).limit == pytest.approx(1.2e6)
    assert parse_budget("size", "0.1x", t).limit == pytest.approx(0.1 * t.fp32_size_bytes())
    assert parse_budget("bops", "2.5G", t).limit == pytest.approx(2.5e9)
    for metric, text, msg in [
        ("latency", "fast", "malformed"),
        ("latency", "0x", "must be a positive finite number"),
        ("latency", "1e400ms", "must be a positive finite number"),
        ("latency", "-3ms", "malformed"),
        ("latency", "3parsecs", "unknown unit"),
        ("power", "1W", "unknown budget metric"),
    ]:
        with pytest.raises(HaqError, match=msg):
            parse_budget(metric, text, t)
    with pytest.raises(HaqError, match="no energy model"):
        parse_budget("energy", "0.5x", mbv2_table["bismo-edge"])


def _enforced_random_proposal(t, enforcer, seed, budgets):
    """A random proposal (first layer's weights and the last layer pinned at 8 bits) and its
    enforcement, with what every enforcement guarantees checked: each budget holds, bits only
    go down and stay >= 2, pins untouched. Returns (w0, a0, w, a, free operand mask)."""
    n = len(t.layers)
    pw, pa = np.zeros(n, np.int64), np.zeros(n, np.int64)
    pw[0] = pw[-1] = pa[-1] = 8
    rng = np.random.default_rng(seed)
    w0, a0 = rng.integers(2, 9, n), rng.integers(2, 9, n)
    w0, a0 = np.where(pw > 0, pw, w0), np.where(pa > 0, pa, a0)
    w, a = enforcer(t, w0, a0, budgets, 2, pw, pa)
    cost = t.policy_cost(w, a)
    for b in budgets:
        assert cost.total(b.metric) <= b.limit * (1 + 1e-9)
    assert (w <= w0).all() and (a <= a0).all() and w.min() >= 2 and a.min() >= 2
    assert w[0] == 8 and w[-1] == 8 and a[-1] == 8  # pins untouched
    return w0, a0, w, a, np.concatenate([pw == 0, pa == 0])


@pytest.mark.parametrize("seed", range(5))
def test_enforcement_always_within_every_budget(mbv2_table, seed):
    t = mbv2_table["bitfusion"]
    budgets = [
        parse_budget("latency", "0.85x", t),
        parse_budget("energy", "0.5x", t),
        parse_budget("size", "0.1x", t),
    ]
    w0, a0, w, a, _ = _enforced_random_proposal(t, enforce, seed, budgets)
    # the paper's order: the last free layer is lowered first
    assert (w0 - w)[-2] + (a0 - a)[-2] >= (w0 - w)[1] + (a0 - a)[1]


@pytest.mark.parametrize("seed", range(3))
def test_level_enforcement_holds_every_budget_and_lowers_the_most_precise_first(mbv2_table, seed):
    t = mbv2_table["bitfusion"]
    n = len(t.layers)
    budgets = [parse_budget("energy", "0.5x", t), parse_budget("size", "0.15x", t)]
    w0, a0, w, a, free = _enforced_random_proposal(t, enforce_level, seed, budgets)
    before, after = np.concatenate([w0, a0])[free], np.concatenate([w, a])[free]
    lowered = after < before
    assert lowered.any()
    # each bit taken was the highest at that moment: a lowered operand ends at most one bit
    # below the highest free operand
    assert (after.max() - after[lowered] <= 1).all()
    # a layer proposed low keeps its bits under level; the reference rounds lower it as well
    pw, pa = np.where(free[:n], 0, 8), np.where(free[n:], 0, 8)
    w8, a8 = np.full(n, 8), np.full(n, 8)
    w8[1] = a8[1] = 3
    w_lvl, a_lvl = enforce_level(t, w8, a8, budgets, 2, pw, pa)
    w_ref, a_ref = enforce(t, w8, a8, budgets, 2, pw, pa)
    assert w_lvl[1] == a_lvl[1] == 3 and w_ref[1] + a_ref[1] < 6


def test_infeasible_budget_message(mbv2_table):
    t = mbv2_table["bismo-edge"]
    n = len(t.layers)
    with pytest.raises(
        HaqError, match=r"infeasible: the smallest achievable latency .* is [0-9.]+ ms"
    ):
        check_feasible(
            t, [parse_budget("latency", "0.01x", t)], 2, np.zeros(n, int), np.zeros(n, int)
        )


def test_anchor_episode_proposes_the_top_bit_and_keeps_the_other_draws():
    state = np.zeros(STATE_DIM, dtype=np.float32)
    on = DDPG(STATE_DIM, 5, DDPGConfig(warmup_episodes=2, seed=3))
    off = DDPG(STATE_DIM, 5, DDPGConfig(warmup_episodes=2, seed=3, anchor=False))
    assert [on.act(state, 0) for _ in range(5)] == [1.0] * 5
    assert max(off.act(state, 0) for _ in range(5)) < 1.0  # random, as in the paper
    assert [on.act(state, 1) for _ in range(5)] == [off.act(state, 1) for _ in range(5)]


# --- environment -----------------------------------------------------------------------------
def test_action_mapping_covers_each_bit_equally():
    actions = (np.arange(70000) + 0.5) / 70000
    bits = action_to_bits(actions, 2, 8)
    counts = np.bincount(bits, minlength=9)[2:]
    assert counts.tolist() == [10000] * 7
    assert action_to_bits(1.0, 2, 8) == 8 and action_to_bits(0.0, 2, 8) == 2
    assert action_to_bits(np.array([0.0, 0.999]), 1, 8).tolist() == [1, 8]


def test_states_are_normalised_and_flagged():
    layers = extract_layers(create_model("mobilenet_v2_fmnist"), (1, 28, 28))
    ep = Episode(layers)
    assert len(ep) == 2 * len(layers)
    s0, s1 = ep.state(0, 0.0), ep.state(1, 0.7)
    assert s0.shape == (10,) and (s0 >= 0).all() and (s0 <= 1).all()
    assert s0[9] == 1.0 and s1[9] == 0.0 and s1[8] == pytest.approx(0.7)
    assert len(Episode(layers, weights_only=True)) == len(layers)


# --- agent -----------------------------------------------------------------------------------
def test_agent_learns_a_known_optimum():
    """Reward computed from the policy alone: -0.1 x L1 distance to a known bit vector."""
    torch.set_num_threads(1)
    layers = [conv_spec(8 * (i + 1), 16, 3, 8, name=f"l{i}") for i in range(4)]
    layers = [type(s)(**{**s.__dict__, "index": i}) for i, s in enumerate(layers)]
    ep = Episode(layers, weights_only=True)
    target = np.array([2, 7, 4, 6])
    agent = DDPG(STATE_DIM, len(ep), DDPGConfig(warmup_episodes=10, seed=0))
    rewards = []
    for e in range(160):
        states, actions, prev = [], [], 0.0
        for step in range(len(ep)):
            s = ep.state(step, prev)
            prev = agent.act(s, e)
            states.append(s)
            actions.append(prev)
        w, _ = ep.actions_to_bits(actions, 1, 8)
        r = -0.1 * float(np.abs(w - target).sum())
        rewards.append(r)
        agent.observe_episode(np.stack(states), np.array(actions), r)  # as the runner does
        if e >= 10:
            agent.update(len(ep))
    assert np.mean(rewards[:10]) < -0.7  # random warm-up: far from the optimum
    # uniformly random bits are 9.75 bits from the target on average (reward -0.975); the
    # exploration noise left at the end (sigma 0.12, ~1 bit) alone costs about 3 bits
    assert np.mean(rewards[-20:]) > -0.6
    greedy, prev = [], 0.0
    for i in range(4):  # roll out the actor without noise
        prev = agent.act(ep.state(i, prev), 999, explore=False)
        greedy.append(prev)
    assert np.abs(action_to_bits(np.array(greedy), 1, 8) - target).sum() <= 5  # of 9.75


def test_hand_written_agent_step_matches_autograd():
    """Train steps of the hand-written DDPG against the reference learner of the same class
    (``Net`` modules, autograd, torch.optim.Adam): losses, both networks, both target networks,
    the baseline and the actions must agree."""
    cfg = DDPGConfig(hidden=16, batch_size=8, seed=3, baseline_alpha=0.5, tau=0.1)
    d = 4
    fast, ref = DDPG(d, 6, cfg), DDPG(d, 6, dataclasses.replace(cfg, autograd=True))
    assert isinstance(ref.nets[0], torch.nn.Module)
    rng = np.random.default_rng(0)
    for agent in (fast, ref):
        rows = np.random.default_rng(1)
        agent.observe_episode(rows.random((6, d), dtype=np.float32), rows.random(6), 0.7)
        agent.observe_episode(rows.random((6, d), dtype=np.float32), rows.random(6), -0.2)
    for _ in range(5):
        batch = fast.buffer.sample(rng, cfg.batch_size)
        got, want = fast.train_step(batch), ref.train_step(batch.clone())
        assert got == pytest.approx(want, rel=1e-5, abs=1e-7)
        for key in DDPG._NETS:
            a, b = getattr(fast, key).flat, getattr(ref, key).flat
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert fast.baseline == pytest.approx(ref.baseline)
    state = np.full(d, 0.5, dtype=np.float32)
    assert fast.mean_action(state) == pytest.approx(ref.mean_action(state), abs=1e-6)
    # the reference's modules train the agent's own weights (aliased), not copies
    assert ref.nets[0].w1.data_ptr() == ref.actor.p["w1"].data_ptr()


# --- runner ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def agent_run(tiny_ckpt, tmp_path_factory):
    """One finished 6-episode agent search on the tiny model (bitfusion, energy <= 0.85x)."""
    run = tmp_path_factory.mktemp("agent") / "run"
    return run, search(tiny_cfg(tiny_ckpt), run, progress=False)


def test_every_record_holds_the_budget_and_the_reward_formula(agent_run):
    run, summary = agent_run
    records = [json.loads(line) for line in (run / "episodes.jsonl").read_text().splitlines()]
    assert len(records) == 6
    assert {"w_bits", "a_bits", "cost", "accuracy", "reward", "seconds", "run"} <= set(records[0])
    limit = summary["budgets"]["energy"]["limit"]
    for r in records:
        assert r["cost"]["energy"] <= limit * (1 + 1e-9)
        assert r["reward"] == pytest.approx(0.1 * (r["accuracy"] - summary["fp_heldout_top1"]))
    assert summary["uniform"]["cost"]["energy"] <= limit * (1 + 1e-9)


def test_the_best_policy_keeps_the_pins_and_drives_haq_cost(agent_run, capsys):
    run, summary = agent_run
    best = Policy.load(run / "best_policy.json")
    assert best.names == ["body.0", "body.2", "body.5", "head"]
    assert best.w_bits[0] == 8 and best.key()[-1] == (8, 8)  # pinned first and last
    argv = ["cost", "--model", "tests.conftest:TinyNet", "--input-shape", "1,8,8"]
    assert main([*argv, "--hardware", "bitfusion", "--policy", str(run / "best_policy.json")]) == 0
    # it records what it was searched for, and haq cost costs that unless told otherwise
    # (before: MobileNet-V2 at 224 on BISMO edge, whose layer names a MobileNet-V2-style
    # model's policy fits, so the numbers looked right)
    info = best.info
    assert (info["model"], info["input_shape"], info["hardware_spec"]) == (
        "tests.conftest:TinyNet", [1, 8, 8], "bitfusion"
    )  # fmt: skip
    capsys.readouterr()
    assert main(["cost", "--policy", str(run / "best_policy.json"), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert (report["model"], report["input_shape"]) == ("tests.conftest:TinyNet", [1, 8, 8])
    assert report["total"]["energy_mj"] == pytest.approx(summary["best"]["cost"]["energy"] * 1e3)
    assert "model and hardware as best_policy.json was searched for" in err


def test_the_anchor_episode_is_the_top_bit_enforced_to_the_budget(agent_run, tmp_path):
    run, summary = agent_run
    config = json.loads((run / "config.json").read_text())
    assert config["hardware"] == "bitfusion" and config["ddpg"]["anchor"] is True
    first = json.loads((run / "episodes.jsonl").read_text().splitlines()[0])
    # from all-8 both enforcements give the same policy
    ctx = build_context(SearchConfig.from_dict(config))
    w, a = Search(ctx, tmp_path / "scratch", progress=False)._enforce(np.full(4, 8), np.full(4, 8))
    assert (first["w_bits"], first["a_bits"]) == (w.tolist(), a.tolist())
    assert first["cost"]["energy"] > 0.9 * summary["budgets"]["energy"]["limit"]  # it fills it


def test_a_directory_that_holds_a_run_is_not_overwritten(agent_run, tiny_ckpt):
    run, _ = agent_run
    before = (run / "episodes.jsonl").read_bytes()
    with pytest.raises(HaqError, match="already holds a haq run"):
        search(tiny_cfg(tiny_ckpt), run, progress=False)
    assert (run / "episodes.jsonl").read_bytes() == before


def test_random_and_uniform_strategies(tiny_ckpt, tmp_path):
    s = search(tiny_cfg(tiny_ckpt, strategy="random", episodes=3), tmp_path / "r", progress=False)
    assert s["episodes"] == 3
    u = search(tiny_cfg(tiny_ckpt, strategy="uniform"), tmp_path / "u", progress=False)
    assert u["episodes"] == 1 and u["best"]["w_bits"][1:-1] == u["uniform"]["w_bits"][1:-1]


def test_kmeans_size_search(tiny_ckpt, tmp_path):
    s = search(
        tiny_cfg(
            tiny_ckpt, mode="kmeans", budgets={"size": "0.1x"}, episodes=3, keep_8bit=["first"]
        ),
        tmp_path / "k",
        progress=False,
    )
    assert s["best"]["cost"]["size"] <= 0.1 * s["fp32_size_bytes"] * (1 + 1e-9)


def test_resume_reproduces_uninterrupted_run(tiny_ckpt, tmp_path, monkeypatch):
    search(tiny_cfg(tiny_ckpt), tmp_path / "a", progress=False)
    original = Search.save_state
    calls = {"n": 0}

    def crash_after_writing(self):
        calls["n"] += 1
        if calls["n"] == 4:  # episode 3 is in episodes.jsonl but not in the checkpoint
            raise KeyboardInterrupt
        original(self)

    monkeypatch.setattr(Search, "save_state", crash_after_writing)
    with pytest.raises(KeyboardInterrupt):
        search(tiny_cfg(tiny_ckpt), tmp_path / "b", progress=False)
    monkeypatch.setattr(Search, "save_state", original)
    assert len((tmp_path / "b" / "episodes.jsonl").read_text().splitlines()) == 4
    search(None, tmp_path / "b", resume=True, progress=False)
    assert _strip(tmp_path / "a" / "episodes.jsonl") == _strip(tmp_path / "b" / "episodes.jsonl")


def test_exploration_schedule_is_the_papers_stretched_to_the_run():
    assert stretched_sigma_decay(600, 20) == pytest.approx(0.99)
    decay = stretched_sigma_decay(60, 20)
    assert decay == pytest.approx(0.99 ** (580 / 40))
    agent = DDPG(STATE_DIM, 4, DDPGConfig(sigma_decay=decay))
    paper = DDPG(STATE_DIM, 4, DDPGConfig(sigma_decay=0.99))
    assert agent.sigma(60) == pytest.approx(paper.sigma(600))  # same final exploration
    assert agent.sigma(20) == paper.sigma(20) == 0.5
    assert DDPG(STATE_DIM, 4, DDPGConfig()).sigma(21) == pytest.approx(0.5 * 0.99)


def test_resume_keeps_the_saved_exploration_schedule(tiny_ckpt, tmp_path):
    search(tiny_cfg(tiny_ckpt, episodes=3), tmp_path / "g", progress=False)
    saved = json.loads((tmp_path / "g" / "config.json").read_text())["ddpg"]["sigma_decay"]
    assert saved == pytest.approx(stretched_sigma_decay(3, 2))
    summary = search(None, tmp_path / "g", resume=True, progress=False, episodes=5)
    assert summary["episodes"] == 5
    grown = json.loads((tmp_path / "g" / "config.json").read_text())
    assert grown["episodes"] == 5 and grown["ddpg"]["sigma_decay"] == saved


def test_resume_refusals(tiny_ckpt, tmp_path):
    search(tiny_cfg(tiny_ckpt, episodes=3), tmp_path / "c", progress=False)
    before = (tmp_path / "c" / "episodes.jsonl").read_text()
    with pytest.raises(HaqError, match=r"different configuration .*hardware"):
        search(None, tmp_path / "c", resume=True, progress=False, hardware="bismo-edge")
    other_seed = tiny_cfg(tiny_ckpt, episodes=3)
    other_seed.ddpg.seed = 5  # a nested option is named with its value before and after
    with pytest.raises(HaqError, match=r"differs in: ddpg\.seed 0 -> 5\)"):
        search(other_seed, tmp_path / "c", resume=True, progress=False)
    (tmp_path / "c" / "state.pt").write_bytes(b"garbage")
    with pytest.raises(HaqError, match="corrupt"):
        search(None, tmp_path / "c", resume=True, progress=False)
    assert (tmp_path / "c" / "episodes.jsonl").read_text() == before
    with pytest.raises(HaqError, match=r"run directory .*nothing' not found"):
        search(None, tmp_path / "nothing", resume=True, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(HaqError, match=r"no config\.json"):
        search(None, tmp_path / "empty", resume=True, progress=False)


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"budgets": {"latency": "0.001x"}}, "infeasible"),
        ({"budgets": {"energy": "0.9x"}, "hardware": "bismo-edge"}, "no energy model"),
        ({"budgets": {"latency": "abc"}}, "malformed"),
        ({"budgets": {"latency": "-1x"}}, "malformed"),
        ({"budgets": {"power": "1x"}}, "unknown budget metric"),
        ({"finetune_size": 5000}, "exceed"),
        ({"keep_8bit": ["nolayer"]}, "not 'first', 'last' or a layer name"),
        ({"ddpg": DDPGConfig(sigma_decay=1.5)}, r"--sigma-decay must be <= 1, got 1.5"),
    ],
)
def test_bad_search_input_refused_before_work(tiny_ckpt, tmp_path, kw, msg):
    with pytest.raises(HaqError, match=msg):
        search(tiny_cfg(tiny_ckpt, **kw), tmp_path / "x", progress=False)
    assert not (tmp_path / "x" / "episodes.jsonl").exists()


def test_model_without_quantizable_layers(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("import torch.nn as nn\ndef build():\n    return nn.Sequential(nn.Flatten())\n")
    save_checkpoint(
        tmp_path / "m.pt",
        __import__("torch").nn.Sequential(__import__("torch").nn.Flatten()),
        CheckpointMeta(f"{path}:build", (1, 8, 8), "digits"),
    )
    cfg = tiny_cfg(str(tmp_path / "m.pt"), model=f"{path}:build")
    with pytest.raises(HaqError, match="no quantizable layers"):
        search(cfg, tmp_path / "y", progress=False)


def test_cli_search_bad_budget_one_line(capsys, tiny_ckpt, tmp_path):
    code = main(
        [
            "search",
            "--model",
            "tests.conftest:TinyNet",
            "--checkpoint",
            tiny_ckpt,
            "--dataset",
            "digits",
            "--latency",
            "fast",
            "--out",
            str(tmp_path / "z"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "malformed" in err and "Traceback" not in err


def test_cli_search_bad_sigma_decay_one_line(capsys, tiny_ckpt, tmp_path):
    args = ["search", "--model", "tests.conftest:TinyNet", "--checkpoint", tiny_ckpt]
    args += ["--dataset", "digits", "--sigma-decay", "0", "--out", str(tmp_path / "s")]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and "--sigma-decay: must be > 0, got 0.0" in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()


def test_an_agent_search_shorter_than_its_warm_up_says_so(capsys, tiny_ckpt, tmp_path):
    """--strategy haq --episodes 3 ran three random policies under the agent's name."""
    args = ["search", "--model", "tests.conftest:TinyNet", "--checkpoint", tiny_ckpt]
    args += ["--dataset", "digits", "--energy", "0.85x", "--hardware", "bitfusion"]
    args += ["--finetune-steps", "1", "--finetune-size", "600", "--heldout-size", "300"]
    args += ["--check-size", "300", "--strategy", "haq", "--no-progress", "--no-report"]
    assert main([*args, "--episodes", "2", "--warmup", "2", "--out", str(tmp_path / "a")]) == 0
    note = "note: all 2 episodes are the agent's random warm-up (--warmup 2)"
    assert note in capsys.readouterr().err
    assert main([*args, "--episodes", "3", "--warmup", "2", "--out", str(tmp_path / "b")]) == 0
    assert "warm-up" not in capsys.readouterr().err


def test_redraws_turn_repeats_of_a_converged_agent_into_new_policies(tiny_ckpt, tmp_path):
    def run(name, redraws):
        ddpg = DDPGConfig(warmup_episodes=2, seed=0, sigma_decay=0.01, redraws=redraws)
        search(tiny_cfg(tiny_ckpt, episodes=10, ddpg=ddpg), tmp_path / name, progress=False)
        return _strip(tmp_path / name / "episodes.jsonl")

    plain, redrawn = run("plain", 0), run("redrawn", 6)
    # with sigma collapsed after warm-up the paper's agent repeats itself: cache hits
    assert sum(r["cached"] for r in plain[2:]) >= 3
    assert all(r["redraws"] == 0 for r in plain)
    # with redraws an episode repeats a policy only when every redraw did too
    assert all(not r["cached"] or r["redraws"] == 6 for r in redrawn[2:])
    assert sum(not r["cached"] for r in redrawn) > sum(not r["cached"] for r in plain)
    widened = [r for r in redrawn if r["redraws"]]
    assert widened
    for r in widened:  # sigma doubled per redraw, at most the initial 0.5
        decayed = 0.01 ** (r["episode"] - 2)
        assert r["sigma"] == pytest.approx(0.5 * min(1.0, decayed * 2 ** r["redraws"]))
    first = widened[0]["episode"]  # until the first redraw the runs are the same
    assert redrawn[:first] == plain[:first]
