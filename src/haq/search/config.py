"""The configuration of a search run: every option defined once (default, help text, flag),
saved as ``config.json`` in the run directory. ``haq search``'s flags are generated from it
(:mod:`haq.options`)."""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from haq.errors import HaqError
from haq.fileio import atomic_write_json, read_json
from haq.hardware import HARDWARE_HELP
from haq.options import SEED_MAX, check_bounds, opt, type_error
from haq.search.budget import ENFORCERS
from haq.search.ddpg import DDPGConfig, stretched_sigma_decay
from haq.search.strategies import REGISTRY
from haq.specs import DEFAULT_REFERENCE_MODEL, DataSpec, ModelSpec, QuantSpec, device_opt

PROTOCOLS = ("fast", "paper")
# --protocol paper: the reference code's per-episode evaluation (docs/search.md); the
# finetune steps become one epoch of the finetune subset unless given
PAPER_PROTOCOL = {"finetune_size": 20_000, "heldout_size": 10_000, "lr": 1e-3}
STRATEGIES = ("auto", *REGISTRY)  # auto: the benchmark's winner for the budgets
# options a resumed run may change: how it runs, not what it searches (the rounds of a
# parallel search follow --eval-workers from the resume on)
CHANGEABLE_ON_RESUME = (
    "episodes", "device", "workers", "eval_workers", "ray_address", "gpus_per_worker"
)  # fmt: skip
# what --strategy auto runs for a kind of budget: the benchmark's winner (benchmarks/RESULTS.md,
# "Which strategy wins" and, at tight budgets, "Tight budgets": ilp in every scenario, ilp-refine
# level with it at 4x the evaluations); a mix of budget kinds takes the strategy all of them
# agree on, else ilp
RECOMMENDED = {"latency": "ilp", "energy": "ilp", "size": "ilp", "bops": "ilp"}


def recommended_strategy(budgets: dict[str, str]) -> str:
    """The strategy ``--strategy auto`` picks for these budgets."""
    picks = {RECOMMENDED.get(metric, "ilp") for metric in budgets}
    return picks.pop() if len(picks) == 1 else "ilp"


