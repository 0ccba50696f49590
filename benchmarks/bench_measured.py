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
5. ``--parts vs-torch``: every layer of the reference model and of MobileNet-V2 at 3x224x224, timed
   on the runner at w1a1 and w2a2 (and w8a8) against the same layer in fp32 through torch
   (batch 1, the same thread count, medians of alternating runs).
6. ``--parts imagenet``: every ``--imagenet-every``-th layer of MobileNet-V2 at 3x224x224
   measured on the runner, rank-correlated with ``bismo-edge`` as in 2.

python benchmarks/bench_measured.py [--runner bitserial|tvm-bitserial] [--bits 1,2,...]
    [--repeats 3] [--e2e-repeats 5] [--threads 1] [--parts vs-torch imagenet reference]
    [--imagenet-every 4] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from haq.hardware.measure import Runner, load_runner, measure_table
from haq.hardware.table import CostTable, table_for
from haq.layers import LayerSpec, extract_layers
from haq.models import create_model
from haq.search.baselines import largest_uniform_bits
from haq.search.rundir import RunDir
from haq.search.runner import search

MODEL = "mobilenet_v2_fmnist"
PARTS = ("vs-torch", "imagenet", "reference")


def end_to_end(runner: Runner, layers: list[LayerSpec], w: np.ndarray, a: np.ndarray) -> float:
    """Seconds of one pass of every layer's bit-serial kernel at the policy's bits."""
    return sum(runner(s, int(wb), int(ab), 1) for s, wb, ab in zip(layers, w, a, strict=True))


