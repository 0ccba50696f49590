"""Data never misread, inputs checked at the door, no traceback (issue 36): image folders
with symlink loops, damaged checkpoints, wrongly typed configurations, non-finite budgets,
out-of-range hardware fields, FIFOs and deep JSON as policies, more classes than outputs,
output paths that are links or pipes, over-long names, broken pipes that are not stdout,
loader-worker errors, unreachable Ray clusters, readers' locks, a lost final.json."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from haq.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from haq.cli import _one_line
from haq.data import make_loader
from haq.errors import HaqError
from haq.fileio import load_payload
from haq.imagefolder import FolderData, Preprocess, load_imagefolder
from haq.runlock import run_lock
from haq.search.config import SearchConfig
from haq.search.strategies import planned
from tests.conftest import TinyNet
from tests.test_fuzz import TINY, run_cli

OLD_RUN = Path(__file__).parent / "data" / "run-2026-12-04"
PREP = Preprocess((1, 28, 28), (0.5,), (0.5,))


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((28, 28), value, np.uint8), mode="L").save(path)


def _one_line_error(code: int, err: str, *needles: str) -> None:
    """Exit 2 and one error line, the last (a search prints its run directory first)."""
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err, err
    assert lines[-1].startswith("haq: error: ") and sum("error" in ln for ln in lines) == 1, err
    for needle in needles:
        assert needle in lines[-1], err


def test_symlinked_directories_are_followed_once(tmp_path, capsys):
    root = tmp_path / "F"
    for i in range(3):
        _png(root / "train" / "a" / f"{i}.png", 10 * i)
    for i in range(2):
        _png(root / "train" / "b" / f"{i}.png", 100 + i)
    _png(root / "val" / "a" / "v.png", 7)
    (root / "train" / "a" / "loop").symlink_to("..")  # the loop of the report: F/a/loop -> F
    (root / "train" / "a" / "bee").symlink_to("../b")  # another class's folder
    (root / "train" / "b" / "again.png").symlink_to("../a/0.png")  # a file reached twice
    (root / "val" / "a" / "seen.png").symlink_to("../../train/a/1.png")  # in both splits
    train = load_imagefolder(root, PREP, train=True)
    assert len(train) == 5 and sorted(train.labels.tolist()) == [0, 0, 0, 1, 1]
    assert "1 image file(s) reached twice through links" in capsys.readouterr().err
    test = load_imagefolder(root, PREP, train=False)
    assert len(test) == 2 and test.labels.tolist() == [0, 0]
    err = capsys.readouterr().err
    assert "val/ are also in train/" in err and "no images of 1 class(es)" in err


def test_a_damaged_checkpoint_is_refused(tmp_path):
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, TinyNet(), CheckpointMeta("tests.conftest:TinyNet", (1, 8, 8), "digits"))
    load_checkpoint(path)  # reads back
    payload = torch.load(path, weights_only=False)
    weight = payload["state_dict"]["head.weight"]
    weight.view(-1)[:1024] = 0.0  # 4 KiB zeroed inside a weight tensor, digest kept
    torch.save(payload, path)
    with pytest.raises(HaqError, match="damaged: its tensors do not match their digest"):
        load_payload(path, "haq-checkpoint-1", "haq checkpoint")
    with pytest.raises(HaqError, match="damaged"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("episodes", "many", "field 'episodes' must be an integer (got 'many')"),
        ("lr", "0.01", "field 'lr' must be a number"),
        ("ddpg", {"hidden": "300"}, "field 'ddpg.hidden' must be an integer"),
        ("keep_8bit", "first", "field 'keep_8bit' must be a list"),
        ("lr", float("inf"), "field 'lr' must be finite"),
    ],
)
def test_a_wrongly_typed_config_json_is_one_line(tmp_path, field, value, message):
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    data = json.loads((run / "config.json").read_text())
    data[field] = {**data["ddpg"], **value} if field == "ddpg" else value
    (run / "config.json").write_text(json.dumps(data))
    code, _, err = run_cli(["search", "--resume", str(run), "--no-progress"])
    _one_line_error(code, err, message, "config.json")
    with pytest.raises(HaqError, match="config.json"):
        SearchConfig.load(run / "config.json")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--hardware", "none.toml"], "hardware file 'none.toml' not found"),
        (["--latency", "5parsecs"], "unknown unit 'parsecs'"),
        (["--strategy", "haq", "--latency", "0.01x"], "is infeasible"),
    ],
)
def test_a_search_refused_before_its_data_prints_the_error_alone(tmp_path, argv, message):
    """Inputs refused before any data is read leave one line on stderr: the run directory
    and strategy lines come once the checks passed (they used to precede the error and name
    a run directory that was never made)."""
    out = tmp_path / "run"
    code, _, err = run_cli(["search", *argv, "--out", str(out), "--no-progress"])
    assert code == 2 and err.strip().splitlines() == [err.strip()] and message in err, err
    assert not out.exists()


def test_a_search_that_passed_its_checks_names_its_run_device_and_strategy(tiny_ckpt, tmp_path):
    """The lines a new search prints once its checks passed, before the data is read."""
    out = tmp_path / "run"
    argv = ["search", "--model", "tests.conftest:TinyNet", "--checkpoint", tiny_ckpt]
    argv += ["--dataset", "digits", "--hardware", "bitfusion", "--energy", "0.85x"]
    argv += ["--finetune-steps", "1", "--finetune-size", "300", "--heldout-size", "200"]
    argv += ["--check-size", "0", "--episodes", "1", "--no-report", "--no-progress"]
    code, stdout, err = run_cli([*argv, "--strategy", "uniform", "--out", str(out)])
    assert code == 0, err
    assert err.splitlines()[0] == f"run directory: {out}  (device: cpu)", err
    assert "strategy:" not in err  # asked for by name: nothing to explain
    assert "best policy:" in stdout and (out / "best_policy.json").is_file()
    code, _, err = run_cli([*argv, "--out", str(tmp_path / "auto")])
    assert code == 0 and "strategy: ilp (what --strategy auto picks for energy budgets" in err, err


def test_ctrl_c_before_the_first_checkpoint_keeps_the_run_resumable(
    tiny_ckpt, tmp_path, monkeypatch
):
    """Ctrl-C in the ILP's sensitivity pass (config.json written, no checkpoint yet): exit
    130 naming the resume command, the run kept (it used to be removed, so the documented
    `--resume` found no directory); the resume starts it again and finishes."""
    out = tmp_path / "run"
    argv = ["search", "--model", "tests.conftest:TinyNet", "--checkpoint", tiny_ckpt]
    argv += ["--dataset", "digits", "--hardware", "bitfusion", "--energy", "0.85x"]
    argv += ["--finetune-steps", "1", "--finetune-size", "300", "--heldout-size", "200"]
    argv += ["--check-size", "0", "--episodes", "1", "--sensitivity-images", "64"]
    argv += ["--strategy", "ilp", "--no-report", "--no-progress", "--out", str(out)]

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(planned, "measure_sensitivity", stopped)
    code, _, err = run_cli(argv)
    assert code == 130, err
    assert err.strip().splitlines()[-1] == f"haq: interrupted; continue with: haq search --resume {out}"  # fmt: skip
    assert (out / "config.json").is_file() and not (out / "state.pt").exists()
    monkeypatch.undo()
    code, _, err = run_cli(["search", "--resume", str(out), "--no-report", "--no-progress"])
    assert code == 0 and "has no checkpoint yet; the run starts again" in err, err
    assert (out / "best_policy.json").is_file()


def test_budgets_and_hardware_fields_must_be_finite_and_in_range(tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli(["search", "--latency", "1e400ms", "--out", str(out)])
    _one_line_error(code, err, "--latency '1e400ms' must be a positive finite number")
    assert not out.exists()
    hw = tmp_path / "hw.toml"
    preset = Path(__file__).parent.parent / "src/haq/hardware/presets/bismo-edge.toml"
    text = preset.read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("dram_efficiency"))
    hw.write_text(text.replace(line, "dram_efficiency = 5"))
    code, _, err = run_cli(["cost", *TINY, "--hardware", str(hw), "--policy", "w8a8"])
    _one_line_error(code, err, "'dram_efficiency' must be <= 1 (got 5)")


def _alarm(seconds: int):
    def fail(*_):
        raise TimeoutError("blocked")

    signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)


def test_a_fifo_or_a_deeply_nested_policy_is_one_line(tmp_path):
    fifo = tmp_path / "policy.json"
    os.mkfifo(fifo)
    _alarm(60)
    try:
        code, _, err = run_cli(["cost", *TINY, "--hardware", "bitfusion", "--policy", str(fifo)])
    finally:
        signal.alarm(0)
    _one_line_error(code, err, "is not a regular file")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    code, _, err = run_cli(["cost", *TINY, "--hardware", "bitfusion", "--policy", str(deep)])
    _one_line_error(code, err, "nested too deeply")


def test_eval_refuses_more_classes_than_outputs(tmp_path):
    for c in range(11):
        _png(tmp_path / "F" / "train" / f"c{c:02d}" / "0.png", 20 * c)
        _png(tmp_path / "F" / "val" / f"c{c:02d}" / "0.png", 20 * c)
    code, _, err = run_cli(
        ["eval", "--dataset", f"imagefolder:{tmp_path / 'F'}", "--policy", "w8a8", "--workers", "0"]
    )
    _one_line_error(code, err, "the model has 10 outputs but", "has 11 classes")


def test_output_to_a_symlink_writes_through_and_to_a_fifo_directly(tmp_path):
    target = tmp_path / "real.txt"
    target.write_text("old\n")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    argv = ["cost", *TINY, "--hardware", "bitfusion", "--policy", "w8a8", "--output"]
    code, _, err = run_cli([*argv, str(link)])
    assert code == 0, err
    assert link.is_symlink() and "latency" in target.read_text()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    code, _, err = run_cli([*argv, str(fifo)])
    reader.join(timeout=60)
    assert code == 0 and "latency" in got[0] and fifo.is_fifo(), err


def test_an_over_long_name_is_one_line(tmp_path):
    long = tmp_path / ("x" * 300)
    code, _, err = run_cli(["search", "--out", str(long), "--no-progress"])
    _one_line_error(code, err, "File name too long")
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    argv = ["export", "--run", str(run), "--format", "onnx"]
    code, _, err = run_cli([*argv, "--out", str(long) + ".onnx"])
    _one_line_error(code, err, "too long")


def test_a_broken_pipe_that_is_not_stdout_is_an_error(monkeypatch):
    def broken(*_a, **_k):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("haq.hardware.list_hardware", broken)
    code, _, err = run_cli(["hardware", "list"])
    _one_line_error(code, err, "broken pipe")


def test_a_bad_image_read_by_a_loader_worker_is_its_own_line(tmp_path):
    (tmp_path / "c").mkdir()
    bad = tmp_path / "c" / "text.jpg"
    bad.write_text("not an image")
    data = FolderData(np.array([str(bad)]), np.array([0]), ["c"], PREP)
    with pytest.raises(HaqError) as err:
        list(make_loader(data, 1, workers=1))
    assert "Original Traceback" in str(err.value)  # how torch hands it over
    line = _one_line(str(err.value))
    assert line.startswith(f"cannot read image {bad}") and "\n" not in line


def test_an_unreachable_ray_cluster_is_named_within_seconds(monkeypatch):
    pytest.importorskip("ray")
    from haq.search.parallel import RayPool

    cfg = SearchConfig(eval_workers=2, ray_address="127.0.0.1:1")
    with pytest.raises(HaqError, match=r"at 127.0.0.1:1 \(from --ray-address\)"):
        RayPool(cfg, 2)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    with pytest.raises(HaqError, match="from the RAY_ADDRESS environment variable"):
        RayPool(SearchConfig(eval_workers=2), 2)


def test_a_search_refuses_an_unreachable_cluster_before_any_data(tmp_path, monkeypatch, tiny_ckpt):
    """It used to find out when it made the pool: after the setup and the ILP's sensitivity
    pass (3 min 17 s for the main job here), leaving a run directory behind."""
    pytest.importorskip("ray")
    monkeypatch.setattr("haq.search.setup.build_eval_setup", _never)
    argv = ["search", "--checkpoint", tiny_ckpt, "--dataset", "digits", "--eval-workers", "2"]
    argv += ["--latency", "0.9x", "--out", str(tmp_path / "r")]
    code, _, err = run_cli([*argv, "--ray-address", "127.0.0.1:1"])
    _one_line_error(code, err, "cannot reach the Ray cluster at 127.0.0.1:1 (from --ray-address)")
    assert not (tmp_path / "r").exists()


def _never(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("the search read data")


def _refused(run: Path, command: str, shared: bool) -> bool:
    try:
        with run_lock(run, command, shared=shared):
            return False
    except HaqError as err:
        return "is in use" in str(err)


def test_readers_share_a_run_and_a_writer_excludes_them(tmp_path):
    with run_lock(tmp_path, "haq export", shared=True):
        assert not _refused(tmp_path, "haq export", shared=True)
        assert _refused(tmp_path, "haq search --resume", shared=False)
    with run_lock(tmp_path, "haq search --resume"):
        assert _refused(tmp_path, "haq export", shared=True)


KILL_IN_SENSITIVITY = """
import os, signal, sys
import haq.search.strategies.planned as planned
from haq.search.runner import search
from tests.test_search import tiny_cfg
def killed(*args, **kwargs):  # config.json is written: the window before the first checkpoint
    os.kill(os.getpid(), signal.SIGKILL)
