import gzip
import json
import struct

import numpy as np
import pytest
import torch

from haq.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from haq.data import TensorData, TensorLoader, inference_batch, load_dataset, search_split
from haq.errors import HaqError
from haq.models import create_model, load_model_spec
from haq.policy import Policy


def _write_idx(path, arr):
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + b"".join(
        struct.pack(">I", d) for d in arr.shape
    )
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def test_idx_reader_and_haq_data(tmp_path, monkeypatch):
    d = tmp_path / "mnist"
    d.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        _write_idx(d / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)))
    monkeypatch.setenv("HAQ_DATA", str(tmp_path))
    train = load_dataset("mnist")
    assert len(train) == 30 and train.input_shape == (1, 28, 28)
    assert train.labels.dtype == torch.int64 and len(load_dataset("mnist", train=False)) == 10


def test_missing_dataset_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HAQ_DATA", str(tmp_path))
    with pytest.raises(HaqError, match="put the four MNIST IDX"):
        load_dataset("mnist")
    with pytest.raises(HaqError, match="valid names"):
        load_dataset("cifar")


def test_search_split_disjoint_and_fixed():
    data = load_dataset("digits")
    ft, ho, check = search_split(data, 800, 400, seed=1, check_size=200)
    ft2, ho2, none = search_split(data, 800, 400, seed=1)
    assert len(ft) == 800 and len(ho) == 400 and check is not None and len(check) == 200
    assert none is None and torch.equal(ho.images, ho2.images)  # check carved after the others
    rows = [{tuple(r.tolist()) for r in d.images.flatten(1)} for d in (ft, ho)]
    assert sum(tuple(r.tolist()) in rows[0] | rows[1] for r in check.images.flatten(1)) <= 5
    assert torch.equal(ft.images, ft2.images)
    # disjoint: no held-out image appears among the finetune images
    ft_rows = {tuple(r.tolist()) for r in ft.images.flatten(1)}
    overlap = sum(tuple(r.tolist()) in ft_rows for r in ho.images.flatten(1))
    assert overlap <= 5  # digits contains a few duplicate images; indices are disjoint
    with pytest.raises(HaqError, match="exceed"):
        search_split(data, 1400, 400)


def test_loader_shuffle_reproducible():
    data = load_dataset("digits")
    a = [y.tolist() for _, y in TensorLoader(data, 100, shuffle=True, seed=5)]
    b = [y.tolist() for _, y in TensorLoader(data, 100, shuffle=True, seed=5)]
    assert a == b and len(a) == 15


def test_checkpoint_round_trip_and_errors(tmp_path):
    model = create_model("resnet_fmnist")
    meta = CheckpointMeta("resnet_fmnist", (1, 28, 28), "fashion-mnist", accuracy={"top1": 1.0})
    path = save_checkpoint(tmp_path / "r.pt", model, meta)
    back, m = load_checkpoint(path)
    assert m.accuracy["top1"] == 1.0 and m.input_shape == (1, 28, 28)
    for (k, v), v2 in zip(model.state_dict().items(), back.state_dict().values(), strict=True):
        assert torch.equal(v, v2), k
    with pytest.raises(
        HaqError, match="written for model 'resnet_fmnist', not for 'mobilenet_v2_fmnist'"
    ):
        load_checkpoint(path, "mobilenet_v2_fmnist")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(HaqError, match="unreadable"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(HaqError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")


def test_model_specs(tmp_path):
    f = tmp_path / "mymodel.py"
    f.write_text(
        "import torch.nn as nn\ndef build(**kw):\n    return nn.Sequential(nn.Conv2d(1, 2, 3))\n"
    )
    assert isinstance(load_model_spec(f"{f}:build"), torch.nn.Sequential)
    assert isinstance(load_model_spec("tests.conftest:TinyNet"), torch.nn.Module)
    with pytest.raises(HaqError, match="has no callable"):
        load_model_spec(f"{f}:nothing")
    with pytest.raises(HaqError, match="not found"):
        load_model_spec("nofile.py:build")


def test_policy_json_round_trip_and_errors(tmp_path):
    p = Policy.from_arrays(["a", "b"], [4, 8], [6, 2], info={"accuracy": {"top1": 90.0}})
    p.save(tmp_path / "p.json")
    back = Policy.load(tmp_path / "p.json")
    assert back.key() == ((4, 6), (8, 2)) and back.info["accuracy"]["top1"] == 90.0
    data = json.loads((tmp_path / "p.json").read_text())
    data["layers"][0].update(
        {"quantizer": "linear", "granularity": "per-channel", "w_clip": [0.5, 0.7]}
    )
    (tmp_path / "q.json").write_text(json.dumps(data))
    extra = Policy.load(tmp_path / "q.json")
    assert extra.layer_info["a"]["w_clip"] == [0.5, 0.7]
    assert extra.to_dict()["layers"][0]["granularity"] == "per-channel"
    data["version"] = 99
    (tmp_path / "v.json").write_text(json.dumps(data))
    with pytest.raises(HaqError, match="version 99 is not supported"):
        Policy.load(tmp_path / "v.json")
    data["version"] = 1
    data["layers"][1]["w_bits"] = 0
    (tmp_path / "b.json").write_text(json.dumps(data))
    with pytest.raises(HaqError, match=r"w_bits of layer 'b' must be an integer in 1\.\.8"):
        Policy.load(tmp_path / "b.json")
    (tmp_path / "m.json").write_text("{oops")
    with pytest.raises(HaqError, match="malformed JSON"):
        Policy.load(tmp_path / "m.json")
    with pytest.raises(HaqError, match="appears twice"):
        Policy.from_arrays(["a", "a"], [4, 4], [4, 4])
    with pytest.raises(HaqError, match="neither"):
        Policy.uniform("8bit", ["a"])


def test_inference_batches_grow_on_cuda_for_large_images_only():
    """Evaluation on CUDA takes batches of 256 ImageNet-size images (64 in host memory);
    small images keep the asked batch everywhere; calibration (no device) keeps 64."""

    def data(side: int) -> TensorData:
        return TensorData(torch.zeros(1, 3, side, side), torch.zeros(1, dtype=torch.long), 10)

    assert inference_batch(data(224), 512) == inference_batch(data(224), 512, "cpu") == 64
    assert (
        inference_batch(data(224), 512, "cuda") == inference_batch(data(224), 512, "cuda:1") == 256
    )
    assert inference_batch(data(224), 100, torch.device("cuda", 0)) == 100
    assert inference_batch(data(64), 512) == inference_batch(data(64), 512, "cuda") == 512
