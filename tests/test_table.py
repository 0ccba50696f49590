import numpy as np
import pytest

from haq.errors import HaqError
from haq.hardware import load_hardware
from haq.hardware.table import CostTable, cost_table
from haq.layers import extract_layers
from haq.models import create_model


@pytest.fixture(scope="module")
def table():
    layers = extract_layers(create_model("mobilenet_v2_fmnist"), (1, 28, 28))
    return cost_table(layers, load_hardware("bitfusion"), {"model": "mobilenet_v2_fmnist"})


def test_npz_round_trip(table, tmp_path):
    path = table.save(tmp_path / "t.npz")
    back = CostTable.load(path)
    assert back.layer_names == table.layer_names
    assert back.hardware == table.hardware.__class__(
        **{**table.hardware.__dict__, "source": back.hardware.source}
    )
    np.testing.assert_array_equal(back.latency_s, table.latency_s)
    np.testing.assert_array_equal(back.energy_j, table.energy_j)
    assert back.meta["model"] == "mobilenet_v2_fmnist"
    assert back.meta["units"]["latency_s"] == "s per batch"
    raw = np.load(path)
    assert raw["cycles"].shape == (len(table.layers), 8, 8)


def test_haq_npy_round_trip(table, tmp_path):
    path = table.save_haq_npy(tmp_path / "t.npy")
    arr = np.load(path)
    assert arr.dtype == np.int64 and arr.shape == (len(table.layers), 8, 8)
    back = table.with_haq_npy(path)
    np.testing.assert_allclose(back.cycles, np.rint(table.cycles))
    # ratios between policies survive the round trip
    r1 = table.uniform_cost(4).total("latency") / table.uniform_cost(8).total("latency")
    r2 = back.uniform_cost(4).total("latency") / back.uniform_cost(8).total("latency")
    assert r1 == pytest.approx(r2, rel=1e-3)


def test_haq_npy_wrong_shape(table, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 8, 8), dtype=np.int64))
    with pytest.raises(HaqError, match=r"shape \(3, 8, 8\)"):
        table.with_haq_npy(tmp_path / "x.npy")


def test_policy_cost_checks(table):
    n = len(table.layers)
    with pytest.raises(HaqError, match="needs"):
        table.policy_cost([8] * (n - 1), [8] * (n - 1))
    with pytest.raises(HaqError, match=r"1\.\.8"):
        table.policy_cost([9] * n, [8] * n)
