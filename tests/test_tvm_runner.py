"""The ``tvm-bitserial`` runner (issue 34): a bit-serial kernel compiled by Apache TVM on this
CPU. Its product is exact, its time grows with the bits, and ``haq hardware measure`` with it
writes a table the search accepts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from haq.hardware.table import CostTable
from haq.layers import extract_layers
from haq.models import create_model
from haq.search.runner import search
from tests.test_fuzz import TINY, run_cli
from tests.test_search import tiny_cfg

pytest.importorskip("tvm")  # installed by scripts/setup.sh (haq[tvm])

from haq.hardware.tvm_bitserial import bitserial_product, time_layer


@pytest.mark.parametrize(
    ("a", "w", "k", "n"),
    # word 64 (2 and 3 words), 32, 16 and 8 bits; n=1: the depthwise schedule (37 rows: a
    # partial vector of 8)
    [(1, 1, 70, 5), (2, 3, 32, 5), (4, 4, 65, 5), (3, 7, 9, 5), (8, 8, 130, 5), (5, 2, 8, 5),
     (1, 1, 9, 1), (2, 2, 9, 1), (8, 6, 25, 1), (4, 8, 100, 1)],
)  # fmt: skip
def test_the_tvm_kernel_equals_the_integer_product(a: int, w: int, k: int, n: int) -> None:
    rng = np.random.default_rng(a * 10 + w)
    acts = rng.integers(0, 2**a, size=(3, 37, k))
    weights = rng.integers(0, 2**w, size=(3, n, k))
    got, seconds = bitserial_product(acts, weights, w, a)
    assert np.array_equal(got, np.einsum("gmk,gnk->gmn", acts, weights)) and seconds > 0


def test_the_tvm_kernel_costs_more_with_more_bits() -> None:
    layers = extract_layers(create_model("mobilenet_v2_fmnist"), (1, 28, 28))
    for kind in ("pointwise", "depthwise"):  # the largest: thread start-up (~9 us) is small
        layer = max((s for s in layers if s.kind == kind), key=lambda s: s.macs)
        low = min(time_layer(layer, 1, 1, 1) for _ in range(3))  # the first call compiles
        high = min(time_layer(layer, 8, 8, 1) for _ in range(3))
        assert high > 4 * low, kind  # 64 plane pairs against 1


def test_measure_with_tvm_writes_a_table_the_search_accepts(tiny_ckpt: str, tmp_path: Path) -> None:
    out = tmp_path / "tvm.npz"
    argv = ["hardware", "measure", *TINY, "--runner", "tvm-bitserial", "--bits", "1,4,8"]
    code, _, err = run_cli([*argv, "--repeats", "3", "--out", str(out), "--no-progress"])
    assert code == 0, err
    table = CostTable.load(out)
    assert table.meta["runner"] == "tvm-bitserial" and table.meta["bits_measured"] == [1, 4, 8]
    # 64 times the work in all, but each of these tiny layers takes microseconds, which a
    # busy machine can blur layer by layer (seen in CI with other work running): the sum
    assert table.latency_s[:, 7, 7].sum() > table.latency_s[:, 0, 0].sum()
    cfg = tiny_cfg(tiny_ckpt, hardware=str(out), budgets={"latency": "0.9x"}, keep_8bit=["none"],
                   strategy="greedy", sensitivity_images=64)  # fmt: skip
    summary = search(cfg, tmp_path / "run", progress=False)
    assert summary["best"]["cost"]["latency"] <= summary["budgets"]["latency"]["limit"] * (1 + 1e-9)
