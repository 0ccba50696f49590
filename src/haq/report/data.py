"""What a report needs from a run directory, loaded once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from haq.checkpoint import builtin_checkpoint, read_checkpoint
from haq.errors import HaqError
from haq.hardware import load_hardware
from haq.hardware.table import CostTable, cost_table
from haq.layers import extract_layers
from haq.models import default_input_shape, load_model_spec
from haq.search.runner import read_episodes


@dataclass
class RunData:
    name: str
    path: Path
    config: dict[str, Any]
    episodes: list[dict[str, Any]]
    summary: dict[str, Any] | None
    table: CostTable

    @property
    def main_metric(self) -> str:
        return next(iter(self.config["budgets"]))

    @property
    def best(self) -> dict[str, Any]:
        return max(self.episodes, key=lambda r: r["reward"])

    def best_bits(self) -> tuple[np.ndarray, np.ndarray]:
        b = self.best
        return np.array(b["w_bits"]), np.array(b["a_bits"])

    @property
    def label(self) -> str:
        budgets = ", ".join(f"{m} {t}" for m, t in self.config["budgets"].items())
        return f"{self.name}: {self.table.hardware.name}, {budgets}"


def load_run(path: str | Path) -> RunData:
    p = Path(path)
    if not (p / "config.json").is_file():
        raise HaqError(f"{p}: not a search run directory (no config.json)")
    config = json.loads((p / "config.json").read_text())
    episodes = read_episodes(p)
    summary = (
        json.loads((p / "summary.json").read_text()) if (p / "summary.json").is_file() else None
    )
    ckpt = config.get("checkpoint") or builtin_checkpoint(config["model"])
    if ckpt is not None:
        meta, _ = read_checkpoint(ckpt)
        kwargs, shape = meta.model_kwargs, tuple(meta.input_shape)
    elif config.get("weights"):  # a state dict: the registry's input shape, no options
        kwargs, shape = {}, default_input_shape(config["model"])
    else:
        raise HaqError(f"{p}: cannot find the checkpoint of model {config['model']!r}")
    model = load_model_spec(config["model"], **kwargs)
    layers = extract_layers(model, shape)
    table = cost_table(layers, load_hardware(config["hardware"], config.get("batch")))
    return RunData(p.name, p, config, episodes, summary, table)
