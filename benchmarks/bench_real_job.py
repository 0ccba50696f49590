"""The real job on a CPU (issue 10): MobileNet-V2 (ImageNet layout, 3x224x224) searched on an
ImageFolder of JPEG files on disk.

How the folders are made: Fashion-MNIST training images, enlarged to 256x256 and converted to
RGB, saved as JPEG (quality 90) under ``DIR/train/<class>/``; 500 test images the same way
under ``DIR/val/<class>/``. Real files, real decoding and resizing in the loader workers;
only the content is small. The model's weights are a seeded random initialisation imported
with ``haq import`` (this machine has no ImageNet MobileNet-V2 weights): the accuracies mean
nothing here, the times and memory do.

Measured:
- loader images/s (training crop and evaluation crop, ``--workers`` processes) against the
  w8a8-quantized model's images/s (training step and inference), batch 64;
- seconds per episode of ``--protocol fast`` (``--episodes-fast`` episodes, the default
  subsets) and, with ``--paper``, of one ``--protocol paper`` episode;
- peak RSS of the search process for the same small search on a 5k- and a 20k-image folder:
  the dataset size should not matter (target: at most +20 %). The loader workers are
  children of a fork server (``haq.data.make_loader``), outside this figure; each holds the
  file list and its prefetched batches.

    python benchmarks/bench_real_job.py [--root runs/realjob] [--paper | --only-paper]

Each search runs as ``haq search`` in a subprocess; results go to --json after every step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from haq.checkpoint import import_model, load_checkpoint, preprocess_for
from haq.data import TensorData, load_dataset, make_loader
from haq.models import create_model
from haq.policy import Policy
from haq.quant.api import quantize
from haq.quant.calibrate import Calibration

VAL_IMAGES = 500
MEASURE = """
import json, resource, sys, time
from haq.cli import main
t = time.perf_counter()
code = main(sys.argv[1:])
print(json.dumps({"code": code, "wall_s": time.perf_counter() - t,
    "rss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_folder(root: Path, n: int) -> Path:
    """``n`` training and VAL_IMAGES test images as 256x256 RGB JPEG files (module doc)."""
    if (root / "done").is_file():
        return root
    train = load_dataset("fashion-mnist", train=True)
    test = load_dataset("fashion-mnist", train=False)
    for split, data, count in (("train", train, n), ("val", test, VAL_IMAGES)):
        assert isinstance(data, TensorData)
        pixels = ((data.images[:count, 0] * 0.3530 + 0.2860) * 255).round().clamp(0, 255)
        for i, (img, y) in enumerate(
            zip(pixels.to(torch.uint8).numpy(), data.labels[:count].tolist(), strict=True)
        ):
            d = root / split / f"class_{y}"
            d.mkdir(parents=True, exist_ok=True)
            big = Image.fromarray(img, mode="L").convert("RGB").resize((256, 256))
            big.save(d / f"{i:06d}.jpg", quality=90)
    (root / "done").write_text(f"{n}\n")
    return root


def checkpoint(root: Path, folder: Path) -> Path:
    ckpt = root / "mobilenet_v2_random.pt"
    if not ckpt.is_file():
        with torch.random.fork_rng():
            torch.manual_seed(0)
            weights = root / "mobilenet_v2_random_state.pt"
            torch.save(create_model("mobilenet_v2").state_dict(), weights)
        import_model("mobilenet_v2", weights, f"imagefolder:{folder}", ckpt)
    return ckpt


def throughput(ckpt: Path, folder: Path, workers: int, batches: int = 6) -> dict[str, float]:
    """Images/s of the loader (no model) and of the w8a8 model (no loader), batch 64."""
    model, meta = load_checkpoint(ckpt)
    train = load_dataset(f"imagefolder:{folder}", True, preprocess_for(meta))
    out: dict[str, float] = {}
    for name, view in (("loader_train_crop", train.view(True)), ("loader_eval_crop", train)):
        loader = iter(make_loader(view, 64, shuffle=True, workers=workers))
        next(loader)  # workers started and warm
        t = time.perf_counter()
        for _ in range(batches):
            next(loader)
        out[name] = 64 * batches / (time.perf_counter() - t)
    calib = Calibration(model, make_loader(train, 64, workers=workers), batches=1)
    q = quantize(model, Policy.uniform("w8a8", calib.layer_names), calibration=calib)
    x, y = torch.randn(64, 3, 224, 224), torch.randint(0, 10, (64,))
    with torch.no_grad():
        q.eval()(x)
        t = time.perf_counter()
        q(x)
        out["model_inference"] = 64 / (time.perf_counter() - t)
    q.train()
    for step in range(3):  # the first step allocates; time the next two
        if step == 1:
            t = time.perf_counter()
        torch.nn.functional.cross_entropy(q(x), y).backward()
    out["model_train_step"] = 2 * 64 / (time.perf_counter() - t)
    return out


def run_search(name: str, ckpt: Path, folder: Path, args: argparse.Namespace, *flags: str) -> dict:
    out = Path(args.root) / "runs" / name
    cmd = [sys.executable, "-c", MEASURE, "search", "--checkpoint", str(ckpt), "--model"]
    cmd += ["mobilenet_v2", "--dataset", f"imagefolder:{folder}", "--strategy", "random"]
    cmd += ["--out", str(out), "--no-progress", "--no-report", "--workers", str(args.workers)]
    cmd += [*flags]
    if out.exists():
        subprocess.run(["rm", "-rf", str(out)], check=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not done.stdout.strip():
        raise SystemExit(f"{name} failed:\n{done.stderr[-2000:]}")
    res = json.loads(done.stdout.strip().splitlines()[-1])
    eps = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    res["episode_s"] = [e["seconds"] for e in eps]
    res["episode_eval_s"] = [e["eval_seconds"] for e in eps]
    print(f"{name}: {json.dumps(res)}", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="runs/realjob")
    ap.add_argument("--workers", type=int, default=1, help="loader processes (1 on 2 cores)")
    ap.add_argument("--episodes-fast", type=int, default=2)
    ap.add_argument("--paper", action="store_true", help="also one --protocol paper episode")
    ap.add_argument(
        "--only-paper", action="store_true", help="just the paper episode; keep other figures"
    )
    ap.add_argument("--json", default="benchmarks/results/real_job.json")
    args = ap.parse_args()
    root = Path(args.root)
    path = Path(args.json)
    results: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    results["machine"] = f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    results["date"] = time.strftime("%Y-%m-%d")

    def save() -> None:
        path.write_text(json.dumps(results, indent=1) + "\n")

    small, large = make_folder(root / "f5k", 5000), make_folder(root / "f20k", 20000)
    ckpt = checkpoint(root, small)
    if not args.only_paper:
        measure_small_runs(results, ckpt, small, large, args, save)
    if args.paper or args.only_paper:
        big = make_folder(root / "f32k", 32000)
        results["paper"] = run_search(
            "paper", ckpt, big, args, "--protocol", "paper", "--episodes", "1", "--check-size", "0"
        )
        save()


def measure_small_runs(
    results: dict[str, Any],
    ckpt: Path,
    small: Path,
    large: Path,
    args: argparse.Namespace,
    save: Any,
) -> None:
    """Throughput, peak RSS on 5k vs 20k images, and --protocol fast episodes."""
    results["throughput"] = throughput(ckpt, large, args.workers)
    print(f"throughput: {results['throughput']}", flush=True)
    save()
    memory = ["--finetune-size", "3000", "--heldout-size", "1000", "--check-size", "0"]
    memory += ["--episodes", "1", "--finetune-steps", "4"]
    for name, folder in (("rss_5k", small), ("rss_20k", large)):
        results[name] = run_search(name, ckpt, folder, args, *memory)
        save()
    fast = ["--protocol", "fast", "--episodes", str(args.episodes_fast)]
    results["fast"] = run_search("fast", ckpt, large, args, *fast)
    save()


if __name__ == "__main__":
    main()
