"""Pretrained weights from a file the user owns (``--weights PATH``); nothing is downloaded.

Accepted: a state dict saved with ``torch.save`` (``.pt``, ``.pth``, ``.bin``, ...) or in
``.safetensors``; or a training checkpoint holding one under ``state_dict``, ``model``,
``ema``, ``model_ema`` or ``state_dict_ema`` (the first present). ``module.`` (DataParallel)
and ``_orig_mod.`` (torch.compile) prefixes are stripped. Pickles are read with
``weights_only=True``: tensors, containers and argparse namespaces (which training scripts
often store beside the weights), never arbitrary objects.
"""

from __future__ import annotations

import argparse
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from haq.errors import HaqError

NESTED_KEYS = ("state_dict", "model", "ema", "model_ema", "state_dict_ema")
PREFIXES = ("module.", "_orig_mod.")
SHOWN = 5  # key names listed in a mismatch error


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The state dict in ``path`` (see the module docstring), prefixes stripped."""
    path = Path(path)
    if not path.is_file():
        raise HaqError(f"weights file {str(path)!r} not found")
    obj = _read(path)
    for _ in range(3):  # a checkpoint may nest, e.g. {"model": {"state_dict": ...}}
        if isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
            return _strip(dict(obj))
        key = next((k for k in NESTED_KEYS if isinstance(obj, Mapping) and k in obj), None)
        if key is None:
            break
        obj = obj[key]
    keys = ", ".join(map(str, list(obj)[:SHOWN])) if isinstance(obj, Mapping) else ""
    raise HaqError(
        f"{path}: no state dict found (expected tensors by parameter name, or one under "
        f"{', '.join(NESTED_KEYS)}; found {type(obj).__name__}{f' with keys {keys}' if keys else ''})"
    )


def _read(path: Path) -> Any:
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as err:
            raise HaqError("reading .safetensors needs the safetensors package") from err
        try:
            return load_file(str(path))
        except Exception as err:  # the library raises its own error types
            raise HaqError(f"cannot read {path} as safetensors: {err}") from err
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise HaqError(f"cannot read weights file {path}: {err.strerror or err}") from err
    except pickle.UnpicklingError as err:
        if not _torch_like(path):
            raise HaqError(
                f"cannot read weights file {path}: not a torch or safetensors file"
            ) from err
        what = next((ln.strip() for ln in str(err).splitlines() if "Unsupported global" in ln), "")
        raise HaqError(
            f"{path} holds Python objects besides tensors{f' ({what})' if what else ''}; save "
            "the weights alone with torch.save(model.state_dict(), PATH)"
        ) from err
    except Exception as err:  # a damaged file: torch's unpickler raises KeyError, EOFError...
        if not _torch_like(path):
            raise HaqError(
                f"cannot read weights file {path}: not a torch or safetensors file"
            ) from err
        first = (str(err).splitlines() or [""])[0] or type(err).__name__
        raise HaqError(f"cannot read weights file {path}: damaged ({first})") from err


def _torch_like(path: Path) -> bool:
    """Whether ``path`` starts like a file of torch.save: a zip archive (perhaps cut short) or
    a binary pickle."""
    with open(path, "rb") as fh:
        head = fh.read(2)
    return head == b"PK" or head[:1] == b"\x80"


def _strip(state: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        for prefix in PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load the weights in ``path`` into ``model`` strictly: every key and shape must match,
    else one :class:`HaqError` names the first missing and unexpected keys."""
    state = read_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrong shape", wrong),
        ):
            if keys:
                more = f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
                parts.append(f"{len(keys)} {label}: {', '.join(keys[:SHOWN])}{more}")
        raise HaqError(
            f"weights {str(path)!r} do not fit the model ({'; '.join(parts)}); check --model "
            "and its options (for example num_classes)"
        )
    model.load_state_dict(state)
    model.eval()
    return model
