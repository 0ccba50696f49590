"""The search environment: one episode = one pass over the layers.

Linear mode makes two decisions per layer (weight bits, then activation bits); k-means
(size) mode one (weight bits). The state of a decision is the paper's 10 numbers: the
layer's static features min-max normalised over the layers (index, is-depthwise, in channels,
out channels, stride, kernel size, #weights, input H*W), the previous action, and a flag that
is 1 for a weight decision and 0 for an activation decision.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from haq.layers import LayerSpec

STATE_DIM = 10


def action_to_bits(action: float | np.ndarray, min_bit: int, max_bit: int) -> np.ndarray:
    """Map a in [0, 1] to an integer bit so that every bit owns an equal share of [0, 1]:
    ``b = min_bit + floor(a * (max_bit - min_bit + 1))``, with a = 1 giving ``max_bit``."""
    a = np.clip(np.asarray(action, dtype=np.float64), 0.0, 1.0)
    span = max_bit - min_bit + 1
    return np.minimum(min_bit + np.floor(a * span), max_bit).astype(np.int64)


def layer_features(layers: Sequence[LayerSpec]) -> np.ndarray:
    """(L, 8) static features, each column min-max normalised to [0, 1] (0 where constant)."""
    raw = np.array(
        [
            [
                s.index,
                float(s.kind == "depthwise"),
                s.in_channels,
                s.out_channels,
                s.stride[0],
                s.kernel[0],
                s.n_weights,
                s.in_hw[0] * s.in_hw[1],
            ]
            for s in layers
        ],
        dtype=np.float64,
    )
    lo, hi = raw.min(axis=0), raw.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return (raw - lo) / span


class Episode:
    """Decision order and states of one episode; ``weights_only`` for k-means mode."""

    def __init__(self, layers: Sequence[LayerSpec], weights_only: bool = False) -> None:
        self.features = layer_features(layers)
        self.n_layers = len(layers)
        self.weights_only = weights_only
        # (layer index, is_weight) for every decision, in order
        self.decisions: list[tuple[int, bool]] = []
        for i in range(self.n_layers):
            self.decisions.append((i, True))
            if not weights_only:
                self.decisions.append((i, False))

    def __len__(self) -> int:
        return len(self.decisions)

    def state(self, step: int, prev_action: float) -> np.ndarray:
        layer, is_weight = self.decisions[step]
        return np.concatenate(
            [self.features[layer], [prev_action, 1.0 if is_weight else 0.0]]
        ).astype(np.float32)

    def actions_to_bits(
        self,
        actions: Sequence[float] | np.ndarray,
        min_bit: int,
        max_bit: int,
        default_a_bits: int = 8,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-layer (w_bits, a_bits) from an episode's actions."""
        bits = action_to_bits(np.asarray(actions), min_bit, max_bit)
        w = np.full(self.n_layers, default_a_bits, dtype=np.int64)
        a = np.full(self.n_layers, default_a_bits, dtype=np.int64)
        for (layer, is_weight), b in zip(self.decisions, bits, strict=True):
            if is_weight:
                w[layer] = b
            else:
                a[layer] = b
        return w, a
