"""A registry of model factories with consistent arguments (in the spirit of timm).

A *model spec* names a model on the command line. It is one of:

- a registry name (``mobilenet_v2``, ``resnet_fmnist``, ... see :func:`list_models`);
- ``package.module:function`` (an importable factory);
- ``path/to/file.py:function`` (a factory in a file);
- a torchvision model name (``torchvision:resnet34`` or a plain name when torchvision is
  installed and the name is not in the registry);
- a timm model name (``timm:efficientnet_lite0``) when timm is installed.

Weights are never downloaded: the architecture is built with random weights, and the user's
file comes in with ``--weights`` (:mod:`haq.weights`).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from haq.errors import HaqError
from haq.models.mobilenet import MobileNetV1, MobileNetV2
from haq.models.resnet import BasicBlock, Bottleneck, ResNet
from haq.plugins import load_callable

IMAGENET_SHAPE = (3, 224, 224)
FMNIST_SHAPE = (1, 28, 28)


@dataclass(frozen=True)
class ModelInfo:
    """A registered factory and the input shape (C, H, W) it is meant for."""

    factory: Callable[..., nn.Module]
    input_shape: tuple[int, int, int]
    description: str


def mobilenet_v1(**kw: Any) -> nn.Module:
    return MobileNetV1(**kw)


def mobilenet_v2(**kw: Any) -> nn.Module:
    return MobileNetV2(**kw)


def resnet18(**kw: Any) -> nn.Module:
    return ResNet(BasicBlock, (2, 2, 2, 2), **kw)


def resnet50(**kw: Any) -> nn.Module:
    return ResNet(Bottleneck, (3, 4, 6, 3), **kw)


def mobilenet_v2_fmnist(**kw: Any) -> nn.Module:
    """The reference MobileNet-V2-style model for 1x28x28 Fashion-MNIST.

    Standard 17-block layout at width 0.5 with a stride-2 stem; the later strides are chosen
    so the feature maps go 14 -> 14 -> 7 -> 4 -> 4 -> 2, which trains in minutes on 2 CPU cores.
    """
    args: dict[str, Any] = dict(
        num_classes=10,
        in_channels=1,
        width_mult=0.5,
        stem_stride=2,
        stage_strides=(1, 1, 2, 2, 1, 2, 1),
        dropout=0.1,
    )
    args.update(kw)
    return MobileNetV2(**args)


def resnet_fmnist(**kw: Any) -> nn.Module:
    """The reference ResNet-style model for 1x28x28 Fashion-MNIST: ResNet-18 layout, width 16,
    3x3 stride-1 stem without max-pool (feature maps 28 -> 14 -> 7 -> 4)."""
    args: dict[str, Any] = dict(num_classes=10, in_channels=1, width=16, small_input=True)
    args.update(kw)
    return resnet18(**args)


MODELS: dict[str, ModelInfo] = {
    "mobilenet_v1": ModelInfo(mobilenet_v1, IMAGENET_SHAPE, "MobileNet-V1, ImageNet layout"),
    "mobilenet_v2": ModelInfo(mobilenet_v2, IMAGENET_SHAPE, "MobileNet-V2, ImageNet layout"),
    "resnet18": ModelInfo(resnet18, IMAGENET_SHAPE, "ResNet-18, ImageNet layout"),
    "resnet50": ModelInfo(resnet50, IMAGENET_SHAPE, "ResNet-50, ImageNet layout"),
    "mobilenet_v2_fmnist": ModelInfo(
        mobilenet_v2_fmnist, FMNIST_SHAPE, "reference MobileNet-V2-style model, 1x28x28"
    ),
    "resnet_fmnist": ModelInfo(
        resnet_fmnist, FMNIST_SHAPE, "reference ResNet-style model, 1x28x28"
    ),
}


def list_models() -> list[str]:
    """Names of the registered models."""
    return sorted(MODELS)


def default_input_shape(spec: str) -> tuple[int, int, int]:
    """The input shape a registered model is meant for; ImageNet's for anything else."""
    info = MODELS.get(spec)
    return info.input_shape if info else IMAGENET_SHAPE


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name (``create_model("mobilenet_v2", num_classes=10)``)."""
    if name not in MODELS:
        raise HaqError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    try:
        return MODELS[name].factory(**kwargs)
    except TypeError as err:
        raise HaqError(f"model {name!r} rejected its options: {err}") from err


def load_model_spec(spec: str, **kwargs: Any) -> nn.Module:
    """Build a model from a spec string (see the module docstring)."""
    if spec in MODELS:
        return create_model(spec, **kwargs)
    if spec.startswith("torchvision:"):
        return _torchvision_model(spec.split(":", 1)[1], kwargs)
    if spec.startswith("timm:"):
        return _timm_model(spec.split(":", 1)[1], kwargs)
    if ":" in spec:
        target, func = spec.rsplit(":", 1)
        factory = _load_factory(target, func, spec)
        try:
            model = factory(**kwargs)
        except Exception as err:  # a user's factory can fail in any way
            raise HaqError(f"model factory {spec!r} failed: {err}") from err
        if not isinstance(model, nn.Module):
            raise HaqError(f"model factory {spec!r} returned {type(model).__name__}, not nn.Module")
        return model
    if importlib.util.find_spec("torchvision") is not None:
        return _torchvision_model(spec, kwargs)
    raise HaqError(
        f"unknown model {spec!r}; valid names: {', '.join(list_models())}, "
        "or 'package.module:function', or 'path/to/file.py:function'"
    )


def _load_factory(target: str, func: str, spec: str) -> Callable[..., Any]:
    return load_callable(f"{target}:{func}", "model")


def _torchvision_model(name: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        import torchvision.models as tvm
    except ImportError as err:
        raise HaqError(f"torchvision is not installed; cannot build {name!r}") from err
    try:
        return tvm.get_model(name, weights=None, **kwargs)
    except Exception as err:
        raise HaqError(
            f"unknown model {name!r}; valid names: {', '.join(list_models())} "
            f"or a torchvision model ({err})"
        ) from err


def _timm_model(name: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        import timm
    except ImportError as err:
        raise HaqError(f"timm is not installed (pip install timm); cannot build {name!r}") from err
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except Exception as err:  # timm raises RuntimeError or others for unknown names/options
        raise HaqError(f"timm cannot build {name!r}: {str(err).splitlines()[0]}") from err
