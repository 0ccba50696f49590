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
import select
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from haq.cli_options import (
    CostOptions,
    EvalOptions,
    ExportOptions,
    FinetuneOptions,
    ImportOptions,
    MeasureOptions,
    PretrainOptions,
)
from haq.errors import HaqError
from haq.hostmem import tune_host_allocator
from haq.options import add_arguments, options_from
from haq.runlock import run_lock
from haq.specs import DataSpec, FinetuneSpec, ModelSpec, QuantSpec

if TYPE_CHECKING:
    from haq.search.config import SearchConfig


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
def cmd_cost(args: CostOptions) -> int:
    from haq.costing import cost_target, model_cost_table, policy_report
    from haq.models import default_input_shape, load_model_spec
    from haq.policy import Policy
    from haq.weights import load_weights

    target = cost_target(args.policy, args.model, args.hardware, args.shape(), args.batch)
    if target.note:
        print(target.note, file=sys.stderr)
    with contextlib.redirect_stdout(sys.stderr):  # what a model builder prints is not output
        model = load_model_spec(target.model, **target.model_kwargs)
        if args.weights:
            load_weights(model, args.weights)
    shape = target.input_shape or default_input_shape(target.model)
    table = model_cost_table(model, shape, target.hardware, target.batch, target.model)
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


def cmd_measure(args: MeasureOptions) -> int:
    from haq.hardware.measure import measure_table
    from haq.layers import extract_layers
    from haq.models import default_input_shape, load_model_spec
    from haq.textfmt import progress_bar

    try:
        bits = [int(b) for b in args.bits.split(",") if b.strip()]
    except ValueError as err:
        raise HaqError(f"--bits {args.bits!r}: give widths like 1,2,4,8") from err
    with contextlib.redirect_stdout(sys.stderr):
        model = load_model_spec(args.model)
    layers = extract_layers(model, args.shape() or default_input_shape(args.model))
    bars: list[Any] = []  # made at the first layer: a refused input shows no empty bar

    def progress(done: int, total: int, seconds: float) -> None:
        if not bars:
            bars.append(
                progress_bar(total=total, desc="measure (layers)", disable=args.no_progress)
            )
        bars[0].update(done - bars[0].n)

    try:
        table = measure_table(
            layers,
            args.runner,
            args.out,
            bits,
            args.batch,
            args.repeats,
            args.warmup,
            progress,
            model=args.model,
        )
    finally:
        for bar in bars:
            bar.close()
    w8a8 = table.uniform_cost(8).total("latency")
    print(
        f"wrote {args.out}: {len(layers)} layers x 8 x 8 ({args.runner}, bits {table.meta['bits_measured']}"
        f"{' measured, the rest interpolated' if table.meta['interpolated'] else ''}); "
        f"w8a8 {w8a8 * 1e3:.3f} ms, w1a1 {table.uniform_cost(1).total('latency') * 1e3:.3f} ms per batch"
    )
    return 0


# --- haq pretrain --------------------------------------------------------------------------
def cmd_pretrain(args: PretrainOptions) -> int:
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
def cmd_eval(args: EvalOptions) -> int:
    from haq.evaluation import eval_on_test

    device = pick_device(args.device)
    with contextlib.redirect_stdout(sys.stderr):  # model libraries may print while loading
        r = eval_on_test(
            ModelSpec.of(args),
            DataSpec.of(args),
            QuantSpec.of(args),
            args.policy,
            mode=args.mode,
            hardware=args.hardware,
            finetune_steps=args.finetune_steps,
            lr=args.lr,
            seed=args.seed,
            device=device,
            progress=not args.no_progress,
        )
    print(r.format(args.dataset, device, args.finetune_steps))
    return 0


# --- haq search -----------------------------------------------------------------------------
def _announce_search(out: str, auto: bool, cfg: SearchConfig) -> None:
    """What a new search prints once its options, model, hardware and budgets passed their
    checks (before, an input refused in one line came after these lines)."""
    from tqdm import tqdm

    lines = [f"run directory: {out}  (device: {pick_device(cfg.device)})"]
    if auto:
        lines.append(
            f"strategy: {cfg.strategy} (what --strategy auto picks for "
            f"{', '.join(cfg.budgets)} budgets: the benchmark's winner; --strategy haq runs "
            "the paper's agent)"
        )
    warmup = cfg.ddpg.warmup_episodes
    if cfg.strategy.startswith("haq") and int(cfg.episodes or 0) <= warmup:
        lines.append(
            f"note: all {cfg.episodes} episodes are the agent's random warm-up (--warmup "
            f"{warmup}): it never acts on what it learns; give more --episodes or less --warmup"
        )
    if cfg.compile:
        lines.append(
            "--compile: the first evaluation compiles the quantized model (minutes); later "
            "policies reuse it"
        )
    for line in lines:
        tqdm.write(line, file=sys.stderr)


