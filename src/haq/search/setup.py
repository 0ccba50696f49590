"""What a run builds once (:class:`SearchContext`) and the per-episode evaluation, built the
same way by the search and by every evaluation worker (local processes or Ray actors)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from haq.checkpoint import CheckpointMeta, check_outputs, preprocess_for
from haq.data import Data, load_dataset, search_split
from haq.errors import HaqError
from haq.evaluation import EvalSetup
from haq.hardware.table import CostTable
from haq.search.budget import Budget
from haq.search.config import SearchConfig


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

    @property
    def names(self) -> list[str]:
        return self.table.layer_names


def build_eval_setup(
    cfg: SearchConfig, model: nn.Module, meta: CheckpointMeta, device: str
) -> tuple[EvalSetup, Data | None]:
    """The per-episode evaluation of a run (data subsets, calibration, finetune settings) and
    its unseen check subset. Deterministic: every evaluation worker builds the same one."""
    prep = preprocess_for(meta, cfg.crop_ratio, cfg.min_crop_scale)
    train = load_dataset(cfg.dataset, train=True, preprocess=prep)
    if train.input_shape != tuple(meta.input_shape):
        raise HaqError(
            f"dataset {cfg.dataset!r} has images {train.input_shape}; the model expects {meta.input_shape}"
        )
    check_outputs(model, tuple(meta.input_shape), train.num_classes, cfg.dataset)
    finetune_data, heldout, check = search_split(
        train, cfg.finetune_size, cfg.heldout_size, cfg.seed, cfg.check_size
    )
    setup = EvalSetup.build(
        model,
        finetune_data,
        heldout,
        calib_batches=cfg.calib_batches,
        finetune_steps=cfg.finetune_steps,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        per_channel=cfg.per_channel,
        weight_clip=cfg.weight_clip,
        device=device,
        workers=cfg.workers,
    )
    if cfg.mode == "linear":
        setup.calibration.prepare(range(1, 9), cfg.weight_clip, cfg.per_channel)
    return setup, check
