"""Fake quantization against fp32 on this machine's CPU (issue 32, the CPU figures).

For MobileNet-V2 in the ImageNet layout at 3x64x64 and the reference MobileNet-V2-style
model at 1x28x28, at batch 4 and 64: images/s of an fp32 training step and inference, and of
the same at w8a8 and w4a4, measured alternately in one process (bench_gpu.model_throughput),
so each ratio compares runs made under the same load. Setup seconds and the first against
the second episode come from ``bench_gpu.py --tiny`` (the same steps as on a GPU). Last, the
floor of eager fake quantization at the issue's CPU case (MobileNet-V2, 3x64x64, batch 4):
the training step with every quantizer replaced by an autograd Function that only copies its
input, the least a quantizer written as an autograd Function can cost.

With ``--compile`` it measures instead what torch.compile does here: ``steps``, the w8a8
training step of the reference model compiled (``haq finetune --compile``) against the eager
fp32 and w8a8 steps (alternating) and the seconds the first compiled step takes (the
compilation); ``searches``, ``haq search`` with and without ``--compile`` (one after the
other, alone): three ``--protocol paper`` episodes of random policies, and the main job.

    python benchmarks/bench_cpu.py [--repeats 15] [--json benchmarks/results/cpu.json]
    python benchmarks/bench_cpu.py --untuned-allocator   # without haq.hostmem's malloc tuning
    python benchmarks/bench_cpu.py --compile [--parts steps searches] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench_gpu import _train_step, alternate, model_throughput, run_haq
from haq.hostmem import tune_host_allocator
from haq.models import create_model
from haq.policy import Policy
from haq.quant import linear
from haq.quant.api import quantize
from haq.quant.calibrate import Calibration
from haq.train import Compiled

CASES: tuple[tuple[str, tuple[int, int, int], dict[str, Any]], ...] = (
    ("mobilenet_v2", (3, 64, 64), {"num_classes": 10}),
    ("mobilenet_v2_fmnist", (1, 28, 28), {}),
)


# haq search runs of --compile: three paper-protocol episodes of random policies (313
# finetune steps of 64 and 10,000 held-out images each), and the main job
SEARCHES: tuple[tuple[str, list[str]], ...] = (
    ("paper_3_episodes", ["--protocol", "paper", "--strategy", "random", "--episodes", "3",
                          "--check-size", "0"]),
    ("main_job", []),
)  # fmt: skip


# the training steps of --compile: the reference model at batch 4 and 64, and the issue's
# CPU target case (MobileNet-V2 at 3x64x64, batch 4)
STEP_CASES: tuple[tuple[str, tuple[int, int, int], dict[str, Any], int], ...] = (
    ("mobilenet_v2_fmnist", (1, 28, 28), {}, 4),
    ("mobilenet_v2_fmnist", (1, 28, 28), {}, 64),
    ("mobilenet_v2", (3, 64, 64), {"num_classes": 10}, 4),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=15, help="timed rounds per figure")
    ap.add_argument("--json", default=None, help="default: benchmarks/results/cpu[_compile].json")
    ap.add_argument("--compile", action="store_true", help="the torch.compile figures")
    ap.add_argument(
        "--parts", nargs="+", default=["steps", "searches"], choices=["steps", "searches"]
    )
    ap.add_argument("--root", default="runs/cpu-compile", help="where the searches' runs go")
    ap.add_argument(
        "--untuned-allocator",
        action="store_true",
        help="glibc's malloc as a Python API user has it (the haq command tunes it)",
    )
    args = ap.parse_args()
    suffix = "_compile" if args.compile else "_untuned" if args.untuned_allocator else ""
    args.json = args.json or f"benchmarks/results/cpu{suffix}.json"
    if not args.untuned_allocator:
        tune_host_allocator()
    results: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "allocator_tuned": not args.untuned_allocator,
    }
    dev = torch.device("cpu")
    if args.compile:
        path = Path(args.json)
        if path.exists():  # a run of one part keeps the other's figures
            results = {**json.loads(path.read_text()), **results}
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")  # cold
        for name, shape, kw, batch in STEP_CASES if "steps" in args.parts else ():
            key = f"{name}_{shape[1]}x{shape[2]}_b{batch}"
            results[key] = compiled_step(name, shape, kw, batch, args.repeats)
            print(key, results[key], flush=True)
            path.write_text(json.dumps(results, indent=1) + "\n")
        for name, argv in SEARCHES if "searches" in args.parts else ():
            # compiled twice on one fresh inductor cache: cold, then as a second run finds it
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
            for suffix, flag in (("", []), ("_compiled_cold", ["--compile"]), ("_compiled_warm", ["--compile"])):  # fmt: skip
                key = f"search_{name}{suffix}"
                results[key] = run_haq(Path(args.root) / key, *argv, *flag)
                print(key, results[key], flush=True)
                path.write_text(json.dumps(results, indent=1) + "\n")
        return
    for name, shape, kw in CASES:
        torch.manual_seed(0)
        model = create_model(name, **kw)
        for batch in (4, 64):
            r = model_throughput(model, shape, batch, dev, ("w8a8", "w4a4"), args.repeats)
            key = f"{name}_{shape[1]}x{shape[2]}_b{batch}"
            results[key] = r
            print(
                f"{key}: train fp32 {r['fp32_train_img_s']:.0f} img/s, w8a8 "
                f"{1 / r['w8a8_train_vs_fp32']:.2f}x slower, w4a4 {1 / r['w4a4_train_vs_fp32']:.2f}x; "
                f"inference w8a8 {1 / r['w8a8_infer_vs_fp32']:.2f}x, w4a4 "
                f"{1 / r['w4a4_infer_vs_fp32']:.2f}x",
                flush=True,
            )
            Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    results["mobilenet_v2_64x64_b4_floor"] = r = eager_floor(args.repeats)
    print(f"eager floor, MobileNet-V2 3x64x64 b4: {r}", flush=True)
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


class _Copy(torch.autograd.Function):
    """A quantizer's inputs and outputs (input, clip, grid size), no work: the output is a
    copy, the gradient passes through, the clip gets a zero gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, clip: torch.Tensor, _levels: Any) -> torch.Tensor:  # type: ignore[override]
        ctx.clip_shape = clip.shape
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:  # type: ignore[override]
        return grad, grad.new_zeros(ctx.clip_shape), None