def cmd_search(args: argparse.Namespace) -> int:
    import re
    import time
    from functools import partial

    from haq.options import given_options
    from haq.search.config import SearchConfig
    from haq.search.runner import search
    from haq.search.text import format_summary

    overrides = given_options(args, SearchConfig)
    announce = None
    if args.resume:
        if args.out and args.out != args.resume:
            raise HaqError("--resume continues a run in its own directory; do not give --out")
        out = args.resume
        if "device" in overrides:
            print(f"device: {pick_device(overrides['device'])}", file=sys.stderr)
    else:
        asked = SearchConfig().with_overrides(overrides)
        model = asked.model or asked.default_model()
        name = re.sub(r"[^\w.-]", "_", f"{model}-{Path(asked.hardware).stem}")
        out = args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}-{name}"
        announce = partial(_announce_search, out, asked.strategy == "auto")
    try:
        summary = search(
            None,
            out,
            resume=bool(args.resume),
            progress=not args.no_progress,
            announce=announce,
            **overrides,
        )
    except KeyboardInterrupt:
        if not (Path(out) / "config.json").is_file():
            raise  # stopped in its setup: nothing was kept
        print(f"haq: interrupted; continue with: haq search --resume {out}", file=sys.stderr)
        return 130
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
def cmd_import(args: ImportOptions) -> int:
    from haq.checkpoint import import_model

    device = pick_device(args.device)
    with contextlib.redirect_stdout(sys.stderr):
        path, meta = import_model(
            args.model,
            args.weights,
            args.dataset,
            args.out,
            args.shape(),
            args.factory_kwargs(),
            args.preprocessing(),
            device,
            args.workers,
            progress=not args.no_progress,
        )
    print(
        f"{args.model} with {args.weights}: test top-1 {meta.accuracy['top1']:.2f}% "
        f"(top-5 {meta.accuracy['top5']:.2f}%) on {args.dataset}, input {meta.input_shape}, "
        f"measured on {device}"
    )
    print(f"wrote {path}; use it with --checkpoint {path}")
    return 0


# --- haq report / export --------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    try:
        from haq.report import make_report
    except ImportError as err:
        raise HaqError("haq report needs matplotlib: pip install 'haq[report]'") from err
    print(f"report: {make_report(args.runs, args.out)}")
    return 0


def cmd_export(args: ExportOptions) -> int:
    from haq.export import export_model, load_for_export
    from haq.fileio import check_output

    check_output(args.out)  # not after the calibration
    owned = run_lock(args.run, "haq export", shared=True) if args.run else contextlib.nullcontext()
    with owned, contextlib.redirect_stdout(sys.stderr):
        q, policy, info, source = load_for_export(
            args.run, args.policy, ModelSpec.of(args), DataSpec.of(args), QuantSpec.of(args)
        )
    path = export_model(q, policy, info, args.format, args.out)
    print(f"exported {source} as {args.format} to {path}")
    return 0


# --- haq finetune ---------------------------------------------------------------------------
def cmd_finetune(args: FinetuneOptions) -> int:
    from haq.finishing import job_from_policy, job_from_run

    if args.run:
        job = job_from_run(args.run, args.policy, args.out, args.crop_ratio, args.workers)
    elif args.policy:
        job = job_from_policy(
            args.policy, ModelSpec.of(args), DataSpec.of(args), QuantSpec.of(args), args.out
        )
    else:
        raise HaqError("give --run DIR, or --policy (wXaY or a policy .json)")
    if job.note:
        print(job.note, file=sys.stderr)
    device = pick_device(args.device)
    owned = run_lock(args.run, "haq finetune") if args.run else contextlib.nullcontext()
    try:
        with owned:
            res = job.run(FinetuneSpec.of(args), device, progress=not args.no_progress)
    except KeyboardInterrupt:
        if not Path(f"{job.out}.partial").is_file():
            raise
        print(
            f"haq: interrupted; the same command continues after the last finished epoch "
            f"({job.out}.partial)",
            file=sys.stderr,
        )
        return 130
    print(
        f"on {device}: test top-1: full precision {res['fp_test_top1']:.2f}%, quantized before finetune "
        f"{res['quantized_test_top1_before_finetune']:.2f}%, after {args.epochs} epoch(s) "
        f"{res['quantized_test_top1']:.2f}%"
    )
    print(
        f"wrote {job.out} (quantized state dict + policy) and {Path(job.out).with_suffix('.json')}"
    )
    return 0


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line (exit 2), like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def _add_hardware(sub: Any) -> None:
    """`haq hardware` and its flags."""
    h = sub.add_parser("hardware", help="list or show hardware presets; measure a cost table")
    actions = h.add_subparsers(dest="action", required=True, parser_class=Parser)
    actions.add_parser("list", help="the shipped presets").set_defaults(func=cmd_hardware)
    show = actions.add_parser("show", help="a preset's or a .toml file's fields")
    show.add_argument("name", nargs="?", default=None)
    show.set_defaults(func=cmd_hardware)
    measure = actions.add_parser("measure", help="time every layer on a kernel: a cost table")
    add_arguments(measure, MeasureOptions)
    measure.set_defaults(func=cmd_measure, options=MeasureOptions)


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