@dataclass(kw_only=True)
class SearchConfig(QuantSpec, DataSpec, ModelSpec):
    """Every knob of a search. Defaults are the embedded default job (about 3 minutes on a
    2-core CPU): the reference MobileNet-V2-style model on Fashion-MNIST, BISMO edge, half of
    the w8a8 latency.

    The per-episode finetune (16 steps at lr 0.01, the final finetune's lr) is long enough
    for the reward to rank policies roughly as the long final finetune does; 4 steps at lr
    1e-3 ranked a policy that ends 3 points worse as the best (docs/search.md, "Reward").

    The model, data and quantizer options come from :mod:`haq.specs` (flat keys in
    ``config.json``, flags first in ``--help``)."""

    protocol: str = opt(
        "fast",
        "per-episode evaluation preset: fast (the CPU default below) or paper (one finetune "
        "epoch over 20,000 training images at lr 1e-3, reward on 10,000 held-out images); "
        "flags given with it override single values",
        choices=PROTOCOLS,
    )
    hardware: str = opt("bismo-edge", HARDWARE_HELP)
    batch: int | None = opt(
        None, "hardware batch (default: the preset's)", show_default=False, low=1
    )
    budgets: dict[str, str] = opt(
        help="budget on {metric}: a value like {example} or a ratio like 0.5x of the all-w8a8 "
        "cost on this hardware (size: of the fp32 weights); budgets given together all hold; "
        "default: --latency 0.5x",
        factory=lambda: {"latency": "0.5x"},
        budget={"latency": "12ms", "energy": "3.5mJ", "size": "1.2MB", "bops": "2.5G (per image)"},
    )
    strategy: str = opt(
        "auto",
        "auto: the benchmark's winner for the budget kind (ilp today); "
        + "; ".join(f"{i.name}: {i.label}" for i in REGISTRY.values()),
        choices=STRATEGIES,
    )
    mode: str = opt(
        "linear",
        "linear (weights + activations) or kmeans (weights only, for --size)",
        choices=("linear", "kmeans"),
    )
    episodes: int | None = opt(
        None,
        "policies to evaluate (default: "
        + ", ".join(f"{i.default_episodes} for {i.name}" for i in REGISTRY.values())
        + "; ilp's are its best plans, one per activation/weight sensitivity trade-off)",
        show_default=False,
        low=1,
    )
    enforce: str = opt(
        "level",
        "how a haq or random proposal over the budget is brought within it: level (one bit at "
        "a time from the operand with the most bits; not in the paper) or reference (the HAQ "
        "code: rounds from the last layer back, one bit per operand)",
        choices=tuple(ENFORCERS),
    )
    min_bit: int = opt(2, "lowest bit width the search may choose", low=1, high=8)
    max_bit: int = opt(8, "highest bit width the search may choose", low=1, high=8)
    keep_8bit: list[str] = opt(
        help="layers pinned to 8 bits: first, last, none or layer names, comma-separated",
        factory=lambda: ["first", "last"],
    )
    finetune_steps: int = opt(16, "per-episode finetune steps; 0 = calibration only", low=0)
    finetune_size: int = opt(5000, "training images of the per-episode finetune subset", low=1)
    heldout_size: int = opt(2000, "held-out training images the reward is measured on", low=1)
    check_size: int = opt(
        2000, "further unseen training images the best policy is re-evaluated on; 0 = none", low=0
    )
    batch_size: int = opt(64, "per-episode finetune batch", low=1)
    lr: float = opt(0.01, "per-episode finetune learning rate", above=0)
    sensitivity_images: int = opt(256, "images of the ilp / greedy sensitivity batch", low=1)
    seed: int = opt(0, "seed of the data split and the per-episode finetune", low=0, high=SEED_MAX)
    device: str | None = device_opt()
    compile: bool = opt(
        False,
        "evaluate policies under torch.compile: one quantized model, bits held as tensors, "
        "compiled once per run (minutes) and reused by every policy; for long episodes "
        "(--protocol paper) on GPUs (README, 'Speed'); linear mode only",
    )
    eval_workers: int = opt(
        1,
        "episodes evaluated in parallel, one Ray actor each (pip install 'haq[ray]'); the "
        "agent proposes that many policies per round",
        low=1,
        high=1024,
    )
    ray_address: str | None = opt(
        None,
        "join this Ray cluster (auto or HOST:PORT) instead of starting one on this machine",
        show_default=False,
    )
    gpus_per_worker: float = opt(
        1.0, "GPUs per evaluation actor when the cluster has GPUs (fractions share one)", low=0
    )
    ddpg: DDPGConfig = opt(factory=DDPGConfig)

    def _check_strategy(self) -> None:
        if self.strategy not in STRATEGIES:
            raise HaqError(f"unknown strategy {self.strategy!r}; valid: {', '.join(STRATEGIES)}")

    def validate(self) -> None:
        self._check_strategy()
        if self.protocol not in PROTOCOLS:
            raise HaqError(f"unknown protocol {self.protocol!r}; valid: {', '.join(PROTOCOLS)}")
        if self.checkpoint and self.weights:
            raise HaqError("give --checkpoint or --weights, not both")
        if self.enforce not in ENFORCERS:
            raise HaqError(f"unknown enforcement {self.enforce!r}; valid: reference, level")
        if self.mode not in ("linear", "kmeans"):
            raise HaqError(f"unknown mode {self.mode!r}; valid: linear, kmeans")
        if self.compile and self.mode != "linear":
            raise HaqError("--compile works with --mode linear only")
        if not 1 <= self.min_bit <= self.max_bit <= 8:
            raise HaqError(f"bit range {self.min_bit}..{self.max_bit} must lie within 1..8")
        if not self.budgets:
            raise HaqError("give at least one budget: --latency, --energy, --size or --bops")
        why = check_bounds(self)
        if why:
            raise HaqError(why)

    def resolved(self) -> SearchConfig:
        """A copy with the defaults that depend on other options filled in, as a new run
        saves them (so a resumed run keeps them): the strategy ``auto`` picks, its episode
        count and the agent's exploration decay stretched to it."""
        self._check_strategy()  # before its preset is looked up
        cfg = self.anchored()
        if cfg.model is None:  # saved explicitly: the run's model never depends on a default
            cfg.model = self.default_model()
        if cfg.strategy == "auto":
            cfg.strategy = recommended_strategy(cfg.budgets)
        cfg._apply_preset(REGISTRY[cfg.strategy].overrides)
        if cfg.episodes is None:
            cfg.episodes = REGISTRY[cfg.strategy].default_episodes
        if cfg.ddpg.sigma_decay is None:
            decay = stretched_sigma_decay(cfg.episodes, cfg.ddpg.warmup_episodes)
            cfg.ddpg = replace(cfg.ddpg, sigma_decay=decay)
        return cfg

    def anchored(self) -> SearchConfig:
        """A copy whose file paths (checkpoint, weights, a hardware file, an image folder, a
        model's ``file.py``) are absolute, taken from the working directory: a run's
        ``config.json`` then works from any directory (resume, report, finetune, export);
        relative, it failed with "not found" anywhere but where the search started."""
        cfg = copy.deepcopy(self)
        for name in ("checkpoint", "weights"):
            if getattr(cfg, name):
                setattr(cfg, name, _absolute(getattr(cfg, name)))
        if Path(cfg.hardware).suffix.lower() in HARDWARE_FILE_SUFFIXES:
            cfg.hardware = _absolute(cfg.hardware)
        kind, sep, folder = cfg.dataset.partition(":")
        if sep and kind == "imagefolder" and folder:
            cfg.dataset = f"imagefolder:{_absolute(folder)}"
        if cfg.model:
            file, sep, fn = cfg.model.rpartition(":")
            if sep and file.endswith(".py"):
                cfg.model = f"{_absolute(file)}:{fn}"
        return cfg

    def default_model(self) -> str:
        """The model of a run given none: its checkpoint's, else the reference model."""
        if self.checkpoint:
            from haq.checkpoint import read_checkpoint

            return read_checkpoint(self.checkpoint)[0].model
        return DEFAULT_REFERENCE_MODEL

    def with_overrides(self, overrides: dict[str, Any]) -> SearchConfig:
        """A copy with ``overrides`` (field -> value; ``ddpg`` a dict of its own fields or a
        DDPGConfig) applied: the one place options given by a caller meet saved ones."""
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise HaqError(f"unknown search options: {', '.join(sorted(unknown))}")
        data = self.to_dict()
        if overrides.get("protocol") == "paper":
            data.update(PAPER_PROTOCOL)
            if "finetune_steps" not in overrides:
                size = overrides.get("finetune_size", PAPER_PROTOCOL["finetune_size"])
                data["finetune_steps"] = -(-size // overrides.get("batch_size", data["batch_size"]))
        elif overrides.get("protocol") == "fast":
            fast = SearchConfig()
            data.update({k: getattr(fast, k) for k in (*PAPER_PROTOCOL, "finetune_steps")})
        for key, value in overrides.items():
            if key == "ddpg":
                value = asdict(value) if isinstance(value, DDPGConfig) else value
                data["ddpg"] = {**data["ddpg"], **value}
            else:
                data[key] = copy.deepcopy(value)
        cfg = SearchConfig.from_dict(data)
        cfg.validate()
        return cfg

    def _apply_preset(self, overrides: dict[str, Any]) -> None:
        """A preset strategy's fixed options (``haq-paper``); an option the user set to
        something else is an error, not silently replaced."""
        default = SearchConfig()
        for key, value in overrides.items():
            obj: Any = self
            base: Any = default
            name = key
            if key.startswith("ddpg."):
                obj, base, name = self.ddpg, default.ddpg, key.split(".", 1)[1]
            now = getattr(obj, name)
            if now != value and now != getattr(base, name):
                flag = name.replace("_", "-")
                raise HaqError(
                    f"--strategy {self.strategy} fixes --{flag} {value}; it was given {now}"
                )
            if obj is self:
                setattr(self, name, value)
            else:
                self.ddpg = replace(self.ddpg, **{name: value})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchConfig:
        known = {f.name for f in fields(cls)} | {"run_id"}
        unknown = set(data) - known
        if unknown:
            raise HaqError(f"config has unknown keys: {', '.join(sorted(unknown))}")
        why = type_error(cls, data)
        if why:
            raise HaqError(f"config: {why}")
        args = {k: v for k, v in data.items() if k != "run_id"}  # the run's, not an option
        if "ddpg" in args and "anchor" not in args["ddpg"]:  # saved before the anchor existed
            args["ddpg"] = {**args["ddpg"], "anchor": False}
        args.setdefault("enforce", "reference")  # saved before --enforce existed
        try:
            args["ddpg"] = DDPGConfig(**args.get("ddpg", {}))
        except TypeError as err:
            raise HaqError(f"config: bad agent options ({err})") from err
        return cls(**args)

    def save(self, path: Path, run_id: str | None = None) -> None:
        """Write the configuration (and the run's identity, when it has one)."""
        atomic_write_json(path, {**self.to_dict(), **({"run_id": run_id} if run_id else {})})

    @classmethod
    def load(cls, path: Path) -> SearchConfig:
        data = read_json(path, "search configuration")
        if not isinstance(data, dict):
            raise HaqError(f"{path}: not a search configuration (a JSON object is expected)")
        try:
            return cls.from_dict(data)
        except HaqError as err:
            raise HaqError(f"{path}: {str(err).removeprefix('config: ')}") from err
        except (TypeError, ValueError, AttributeError) as err:
            raise HaqError(f"{path}: not a valid search configuration ({err})") from err


HARDWARE_FILE_SUFFIXES = (".toml", ".npz", ".npy")  # else a preset name


def _absolute(path: str) -> str:
    """``path`` from the working directory (``~`` expanded; links kept as written) when it
    exists; else as typed, for the error that names it."""
    full = os.path.abspath(os.path.expanduser(path))
    return full if os.path.exists(full) else path
