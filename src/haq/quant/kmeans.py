"""K-means weight sharing (Deep Compression, Han et al. 2016): the paper's model-size mode.

Each layer keeps ``2^b`` shared centroids; every weight is replaced by the centroid of its
cluster. During finetuning only the centroids are trained (the gradient of every weight in a
cluster is summed into its centroid), so weights stay tied and a layer never has more than
``2^b`` distinct values.
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