def _add_report(sub: Any) -> None:
    """`haq report` and its flags."""
    r = sub.add_parser("report", help="HTML + PNG report of one or more search runs")
    r.add_argument("runs", nargs="+", help="run directories (several: side by side)")
    r.add_argument("--out", default="report", help="output directory (default ./report)")
    r.set_defaults(func=cmd_report)


# name: (help, description, options, command) of the commands whose flags are a dataclass
COMMANDS: dict[str, tuple[str, str | None, type, Callable[[Any], int]]] = {
    "cost": (
        "per-layer latency/energy/size/BOPs of a policy on a hardware",
        None,
        CostOptions,
        cmd_cost,
    ),
    "pretrain": ("train a reference model from scratch", None, PretrainOptions, cmd_pretrain),
    "eval": (
        "accuracy of a policy (quantize, optional finetune, test set)",
        None,
        EvalOptions,
        cmd_eval,
    ),
    "finetune": (
        "long final finetune of a policy; test-set accuracy",
        None,
        FinetuneOptions,
        cmd_finetune,
    ),
    "import": (
        "make a haq checkpoint from a state dict file (torchvision, timm or your own training)",
        "Loads --weights into --model strictly, measures the full-precision accuracy on the "
        "dataset's test split and writes a checkpoint that records the input shape, the "
        "normalisation and the classes; then use --checkpoint OUT everywhere. Nothing is "
        "downloaded.",
        ImportOptions,
        cmd_import,
    ),
    "export": (
        "export a quantized model: qonnx, onnx (QDQ) or torch",
        None,
        ExportOptions,
        cmd_export,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    from haq import __version__

    p = Parser(prog="haq", description="Hardware-aware mixed-precision quantization")
    p.add_argument("--version", action="version", version=f"haq {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for name, (help_text, description, options, func) in COMMANDS.items():
        c = sub.add_parser(name, help=help_text, description=description or help_text)
        add_arguments(c, options)
        c.set_defaults(func=func, options=options)
    for add in (_add_hardware, _add_search, _add_report):
        add(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    tune_host_allocator()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version, or a bad command line (one line printed)
        return int(done.code or 0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
            # torch's own deprecations (torch.compile imports torch.jit) are not the user's
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch")
            options = getattr(args, "options", None)
            return int(args.func(options_from(args, options) if options else args))
    except HaqError as err:
        print(f"haq: error: {_one_line(str(err))}", file=sys.stderr)
        return 2
    except BrokenPipeError as err:
        return _broken_pipe(err)
    except OSError as err:  # a path the system refuses (name too long, ...): no traceback
        where = f": {err.filename}" if err.filename else ""
        print(f"haq: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("haq: interrupted", file=sys.stderr)
        return 130


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """haq's own warnings as one line, like its errors; others as Python prints them."""
    if Path(filename).resolve().is_relative_to(Path(__file__).resolve().parent):
        print(f"haq: warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _one_line(message: str) -> str:
    """An error raised in a loader worker arrives wrapped in the worker's traceback: keep
    the error's own line."""
    if "Original Traceback" in message:
        last = message.strip().splitlines()[-1]
        return last.partition(": ")[2] or last
    return message


def _broken_pipe(err: BrokenPipeError) -> int:
    """Exit code of a broken pipe: quiet 141 when it is stdout's reader that went away."""
    if not _stdout_gone():  # another pipe broke (a worker, a subprocess): a real error
        print(f"haq: error: broken pipe ({err})", file=sys.stderr)
        return 2
    # the reader went away (`haq cost ... | head`): stop quietly
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush cannot fail
    return 141  # what a shell reports for a process killed by SIGPIPE


def _stdout_gone() -> bool:
    """Whether stdout is a pipe whose reader has gone (poll reports an error on it)."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poll.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


if __name__ == "__main__":
    sys.exit(main())
