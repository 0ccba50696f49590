"""Print benchmarks/results/search.json (written by bench_search.py) as the README's tables.

python benchmarks/search_table.py [benchmarks/results/search.json]             # results
python benchmarks/search_table.py --edge-cloud [benchmarks/results/search.json]  # bits
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

LABELS = {
    "edge-latency": ("bismo-edge, latency <= 0.5x w8a8", "latency", "w8a8"),
    "cloud-latency": ("bismo-cloud, latency <= 0.5x w8a8", "latency", "w8a8"),
    "fusion-energy": ("bitfusion, energy <= 0.5x w8a8", "energy", "w8a8"),
    "size-kmeans": ("k-means, size <= 0.1x fp32", "size", "fp32"),
}


def table(results: dict) -> str:
    """The markdown rows: one per (scenario, strategy)."""
    fp = next(iter(results.values()))["fp_test_top1"]
    lines = [
        f"| scenario | policy | test top-1 (FP {fp:.2f} %) | held-out top-1 | cost vs reference "
        "| episodes | search wall time | agent overhead |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, e in results.items():
        title, metric, ref_name = LABELS[name]
        ref = e["fp32_size_bytes"] if metric == "size" else e["w8a8_cost"][metric]
        for strategy, label in (
            ("haq", "HAQ (DDPG)"),
            ("random", "random search"),
            ("uniform", f"uniform w{e['uniform']['bits']}"),
        ):
            s = e[strategy]
            if strategy == "uniform" and name != "size-kmeans":
                label += f"a{e['uniform']['bits']}"
            wall = f"{s['wall_s']:.0f} s" if "wall_s" in s else "-"
            agent = f"{100 * s['agent_fraction']:.1f} %" if "agent_fraction" in s else "-"
            lines.append(
                f"| {title} | {label} | {s['test_top1']:.2f} % | {s['heldout_top1']:.2f} % "
                f"| {metric} {s['cost'][metric] / ref:.3f}x of {ref_name} "
                f"| {s.get('episodes', 1)} | {wall} | {agent} |"
            )
    return "\n".join(lines)


def _mean(values: list[int]) -> str:
    return f"{sum(values) / len(values):.2f}"


def edge_cloud(results: dict) -> str:
    """The README's edge-vs-cloud comparison: the depthwise layers' bits and bound on each
    hardware, then mean bits per layer kind."""
    edge, cloud = results["edge-latency"]["haq_bits"], results["cloud-latency"]["haq_bits"]
    lines = [
        "| # | layer | kind | edge w/a | edge bound (w8a8) | cloud w/a | cloud bound (w8a8) |",
        "|---|---|---|---|---|---|---|",
    ]

    def bound(bits: dict, i: int) -> str:
        return "memory" if bits["memory_bound_w8a8"][i] else "compute"

    for i, (name, kind) in enumerate(zip(edge["layers"], edge["kinds"], strict=True)):
        if kind == "depthwise":
            lines.append(
                f"| {i} | {name} | {kind} | {edge['w'][i]}/{edge['a'][i]} | {bound(edge, i)} "
                f"| {cloud['w'][i]}/{cloud['a'][i]} | {bound(cloud, i)} |"
            )
    lines += ["", "| kind | layers | edge mean w / a | cloud mean w / a |", "|---|---|---|---|"]
    for kind in dict.fromkeys(edge["kinds"]):
        idx = [i for i, k in enumerate(edge["kinds"]) if k == kind]
        cells = [
            f"{_mean([b['w'][i] for i in idx])} / {_mean([b['a'][i] for i in idx])}"
            for b in (edge, cloud)
        ]
        lines.append(f"| {kind} | {len(idx)} | {cells[0]} | {cells[1]} |")
    return "\n".join([*lines, "", bit_prices()])


def bit_prices() -> str:
    """What one bit costs: the latency saved by one fewer weight or activation bit at w4a4,
    averaged over the layers of a kind, on each hardware (from the cost model)."""
    from haq.hardware import load_hardware
    from haq.hardware.table import cost_table
    from haq.layers import extract_layers
    from haq.models import create_model

    layers = extract_layers(create_model("mobilenet_v2_fmnist"), (1, 28, 28))
    lines = [
        "| hardware | kind | latency per weight bit | per activation bit | share of w8a8 latency |",
        "|---|---|---|---|---|",
    ]
    for hw in ("bismo-edge", "bismo-cloud"):
        lat = cost_table(layers, load_hardware(hw)).latency_s  # (layer, w_bits - 1, a_bits - 1)
        for kind in ("depthwise", "pointwise"):
            idx = [i for i, s in enumerate(layers) if s.kind == kind]
            per_w = 1e6 * (lat[idx, 3, 3] - lat[idx, 2, 3]).mean()
            per_a = 1e6 * (lat[idx, 3, 3] - lat[idx, 3, 2]).mean()
            share = lat[idx, 7, 7].sum() / lat[:, 7, 7].sum()
            lines.append(f"| {hw} | {kind} | {per_w:.2f} us | {per_a:.2f} us | {share:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    argv = sys.argv[1:]
    show_bits = "--edge-cloud" in argv
    argv = [a for a in argv if a != "--edge-cloud"]
    path = Path(argv[0] if argv else "benchmarks/results/search.json")
    data = json.loads(path.read_text())
    print(edge_cloud(data) if show_bits else table(data))
