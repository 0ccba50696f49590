"""The quantizers and clip searches as they were before the fast path (issue 32), kept
verbatim as the reference the fast ones are compared against: the same quantized values, the
same gradients, the same clips. Not used by haq itself."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

WEIGHT_CLIP_METHODS = ("kl", "mse", "max")


def ste_round(x: Tensor) -> Tensor:
    """Round in the forward pass, identity gradient in the backward pass.

    Written as ``round(x) + (x - x.detach())`` so the forward value is exactly ``round(x)``
    (``x + (round(x) - x).detach()`` can be off by one float ulp and create extra levels).
    """
    return torch.round(x).detach() + (x - x.detach())


def quantize_symmetric(x: Tensor, bits: int, clip: Tensor) -> Tensor:
    """Fake-quantize ``x`` to a symmetric b-bit grid over ``[-clip, clip]`` (STE rounding).

    ``clip`` is a scalar tensor or broadcastable per-channel tensor.
    """
    if bits == 1:
        sign = torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))
        return (sign * clip).detach() + (x - x.detach())
    levels = 2 ** (bits - 1) - 1
    scale = clip / levels
    q = torch.clamp(ste_round(x / scale), -levels, levels)
    return q * scale


class _PACT(torch.autograd.Function):
    """``round(clamp(x, 0, c) / s) * s`` with ``s = c / (2^b - 1)`` and straight-through
    rounding, keeping only ``x`` for the backward pass (autograd through the same formula keeps
    four more activation-sized tensors: 11 GB for a batch of 64 of MobileNet-V2 at 224x224).

    Gradients, as autograd gives them for that formula: ``x`` gets ``g`` where ``0 < x < c``;
    ``c`` gets ``g`` where ``x >= c`` and ``g * (y - x) / c`` where ``0 < x < c``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, clip: Tensor, bits: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, clip)
        ctx.bits = bits
        scale = clip / (2**bits - 1)
        return torch.minimum(x.clamp(min=0.0), clip).div_(scale).round_().mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:  # type: ignore[override]
        x, clip = ctx.saved_tensors
        scale = clip / (2**ctx.bits - 1)
        inside = (x > 0) & (x < clip)
        y = x.clamp(min=0.0).div_(scale).round_().mul_(scale)
        to_clip = torch.where(inside, (y - x) / clip, (x >= clip).to(x.dtype))
        grad_clip = (grad * to_clip).sum().reshape(clip.shape)
        return grad * inside, grad_clip, None


def quantize_unsigned(x: Tensor, bits: int, clip: Tensor) -> Tensor:
    """PACT: clamp to ``[0, clip]`` (gradient flows to ``clip`` where x >= clip), then round
    to ``2^b - 1`` steps with STE."""
    return _PACT.apply(x, clip, bits)


def quantize_signed_act(x: Tensor, bits: int, clip: Tensor) -> Tensor:
    """Signed activations: clamp to ``[-clip, clip]`` (PACT on both sides), symmetric grid."""
    x = torch.maximum(torch.minimum(x, clip), -clip)
    return quantize_symmetric(x, bits, clip)


