"""What a run builds once (:class:`SearchContext`) and the per-episode evaluation, built the
same way by the search and by every evaluation worker (local processes or Ray actors)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from haq.checkpoint import (
    CheckpointMeta,
    check_outputs,
    model_data,
    resolve_model,
)
from haq.data import Data, search_split
from haq.errors import HaqError
from haq.evaluation import EvalSetup
from haq.hardware.table import CostTable, table_for
from haq.layers import extract_layers
from haq.search.budget import Budget, check_feasible, parse_budget
from haq.search.cluster import check_workers
from haq.search.config import CHANGEABLE_ON_RESUME, SearchConfig
from haq.search.rundir import RunDir
from haq.specs import QuantSpec
from haq.textfmt import STAGE_BAR, progress_bar
from haq.train import evaluate, load_optimizers, pick_device


@dataclass
class SearchContext:
    """What a run builds once: model, data, calibration, cost table, budgets, pins."""

    cfg: SearchConfig
    setup: EvalSetup
    table: CostTable
    budgets: list[Budget]
    pinned_w: np.ndarray
    pinned_a: np.ndarray
    fp_accuracy: float
    metrics: list[str]
    check_data: Data | None = None  # images no episode is scored on
    setup_s: float = 0.0  # seconds build_context took (data, calibration, FP evaluation)
    model_info: dict[str, Any] = field(default_factory=dict)  # architecture, its kwargs, shape

    @property
    def names(self) -> list[str]:
        return self.table.layer_names


def build_eval_setup(
    cfg: SearchConfig,
    model: nn.Module,
    meta: CheckpointMeta,
    device: str,
    stage: Callable[[str], None] = lambda _: None,
) -> tuple[EvalSetup, Data | None]:
    """The per-episode evaluation of a run (data subsets, calibration, finetune settings) and
    its unseen check subset. Deterministic: every evaluation worker builds the same one.
    ``stage`` is told what starts next (the search's setup bar)."""
    stage("data")
    train = model_data(cfg.dataset, meta, cfg.crop_ratio, cfg.min_crop_scale)
    check_outputs(model, tuple(meta.input_shape), train.num_classes, cfg.dataset)
    finetune_data, heldout, check = search_split(
        train, cfg.finetune_size, cfg.heldout_size, cfg.seed, cfg.check_size
    )
    stage(f"calibration ({cfg.calib_batches * 256} images)")
    setup = EvalSetup.build(
        model,
        finetune_data,
        heldout,
        QuantSpec.of(cfg),
        finetune_steps=cfg.finetune_steps,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        device=device,
        workers=cfg.workers,
        compile=cfg.compile,
    )
    setup.start_loaders()  # their workers boot while the clips are computed
    if cfg.mode == "linear":
        stage("clips for bits 1-8")
        setup.calibration.prepare(range(1, 9), cfg.weight_clip, cfg.per_channel)
    if cfg.finetune_steps > 0:
        load_optimizers()
    return setup, check


def resolve_pins(
    spec: list[str], names: list[str], weights_only: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``first`` pins the first layer's weights (its input is the image, costed at 8 bits),
    ``last`` pins the last layer to w8a8, any other entry is a layer name pinned to w8a8."""
    n = len(names)
    pw, pa = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for item in spec:
        if item in ("", "none"):
            continue
        if item == "first":
            pw[0], pa[0] = 8, 8
        elif item == "last":
            pw[-1] = 8
            pa[-1] = 8
        elif item in names:
            i = names.index(item)
            pw[i], pa[i] = 8, 8
        else:
            raise HaqError(
                f"--keep-8bit: {item!r} is not 'first', 'last' or a layer name of the model"
            )
    if weights_only:
        pa[:] = 8
    return pw, pa


Announce = Callable[[SearchConfig], None]


def build_context(
    cfg: SearchConfig, progress: bool = False, announce: Announce | None = None
) -> SearchContext:
    """Everything before the first episode, including the feasibility check; with
    ``progress`` a bar names each stage as it starts. ``announce(cfg)`` is called once the
    checks that need no data passed (options, model, hardware, budgets, feasibility)."""
    with progress_bar(
        total=4, desc="setup", disable=not progress, leave=False, bar_format=STAGE_BAR
    ) as bar:
        started: list[str] = []

        def stage(name: str) -> None:
            bar.update(1 if started else 0)
            bar.set_postfix_str(name)
            started.append(name)

        ctx = _build_context(cfg, stage, announce)
        bar.update(1)
    return ctx


def _build_context(
    cfg: SearchConfig, stage: Callable[[str], None], announce: Announce | None
) -> SearchContext:
    t0 = time.perf_counter()
    cfg.validate()
    model, meta = resolve_model(cfg.model, cfg.checkpoint, cfg.weights)
    device = str(pick_device(cfg.device))
    # everything that can be refused without data comes first: budgets, pins, feasibility
    layers = extract_layers(model, tuple(meta.input_shape))
    info: dict[str, Any] = {"model": cfg.model or meta.model, "input_shape": list(meta.input_shape)}
    if meta.model_kwargs:
        info["model_kwargs"] = meta.model_kwargs
    table = table_for(layers, cfg.hardware, cfg.batch, info)
    for metric in cfg.budgets:
        if metric == "energy" and not table.has_energy:
            raise HaqError(
                f"hardware {table.hardware.name!r} has no energy model; use --latency or "
                "another hardware"
            )
    budgets = [parse_budget(m, text, table) for m, text in cfg.budgets.items()]
    weights_only = cfg.mode == "kmeans"
    pw, pa = resolve_pins(cfg.keep_8bit, table.layer_names, weights_only)
    check_feasible(table, budgets, cfg.min_bit, pw, pa)
    check_workers(cfg)
    if announce:
        announce(cfg)
    setup, check = build_eval_setup(cfg, model, meta, device, stage)
    stage(f"full-precision accuracy ({len(setup.eval_data)} images)")
    held_out = setup.loader(setup.eval_data, setup.eval_batch_size)
    fp = evaluate(model, held_out, device=device).top1
    metrics = [m for m in ("latency", "energy", "size", "bops") if table.metric_available(m)]
    return SearchContext(
        cfg, setup, table, budgets, pw, pa, fp, metrics, check, time.perf_counter() - t0, info
    )


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested options as dotted names: {"ddpg": {"seed": 1}} -> {"ddpg.seed": 1}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def resolve_config(
    cfg: SearchConfig | None, out: Path, resume: bool, overrides: dict[str, Any]
) -> SearchConfig:
    """The configuration a run uses: for a new run ``cfg`` (default: the embedded default)
    with ``overrides``, resolved; for a resumed run the saved one with ``overrides``, which
    may only grow ``episodes`` or change how it runs (``CHANGEABLE_ON_RESUME``)."""
    if not resume:
        return (cfg or SearchConfig()).with_overrides(overrides).resolved()  # validated
    files = RunDir(out)
    if not files.config.is_file():
        raise HaqError(f"{out}: cannot resume: no config.json there")
    saved = files.load_config().anchored()  # a run saved with relative paths: from here
    wanted = (cfg or saved).with_overrides(overrides).anchored()
    if wanted.model is None:  # a caller's config without the resolved value
        wanted.model = saved.model
    if wanted.ddpg.sigma_decay is None:  # a caller's config without the resolved value
        wanted.ddpg = replace(wanted.ddpg, sigma_decay=saved.ddpg.sigma_decay)
    if wanted.episodes is None:
        wanted.episodes = saved.episodes
    if (
        saved.episodes is not None
        and wanted.episodes is not None
        and wanted.episodes < saved.episodes
    ):
        raise HaqError(
            f"--episodes {wanted.episodes}: {out} was started for {saved.episodes} episodes; "
            "a resumed run can only grow; nothing was changed"
        )
    before, after = _flat(saved.to_dict()), _flat(wanted.to_dict())
    diff = [
        f"{k} {before.get(k)!r} -> {after.get(k)!r}"
        for k in sorted(before.keys() | after.keys())
        if k.split(".")[0] not in CHANGEABLE_ON_RESUME and after.get(k) != before.get(k)
    ]
    if diff:
        raise HaqError(
            f"{out} belongs to a different configuration (differs in: {', '.join(diff)}); "
            "nothing was changed"
        )
    return wanted
