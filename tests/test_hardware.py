"""Cost models: hand-computed figures, monotonicity and the roofline facts the paper uses."""

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from haq.errors import HaqError
from haq.hardware import load_hardware
from haq.hardware.bitfusion import precision_factor
from haq.hardware.table import cost_table
from haq.layers import extract_layers
from haq.models import create_model
from tests.conftest import conv_spec, linear_spec


def test_bismo_edge_pointwise_by_hand():
    # 1x1 conv, 64 -> 128 channels on 14x14, batch 1, on 8 x 256 x 8 at 200 MHz.
    # GEMM M=196 (pad 200, 25 tiles), K=64 (pad 256, 1 slice), N=128 (16 tiles).
    t = cost_table([conv_spec(64, 128, 1, 14)], load_hardware("bismo-edge"))
    # w8a8: 25*16*64 = 25,600 instructions x 1 slice (no per-instruction overhead)
    assert t.compute_cycles[0, 7, 7] == pytest.approx(25600)
    # DRAM: LHS 200*256 B + RHS 256*128 B + results requantized to 8 bits 196*128 B = 109,056 B
    assert t.dram_bytes[0, 7, 7] == pytest.approx(109056)
    # at 2.1 GB/s * 0.75 / 200 MHz = 7.875 B/cycle -> 13,848.4 memory cycles: compute bound
    assert not t.memory_bound[0, 7, 7]
    # + fill/drain (4096 B of first tiles + 64 B of the last 8x8 results)/7.875 + 500 setup cycles
    assert t.cycles[0, 7, 7] == pytest.approx(25600 + 4160 / 7.875 + 500)
    assert t.latency_s[0, 7, 7] == pytest.approx((25600 + 4160 / 7.875 + 500) / 200e6)
    # w2a4: 3,200 instructions -> 3,200 cycles; DRAM 25,600 + 8,192 + 12,544 (4-bit results)
    # = 46,336 B -> 5,884 memory cycles: memory bound
    assert t.compute_cycles[0, 1, 3] == pytest.approx(3200)
    assert t.dram_bytes[0, 1, 3] == pytest.approx(46336)
    assert t.memory_bound[0, 1, 3]
    # fill/drain: 1,536 B of first tiles + 32 B of the last results at 4 bits
    assert t.cycles[0, 1, 3] == pytest.approx(46336 / 7.875 + 1568 / 7.875 + 500)
    assert t.energy_j is None


def test_bismo_cloud_fc_by_hand():
    # FC 1280 -> 1000 at batch 16 on 16 x 256 x 16: M=16 (1 tile), K=1280 (5 slices), N=1000
    # (63 tiles): w8a8 = 63*64 instructions x 5 slices (no per-instruction overhead) = 20,160.
    t = cost_table([linear_spec(1280, 1000)], load_hardware("bismo-cloud"))
    assert t.compute_cycles[0, 7, 7] == pytest.approx(63 * 64 * 5)
    # RHS 1280 x 1008 at 8 bits, fetched for each of the 16 images, + LHS 16 x 1280 at 8 bits
    # + results 16 x 1000 requantized to 8 bits
    assert t.dram_bytes[0, 7, 7] == pytest.approx(16 * 1280 * 1008 + 16 * 1280 + 16 * 1000)
    # with weight_fetch_images = 0 (once per batch, the default of a file that omits it)
    hw = load_hardware("bismo-cloud")
    once = replace(hw, params={**hw.params, "weight_fetch_images": 0})
    t = cost_table([linear_spec(1280, 1000)], once)
    assert t.dram_bytes[0, 7, 7] == pytest.approx(1280 * 1008 + 16 * 1280 + 16 * 1000)


