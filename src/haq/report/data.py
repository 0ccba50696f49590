"""What a report needs from a run directory, loaded once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from haq.checkpoint import builtin_checkpoint, read_checkpoint
from haq.errors import HaqError
from haq.fileio import read_json
from haq.finishing import stale_final
from haq.hardware.table import CostTable, table_for
from haq.layers import extract_layers
from haq.models import default_input_shape, load_model_spec
from haq.search.rundir import RunDir


@dataclass
class RunData:
    name: str
    path: Path
    config: dict[str, Any]
    episodes: list[dict[str, Any]]
    summary: dict[str, Any] | None
    table: CostTable
    final: dict[str, Any] | None = None  # final.json of 'haq finetune --run', when current
    stale: str | None = None  # why final.pt no longer matches the best policy

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
    files = RunDir(p)
    if not files.config.is_file():
        raise HaqError(f"{p}: not a search run directory (no config.json)")
    config = files.load_config().to_dict()
    episodes = files.read_episodes()
    summary = files.load_summary() if files.summary.is_file() else None
    if files.summary.is_file() and (summary is None or not isinstance(summary.get("best"), dict)):
        raise HaqError(
            f"{files.summary}: not a run summary; remove it (haq search --resume {p} writes it "
            "again)"
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
    table = table_for(layers, config["hardware"], config.get("batch"))
    stale = stale_final(p)
    final = None
    if files.final_record.is_file() and stale is None:
        final = read_json(files.final_record, "finetune record")
    return RunData(p.name, p, config, episodes, summary, table, final, stale)
