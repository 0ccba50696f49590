"""The options of the ``haq`` commands other than ``search``, each defined once.

A command's dataclass *is* its command line: :func:`haq.options.add_arguments` makes one flag
per field, with the field's default and help text, and the command receives the filled
dataclass (``haq search`` does the same with :class:`haq.search.config.SearchConfig`). A field
without a default is a required flag.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from haq.errors import HaqError
from haq.hardware import HARDWARE_HELP
from haq.options import MAX_WORKERS, SEED_MAX, opt
from haq.specs import (
    DEFAULT_REFERENCE_MODEL,
    DataSpec,
    FinetuneSpec,
    ModelSpec,
    QuantSpec,
    device_opt,
)

WEIGHTS_HELP = "state dict file of the model (.pt, .pth, .safetensors; see 'haq import')"
DATASET_HELP = "a built-in name or imagefolder:DIR"


def parse_shape(text: str | None) -> tuple[int, int, int] | None:
    """``--input-shape C,H,W`` (or CxHxW); None when not given."""
    if text is None:
        return None
    try:
        dims = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError as err:
        raise HaqError(f"--input-shape {text!r} must look like 3,224,224") from err
    if len(dims) != 3 or min(dims) < 1:
        raise HaqError(f"--input-shape {text!r} must be three positive numbers C,H,W")
    return dims  # type: ignore[return-value]


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as err:
        raise HaqError(f"{flag} {text!r} must be numbers separated by commas") from err


def _seed() -> int:
    return opt(0, "random seed", low=0, high=SEED_MAX)


@dataclass(kw_only=True)
class CostOptions:
    """``haq cost``: per-layer latency / energy / size / BOPs of a policy."""

    model: str | None = opt(
        None,
        "registry name, module:function or file.py:function (default: the one a search's "
        "policy file was searched for, else mobilenet_v2)",
        show_default=False,
    )
    hardware: str | None = opt(
        None,
        f"{HARDWARE_HELP} (default: the one a search's policy file was searched on, else "
        "bismo-edge)",
        show_default=False,
    )
    batch: int | None = opt(None, "batch size (default: the preset's)", low=1)
    input_shape: str | None = opt(
        None, "C,H,W (default: the policy file's, else the model's, e.g. 3,224,224)"
    )
    policy: str = opt("w8a8", "wXaY for every layer, or a policy .json")
    weights: str | None = opt(None, WEIGHTS_HELP)
    format: str = opt("table", "report format", choices=("table", "json", "csv"))
    output: str | None = opt(None, "write the report to this file, not stdout")
    table: str | None = opt(None, "also write the full [L,8,8] table (.npz)")
    haq_npy: str | None = opt(None, "also write the HAQ lookup format (cycles, .npy)")

    def shape(self) -> tuple[int, int, int] | None:
        return parse_shape(self.input_shape)


@dataclass(kw_only=True)
class MeasureOptions:
    """``haq hardware measure``: time every layer of a model on a kernel; write a cost table."""

    model: str = opt("mobilenet_v2_fmnist", "registry name, module:function or file.py:function")
    input_shape: str | None = opt(None, "C,H,W (default: the model's)")
    runner: str = opt(
        "bitserial",
        "bitserial (a numpy bit-serial kernel on this CPU), tvm-bitserial (a bit-serial "
        "kernel compiled by Apache TVM: pip install 'haq[tvm]') or module:function / "
        "file.py:function, called as f(layer, w_bits, a_bits, batch) -> seconds",
    )
    bits: str = opt("1,2,3,4,5,6,7,8", "bit widths to time; the others are interpolated")
    batch: int = opt(1, "images per timed evaluation", low=1)
    repeats: int = opt(5, "timed runs per layer and bit pair (their median is kept)", low=1)
    warmup: int = opt(1, "untimed runs before them", low=0)
    out: str = opt(help="the table to write (.npz); search on it with --hardware OUT")
    no_progress: bool = opt(False, "no progress bar")

    def shape(self) -> tuple[int, int, int] | None:
        return parse_shape(self.input_shape)


@dataclass(kw_only=True)
class PretrainOptions:
    """``haq pretrain``: train a reference model from scratch."""

    model: str = opt(DEFAULT_REFERENCE_MODEL, "reference model to train")
    dataset: str = opt("fashion-mnist", "built-in dataset")
    out: str = opt(help="the checkpoint to write (.pt)")
    epochs: int = opt(10, "training epochs", low=1)
    lr: float = opt(0.1, "initial learning rate of the cosine schedule", above=0)
    batch_size: int = opt(128, "images per batch", low=1)
    seed: int = _seed()
    device: str | None = device_opt()
    no_augment: bool = opt(False, "no random shifts/flips")


@dataclass(kw_only=True)
class EvalOptions(QuantSpec, DataSpec, ModelSpec):
    """``haq eval``: quantize with a policy, optionally finetune briefly, score the test set."""

    policy: str = opt("w8a8", "wXaY or a policy .json")
    mode: str | None = opt(None, "quantizer (default: the policy's)", choices=("linear", "kmeans"))
    finetune_steps: int = opt(0, "finetune batches before scoring", low=0)
    lr: float = opt(1e-3, "finetune learning rate", above=0)
    hardware: str | None = opt(None, "also print the policy's cost on this hardware")
    seed: int = _seed()
    device: str | None = device_opt()
    no_progress: bool = opt(False, "no progress bar")


@dataclass(kw_only=True)
class FinetuneOptions(FinetuneSpec, QuantSpec, DataSpec, ModelSpec):
    """``haq finetune``: the long final finetune of a policy, scored on the test set. With
    ``--run`` the model, data and quantizer options are the run's (``--workers`` and
    ``--crop-ratio`` may change how its images are read)."""

    run: str | None = opt(None, "a search run directory (uses its best policy)")
    policy: str | None = opt(None, "wXaY or a policy .json (with --model/--checkpoint/--dataset)")
    out: str | None = opt(None, "output .pt (default RUN/final.pt)")
    device: str | None = device_opt()
    no_progress: bool = opt(False, "no progress bar")


@dataclass(kw_only=True)
class ImportOptions:
    """``haq import``: a haq checkpoint from a state dict file."""

    model: str = opt(help="registry name, module:function, file.py:function or a torchvision name")
    weights: str = opt(
        help="state dict file: .pt, .pth, .safetensors, or a training checkpoint holding one"
    )
    dataset: str = opt(help=f"{DATASET_HELP} (its test split is scored)")
    out: str = opt(help="the haq checkpoint to write (.pt)")
    input_shape: str | None = opt(
        None, "C,H,W (default: the model's, 3,224,224 for ImageNet models)"
    )
    model_kwargs: str | None = opt(
        None, "JSON options of the model factory, e.g. '{\"num_classes\": 10}'"
    )
    mean: str | None = opt(
        None,
        "per-channel pixel mean in [0, 1] (default: ImageNet's 0.485,0.456,0.406)",
    )
    std: str | None = opt(None, "per-channel pixel std (default: ImageNet's 0.229,0.224,0.225)")
    crop_ratio: float | None = opt(
        None,
        "evaluation crop: resize the shorter side to H / ratio, crop the centre (default 0.875)",
        above=0,
        high=1,
    )
    workers: int | None = opt(None, "loader processes for images on disk", low=0, high=MAX_WORKERS)
    device: str | None = device_opt()
    no_progress: bool = opt(False, "no progress bar")

    def shape(self) -> tuple[int, int, int] | None:
        return parse_shape(self.input_shape)

    def factory_kwargs(self) -> dict[str, Any]:
        """``--model-kwargs`` as a dict."""
        example = "like '{\"num_classes\": 10}'"
        try:
            kwargs = json.loads(self.model_kwargs) if self.model_kwargs else {}
        except json.JSONDecodeError as err:
            raise HaqError(f"--model-kwargs must be a JSON object, {example} ({err})") from err
        if not isinstance(kwargs, dict):
            raise HaqError(f"--model-kwargs must be a JSON object, {example}")
        return kwargs

    def preprocessing(self) -> dict[str, Any]:
        """The given ``--mean``, ``--std`` and ``--crop-ratio``."""
        prep: dict[str, Any] = {}
        for key in ("mean", "std"):
            if getattr(self, key):
                prep[key] = _floats(getattr(self, key), f"--{key}")
        if self.crop_ratio is not None:
            prep["crop_ratio"] = self.crop_ratio
        return prep


@dataclass(kw_only=True)
class ExportOptions(QuantSpec, DataSpec, ModelSpec):
    """``haq export``: a quantized model as QONNX, ONNX (QDQ) or a torch file. ``--checkpoint``
    may be a ``haq finetune`` output (exported as it is); a pretrained one needs ``--policy``
    and is calibrated on the dataset with the quantizer options given (a run's own)."""

    run: str | None = opt(None, "a search run (its final.pt if finetuned, else its best policy)")
    policy: str | None = opt(
        None, "wXaY or a policy .json, on --checkpoint (default: the shipped model)"
    )
    format: str = opt(help="export format", choices=("qonnx", "onnx", "torch"))
    out: str = opt(help="the file to write")
