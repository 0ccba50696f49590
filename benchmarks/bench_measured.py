"""Predicted vs measured hardware feedback (issue 34, item 3).

1. ``haq hardware measure`` the reference model on a runner (``--runner bitserial``: a numpy
   bit-serial kernel on this CPU; ``tvm-bitserial``: one compiled by Apache TVM): how long
   building the table takes.
2. Compare it with ``bismo-edge`` (the bit-serial accelerator model): Spearman rank
   correlation of the per-layer w8a8 cost, and of each layer's response to its bits
   (cost at w1..8 x a1..8 over cost at w8a8).
3. Search under half the measured w8a8 latency with the default strategy (ILP).
4. Time the whole quantized network end to end on the runtime (every layer's kernel in
   sequence, ``--e2e-repeats`` times, alternating policies): the searched policy against the
   largest uniform policy that fits and against w8a8.

python benchmarks/bench_measured.py [--runner bitserial|tvm-bitserial] [--bits 1,2,...]
    [--repeats 3] [--e2e-repeats 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from haq.hardware.measure import Runner, load_runner, measure_table
from haq.hardware.table import table_for
from haq.layers import LayerSpec, extract_layers
from haq.models import create_model
from haq.search.baselines import largest_uniform_bits
from haq.search.rundir import RunDir
from haq.search.runner import search

MODEL = "mobilenet_v2_fmnist"


def end_to_end(runner: Runner, layers: list[LayerSpec], w: np.ndarray, a: np.ndarray) -> float:
    """Seconds of one pass of every layer's bit-serial kernel at the policy's bits."""
    return sum(runner(s, int(wb), int(ab), 1) for s, wb, ab in zip(layers, w, a, strict=True))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runner", default="bitserial", choices=("bitserial", "tvm-bitserial"))
    ap.add_argument("--bits", default="1,2,3,4,5,6,7,8", help="bit widths timed")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per layer and bit pair")
    ap.add_argument("--e2e-repeats", type=int, default=5, help="end-to-end passes per policy")
    ap.add_argument("--work", default="runs/bench-measured", help="table and run directory")
    ap.add_argument("--json", default="benchmarks/results/measured.json")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    layers = extract_layers(create_model(MODEL), (1, 28, 28))
    out: dict = {"machine": f"{platform.node()} ({platform.processor() or platform.machine()})"}
    out["runner"], bits = args.runner, [int(b) for b in args.bits.split(",")]
    out["bits_measured"] = bits
    runner = load_runner(args.runner)

    t0 = time.perf_counter()
    measured = measure_table(layers, args.runner, work / "measured.npz", bits=bits, repeats=args.repeats)  # fmt: skip
    out["measure_s"] = time.perf_counter() - t0
    model = table_for(layers, "bismo-edge")
    ours, theirs = measured.latency_s, model.latency_s
    out["rank_corr_w8a8_per_layer"] = float(spearmanr(ours[:, 7, 7], theirs[:, 7, 7])[0])
    resp = [
        float(
            spearmanr((ours[i] / ours[i, 7, 7]).ravel(), (theirs[i] / theirs[i, 7, 7]).ravel())[0]
        )
        for i in range(len(layers))
    ]
    out["rank_corr_bit_response_median"] = float(np.median(resp))
    out["rank_corr_bit_response_range"] = [float(min(resp)), float(max(resp))]

    run = work / f"search-{time.strftime('%Y%m%d-%H%M%S')}"
    summary = search(None, run, progress=False, hardware=str(work / "measured.npz"))
    out["search_s"] = summary["search_cost"]["wall_s"]
    best = max(RunDir(run).read_episodes(), key=lambda r: r["reward"])
    bw, ba = np.array(best["w_bits"]), np.array(best["a_bits"])
    pw = np.array([8] + [0] * (len(layers) - 2) + [8])
    uni = largest_uniform_bits(measured, summary_budgets(summary, measured), 2, 8, pw, pw, False)
    assert uni is not None
    policies = {"searched": (bw, ba), "uniform": uni, "w8a8": (np.full(len(layers), 8),) * 2}
    times: dict[str, list[float]] = {k: [] for k in policies}
    for _ in range(args.e2e_repeats):  # alternating, so drift hits every policy alike
        for name, (w, a) in policies.items():
            times[name].append(end_to_end(runner, layers, w, a))
    med = {k: float(np.median(v)) for k, v in times.items()}
    out["e2e_s"] = {
        k: [float(min(v)), float(np.median(v)), float(max(v))] for k, v in times.items()
    }
    out["e2e_ratio_searched_vs_w8a8"] = med["searched"] / med["w8a8"]
    out["e2e_ratio_uniform_vs_w8a8"] = med["uniform"] / med["w8a8"]
    out["e2e_speedup_searched_vs_uniform"] = med["uniform"] / med["searched"]
    out["table_ratio_searched_vs_w8a8"] = best["cost"]["latency"] / measured.uniform_cost(8).total("latency")  # fmt: skip
    out["heldout_top1"] = {"searched": summary["best"]["accuracy"], "uniform": summary["uniform"]["accuracy"]}  # fmt: skip
    out["uniform_bits"] = summary["uniform"]["bits"]
    out["date"] = time.strftime("%Y-%m-%d")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


def summary_budgets(summary: dict, table) -> list:
    from haq.search.budget import parse_budget

    return [parse_budget(m, b["text"], table) for m, b in summary["budgets"].items()]


if __name__ == "__main__":
    sys.exit(main())
