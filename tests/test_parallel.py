"""Episodes evaluated in parallel by Ray actors (issue 11), on a real local Ray cluster bound to
127.0.0.1 that the search starts and shuts down itself.

The random strategy's policies do not depend on the rewards, so a parallel random search must
record exactly the serial one's episodes (the workers run one torch thread each; the serial
reference does too). The agent runs in rounds; it is checked to finish with every episode
recorded once. A worker killed mid-search is replaced and its policy evaluated again, and a
driver killed mid-round resumes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from haq.errors import HaqError
from haq.search.parallel import RayPool, _start_local_ray
from haq.search.rundir import RunDir
from haq.search.runner import search
from tests.test_search import _strip, tiny_cfg

ray = pytest.importorskip("ray")  # an optional extra; scripts/setup.sh installs it, so CI runs this
PARALLEL_KEYS = ("worker", "wait_seconds")


@pytest.fixture
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """One local cluster for the tests that do not check its start and shutdown: a search
    joins a running cluster and leaves it running."""
    _start_local_ray(ray)
    yield
    ray.shutdown()


def _records(run: Path) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k not in PARALLEL_KEYS}
        for r in _strip(run / "episodes.jsonl")
    ]


def test_parallel_random_search_records_the_serial_episodes(
    tiny_ckpt: str, tmp_path: Path, one_thread: None
) -> None:
    cfg = tiny_cfg(tiny_ckpt, strategy="random", episodes=6)
    search(cfg, tmp_path / "serial", progress=False)
    summary = search(
        tiny_cfg(tiny_ckpt, strategy="random", episodes=6, eval_workers=2),
        tmp_path / "ray",
        progress=False,
    )
    assert _records(tmp_path / "ray") == _records(tmp_path / "serial")
    workers = {r["worker"] for r in RunDir(tmp_path / "ray").read_episodes() if not r["cached"]}
    assert workers == {0, 1}  # both actors evaluated
    assert summary["parallel"]["eval_workers"] == 2 and summary["parallel"]["workers_replaced"] == 0
    assert 0 < summary["parallel"]["utilisation"] <= 1.0
    assert not ray.is_initialized()  # the search shut down the cluster it started


def test_the_agent_runs_in_rounds(
    tiny_ckpt: str, tmp_path: Path, one_thread: None, cluster: None
) -> None:
    summary = search(
        tiny_cfg(tiny_ckpt, episodes=6, eval_workers=3), tmp_path / "haq", progress=False
    )
    assert summary["episodes"] == 6
    assert [r["episode"] for r in RunDir(tmp_path / "haq").read_episodes()] == list(range(6))


def test_a_killed_worker_is_replaced_and_its_policy_evaluated_again(
    tiny_ckpt: str,
    tmp_path: Path,
    one_thread: None,
    monkeypatch: pytest.MonkeyPatch,
    cluster: None,
) -> None:
    original = RayPool.evaluate
    calls = {"n": 0}

    def kill_one_then_evaluate(self: RayPool, policies: list) -> list:
        calls["n"] += 1
        if calls["n"] == 2:  # the second round: worker 0 dies before it can answer
            ray.kill(self.actors[0])
        return original(self, policies)

    monkeypatch.setattr(RayPool, "evaluate", kill_one_then_evaluate)
    cfg = tiny_cfg(tiny_ckpt, strategy="random", episodes=6, eval_workers=2)
    summary = search(cfg, tmp_path / "ray", progress=False)
    assert summary["parallel"]["workers_replaced"] == 1
    search(tiny_cfg(tiny_ckpt, strategy="random", episodes=6), tmp_path / "serial", progress=False)
    assert _records(tmp_path / "ray") == _records(tmp_path / "serial")  # each once, same scores


DRIVER = """
import os, signal, sys
from haq.search.parallel import RayPool
from haq.search.runner import search
from tests.test_search import tiny_cfg
evaluate, rounds = RayPool.evaluate, []
def die_in_the_third_round(self, policies):
    rounds.append(policies)
    if len(rounds) == 3:  # two rounds are recorded, the third is proposed: SIGKILL, no cleanup
        os.killpg(os.getpgrp(), signal.SIGKILL)
    return evaluate(self, policies)
RayPool.evaluate = die_in_the_third_round
cfg = tiny_cfg(sys.argv[1], strategy="random", episodes=int(sys.argv[3]), eval_workers=2)
search(cfg, sys.argv[2], progress=False)
"""


def test_resume_after_the_driver_is_killed(
    tiny_ckpt: str, tmp_path: Path, one_thread: None
) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, tiny_ckpt, str(run), "16"], env=env, start_new_session=True
    )
    try:
        driver.wait(timeout=240)
    finally:
        with contextlib.suppress(ProcessLookupError):  # what the driver started, if it lives on
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    assert driver.returncode == -signal.SIGKILL
    assert len(RunDir(run).read_episodes()) == 4  # the killed round left nothing behind
    summary = search(None, run, resume=True, progress=False)
    assert summary["episodes"] == 16
    assert [r["episode"] for r in RunDir(run).read_episodes()] == list(range(16))
    search(tiny_cfg(tiny_ckpt, strategy="random", episodes=16), tmp_path / "serial", progress=False)
    assert _records(run) == _records(tmp_path / "serial")
    assert json.loads((run / "config.json").read_text())["eval_workers"] == 2


def test_without_ray_parallel_workers_are_refused_in_one_line(
    tiny_ckpt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    cfg = tiny_cfg(tiny_ckpt, strategy="random", episodes=2, eval_workers=2)
    with pytest.raises(HaqError, match=r"--eval-workers 2 needs Ray: pip install 'haq\[ray\]'"):
        search(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