def test_bitfusion_conv_by_hand():
    # 3x3 conv 32 -> 64 on 16x16, batch 1, 16 x 32 fusion units, 500 MHz
    t = cost_table([conv_spec(32, 64, 3, 16)], load_hardware("bitfusion"))
    # w8a8, pf=1: 2 OC tiles x 256 positions x 9 x ceil(32/16)=2 -> 9,216 cycles
    assert t.compute_cycles[0, 7, 7] == pytest.approx(9216)
    # w4a4, pf=4: im2col form 256 x 2 x ceil(288/64)=5 -> 2,560 cycles (beats direct 4,608)
    assert t.compute_cycles[0, 3, 3] == pytest.approx(2560)
    # DRAM bits: weights 288*64*8 + inputs 16*16*32*8 + outputs 256*64*8 = 344,064
    assert t.dram_bytes[0, 7, 7] * 8 == pytest.approx(344064)
    # cycles = 9,216 + initial load (147,456 + 65,536)/192 + final store 65,536/192
    assert t.cycles[0, 7, 7] == pytest.approx(9216 + 212992 / 192 + 65536 / 192)
    macs = 256 * 64 * 288
    energy_pj = (
        9216 * 235
        + macs * 8 * 0.021
        + 147456 * 0.029
        + macs * 8 / 32 * 0.059
        + 65536 * 0.114
        + 256 * 64 * 32 * (0.033 + 0.073)
        + 344064 * 15
    )
    assert t.energy_j[0, 7, 7] == pytest.approx(energy_pj * 1e-12)


def test_bitfusion_precision_factor():
    pf = precision_factor(np.array([8, 4, 2, 8, 3, 1, 5]), np.array([8, 4, 2, 2, 3, 1, 7]))
    assert pf.tolist() == [1, 4, 16, 4, 4, 16, 1]


@pytest.mark.parametrize("hw", ["bismo-edge", "bismo-cloud", "bitfusion"])
@pytest.mark.parametrize("model", ["mobilenet_v2", "resnet18"])
def test_cost_never_increases_when_bits_decrease(hw, model):
    t = cost_table(extract_layers(create_model(model), (3, 224, 224)), load_hardware(hw))
    arrays = [t.cycles, t.latency_s] + ([t.energy_j] if t.energy_j is not None else [])
    for arr in arrays:
        assert (np.diff(arr, axis=1) >= -1e-12).all(), "lower weight bits raised a cost"
        assert (np.diff(arr, axis=2) >= -1e-12).all(), "lower activation bits raised a cost"


def test_bismo_compute_scales_as_w_times_a():
    t = cost_table([conv_spec(96, 256, 1, 28)], load_hardware("bismo-edge"))
    c = t.compute_cycles[0]
    for w in range(1, 9):
        for a in range(1, 9):
            assert c[w - 1, a - 1] == pytest.approx(c[0, 0] * w * a)


def test_edge_vs_cloud_bounds_of_mobilenet_v2():
    layers = extract_layers(create_model("mobilenet_v2"), (3, 224, 224))
    edge = cost_table(layers, load_hardware("bismo-edge")).uniform_cost(8)
    cloud = cost_table(layers, load_hardware("bismo-cloud")).uniform_cost(8)
    dw = [i for i, s in enumerate(layers) if s.kind == "depthwise"]
    assert edge.memory_bound[dw].all()
    assert edge.memory_bound[-1]  # the FC layer at batch 1
    # calibrated to the HAQ table, where depthwise layers cost in proportion to activation bits
    # and the FC layer to weight bits: memory bound on cloud too; the pointwise layers are not
    assert cloud.memory_bound[dw].all() and cloud.memory_bound[-1]
    pw = [i for i, s in enumerate(layers) if s.kind == "pointwise"]
    assert cloud.memory_bound[pw].sum() <= 2


def test_size_and_bops_exact():
    layers = extract_layers(create_model("resnet18"), (3, 224, 224))
    t = cost_table(layers, load_hardware("bitfusion"))
    w = np.array([(i % 8) + 1 for i in range(len(layers))])
    a = np.array([8 - (i % 8) for i in range(len(layers))])
    cost = t.policy_cost(w, a)
    assert cost.total("size") == sum(s.n_weights * wb / 8 for s, wb in zip(layers, w, strict=True))
    assert cost.total("bops") == sum(
        s.macs * wb * ab for s, wb, ab in zip(layers, w, a, strict=True)
    )
    assert t.uniform_cost(8).total("size") == pytest.approx(t.fp32_size_bytes() / 4)


