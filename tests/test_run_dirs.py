"""Run directories are owned (issue 14, item 1): one writer at a time, a stale lock taken
over, no search into a directory holding other files, and a first-episode failure leaves
the directory as it was."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from haq.errors import HaqError
from haq.runlock import LOCK_NAME, run_lock
from haq.search.runner import search
from tests.test_search import tiny_cfg

HOLD = """
import sys, time
from haq.runlock import run_lock
with run_lock(sys.argv[1], "test holder"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_is_refused_while_the_owner_lives(tiny_ckpt: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    search(tiny_cfg(tiny_ckpt, episodes=2), run, progress=False)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(HaqError, match=f"in use by pid {holder.pid} on host .*test holder"):
            search(None, run, resume=True, progress=False, episodes=3)
    finally:
        holder.kill()
        holder.wait()
    # the holder died without cleaning up: its lock is stale and taken over
    assert f"pid {holder.pid}" in (run / LOCK_NAME).read_text()
    summary = search(None, run, resume=True, progress=False, episodes=3)
    assert summary["episodes"] == 3
    assert (run / LOCK_NAME).read_text() == ""  # a clean exit empties the lock file


def test_stale_lock_is_taken_over_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / LOCK_NAME).write_text("pid 999999 on host gone (haq search, since then)\n")
    with run_lock(tmp_path, "test"):
        assert "pid" in (tmp_path / LOCK_NAME).read_text()
    assert "took over the lock of pid 999999 on host gone" in capsys.readouterr().err


def test_out_must_be_empty_or_absent(tiny_ckpt: str, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(HaqError, match="not empty and not a haq run .*notes.txt"):
        search(tiny_cfg(tiny_ckpt), other, progress=False)
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    run = tmp_path / "run"
    search(tiny_cfg(tiny_ckpt, episodes=2), run, progress=False)
    before = (run / "config.json").read_text()
    with pytest.raises(HaqError, match="already holds a haq run; continue it with --resume"):
        search(tiny_cfg(tiny_ckpt, episodes=4), run, progress=False)
    assert (run / "config.json").read_text() == before


def test_first_episode_failure_leaves_the_directory_as_it_was(
    tiny_ckpt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure in the first evaluation (injected: the tiny model's quantizers bound every
    value, so no real input makes it fail there) removes what the run wrote."""
    import haq.search.parallel as runner  # where episodes are evaluated

    def fail(*_args: object, **_kw: object) -> None:
        raise HaqError("injected failure in the first episode")

    real = runner.evaluate_policy
    monkeypatch.setattr(runner, "evaluate_policy", fail)
    run = tmp_path / "run"
    with pytest.raises(HaqError, match="injected"):
        search(tiny_cfg(tiny_ckpt), run, progress=False)
    assert not run.exists()
    run.mkdir()
    with pytest.raises(HaqError, match="injected"):
        search(tiny_cfg(tiny_ckpt), run, progress=False)
    assert [p.name for p in run.iterdir()] == [LOCK_NAME]  # the user's directory stays
    monkeypatch.setattr(runner, "evaluate_policy", real)
    assert search(tiny_cfg(tiny_ckpt, episodes=2), run, progress=False)["episodes"] == 2


def test_resume_cannot_shrink_a_run(tiny_ckpt: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    search(tiny_cfg(tiny_ckpt, episodes=3), run, progress=False)
    before = (run / "config.json").read_text()
    with pytest.raises(HaqError, match="can only grow"):
        search(None, run, resume=True, progress=False, episodes=2)
    assert (run / "config.json").read_text() == before


def test_small_input_checks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from haq.cli import main

    (tmp_path / "p.json").write_bytes(b"\xff\xfe\x00binary")
    for argv, msg in (
        (["eval", "--policy", str(tmp_path / "p.json")], "not a text file"),
        (["finetune", "--policy", str(tmp_path / "p.json")], "not a text file"),
        (
            ["export", "--run", str(tmp_path / "none"), "--format", "torch", "--out", "x"],
            "not found",
        ),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, err
    from haq.finishing import final_finetune
    from haq.policy import Policy
    from haq.specs import DataSpec, FinetuneSpec, ModelSpec, QuantSpec

    policy = Policy.uniform("w8a8", ["x"])
    for kw, msg in (({"epochs": -1.0}, "--epochs"), ({"lr": float("nan")}, "--lr")):
        with pytest.raises(HaqError, match=msg):
            spec = FinetuneSpec(**kw)  # type: ignore[arg-type]
            final_finetune(policy, ModelSpec(), DataSpec(), QuantSpec(), tmp_path / "f.pt", spec)


def test_a_checkpoint_brings_its_own_model(tiny_ckpt: str, tmp_path: Path) -> None:
    """`haq search --checkpoint C` without --model searches C's model, not the default."""
    cfg = tiny_cfg(tiny_ckpt, episodes=1, strategy="uniform")
    overrides = {k: v for k, v in cfg.to_dict().items() if k not in ("model", "ddpg")}
    summary = search(None, tmp_path / "run", progress=False, **overrides)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"] == "tests.conftest:TinyNet" and summary["episodes"] == 1


def test_a_run_started_with_relative_paths_works_from_any_directory(
    tiny_ckpt, tmp_path, monkeypatch, capsys
):
    """config.json kept paths as typed, so report, resume, finetune and export of a run
    failed with "not found" from any directory but the one the search started in (a
    `cd runs; haq report x` away). New runs save them absolute."""
    from haq.cli import main

    start, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    start.mkdir()
    elsewhere.mkdir()
    (start / "tiny.pt").write_bytes(Path(tiny_ckpt).read_bytes())
    (start / "net.py").write_text("from tests.conftest import TinyNet\n\ndef net():\n    return TinyNet()\n")  # fmt: skip
    monkeypatch.chdir(start)
    assert main(["cost", "--model", "net.py:net", "--input-shape", "1,8,8", "--hardware", "bitfusion", "--table", "t.npz"]) == 0  # fmt: skip
    argv = ["search", "--model", "net.py:net", "--checkpoint", "tiny.pt", "--dataset", "digits"]
    argv += ["--hardware", "t.npz", "--latency", "0.9x", "--keep-8bit", "none"]
    argv += ["--finetune-steps", "1", "--finetune-size", "600", "--heldout-size", "300"]
    argv += ["--check-size", "300", "--episodes", "2", "--strategy", "random", "--no-progress"]
    assert main([*argv, "--out", "runs/r"]) == 0
    config = json.loads((start / "runs/r/config.json").read_text())
    assert config["checkpoint"] == str(start / "tiny.pt")
    assert config["hardware"] == str(start / "t.npz")
    assert config["model"] == f"{start / 'net.py'}:net"
    monkeypatch.chdir(elsewhere)
    run = str(start / "runs/r")
    assert main(["report", run, "--out", "rep"]) == 0
    assert main(["search", "--resume", run, "--episodes", "3", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["finetune", "--run", run, "--epochs", "1", "--no-progress"]) == 0
    assert "searched for" not in capsys.readouterr().err  # the same model, however written
    assert main(["export", "--run", run, "--format", "torch", "--out", "m.pt"]) == 0
    assert len((start / "runs/r/episodes.jsonl").read_text().splitlines()) == 3
