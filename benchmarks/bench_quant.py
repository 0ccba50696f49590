"""Quality and speed of the quantization engine on the reference models (issue 3 targets).

Quality, on the full Fashion-MNIST test set (10,000 images):
  - w8a8 linear, calibrated, no finetune: within 0.5 pt of FP;
  - uniform w4a4 after one finetune epoch: within 2 pts of FP;
  - w2a2 after one finetune epoch, and per-layer sensitivity (each layer alone at w2a2, the
    rest at w8a8, no finetune) to show that layers differ.
Speed (CPU, batch 256): quantize + calibrate a new policy (cached calibration, as the search
does), and the quantized forward pass relative to the FP one (target <= 1.5x).

    python benchmarks/bench_quant.py [--models mobilenet_v2_fmnist resnet_fmnist] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from haq.checkpoint import builtin_checkpoint, load_checkpoint
from haq.data import TensorData, TensorLoader, load_dataset
from haq.policy import Policy
from haq.quant.api import quantize
from haq.quant.calibrate import Calibration
from haq.train import evaluate, finetune


def forward_ratio(
    fp: torch.nn.Module, q: torch.nn.Module, x: torch.Tensor, repeats: int = 10
) -> tuple[float, float]:
    def best(m: torch.nn.Module) -> float:
        times = []
        with torch.no_grad():
            m(x)
            for _ in range(repeats):
                t = time.perf_counter()
                m(x)
                times.append(time.perf_counter() - t)
        return float(np.median(times))

    return best(fp), best(q)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["mobilenet_v2_fmnist", "resnet_fmnist"])
    ap.add_argument("--quick", action="store_true", help="skip the finetune epochs and sensitivity")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()
    train = load_dataset("fashion-mnist", train=True)
    test = load_dataset("fashion-mnist", train=False)
    assert isinstance(train, TensorData) and isinstance(test, TensorData)
    test_loader = TensorLoader(test, 512)
    results = {}
    for name in args.models:
        ckpt = builtin_checkpoint(name)
        assert ckpt is not None, name
        model, _ = load_checkpoint(ckpt)
        r: dict[str, Any] = {}
        t = time.perf_counter()
        calib = Calibration(model, TensorLoader(train, 256), batches=2)
        r["calibration_s"] = time.perf_counter() - t
        names = calib.layer_names
        fp = evaluate(model, test_loader).top1
        r["fp_top1"] = fp
        # warm the clip caches for every bit width (the search does this once per run)
        for b in range(1, 9):
            quantize(model, Policy.uniform(f"w{b}a{b}", names), calibration=calib)
        rng = np.random.default_rng(0)
        times = []
        for _ in range(10):
            pol = Policy.from_arrays(
                names, rng.integers(2, 9, len(names)), rng.integers(2, 9, len(names))
            )
            t = time.perf_counter()
            quantize(model, pol, calibration=calib)
            times.append(time.perf_counter() - t)
        r["quantize_s_median"] = float(np.median(times))
        q8 = quantize(model, Policy.uniform("w8a8", names), calibration=calib).eval()
        r["w8a8_top1"] = evaluate(q8, test_loader).top1
        x = test.images[:256]
        fp_s, q_s = forward_ratio(model.eval(), q8, x)
        r["forward_fp_s"], r["forward_q_s"], r["forward_ratio"] = fp_s, q_s, q_s / fp_s
        print(
            f"{name}: FP {fp:.2f}%  w8a8 (no finetune) {r['w8a8_top1']:.2f}%  "
            f"quantize {r['quantize_s_median'] * 1e3:.0f} ms  forward q/fp {r['forward_ratio']:.2f}x "
            f"({q_s * 1e3:.0f} vs {fp_s * 1e3:.0f} ms at batch 256)",
            flush=True,
        )
        if not args.quick:
            for spec in ("w4a4", "w2a2"):
                q = quantize(model, Policy.uniform(spec, names), calibration=calib)
                before = evaluate(q, test_loader).top1
                t = time.perf_counter()
                finetune(
                    q,
                    TensorLoader(train, 128, shuffle=True),
                    epochs=1,
                    lr=0.01,
                    seed=0,
                    progress=True,
                )
                r[f"{spec}_top1_no_finetune"] = before
                r[f"{spec}_top1_1epoch"] = evaluate(q, test_loader).top1
                r[f"{spec}_finetune_s"] = time.perf_counter() - t
                print(
                    f"  {spec}: {before:.2f}% without finetune, {r[f'{spec}_top1_1epoch']:.2f}% after 1 epoch",
                    flush=True,
                )
            sens = {}
            for i, layer in enumerate(names):
                w = np.full(len(names), 8)
                a = np.full(len(names), 8)
                w[i] = a[i] = 2
                q = quantize(model, Policy.from_arrays(names, w, a), calibration=calib)
                sens[layer] = evaluate(q, test_loader).top1
            r["sensitivity_w2a2_top1"] = sens
            worst = sorted(sens.items(), key=lambda kv: kv[1])[:5]
            best = sorted(sens.items(), key=lambda kv: -kv[1])[:3]
            print(
                "  per-layer sensitivity (layer alone at w2a2): most sensitive "
                + ", ".join(f"{k} {v:.1f}%" for k, v in worst)
                + "; least "
                + ", ".join(f"{k} {v:.1f}%" for k, v in best),
                flush=True,
            )
        results[name] = r
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