planned.measure_sensitivity = killed
search(tiny_cfg(sys.argv[1], strategy="ilp", episodes=2, sensitivity_images=64), sys.argv[2], progress=False)
"""


def test_a_kill_before_the_first_checkpoint_resumes_to_the_uninterrupted_records(
    tiny_ckpt, tmp_path, capsys
):
    import subprocess
    import sys

    from haq.search.rundir import RunDir
    from haq.search.runner import search
    from tests.test_search import TIMING_KEYS, tiny_cfg

    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run(
        [sys.executable, "-c", KILL_IN_SENSITIVITY, tiny_ckpt, str(run)], env=env, timeout=300
    )
    assert done.returncode == -signal.SIGKILL
    assert (run / "config.json").is_file() and not (run / "state.pt").exists()
    search(None, run, resume=True, progress=False)
    assert "has no checkpoint yet; the run starts again" in capsys.readouterr().err
    clean = tmp_path / "clean"
    search(tiny_cfg(tiny_ckpt, strategy="ilp", episodes=2, sensitivity_images=64), clean, progress=False)  # fmt: skip

    def records(p: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in RunDir(p).read_episodes()]  # fmt: skip

    assert records(run) == records(clean)


def test_an_output_that_cannot_be_written_is_refused_before_the_long_work(tmp_path):
    """pretrain, import, finetune and export wrote their file last, so ``--out`` naming a
    directory (or a place below a file) failed after the training, the test-set pass, the
    finetune or the calibration; now at once, in one line, touching nothing."""
    shipped = str(Path(__file__).parents[1] / "src/haq/checkpoints/mobilenet_v2_fmnist.pt")
    (tmp_path / "file").write_text("")
    before = sorted(p.name for p in tmp_path.iterdir())
    work = {
        "pretrain": ["pretrain", "--model", TINY[1], "--dataset", "digits", "--epochs", "1"],
        "import": ["import", "--model", "mobilenet_v2_fmnist", "--dataset", "fashion-mnist"],
        "finetune": ["finetune", "--policy", "w4a4", "--epochs", "3"],
        "export": ["export", "--policy", "w4a4", "--format", "onnx"],
    }
    # (the messages of a late failure differ: "Is a directory", "Not a directory")
    below_file = (tmp_path / "file" / "x.pt", f"'{tmp_path / 'file'}' is not a writable directory")
    work["import"] += ["--weights", shipped]
    for argv in work.values():
        for out, why in [(tmp_path, "it is a directory"), below_file]:
            code, _, err = run_cli([*argv, "--out", str(out)])
            _one_line_error(code, err, f"cannot write '{out}'", why)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