def test_bitfusion_dram_dominates_energy_of_a_big_conv():
    # the ISCA'18 paper reports DRAM at 70-99% of the energy for most layers
    hw = load_hardware("bitfusion")
    t = cost_table([conv_spec(256, 256, 3, 14)], hw)
    dram_j = t.dram_bytes[0, 7, 7] * 8 * 15e-12
    assert 0.5 < dram_j / t.energy_j[0, 7, 7] < 0.99


def test_batch_override_scales_work():
    spec = [conv_spec(64, 64, 3, 28)]
    one = cost_table(spec, load_hardware("bismo-cloud", batch=1))
    many = cost_table(spec, load_hardware("bismo-cloud", batch=32))
    assert many.compute_cycles[0, 7, 7] > 20 * one.compute_cycles[0, 7, 7]


def test_custom_toml_and_errors(tmp_path):
    good = tmp_path / "mine.toml"
    text = (
        'arch = "bismo"\nbatch = 2\ndm = 4\ndk = 64\ndn = 4\nclock_mhz = 100\n'
        "dram_bandwidth_gbs = 1\ndram_efficiency = 1\nlhs_buffer_kib = 64\nrhs_buffer_kib = 64\n"
        "instr_overhead_cycles = 0\nlayer_setup_cycles = 0\noutput_bits = 32\n"
    )
    good.write_text(text)
    hw = load_hardware(str(good))
    assert hw.name == "mine" and hw.batch == 2 and hw.params["dk"] == 64
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("dm = 4", "dm = -4"))
    with pytest.raises(HaqError, match=r"bad.toml: field 'dm' must be > 0"):
        load_hardware(str(bad))
    for value in ("nan", "inf"):  # TOML floats: accepted before, costs came out NaN
        bad.write_text(text.replace("dram_bandwidth_gbs = 1", f"dram_bandwidth_gbs = {value}"))
        with pytest.raises(HaqError, match=r"field 'dram_bandwidth_gbs' must be a finite number"):
            load_hardware(str(bad))
    bad.write_text(text.replace("dk = 64\n", ""))
    with pytest.raises(HaqError, match=r"bad.toml: missing field 'dk'"):
        load_hardware(str(bad))
    # a misspelt field is unknown and its right name missing: the unknown one is named
    bad.write_text(text.replace("dram_bandwidth_gbs", "dram_bandwith_gbs"))
    with pytest.raises(HaqError, match=r"'dram_bandwith_gbs' .* mean 'dram_bandwidth_gbs'\?\)$"):
        load_hardware(str(bad))
    bad.write_text(text + "colour = 3\n")
    with pytest.raises(HaqError, match=r"unknown field\(s\) 'colour' for arch 'bismo'$"):
        load_hardware(str(bad))
    bad.write_text(text.replace('arch = "bismo"', "arch = [1, 2]"))  # found by test_fuzz
    with pytest.raises(HaqError, match=r"bad.toml: field 'arch' is \[1, 2\]; valid: bismo"):
        load_hardware(str(bad))
    bad.write_text("arch = [")
    with pytest.raises(HaqError, match=r"bad.toml: malformed TOML"):
        load_hardware(str(bad))
    with pytest.raises(HaqError, match="valid presets: bismo-cloud, bismo-edge, bitfusion"):
        load_hardware("tpu")


def test_hardware_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from haq.hardware import load_hardware\n"
        "from haq.hardware.table import cost_table\n"
        "from haq.layers import LayerSpec\n"
        "s = LayerSpec(0, 'c', 'conv', 3, 8, (3, 3), (1, 1), (1, 1), 1, (8, 8), (8, 8), 216, 0, 13824)\n"
        "print(cost_table([s], load_hardware('bitfusion')).cycles.shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(1, 8, 8)"
