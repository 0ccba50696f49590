"""Every search strategy side by side on the reference MobileNet-V2-style model (issue 12).

Scenarios:
  edge-latency   bismo-edge,  latency <= 0.5x of w8a8
  cloud-latency  bismo-cloud, latency <= 0.5x of w8a8
  fusion-energy  bitfusion,   energy  <= 0.5x of w8a8
  size-kmeans    k-means (weights only), size <= 0.1x of the fp32 weights
  size-kmeans-10k  the same, the reward and the unseen check on 10,000 images each instead of
                 2,000 (the paper's held-out size): its close margins decided with a binomial
                 standard error of about 0.27 pt instead of 0.6 pt
  bops-pinned    BOPs <= 0.25x of w8a8, first and last layer pinned to 8 bits (haq's default)
  bops-free      BOPs <= 0.25x of w8a8, nothing pinned (as other toolkits search)

Strategies: haq-anchor-level (the default agent: anchor episode, ``--enforce level``);
haq-redraw (the default agent with ``--redraws 10``: a repeated policy is redrawn with wider
noise instead of costing an episode); haq-literal (the default agent with ``--sigma-decay
0.99``, the paper's literal noise decay: sigma about 0.34 at the last of 60 episodes instead of
0.002); haq-anchor (the anchor, ``--enforce reference``); haq (the paper's agent: no anchor,
``--enforce reference``); haq-level (no anchor, ``--enforce level``); and random search with the
reference enforcement (the paper's baseline; random-level: with ``--enforce level``, the
default), once per search seed; ilp and greedy (on measured sensitivities) and uniform, which
involve no randomness. Every search's best policy then gets the same final finetune once per
finetune seed and is measured on the test set.

    python benchmarks/bench_search.py [--scenarios ...] [--strategies ...]
        [--search-seeds 0 1 2] [--finetune-seeds 0 1] [--final-epochs 0.34]

Incremental: results go to --json after every search and every finetune, keyed by scenario,
strategy and seed; a rerun skips what is there (and resumes an interrupted search), so the
matrix can be filled over several sessions, and by several processes at once (each merges
its own entries into the file under a lock; give each ``OMP_NUM_THREADS=1`` on 2 cores). ``--rerun`` drops the selected entries first.
``python benchmarks/search_table.py`` prints the results table and draws the plots.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from haq.errors import HaqError
from haq.finishing import final_finetune
from haq.policy import Policy
from haq.search.config import SearchConfig
from haq.search.rundir import RunDir
from haq.search.runner import search
from haq.specs import DataSpec, FinetuneSpec, ModelSpec, QuantSpec

SCENARIOS: dict[str, dict[str, Any]] = {
    "edge-latency": dict(hardware="bismo-edge", budgets={"latency": "0.5x"}),
    "cloud-latency": dict(hardware="bismo-cloud", budgets={"latency": "0.5x"}),
    "fusion-energy": dict(hardware="bitfusion", budgets={"energy": "0.5x"}),
    "size-kmeans": dict(hardware="bismo-edge", budgets={"size": "0.1x"}, mode="kmeans"),
    "size-kmeans-10k": dict(
        hardware="bismo-edge",
        budgets={"size": "0.1x"},
        mode="kmeans",
        heldout_size=10_000,
        check_size=10_000,
    ),
    "bops-pinned": dict(hardware="bismo-edge", budgets={"bops": "0.25x"}),
    "bops-free": dict(hardware="bismo-edge", budgets={"bops": "0.25x"}, keep_8bit=["none"]),
}
# issue 35: budgets tight enough that uniform bits lose accuracy (below about 4 average bits).
# BitFusion energy 0.3x is infeasible at >= 2 bits (w2a2 is 0.354x with the pinned layers,
# 0.343x without) and k-means size 0.06x needs 1-bit weights (2 bits is 0.066x with the
# pinned layers): docs/decisions.md
TIGHT: dict[str, dict[str, Any]] = {
    "tight-bops-pinned": dict(hardware="bismo-edge", budgets={"bops": "0.1x"}),
    "tight-bops-free": dict(hardware="bismo-edge", budgets={"bops": "0.1x"}, keep_8bit=["none"]),
    "tight-edge-latency": dict(hardware="bismo-edge", budgets={"latency": "0.3x"}),
    "tight-fusion-energy": dict(hardware="bitfusion", budgets={"energy": "0.4x"}),
    "tight-size-kmeans": dict(
        hardware="bismo-edge", budgets={"size": "0.06x"}, mode="kmeans", min_bit=1
    ),
}
SCENARIOS |= TIGHT
SCENARIOS |= {  # the same on the ResNet-style reference model
    f"{name}-resnet": spec | {"model": "resnet_fmnist"} for name, spec in TIGHT.items()
}
# its smallest bismo-edge latency (2-bit layers, first and last at 8) is 0.332x of w8a8: 0.3x
# is infeasible there, 0.35x is as close above the floor as 0.3x is on the MobileNet-V2 one
SCENARIOS["tight-edge-latency-resnet"] |= {"budgets": {"latency": "0.35x"}}
STRATEGIES = (
    "haq",
    "random",
    "ilp",
    "greedy",
    "uniform",
    "haq-level",
    "haq-anchor",
    "haq-anchor-level",
    "random-level",
    "haq-redraw",
    "haq-literal",
    "haq-paper",
    "haq-control",
    "ilp-refine",
)
SEEDED = (
    "haq",
    "random",
    "haq-level",
    "haq-anchor",
    "haq-anchor-level",
    "random-level",
    "haq-redraw",
    "haq-literal",
    "haq-paper",
    "haq-control",
)  # the strategies whose result depends on the search seed
VARIANTS = {  # benchmark name: options (the enforcement pinned: its default changed)
    "haq": dict(strategy="haq", enforce="reference"),
    "random": dict(strategy="random", enforce="reference"),
    "haq-level": dict(strategy="haq", enforce="level"),
    "haq-anchor": dict(strategy="haq", enforce="reference"),
    "haq-anchor-level": dict(strategy="haq", enforce="level"),
    "random-level": dict(strategy="random", enforce="level"),
    "haq-redraw": dict(strategy="haq", enforce="level"),
    "haq-literal": dict(strategy="haq", enforce="level"),
}
REDRAWS = {"haq-redraw": 10}  # --redraws (sigma reaches its initial 0.5 from any episode)
SIGMA_DECAY = {"haq-literal": 0.99}  # the paper's literal per-episode decay, not stretched


def _curve(run_dir: Path) -> list[float]:
    """Best held-out top-1 after each policy evaluation (cache hits are not evaluations)."""
    best, curve = -1.0, []
    for r in RunDir(run_dir).read_episodes():
        if not r["cached"]:
            best = max(best, r["accuracy"])
            curve.append(best)
    return curve


def run_search(name: str, strategy: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One search (resumed if interrupted), summarised for the benchmark JSON."""
    out = Path(args.runs) / f"{name}-{strategy}-s{seed}"
    cfg = SearchConfig(**(SCENARIOS[name] | VARIANTS.get(strategy, {"strategy": strategy})))
    if strategy in SEEDED:
        cfg.episodes = args.episodes
    elif strategy == "ilp-refine":
        cfg.episodes = args.refine_episodes
    cfg.ddpg.seed = seed  # the search seed only: data split and finetunes unchanged
    if strategy in VARIANTS:  # "haq" and "haq-level" ran before the anchor existed
        cfg.ddpg.anchor = strategy in (
            "haq-anchor",
            "haq-anchor-level",
            "haq-redraw",
            "haq-literal",
        )
        cfg.ddpg.redraws = REDRAWS.get(strategy, 0)
        cfg.ddpg.sigma_decay = SIGMA_DECAY.get(strategy)
    resume = (out / "state.pt").is_file()
    if not resume:
        shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    s = search(None if resume else cfg, out, resume=resume, progress=False)
    entry = {
        "strategy": strategy,
        "search_seed": seed,
        "episodes": s["episodes"],
        "policy_evaluations": s["search_cost"]["policy_evaluations"],
        "sensitivity_passes": s["search_cost"]["sensitivity_passes"],
        "search_s": s["search_cost"]["wall_s"],
        "wall_s": time.perf_counter() - t,
        "agent_fraction": s["timing_s"]["agent_fraction"],
        "heldout_top1": s["best"]["accuracy"],
        "check_top1": s["best"]["check_top1"],
        "cost": s["best"]["cost"],
        "w_bits": s["best"]["w_bits"],
        "a_bits": s["best"]["a_bits"],
        "curve": _curve(out),
        "policy": str(out / "best_policy.json"),
        "uniform": s["uniform"],
        "scenario_facts": {
            "fp_heldout_top1": s["fp_heldout_top1"],
            "w8a8_cost": s["w8a8_cost"],
            "fp32_size_bytes": s["fp32_size_bytes"],
            "layer_names": s["layer_names"],
            "layer_kinds": s["layer_kinds"],
            "memory_bound_w8a8": s["memory_bound_w8a8"],
        },
    }
    print(
        f"{name} {strategy} seed {seed}: held-out {entry['heldout_top1']:.2f}%, unseen "
        f"{entry['check_top1']:.2f}%, {entry['policy_evaluations']} evaluations, "
        f"{entry['search_s']:.0f} s",
        flush=True,
    )
    return entry


