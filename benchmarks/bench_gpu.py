"""The policy-evaluation loop on a GPU, in one go (issue 32): loader, model, episodes, searches.

Steps, each writing its figures to ``--json`` (default benchmarks/results/gpu.json) as soon
as it ends, so a run cut short keeps what it measured; a step that fails leaves its error
there and the next one runs (the command then exits non-zero, naming the failed steps):

1. ``folder``: a JPEG folder made in parallel from Fashion-MNIST (enlarged to 256x256 RGB,
   ``--images`` training images, 1,000 validation images);
2. ``import``: a seeded MobileNet-V2 (ImageNet layout, 3x224x224) imported with ``haq import``
   (its accuracies mean nothing; the times do);
3. ``loader``: images/s of the training and evaluation crops with ``--workers`` processes,
   and the seconds each loader's start blocks the caller;
4. ``model``: images/s of fp32 and w8a8 training steps and inference at batch 64 and 256,
   measured alternately in one process (so the ratios are fair on a busy machine);
5. ``paper_episodes``: ``haq search --protocol paper --episodes 2``: seconds of the first and
   the second episode and of the setup before the first;
6. ``ilp_search``: the default ``haq search`` (ILP) of that model on the folder at 224 on
   ``bismo-cloud``, end to end;
7. ``main_job``: the embedded main job, ``haq search`` with no arguments;
8. ``paper_episodes_compiled``: step 5 with ``--compile`` (the first episode compiles, the
   second shows the compiled speed); on by default, off with ``--tiny`` (``--compile`` forces
   it: compiling takes minutes on a CPU).

Every search runs as ``haq`` in a subprocess on ``--device`` (default: CUDA when there is
one). ``--tiny`` runs the same steps at 64x64 on a few hundred images, with small searches,
in under 3 minutes on a 2-core CPU (tests/test_bench_gpu.py runs it).

    python benchmarks/bench_gpu.py [--tiny] [--device cuda] [--workers 15] [--json PATH]

Fashion-MNIST must be installed (Debian's dataset-fashion-mnist, or $HAQ_DATA).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from haq.checkpoint import import_model, load_checkpoint, preprocess_for
from haq.data import TensorData, load_dataset, make_loader
from haq.hostmem import tune_host_allocator
from haq.models import create_model
from haq.policy import Policy
from haq.quant.api import quantize
from haq.quant.calibrate import Calibration
from haq.train import pick_device

FULL = {"images": 32000, "val": 1000, "side": 256, "shape": (3, 224, 224), "batches": (64, 256)}
TINY = {"images": 480, "val": 120, "side": 72, "shape": (3, 64, 64), "batches": (4, 16)}


# --- 1-2: the folder and the model ------------------------------------------------------------
def _write_chunk(job: tuple[str, np.ndarray, list[int], int, int]) -> None:
    root, pixels, labels, start, side = job
    for i, (img, y) in enumerate(zip(pixels, labels, strict=True)):
        d = Path(root) / f"class_{y}"
        d.mkdir(parents=True, exist_ok=True)
        big = Image.fromarray(img, mode="L").convert("RGB").resize((side, side))
        big.save(d / f"{start + i:06d}.jpg", quality=90)


def make_folder(root: Path, n_train: int, n_val: int, side: int, workers: int) -> Path:
    """Fashion-MNIST as ``root/{train,val}/class_<y>/*.jpg`` (side x side RGB), written by
    ``workers`` processes; kept when already complete."""
    if (root / "done").is_file() and (root / "done").read_text().split() == [str(n_train)]:
        return root
    jobs = []
    for split, train, count in (("train", True, n_train), ("val", False, n_val)):
        data = load_dataset("fashion-mnist", train=train)
        assert isinstance(data, TensorData)
        pixels = ((data.images[:count, 0] * 0.3530 + 0.2860) * 255).round().clamp(0, 255)
        pixels_np, labels = pixels.to(torch.uint8).numpy(), data.labels[:count].tolist()
        step = max(1, -(-count // (4 * workers)))
        for s in range(0, count, step):
            jobs.append((str(root / split), pixels_np[s : s + step], labels[s : s + step], s, side))
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_chunk, jobs))
    (root / "done").write_text(f"{n_train}\n")
    return root


def import_seeded(root: Path, folder: Path, shape: tuple[int, int, int], device: str) -> Path:
    """A seeded random MobileNet-V2 imported as a haq checkpoint for the folder's classes."""
    ckpt = root / f"mobilenet_v2_{shape[1]}.pt"
    if not ckpt.is_file():
        weights = root / "mobilenet_v2_seed0.pt"
        with torch.random.fork_rng():
            torch.manual_seed(0)
            torch.save(create_model("mobilenet_v2").state_dict(), weights)
        import_model("mobilenet_v2", weights, f"imagefolder:{folder}", ckpt, shape, device=device)
    return ckpt


# --- 3-4: loader and model throughput ---------------------------------------------------------
def loader_throughput(ckpt: Path, folder: Path, workers: int, batch: int, n: int) -> dict:
    """Images/s of the training and the evaluation crop (no model), warm workers, and the
    seconds that starting each loader's ``workers`` processes blocks this process (the
    first loader also starts the fork server)."""
    _, meta = load_checkpoint(ckpt)
    train = load_dataset(f"imagefolder:{folder}", True, preprocess_for(meta))
    out = {}
    for name, view in (("train_crop", train.view(True)), ("eval_crop", train)):
        t = time.perf_counter()
        it = iter(make_loader(view, batch, shuffle=True, workers=workers))
        out[f"{name}_start_s"] = time.perf_counter() - t
        next(it)
        t = time.perf_counter()
        for _ in range(n):
            next(it)
        out[f"{name}_img_s"] = batch * n / (time.perf_counter() - t)
    return out


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def alternate(fns: list[Callable[[], None]], repeats: int, dev: torch.device) -> list[float]:
    """Median seconds of each function, run in turns (two warm-up rounds first)."""
    for f in fns:
        f()
        f()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, f in enumerate(fns):
            _sync(dev)
            t = time.perf_counter()
            f()
            _sync(dev)
            times[i].append(time.perf_counter() - t)
    return [float(np.median(t)) for t in times]


def _train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9, foreach=True)
    model.train()

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _inference(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    model.eval()

    def run() -> None:
        with torch.no_grad():
            model(x)

    return run


def model_throughput(
    model: torch.nn.Module,
    shape: tuple[int, int, int],
    batch: int,
    dev: torch.device,
    specs: tuple[str, ...] = ("w8a8",),
    repeats: int = 10,
) -> dict[str, float]:
    """Images/s of fp32 and each quantized spec, training step and inference, at ``batch``
    (channels_last on CUDA, as haq runs), and each spec's ratio to fp32."""
    fmt = torch.channels_last if dev.type == "cuda" else torch.contiguous_format
    model = model.to(dev, memory_format=fmt)  # type: ignore[call-overload]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *shape, generator=gen).to(dev, memory_format=fmt)
    y = torch.randint(0, 10, (batch,), generator=gen).to(dev)
    calib = Calibration(model, [(x, y)], batches=1)
    qs = [quantize(model, Policy.uniform(s, calib.layer_names), calibration=calib) for s in specs]
    out: dict[str, float] = {}
    for kind, make in (("train", _train_step), ("infer", _inference)):
        args = (x, y) if kind == "train" else (x,)
        secs = alternate([make(m, *args) for m in (model, *qs)], repeats, dev)  # type: ignore[operator]
        out[f"fp32_{kind}_img_s"] = batch / secs[0]
        for spec, s in zip(specs, secs[1:], strict=True):
            out[f"{spec}_{kind}_img_s"] = batch / s
            out[f"{spec}_{kind}_vs_fp32"] = secs[0] / s
    return out


# --- 5-7: searches as the user runs them ------------------------------------------------------
def run_haq(out: Path, *args: str) -> dict[str, Any]:
    """``haq search ARGS --out OUT`` in a subprocess: wall seconds, per-episode seconds, the
    setup before the first episode, and the search-cost figures of its summary."""
    if out.exists():
        subprocess.run(["rm", "-rf", str(out)], check=True)
    cmd = [sys.executable, "-m", "haq.cli", "search", *args, "--out", str(out), "--no-progress"]
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    eps = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    return {
        "wall_s": wall,
        "episode_s": [e["seconds"] for e in eps],
        "episode_top1": [e["accuracy"] for e in eps],
        "timing_s": summary["timing_s"],
        "policy_evaluations": summary["search_cost"]["policy_evaluations"],
        "best_heldout_top1": summary["best"]["accuracy"],
    }


class Steps:
    """Runs the benchmark's steps, writing ``results`` to ``path`` after each one. A step that
    fails is recorded (its error in the results) and the next one runs, so one run on a
    borrowed GPU measures what it can; a ``needed`` step's failure ends the run."""

    def __init__(self, path: Path, results: dict[str, Any]) -> None:
        self.path, self.results = path, results
        self.failed: list[str] = []

    def __call__(self, name: str, fn: Callable[[], Any], needed: bool = False) -> Any:
        t = time.perf_counter()
        try:
            value = fn()
        except Exception as err:
            if needed:
                raise
            self.failed.append(name)
            value = {"error": f"{type(err).__name__}: {err}"[-3000:]}
        self.results[name] = value if isinstance(value, dict) else {"value": str(value)}
        self.results[name]["step_s"] = round(time.perf_counter() - t, 2)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.results, indent=1) + "\n")
        print(f"{name}: {json.dumps(self.results[name])}", flush=True)
        return value


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="the same steps, small (CPU, tests)")
    ap.add_argument("--root", default=None, help="where folders and runs go (runs/gpu[-tiny])")
    ap.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: auto)")
    ap.add_argument("--workers", type=int, default=None, help="loader and writer processes")
    ap.add_argument("--images", type=int, default=None, help="training images in the folder")
    ap.add_argument(
        "--json", default=None, help="results file (default benchmarks/results/gpu.json)"
    )
    ap.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="step 8, the paper episodes under --compile (default: on; off with --tiny)",
    )
    args = ap.parse_args(argv)
    tune_host_allocator()
    size: dict[str, Any] = dict(TINY if args.tiny else FULL)
    if args.images:
        size["images"] = args.images
    dev = pick_device(args.device)
    workers = args.workers or max(1, min(15, (os.cpu_count() or 2) - 1))
    root = Path(args.root or ("runs/gpu-tiny" if args.tiny else "runs/gpu"))
    root.mkdir(parents=True, exist_ok=True)
    path = Path(args.json or ("benchmarks/results/gpu.json"))
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "tiny": args.tiny,
        "workers": workers,
    }

    step = Steps(path, results)
    shape = size["shape"]
    folder = root / f"folder{size['images']}"
    step(
        "folder",
        needed=True,
        fn=lambda: {
            "images": size["images"],
            "path": str(make_folder(folder, size["images"], size["val"], size["side"], workers)),
        },
    )
    ckpt = import_seeded(root, folder / "train", shape, str(dev))
    results["import"] = {"checkpoint": str(ckpt)}
    step(
        "loader", lambda: loader_throughput(ckpt, folder / "train", workers, size["batches"][0], 6)
    )
    model, _ = load_checkpoint(ckpt)
    for b in size["batches"]:
        step(f"model_b{b}", partial(model_throughput, model, shape, b, dev))
    data = ["--checkpoint", str(ckpt), "--model", "mobilenet_v2"]
    data += ["--dataset", f"imagefolder:{folder / 'train'}", "--workers", str(workers)]
    device = ["--device", str(dev)]
    small = ["--finetune-size", "200", "--heldout-size", "100", "--sensitivity-images", "16"]
    paper = ["--protocol", "paper", "--strategy", "random", "--episodes", "2", "--check-size", "0"]
    step(
        "paper_episodes",
        lambda: run_haq(root / "paper", *data, *device, *paper, *(small if args.tiny else [])),
    )
    ilp = ["--hardware", "bismo-cloud"] + (
        [*small, "--check-size", "100", "--lr", "0.001", "--finetune-steps", "4"]
        if args.tiny
        else []
    )
    step("ilp_search", lambda: run_haq(root / "ilp", *data, *device, *ilp))
    main_job = ["--sensitivity-images", "32", "--heldout-size", "400", "--check-size", "400"]
    step("main_job", lambda: run_haq(root / "main", *device, *(main_job if args.tiny else [])))
    if args.compile if args.compile is not None else not args.tiny:
        compiled = [*data, *device, *paper, "--compile", *(small if args.tiny else [])]
        step("paper_episodes_compiled", lambda: run_haq(root / "paper-compiled", *compiled))
    if step.failed:
        raise SystemExit(f"failed steps: {', '.join(step.failed)} (their errors are in {path})")


if __name__ == "__main__":
    main()
