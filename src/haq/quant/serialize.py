"""Save and rebuild quantized models (the output of ``haq finetune``, the input of export).

A quantized model is rebuilt from its model spec, its policy and a state dict. The few facts
that are not tensors (whether a layer's input is signed, whether it is quantized at all) are
saved beside the state dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from haq.errors import HaqError
from haq.fileio import load_payload, save_payload
from haq.models import load_model_spec
from haq.policy import Policy
from haq.quant.api import quantize
from haq.quant.calibrate import Calibration
from haq.quant.modules import quant_layers

QUANTIZED_FORMAT = "haq-quantized-1"


def quant_flags(q: nn.Module) -> dict[str, dict[str, bool]]:
    return {
        n: {"a_signed": m.a_signed, "quantize_input": m.quantize_input}
        for n, m in quant_layers(q).items()
    }


def quantizer_facts(q: nn.Module) -> dict[str, dict[str, Any]]:
    """Per-layer quantizer, granularity and clip values of a quantized model (policy files)."""
    facts: dict[str, dict[str, Any]] = {}
    for name, m in quant_layers(q).items():
        entry: dict[str, Any] = {"quantizer": m.mode}
        if m.mode == "linear":
            clip = m.w_clip.detach().cpu()
            entry["granularity"] = "per-channel" if clip.dim() == 1 else "per-tensor"
            entry["w_clip"] = clip.tolist() if clip.dim() == 1 else float(clip)
        else:
            entry["granularity"] = "per-tensor"
            entry["centroids"] = m.centroids.detach().cpu().tolist()
        if m.quantize_input:
            entry["a_clip"] = float(m.a_clip.detach().abs())
            entry["a_signed"] = m.a_signed
        facts[name] = entry
    return facts


def save_quantized(path: str | Path, q: nn.Module, policy: Policy, info: dict[str, Any]) -> Path:
    """Write ``info`` (model spec, model_kwargs, input_shape, ...) + policy + state dict."""
    for key in ("model", "input_shape"):
        if key not in info:
            raise ValueError(f"info needs {key!r}")
    payload = {
        "format": QUANTIZED_FORMAT,
        **info,
        "policy": policy.to_dict(),
        "quant_flags": quant_flags(q),
        "state_dict": {k: v.detach().cpu() for k, v in q.state_dict().items()},
    }
    return save_payload(payload, path)


def read_quantized(path: str | Path) -> dict[str, Any]:
    return load_payload(
        path, QUANTIZED_FORMAT, "quantized haq checkpoint (written by 'haq finetune')"
    )


def rebuild_quantized(payload: dict[str, Any]) -> tuple[nn.Module, Policy]:
    """The quantized model of a payload from :func:`save_quantized`, in eval mode."""
    policy = Policy.from_dict(payload["policy"], "quantized checkpoint policy")
    model = load_model_spec(payload["model"], **payload.get("model_kwargs", {})).eval()
    x = torch.zeros((2, *payload["input_shape"]))
    calib = Calibration(model, [(x, torch.zeros(2, dtype=torch.long))], batches=1)
    state = payload["state_dict"]  # per-channel clips are one value per output channel
    per_channel = any(k.endswith(".w_clip") and v.dim() == 1 for k, v in state.items())
    q = quantize(model, policy, calibration=calib, weight_clip="max", per_channel=per_channel)
    for name, flags in payload["quant_flags"].items():
        layer = quant_layers(q)[name]
        layer.a_signed = flags["a_signed"]
        if layer.quantize_input != flags["quantize_input"]:
            raise HaqError(f"quantized checkpoint: layer {name!r} does not match the rebuilt model")
    try:
        q.load_state_dict(state)
    except RuntimeError as err:
        raise HaqError(
            f"quantized checkpoint does not fit model {payload['model']!r}: {err}"
        ) from err
    return q.eval(), policy
