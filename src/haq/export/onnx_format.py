"""``--format qonnx`` and ``--format onnx`` (QuantizeLinear/DequantizeLinear).

Each quantized layer is exported as its float Conv/Gemm whose weight and input pass through
quantization nodes that carry the layer's own bit width:

- QONNX: ``Quant`` (domain ``qonnx.custom_op.general``; signed narrow grid for weights and
  signed inputs, unsigned for inputs after ReLU) and ``BipolarQuant`` for 1-bit weights.
- ONNX QDQ: ``Clip``/``Min``/``Max`` to the layer's clip range, then ``QuantizeLinear`` and
  ``DequantizeLinear`` in int8/uint8 containers with the layer's own scale: a b-bit grid
  (2 <= b <= 8) is a subset of the int8 grid, so the values are exactly the layer's. 1-bit
  layers and k-means (non-uniform) layers cannot be written this way and are refused.

The PyTorch graph is traced with the TorchScript-based exporter (custom symbolics for the
quantizers); the traced forward computes the same fake-quantized values as the model.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from haq.errors import HaqError
from haq.export.integer import weight_scale
from haq.quant.modules import QuantLayer, quant_layers

QONNX_DOMAIN = "qonnx.custom_op.general"
OPSET = 13


def _const(g: Any, value: Tensor | float, dtype: torch.dtype = torch.float32) -> Any:
    return g.op("Constant", value_t=torch.as_tensor(value, dtype=dtype))


class _QonnxQuant(torch.autograd.Function):
    """Fake quantization whose ONNX symbolic is a QONNX Quant / BipolarQuant node."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, scale: Tensor, bits: int, signed: bool, narrow: bool
    ) -> Tensor:  # type: ignore[override]
        if bits == 1 and signed:
            return torch.where(x >= 0, scale, -scale)
        lo = -(2 ** (bits - 1)) + int(narrow) if signed else 0
        hi = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
        return torch.clamp(torch.round(x / scale), lo, hi) * scale

    @staticmethod
    def symbolic(g: Any, x: Any, scale: Any, bits: int, signed: bool, narrow: bool) -> Any:
        if bits == 1 and signed:
            out = g.op(f"{QONNX_DOMAIN}::BipolarQuant", x, scale)
        else:
            out = g.op(
                f"{QONNX_DOMAIN}::Quant",
                x,
                scale,
                _const(g, 0.0),
                _const(g, float(bits)),
                signed_i=int(signed),
                narrow_i=int(narrow),
                rounding_mode_s="ROUND",
            )
        out.setType(x.type())  # same shape and dtype as the input: Conv needs the kernel shape
        return out


