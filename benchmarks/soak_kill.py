"""Kill soak: searches killed with SIGKILL at random moments, resumed until they finish, must
end with the very records of an uninterrupted search (issue 36's kill tests, at length).

For each ``--strategies`` entry: one uninterrupted ``haq search`` of the reference model
(``--episodes`` episodes, small held-out and check subsets), then ``--trials`` searches that
are killed at a random moment in the first 80 % of the reference's wall time, again and
again, and resumed with ``haq search --resume`` until one attempt finishes. Each finished
trial's ``episodes.jsonl`` is compared with the reference's, timing keys and the run id
aside. Seeded kill moments (``--seed``); the figures go to ``--json``.

    python benchmarks/soak_kill.py [--strategies random haq ilp] [--trials 3] [--seed 0]
        [--episodes 6] [--root runs/soak-kill] [--json benchmarks/results/soak_kill.json]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VOLATILE = ("seconds", "eval_seconds", "run")  # per-attempt keys of an episode record


def attempt(out: Path, first: list[str], kill_after: float | None) -> str | int:
    """One ``haq search`` (``first`` when the run does not exist yet, else ``--resume``):
    its exit code, or "killed" when ``kill_after`` seconds passed first."""
    args = first if not (out / "config.json").exists() else ["--resume", str(out)]
    cmd = [sys.executable, "-m", "haq.cli", "search", *args, "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        return "killed"
    if proc.returncode != 0:
        print(err[-2000:], file=sys.stderr)
    return proc.returncode


def records(out: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in VOLATILE} for row in rows]


def soak(strategy: str, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    base = Path(args.root) / strategy
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    options = ["--strategy", strategy, "--episodes", str(args.episodes)]
    options += ["--heldout-size", "400", "--check-size", "400"]
    t = time.perf_counter()
    code = attempt(base / "reference", [*options, "--out", str(base / "reference")], None)
    wall = time.perf_counter() - t
    if code != 0:
        raise SystemExit(f"the uninterrupted {strategy} search failed (exit {code})")
    reference = records(base / "reference")
    trials = []
    for k in range(args.trials):
        out = base / f"trial{k}"
        kills: list[float] = []
        while (code := attempt(out, [*options, "--out", str(out)], at := rng.uniform(0.5, 0.8 * wall))) == "killed":  # fmt: skip
            kills.append(round(at, 1))
        same = code == 0 and records(out) == reference
        trials.append({"kills_at_s": kills, "exit": code, "records_identical": same})
        print(f"{strategy} trial {k}: killed at {kills} s, exit {code}, identical: {same}", flush=True)  # fmt: skip
    return {"reference_wall_s": round(wall, 1), "episodes": len(reference), "trials": trials}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strategies", nargs="+", default=["random", "haq", "ilp"])
    ap.add_argument("--trials", type=int, default=3, help="killed searches per strategy")
    ap.add_argument("--episodes", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0, help="seeds the kill moments")
    ap.add_argument("--root", default="runs/soak-kill")
    ap.add_argument("--json", default="benchmarks/results/soak_kill.json")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "seed": args.seed}
    for strategy in args.strategies:
        results[strategy] = soak(strategy, args, rng)
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    bad = [s for s in args.strategies if not all(t["records_identical"] for t in results[s]["trials"])]  # fmt: skip
    if bad:
        raise SystemExit(f"records differ after kills: {', '.join(bad)}")


if __name__ == "__main__":
    main()
