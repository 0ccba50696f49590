"""Fake quantization against fp32 on this machine's CPU (issue 32, the CPU figures).

For MobileNet-V2 in the ImageNet layout at 3x64x64 and the reference MobileNet-V2-style
model at 1x28x28, at batch 4 and 64: images/s of an fp32 training step and inference, and of
the same at w8a8 and w4a4, measured alternately in one process (bench_gpu.model_throughput),
so each ratio compares runs made under the same load. Setup seconds and the first against
the second episode come from ``bench_gpu.py --tiny`` (the same steps as on a GPU).

    python benchmarks/bench_cpu.py [--repeats 15] [--json benchmarks/results/cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from bench_gpu import model_throughput
from haq.hostmem import tune_host_allocator
from haq.models import create_model

CASES = (
    ("mobilenet_v2", (3, 64, 64), {"num_classes": 10}),
    ("mobilenet_v2_fmnist", (1, 28, 28), {}),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=15, help="timed rounds per figure")
    ap.add_argument("--json", default="benchmarks/results/cpu.json")
    args = ap.parse_args()
    tune_host_allocator()
    results: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    dev = torch.device("cpu")
    for name, shape, kw in CASES:
        torch.manual_seed(0)
        model = create_model(name, **kw)
        for batch in (4, 64):
            r = model_throughput(model, shape, batch, dev, ("w8a8", "w4a4"), args.repeats)
            key = f"{name}_{shape[1]}x{shape[2]}_b{batch}"
            results[key] = r
            print(
                f"{key}: train fp32 {r['fp32_train_img_s']:.0f} img/s, w8a8 "
                f"{1 / r['w8a8_train_vs_fp32']:.2f}x slower, w4a4 {1 / r['w4a4_train_vs_fp32']:.2f}x; "
                f"inference w8a8 {1 / r['w8a8_infer_vs_fp32']:.2f}x, w4a4 "
                f"{1 / r['w4a4_infer_vs_fp32']:.2f}x",
                flush=True,
            )
            Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
