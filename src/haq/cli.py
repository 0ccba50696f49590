"""The ``haq`` command: a thin layer that parses arguments, calls the library, prints.

Every user mistake surfaces as a :class:`~haq.errors.HaqError` and is printed as one line
(``haq: error: ...``) with exit status 2; there are no tracebacks for bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from haq.errors import HaqError
from haq.options import MAX_WORKERS, SEED_MAX, number
from haq.runlock import run_lock

DEFAULT_REFERENCE_MODEL = "mobilenet_v2_fmnist"
MODEL_HELP = f"model spec (default: the checkpoint's, else {DEFAULT_REFERENCE_MODEL})"


def model_spec(args: argparse.Namespace) -> str | None:
    """``--model`` as given; else the checkpoint's own (None); else the reference model."""
    return args.model or (None if args.checkpoint else DEFAULT_REFERENCE_MODEL)


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        dims = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError as err:
        raise HaqError(f"--input-shape {text!r} must look like 3,224,224") from err
    if len(dims) != 3 or min(dims) < 1:
        raise HaqError(f"--input-shape {text!r} must be three positive numbers C,H,W")
    return dims  # type: ignore[return-value]


def pick_device(requested: str | None) -> str:
    """The device of a command, decided once here: ``--device`` if given, else CUDA when
    available, else the CPU. Commands print it on stderr once their inputs are checked."""
    from haq.train import pick_device as pick

    try:
        device = str(pick(requested))
    except RuntimeError as err:
        raise HaqError(f"--device {requested!r}: {str(err).splitlines()[0]}") from err
    return device


def _emit(text: str, output: str | None) -> None:
    """A command's document: to ``--output FILE`` if given, else stdout."""
    if output is None:
        print(text, end="" if text.endswith("\n") else "\n")
        return
    from haq.fileio import atomic_write_text

    atomic_write_text(output, text if text.endswith("\n") else text + "\n")
    print(f"wrote {output}", file=sys.stderr)


# --- haq cost ----------------------------------------------------------------------------
def cmd_cost(args: argparse.Namespace) -> int:
    from haq.costing import model_cost_table, policy_report
    from haq.models import default_input_shape, load_model_spec
    from haq.policy import Policy
    from haq.weights import load_weights

    with contextlib.redirect_stdout(sys.stderr):  # what a model builder prints is not output
        model = load_model_spec(args.model)
        if args.weights:
            load_weights(model, args.weights)
    shape = parse_shape(args.input_shape) if args.input_shape else default_input_shape(args.model)
    table = model_cost_table(model, shape, args.hardware, args.batch, args.model)
    policy = Policy.parse(args.policy, table.layer_names)
    report = policy_report(table, policy)
    if args.table:
        table.save(args.table)
    if args.haq_npy:
        table.save_haq_npy(args.haq_npy)
    if args.format == "json":
        _emit(json.dumps(report, indent=2), args.output)
    elif args.format == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(report["layers"][0]))
        writer.writeheader()
        writer.writerows(report["layers"])
        _emit(buf.getvalue(), args.output)
    else:
        from haq.costing import format_cost_report

        _emit(format_cost_report(report), args.output)
    for path, what in ((args.table, "cost table"), (args.haq_npy, "HAQ lookup table")):
        if path:
            print(f"wrote {what} to {path}", file=sys.stderr)
    return 0


# --- haq hardware ------------------------------------------------------------------------
def cmd_hardware(args: argparse.Namespace) -> int:
    from haq.hardware import ARCHS, list_hardware, load_hardware

    if args.action == "list":
        presets = [load_hardware(name) for name in list_hardware()]
        rows = [[hw.name, hw.arch, f"batch {hw.batch}", hw.description] for hw in presets]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for r in rows:
            print("  ".join(c.ljust(n) for c, n in zip(r, widths, strict=False)) + "  " + r[3])
        return 0
    if not args.name:
        raise HaqError("haq hardware show needs a preset name or a .toml path")
    hw = load_hardware(args.name)
    specs = ARCHS[hw.arch].FIELDS
    print(f"{hw.name}: {hw.description}")
    print(f"arch {hw.arch}, batch {hw.batch}, energy model: {'yes' if hw.has_energy else 'no'}")
    for key, value in hw.params.items():
        shown = int(value) if value == int(value) else value
        print(f"  {key:24s} = {shown!s:10s} # {specs[key].description}")
    return 0


# --- haq pretrain --------------------------------------------------------------------------
def cmd_pretrain(args: argparse.Namespace) -> int:
    from haq.pretrain import pretrain

    device = pick_device(args.device)
    path, top1 = pretrain(
        args.model,
        args.dataset,
        args.out,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        device=device,
        augment=not args.no_augment,
    )
    print(f"test top-1 {top1:.2f}%  -> {path}  (trained on {device})")
    return 0


