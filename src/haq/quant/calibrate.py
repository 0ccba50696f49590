"""Policy-independent statistics of a full-precision model, computed once and reused.

The search quantizes the same pretrained model hundreds of times with different bits. What
does not depend on the bits is computed once here: the quantizable layers, a sample of each
layer's input activations on calibration data (from the full-precision model), whether those
inputs can be negative, and which layer reads the network input. Clip values per
(layer, bits) are cached, so quantizing a new policy costs a copy of the model and a few
dictionary look-ups.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from haq.data import check_batches
from haq.errors import HaqError
from haq.layers import LayerSpec, extract_layers
from haq.quant.kmeans import kmeans_1d
from haq.quant.linear import activation_clip, activation_clips, weight_clip, weight_clips


class Calibration:
    """Activation samples and clip caches of one full-precision model."""

    def __init__(
        self,
        model: nn.Module,
        loader: Iterable[tuple[Tensor, Tensor]],
        batches: int = 2,
        max_samples: int = 20000,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.samples: dict[str, Tensor] = {}
        self.signed: dict[str, bool] = {}
        self.reads_network_input: dict[str, bool] = {}
        self._act_cache: dict[tuple[str, int], float] = {}
        self._w_cache: dict[tuple[str, int, str, bool], Tensor] = {}
        self._km_cache: dict[tuple[str, int], tuple[Tensor, Tensor]] = {}
        check_batches(loader, "calibration")
        first = next(iter(loader), None)
        if first is None:
            raise HaqError("calibration data is empty")
        self.input_shape = tuple(int(d) for d in first[0].shape[1:])
        self.layers: list[LayerSpec] = extract_layers(model, self.input_shape)
        self.layer_names = [s.name for s in self.layers]
        self._collect(loader, batches, max_samples, seed)

    def _collect(
        self, loader: Iterable[tuple[Tensor, Tensor]], batches: int, max_samples: int, seed: int
    ) -> None:
        modules = dict(self.model.named_modules())
        gen = torch.Generator().manual_seed(seed)
        chunks: dict[str, list[Tensor]] = {n: [] for n in self.layer_names}
        mins: dict[str, float] = {n: 0.0 for n in self.layer_names}
        current: dict[str, Tensor] = {}
        per_batch = max(1, max_samples // max(1, batches))

        def hook(name: str):
            def fn(_m: nn.Module, inputs: tuple[Tensor, ...], _out: Tensor) -> None:
                self.reads_network_input.setdefault(name, inputs[0] is current["x"])
                x = inputs[0].detach()
                flat = x.flatten()
                mins[name] = min(mins[name], float(flat.min()))
                idx = torch.randint(0, flat.numel(), (min(per_batch, flat.numel()),), generator=gen)
                chunks[name].append(flat[idx.to(flat.device)].float().cpu())

            return fn

        handles = [modules[n].register_forward_hook(hook(n)) for n in self.layer_names]
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        try:
            with torch.no_grad():
                for i, (x, _) in enumerate(loader):
                    if i >= batches:
                        break
                    current["x"] = x.to(device)
                    self.model(current["x"])
        finally:
            for h in handles:
                h.remove()
            self.model.train(was_training)
        for n in self.layer_names:
            self.samples[n] = torch.cat(chunks[n])
            self.signed[n] = mins[n] < 0.0

    def prepare(self, bits: Iterable[int], weight_clip: str, per_channel: bool) -> None:
        """Compute every layer's activation and weight clips for ``bits`` now, each layer's
        for all bit widths at once (a search sets them up before its first evaluation, so no
        episode pays for a first use)."""
        modules = dict(self.model.named_modules())
        widths = list(bits)
        for name in self.layer_names:
            weight = modules[name].weight  # type: ignore[union-attr]
            todo = [b for b in widths if (name, b) not in self._act_cache]
            if todo:
                found = activation_clips(self.samples[name], todo, self.signed[name])
                self._act_cache.update({(name, b): clip for b, clip in found.items()})
            todo = [b for b in widths if (name, b, weight_clip, per_channel) not in self._w_cache]
            if todo:
                clips = weight_clips(weight, todo, weight_clip, per_channel)  # type: ignore[arg-type]
                for b, w_clip in clips.items():
                    self._w_cache[(name, b, weight_clip, per_channel)] = w_clip

    def act_clip(self, name: str, bits: int) -> float:
        key = (name, bits)
        if key not in self._act_cache:
            self._act_cache[key] = activation_clip(self.samples[name], bits, self.signed[name])
        return self._act_cache[key]

    def weight_clip(
        self, name: str, weight: Tensor, bits: int, method: str, per_channel: bool
    ) -> Tensor:
        key = (name, bits, method, per_channel)
        if key not in self._w_cache:
            self._w_cache[key] = weight_clip(weight, bits, method, per_channel)
        return self._w_cache[key]

    def kmeans(self, name: str, weight: Tensor, bits: int) -> tuple[Tensor, Tensor]:
        """Centroids and the (long) assignment of ``weight`` to them, computed once per layer
        and bit width. The cache keeps assignments as uint8 on the CPU (at most 256 centroids):
        an eighth of int64's memory (ResNet-50, 7 bit widths: about 0.18 GB, not 1.4 GB)."""
        key = (name, bits)
        if key not in self._km_cache:
            centroids, assign = kmeans_1d(weight, 2**bits)
            self._km_cache[key] = (centroids, assign.to("cpu", torch.uint8))
        centroids, small = self._km_cache[key]
        return centroids, small.to(weight.device, torch.long)