def eager_floor(repeats: int) -> dict[str, float]:
    """Seconds per training step of MobileNet-V2 (3x64x64, batch 4): fp32, w8a8, and w8a8
    with the quantizer Functions replaced by :class:`_Copy` (alternating)."""
    torch.manual_seed(0)
    model = create_model("mobilenet_v2", num_classes=10)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 3, 64, 64, generator=gen), torch.randint(0, 10, (4,), generator=gen)
    calib = Calibration(model, [(x, y)], batches=1)
    q = quantize(model, Policy.uniform("w8a8", calib.layer_names), calibration=calib)
    steps = [_train_step(model, x, y), _train_step(q, x, y)]

    def copying() -> None:
        names = ("_PACT", "_SignedPACT", "_SymmetricWeight")
        saved = {n: getattr(linear, n) for n in names}
        try:
            for n in names:
                setattr(linear, n, _Copy)
            steps[1]()
        finally:
            for n, fn in saved.items():
                setattr(linear, n, fn)

    fp, w8a8, floor = alternate([steps[0], steps[1], copying], repeats, torch.device("cpu"))
    return {
        "fp32_step_s": fp,
        "w8a8_step_s": w8a8,
        "copying_quantizers_step_s": floor,
        "w8a8_vs_fp32": w8a8 / fp,
        "copying_quantizers_vs_fp32": floor / fp,
    }


def compiled_step(
    name: str, shape: tuple[int, int, int], kw: dict[str, Any], batch: int, repeats: int
) -> dict[str, float]:
    """Seconds per training step: fp32 eager, w8a8 eager, w8a8 under torch.compile as haq
    compiles (:class:`haq.train.Compiled`; its compilation timed on its own), alternating."""
    torch.manual_seed(0)
    model = create_model(name, **kw)
    gen = torch.Generator().manual_seed(0)
    x, y = (
        torch.randn(batch, *shape, generator=gen),
        torch.randint(0, 10, (batch,), generator=gen),
    )
    calib = Calibration(model, [(x, y)], batches=1)
    q = quantize(model, Policy.uniform("w8a8", calib.layer_names), calibration=calib)
    qc = quantize(model, Policy.uniform("w8a8", calib.layer_names), calibration=calib)
    compiled = _train_step(Compiled(qc), x, y)
    t = time.perf_counter()
    compiled()
    compile_s = time.perf_counter() - t
    fp, eager, comp = alternate([_train_step(model, x, y), _train_step(q, x, y), compiled], repeats, torch.device("cpu"))  # fmt: skip
    return {
        "compile_s": compile_s,
        "fp32_eager_step_s": fp,
        "w8a8_eager_step_s": eager,
        "w8a8_compiled_step_s": comp,
        "w8a8_eager_vs_fp32": eager / fp,
        "w8a8_compiled_vs_fp32": comp / fp,
        "steps_to_repay_compile": compile_s / max(eager - comp, 1e-9),
    }


if __name__ == "__main__":
    main()
