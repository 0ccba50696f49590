"""``haq.quantize``: one verb that turns any model and a bit policy into a quantized copy."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path

from torch import Tensor, nn

from haq.errors import HaqError
from haq.policy import MODES, Policy, policy_arg, policy_for
from haq.quant.calibrate import Calibration
from haq.quant.modules import QuantLayer


def quantize(
    model: nn.Module,
    policy: Policy | str | Path,
    mode: str | None = None,
    calibration: Calibration | Iterable[tuple[Tensor, Tensor]] | None = None,
    per_channel: bool = False,
    weight_clip: str = "kl",
) -> nn.Module:
    """A quantized copy of ``model`` following ``policy`` (a :class:`Policy`, ``"w4a4"`` for
    every layer, or a policy file); ``model`` itself is never changed.

    ``mode`` is ``"linear"`` (weights and activations, the paper's latency/energy mode) or
    ``"kmeans"`` (weights only, the size mode); by default the policy's own mode.
    ``calibration`` is a loader of (images, labels) batches or a :class:`Calibration` built
    once and reused (what the search does: quantizing a new policy then takes milliseconds).
    """
    if mode is not None and mode not in MODES:
        raise HaqError(f"unknown quantization mode {mode!r}; valid: {', '.join(MODES)}")
    read = policy_arg(policy, mode or "linear") if isinstance(policy, str | Path) else policy
    if calibration is None:
        raise HaqError("quantize needs calibration data: a loader of a few training batches")
    calib = calibration if isinstance(calibration, Calibration) else Calibration(model, calibration)
    if calib.model is not model:
        raise HaqError("the Calibration was built for another model")
    policy = policy_for(read, calib.layer_names)
    mode = mode or policy.mode  # a Policy's own mode is one of MODES
    qmodel = copy.deepcopy(model)
    originals = dict(model.named_modules())
    for name, w_bits, a_bits in zip(policy.names, policy.w_bits, policy.a_bits, strict=True):
        weight = originals[name].weight  # type: ignore[union-attr]
        q = quant_layer(
            _get(qmodel, name), name, weight, w_bits, a_bits, mode, calib, per_channel, weight_clip
        )
        set_layer(qmodel, name, q)
    qmodel.train(model.training)
    return qmodel


class Requantizer:
    """One quantized copy of ``model`` that takes policy after policy in place (linear mode):
    :meth:`load` restores the full-precision weights and statistics and sets the new bits and
    clips. The layers hold their bits as tensors, so a model compiled with ``torch.compile``
    for the first policy runs every later one without compiling again (a layer switching to
    or from 1 bit does compile again: a different formula). The values equal those of
    :func:`quantize` for the same policy."""

    def __init__(
        self,
        model: nn.Module,
        calibration: Calibration,
        per_channel: bool = False,
        weight_clip: str = "kl",
    ) -> None:
        self.calibration, self.per_channel, self.weight_clip = calibration, per_channel, weight_clip
        self.originals = dict(model.named_modules())
        names = calibration.layer_names
        start = Policy(names, [8] * len(names), [8] * len(names), mode="linear")
        self.model = quantize(
            model, start, calibration=calibration, per_channel=per_channel, weight_clip=weight_clip
        )
        self.layers = {n: m for n, m in self.model.named_modules() if isinstance(m, QuantLayer)}
        for layer in self.layers.values():
            layer.hold_bits_as_tensors()
        self._pristine = {k: v.clone() for k, v in self.model.state_dict().items()}

    def load(self, policy: Policy) -> nn.Module:
        """The model, set to ``policy`` with the pretrained weights (finetuning changed them)."""
        if policy.mode != "linear":
            raise HaqError("a reused (compiled) quantized model takes linear-mode policies only")
        policy.check_layers(self.calibration.layer_names)
        self.model.load_state_dict(self._pristine)
        calib = self.calibration
        for name, w_bits, a_bits in zip(policy.names, policy.w_bits, policy.a_bits, strict=True):
            weight = self.originals[name].weight  # type: ignore[union-attr]
            clip = calib.weight_clip(name, weight, w_bits, self.weight_clip, self.per_channel)
            self.layers[name].set_bits(w_bits, a_bits, clip, calib.act_clip(name, a_bits))
        return self.model


def quant_layer(
    layer: nn.Conv2d | nn.Linear,
    name: str,
    weight: Tensor,
    w_bits: int,
    a_bits: int,
    mode: str,
    calib: Calibration,
    per_channel: bool = False,
    weight_clip: str = "kl",
    quantize_input: bool = True,
) -> QuantLayer:
    """The quantized wrapper of one layer, with clips (or centroids) from ``calib`` computed on
    the full-precision ``weight``. ``quantize_input=False`` keeps its input in float."""
    if mode == "kmeans":
        centroids, assign = calib.kmeans(name, weight, w_bits)
        return QuantLayer(layer, w_bits, a_bits, "kmeans", centroids=centroids, assign=assign)
    return QuantLayer(
        layer,
        w_bits,
        a_bits,
        "linear",
        w_clip=calib.weight_clip(name, weight, w_bits, weight_clip, per_channel),
        a_clip=calib.act_clip(name, a_bits),
        a_signed=calib.signed[name],
        quantize_input=quantize_input and not calib.reads_network_input.get(name, False),
    )


def _get(model: nn.Module, name: str) -> nn.Conv2d | nn.Linear:
    module = model.get_submodule(name)
    if not isinstance(module, (nn.Conv2d, nn.Linear)):
        raise HaqError(f"layer {name!r} is a {type(module).__name__}, not Conv2d/Linear")
    return module


def set_layer(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule ``name`` of ``model`` is."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
