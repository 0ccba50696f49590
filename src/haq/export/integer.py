"""Integer form of a quantized layer's weights: ``w = w_int * scale``."""

from __future__ import annotations

import torch
from torch import Tensor

from haq.quant.modules import QuantLayer


def weight_scale(layer: QuantLayer) -> Tensor:
    """Scale of the weight grid, broadcastable to the weight (per tensor or per channel)."""
    w = layer.layer.weight
    clip = layer.w_clip
    if clip.dim() == 1:
        clip = clip.view(-1, *([1] * (w.dim() - 1)))
    return clip if layer.w_bits == 1 else clip / (2 ** (layer.w_bits - 1) - 1)


def integer_weight(layer: QuantLayer) -> tuple[Tensor, Tensor]:
    """(w_int as int8, scale) with ``w_int * scale`` equal to the layer's quantized weight."""
    with torch.no_grad():
        scale = weight_scale(layer)
        q = layer.quantized_weight()
        w_int = torch.round(q / scale).to(torch.int8)
    return w_int, scale.detach().clone()