# --- haq eval ------------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:
    from haq.evaluation import eval_on_test

    device = pick_device(args.device)
    with contextlib.redirect_stdout(sys.stderr):  # model libraries may print while loading
        r = eval_on_test(
            model_spec(args),
            args.checkpoint,
            args.dataset,
            args.policy,
            weights=args.weights,
            mode=args.mode,
            hardware=args.hardware,
            crop_ratio=args.crop_ratio,
            finetune_steps=args.finetune_steps,
            lr=args.lr,
            seed=args.seed,
            per_channel=args.per_channel,
            weight_clip=args.weight_clip,
            device=device,
            workers=args.workers,
        )
    fp, q, policy = r.full_precision, r.quantized, r.policy
    print(
        f"model {r.model}  dataset {args.dataset} test set ({r.n_images} images)  device {device}"
    )
    print(f"full precision   top-1 {fp.top1:6.2f}%   top-5 {fp.top5:6.2f}%")
    print(
        f"{policy.describe() if len(set(policy.key())) == 1 else 'mixed policy':16s} "
        f"top-1 {q.accuracy.top1:6.2f}%   top-5 {q.accuracy.top5:6.2f}%   "
        f"({policy.mode}, {args.finetune_steps} finetune steps, {q.finetune_s + q.eval_s:.1f} s)"
    )
    if r.cost is not None:
        t = r.cost
        energy = (
            "-"
            if t["energy_mj"] is None
            else f"{t['energy_mj']:.4f} mJ ({t['energy_vs_w8a8']:.3f}x)"
        )
        print(
            f"cost on {r.hardware}: latency {t['latency_ms']:.4f} ms "
            f"({t['latency_vs_w8a8']:.3f}x of w8a8), energy {energy}, "
            f"weights {t['size_bytes'] / 1e3:.1f} kB ({t['size_vs_fp32']:.3f}x of fp32)"
        )
    return 0


# --- haq search -----------------------------------------------------------------------------
def cmd_search(args: argparse.Namespace) -> int:
    import re
    import time
    from pathlib import Path

    from haq.options import given_options
    from haq.search.config import SearchConfig
    from haq.search.runner import search
    from haq.search.text import format_summary

    overrides = given_options(args, SearchConfig)
    if args.resume:
        if args.out and args.out != args.resume:
            raise HaqError("--resume continues a run in its own directory; do not give --out")
        out = args.resume
        if "device" in overrides:
            print(f"device: {pick_device(overrides['device'])}", file=sys.stderr)
    else:
        cfg = SearchConfig().with_overrides(overrides)
        name = re.sub(r"[^\w.-]", "_", f"{cfg.model}-{Path(cfg.hardware).stem}")
        out = args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}-{name}"
        print(f"run directory: {out}  (device: {pick_device(cfg.device)})", file=sys.stderr)
        if cfg.strategy == "auto":
            picked = cfg.resolved().strategy
            print(
                f"strategy: {picked} (what --strategy auto picks for {', '.join(cfg.budgets)} "
                "budgets: the benchmark's winner; --strategy haq runs the paper's agent)",
                file=sys.stderr,
            )
    summary = search(
        None, out, resume=bool(args.resume), progress=not args.no_progress, **overrides
    )
    print(format_summary(summary))
    print(f"\nbest policy: {out}/best_policy.json   episodes: {out}/episodes.jsonl")
    if not args.no_report:
        try:
            from haq.report import make_report
        except ImportError:
            print("report skipped: matplotlib is not installed (pip install 'haq[report]')")
        else:
            try:
                print(f"report: {make_report([out], f'{out}/report')}")
            except HaqError as err:  # the search itself is done and saved
                print(f"report not written: {err}", file=sys.stderr)
    print(f"final finetune on the full training set: haq finetune --run {out}")
    return 0


