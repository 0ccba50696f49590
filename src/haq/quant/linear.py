"""Linear (uniform) quantizers, as in the HAQ paper's latency/energy mode.

Weights are symmetric: ``scale = clip / (2^(b-1) - 1)``, round to nearest, clamp, so a b-bit
tensor takes at most ``2^b - 1`` values. **1 bit** means binary weights ``{-c, +c}`` with
``c = mean|w|`` (the XNOR-Net scale), since a symmetric grid has no level besides 0 at 1 bit.

Activations after ReLU are unsigned in ``[0, clip]`` with ``2^b - 1`` steps (1 bit = {0, c});
activations that can be negative are quantized symmetrically like weights. Rounding uses the
straight-through estimator (STE): the forward pass rounds, the backward pass is identity
inside the clip range; the clip itself is learnable (PACT) during finetuning.

Clip choice for weights: ``max|w|`` at high bits; at low bits (``kl_below_bits``, default 5)
the threshold minimising the KL divergence between the histograms of the original and the
quantized weights (``"mse"``: minimising the squared error, ``"max"``: always max|w|).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor

WEIGHT_CLIP_METHODS = ("kl", "mse", "max")
Levels = int | Tensor  # a grid's steps: a number, or a 0-d tensor holding it (compiled runs)


def ste_round(x: Tensor) -> Tensor:
    """Round in the forward pass, identity gradient in the backward pass.

    Written as ``round(x) + (x - x.detach())`` so the forward value is exactly ``round(x)``
    (``x + (round(x) - x).detach()`` can be off by one float ulp and create extra levels).
    """
    return torch.round(x).detach() + (x - x.detach())


# The quantizers below are autograd Functions with hand-written backward passes: a few fused,
# mostly in-place kernels per quantizer instead of the dozen small ones autograd records for
# the same formula, no host synchronisation, and only tensors the network keeps anyway saved
# for the backward pass. Their values equal the plain formulas exactly and their gradients
# are what autograd gives for them (tests/test_quant_fast.py compares both on every bit width).


class _SymmetricWeight(torch.autograd.Function):
    """``clamp(round(w / s), -l, l) * s`` with straight-through rounding: the gradient is
    ``g`` where the rounded value is inside ``[-l, l]`` (written ``(g * s) / s`` as autograd
    computes it for the formula, so the two agree to the last bit)."""

    @staticmethod
    def forward(ctx: Any, w: Tensor, scale: Tensor, levels: Levels) -> Tensor:  # type: ignore[override]
        q = torch.div(w, scale).round_()
        keep = q.abs() <= levels
        ctx.save_for_backward(keep, scale)
        return q.clamp_(-levels, levels).mul_(scale)  # type: ignore[arg-type]  # number or tensor

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        keep, scale = ctx.saved_tensors
        return torch.where(keep, grad * scale, 0.0).div_(scale), None, None


class _BinaryWeight(torch.autograd.Function):
    """``sign(w) * c`` (sign(0) = +1) with the identity gradient."""

    @staticmethod
    def forward(ctx: Any, w: Tensor, clip: Tensor) -> Tensor:  # type: ignore[override]
        return torch.where(w >= 0, clip, -clip).to(w.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad, None


def signed_levels(bits: int) -> int:
    """Steps on each side of 0 of a symmetric b-bit grid (1 for 1 bit: {-c, +c})."""
    return max(1, 2 ** (bits - 1) - 1)


def unsigned_levels(bits: int) -> int:
    """Steps of an unsigned b-bit grid over ``[0, clip]``."""
    return 2**bits - 1


def quantize_symmetric(x: Tensor, bits: int, clip: Tensor) -> Tensor:
    """Fake-quantize ``x`` to a symmetric b-bit grid over ``[-clip, clip]`` (STE rounding).

    ``clip`` is a scalar tensor or broadcastable per-channel tensor; it gets no gradient (the
    weights' clips are fixed by calibration; activations use :func:`quantize_signed_act`).
    """
    if bits == 1:
        return binary_weight(x, clip)
    return symmetric_grid(x, clip, signed_levels(bits))


def binary_weight(x: Tensor, clip: Tensor) -> Tensor:
    """1-bit weights: ``sign(x) * clip`` (sign(0) = +1), identity gradient."""
    return _BinaryWeight.apply(x, clip.detach())


def symmetric_grid(x: Tensor, clip: Tensor, levels: Levels) -> Tensor:
    """:func:`quantize_symmetric` for ``b >= 2`` given its ``levels`` (``2^(b-1) - 1``), a
    number or a tensor holding it (the same values either way)."""
    clip = clip.detach()
    return _SymmetricWeight.apply(x, clip / levels, levels)


class _PACT(torch.autograd.Function):
    """PACT for unsigned inputs: ``round(clamp(x, 0, c) / s) * s`` with ``s = c / (2^b - 1)``
    and straight-through rounding.

    Gradients, as autograd gives them for that formula: ``x`` gets ``g`` where ``0 < x < c``;
    ``c`` gets ``g * (y - x) / c`` there and ``g`` where ``x >= c``. Saved for the backward
    pass: ``x`` and ``y``, tensors the surrounding layers keep anyway, so the quantizer costs
    no activation memory of its own."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, clip: Tensor, steps: Levels) -> Tensor:  # type: ignore[override]
        scale = clip / steps
        y = torch.clamp(x, torch.zeros_like(clip), clip).div_(scale).round_().mul_(scale)
        ctx.save_for_backward(x, y, clip)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:  # type: ignore[override]
        x, y, clip = ctx.saved_tensors
        inside = (x > 0) & (x < clip)
        to_clip = torch.where(inside, (y - x).div_(clip), (x >= clip).to(x.dtype))
        grad_clip = (grad * to_clip).sum().reshape(clip.shape)
        return grad * inside, grad_clip, None


class _SignedPACT(torch.autograd.Function):
    """Signed activations, ``b >= 2``: ``round(clamp(x, -c, c) / s) * s`` with
    ``s = c / (2^(b-1) - 1)``, straight-through rounding, and the clip learnt on both sides.

    The backward pass performs the very operations autograd performs for the plain formula
    ``maximum(minimum(x, c), -c)`` -> ``clamp(ste_round(xc / s), -l, l) * s``, in the same
    order, so gradients agree to the last bit (the finetune amplifies a difference in the
    last bit into visibly different accuracies); it only records a fraction of the nodes and
    keeps no tensor the network does not keep anyway."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, clip: Tensor, levels: Levels) -> Tensor:  # type: ignore[override]
        scale = clip / levels
        y = torch.clamp(x, -clip, clip).div_(scale).round_()
        y = y.clamp_(-levels, levels).mul_(scale)  # type: ignore[arg-type]  # number or tensor
        ctx.save_for_backward(x, clip)
        ctx.levels = levels
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:  # type: ignore[override]
        x, clip = ctx.saved_tensors
        levels, shape = ctx.levels, clip.shape
        scale = clip / levels
        xc = torch.clamp(x, -clip, clip)
        q = torch.div(xc, scale).round_().clamp_(-levels, levels)
        grad_t = grad * scale  # through the product, the clamp (q is inside) and the STE
        from_scale = (grad * q).sum_to_size(shape)
        from_scale = from_scale + (-grad_t * ((xc / scale) / scale)).sum_to_size(shape)
        grad_xc = grad_t / scale
        # maximum(m, -c) and minimum(x, c): an exact tie splits the gradient in halves
        m = torch.minimum(x, clip)
        g_max = torch.where(m == -clip, grad_xc / 2, grad_xc)
        from_low = -g_max.masked_fill(m > -clip, 0).sum_to_size(shape)
        g_m = g_max.masked_fill_(m < -clip, 0)
        g_min = torch.where(x == clip, g_m / 2, g_m)
        from_high = g_min.masked_fill(x < clip, 0).sum_to_size(shape)
        grad_clip = from_scale / levels + from_low + from_high
        return g_min.masked_fill_(x > clip, 0), grad_clip, None


def quantize_unsigned(x: Tensor, bits: int, clip: Tensor) -> Tensor:
    """PACT: clamp to ``[0, clip]`` (gradient flows to ``clip`` where x >= clip), then round
    to ``2^b - 1`` steps with STE."""
    return pact(x, clip, unsigned_levels(bits))


def pact(x: Tensor, clip: Tensor, steps: Levels) -> Tensor:
    """:func:`quantize_unsigned` given its ``steps`` (``2^b - 1``), a number or a tensor."""
    return _PACT.apply(x, clip, steps)


def quantize_signed_act(x: Tensor, bits: int, clip: Tensor) -> Tensor:
    """Signed activations: clamp to ``[-clip, clip]`` (PACT on both sides), symmetric grid;
    1 bit is ``sign(x) * clip``."""
    if bits == 1:
        return binary_act(x, clip)
    return signed_pact(x, clip, signed_levels(bits))


def binary_act(x: Tensor, clip: Tensor) -> Tensor:
    """Signed 1-bit activations, rare (searches start at 2 bits): the plain formula
    ``sign(clamp(x, -c, c)) * c`` with straight-through gradients."""
    x = torch.maximum(torch.minimum(x, clip), -clip)
    sign = torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))
    return (sign * clip).detach() + (x - x.detach())


def signed_pact(x: Tensor, clip: Tensor, levels: Levels) -> Tensor:
    """:func:`quantize_signed_act` for ``b >= 2`` given its ``levels`` (``2^(b-1) - 1``)."""
    return _SignedPACT.apply(x, clip, levels)


InferenceScales = tuple[float, float, Tensor | None, Tensor | None]


def inference_scales(clip: Tensor, bits: int, signed: bool) -> InferenceScales:
    """``(lo, c, steps / c, c / steps)`` of the activation quantizer in evaluation, the two
    scale factors computed in float64 and rounded to the tensor's precision once, as the
    quantizer always has (both None for signed 1-bit inputs, which become ``sign(x) * c``).
    The clamp bounds are plain numbers (read from the device once per layer and evaluation
    pass: QuantLayer caches them, never per forward), the factors 0-d tensors of the clip's
    dtype and device: a Python number would be wrapped into a new tensor and converted on
    every multiplication (measured: 1.24x -> 1.18x of fp32 for w4a4 inference here)."""
    c_t = clip.detach()
    steps = signed_levels(bits) if signed else unsigned_levels(bits)
    c64 = c_t.double()
    c = float(c64)
    lo = -c if signed else 0.0
    if signed and bits == 1:
        return lo, c, None, None
    return lo, c, (steps / c64).to(c_t.dtype), (c64 / steps).to(c_t.dtype)


def act_inference(x: Tensor, scales: InferenceScales) -> Tensor:
    """The activation quantizer without autograd (evaluation): ``round(clamp(x, lo, c) *
    (steps / c)) * (c / steps)``, in place on the clamped copy: four passes over the tensor."""
    lo, c, up, down = scales
    y = x.clamp(lo, c)
    if up is None or down is None:
        return torch.where(y >= 0, c, -c).to(x.dtype)
    return y.mul_(up).round_().mul_(down)


def act_inference_levels(x: Tensor, clip: Tensor, steps: Tensor, signed: bool) -> Tensor:
    """:func:`act_inference` with the scale factors computed on the device from ``steps`` (a
    0-d tensor, ``b >= 2``; for compiled runs): the same factors, hence the same values."""
    c = clip.detach()
    c64, s64 = c.double(), steps.double()
    up, down = (s64 / c64).to(c.dtype), (c64 / s64).to(c.dtype)
    lo = -c if signed else torch.zeros_like(c)
    return torch.clamp(x, lo, c).mul_(up).round_().mul_(down)


# --- clip selection ------------------------------------------------------------------------
def _kl_at(hist: np.ndarray, i: int, levels: int) -> float:
    """KL(P || Q) for the threshold at bin ``i`` of a histogram of |w| (the TensorRT-style
    calibration, applied to weights): P is the histogram cut at ``i`` with the clipped tail
    piled into its last bin, Q its quantization to ``levels`` groups."""
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
    return float(np.sum(ps[mask] * np.log(ps[mask] / np.maximum(qs[mask], 1e-12))))


# _kl_at of a threshold with every count above it: P is all in its last bin and Q is empty,
# whatever the histogram (computed by _kl_at itself, so the bits are the same)
_KL_ALL_CLIPPED = _kl_at(np.array([0.0, 1.0]), 1, 1)


def _mse_at(abs_w: np.ndarray, c: float, steps: int) -> float:
    """Mean squared error of quantizing |w| with clip ``c`` and ``steps`` levels."""
    s = c / steps
    return float(np.mean((np.minimum(np.round(abs_w / s), steps) * s - abs_w) ** 2))


def _kl_scores(hist: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """``_kl_at`` for every candidate threshold bin, for a batch of histograms at once
    (rows of ``hist``): the candidates and the scores (rows x candidates).

    Same quantity, rearranged to cost O(rows x levels) per candidate instead of O(rows x
    bins): with counts h, P = all counts, Q = the counts below the threshold and a group's
    ``q_g = mass_g / nonzero_g``, the bins below the last one add
    ``(sum h log h + H (log Q - log P) - sum_g mass_g log q_g) / P``; the last bin (which
    also takes the clipped tail) is added on its own. Prefix sums of the integer counts are
    exact; the result differs from the bin-by-bin sum by rounding only (about 1e-15).
    """
    rows, n_bins = hist.shape
    levels = signed_levels(bits)
    start = max(levels, n_bins // 16)
    cands = np.arange(start, n_bins + 1, max(1, (n_bins - start) // 96))
    zero = np.zeros((rows, 1))
    counts = np.concatenate([zero, np.cumsum(hist, axis=1)], axis=1)
    filled = np.concatenate([zero, np.cumsum(hist > 0, axis=1, dtype=np.float64)], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        hlogh = np.where(hist > 0, hist * np.log(hist), 0.0)
    hlogh_cum = np.concatenate([zero, np.cumsum(hlogh, axis=1)], axis=1)
    total = counts[:, -1]
    scores = np.empty((rows, len(cands)))
    for k, i in enumerate(cands):
        bounds = (np.arange(levels + 1) * i + levels - 1) // levels
        mass = counts[:, bounds[1:]] - counts[:, bounds[:-1]]
        nonzero = filled[:, bounds[1:]] - filled[:, bounds[:-1]]
        with np.errstate(divide="ignore", invalid="ignore"):
            q_group = np.where(mass > 0, mass / np.maximum(nonzero, 1), 1.0)
            below = counts[:, i]
            body = (
                hlogh_cum[:, i]
                + below * (np.log(below) - np.log(total))
                - (mass * np.log(q_group)).sum(axis=1)
            ) / total
            # the last bin: remove its plain term, add it with the clipped tail piled in
            h_last = hist[:, i - 1]
            q_last = np.where(h_last > 0, q_group[:, -1], 0.0)
            plain = np.where(
                h_last > 0, h_last / total * np.log(h_last * below / (total * q_last)), 0.0
            )
            p_last = (h_last + total - below) / total
            piled = p_last * np.log(p_last / np.maximum(q_last / below, 1e-12))
            score = body - plain + np.where(p_last > 0, piled, 0.0)
        # nothing below the threshold (a row of a few weights, all above it): the formula
        # divides 0 by 0, the one-row score is a constant
        scores[:, k] = np.where(below > 0, score, _KL_ALL_CLIPPED)
    return cands, scores


def _mse_scores(rows: np.ndarray, tops: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """``_mse_at`` for the 40 candidate clips, for many rows at once."""
    steps = signed_levels(bits)
    ratios = np.linspace(0.2, 1.0, 40)
    clips = tops[:, None] * ratios[None, :]
    scores = np.empty(clips.shape)
    with np.errstate(divide="ignore", invalid="ignore"):  # all-zero rows: not used
        for k in range(len(ratios)):
            s = clips[:, k : k + 1] / steps
            scores[:, k] = np.mean((np.minimum(np.round(rows / s), steps) * s - rows) ** 2, axis=1)
    return clips, scores


def _exact_kl(counts: np.ndarray, cands: np.ndarray, levels: int, k: int) -> float:
    """The exact KL score of candidate ``k`` (a clip at bin ``cands[k]``)."""
    return _kl_at(counts, int(cands[k]), levels)


def _first_min(scores: np.ndarray, exact: Callable[[int], float]) -> int | None:
    """The candidate the one-row search picks (the first strict minimum of the ``exact``
    scores), from approximate ``scores``: only candidates within rounding of the best are
    scored exactly (all of them if any score is not finite). None if no score is finite."""
    finite = np.isfinite(scores)
    if finite.all():
        low = scores.min()
        band = np.flatnonzero(scores <= low + 1e-9 * abs(low) + 1e-10)
        if len(band) == 1:
            return int(band[0])
    else:
        band = np.arange(len(scores))
    best, pick = np.inf, None
    for k in band:
        value = exact(int(k))
        if value < best:
            best, pick = value, int(k)
    return pick


def _row_histograms(rows: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.histogram(row, n_bins, range=(0, row.max()))`` of many rows (each with a positive
    max) at once: the counts (float64) and the edges, both the same to the last bit. The edges
    are ``np.linspace``'s; a value lies in bin k when ``edges[k] <= v < edges[k + 1]`` (the
    last bin closed), found as numpy finds it (an estimate, then one step down or up)."""
    tops = rows.max(axis=1)
    if np.any(tops / n_bins == 0.0):  # a subnormal max: linspace takes another formula
        pairs = [np.histogram(r, bins=n_bins, range=(0.0, r.max())) for r in rows]
        return np.asarray([h for h, _ in pairs], dtype=np.float64), np.asarray(
            [e for _, e in pairs]
        )
    edges = np.linspace(0.0, tops, n_bins + 1, axis=1)
    idx = np.minimum((rows / tops[:, None] * n_bins).astype(np.intp), n_bins - 1)
    idx -= rows < np.take_along_axis(edges, idx, axis=1)
    idx += (rows >= np.take_along_axis(edges, idx + 1, axis=1)) & (idx != n_bins - 1)
    idx += n_bins * np.arange(len(rows))[:, None]
    counts = np.bincount(idx.ravel(), minlength=len(rows) * n_bins).reshape(len(rows), n_bins)
    return counts.astype(np.float64), edges


def _first_mins(scores: np.ndarray, exact: Callable[[int, int], float]) -> list[int | None]:
    """:func:`_first_min` of every row of ``scores`` (``exact(row, k)``): the rows with a
    single finite best found at once, the others one by one."""
    finite = np.isfinite(scores).all(axis=1)
    low = scores.min(axis=1, keepdims=True)
    in_band = scores <= low + 1e-9 * np.abs(low) + 1e-10
    picks: list[int | None] = np.argmax(in_band, axis=1).tolist()
    for j in np.flatnonzero(~finite | (in_band.sum(axis=1) > 1)):
        picks[j] = _first_min(scores[j], partial(exact, int(j)))
    return picks


def _kl_clips(rows: np.ndarray, bits: Iterable[int], n_bins: int = 512) -> dict[int, list[float]]:
    """KL weight clips of many rows of |w| at once, for each of ``bits`` (0 for an all-zero
    row), equal to scoring each row's candidate thresholds on its own, in order, and keeping
    the first minimum: rows whose best candidate is within rounding of another are settled by
    ``_kl_at``. The histograms are made once for all bit widths."""
    live = np.flatnonzero(rows.max(axis=1) > 0.0)
    out = {b: [0.0] * len(rows) for b in bits}
    if len(live) == 0:
        return out
    hists, edges = _row_histograms(rows[live], n_bins)
    for b, clips in out.items():
        cands, scores = _kl_scores(hists, b)

        def exact(
            j: int, k: int, cands: np.ndarray = cands, levels: int = signed_levels(b)
        ) -> float:
            return _exact_kl(hists[j], cands, levels, k)

        for j, pick in enumerate(_first_mins(scores, exact)):
            clips[live[j]] = float(edges[j, cands[pick] if pick is not None else n_bins])
    return out


def _mse_clips(rows: np.ndarray, bits: int) -> list[float]:
    """MSE weight clips of many rows of |w| at once, settled like ``_kl_clips``."""
    steps = signed_levels(bits)
    live = np.flatnonzero(rows.max(axis=1) > 0.0)
    out = [0.0] * len(rows)
    if len(live) == 0:
        return out
    some = rows[live]
    clips, scores = _mse_scores(some, some.max(axis=1), bits)

    def exact(j: int, k: int) -> float:
        return _mse_at(some[j], float(clips[j, k]), steps)

    for j, pick in enumerate(_first_mins(scores, exact)):
        out[live[j]] = float(clips[j, pick] if pick is not None else some[j].max())
    return out


# the clip of an all-zero weight row at 2 bits and more: any positive value quantizes it to the
# same zeros; this one is the least scale torch's own observers use (float32's eps)
ZERO_ROW_CLIP = float(torch.finfo(torch.float32).eps)


def weight_clips(
    w: Tensor, bits: Iterable[int], method: str = "kl", per_channel: bool = False,
    kl_below_bits: int = 5,
) -> dict[int, Tensor]:  # fmt: skip
    """:func:`weight_clip` for several bit widths at once (the KL histograms made once)."""
    if method not in WEIGHT_CLIP_METHODS:
        raise ValueError(f"unknown weight clip method {method!r}; valid: {WEIGHT_CLIP_METHODS}")
    rows = (
        w.detach().abs().reshape(w.shape[0], -1) if per_channel else w.detach().abs().reshape(1, -1)
    )
    rows_np = rows.cpu().double().numpy()
    widths = sorted(set(bits))
    searched = [b for b in widths if 1 < b < kl_below_bits] if method != "max" else []
    clips = _kl_clips(rows_np, searched) if method == "kl" else {}
    for b in widths:
        if b == 1:
            clips[b] = [float(r.mean()) for r in rows_np]
        elif b not in searched:
            clips[b] = rows_np.max(axis=1).tolist()
        elif method == "mse":
            clips[b] = _mse_clips(rows_np, b)
    out = {b: torch.tensor(clips[b], dtype=w.dtype, device=w.device) for b in widths}
    for b in widths:  # an all-zero row (a pruned layer or channel): w / (0 / levels) is NaN
        if b > 1:
            out[b] = torch.where(out[b] > 0, out[b], ZERO_ROW_CLIP)
    return out if per_channel else {b: c[0] for b, c in out.items()}


def weight_clip(
    w: Tensor, bits: int, method: str = "kl", per_channel: bool = False, kl_below_bits: int = 5
) -> Tensor:
    """The clip value(s) for a weight tensor: shape () per tensor, (out_channels,) per channel.

    Never exceeds max|w| (per tensor or per channel), except for an all-zero tensor or channel
    (pruned): :data:`ZERO_ROW_CLIP`, not 0, at 2 bits and more. The KL and MSE searches run
    for all channels at once.
    """
    return weight_clips(w, [bits], method, per_channel, kl_below_bits)[bits]


def activation_clips(sample: Tensor, bits: Iterable[int], signed: bool) -> dict[int, float]:
    """Calibrated clips for activations, one per bit width: the candidate (quantiles and
    fractions of the max of |x|) with the least squared quantization error on a calibration
    sample (the sample sorted and the candidates made once for all bit widths)."""
    a = sample.detach().abs().double().flatten()
    if a.numel() == 0 or float(a.max()) == 0.0:
        return dict.fromkeys(bits, 1.0)
    a_np = np.sort(a.cpu().numpy())
    top = a_np[-1]
    qs = np.quantile(a_np, [0.99, 0.995, 0.999, 0.9995, 0.9999])
    cands = [c for c in np.unique(np.concatenate([qs, top * np.linspace(0.1, 1.0, 19)])) if c > 0]
    out = {}
    for b in bits:
        steps = signed_levels(b) if signed else unsigned_levels(b)
        best, best_c = np.inf, top
        for c in cands:
            s = c / steps
            err = np.mean((np.minimum(np.round(a_np / s), steps) * s - a_np) ** 2)
            if err < best:
                best, best_c = err, c
        out[b] = float(best_c)
    return out


def activation_clip(sample: Tensor, bits: int, signed: bool) -> float:
    """Calibrated clip for activations (:func:`activation_clips` of one bit width)."""
    return activation_clips(sample, [bits], signed)[bits]