def torch_seconds(layer: LayerSpec, repeats: int) -> float:
    """Median seconds of ``layer`` in fp32 through torch, batch 1 (after one warm-up run)."""
    import torch

    if layer.kind == "linear":
        mod: torch.nn.Module = torch.nn.Linear(layer.in_channels, layer.out_channels)
        x = torch.randn(layer.in_hw[1], layer.in_channels)
    else:
        mod = torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel, layer.stride,
                              layer.padding, groups=layer.groups)  # fmt: skip
        x = torch.randn(1, layer.in_channels, *layer.in_hw)
    times = []
    with torch.inference_mode():
        mod(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            mod(x)
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def vs_torch(runner: Runner, model: str, shape: tuple[int, ...], pairs: list[tuple[int, int]], repeats: int) -> dict:  # fmt: skip
    """Every layer of ``model`` on the runner at ``pairs`` against fp32 torch, per layer and
    summed; how many layers the runner wins at each pair, per layer kind."""
    layers = extract_layers(create_model(model), shape)
    rows = []
    for s in layers:
        row: dict[str, Any] = {"name": s.name, "kind": s.kind, "macs": s.macs}
        for w, a in pairs:
            runner(s, w, a, 1)  # compiles
        for _ in range(repeats):  # alternating, so drift hits both alike
            row.setdefault("torch", []).append(torch_seconds(s, 3))
            for w, a in pairs:
                row.setdefault(f"w{w}a{a}", []).append(runner(s, w, a, 1))
        rows.append({k: float(np.median(v)) if isinstance(v, list) else v for k, v in row.items()})
    out: dict = {"model": model, "shape": list(shape), "layers": rows}
    out["total_s"] = {k: sum(r[k] for r in rows) for k in ["torch"] + [f"w{w}a{a}" for w, a in pairs]}  # fmt: skip
    for w, a in pairs:
        key = f"w{w}a{a}"
        out[f"{key}_faster_than_torch"] = {
            kind: [sum(r[key] < r["torch"] for r in rows if r["kind"] == kind),
                   sum(r["kind"] == kind for r in rows)]
            for kind in sorted({r["kind"] for r in rows})
        }  # fmt: skip
    return out


def correlations(measured: CostTable, layers: list[LayerSpec]) -> dict:
    """Spearman rank correlations of a measured table with ``bismo-edge``: per-layer w8a8
    cost, and each layer's response to its bits (cost over its w8a8 cost)."""
    ours, theirs = measured.latency_s, table_for(layers, "bismo-edge").latency_s
    rel_ours = ours / ours[:, 7:8, 7:8]
    rel_theirs = theirs / theirs[:, 7:8, 7:8]
    resp = [float(spearmanr(o.ravel(), t.ravel())[0]) for o, t in zip(rel_ours, rel_theirs, strict=True)]  # fmt: skip
    return {
        "rank_corr_w8a8_per_layer": float(spearmanr(ours[:, 7, 7], theirs[:, 7, 7])[0]),
        "rank_corr_bit_response_median": float(np.median(resp)),
        "rank_corr_bit_response_range": [float(min(resp)), float(max(resp))],
    }


def imagenet_subset(args: argparse.Namespace, bits: list[int], work: Path) -> dict:
    """Every ``--imagenet-every``-th layer of MobileNet-V2 at 3x224x224 measured on the
    runner and compared with ``bismo-edge``."""
    layers = extract_layers(create_model("mobilenet_v2"), (3, 224, 224))[:: args.imagenet_every]
    t0 = time.perf_counter()
    table = measure_table(layers, args.runner, work / "imagenet.npz", bits=bits, repeats=args.repeats)  # fmt: skip
    return {"layers": [s.name for s in layers], "measure_s": time.perf_counter() - t0,
            **correlations(table, layers)}  # fmt: skip


def reference(args: argparse.Namespace, runner: Runner, bits: list[int], work: Path) -> dict:
    """The reference model: its measured table, the search on it, the end-to-end times."""
    layers = extract_layers(create_model(MODEL), (1, 28, 28))
    t0 = time.perf_counter()
    measured = measure_table(layers, args.runner, work / "measured.npz", bits=bits, repeats=args.repeats)  # fmt: skip
    out = {"measure_s": time.perf_counter() - t0, **correlations(measured, layers)}
    run = work / f"search-{time.strftime('%Y%m%d-%H%M%S')}"
    summary = search(None, run, progress=False, hardware=str(work / "measured.npz"))
    out["search_s"] = summary["search_cost"]["wall_s"]
    best = max(RunDir(run).read_episodes(), key=lambda r: r["reward"])
    pw = np.array([8] + [0] * (len(layers) - 2) + [8])
    uni = largest_uniform_bits(measured, summary_budgets(summary, measured), 2, 8, pw, pw, False)
    assert uni is not None
    policies = {"searched": (np.array(best["w_bits"]), np.array(best["a_bits"])), "uniform": uni,
                "w8a8": (np.full(len(layers), 8),) * 2}  # fmt: skip
    times: dict[str, list[float]] = {k: [] for k in policies}
    for _ in range(args.e2e_repeats):  # alternating, so drift hits every policy alike
        for name, (w, a) in policies.items():
            times[name].append(end_to_end(runner, layers, w, a))
    med = {k: float(np.median(v)) for k, v in times.items()}
    out["e2e_s"] = {k: [float(min(v)), float(np.median(v)), float(max(v))] for k, v in times.items()}  # fmt: skip
    out["e2e_ratio_searched_vs_w8a8"] = med["searched"] / med["w8a8"]
    out["e2e_ratio_uniform_vs_w8a8"] = med["uniform"] / med["w8a8"]
    out["e2e_speedup_searched_vs_uniform"] = med["uniform"] / med["searched"]
    out["table_ratio_searched_vs_w8a8"] = best["cost"]["latency"] / measured.uniform_cost(8).total("latency")  # fmt: skip
    out["heldout_top1"] = {"searched": summary["best"]["accuracy"], "uniform": summary["uniform"]["accuracy"]}  # fmt: skip
    out["uniform_bits"] = summary["uniform"]["bits"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runner", default="bitserial", choices=("bitserial", "tvm-bitserial"))
    ap.add_argument("--bits", default="1,2,3,4,5,6,7,8", help="bit widths timed")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per layer and bit pair")
    ap.add_argument("--e2e-repeats", type=int, default=5, help="end-to-end passes per policy")
    ap.add_argument("--work", default="runs/bench-measured", help="table and run directory")
    ap.add_argument("--threads", type=int, default=1, help="threads of TVM and torch")
    ap.add_argument("--parts", nargs="+", default=["reference"], choices=PARTS,
                    help="what to run; results of other parts in --json are kept")  # fmt: skip
    ap.add_argument("--imagenet-every", type=int, default=4, help="imagenet: every N-th layer")
    ap.add_argument("--json", default="benchmarks/results/measured.json")
    args = ap.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # read when TVM's thread pool starts
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    path = Path(args.json)
    out: dict = json.loads(path.read_text()) if path.is_file() else {}
    if out.get("runner") != args.runner:
        out = {}
    out["machine"] = f"{platform.node()} ({platform.processor() or platform.machine()})"
    out["torch"], out["runner"] = torch.__version__, args.runner
    bits = [int(b) for b in args.bits.split(",")]
    runner = load_runner(args.runner)
    if "vs-torch" in args.parts:
        pairs = [(1, 1), (2, 2), (8, 8)]
        out["vs_torch"] = [vs_torch(runner, MODEL, (1, 28, 28), pairs, args.e2e_repeats),
                           vs_torch(runner, "mobilenet_v2", (3, 224, 224), pairs, args.e2e_repeats)]  # fmt: skip
        save(out, path)
    if "imagenet" in args.parts:
        out["imagenet_subset"] = {"bits_measured": bits, **imagenet_subset(args, bits, work)}
        save(out, path)
    if "reference" in args.parts:
        out.update(bits_measured=bits, **reference(args, runner, bits, work))
        save(out, path)
    json.dump({k: v for k, v in out.items() if k != "vs_torch"}, sys.stdout, indent=2)
    print()
    return 0


def save(out: dict, path: Path) -> None:
    out["date"] = time.strftime("%Y-%m-%d")
    out["threads"] = os.environ.get("TVM_NUM_THREADS")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")


def summary_budgets(summary: dict, table) -> list:
    from haq.search.budget import parse_budget

    return [parse_budget(m, b["text"], table) for m, b in summary["budgets"].items()]


if __name__ == "__main__":
    sys.exit(main())
