"""haq: hardware-aware automated mixed-precision quantization (HAQ, Wang et al. CVPR 2019).

The top-level names are imported lazily so that ``import haq.hardware`` (pure numpy cost
models) works on a machine without PyTorch. A search is ``haq.run_search(config)``
(``haq.search`` is the subpackage).
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
    "run_search": "haq.search.runner:search",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, _, attr = _LAZY[name].partition(":")
        return getattr(importlib.import_module(module), attr or name)
    raise AttributeError(f"module 'haq' has no attribute {name!r}")
