"""Bit policies: per-layer weight and activation bit widths, keyed by layer name.

A policy is what ``haq cost``, ``haq eval``, ``haq search`` and ``haq export`` exchange. Its
JSON form (schema in docs/policy-schema.md) is versioned::

    {"format": "haq-policy", "version": 1, "mode": "linear",
     "layers": [{"name": "features.0.0", "w_bits": 8, "a_bits": 8}, ...],
     ... optional provenance: hardware, budgets, cost, accuracy ...}
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from haq.errors import HaqError
from haq.fileio import atomic_write_json

POLICY_FORMAT = "haq-policy"
POLICY_VERSION = 1
MIN_BITS, MAX_BITS = 1, 8
MODES = ("linear", "kmeans")
_UNIFORM = re.compile(r"^w(\d+)a(\d+)$")


def _check_bits(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_BITS <= value <= MAX_BITS:
        raise HaqError(f"{what} must be an integer in {MIN_BITS}..{MAX_BITS} (got {value!r})")
    return value


@dataclass
class Policy:
    """Ordered per-layer bits. ``w_bits[i]``/``a_bits[i]`` belong to ``names[i]``."""

    names: list[str]
    w_bits: list[int]
    a_bits: list[int]
    mode: str = "linear"
    info: dict[str, Any] = field(default_factory=dict)
    # optional per-layer quantizer facts (granularity, quantizer, clip values), by layer name
    layer_info: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (len(self.names) == len(self.w_bits) == len(self.a_bits)):
            raise HaqError("policy: names, w_bits and a_bits must have the same length")
        if self.mode not in MODES:
            raise HaqError(f"policy: mode {self.mode!r} is not one of {', '.join(MODES)}")
        seen: set[str] = set()
        for name, w, a in zip(self.names, self.w_bits, self.a_bits, strict=True):
            if name in seen:
                raise HaqError(f"policy: layer {name!r} appears twice")
            seen.add(name)
            _check_bits(w, f"policy: w_bits of layer {name!r}")
            _check_bits(a, f"policy: a_bits of layer {name!r}")

    # --- construction ------------------------------------------------------------------
    @classmethod
    def uniform(cls, spec: str, names: Sequence[str], mode: str = "linear") -> Policy:
        """``"w4a6"`` for every layer."""
        m = _UNIFORM.match(spec.strip().lower())
        if not m:
            raise HaqError(f"policy {spec!r} is neither 'wXaY' (e.g. w4a6) nor a .json file")
        w = _check_bits(int(m.group(1)), f"policy {spec!r}: weight bits")
        a = _check_bits(int(m.group(2)), f"policy {spec!r}: activation bits")
        return cls(list(names), [w] * len(names), [a] * len(names), mode)

    @classmethod
    def from_arrays(
        cls,
        names: Sequence[str],
        w_bits: Sequence[int] | np.ndarray,
        a_bits: Sequence[int] | np.ndarray,
        mode: str = "linear",
        info: dict[str, Any] | None = None,
    ) -> Policy:
        return cls(
            list(names), [int(b) for b in w_bits], [int(b) for b in a_bits], mode, info or {}
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "policy") -> Policy:
        if not isinstance(data, dict) or data.get("format") != POLICY_FORMAT:
            raise HaqError(f'{where}: not a haq policy file (missing "format": "{POLICY_FORMAT}")')
        version = data.get("version")
        if version != POLICY_VERSION:
            raise HaqError(
                f"{where}: policy version {version!r} is not supported "
                f"(this haq reads version {POLICY_VERSION}); re-export it with a matching haq"
            )
        layers = data.get("layers")
        if not isinstance(layers, list) or not layers:
            raise HaqError(f"{where}: 'layers' must be a non-empty list")
        names, ws, as_ = [], [], []
        layer_info: dict[str, dict[str, Any]] = {}
        for i, entry in enumerate(layers):
            if not isinstance(entry, dict) or "name" not in entry:
                raise HaqError(f"{where}: layers[{i}] needs 'name', 'w_bits' and 'a_bits'")
            for key in ("w_bits", "a_bits"):
                if key not in entry:
                    raise HaqError(f"{where}: layer {entry['name']!r} has no {key!r}")
            names.append(str(entry["name"]))
            ws.append(entry["w_bits"])
            as_.append(entry["a_bits"])
            extra = {k: v for k, v in entry.items() if k not in ("name", "w_bits", "a_bits")}
            if extra:
                layer_info[str(entry["name"])] = extra
        info = {k: v for k, v in data.items() if k not in ("format", "version", "layers", "mode")}
        try:
            return cls(names, ws, as_, data.get("mode", "linear"), info, layer_info)
        except HaqError as err:
            raise HaqError(f"{where}: {str(err).removeprefix('policy: ')}") from err

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        p = Path(path)
        if p.exists() and not p.is_file():  # a directory, FIFO or device: never block on it
            raise HaqError(f"policy file {str(p)!r} is not a regular file")
        try:
            data = json.loads(p.read_text())
        except OSError as err:
            raise HaqError(f"cannot read policy file {str(p)!r}: {err.strerror}") from err
        except json.JSONDecodeError as err:
            raise HaqError(f"{p}: malformed JSON: {err}") from err
        except UnicodeDecodeError as err:
            raise HaqError(f"{p}: not a text file (policy files are UTF-8 JSON)") from err
        except RecursionError as err:
            raise HaqError(f"{p}: nested too deeply to be a policy") from err
        held = data.get("policy") if isinstance(data, dict) and "format" not in data else None
        if isinstance(held, dict) and held.get("format") == POLICY_FORMAT:
            data = held  # a record that holds one: haq finetune's final.json
        return cls.from_dict(data, str(p))

    @classmethod
    def parse(cls, spec: str, names: Sequence[str], mode: str = "linear") -> Policy:
        """A CLI policy argument: ``wXaY`` or a path to a policy JSON, checked against ``names``."""
        return policy_for(policy_arg(spec, mode), names)

    # --- use ---------------------------------------------------------------------------
    def check_layers(self, names: Sequence[str]) -> None:
        """Raise if this policy's layers are not exactly ``names`` in that order."""
        want, have = list(names), self.names
        if want == have:
            return
        unknown = [n for n in have if n not in set(want)]
        missing = [n for n in want if n not in set(have)]
        if unknown:
            raise HaqError(f"policy names layer {unknown[0]!r}, which the model does not have")
        if missing:
            raise HaqError(f"policy has no bits for layer {missing[0]!r} of the model")
        raise HaqError("policy lists the model's layers in another order")

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.w_bits, dtype=np.int64), np.asarray(self.a_bits, dtype=np.int64)

    def key(self) -> tuple[tuple[int, int], ...]:
        """Hashable identity of the bits (for caches)."""
        return tuple(zip(self.w_bits, self.a_bits, strict=True))

    def digest(self) -> str:
        """Short SHA-256 of the mode, layer names and bits: what a finetuned file records
        about the policy it came from."""
        text = json.dumps([self.mode, self.names, self.w_bits, self.a_bits])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": POLICY_FORMAT,
            "version": POLICY_VERSION,
            "mode": self.mode,
            "layers": [
                {"name": n, "w_bits": w, "a_bits": a, **self.layer_info.get(n, {})}
                for n, w, a in zip(self.names, self.w_bits, self.a_bits, strict=True)
            ],
            **self.info,
        }

    def save(self, path: str | Path) -> Path:
        """Write atomically: a temp file, then rename, so a crash never leaves half a policy."""
        return atomic_write_json(path, self.to_dict())

    def name(self) -> str:
        """``w8a8`` when uniform, else ``mixed policy``."""
        return self.describe() if len(set(self.key())) == 1 else "mixed policy"

    def describe(self) -> str:
        """Compact text: ``w8a8`` when uniform, else per-layer pairs."""
        pairs = set(self.key())
        if len(pairs) == 1:
            w, a = next(iter(pairs))
            return f"w{w}a{a}"
        return " ".join(f"{w}/{a}" for w, a in self.key())


