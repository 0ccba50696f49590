"""Drop-in quantized wrappers for Conv2d and Linear layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from haq.quant.kmeans import cluster_counts, shared_weight
from haq.quant.linear import (
    InferenceScales,
    act_inference,
    act_inference_levels,
    binary_act,
    binary_weight,
    inference_scales,
    pact,
    quantize_signed_act,
    quantize_symmetric,
    quantize_unsigned,
    signed_levels,
    signed_pact,
    symmetric_grid,
    unsigned_levels,
)


class QuantLayer(nn.Module):
    """A Conv2d/Linear whose weights (and input activations) are fake-quantized.

    ``mode="linear"``: weights on a symmetric grid with clip ``w_clip`` (scalar or per output
    channel), inputs through a PACT quantizer with learnable clip ``a_clip`` unless
    ``quantize_input`` is False (the network's input image is never re-quantized).
    ``mode="kmeans"``: weights are ``centroids[assign]`` (only the centroids train) and
    activations stay in float, as in the paper's model-size mode.
    Biases stay in float (as in the reference code).

    After :meth:`hold_bits_as_tensors` the forward pass reads the grid sizes from tensors, and
    :meth:`set_bits` loads another policy's bits and clips in place: a model under
    ``torch.compile`` then runs every policy with the graph compiled for the first one.
    """

    layer: nn.Conv2d | nn.Linear
    w_clip: Tensor  # buffers (typed here: register_buffer is untyped)
    assign: Tensor
    counts: Tensor
    centroids: nn.Parameter
    a_clip: nn.Parameter
    w_levels: Tensor  # with bits as tensors: 2^(w-1) - 1, and the activation grid's steps
    a_levels: Tensor

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
        self.bits_as_tensors = False
        self.w_binary, self.a_binary = self.w_bits == 1, self.a_bits == 1
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

    def hold_bits_as_tensors(self) -> None:
        """Read the grid sizes from 0-d tensor buffers (not in the state dict) from now on,
        the same values as the integer bit widths give (linear mode)."""
        if self.mode != "linear":
            raise ValueError("bits as tensors need linear mode")
        dev = self.w_clip.device
        self.register_buffer("w_levels", torch.zeros((), device=dev), persistent=False)
        self.register_buffer("a_levels", torch.zeros((), device=dev), persistent=False)
        self.bits_as_tensors = True
        self._fill_levels()

    @torch.no_grad()
    def _fill_levels(self) -> None:
        a_levels = signed_levels(self.a_bits) if self.a_signed else unsigned_levels(self.a_bits)
        self.w_levels.fill_(float(signed_levels(self.w_bits)))
        self.a_levels.fill_(float(a_levels))

    @torch.no_grad()
    def set_bits(self, w_bits: int, a_bits: int, w_clip: Tensor, a_clip: float | None) -> None:
        """Load another policy's bit widths and clips (linear mode), in place: the weights and
        everything else stay as they are."""
        if self.mode != "linear":
            raise ValueError("set_bits needs linear mode")
        self.w_bits, self.a_bits = int(w_bits), int(a_bits)
        self.w_binary, self.a_binary = self.w_bits == 1, self.a_bits == 1
        self.w_clip.copy_(w_clip)
        if self.quantize_input:
            self.a_clip.fill_(float(a_clip if a_clip else 1.0))
        if self.bits_as_tensors:
            self._fill_levels()
        self._cached_weight = self._cached_scales = None

    def quantized_weight(self) -> Tensor:
        if self.mode == "kmeans":
            return shared_weight(self.centroids, self.assign, self.counts)
        w = self.layer.weight
        clip = self.w_clip
        if clip.dim() == 1:
            clip = clip.view(-1, *([1] * (w.dim() - 1)))
        if not self.bits_as_tensors:
            return quantize_symmetric(w, self.w_bits, clip)
        if self.w_binary:  # a bool: torch.compile guards on its value, not on the bits
            return binary_weight(w, clip)
        return symmetric_grid(w, clip, self.w_levels)

    def _quantize_activation_levels(self, x: Tensor) -> Tensor:
        """The activation quantizer with bits as tensors (no host reads: compiles once)."""
        clip = self.a_clip.abs() + 1e-8
        if self.a_signed and self.a_binary:
            return binary_act(x, clip)
        if not torch.is_grad_enabled():
            return act_inference_levels(x, clip, self.a_levels, self.a_signed)
        if self.a_signed:
            return signed_pact(x, clip, self.a_levels)
        return pact(x, clip, self.a_levels)

    def quantize_activation(self, x: Tensor) -> Tensor:
        if self.bits_as_tensors:
            return self._quantize_activation_levels(x)
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
        if self.training or torch.is_grad_enabled() or self.bits_as_tensors:
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
