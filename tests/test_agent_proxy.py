"""benchmarks/bench_agent_seeds.py, the proxy of the search used to compare agent variants:
it must count evaluations as a real search does (a repeated policy is a cache hit), so that
``--redraws`` acts on it, and report the noiseless value of the policies it scores."""

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from benchmarks import bench_agent_seeds as proxy

from haq.errors import HaqError
from haq.search.runner import search
from tests.test_search import tiny_cfg


@pytest.fixture(scope="module")
def ilp_run(tiny_ckpt, tmp_path_factory) -> Path:
    """A real ilp run on the tiny model: its measured sensitivities make the proxy."""
    run = tmp_path_factory.mktemp("proxy") / "ilp"
    search(
        tiny_cfg(tiny_ckpt, strategy="ilp", episodes=2, sensitivity_images=64), run, progress=False
    )
    return run


def test_a_repeated_policy_is_a_cache_hit_with_the_same_score(ilp_run):
    _, ctx, score, c = proxy.scenario(ilp_run)
    s = proxy.ProxySearch(ctx, score, c, 0.3, "actor")
    w, a = np.array([8, 4, 3, 8]), np.array([8, 5, 2, 8])
    first, again = s._evaluate_round([(w, a), (w, a)])
    assert not first[0].cached and again[0].cached
    assert first[0].accuracy == again[0].accuracy
    assert s.state.evaluations == 1
    # the noiseless value is the proxy without its fixed per-policy scatter
    planned = score[np.arange(4), w - 1, a - 1].sum()
    assert s.clean(w, a) == pytest.approx(ctx.fp_accuracy - c * planned)
    assert 0 < abs(first[0].accuracy - s.clean(w, a)) < 2.0  # 0.3-point scatter, drawn once


def test_redraws_turn_repeats_into_new_evaluations(ilp_run):
    cfg, ctx, score, c = proxy.scenario(ilp_run)
    args = argparse.Namespace(episodes=16, noise=0.3)
    plain, plain_clean, _ = proxy.run_one(cfg, ctx, score, c, args, "haq", "default", 0)
    redrawn, _, _ = proxy.run_one(cfg, ctx, score, c, args, "haq", "default-redraw", 0)
    # the plain agent converges and repeats policies; repeats are not evaluations
    assert len(plain) < args.episodes
    assert len(redrawn) > len(plain)
    assert len(plain_clean) == len(plain)
    assert proxy.reach(plain, max(plain)) == int(np.argmax(plain)) + 1
    assert proxy.reach(plain, max(plain) + 1.0) is None


def test_a_run_without_sensitivities_is_refused(tiny_ckpt, tmp_path):
    run = tmp_path / "uniform"
    search(tiny_cfg(tiny_ckpt, strategy="uniform", episodes=None), run, progress=False)
    with pytest.raises(HaqError, match="not a finished ilp or greedy run"):
        proxy.scenario(run)


def test_a_missing_run_is_one_line_and_exit_2(tmp_path):
    script = Path(proxy.__file__)
    cmd = [sys.executable, str(script), "--run", str(tmp_path / "nope"), "--json", "x.json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith("bench_agent_seeds.py: error: ")
    assert not (tmp_path / "x.json").exists()
