"""haq: hardware-aware automated mixed-precision quantization (HAQ, Wang et al. CVPR 2019).

The top-level names are imported lazily so that ``import haq.hardware`` (pure numpy cost
models) works on a machine without PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "HaqError": "haq.errors",
    "LayerSpec": "haq.layers",
    "extract_layers": "haq.layers",
    "create_model": "haq.models",
    "load_model_spec": "haq.models",
    "list_models": "haq.models",
    "load_hardware": "haq.hardware",
    "list_hardware": "haq.hardware",
    "CostTable": "haq.hardware.table",
    "cost_table": "haq.hardware.table",
    "Policy": "haq.policy",
    "quantize": "haq.quant.api",
    "finetune": "haq.train",
    "evaluate": "haq.train",
    "load_dataset": "haq.data",
    "search": "haq.search.runner",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'haq' has no attribute {name!r}")