def finetune_entry(
    entry: dict[str, Any], scenario: str, args: argparse.Namespace, saved: Callable[[], None]
) -> None:
    """Fill ``entry["test_top1"]`` for every finetune seed not measured yet, calling ``saved``
    after each (a killed benchmark keeps the finetunes it finished)."""
    cfg = SearchConfig(**SCENARIOS[scenario])
    tests = entry.setdefault("test_top1", {})
    for fseed in args.finetune_seeds:
        if str(fseed) in tests:
            continue
        if entry["strategy"] == "uniform":
            u = entry["bits_arrays"]
            policy = Policy.from_arrays(entry["layer_names"], u["w"], u["a"], cfg.mode)
        else:
            policy = Policy.load(entry["policy"])
        res = final_finetune(
            policy,
            ModelSpec.of(cfg),
            DataSpec.of(cfg),
            QuantSpec.of(cfg),
            Path(args.runs)
            / f"final-{scenario}-{entry['strategy']}-s{entry['search_seed']}-f{fseed}.pt",
            FinetuneSpec(epochs=args.final_epochs, lr=0.01, seed=fseed),
            progress=False,
        )
        tests[str(fseed)] = res["quantized_test_top1"]
        entry["fp_test_top1"] = res["fp_test_top1"]
        print(f"  finetune seed {fseed}: test {tests[str(fseed)]:.2f}%", flush=True)
        saved()