class _QdqQuant(torch.autograd.Function):
    """Clip to [lo, hi] then Quantize/DequantizeLinear in an 8-bit container. ``scale`` is a
    scalar, or (``channels`` > 0) one value per index of ``axis`` (QuantizeLinear's per-axis
    form, with as many zero points); ``lo`` and ``hi`` broadcast against ``x`` as they are
    (ONNX's Min/Max align trailing dimensions)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        scale: Tensor,
        lo: Tensor,
        hi: Tensor,
        signed: bool,
        axis: int,
        channels: int,
    ) -> Tensor:  # type: ignore[override]
        shape = [1] * x.dim()
        if channels:
            shape[axis] = -1
        s = scale.view(shape)
        return torch.round(torch.maximum(torch.minimum(x, hi), lo) / s) * s

    @staticmethod
    def symbolic(
        g: Any, x: Any, scale: Any, lo: Any, hi: Any, signed: bool, axis: int, channels: int
    ) -> Any:
        clipped = g.op("Max", g.op("Min", x, hi), lo)
        zeros = torch.zeros(channels) if channels else 0  # per axis: one zero point each
        zp = _const(g, zeros, torch.int8 if signed else torch.uint8)
        q = g.op("QuantizeLinear", clipped, scale, zp, axis_i=axis)
        out = g.op("DequantizeLinear", q, scale, zp, axis_i=axis)
        out.setType(x.type())
        return out


class _ExportLayer(nn.Module):
    w_scale: Tensor  # a buffer
    """A QuantLayer for tracing: weights and input through the format's quantization op."""

    def __init__(self, q: QuantLayer, fmt: str) -> None:
        super().__init__()
        self.q, self.fmt = q, fmt
        self.register_buffer("w_scale", weight_scale(q).detach().clone())
        n = int(self.w_scale.numel())
        self.channels = n if n > 1 else 0  # per-channel clips: a Python int, not traced

    def _weight(self) -> Tensor:
        q, w = self.q, self.q.layer.weight
        if self.fmt == "qonnx":
            return _QonnxQuant.apply(w, self.w_scale, q.w_bits, True, True)
        levels = 2 ** (q.w_bits - 1) - 1
        per_channel = self.channels > 0
        scale = self.w_scale.flatten() if per_channel else self.w_scale.reshape(())
        hi = self.w_scale.reshape(-1, *[1] * (w.dim() - 1)) * levels if per_channel else scale * levels  # fmt: skip
        return _QdqQuant.apply(w, scale, -hi, hi, True, 0, self.channels)

    def _input(self, x: Tensor) -> Tensor:
        q = self.q
        if not q.quantize_input:
            return x
        clip = (q.a_clip.detach().abs() + 1e-8).reshape(())
        steps = (2 ** (q.a_bits - 1) - 1) if q.a_signed else (2**q.a_bits - 1)
        if self.fmt == "qonnx":  # the Quant node's clamp is the PACT clip: hi * scale = clip
            return _QonnxQuant.apply(
                x,
                clip if q.a_bits == 1 and q.a_signed else clip / steps,
                q.a_bits,
                q.a_signed,
                q.a_signed,
            )
        lo = -clip if q.a_signed else torch.zeros_like(clip)
        return _QdqQuant.apply(x, clip / steps, lo, clip, q.a_signed, 1, 0)

    def forward(self, x: Tensor) -> Tensor:
        x = self._input(x)
        w = self._weight()
        m = self.q.layer
        if isinstance(m, nn.Conv2d):
            return F.conv2d(x, w, m.bias, m.stride, m.padding, m.dilation, m.groups)
        return F.linear(x, w, m.bias)


def check_representable(q: nn.Module, fmt: str) -> None:
    """Refuse what the format cannot carry, naming the layer and suggesting another format."""
    for name, m in quant_layers(q).items():
        if m.mode == "kmeans":
            raise HaqError(
                f"layer {name!r} uses k-means (shared, non-uniform) weights, which {fmt} cannot "
                "represent; use --format torch"
            )
        if fmt == "onnx" and (m.w_bits == 1 or (m.quantize_input and m.a_bits == 1)):
            raise HaqError(
                f"layer {name!r} has 1-bit {'weights' if m.w_bits == 1 else 'activations'}, which "
                "QuantizeLinear/DequantizeLinear cannot represent; use --format qonnx"
            )


def export_onnx(q: nn.Module, fmt: str, input_shape: tuple[int, ...], out: Path) -> None:
    """Trace ``q`` (a quantized model) to an ONNX file in ``fmt`` (``qonnx`` or ``onnx``)."""
    import copy

    check_representable(q, fmt)
    model = copy.deepcopy(q).cpu().eval()
    for name in quant_layers(model):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _ExportLayer(getattr(parent, child), fmt))
    x = torch.zeros((1, *input_shape))
    custom = {QONNX_DOMAIN: 1} if fmt == "qonnx" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            str(out),
            dynamo=False,
            opset_version=OPSET,
            input_names=["input"],
            output_names=["output"],
            # QONNX/FINN flows want static shapes (batch 1); the QDQ model takes any batch
            dynamic_axes=None
            if fmt == "qonnx"
            else {"input": {0: "batch"}, "output": {0: "batch"}},
            custom_opsets=custom,
            do_constant_folding=False,
        )
