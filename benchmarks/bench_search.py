"""HAQ vs uniform vs random search on the reference MobileNet-V2-style model (issue 4).

Scenarios (as in the paper's experiments):
  edge-latency   bismo-edge,  latency <= 0.5x of w8a8
  cloud-latency  bismo-cloud, latency <= 0.5x of w8a8
  fusion-energy  bitfusion,   energy  <= 0.5x of w8a8
  size-kmeans    bismo-edge,  size    <= 0.1x of fp32 weights, k-means (weights only)

For each: a HAQ search and a random search with the same number of evaluated policies, and
the uniform baseline; then the same final finetune for the three policies, and top-1 on the
Fashion-MNIST test set. Prints a table and writes benchmarks/results/search.json.

    python benchmarks/bench_search.py [--episodes 60] [--final-epochs 0.34] [--scenarios ...]
        [--strategies haq random uniform] [--agent-seed 0]

``--strategies haq`` reruns only the HAQ rows (after a change to the agent) and keeps the
random and uniform rows of the existing JSON, which do not depend on the agent.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from haq.finishing import final_finetune
from haq.policy import Policy
from haq.search.config import SearchConfig
from haq.search.runner import search

SCENARIOS = {
    "edge-latency": dict(hardware="bismo-edge", budgets={"latency": "0.5x"}),
    "cloud-latency": dict(hardware="bismo-cloud", budgets={"latency": "0.5x"}),
    "fusion-energy": dict(hardware="bitfusion", budgets={"energy": "0.5x"}),
    "size-kmeans": dict(hardware="bismo-edge", budgets={"size": "0.1x"}, mode="kmeans"),
}


STRATEGIES = ("haq", "random", "uniform")


def _final(policy: Policy, path: Path, epochs: float) -> tuple[float, float]:
    """(quantized test top-1, fp test top-1) after the benchmark's final finetune."""
    res = final_finetune(
        policy,
        "mobilenet_v2_fmnist",
        None,
        "fashion-mnist",
        path,
        epochs=epochs,
        lr=0.01,
        progress=False,
    )
    return res["quantized_test_top1"], res["fp_test_top1"]


def run_scenario(name: str, args: argparse.Namespace, entry: dict) -> dict:
    """Run the requested strategies of one scenario, updating ``entry`` (rows of strategies
    not requested, from an earlier run, are kept)."""
    spec = SCENARIOS[name]
    root = Path(args.runs)
    entry.update({"scenario": name, **spec})
    policies = {}
    searches = [s for s in ("haq", "random") if s in args.strategies] or ["uniform"]
    for strategy in searches:
        out = root / f"{name}-{strategy}"
        shutil.rmtree(out, ignore_errors=True)
        cfg = SearchConfig(strategy=strategy, episodes=args.episodes, **spec)  # type: ignore[arg-type]
        cfg.ddpg.seed = args.agent_seed  # the agent only: data split and evaluation unchanged
        t = time.perf_counter()
        summary = search(cfg, out, progress=False)
        wall = time.perf_counter() - t
        entry["fp_heldout_top1"] = summary["fp_heldout_top1"]
        entry["w8a8_cost"] = summary["w8a8_cost"]
        entry["fp32_size_bytes"] = summary["fp32_size_bytes"]
        u = summary["uniform"]
        entry["uniform"] = {  # keeps an earlier test_top1: the uniform policy is deterministic
            **entry.get("uniform", {}),
            **{"bits": u["bits"], "heldout_top1": u["accuracy"], "cost": u["cost"]},
        }
        policies["uniform"] = Policy.from_arrays(
            summary["layer_names"], u["w_bits"], u["a_bits"], cfg.mode
        )
        if strategy == "uniform":
            continue
        entry[strategy] = {
            "episodes": summary["episodes"],
            "wall_s": wall,
            "agent_fraction": summary["timing_s"]["agent_fraction"],
            "heldout_top1": summary["best"]["accuracy"],
            "cost": summary["best"]["cost"],
        }
        policies[strategy] = Policy.load(out / "best_policy.json")
        if strategy == "haq":
            entry["haq_bits"] = {
                "w": summary["best"]["w_bits"],
                "a": summary["best"]["a_bits"],
                "layers": summary["layer_names"],
                "kinds": summary["layer_kinds"],
                "memory_bound_w8a8": summary["memory_bound_w8a8"],
            }
        print(
            f"{name} {strategy}: best held-out {summary['best']['accuracy']:.2f}% in "
            f"{summary['episodes']} episodes, {wall:.0f} s, "
            f"agent {100 * entry[strategy]['agent_fraction']:.1f}%",
            flush=True,
        )
    for strategy in args.strategies:
        top1, fp_top1 = _final(
            policies[strategy], root / f"{name}-{strategy}-final.pt", args.final_epochs
        )
        entry[strategy]["test_top1"] = top1
        entry["fp_test_top1"] = fp_top1
        print(
            f"  final finetune {strategy}: test top-1 {top1:.2f}% (fp {fp_top1:.2f}%)", flush=True
        )
    return entry


def run(args: argparse.Namespace) -> dict:
    """Every requested scenario; with a subset of strategies, merged into the existing JSON."""
    path = Path(args.json)
    merge = set(args.strategies) != set(STRATEGIES) and path.is_file()
    results = json.loads(path.read_text()) if merge else {}
    for name in args.scenarios:
        results[name] = run_scenario(name, args, results.get(name, {}) if merge else {})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")  # after every scenario
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=60)
    ap.add_argument("--final-epochs", type=float, default=0.34)
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS))
    ap.add_argument("--runs", default="runs/bench")
    ap.add_argument("--json", default="benchmarks/results/search.json")
    ap.add_argument(
        "--strategies",
        nargs="+",
        default=list(STRATEGIES),
        choices=STRATEGIES,
        help="a subset reruns only those rows and keeps the others from --json",
    )
    ap.add_argument(
        "--agent-seed",
        type=int,
        default=0,
        help="seed of the DDPG agent (networks, noise); the data split stays that of seed 0",
    )
    args = ap.parse_args()
    results = run(args)
    metric_of = {
        "edge-latency": "latency",
        "cloud-latency": "latency",
        "fusion-energy": "energy",
        "size-kmeans": "size",
    }
    print(
        "\nscenario        strategy  test top-1  (fp)     cost vs ref   episodes  wall s  agent %"
    )
    for name, e in results.items():
        m = metric_of[name]
        ref = e["fp32_size_bytes"] if m == "size" else e["w8a8_cost"][m]
        for strategy in ("haq", "random", "uniform"):
            if "test_top1" not in e.get(strategy, {}):
                continue  # not run (a --strategies subset written to a new --json)
            s = e[strategy]
            label = strategy if strategy != "uniform" else f"uniform{e['uniform']['bits']}"
            eps = s.get("episodes", 1)
            wall = f"{s['wall_s']:.0f}" if "wall_s" in s else "-"
            agent = f"{100 * s['agent_fraction']:.1f}" if "agent_fraction" in s else "-"
            print(
                f"{name:15s} {label:9s} {s['test_top1']:9.2f}%  {e['fp_test_top1']:.2f}  "
                f"{s['cost'][m] / ref:8.3f}x  {eps:8d}  {wall:>6s}  {agent:>6s}"
            )


if __name__ == "__main__":
    main()