# --- haq import ------------------------------------------------------------------------------
def cmd_import(args: argparse.Namespace) -> int:
    from haq.checkpoint import import_model

    try:
        kwargs = json.loads(args.model_kwargs) if args.model_kwargs else {}
    except json.JSONDecodeError as err:
        raise HaqError(
            f"--model-kwargs must be a JSON object, like '{{\"num_classes\": 10}}' ({err})"
        ) from err
    if not isinstance(kwargs, dict):
        raise HaqError("--model-kwargs must be a JSON object, like '{\"num_classes\": 10}'")
    prep: dict[str, Any] = {}
    for key in ("mean", "std"):
        if getattr(args, key):
            prep[key] = _floats(getattr(args, key), f"--{key}")
    if args.crop_ratio is not None:
        prep["crop_ratio"] = args.crop_ratio
    device = pick_device(args.device)
    with contextlib.redirect_stdout(sys.stderr):
        path, meta = import_model(
            args.model,
            args.weights,
            args.dataset,
            args.out,
            parse_shape(args.input_shape) if args.input_shape else None,
            kwargs,
            prep,
            device,
            args.workers,
        )
    print(
        f"{args.model} with {args.weights}: test top-1 {meta.accuracy['top1']:.2f}% "
        f"(top-5 {meta.accuracy['top5']:.2f}%) on {args.dataset}, input {meta.input_shape}, "
        f"measured on {device}"
    )
    print(f"wrote {path}; use it with --checkpoint {path}")
    return 0


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as err:
        raise HaqError(f"{flag} {text!r} must be numbers separated by commas") from err


# --- haq report / export --------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    try:
        from haq.report import make_report
    except ImportError as err:
        raise HaqError("haq report needs matplotlib: pip install 'haq[report]'") from err
    print(f"report: {make_report(args.runs, args.out)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from haq.export import export_model, load_for_export

    owned = run_lock(args.run, "haq export") if args.run else contextlib.nullcontext()
    with owned, contextlib.redirect_stdout(sys.stderr):
        q, policy, info, source = load_for_export(
            args.run, args.policy, args.checkpoint, args.model, args.dataset, args.weights
        )
    path = export_model(q, policy, info, args.format, args.out)
    print(f"exported {source} as {args.format} to {path}")
    return 0


# --- haq finetune ---------------------------------------------------------------------------
def cmd_finetune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from haq.finishing import job_from_policy, job_from_run

    if args.run:
        job = job_from_run(args.run, args.policy, args.out, args.crop_ratio)
    elif args.policy:
        job = job_from_policy(
            args.policy,
            model_spec(args),
            args.checkpoint,
            args.dataset,
            args.out,
            per_channel=args.per_channel,
            weight_clip=args.weight_clip,
            weights=args.weights,
            crop_ratio=args.crop_ratio,
        )
    else:
        raise HaqError("give --run DIR or --policy FILE")
    if job.note:
        print(job.note, file=sys.stderr)
    device = pick_device(args.device)
    owned = run_lock(args.run, "haq finetune") if args.run else contextlib.nullcontext()
    with owned:
        res = job.run(
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            seed=args.seed,
            device=device,
            workers=args.workers,
            progress=not args.no_progress,
        )
    print(
        f"on {device}: test top-1: full precision {res['fp_test_top1']:.2f}%, quantized before finetune "
        f"{res['quantized_test_top1_before_finetune']:.2f}%, after {args.epochs} epoch(s) "
        f"{res['quantized_test_top1']:.2f}%"
    )
    print(
        f"wrote {job.out} (quantized state dict + policy) and {Path(job.out).with_suffix('.json')}"
    )
    return 0


POS_INT, POS_FLOAT = number(int, low=1), number(float, above=0)
SEED, WORKERS = number(int, low=0, high=SEED_MAX), number(int, low=0, high=MAX_WORKERS)
RATIO = number(float, above=0, high=1)


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line (exit 2), like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


WEIGHTS_HELP = "state dict file of the model (.pt, .pth, .safetensors; see 'haq import')"


def _model_data_flags(p: argparse.ArgumentParser) -> None:
    """--weights, --workers and --crop-ratio, shared by eval and finetune."""
    p.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    p.add_argument(
        "--workers",
        type=WORKERS,
        default=None,
        help="loader processes for images on disk (default: cores - 1, at most 8)",
    )
    p.add_argument(
        "--crop-ratio",
        type=RATIO,
        default=None,
        help="images on disk: evaluation crop ratio (default: the checkpoint's)",
    )


def _add_cost(sub: Any) -> None:
    """`haq cost` and its flags."""
    c = sub.add_parser("cost", help="per-layer latency/energy/size/BOPs of a policy on a hardware")
    c.add_argument(
        "--model", default="mobilenet_v2", help="registry name, module:function or file.py:function"
    )
    c.add_argument("--hardware", default="bismo-edge", help="preset name or path to a .toml")
    c.add_argument("--batch", type=POS_INT, default=None, help="batch size (default: the preset's)")
    c.add_argument(
        "--input-shape", default=None, help="C,H,W (default: the model's, e.g. 3,224,224)"
    )
    c.add_argument("--policy", default="w8a8", help="wXaY for every layer, or a policy .json")
    c.add_argument(
        "--weights",
        default=None,
        help="state dict file of the model (.pt, .pth, .safetensors; see 'haq import')",
    )
    c.add_argument("--format", choices=("table", "json", "csv"), default="table")
    c.add_argument(
        "--output", default=None, metavar="FILE", help="write the report to FILE, not stdout"
    )
    c.add_argument(
        "--table", default=None, metavar="OUT.npz", help="also write the full [L,8,8] table"
    )
    c.add_argument(
        "--haq-npy",
        default=None,
        metavar="OUT.npy",
        help="also write the HAQ lookup format (cycles)",
    )
    c.set_defaults(func=cmd_cost)


def _add_hardware(sub: Any) -> None:
    """`haq hardware` and its flags."""
    h = sub.add_parser("hardware", help="list or show hardware presets")
    h.add_argument("action", choices=("list", "show"))
    h.add_argument("name", nargs="?", default=None)
    h.set_defaults(func=cmd_hardware)


def _add_pretrain(sub: Any) -> None:
    """`haq pretrain` and its flags."""
    t = sub.add_parser("pretrain", help="train a reference model from scratch")
    t.add_argument("--model", default=DEFAULT_REFERENCE_MODEL)
    t.add_argument("--dataset", default="fashion-mnist")
    t.add_argument("--out", required=True)
    t.add_argument("--epochs", type=POS_INT, default=10)
    t.add_argument("--lr", type=POS_FLOAT, default=0.1)
    t.add_argument("--batch-size", type=POS_INT, default=128)
    t.add_argument("--seed", type=SEED, default=0)
    t.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA if available)")
    t.add_argument("--no-augment", action="store_true", help="no random shifts/flips")
    t.set_defaults(func=cmd_pretrain)


