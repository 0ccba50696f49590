"""benchmarks/bench_gpu.py --tiny: every step of the GPU benchmark runs here, on the CPU, on
a real JPEG folder, a real imported model and real searches, and writes its figures."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_gpu_tiny_runs_every_step(tmp_path):
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--tiny", "--device", "cpu"]
    cmd += ["--root", str(tmp_path / "runs"), "--json", str(out), "--workers", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["tiny"] and r["device"] == "cpu"
    assert len(list((tmp_path / "runs").rglob("*.jpg"))) == 480 + 120
    assert r["loader"]["train_crop_img_s"] > 0 and r["loader"]["eval_crop_img_s"] > 0
    for b in (4, 16):
        m = r[f"model_b{b}"]
        for kind in ("train", "infer"):
            assert m[f"fp32_{kind}_img_s"] > 0
            assert 0.05 < m[f"w8a8_{kind}_vs_fp32"] < 5
    assert len(r["paper_episodes"]["episode_s"]) == 2
    assert r["paper_episodes"]["timing_s"]["setup"] > 0
    ilp = r["ilp_search"]
    assert ilp["policy_evaluations"] == 5 and ilp["timing_s"]["sensitivity"] > 0
    # the embedded main job on the shipped model: a real accuracy, the default ILP
    main = r["main_job"]
    assert main["policy_evaluations"] == 5 and main["best_heldout_top1"] > 85


def test_a_failed_step_is_recorded_and_the_next_runs(tmp_path):
    """One GPU run measures what it can: a failing step's error goes into the results and
    the next step runs; a step the others need ends the run."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_gpu import Steps

    path, results = tmp_path / "r.json", {"date": "today"}
    step = Steps(path, results)
    assert step("ok", lambda: {"img_s": 1.0})["img_s"] == 1.0
    step("broken", lambda: 1 / 0)
    step("after", lambda: 7)
    saved = json.loads(path.read_text())
    assert saved["broken"]["error"] == "ZeroDivisionError: division by zero"
    assert saved["after"]["value"] == "7" and step.failed == ["broken"]
    try:
        step("needed", lambda: 1 / 0, needed=True)
    except ZeroDivisionError:
        pass
    else:
        raise AssertionError("a needed step's failure must end the run")
