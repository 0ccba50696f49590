"""Hardware fidelity against the only external ground truth (issue 13).

1. BitFusion: the presets against the public simulator's own results (88 cases: ResNet-18/50,
   MobileNet-V2 and FC layers at batch 1 and 16, four bit pairs; tests/data, with provenance).
   Median and worst relative error of cycles and energy for ``bitfusion-45nm``, ``bitfusion``
   and ``bitfusion`` with 32-bit outputs.
2. BISMO cloud: ``bismo-cloud`` against the HAQ authors' released latency table (MobileNet-V2,
   100 classes, batch 16, even layers; tests/data). Rank correlation of the per-layer w8a8
   cost, share of layers whose w1/w8 and a1/a8 cost ratios are within 1.5x of the table's,
   uniform w2a2 / w4a4 / w6a6 cost against w8a8.

    python benchmarks/bench_fidelity.py [--json benchmarks/results/fidelity.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from haq.hardware import load_hardware
from haq.hardware.table import cost_table
from haq.layers import LayerSpec, extract_layers
from haq.models import create_model

ROOT = Path(__file__).resolve().parent.parent
SIM_REFERENCE = ROOT / "tests" / "data" / "bitfusion_simulator_reference.json"
HAQ_TABLE = ROOT / "tests" / "data" / "haq_cloud_mobilenetv2_batch16_even_layers.csv"


def layer(k: int, side: int, s: int, ic: int, oc: int, first: bool) -> LayerSpec:
    """A square convolution (or an FC layer when k = side = 1) as the simulator describes it."""
    size = (side - 1) * s + k
    fc = k == 1 and side == 1
    return LayerSpec(
        0 if first else 1, "layer", "linear" if fc else ("pointwise" if k == 1 else "conv"),
        ic, oc, (k, k), (s, s), (0, 0), 1, (1, 1) if fc else (size, size), (side, side),
        k * k * ic * oc, 0, side * side * k * k * ic * oc,
    )  # fmt: skip


def bitfusion_errors() -> dict[str, Any]:
    rows = json.loads(SIM_REFERENCE.read_text())["rows"]
    base = load_hardware("bitfusion")
    variants = {
        "bitfusion-45nm": load_hardware("bitfusion-45nm"),
        "bitfusion": base,
        "bitfusion, output_bits = 32": replace(base, params={**base.params, "output_bits": 32}),
    }
    out: dict[str, Any] = {"cases": len(rows)}
    for name, hw in variants.items():
        err_c, err_e = [], []
        for r in rows:
            k, side, s, ic, oc, b, im2col = r["layer"]
            table = cost_table([layer(k, side, s, ic, oc, im2col)], hw.with_batch(b))
            w, a = r["w"] - 1, r["a"] - 1
            assert table.energy_j is not None
            err_c.append(abs(table.cycles[0, w, a] / r["cycles"] - 1))
            err_e.append(abs(table.energy_j[0, w, a] * 1e9 / r["energy_nj"] - 1))
        out[name] = {
            "cycles_median_error": float(np.median(err_c)),
            "cycles_worst_error": float(np.max(err_c)),
            "energy_median_error": float(np.median(err_e)),
            "energy_worst_error": float(np.max(err_e)),
        }
    return out


def haq_table() -> dict[int, np.ndarray]:
    """{layer index: [8, 8] cost} of the released table's even layers."""
    lines = [ln for ln in HAQ_TABLE.read_text().splitlines() if not ln.startswith("#")]
    table: dict[int, np.ndarray] = {}
    for row in csv.DictReader(lines):
        grid = table.setdefault(int(row["layer"]), np.zeros((8, 8)))
        grid[int(row["w_bits"]) - 1, int(row["a_bits"]) - 1] = float(row["cost"])
    return table


def bismo_cloud_fit(hardware: str = "bismo-cloud") -> dict[str, Any]:
    ref = haq_table()
    layers = extract_layers(create_model("mobilenet_v2", num_classes=100), (3, 224, 224))
    ours = cost_table(layers, load_hardware(hardware)).cycles
    idx = sorted(ref)
    theirs = np.stack([ref[i] for i in idx])
    mine = ours[idx]
    rho = spearmanr(mine[:, 7, 7], theirs[:, 7, 7]).statistic

    def within(ratio_mine: np.ndarray, ratio_theirs: np.ndarray) -> float:
        q = ratio_mine / ratio_theirs
        return float(np.mean((q <= 1.5) & (q >= 1 / 1.5)))

    uniform = {
        f"w{b}a{b}": {
            "table": float(theirs[:, b - 1, b - 1].sum() / theirs[:, 7, 7].sum()),
            "ours": float(mine[:, b - 1, b - 1].sum() / mine[:, 7, 7].sum()),
        }
        for b in (2, 4, 6)
    }
    return {
        "layers": len(idx),
        "spearman_w8a8": float(rho),
        "w1_over_w8_within_1.5x": within(
            mine[:, 0, 7] / mine[:, 7, 7], theirs[:, 0, 7] / theirs[:, 7, 7]
        ),
        "a1_over_a8_within_1.5x": within(
            mine[:, 7, 0] / mine[:, 7, 7], theirs[:, 7, 0] / theirs[:, 7, 7]
        ),
        "uniform_vs_w8a8": uniform,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default="benchmarks/results/fidelity.json")
    args = ap.parse_args()
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "bitfusion_vs_simulator": bitfusion_errors(),
        "bismo_cloud_vs_haq_table": bismo_cloud_fit(),
    }
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
