"""Calibrate ``bismo-cloud`` to the HAQ authors' released table with physical parameters only
(issue 13, item 2): a grid over bandwidth, the dot-product width (how K is padded), the
per-instruction overhead, the bits of the written results, the per-layer setup and how often
the weights are fetched. No per-layer factors.

Fit, on the table's 27 layers (MobileNet-V2, 100 classes, batch 16): the shape error is the
mean |log(ours / table)| of every layer's 64 costs normalised by its own w8a8 cost (how each
layer responds to bits); the rank correlation of the w8a8 costs across layers; and the
figures of ``bench_fidelity.py``. Prints the best configurations by shape error.

    python benchmarks/calibrate_bismo.py [--top 8]
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import replace

import numpy as np
from scipy.stats import spearmanr

from bench_fidelity import haq_table
from haq.hardware import load_hardware
from haq.hardware.table import cost_table
from haq.layers import extract_layers
from haq.models import create_model

GRID: dict[str, list[float]] = {
    "dram_bandwidth_gbs": [1.6, 3.2, 6.4, 12.8, 25.6],
    "dk": [64, 128, 256],
    "instr_overhead_cycles": [0, 1],
    "output_bits": [0, 8, 32],
    "layer_setup_cycles": [0, 500, 5000],
    "weight_fetch_images": [1, 2, 4, 16],
}


def fit(cycles: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Fit figures of per-layer [L, 8, 8] ``cycles`` against the table ``ref`` (same layers)."""
    mine = cycles / cycles[:, 7:8, 7:8]
    theirs = ref / ref[:, 7:8, 7:8]

    def within(r_mine: np.ndarray, r_theirs: np.ndarray) -> float:
        q = r_mine / r_theirs
        return float(np.mean((q <= 1.5) & (q >= 1 / 1.5)))

    return {
        "shape_error": float(np.mean(np.abs(np.log(mine / theirs)))),
        "spearman": float(spearmanr(cycles[:, 7, 7], ref[:, 7, 7]).statistic),
        "w1_within": within(mine[:, 0, 7], theirs[:, 0, 7]),
        "a1_within": within(mine[:, 7, 0], theirs[:, 7, 0]),
        **{
            f"w{b}a{b}": float(cycles[:, b - 1, b - 1].sum() / cycles[:, 7, 7].sum())
            for b in (2, 4, 6)
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--top", type=int, default=8)
    args = ap.parse_args()
    table = haq_table()
    idx = sorted(table)
    ref = np.stack([table[i] for i in idx])
    layers = extract_layers(create_model("mobilenet_v2", num_classes=100), (3, 224, 224))
    base = load_hardware("bismo-cloud")
    rows = []
    for values in itertools.product(*GRID.values()):
        params = {**base.params, **dict(zip(GRID, values, strict=True))}
        cycles = cost_table(layers, replace(base, params=params)).cycles[idx]
        rows.append((fit(cycles, ref), dict(zip(GRID, values, strict=True))))
    rows.sort(key=lambda r: r[0]["shape_error"])
    ref_fit = {
        f"w{b}a{b}": float(ref[:, b - 1, b - 1].sum() / ref[:, 7, 7].sum()) for b in (2, 4, 6)
    }
    print(f"table: {ref_fit}")
    now = fit(cost_table(layers, base).cycles[idx], ref)
    print(f"bismo-cloud today: {now}")
    for figures, params in rows[: args.top]:
        print({k: round(v, 3) for k, v in figures.items()}, params)


if __name__ == "__main__":
    main()
