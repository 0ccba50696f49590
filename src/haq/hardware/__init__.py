"""Hardware cost models: pure numpy, importable without PyTorch.

``load_hardware("bismo-edge")`` gives a :class:`HardwareConfig`; ``cost_table(layers, hw)``
(in :mod:`haq.hardware.table`) computes every layer's cost at all 8 x 8 bit pairs.
"""

from __future__ import annotations

from types import ModuleType

from haq.hardware import bismo, bitfusion, bitfusion_sim
from haq.hardware.config import HardwareConfig, list_presets, load_hardware, parse_hardware

ARCHS: dict[str, ModuleType] = {
    "bismo": bismo,
    "bitfusion": bitfusion,
    "bitfusion-sim": bitfusion_sim,
}


def list_hardware() -> list[str]:
    """Names of the shipped presets."""
    return list_presets()


__all__ = ["ARCHS", "HardwareConfig", "list_hardware", "load_hardware", "parse_hardware"]