def _add_eval(sub: Any) -> None:
    """`haq eval` and its flags."""
    e = sub.add_parser("eval", help="accuracy of a policy (quantize, optional finetune, test set)")
    e.add_argument("--model", default=None, help=MODEL_HELP)
    e.add_argument(
        "--checkpoint", default=None, help="default: the shipped weights of a reference model"
    )
    e.add_argument("--dataset", default="fashion-mnist", help="a built-in name or imagefolder:DIR")
    _model_data_flags(e)
    e.add_argument("--policy", default="w8a8", help="wXaY or a policy .json")
    e.add_argument(
        "--mode", choices=("linear", "kmeans"), default=None, help="default: the policy's"
    )
    e.add_argument("--finetune-steps", type=number(int, low=0), default=0)
    e.add_argument("--lr", type=POS_FLOAT, default=1e-3)
    e.add_argument("--per-channel", action="store_true", help="per-channel weight clips")
    e.add_argument("--weight-clip", choices=("kl", "mse", "max"), default="kl")
    e.add_argument("--hardware", default=None, help="also print the policy's cost on this hardware")
    e.add_argument("--seed", type=SEED, default=0)
    e.add_argument("--device", default=None)
    e.set_defaults(func=cmd_eval)


def _add_search(sub: Any) -> None:
    """`haq search` and its flags."""
    sp = sub.add_parser(
        "search",
        help="find a mixed-precision policy under budgets (HAQ agent, planners or baselines)",
        description="With no arguments: the reference MobileNet-V2-style Fashion-MNIST model on "
        "bismo-edge under half the w8a8 latency, with the recommended strategy (ILP), in "
        "about 3 minutes on 2 CPU cores. "
        "Options given with --resume must match the run's, except --episodes and --device.",
    )
    from haq.options import add_arguments
    from haq.search.config import SearchConfig

    add_arguments(sp, SearchConfig)
    sp.add_argument(
        "--out", default=None, help="run directory (default runs/<time>-<model>-<hardware>)"
    )
    sp.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue an interrupted run")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    sp.add_argument(
        "--no-report", action="store_true", help="do not write the HTML report at the end"
    )
    sp.set_defaults(func=cmd_search)


def _add_finetune(sub: Any) -> None:
    """`haq finetune` and its flags."""
    f = sub.add_parser("finetune", help="long final finetune of a policy; test-set accuracy")
    f.add_argument("--run", default=None, help="a search run directory (uses its best policy)")
    f.add_argument(
        "--policy", default=None, help="a policy .json (with --model/--checkpoint/--dataset)"
    )
    f.add_argument("--model", default=None, help=MODEL_HELP)
    f.add_argument("--checkpoint", default=None)
    f.add_argument("--dataset", default="fashion-mnist", help="a built-in name or imagefolder:DIR")
    _model_data_flags(f)
    f.add_argument("--epochs", type=POS_FLOAT, default=1.0)
    f.add_argument("--lr", type=POS_FLOAT, default=0.01, help="initial lr of the cosine schedule")
    f.add_argument("--batch-size", type=POS_INT, default=128)
    f.add_argument("--seed", type=SEED, default=0)
    f.add_argument("--device", default=None)
    f.add_argument(
        "--per-channel", action="store_true", help="with --policy: per-channel weight clips"
    )
    f.add_argument(
        "--weight-clip", choices=("kl", "mse", "max"), default="kl", help="with --policy"
    )
    f.add_argument("--out", default=None, help="output .pt (default RUN/final.pt)")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    f.set_defaults(func=cmd_finetune)