# --- clip selection ------------------------------------------------------------------------
def _kl_clip(abs_w: np.ndarray, bits: int, n_bins: int = 512) -> float:
    """Threshold on |w| minimising KL(P || Q) between the clipped histogram P and its
    quantized version Q (the TensorRT-style calibration, applied to weights)."""
    top = float(abs_w.max())
    if top == 0.0:
        return 0.0
    hist, edges = np.histogram(abs_w, bins=n_bins, range=(0.0, top))
    hist = hist.astype(np.float64)
    levels = max(1, 2 ** (bits - 1) - 1)
    best_kl, best_i = np.inf, n_bins
    start = max(levels, n_bins // 16)
    for i in range(start, n_bins + 1, max(1, (n_bins - start) // 96)):
        p = hist[:i].copy()
        p[i - 1] += hist[i:].sum()
        # quantize the i bins into `levels` groups, spreading each group's mass over its
        # non-empty bins
        groups = np.minimum((np.arange(i) * levels) // i, levels - 1)
        mass = np.bincount(groups, weights=hist[:i], minlength=levels)
        nonzero = np.bincount(groups, weights=(hist[:i] > 0).astype(np.float64), minlength=levels)
        # Q is the quantized *slice* without the clipped outliers: the outlier mass that P
        # piles into its last bin is what clipping costs
        q = np.where(hist[:i] > 0, mass[groups] / np.maximum(nonzero[groups], 1), 0.0)
        ps, qs = p / p.sum(), q / max(q.sum(), 1e-12)
        mask = ps > 0
        kl = float(np.sum(ps[mask] * np.log(ps[mask] / np.maximum(qs[mask], 1e-12))))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return float(edges[best_i])


def _mse_clip(abs_w: np.ndarray, bits: int, signed: bool = True) -> float:
    """Threshold minimising the squared quantization error, over 40 fractions of max|w|."""
    top = float(abs_w.max())
    if top == 0.0:
        return 0.0
    steps = (2 ** (bits - 1) - 1) if signed else (2**bits - 1)
    steps = max(steps, 1)
    ratios = np.linspace(0.2, 1.0, 40)
    best, best_c = np.inf, top
    for r in ratios:
        c = top * r
        s = c / steps
        err = np.mean((np.minimum(np.round(abs_w / s), steps) * s - abs_w) ** 2)
        if err < best:
            best, best_c = err, c
    return float(best_c)


def weight_clip(
    w: Tensor, bits: int, method: str = "kl", per_channel: bool = False, kl_below_bits: int = 5
) -> Tensor:
    """The clip value(s) for a weight tensor: shape () per tensor, (out_channels,) per channel.

    Never exceeds max|w| (per tensor or per channel).
    """
    if method not in WEIGHT_CLIP_METHODS:
        raise ValueError(f"unknown weight clip method {method!r}; valid: {WEIGHT_CLIP_METHODS}")
    rows = (
        w.detach().abs().reshape(w.shape[0], -1) if per_channel else w.detach().abs().reshape(1, -1)
    )
    rows_np = rows.cpu().double().numpy()
    clips = []
    for r in rows_np:
        if bits == 1:
            clips.append(float(r.mean()))
        elif method == "max" or bits >= kl_below_bits:
            clips.append(float(r.max()))
        elif method == "kl":
            clips.append(_kl_clip(r, bits))
        else:
            clips.append(_mse_clip(r, bits))
    out = torch.tensor(clips, dtype=w.dtype, device=w.device)
    return out if per_channel else out[0]


def activation_clip(sample: Tensor, bits: int, signed: bool) -> float:
    """Calibrated clip for activations: the candidate (quantiles and fractions of the max of
    |x|) with the least squared quantization error on a calibration sample."""
    a = sample.detach().abs().double().flatten()
    if a.numel() == 0 or float(a.max()) == 0.0:
        return 1.0
    a_np = np.sort(a.cpu().numpy())
    top = a_np[-1]
    qs = np.quantile(a_np, [0.99, 0.995, 0.999, 0.9995, 0.9999])
    cands = np.unique(np.concatenate([qs, top * np.linspace(0.1, 1.0, 19)]))
    steps = (2 ** (bits - 1) - 1) if signed else (2**bits - 1)
    steps = max(steps, 1)
    best, best_c = np.inf, top
    for c in cands:
        if c <= 0:
            continue
        s = c / steps
        err = np.mean((np.minimum(np.round(a_np / s), steps) * s - a_np) ** 2)
        if err < best:
            best, best_c = err, c
    return float(best_c)


def quantize_activation(x: Tensor, a_clip: Tensor, a_bits: int, a_signed: bool) -> Tensor:
    """QuantLayer.quantize_activation as it was (``self`` replaced by the arguments)."""
    clip = a_clip.abs() + 1e-8
    if not torch.is_grad_enabled():  # inference: the same values, in place, 4 passes
        c = float(clip)
        if a_signed:
            steps = max(2 ** (a_bits - 1) - 1, 1)
            y = x.clamp(-c, c)
            if a_bits == 1:
                return torch.where(y >= 0, c, -c).to(x.dtype)
        else:
            steps = 2**a_bits - 1
            y = x.clamp(0.0, c)
        return y.mul_(steps / c).round_().mul_(c / steps)
    if a_signed:
        return quantize_signed_act(x, a_bits, clip)
    return quantize_unsigned(x, a_bits, clip)


def quantized_weight(w: Tensor, w_clip: Tensor, w_bits: int) -> Tensor:
    """QuantLayer.quantized_weight as it was, linear mode."""
    clip = w_clip
    if clip.dim() == 1:
        clip = clip.view(-1, *([1] * (w.dim() - 1)))
    return quantize_symmetric(w, w_bits, clip)
