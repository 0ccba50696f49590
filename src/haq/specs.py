"""The options every pipeline step shares, each concept defined once: which model
(:class:`ModelSpec`), which data (:class:`DataSpec`), how the quantizer calibrates
(:class:`QuantSpec`), how the long final finetune trains (:class:`FinetuneSpec`).

They are plain dataclasses whose fields carry their flags (:func:`haq.options.opt`): a
command's options class and :class:`~haq.search.config.SearchConfig` inherit them (so the flag,
its default and help text exist once, and ``config.json`` keeps its flat keys), and library
functions take them as arguments (``final_finetune(policy, model, data, quant, ...)``).
``ModelSpec.of(cfg)`` takes a spec's fields out of any object that has them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, TypeVar

from haq.options import MAX_WORKERS, SEED_MAX, opt

DEFAULT_REFERENCE_MODEL = "mobilenet_v2_fmnist"
DEVICE_HELP = "cpu, cuda, cuda:1 (default: CUDA if available)"
CLIP_CHOICES = ("kl", "mse", "max")

S = TypeVar("S", bound="_Spec")


class _Spec:
    @classmethod
    def of(cls: type[S], obj: Any) -> S:
        """This spec's fields taken from ``obj`` (a command's options, a SearchConfig)."""
        return cls(**{f.name: getattr(obj, f.name) for f in fields(cls)})  # type: ignore[arg-type]


@dataclass(kw_only=True)
class ModelSpec(_Spec):
    """The pretrained model: a registry name or factory, with its weights from a haq
    checkpoint or a state dict file (default: the shipped weights of a reference model)."""

    model: str | None = opt(
        None,
        "model: registry name, module:fn or file.py:fn (default: the checkpoint's, else "
        f"{DEFAULT_REFERENCE_MODEL})",
        show_default=False,
    )
    checkpoint: str | None = opt(
        None, "haq checkpoint of the model (default: its shipped weights)", show_default=False
    )
    weights: str | None = opt(
        None,
        "state dict file of the model (.pt, .pth, .safetensors), instead of --checkpoint; "
        "better: 'haq import' it once into a checkpoint",
        show_default=False,
    )

    def model_name(self) -> str | None:
        """``model`` as given; else the checkpoint's own (None); else the reference model."""
        return self.model or (None if self.checkpoint else DEFAULT_REFERENCE_MODEL)


@dataclass(kw_only=True)
class DataSpec(_Spec):
    """The dataset and how its images are read and cropped."""

    dataset: str = opt(
        "fashion-mnist", "dataset: fashion-mnist, mnist, digits or imagefolder:DIR (from disk)"
    )
    workers: int | None = opt(
        None,
        "loader processes for images on disk (default: cores - 1, at most 8)",
        show_default=False,
        low=0,
        high=MAX_WORKERS,
    )
    crop_ratio: float | None = opt(
        None,
        "images on disk, evaluation: resize the shorter side to H / ratio, crop the centre "
        "(default: the checkpoint's; 0.875 for ImageNet-style models)",
        show_default=False,
        above=0,
        high=1,
    )
    min_crop_scale: float | None = opt(
        None,
        "images on disk, finetuning: smallest area share of the random crop (default 0.08)",
        show_default=False,
        above=0,
        high=1,
    )


@dataclass(kw_only=True)
class QuantSpec(_Spec):
    """How the quantizer picks its clips (the policy gives the bits)."""

    calib_batches: int = opt(2, "calibration batches of 256 images", low=1)
    per_channel: bool = opt(False, "per-output-channel weight clips")
    weight_clip: str = opt("kl", "weight clip method", choices=CLIP_CHOICES)


@dataclass(kw_only=True)
class FinetuneSpec(_Spec):
    """The long final finetune (``haq finetune``): SGD over the whole training set with a
    cosine schedule from ``lr``."""

    epochs: float = opt(1.0, "epochs over the training set", above=0)
    lr: float = opt(0.01, "initial learning rate of the cosine schedule", above=0)
    batch_size: int = opt(128, "images per batch", low=1)
    seed: int = opt(0, "random seed", low=0, high=SEED_MAX)
    compile: bool = opt(
        False,
        "train under torch.compile: about 1.5-2 min to compile here, then steps about 1.7x "
        "faster on a CPU (measured); worth it for finetunes of thousands of steps",
    )


def device_opt() -> Any:
    """The ``--device`` field (decided once, at the entry point: :func:`haq.train.pick_device`)."""
    return opt(None, DEVICE_HELP, show_default=False)