def _add_import(sub: Any) -> None:
    """`haq import` and its flags."""
    i = sub.add_parser(
        "import",
        help="make a haq checkpoint from a state dict file (torchvision, timm or your own training)",
        description="Loads --weights into --model strictly, measures the full-precision accuracy "
        "on the dataset's test split and writes a checkpoint that records the input shape, the "
        "normalisation and the classes; then use --checkpoint OUT everywhere. Nothing is downloaded.",
    )
    i.add_argument(
        "--model",
        required=True,
        help="registry name, module:function, file.py:function or a torchvision name",
    )
    i.add_argument(
        "--weights",
        required=True,
        help="state dict file: .pt, .pth, .safetensors, or a training checkpoint holding one",
    )
    i.add_argument(
        "--dataset",
        required=True,
        help="a built-in name or imagefolder:DIR (its test split is scored)",
    )
    i.add_argument("--out", required=True, help="the haq checkpoint to write (.pt)")
    i.add_argument(
        "--input-shape",
        default=None,
        help="C,H,W (default: the model's, 3,224,224 for ImageNet models)",
    )
    i.add_argument(
        "--model-kwargs",
        default=None,
        help="JSON options of the model factory, e.g. '{\"num_classes\": 10}'",
    )
    i.add_argument(
        "--mean",
        default=None,
        help="per-channel pixel mean in [0, 1] (default: ImageNet's 0.485,0.456,0.406)",
    )
    i.add_argument(
        "--std", default=None, help="per-channel pixel std (default: ImageNet's 0.229,0.224,0.225)"
    )
    i.add_argument(
        "--crop-ratio",
        type=RATIO,
        default=None,
        help="evaluation crop: resize the shorter side to H / ratio, crop the centre (default 0.875)",
    )
    i.add_argument(
        "--workers", type=WORKERS, default=None, help="loader processes for images on disk"
    )
    i.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA if available)")
    i.set_defaults(func=cmd_import)


def _add_report(sub: Any) -> None:
    """`haq report` and its flags."""
    r = sub.add_parser("report", help="HTML + PNG report of one or more search runs")
    r.add_argument("runs", nargs="+", help="run directories (several: side by side)")
    r.add_argument("--out", default="report", help="output directory (default ./report)")
    r.set_defaults(func=cmd_report)


def _add_export(sub: Any) -> None:
    """`haq export` and its flags."""
    x = sub.add_parser("export", help="export a quantized model: qonnx, onnx (QDQ) or torch")
    x.add_argument(
        "--run", default=None, help="a search run (its final.pt if finetuned, else its best policy)"
    )
    x.add_argument("--policy", default=None, help="a policy .json (with --checkpoint)")
    x.add_argument("--checkpoint", default=None, help="pretrained or 'haq finetune' checkpoint")
    x.add_argument("--model", default=None, help="model spec (default: the checkpoint's)")
    x.add_argument(
        "--weights",
        default=None,
        help="state dict file of the model (.pt, .pth, .safetensors; see 'haq import')",
    )
    x.add_argument(
        "--dataset", default="fashion-mnist", help="calibration data for a pretrained checkpoint"
    )
    x.add_argument("--format", choices=("qonnx", "onnx", "torch"), required=True)
    x.add_argument("--out", required=True)
    x.set_defaults(func=cmd_export)


def build_parser() -> argparse.ArgumentParser:
    from haq import __version__

    p = Parser(prog="haq", description="Hardware-aware mixed-precision quantization")
    p.add_argument("--version", action="version", version=f"haq {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (
        _add_cost,
        _add_hardware,
        _add_pretrain,
        _add_eval,
        _add_search,
        _add_finetune,
        _add_import,
        _add_report,
        _add_export,
    ):
        add(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version, or a bad command line (one line printed)
        return int(done.code or 0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return int(args.func(args))
    except HaqError as err:
        print(f"haq: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("haq: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`haq cost ... | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush cannot fail
        return 141  # what a shell reports for a process killed by SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
