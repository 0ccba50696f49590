"""``--format torch``: integer weights, scales, clip values and the policy, plus a loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from haq.export.integer import integer_weight
from haq.fileio import load_payload
from haq.policy import Policy
from haq.quant.modules import quant_layers
from haq.quant.serialize import quant_flags, rebuild_quantized

TORCH_EXPORT_FORMAT = "haq-torch-export-1"


def to_payload(q: nn.Module, policy: Policy, info: dict[str, Any]) -> dict[str, Any]:
    layers: dict[str, Any] = {}
    skip: set[str] = set()
    for name, m in quant_layers(q).items():
        entry: dict[str, Any] = {"mode": m.mode, "w_bits": m.w_bits, "a_bits": m.a_bits}
        if m.mode == "kmeans":
            entry["centroids"] = m.centroids.detach().cpu().clone()
            entry["assign"] = m.assign.to(torch.uint8 if m.w_bits <= 8 else torch.int16).cpu()
            skip |= {f"{name}.centroids", f"{name}.assign", f"{name}.layer.weight"}
        else:
            w_int, scale = integer_weight(m)
            entry["w_int"], entry["w_scale"] = w_int.cpu(), scale.cpu()
            entry["w_clip"] = m.w_clip.detach().cpu().clone()
            skip |= {f"{name}.layer.weight", f"{name}.w_clip"}
        if m.quantize_input:
            entry["a_clip"] = float(m.a_clip.detach().abs())
        layers[name] = entry
    float_state = {k: v.detach().cpu() for k, v in q.state_dict().items() if k not in skip}
    return {
        "format": TORCH_EXPORT_FORMAT,
        **info,
        "policy": policy.to_dict(),
        "quant_flags": quant_flags(q),
        "layers": layers,
        "float_state": float_state,
    }


def load_torch_export(path: str | Path) -> nn.Module:
    """Rebuild the quantized model of a ``--format torch`` export (eval mode)."""
    payload = load_payload(path, TORCH_EXPORT_FORMAT, "haq torch export")
    state = dict(payload["float_state"])
    for name, e in payload["layers"].items():
        if e["mode"] == "kmeans":
            state[f"{name}.centroids"] = e["centroids"]
            state[f"{name}.assign"] = e["assign"].long()
            state[f"{name}.layer.weight"] = e["centroids"][e["assign"].long()]
        else:
            state[f"{name}.layer.weight"] = e["w_int"].float() * e["w_scale"]
            state[f"{name}.w_clip"] = e["w_clip"]
    q, _ = rebuild_quantized({**payload, "state_dict": state})
    return q
