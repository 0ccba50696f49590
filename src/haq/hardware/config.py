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
    maximum: float | None = None  # the largest value allowed (None: no upper bound)


@dataclass(frozen=True)
class HardwareConfig:
    """A validated accelerator description. ``params`` holds the architecture's fields."""

    name: str
    arch: str
    description: str
    batch: int
    params: dict[str, float] = field(default_factory=dict)
    source: str = ""
    has_energy: bool = False  # the architecture has an energy model

    def with_batch(self, batch: int | None) -> HardwareConfig:
        """The same hardware run at another batch size (``None`` keeps the preset's)."""
        if batch is None:
            return self
        if batch < 1:
            raise HaqError(f"batch must be >= 1 (got {batch})")
        return replace(self, batch=int(batch))

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


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise HaqError(f"{path}: malformed TOML: {err}") from err
    except UnicodeDecodeError as err:
        raise HaqError(f"{path}: not a text file (hardware files are UTF-8 TOML)") from err
    except OSError as err:
        raise HaqError(f"{path}: cannot read hardware file: {err}") from err


def check_fields(data: dict[str, Any], where: str, specs: dict[str, FieldSpec]) -> dict[str, float]:
    """The architecture's numeric fields of a hardware mapping, each checked against its
    spec (required, a finite number, its range, an integer where it must be)."""
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
        if spec.maximum is not None and value > spec.maximum:
            raise HaqError(f"{where}: field {key!r} must be <= {spec.maximum:g} (got {value!r})")
        if spec.integer and int(value) != value:
            raise HaqError(f"{where}: field {key!r} must be an integer (got {value!r})")
        params[key] = float(value)
    return params
