"""Drop-in quantized wrappers for Conv2d and Linear layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from haq.quant.kmeans import cluster_counts, shared_weight
from haq.quant.linear import (
    InferenceScales,
    act_inference,
    inference_scales,
    quantize_signed_act,
    quantize_symmetric,
    quantize_unsigned,
)


class QuantLayer(nn.Module):
    """A Conv2d/Linear whose weights (and input activations) are fake-quantized.

    ``mode="linear"``: weights on a symmetric grid with clip ``w_clip`` (scalar or per output
    channel), inputs through a PACT quantizer with learnable clip ``a_clip`` unless
    ``quantize_input`` is False (the network's input image is never re-quantized).
    ``mode="kmeans"``: weights are ``centroids[assign]`` (only the centroids train) and
    activations stay in float, as in the paper's model-size mode.
    Biases stay in float (as in the reference code).
    """

    layer: nn.Conv2d | nn.Linear
    w_clip: Tensor  # buffers (typed here: register_buffer is untyped)
    assign: Tensor
    counts: Tensor
    centroids: nn.Parameter
    a_clip: nn.Parameter

    def __init__(
        self,
        layer: nn.Conv2d | nn.Linear,
        w_bits: int,
        a_bits: int,
        mode: str = "linear",
        w_clip: Tensor | None = None,
        a_clip: float | None = None,
        a_signed: bool = False,
        quantize_input: bool = True,
        centroids: Tensor | None = None,
        assign: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.layer = layer
        self.w_bits, self.a_bits, self.mode = int(w_bits), int(a_bits), mode
        self.a_signed = bool(a_signed)
        self.quantize_input = bool(quantize_input) and mode == "linear"
        self._cached_weight: Tensor | None = None  # in evaluation: weights and activation
        self._cached_scales: InferenceScales | None = None  # scales are fixed
        if mode == "linear":
            if w_clip is None:
                raise ValueError("linear mode needs w_clip")
            self.register_buffer("w_clip", w_clip.detach().clone())
        else:
            if centroids is None or assign is None:
                raise ValueError("kmeans mode needs centroids and assign")
            self.centroids = nn.Parameter(centroids.detach().clone())
            self.register_buffer("assign", assign.detach().clone())
            counts = cluster_counts(self.assign, self.centroids.shape[0])
            self.register_buffer("counts", counts, persistent=False)
            layer.weight.requires_grad_(False)
        if self.quantize_input:
            self.a_clip = nn.Parameter(torch.tensor(float(a_clip if a_clip else 1.0)))

    def quantized_weight(self) -> Tensor:
        if self.mode == "kmeans":
            return shared_weight(self.centroids, self.assign, self.counts)
        w = self.layer.weight
        clip = self.w_clip
        if clip.dim() == 1:
            clip = clip.view(-1, *([1] * (w.dim() - 1)))
        return quantize_symmetric(w, self.w_bits, clip)

    def quantize_activation(self, x: Tensor) -> Tensor:
        if not torch.is_grad_enabled():  # inference: the same values, in place, 4 passes
            if self.training or self._cached_scales is None:
                scales = inference_scales(self.a_clip.abs() + 1e-8, self.a_bits, self.a_signed)
                if self.training:
                    return act_inference(x, scales)
                self._cached_scales = scales
            return act_inference(x, self._cached_scales)
        clip = self.a_clip.abs() + 1e-8
        if self.a_signed:
            return quantize_signed_act(x, self.a_bits, clip)
        return quantize_unsigned(x, self.a_bits, clip)

    def train(self, mode: bool = True) -> QuantLayer:
        self._cached_weight = None  # parameters may change while training
        self._cached_scales = None
        return super().train(mode)

    def _weight(self) -> Tensor:
        if self.training or torch.is_grad_enabled():
            return self.quantized_weight()
        if self._cached_weight is None:
            self._cached_weight = self.quantized_weight()
        return self._cached_weight

    def forward(self, x: Tensor) -> Tensor:
        if self.quantize_input:
            x = self.quantize_activation(x)
        w = self._weight()
        m = self.layer
        if type(m) not in (nn.Conv2d, nn.Linear):  # a subclass may pad in its own forward
            return torch.func.functional_call(m, {"weight": w}, (x,))
        if isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros":
                x = F.pad(x, m._reversed_padding_repeated_twice, mode=m.padding_mode)
                return F.conv2d(x, w, m.bias, m.stride, 0, m.dilation, m.groups)
            return F.conv2d(x, w, m.bias, m.stride, m.padding, m.dilation, m.groups)
        return F.linear(x, w, m.bias)

    def extra_repr(self) -> str:
        a = f"a{self.a_bits}{'s' if self.a_signed else ''}" if self.quantize_input else "a=float"
        return f"{self.mode}, w{self.w_bits}, {a}"


def quant_layers(model: nn.Module) -> dict[str, QuantLayer]:
    """The quantized layers of a model, by the name of the layer they replaced."""
    return {name: m for name, m in model.named_modules() if isinstance(m, QuantLayer)}
