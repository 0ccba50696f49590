"""Find the quantizable layers of any ``nn.Module`` by running it once with hooks.

:class:`LayerSpec` is plain data (no torch import at module level) so the numpy cost models
can use it without PyTorch; :func:`extract_layers` needs torch and imports it lazily.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from haq.errors import HaqError

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class LayerSpec:
    """Shape facts of one quantizable layer, for one input sample.

    ``kind`` is one of ``conv`` (dense KxK), ``pointwise`` (dense 1x1), ``depthwise``
    (groups == in_channels), ``grouped`` (other grouped convs) or ``linear``. For a linear
    layer ``in_hw`` is ``(1, positions)`` where ``positions`` counts the rows it is applied to
    per sample (1 for a classifier). ``macs`` and ``n_weights`` are per sample and exact.
    """

    index: int
    name: str
    kind: str
    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    groups: int
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    n_weights: int
    n_bias: int
    macs: int

    @property
    def positions(self) -> int:
        """Output positions per sample: OH*OW for a conv, rows for a linear layer."""
        return self.out_hw[0] * self.out_hw[1]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _conv_kind(in_ch: int, out_ch: int, kernel: tuple[int, int], groups: int) -> str:
    if groups == 1:
        return "pointwise" if kernel == (1, 1) else "conv"
    if groups == in_ch and out_ch % in_ch == 0:
        return "depthwise"
    return "grouped"


def extract_layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[LayerSpec]:
    """The quantizable layers (Conv2d and Linear) of ``model`` in execution order.

    One forward pass of a single zero sample of shape ``input_shape`` (C, H, W) with hooks
    records each layer's input and output size. Layers with weights that cannot be costed
    (Conv1d/Conv3d/transposed convs) are named in a warning; modules never called in the
    forward pass are not part of the network's cost and are skipped. The model's training
    mode is restored.
    """
    records = _trace(model, input_shape)
    reused = [n for n, rec in records.items() if rec["calls"] > 1]
    if reused:
        warnings.warn(
            f"layers called more than once per forward pass are costed once: {', '.join(reused)}",
            stacklevel=2,
        )
    modules = dict(model.named_modules())
    specs = [_spec(i, name, modules[name], rec) for i, (name, rec) in enumerate(records.items())]
    if not specs:
        raise HaqError("the model has no quantizable layers (Conv2d or Linear) in its forward pass")
    return specs


def _trace(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, dict[str, Any]]:
    """Input/output shapes and call counts of the Conv2d and Linear modules, in the order of
    their first call in one forward pass of a zero sample (dicts keep insertion order)."""
    import torch
    from torch import nn

    records: dict[str, dict[str, Any]] = {}
    handles = []

    def hook(name: str):
        def fn(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            if name in records:
                records[name]["calls"] += 1
            else:
                records[name] = {
                    "in": tuple(inputs[0].shape),
                    "out": tuple(output.shape),
                    "calls": 1,
                }

        return fn

    unsupported: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            handles.append(module.register_forward_hook(hook(name)))
        elif isinstance(module, nn.modules.conv._ConvNd):
            unsupported.append(f"{name} ({type(module).__name__})")
    if unsupported:
        warnings.warn(
            "layers that cannot be costed or quantized are left in float: "
            + ", ".join(unsupported),
            stacklevel=3,
        )
    was_training = model.training
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device, dtype=dtype))
    except Exception as err:
        raise HaqError(
            f"the model rejected input shape {tuple(input_shape)}: {str(err).splitlines()[0]}"
        ) from err
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return records


def _spec(index: int, name: str, m: nn.Conv2d | nn.Linear, rec: dict[str, Any]) -> LayerSpec:
    """The :class:`LayerSpec` of Conv2d or Linear ``m`` from its traced shapes ``rec``."""
    from torch import nn

    if isinstance(m, nn.Conv2d):
        kernel = (int(m.kernel_size[0]), int(m.kernel_size[1]))
        stride = (int(m.stride[0]), int(m.stride[1]))
        pad = m.padding if isinstance(m.padding, tuple) else (0, 0)
        padding = (int(pad[0]), int(pad[1]))
        in_hw = (int(rec["in"][-2]), int(rec["in"][-1]))
        out_hw = (int(rec["out"][-2]), int(rec["out"][-1]))
        ic, oc, g = int(m.in_channels), int(m.out_channels), int(m.groups)
        macs = out_hw[0] * out_hw[1] * oc * (ic // g) * kernel[0] * kernel[1]
        kind = _conv_kind(ic, oc, kernel, g)
    else:
        ic, oc, g = int(m.in_features), int(m.out_features), 1
        rows = 1
        for d in rec["in"][1:-1]:
            rows *= int(d)
        kernel, stride, padding = (1, 1), (1, 1), (0, 0)
        in_hw = out_hw = (1, rows)
        macs = rows * ic * oc
        kind = "linear"
    n_w = int(m.weight.numel())
    n_b = int(m.bias.numel()) if m.bias is not None else 0
    return LayerSpec(
        index, name, kind, ic, oc, kernel, stride, padding, g, in_hw, out_hw, n_w, n_b, macs
    )
