"""Print benchmarks/results/search.json (written by bench_search.py) as the README's table.

python benchmarks/search_table.py [benchmarks/results/search.json]
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


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/search.json")
    print(table(json.loads(path.read_text())))