def _uniform_entry(search_entry: dict[str, Any]) -> dict[str, Any]:
    u = search_entry["uniform"]
    return {
        "strategy": "uniform",
        "search_seed": 0,
        "bits": u["bits"],
        "heldout_top1": u["accuracy"],
        "check_top1": u["check_top1"],
        "cost": u["cost"],
        "bits_arrays": {"w": u["w_bits"], "a": u["a_bits"]},
        "layer_names": search_entry["scenario_facts"]["layer_names"],
        "episodes": 1,
    }


def run(args: argparse.Namespace) -> dict:
    path = Path(args.json)
    results = json.loads(path.read_text()) if path.is_file() else {}

    def save(name: str, key: str) -> None:
        """Write entry ``key`` of scenario ``name`` into the file as it is now (other
        benchmark processes may be filling other entries), under a lock, atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            merged = json.loads(path.read_text()) if path.is_file() else {}
            mine = results[name]
            theirs = merged.setdefault(name, {"spec": mine["spec"], "runs": {}})
            theirs.update({k: v for k, v in mine.items() if k != "runs"})
            theirs["runs"][key] = mine["runs"][key]
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(merged, indent=1) + "\n")
            tmp.replace(path)

    for name in args.scenarios:
        scenario = results.setdefault(name, {"spec": SCENARIOS[name], "runs": {}})
        for strategy in args.strategies:
            seeds = args.search_seeds if strategy in SEEDED else [0]
            for seed in seeds:
                key = f"{strategy}/s{seed}"
                if args.rerun:
                    scenario["runs"].pop(key, None)
                if key not in scenario["runs"]:
                    if strategy == "uniform":  # from any search of the scenario (same split)
                        donor = next(iter(scenario["runs"].values()), None)
                        if donor is None or "uniform" not in donor:
                            donor = run_search(name, "greedy", 0, args)
                            scenario["runs"]["greedy/s0"] = donor
                            save(name, "greedy/s0")
                        scenario["runs"][key] = _uniform_entry(donor)
                    else:
                        scenario["runs"][key] = run_search(name, strategy, seed, args)
                    scenario.update(scenario["runs"][key].get("scenario_facts", {}))
                    save(name, key)
                finetune_entry(scenario["runs"][key], name, args, partial(save, name, key))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    ap.add_argument("--search-seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--finetune-seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--episodes", type=int, default=60, help="of haq and random")
    ap.add_argument("--refine-episodes", type=int, default=20, help="of ilp-refine")
    ap.add_argument("--final-epochs", type=float, default=0.34)
    ap.add_argument("--runs", default="runs/bench")
    ap.add_argument("--json", default="benchmarks/results/search.json")
    ap.add_argument("--rerun", action="store_true", help="redo the selected entries")
    args = ap.parse_args()
    if args.final_epochs <= 0:  # checked before hours of search, not after them
        ap.error(f"--final-epochs must be a positive number, got {args.final_epochs}")
    try:
        run(args)
    except HaqError as err:  # a bad option value: one line and exit code 2, like `haq`
        ap.error(str(err))


if __name__ == "__main__":
    main()
