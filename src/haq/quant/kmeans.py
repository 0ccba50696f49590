"""K-means weight sharing (Deep Compression, Han et al. 2016): the paper's model-size mode.

Each layer keeps ``2^b`` shared centroids; every weight is replaced by the centroid of its
cluster. During finetuning only the centroids are trained, so weights stay tied and a layer
never has more than ``2^b`` distinct values.

Deep Compression sums the gradients of a cluster's weights into its centroid. With a
learning rate tuned for per-weight updates (0.01 in ``haq finetune``) that sum is thousands of
times too large for a big cluster and the model collapses to chance within a few steps, so
:func:`shared_weight` averages them instead: a centroid moves as far as a typical weight of
its cluster would.
"""

from __future__ import annotations

import torch
from torch import Tensor


def kmeans_1d(values: Tensor, k: int, iterations: int = 25) -> tuple[Tensor, Tensor]:
    """(centroids (k,), assignment (values.shape, long)) of 1-D k-means with linear init
    between min and max, as Deep Compression recommends for accuracy."""
    flat = values.detach().flatten().float()
    lo, hi = float(flat.min()), float(flat.max())
    if k <= 1 or hi == lo:
        c = torch.tensor([flat.mean().item()], device=flat.device)
        return c, torch.zeros_like(flat, dtype=torch.long).view_as(values)
    centroids = torch.linspace(lo, hi, k, device=flat.device)
    for _ in range(iterations):
        bounds = (centroids[1:] + centroids[:-1]) / 2
        assign = torch.bucketize(flat, bounds)
        sums = torch.zeros(k, device=flat.device).index_add_(0, assign, flat)
        counts = torch.zeros(k, device=flat.device).index_add_(0, assign, torch.ones_like(flat))
        new = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        new, _ = torch.sort(new)
        if torch.allclose(new, centroids):
            centroids = new
            break
        centroids = new
    bounds = (centroids[1:] + centroids[:-1]) / 2
    assign = torch.bucketize(flat, bounds)
    return centroids.to(values.dtype), assign.view_as(values)


class _SharedWeight(torch.autograd.Function):
    """``centroids[assign]`` whose backward gives each centroid the *mean* gradient of its
    cluster (see the module docstring for why not the sum)."""

    @staticmethod
    def forward(ctx, centroids: Tensor, assign: Tensor, counts: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(assign, counts)
        ctx.k = centroids.shape[0]
        return centroids[assign]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        assign, counts = ctx.saved_tensors
        summed = torch.zeros(ctx.k, device=grad.device, dtype=grad.dtype)
        summed.index_add_(0, assign.flatten(), grad.flatten())
        return summed / counts.clamp(min=1).to(grad.dtype), None, None


def cluster_counts(assign: Tensor, k: int) -> Tensor:
    """Number of weights in each of the ``k`` clusters."""
    return torch.bincount(assign.flatten(), minlength=k).to(torch.float32)


def shared_weight(centroids: Tensor, assign: Tensor, counts: Tensor) -> Tensor:
    """The tied weight tensor ``centroids[assign]``, trainable through the centroids with a
    per-cluster mean gradient."""
    return _SharedWeight.apply(centroids, assign, counts)
