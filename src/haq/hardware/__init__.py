"""Hardware cost models: pure numpy, importable without PyTorch.

``load_hardware("bismo-edge")`` gives a :class:`HardwareConfig`; ``cost_table(layers, hw)``
(in :mod:`haq.hardware.table`) computes every layer's cost at all 8 x 8 bit pairs.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from types import ModuleType
from typing import Any

from haq.errors import HaqError
from haq.hardware import bismo, bitfusion, bitfusion_sim
from haq.hardware.config import (
    PRESET_DIR,
    FieldSpec,
    HardwareConfig,
    check_fields,
    list_presets,
    read_toml,
)

HARDWARE_HELP = (
    "preset name, hardware .toml, or a cost table: .npz (haq cost --table, haq hardware "
    "measure) or .npy (the HAQ reference's lookup, in cycles)"
)

ARCHS: dict[str, ModuleType] = {
    "bismo": bismo,
    "bitfusion": bitfusion,
    "bitfusion-sim": bitfusion_sim,
}


def list_hardware() -> list[str]:
    """Names of the shipped presets."""
    return list_presets()


def parse_hardware(data: dict[str, Any], where: str) -> HardwareConfig:
    """Validate a hardware mapping; every error names ``where`` (the file) and the field."""
    arch = data.get("arch")
    if arch is None:
        raise HaqError(f"{where}: missing field 'arch' (one of {', '.join(sorted(ARCHS))})")
    if not isinstance(arch, str) or arch not in ARCHS:
        raise HaqError(f"{where}: field 'arch' is {arch!r}; valid: {', '.join(sorted(ARCHS))}")
    batch = data.get("batch", 1)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise HaqError(f"{where}: field 'batch' must be an integer >= 1 (got {batch!r})")
    specs: dict[str, FieldSpec] = ARCHS[arch].FIELDS
    known = set(specs) | {"name", "arch", "description", "batch"}
    unknown = sorted(set(data) - known)
    if unknown:  # before the missing ones: a misspelt field is both
        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise HaqError(
            f"{where}: unknown field(s) {', '.join(map(repr, unknown))} for arch {arch!r}{hint}"
        )
    params = check_fields(data, where, specs)
    return HardwareConfig(
        name=str(data.get("name", Path(where).stem)),
        arch=arch,
        description=str(data.get("description", "")),
        batch=batch,
        params=params,
        source=where,
        has_energy=ARCHS[arch].HAS_ENERGY,
    )


def load_hardware(name_or_path: str | Path, batch: int | None = None) -> HardwareConfig:
    """A preset by name (``bismo-edge``) or a TOML file by path, optionally at another batch."""
    text = str(name_or_path)
    preset = PRESET_DIR / f"{text}.toml"
    if preset.is_file():
        cfg = parse_hardware(read_toml(preset), f"preset {text}")
    elif text.endswith(".toml") or Path(text).is_file():
        path = Path(text)
        if not path.is_file():
            raise HaqError(f"hardware file {text!r} not found")
        cfg = parse_hardware(read_toml(path), str(path))
    else:
        raise HaqError(
            f"unknown hardware {text!r}; valid presets: {', '.join(list_presets())}, "
            "or a path to a .toml file"
        )
    return cfg.with_batch(batch)


__all__ = ["ARCHS", "HardwareConfig", "list_hardware", "load_hardware", "parse_hardware"]
