import json

import pytest

from haq.cli import main
from haq.policy import Policy


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cost_json_keys(capsys):
    code, out, _ = run(
        capsys,
        "cost",
        "--model",
        "mobilenet_v2_fmnist",
        "--hardware",
        "bitfusion",
        "--policy",
        "w4a6",
        "--format",
        "json",
    )
    assert code == 0
    data = json.loads(out)
    keys = {
        "name",
        "kind",
        "w_bits",
        "a_bits",
        "macs",
        "params",
        "cycles",
        "latency_ms",
        "energy_mj",
        "size_bytes",
        "bops",
        "bound",
    }
    assert set(data["layers"][0]) == keys
    assert all(r["w_bits"] == 4 and r["a_bits"] == 6 for r in data["layers"])
    assert data["total"]["latency_ms"] == pytest.approx(
        sum(r["latency_ms"] for r in data["layers"])
    )
    assert 0 < data["total"]["energy_vs_w8a8"] < 1


def test_cost_json_energy_null_on_bismo(capsys):
    code, out, _ = run(capsys, "cost", "--model", "mobilenet_v2_fmnist", "--format", "json")
    data = json.loads(out)
    assert (
        code == 0 and data["layers"][0]["energy_mj"] is None and data["total"]["energy_mj"] is None
    )


def test_cost_table_text_and_files(capsys, tmp_path):
    code, out, err = run(
        capsys,
        "cost",
        "--model",
        "resnet_fmnist",
        "--hardware",
        "bismo-cloud",
        "--table",
        str(tmp_path / "t.npz"),
        "--haq-npy",
        str(tmp_path / "t.npy"),
    )
    assert code == 0
    assert "total latency" in out and "(1.000x of w8a8)" in out
    assert (tmp_path / "t.npz").is_file() and (tmp_path / "t.npy").is_file()
    assert "wrote cost table" in err


def test_cost_csv(capsys):
    code, out, _ = run(capsys, "cost", "--model", "mobilenet_v2_fmnist", "--format", "csv")
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].startswith("name,kind,w_bits") and len(lines) == 54


def test_cost_policy_file(capsys, tmp_path):
    code, out, _ = run(capsys, "cost", "--model", "mobilenet_v2_fmnist", "--format", "json")
    names = [r["name"] for r in json.loads(out)["layers"]]
    pol = Policy.from_arrays(names, [2] * len(names), [3] * len(names))
    pol.save(tmp_path / "p.json")
    code, out, _ = run(
        capsys,
        "cost",
        "--model",
        "mobilenet_v2_fmnist",
        "--format",
        "json",
        "--policy",
        str(tmp_path / "p.json"),
    )
    assert code == 0 and json.loads(out)["layers"][5]["a_bits"] == 3
    bad = Policy.from_arrays(names[:-1], [2] * (len(names) - 1), [3] * (len(names) - 1))
    bad.save(tmp_path / "bad.json")
    code, _, err = run(
        capsys, "cost", "--model", "mobilenet_v2_fmnist", "--policy", str(tmp_path / "bad.json")
    )
    assert code == 2 and "no bits for layer 'classifier.1'" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "nope"], "valid names: mobilenet_v1"),
        (["--hardware", "tpu"], "valid presets: bismo-cloud, bismo-edge, bitfusion"),
        (["--policy", "w0a8"], "integer in 1..8"),
        (["--policy", "w8a9"], "integer in 1..8"),
        (["--input-shape", "1,224,224"], "rejected input shape"),
        (["--input-shape", "abc"], "must look like"),
        (["--hardware", "missing.toml"], "not found"),
    ],
)
def test_cost_bad_input_one_line(capsys, argv, message):
    code, _out, err = run(capsys, "cost", *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_hardware_list_and_show(capsys):
    code, out, _ = run(capsys, "hardware", "list")
    assert code == 0 and {"bismo-edge", "bismo-cloud", "bitfusion"} <= {
        ln.split()[0] for ln in out.splitlines()
    }
    code, out, _ = run(capsys, "hardware", "show", "bitfusion")
    assert code == 0 and "dram_pj_per_bit" in out and "energy model: yes" in out


def test_closed_pipe_is_quiet():
    """`haq cost ... | head -1`: the reader goes away mid-output; no traceback, SIGPIPE's status."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "haq.cli", "cost", "--model", "resnet50"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before a single line is read: the first write fails
    err = proc.stderr.read().decode()
    assert proc.wait() == 141
    assert "Traceback" not in err, err
