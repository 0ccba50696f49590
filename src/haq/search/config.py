"""The configuration of a search run (saved as ``config.json`` in the run directory)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from haq.errors import HaqError
from haq.search.ddpg import DDPGConfig

STRATEGIES = ("haq", "random", "uniform")


@dataclass
class SearchConfig:
    """Every knob of a search. Defaults are the embedded default job (about 8 minutes on a
    2-core CPU): the reference MobileNet-V2-style model on Fashion-MNIST, BISMO edge, half of
    the w8a8 latency.

    The per-episode finetune (16 steps at lr 0.01, the final finetune's lr) is long enough
    for the reward to rank policies roughly as the long final finetune does; 4 steps at lr
    1e-3 ranked a policy that ends 3 points worse as the best (README, benchmark notes)."""

    model: str = "mobilenet_v2_fmnist"
    checkpoint: str | None = None
    dataset: str = "fashion-mnist"
    hardware: str = "bismo-edge"
    batch: int | None = None
    budgets: dict[str, str] = field(default_factory=lambda: {"latency": "0.5x"})
    strategy: str = "haq"
    mode: str = "linear"
    episodes: int = 60
    min_bit: int = 2
    max_bit: int = 8
    keep_8bit: list[str] = field(default_factory=lambda: ["first", "last"])
    finetune_steps: int = 16
    finetune_size: int = 5000
    heldout_size: int = 2000
    batch_size: int = 64
    lr: float = 0.01
    calib_batches: int = 2
    per_channel: bool = False
    weight_clip: str = "kl"
    seed: int = 0
    device: str | None = None
    ddpg: DDPGConfig = field(default_factory=DDPGConfig)

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise HaqError(f"unknown strategy {self.strategy!r}; valid: {', '.join(STRATEGIES)}")
        if self.mode not in ("linear", "kmeans"):
            raise HaqError(f"unknown mode {self.mode!r}; valid: linear, kmeans")
        if not 1 <= self.min_bit <= self.max_bit <= 8:
            raise HaqError(f"bit range {self.min_bit}..{self.max_bit} must lie within 1..8")
        if self.episodes < 1:
            raise HaqError("--episodes must be >= 1")
        decay = self.ddpg.sigma_decay
        if decay is not None and not 0.0 < decay <= 1.0:
            raise HaqError(f"--sigma-decay must lie in (0, 1], got {decay}")
        if self.ddpg.warmup_episodes < 0:
            raise HaqError("--warmup must be >= 0")
        if not self.budgets:
            raise HaqError("give at least one budget: --latency, --energy, --size or --bops")
        for name, value in (
            ("finetune-steps", self.finetune_steps),
            ("calib-batches", self.calib_batches - 1),
        ):
            if value < 0:
                raise HaqError(f"--{name} must be >= {0 if name == 'finetune-steps' else 1}")
        if self.finetune_size < 1 or self.heldout_size < 1:
            raise HaqError("--finetune-size and --heldout-size must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise HaqError(f"config has unknown keys: {', '.join(sorted(unknown))}")
        args = dict(data)
        args["ddpg"] = DDPGConfig(**args.get("ddpg", {}))
        return cls(**args)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> SearchConfig:
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as err:
            raise HaqError(f"{path}: not a readable search configuration ({err})") from err
