"""Search on any cost table (issue 34): ``--hardware`` takes a haq ``.npz`` or a HAQ ``.npy``
table; ``haq hardware measure`` times a model's layers on a real kernel (the numpy bit-serial
one, or a user's runner) and writes a table that the search accepts, resuming after a kill."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from haq.errors import HaqError
from haq.hardware.bitserial import bitserial_matmul, pack_planes, time_layer
from haq.hardware.table import CostTable, table_for
from haq.layers import extract_layers
from haq.models import create_model
from haq.search.rundir import RunDir
from haq.search.runner import search
from tests.conftest import TinyNet
from tests.test_fuzz import TINY, run_cli
from tests.test_search import tiny_cfg


def _tiny_layers():
    return extract_layers(TinyNet(), (1, 8, 8))


@pytest.mark.parametrize(("a", "w"), [(1, 1), (2, 3), (4, 4), (3, 7), (8, 8)])
def test_the_bitserial_kernel_equals_the_integer_product(a, w):
    rng = np.random.default_rng(a * 10 + w)
    acts = rng.integers(0, 2**a, size=(3, 37, 70))
    weights = rng.integers(0, 2**w, size=(3, 5, 70))
    got = bitserial_matmul(pack_planes(acts, a), pack_planes(weights, w))
    assert np.array_equal(got, np.einsum("gmk,gnk->gmn", acts, weights))


def test_the_bitserial_kernel_costs_more_with_more_bits():
    layer = next(s for s in extract_layers(create_model("mobilenet_v2_fmnist"), (1, 28, 28)) if s.kind == "pointwise")  # fmt: skip
    low = min(time_layer(layer, 1, 1, 1) for _ in range(5))
    high = min(time_layer(layer, 8, 8, 1) for _ in range(5))
    assert high > 4 * low  # 64 plane pairs against 1


def _write_tables(tmp_path: Path) -> tuple[Path, Path]:
    npz, npy = tmp_path / "tiny.npz", tmp_path / "tiny.npy"
    code, _, err = run_cli(["cost", *TINY, "--hardware", "bismo-cloud", "--table", str(npz), "--haq-npy", str(npy)])  # fmt: skip
    assert code == 0, err
    return npz, npy


def test_a_table_of_another_model_is_refused_in_one_line(tmp_path):
    npz, npy = _write_tables(tmp_path)
    other = extract_layers(create_model("mobilenet_v2_fmnist"), (1, 28, 28))
    with pytest.raises(HaqError, match="is a table of another model"):
        table_for(other, str(npz))
    with pytest.raises(HaqError, match=r"this model needs \(53, 8, 8\)"):
        table_for(other, str(npy))
    with pytest.raises(HaqError, match="cannot change its batch"):
        table_for(_tiny_layers(), str(npz), batch=4)
    code, _, err = run_cli(["cost", "--model", "mobilenet_v2_fmnist", "--hardware", str(npz)])
    assert code == 2 and "is a table of another model" in err


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda a: np.where(a == a.max(), np.nan, a), "cycles has NaN or negative entries"),
        (lambda a: -a, "cycles has NaN or negative entries"),
        (lambda a: a * 0 + 1e308, "the costs overflow (cycles is not finite for a layer or a model's total)"),
        (lambda a: a * 0, "latency_s is 0 for a layer"),
    ],
)  # fmt: skip
def test_a_table_with_entries_no_policy_can_be_measured_by_is_refused_in_one_line(
    tmp_path, edit, message
):
    """A user's .npz or .npy with a NaN, negative, zero or overflowing entry (every layer at
    1e308: each finite, the total not) is refused in one line by every command that reads
    it; these were taken as they were (a NaN total, a negative latency, a ZeroDivisionError)."""
    npz, npy = _write_tables(tmp_path)
    arrays = dict(np.load(npz))
    arrays["cycles"], arrays["latency_s"] = edit(arrays["cycles"]), edit(arrays["latency_s"])
    bad_npz, bad_npy = tmp_path / "bad.npz", tmp_path / "bad.npy"
    np.savez(bad_npz, **arrays)
    np.save(bad_npy, edit(np.load(npy).astype(np.float64)))
    for table in (bad_npz, bad_npy):
        code, _, err = run_cli(["cost", *TINY, "--hardware", str(table), "--format", "json"])
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_runner_whose_times_overflow_the_table_is_refused_in_one_line(tmp_path):
    """A runner's 1e300 s per layer is finite, but not in nanoseconds (the table's cycles)."""
    runner = tmp_path / "huge.py"
    runner.write_text("def run(layer, w_bits, a_bits, batch):\n    return 1e300\n")
    argv = ["hardware", "measure", *TINY, "--runner", f"{runner}:run", "--bits", "1,8"]
    code, _, err = run_cli(
        [*argv, "--repeats", "1", "--no-progress", "--out", str(tmp_path / "t.npz")]
    )
    assert code == 2 and "the costs overflow (cycles is not finite" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "t.npz").exists()


def test_searches_on_npz_and_npy_tables_hold_their_budget_and_match_the_model(tiny_ckpt, tmp_path):
    """A table written by haq cost and searched on gives the policy of the hardware that wrote
    it; the HAQ .npy (latency only, in cycles) takes ratio budgets and refuses time ones."""
    npz, npy = _write_tables(tmp_path)
    runs = {}
    for name, hw in (("model", "bismo-cloud"), ("npz", str(npz)), ("npy", str(npy))):
        cfg = tiny_cfg(tiny_ckpt, hardware=hw, budgets={"latency": "0.75x"}, strategy="ilp",
                       episodes=2, sensitivity_images=64)  # fmt: skip
        summary = search(cfg, tmp_path / name, progress=False)
        limit = summary["budgets"]["latency"]["limit"]
        assert summary["best"]["cost"]["latency"] <= limit * (1 + 1e-9)
        runs[name] = [(r["w_bits"], r["a_bits"]) for r in RunDir(tmp_path / name).read_episodes()]
    assert runs["npz"] == runs["model"] and runs["npy"] == runs["model"]
    with pytest.raises(HaqError, match="has no time unit"):
        search(tiny_cfg(tiny_ckpt, hardware=str(npy), budgets={"latency": "2ms"}), tmp_path / "t")


RUNNER = '''
import time
import numpy as np

def run(layer, w_bits, a_bits, batch):
    """A real op whose work grows with the bits: a matrix product of w x a planes."""
    with open(LOG, "a") as fh:
        fh.write(layer.name + "\\n")
    if layer.name == SLOW:
        time.sleep(0.05)
    x = np.ones((64, 8 * w_bits * a_bits))
    t0 = time.perf_counter()
    (x @ x.T).sum()
    return time.perf_counter() - t0
'''


def test_measure_writes_a_table_the_search_accepts_and_resumes_after_a_kill(tiny_ckpt, tmp_path):
    log = tmp_path / "calls.log"
    runner = tmp_path / "runner.py"
    runner.write_text(f"LOG = {str(log)!r}\nSLOW = 'body.5'\n" + RUNNER)
    out = tmp_path / "measured.npz"
    argv = [sys.executable, "-m", "haq.cli", "hardware", "measure", *TINY, "--runner",
            f"{runner}:run", "--bits", "1,2,4,8", "--repeats", "40", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    partial = out.with_name(out.name + ".partial.npz")
    deadline = time.time() + 120
    while not partial.exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert partial.exists() and not out.exists()
    calls = log.read_text().split()
    # the last one may have been being timed when it was killed; body.0 is finished (the
    # partial file is written after a layer), even when the kill came before the next call
    finished = set(calls) - {calls[-1]} | {"body.0"}
    assert calls[0] == "body.0"
    log.write_text("")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not partial.exists()
    assert not finished & set(log.read_text().split())  # not timed again
    table = CostTable.load(out)
    assert table.latency_s.shape == (4, 8, 8) and (table.latency_s > 0).all()
    assert table.meta["bits_measured"] == [1, 2, 4, 8] and table.meta["interpolated"]
    assert (table.latency_s[:, 7, 7] > table.latency_s[:, 0, 0]).all()  # 64 x the work
    cfg = tiny_cfg(tiny_ckpt, hardware=str(out), budgets={"latency": "0.9x"}, keep_8bit=["none"],
                   strategy="greedy", sensitivity_images=64)  # fmt: skip
    summary = search(cfg, tmp_path / "run", progress=False)
    assert summary["best"]["cost"]["latency"] <= summary["budgets"]["latency"]["limit"] * (1 + 1e-9)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["hardware"] == str(out)
    # the report of a run on a measured table: no roofline (a table has no roofs), no traceback
    code, _, err = run_cli(["report", str(tmp_path / "run"), "--out", str(tmp_path / "report")])
    assert code == 0, err
    page = (tmp_path / "report" / "index.html").read_text()
    assert "search curve" in page and "roofline" not in page
    # costing it for another model: refused in one line that names the model it was made for
    code, _, err = run_cli(["cost", "--model", "mobilenet_v2_fmnist", "--hardware", str(out)])
    assert code == 2 and "(measured for --model tests.conftest:TinyNet)" in err


def test_a_table_path_that_cannot_be_one_is_refused_before_any_work(tmp_path, monkeypatch):
    """``--hardware`` knows a table by its suffix: a table written as ``t.txt`` (or ``x``,
    which numpy would have made ``x.npy``) could not be searched on; a directory or an
    unwritable place fails before the first layer is timed, in one line naming the file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.npz").mkdir()
    measure = ["hardware", "measure", *TINY, "--no-progress", "--out"]
    for argv, why in [
        ([*measure, "t.txt"], "'t.txt': name the table *.npz"),
        ([*measure, "d.npz"], "cannot write 'd.npz': it is a directory"),
        ([*measure, "/proc/t.npz"], "cannot write '/proc/t.npz.partial.npz'"),
        (["cost", *TINY, "--table", "x.txt"], "'x.txt': name the table *.npz"),
        (["cost", *TINY, "--haq-npy", "x"], "'x': name the table *.npy"),
    ]:
        code, out, err = run_cli(argv)
        assert code == 2 and why in err and len(err.strip().splitlines()) == 1, err
        assert out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]
    # missing directories are made, as for every other file haq writes
    code, _, err = run_cli(["cost", *TINY, "--table", "new/dir/t.npz", "--haq-npy", "n/t.npy"])
    assert code == 0, err
    assert CostTable.load("new/dir/t.npz").latency_s.shape == (4, 8, 8)
    assert np.load("n/t.npy").shape == (4, 8, 8)


def test_a_missing_or_foreign_table_file_says_what_it_is(tmp_path):
    (tmp_path / "text.npz").write_text("not a table\n")
    for path, why in [
        (tmp_path / "none.npz", "cost table '{p}' not found"),
        (tmp_path / "text.npz", "{p}: not a haq cost table (not an .npz archive)"),
    ]:
        code, _, err = run_cli(["cost", *TINY, "--hardware", str(path)])
        assert code == 2 and why.format(p=path) in err and len(err.strip().splitlines()) == 1
