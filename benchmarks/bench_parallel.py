"""Parallel episodes on Ray (issue 11): speed and search quality on this machine.

- speed: wall time of ``haq search --strategy haq`` and ``--strategy random`` (60 episodes, the
  embedded default job otherwise) with 1 worker x all threads (the search process) against 2
  Ray workers x 1 thread (``--eval-workers 2``), and evaluation wall time per distinct policy
  evaluated (the agent in rounds may evaluate more distinct policies; the random strategy
  evaluates the same ones at any K). Target: at least 1.4x faster.
- quality: the agent proposes K policies per round (K = --eval-workers); does that change the
  best held-out accuracy at equal episodes? Search seeds 0, 1, 2 at K = 1, 2, 4.

Every search runs as ``haq search`` in a subprocess, alone; results go to --json after each.

    python benchmarks/bench_parallel.py [--parts speed,quality] [--episodes 60] [--ks 1,2,4]
        [--seeds 0,1,2]   (quality is incremental: measured K/seed pairs are skipped)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def run(out: Path, *flags: str) -> dict[str, Any]:
    """One search; its wall time and summary."""
    subprocess.run(["rm", "-rf", str(out)], check=True)
    cmd = [sys.executable, "-m", "haq.cli", "search", "--out", str(out), "--no-progress"]
    cmd += ["--no-report", *flags]
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {
        "wall_s": round(wall, 1),
        "best_heldout": summary["best"]["accuracy"],
        "best_unseen": summary["best"]["check_top1"],
        "utilisation": summary["parallel"]["utilisation"],
        "agent_s_per_episode": summary["timing_s"]["agent"] / summary["episodes"],
        "eval_wall_s_per_episode": summary["timing_s"]["evaluation"] / summary["episodes"],
        "evaluations": summary["search_cost"]["policy_evaluations"],
        "s_per_evaluation": summary["timing_s"]["evaluation"]
        / max(1, summary["search_cost"]["policy_evaluations"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="speed,quality")
    ap.add_argument("--episodes", default="60")
    ap.add_argument(
        "--speed-strategies", default="haq,random", help="random: the same policies at any K"
    )
    ap.add_argument("--ks", default="1,2,4", help="quality: proposals per round (= workers)")
    ap.add_argument("--seeds", default="0,1,2", help="quality: search seeds")
    ap.add_argument("--root", default="runs/bench_parallel")
    ap.add_argument("--json", default="benchmarks/results/parallel.json")
    args = ap.parse_args()
    path, root = Path(args.json), Path(args.root)
    results: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    results["machine"] = f"{os.cpu_count()} cores"
    results["date"] = time.strftime("%Y-%m-%d")
    # the enforcement the recorded figures ran with (its default changed since)
    agent = ["--strategy", "haq", "--episodes", args.episodes, "--enforce", "reference"]

    def save() -> None:
        path.write_text(json.dumps(results, indent=1) + "\n")

    for strategy in args.speed_strategies.split(",") if "speed" in args.parts else []:
        flags = ["--strategy", strategy, "--episodes", args.episodes, "--enforce", "reference"]
        one = run(root / f"speed_{strategy}_k1", *flags)
        two = run(root / f"speed_{strategy}_k2", *flags, "--eval-workers", "2")
        results[f"speed_{strategy}"] = {
            "1 worker": one,
            "2 workers": two,
            "wall_speedup": one["wall_s"] / two["wall_s"],
            "seconds_per_evaluation_speedup": one["s_per_evaluation"] / two["s_per_evaluation"],
        }
        print(strategy, json.dumps(results[f"speed_{strategy}"]), flush=True)
        save()
    if "quality" in args.parts:
        quality: dict[str, Any] = results.setdefault("quality", {})
        for k in [int(x) for x in args.ks.split(",")]:
            entry = quality.setdefault(f"K={k}", {"runs": {}})
            for seed in [int(x) for x in args.seeds.split(",")]:
                if str(seed) in entry["runs"]:  # incremental: measured before
                    continue
                out = root / f"q_k{k}_s{seed}"
                flags = ["--eval-workers", str(k), "--search-seed", str(seed)]
                entry["runs"][str(seed)] = run(out, *agent, *flags)
                best = [r["best_heldout"] for r in entry["runs"].values()]
                entry["best_heldout_mean"] = statistics.mean(best)
                entry["best_heldout_std"] = statistics.stdev(best) if len(best) > 1 else 0.0
                print(k, seed, json.dumps(entry["runs"][str(seed)]), flush=True)
                save()


if __name__ == "__main__":
    main()