@dataclass(frozen=True)
class Uniform:
    """``wXaY`` for every layer of a model whose layers are not known yet: the spec is
    checked when this is made, the policy built by :meth:`on`."""

    spec: str
    mode: str = "linear"

    def __post_init__(self) -> None:
        Policy.uniform(self.spec, [], self.mode)

    def on(self, names: Sequence[str]) -> Policy:
        return Policy.uniform(self.spec, names, self.mode)


def policy_arg(arg: str | Path, mode: str = "linear") -> Policy | Uniform:
    """A ``--policy`` argument, read before the model is: a policy file (a path ending in
    .json, or any existing path) is loaded now, ``wXaY`` checked now (``mode``: its
    quantizer). :func:`policy_for` fits either to the model's layers."""
    text = str(arg)
    if text.endswith(".json") or Path(text).exists():
        return Policy.load(text)
    return Uniform(text, mode)


def policy_for(policy: Policy | Uniform, names: Sequence[str], model: str = "") -> Policy:
    """``policy`` on the layers ``names``: a file's policy checked against them, a uniform one
    built for them. ``model`` (the architecture's name): a note on stderr when the file was
    searched for another one whose layer names this model shares (MobileNet-V2 and the
    MobileNet-V2-style reference model do), since nothing else would tell."""
    if isinstance(policy, Uniform):
        return policy.on(names)
    policy.check_layers(names)
    mine = policy.info.get("model")
    if model and isinstance(mine, str) and not same_model(mine, model):
        print(f"note: the policy was searched for {mine}; applying it to {model}", file=sys.stderr)
    return policy


def same_model(a: str, b: str) -> bool:
    """Two model specs name the same model, a ``file.py`` by its name only (a run saves it
    absolute, a checkpoint or a command line as it was typed)."""

    def bare(spec: str) -> str:
        file, sep, fn = spec.rpartition(":")
        return f"{Path(file).name}:{fn}" if sep and file.endswith(".py") else spec

    return bare(a) == bare(b)
