"""Per-layer sensitivity to quantization: the accuracy-loss proxy the ``ilp`` and ``greedy``
strategies plan on (in the spirit of HAWQ-V3 and of the mixed-precision searches of other
toolkits, but measured directly instead of through a Hessian).

For every free layer and every bit width b in ``min_bit..max_bit`` the full-precision network
is run on a fixed batch of training images with only that one layer quantized, and the
sensitivity is the mean KL divergence (nats per image) of its output distribution from the
full-precision one:

- ``weights[i, b-1]``: layer i's weights at b bits, its input in float;
- ``acts[i, b-1]``: layer i's input at b bits (its weights at 8 bits).

The planners score a layer at (w, a) as ``weights[i, w-1] + acts[i, a-1]``: the effects of
different layers and of the two operands are taken as additive, which is what makes the
problem an integer program. Why KL and not the loss: it is never negative, needs no labels,
and is far less noisy on a small batch (the loss of a slightly perturbed model can go down by
chance). Pinned layers are not measured (their bits are fixed); neither is the input of a
layer that reads the image, which is never re-quantized.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from haq.data import first_images
from haq.evaluation import EvalSetup
from haq.quant.api import quant_layer, set_layer
from haq.search.replay import PrefixReplay
from haq.textfmt import progress_bar
from haq.train import pick_device


@dataclass
class Sensitivity:
    """Measured sensitivities, [L, 8] each, indexed ``[layer, bits-1]`` (0 where not measured)."""

    weights: np.ndarray
    acts: np.ndarray
    passes: int  # forward passes of the sensitivity batch
    seconds: float

    def pair_table(self, act_weight: float = 1.0) -> np.ndarray:
        """[L, 8, 8] planned score of every (w, a) pair:
        ``weights[:, w-1] + act_weight * acts[:, a-1]``."""
        return self.weights[:, :, None] + act_weight * self.acts[:, None, :]

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": self.weights.tolist(),
            "acts": self.acts.tolist(),
            "passes": self.passes,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sensitivity:
        return cls(np.array(d["weights"]), np.array(d["acts"]), d["passes"], d["seconds"])


def _jobs(
    n: int, bits: range, pinned_w: np.ndarray, pinned_a: np.ndarray, weights_only: bool
) -> list[tuple[int, str, int]]:
    """(layer, 'w' or 'a', bits) of every measurement."""
    jobs = []
    for i in range(n):
        if pinned_w[i] == 0:
            jobs += [(i, "w", b) for b in bits]
        if not weights_only and pinned_a[i] == 0:
            jobs += [(i, "a", b) for b in bits]
    return jobs


@torch.no_grad()
def measure_sensitivity(
    setup: EvalSetup,
    mode: str,
    bits: range,
    pinned_w: np.ndarray,
    pinned_a: np.ndarray,
    images: int = 256,
    progress: bool = True,
) -> Sensitivity:
    """Sensitivity of every free layer at every bit width in ``bits`` (see the module doc),
    on the first ``images`` images of the setup's finetune subset (training images)."""
    t0 = time.perf_counter()
    model, calib = setup.model, setup.calibration
    dev = pick_device(setup.device)
    model.to(dev).eval()
    x = first_images(setup.finetune_data, images).to(dev)
    replay = PrefixReplay(model, x)
    log_p = F.log_softmax(replay.output.float(), dim=1)
    p = log_p.exp()
    names = calib.layer_names
    modules = dict(model.named_modules())
    weights_only = mode == "kmeans"
    out = {"w": np.zeros((len(names), 8)), "a": np.zeros((len(names), 8))}
    jobs = [
        job
        for job in _jobs(len(names), bits, pinned_w, pinned_a, weights_only)
        if job[1] == "w" or not calib.reads_network_input.get(names[job[0]], False)
    ]  # the image is never re-quantized: no activation sensitivity for a layer reading it
    for i, operand, b in progress_bar(jobs, desc="sensitivity", leave=False, disable=not progress):
        name = names[i]
        layer = modules[name]
        weight = layer.weight  # type: ignore[union-attr]
        trainable = weight.requires_grad  # k-means wrappers freeze the wrapped weight
        w_bits, a_bits = (b, 8) if operand == "w" else (8, b)
        q = quant_layer(
            layer,
            name,
            weight,  # type: ignore[arg-type]
            w_bits,
            a_bits,
            mode,
            calib,
            setup.quant.per_channel,
            setup.quant.weight_clip,
            quantize_input=operand == "a",
        )
        set_layer(model, name, q.to(dev))
        try:
            log_q = F.log_softmax(replay.run(name, lambda: model(x)).float(), dim=1)
        finally:
            set_layer(model, name, layer)
            weight.requires_grad_(trainable)
        out[operand][i, b - 1] = float((p * (log_p - log_q)).sum(1).mean())
    return Sensitivity(out["w"], out["a"], len(jobs) + 1, time.perf_counter() - t0)
