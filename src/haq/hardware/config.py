"""Hardware descriptions: presets and user TOML files with the same fields.

A hardware file is flat TOML: ``name``, ``arch`` (``bismo`` or ``bitfusion``),
``description``, ``batch`` and the numeric fields its architecture needs (listed by
``FIELDS`` in :mod:`haq.hardware.bismo` / :mod:`haq.hardware.bitfusion`). Every number in a
shipped preset carries its source in a comment next to it.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from haq.errors import HaqError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESET_DIR = Path(__file__).parent / "presets"


@dataclass(frozen=True)
class FieldSpec:
    """One numeric field of a hardware file: its meaning and unit, whether 0 is allowed, and
    the value a file that does not set it gets (None: the field is required)."""

    description: str
    allow_zero: bool = False
    integer: bool = False
    default: float | None = None


@dataclass(frozen=True)
class HardwareConfig:
    """A validated accelerator description. ``params`` holds the architecture's fields."""

    name: str
    arch: str
    description: str
    batch: int
    params: dict[str, float] = field(default_factory=dict)
    source: str = ""

    def with_batch(self, batch: int | None) -> HardwareConfig:
        """The same hardware run at another batch size (``None`` keeps the preset's)."""
        if batch is None:
            return self
        if batch < 1:
            raise HaqError(f"batch must be >= 1 (got {batch})")
        return replace(self, batch=int(batch))

    @property
    def has_energy(self) -> bool:
        from haq.hardware import ARCHS

        return ARCHS[self.arch].HAS_ENERGY

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arch": self.arch,
            "description": self.description,
            "batch": self.batch,
            "source": self.source,
            **self.params,
        }


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise HaqError(f"{path}: malformed TOML: {err}") from err
    except UnicodeDecodeError as err:
        raise HaqError(f"{path}: not a text file (hardware files are UTF-8 TOML)") from err
    except OSError as err:
        raise HaqError(f"{path}: cannot read hardware file: {err}") from err


def parse_hardware(data: dict[str, Any], where: str) -> HardwareConfig:
    """Validate a hardware mapping; every error names ``where`` (the file) and the field."""
    from haq.hardware import ARCHS

    arch = data.get("arch")
    if arch is None:
        raise HaqError(f"{where}: missing field 'arch' (one of {', '.join(sorted(ARCHS))})")
    if not isinstance(arch, str) or arch not in ARCHS:
        raise HaqError(f"{where}: field 'arch' is {arch!r}; valid: {', '.join(sorted(ARCHS))}")
    batch = data.get("batch", 1)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise HaqError(f"{where}: field 'batch' must be an integer >= 1 (got {batch!r})")
    specs: dict[str, FieldSpec] = ARCHS[arch].FIELDS
    params: dict[str, float] = {}
    for key, spec in specs.items():
        if key not in data and spec.default is None:
            raise HaqError(f"{where}: missing field {key!r} ({spec.description})")
        value = data.get(key, spec.default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HaqError(f"{where}: field {key!r} must be a number (got {value!r})")
        if not math.isfinite(value):
            raise HaqError(f"{where}: field {key!r} must be a finite number (got {value!r})")
        if value < 0 or (value == 0 and not spec.allow_zero):
            bound = ">= 0" if spec.allow_zero else "> 0"
            raise HaqError(f"{where}: field {key!r} must be {bound} (got {value!r})")
        if spec.integer and int(value) != value:
            raise HaqError(f"{where}: field {key!r} must be an integer (got {value!r})")
        params[key] = float(value)
    known = set(specs) | {"name", "arch", "description", "batch"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise HaqError(
            f"{where}: unknown field(s) {', '.join(map(repr, unknown))} for arch {arch!r}"
        )
    return HardwareConfig(
        name=str(data.get("name", Path(where).stem)),
        arch=arch,
        description=str(data.get("description", "")),
        batch=batch,
        params=params,
        source=where,
    )


def load_hardware(name_or_path: str | Path, batch: int | None = None) -> HardwareConfig:
    """A preset by name (``bismo-edge``) or a TOML file by path, optionally at another batch."""
    text = str(name_or_path)
    preset = PRESET_DIR / f"{text}.toml"
    if preset.is_file():
        cfg = parse_hardware(_read_toml(preset), f"preset {text}")
    elif text.endswith(".toml") or Path(text).is_file():
        path = Path(text)
        if not path.is_file():
            raise HaqError(f"hardware file {text!r} not found")
        cfg = parse_hardware(_read_toml(path), str(path))
    else:
        raise HaqError(
            f"unknown hardware {text!r}; valid presets: {', '.join(list_presets())}, "
            "or a path to a .toml file"
        )
    return cfg.with_batch(batch)
