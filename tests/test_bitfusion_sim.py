"""``bitfusion-45nm``: the public BitFusion simulator's accounting (issue 13, item 1).

Two checks. Hand-worked figures for an FC layer, derived in the docstrings from the
simulator's rules. And a literal, loop-by-loop re-statement of the simulator's procedure
(every tile, all 120 loop orders, its promotion walk and inner-loop choice), written here
independently of the vectorised model, for a first layer with im2col, a 3x3 convolution at
batch 2 and an FC layer, at two bit pairs: both must pick the same cycles, traffic and energy.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from haq.cli import main
from haq.hardware import load_hardware
from haq.hardware.bitfusion_sim import Conv, simulate
from haq.hardware.table import CostTable, cost_table
from tests.conftest import conv_spec, linear_spec

HW = load_hardware("bitfusion-45nm")
PARAMS = tuple(sorted(HW.params.items()))


def pair(w: int, a: int) -> int:
    return (w - 1) * 8 + (a - 1)


def test_fc_layer_dram_traffic_by_hand() -> None:
    """FC 1024 -> 1000, batch 1. At w8a8 the best tile keeps the 1024 inputs on chip
    (8,192 bits), streams every weight once (1024 x 1000 x 8 = 8,192,000 bits) and moves the
    outputs at 32 bits, padded to 1024 columns, in and out (2 x 32,768): 8,265,728 bits. At
    w4a4: 4,096,000 + 4,096 + 65,536 = 4,165,632. The layer is memory bound, so its cycles
    are the DRAM cycles (bits / 192) up to the rounding of three transfers."""
    sim = simulate(Conv(1, 1, 1, 1, 1, 1, 1024, 1000, 1, False), PARAMS)
    for (w, a), bits in (((8, 8), 8_265_728), ((4, 4), 4_165_632)):
        i = pair(w, a)
        assert sim["dram_bits"][i] == bits
        assert 0 <= sim["cycles"][i] - bits / 192 <= 3
        assert sim["dram_energy_j"][i] == pytest.approx(bits * 15e-12)


# --- the simulator's procedure, literally ------------------------------------------------
DEPS = {
    "B/b": {"act": True, "wgt": False, "out": True},
    "OW/ow": {"act": True, "wgt": False, "out": True},
    "OH/oh": {"act": True, "wgt": False, "out": True},
    "IC/ic": {"act": True, "wgt": True, "out": False},
    "OC/oc": {"act": False, "wgt": True, "out": True},
}


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def literal_stats(K, side, S, IC, OC, B, a, w, im2col, tiling, order, p):
    """One tiling and order, step by step as the simulator's optimizer walks them."""
    N, M, width = int(p["rows"]), int(p["cols"]), p["dram_bits_per_cycle"]
    sram = {"wgt": p["weight_buffer_kib"] * 1024, "act": p["input_buffer_kib"] * 1024}
    sram["out"] = p["output_buffer_kib"] * 1024
    pf = (8 // max(a, 2)) * (8 // max(w, 2))
    (nb, b), (now, ow), (noh, oh), (nic, ic), (noc, oc) = (
        tiling[k] for k in ("B/b", "OW/ow", "OH/oh", "IC/ic", "OC/oc")
    )
    writes = {"wgt": cdiv(K * K * ic, N * pf) * N * pf * oc * w}
    if im2col:
        writes["act"] = ow * oh * K * K * ic * b * a
    else:
        writes["act"] = (K + (ow - 1) * S) * (K + (oh - 1) * S) * ic * b * a
    writes["out"] = ow * oh * cdiv(oc, M) * M * b * 32
    reads = {"out": writes["out"]}
    if any(writes[n] > sram[n] * 8 / 2 for n in writes):
        return None
    max_w, max_r = dict(writes), dict(reads)
    wp, rp = {"wgt": True, "act": True, "out": True}, {"out": True}
    for loop in reversed(order):
        n = tiling[loop][0]
        for ns in writes:
            if wp[ns]:
                if DEPS[loop][ns]:
                    writes[ns] *= n
                    if writes[ns] > sram[ns] * 8 / 2:
                        wp[ns] = False
                    else:
                        max_w[ns] = writes[ns]
            else:
                writes[ns] *= n
        if rp["out"]:
            if DEPS[loop]["out"]:
                reads["out"] *= n
                if reads["out"] > sram["out"] * 8 / 2:
                    rp["out"] = False
                else:
                    max_r["out"] = writes["out"]
        else:
            reads["out"] *= n
    st_r = {"act": 0, "wgt": 0, "out": reads["out"]}
    st_w = dict(writes)
    dram = sum(writes.values()) + reads["out"]
    is_loop = cdiv(oc, M) * M
    np_ = N * pf
    os_loop = cdiv(ic * K * K, np_) * np_ if im2col else cdiv(ic, np_) * np_ * K * K
    ws_loop = b * oh * ow
    is_e = os_loop * ws_loop * (a + is_loop * (w + 32))
    os_e = is_loop * ws_loop * (32 + os_loop * (a + w))
    ws_e = os_loop * is_loop * (w + ws_loop * (a + 32))
    T = nb * now * noh * nic * noc
    X = K * K * ic * oh * ow * b
    if is_e == min(is_e, os_e, ws_e):
        st_r["act"] += T * X * a
        st_r["out"] += T * X * oc * 32
        st_w["out"] += T * X * oc * 32
        st_r["wgt"] += T * X * oc * w
    elif os_e == min(is_e, os_e, ws_e):
        st_r["act"] += T * oc * oh * ow * b * K * K * ic * a
        st_r["out"] += T * oc * oh * ow * b * 32
        st_w["out"] += T * oc * oh * ow * b * 32
        st_r["wgt"] += T * oc * oh * ow * b * K * K * ic * w
    else:
        st_r["act"] += T * K * K * ic * oc * b * ow * oh * a
        st_r["out"] += T * K * K * ic * oc * b * ow * oh * 32
        st_w["out"] += T * K * K * ic * oc * b * ow * oh * 32
        st_r["wgt"] += T * K * K * ic * oc * w
    first = sum(max_w.values())
    last = max_r["out"]
    latency = cdiv(first, width) + cdiv(last, width)
    if im2col:
        per = b * oh * ow * cdiv(oc, M) * cdiv(K * K * ic, np_)
    else:
        per = b * cdiv(oc, M) * ow * oh * K * K * cdiv(ic, np_)
    compute = T * per
    stalls = max(0, cdiv(dram - first - last, width) - compute) + latency
    pj = compute * p["core_pj_per_cycle"] + dram * p["dram_pj_per_bit"]
    pj += st_r["wgt"] * p["wbuf_read_pj_per_bit"] + st_w["wgt"] * p["wbuf_write_pj_per_bit"]
    pj += st_r["act"] * p["ibuf_read_pj_per_bit"] + st_w["act"] * p["ibuf_write_pj_per_bit"]
    pj += st_r["out"] * p["obuf_read_pj_per_bit"] + st_w["out"] * p["obuf_write_pj_per_bit"]
    return compute + stalls, pj * 1e-12, dram


def literal_search(K, side, S, IC, OC, B, a, w, im2col, p):
    """Every tile and every one of the 120 orders; fewest cycles, then least energy."""
    M = int(p["cols"])
    best = None
    for order in itertools.permutations(["B/b", "OW/ow", "OH/oh", "IC/ic", "OC/oc"]):
        for _b in range(math.ceil(math.log2(B)) + 1):
            for _o in range(math.ceil(math.log2(side)) + 1):
                for _ic in range(math.ceil(math.log2(IC)) + 1):
                    n_oc = math.ceil(math.log2(OC if im2col else math.ceil(OC / M))) + 1
                    for _oc in range(n_oc):
                        b, o, ic = min(1 << _b, B), min(1 << _o, side), min(1 << _ic, IC)
                        oc = min(1 << _oc, OC) if im2col else min((1 << _oc) * M, OC)
                        tiling = {
                            "B/b": (cdiv(B, b), b),
                            "OW/ow": (cdiv(side, o), o),
                            "OH/oh": (cdiv(side, o), o),
                            "IC/ic": (cdiv(IC, ic), ic),
                            "OC/oc": (cdiv(OC, oc), oc),
                        }
                        r = literal_stats(K, side, S, IC, OC, B, a, w, im2col, tiling, order, p)
                        if r and (best is None or r[:2] < best[:2]):
                            best = r
    return best


LAYERS = {  # K, side, S, IC, OC, B, im2col
    "first layer, im2col": (3, 16, 2, 3, 16, 1, True),
    "3x3 conv, batch 2": (3, 8, 1, 16, 48, 2, False),
    "fc": (1, 1, 1, 256, 100, 1, False),
}


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize(("w", "a"), [(8, 8), (2, 4)])
def test_vectorised_model_matches_the_literal_procedure(name: str, w: int, a: int) -> None:
    K, side, S, IC, OC, B, im2col = LAYERS[name]
    cycles, energy, dram = literal_search(K, side, S, IC, OC, B, a, w, im2col, HW.params)
    sim = simulate(Conv(K, K, side, side, S, S, IC, OC, B, im2col), PARAMS)
    i = pair(w, a)
    assert sim["cycles"][i] == cycles
    assert sim["energy_j"][i] == pytest.approx(energy, rel=1e-12)
    assert sim["dram_bits"][i] == dram


def test_table_carries_the_split_and_the_cli_writes_it(tmp_path) -> None:
    layers = [conv_spec(3, 16, 3, 32, 2, name="c0"), conv_spec(16, 32, 3, 16, name="c1")]
    layers += [linear_spec(512, 10)]
    table = cost_table(layers, HW)
    d = table.detail
    total = d["core_energy_j"] + d["sram_energy_j"] + d["dram_energy_j"]
    assert table.energy_j is not None and np.allclose(total, table.energy_j, rtol=1e-12)
    assert np.array_equal(d["dram_bits"] / 8, table.dram_bytes)
    assert (d["stall_cycles"] <= table.cycles).all() and (
        table.cycles >= table.compute_cycles
    ).all()
    path = table.save(tmp_path / "t.npz")
    again = CostTable.load(path)
    assert set(again.detail) == set(d) and np.array_equal(
        again.detail["stall_cycles"], d["stall_cycles"]
    )
    out = tmp_path / "cli.npz"
    argv = ["cost", "--model", "resnet18", "--hardware", "bitfusion-45nm", "--table", str(out)]
    assert main([*argv, "--format", "json", "--output", str(tmp_path / "r.json")]) == 0
    saved = np.load(out)
    for key in ("cycles", "latency_s", "energy_j", "detail_dram_energy_j", "detail_stall_cycles"):
        assert key in saved.files


def test_matches_the_public_simulators_own_output() -> None:
    """88 results of the simulator's optimizer itself (tests/data, with provenance): ResNet-18/50,
    MobileNet-V2 and FC layers at batch 1 and 16, four bit pairs. Cycles, stall cycles and DRAM
    bits are identical; energy agrees to rounding."""
    doc = json.loads(
        (Path(__file__).parent / "data" / "bitfusion_simulator_reference.json").read_text()
    )
    assert len(doc["rows"]) == 88
    for r in doc["rows"]:
        k, side, s, ic, oc, b, im2col = r["layer"]
        sim = simulate(Conv(k, k, side, side, s, s, ic, oc, b, im2col), PARAMS)
        i = pair(r["w"], r["a"])
        assert (sim["cycles"][i], sim["stall_cycles"][i], sim["dram_bits"][i]) == (
            r["cycles"],
            r["stall_cycles"],
            r["dram_bits"],
        ), r
        assert sim["energy_j"][i] * 1e9 == pytest.approx(r["energy_nj"], rel=1e-9)
