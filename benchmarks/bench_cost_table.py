"""Time the full 8 x 8 cost table of ResNet-50 (ImageNet shape) on every preset.

Target (issue 2): under 50 ms per preset on a 2-core machine; ``bitfusion-45nm`` (issue 13)
runs the simulator's tiling search, target well under a second, and is timed cold (its
per-shape cache cleared before every repeat). Layer extraction (one forward pass of PyTorch)
is done once and timed apart; the table itself is pure numpy.

    python benchmarks/bench_cost_table.py
"""

from __future__ import annotations

import time

from haq.hardware import ARCHS, list_hardware, load_hardware
from haq.hardware.table import cost_table
from haq.layers import extract_layers
from haq.models import create_model


def main(repeats: int = 20) -> None:
    t0 = time.perf_counter()
    layers = extract_layers(create_model("resnet50"), (3, 224, 224))
    print(
        f"extract_layers(resnet50): {len(layers)} layers in {(time.perf_counter() - t0) * 1e3:.0f} ms"
    )
    for name in list_hardware():
        hw = load_hardware(name)
        cache = getattr(ARCHS[hw.arch], "simulate", None)  # a tiling search caches per shape
        cost_table(layers, hw)  # warm-up
        times = []
        for _ in range(repeats):
            if cache is not None:
                cache.cache_clear()
            t = time.perf_counter()
            cost_table(layers, hw)
            times.append(time.perf_counter() - t)
        best, median = min(times), sorted(times)[len(times) // 2]
        print(
            f"{name:14s} full [54, 8, 8] table{' (cold)' if cache else ''}: median "
            f"{median * 1e3:.2f} ms, best {best * 1e3:.2f} ms"
        )


if __name__ == "__main__":
    main()
