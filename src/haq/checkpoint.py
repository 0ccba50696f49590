"""Model checkpoints that remember what they are: model spec, input shape, dataset, accuracy.

The reference models ship inside the package (``haq/checkpoints/*.pt``, a few hundred KB
each), so the main job never retrains.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from haq.data import Data, builtin_normalisation, inference_batch, load_dataset, make_loader
from haq.errors import HaqError
from haq.fileio import check_output, load_payload, payload_format, save_payload
from haq.imagefolder import IMAGENET_MEAN, IMAGENET_STD, FolderData, Preprocess
from haq.models import default_input_shape, load_model_spec
from haq.train import evaluate, pick_device
from haq.weights import load_weights

BUILTIN_DIR = Path(__file__).parent / "checkpoints"
CHECKPOINT_FORMAT = "haq-checkpoint-1"


@dataclass
class CheckpointMeta:
    """What a checkpoint says about itself."""

    model: str
    input_shape: tuple[int, int, int]
    dataset: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    # how images on disk become inputs: mean, std, crop_ratio (see haq.imagefolder.Preprocess)
    preprocess: dict[str, Any] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)


def builtin_checkpoint(model: str) -> Path | None:
    """The shipped checkpoint of a reference model, if there is one."""
    path = BUILTIN_DIR / f"{model}.pt"
    return path if path.is_file() else None


def save_checkpoint(path: str | Path, model: nn.Module, meta: CheckpointMeta) -> Path:
    """Write the state dict and metadata atomically."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_payload(
        {"format": CHECKPOINT_FORMAT, "meta": meta.__dict__, "state_dict": state}, path
    )


def read_checkpoint(path: str | Path) -> tuple[CheckpointMeta, dict[str, Any]]:
    """Metadata and raw payload of a checkpoint file, with clear errors."""
    try:
        payload = load_payload(
            path, CHECKPOINT_FORMAT, "checkpoint (written by 'haq import' or 'haq pretrain')"
        )
    except HaqError:
        _refuse_finetuned(path)
        raise
    m = payload["meta"]
    meta = CheckpointMeta(
        model=m["model"],
        input_shape=tuple(m["input_shape"]),  # type: ignore[arg-type]
        dataset=m["dataset"],
        model_kwargs=m.get("model_kwargs", {}),
        accuracy=m.get("accuracy", {}),
        extra=m.get("extra", {}),
        preprocess=m.get("preprocess", {}),
        classes=m.get("classes", []),
    )
    return meta, payload


def _refuse_finetuned(path: str | Path) -> None:
    """A ``haq finetune`` output given where a pretrained checkpoint goes: say what it is."""
    from haq.quant.serialize import QUANTIZED_FORMAT

    if payload_format(path) == QUANTIZED_FORMAT:
        raise HaqError(
            f"{path} is a finetuned quantized model (written by 'haq finetune'); give the "
            f"pretrained checkpoint it came from (named in {Path(path).with_suffix('.json')}), "
            f"or export this one as it is: haq export --checkpoint {path}"
        )


def load_checkpoint(
    path: str | Path, model_spec: str | None = None
) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the model a checkpoint was written for and load its weights.

    When ``model_spec`` is given and differs from the checkpoint's architecture, the weights
    will not fit and a :class:`HaqError` says so.
    """
    meta, payload = read_checkpoint(path)
    spec = model_spec or meta.model
    model = load_model_spec(spec, **(meta.model_kwargs if spec == meta.model else {}))
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise HaqError(
            f"checkpoint {str(path)!r} was written for model {meta.model!r}, "
            f"not for {spec!r} ({first})"
        ) from err
    model.eval()
    return model, meta


def model_splits(
    dataset: str,
    meta: CheckpointMeta,
    crop_ratio: float | None = None,
    min_crop_scale: float | None = None,
) -> tuple[Data, Data]:
    """The training and test splits of ``dataset`` prepared for this checkpoint's model
    (:func:`model_data`)."""
    train = model_data(dataset, meta, crop_ratio, min_crop_scale)
    return train, model_data(dataset, meta, crop_ratio, min_crop_scale, train=False)


def model_data(
    dataset: str,
    meta: CheckpointMeta,
    crop_ratio: float | None = None,
    min_crop_scale: float | None = None,
    train: bool = True,
) -> Data:
    """One split of ``dataset`` prepared for this checkpoint's model (:func:`preprocess_for`),
    refused in one line when its images do not fit the model."""
    prep = preprocess_for(meta, crop_ratio, min_crop_scale)
    data = load_dataset(dataset, train=train, preprocess=prep)
    if data.input_shape != tuple(meta.input_shape):
        raise HaqError(
            f"dataset {dataset!r} has images {data.input_shape}; "
            f"the model expects {tuple(meta.input_shape)}"
        )
    if isinstance(data, FolderData) and meta.classes and data.classes != meta.classes:
        # labels are places in the folder's sorted class list: not the model's outputs when
        # the folder holds a subset of its classes (or the model's order is not sorted)
        data = data.with_classes(meta.classes, dataset)
        if train:
            print(
                f"note: {dataset} has {len(set(data.labels.tolist()))} of the model's "
                f"{len(meta.classes)} classes; labelled by the model's own class list",
                file=sys.stderr,
            )
    return data


def preprocess_for(
    meta: CheckpointMeta, crop_ratio: float | None = None, min_crop_scale: float | None = None
) -> Preprocess:
    """How images from disk are prepared for this checkpoint's model: its recorded
    normalisation and crop ratio; for a model trained on a built-in dataset that dataset's
    normalisation and no crop (its images already have the input size); else ImageNet's
    mean and std (0.5 and 0.5 for one channel) and the 0.875 crop. Arguments override."""
    rec = meta.preprocess
    builtin = builtin_normalisation(meta.dataset)
    gray = meta.input_shape[0] == 1
    if "mean" in rec:
        mean, std = tuple(rec["mean"]), tuple(rec["std"])
    elif builtin is not None:
        mean, std = (builtin[0],), (builtin[1],)
    else:
        mean, std = ((0.5,), (0.5,)) if gray else (IMAGENET_MEAN, IMAGENET_STD)
    ratio = rec.get("crop_ratio", 1.0 if builtin is not None else 0.875)
    scale = rec.get("min_crop_scale", Preprocess.min_crop_scale)
    return Preprocess(
        cast("tuple[int, int, int]", tuple(meta.input_shape)),
        mean,
        std,
        ratio if crop_ratio is None else crop_ratio,
        scale if min_crop_scale is None else min_crop_scale,
    )


def resolve_model(
    spec: str | None, checkpoint: str | Path | None = None, weights: str | Path | None = None
) -> tuple[nn.Module, CheckpointMeta]:
    """The model a command works on: a haq checkpoint; else ``spec`` with ``weights`` from a
    state dict file (input shape: the registry's, else ImageNet's; no dataset recorded);
    else the shipped checkpoint of a reference model."""
    if checkpoint and weights:
        raise HaqError("give --checkpoint or --weights, not both")
    if checkpoint:
        return load_checkpoint(checkpoint, spec)  # spec None: the checkpoint's own model
    if spec is None:
        raise HaqError("give --model (and --weights), or --checkpoint")
    if weights:
        model = load_weights(load_model_spec(spec), weights)
        return model, CheckpointMeta(spec, default_input_shape(spec), dataset="")
    shipped = builtin_checkpoint(spec)
    if shipped is None:
        raise HaqError(
            f"model {spec!r} has no shipped weights: give --weights FILE (a state dict) or "
            "--checkpoint (see 'haq import' and 'haq pretrain')"
        )
    return load_checkpoint(shipped, spec)


def import_model(
    spec: str,
    weights: str | Path,
    dataset: str,
    out: str | Path,
    input_shape: tuple[int, int, int] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    preprocess: dict[str, Any] | None = None,
    device: str | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> tuple[Path, CheckpointMeta]:
    """Write a haq checkpoint of ``spec`` with ``weights``: input shape (default: the
    registry's, else 3x224x224), preprocessing (``preprocess`` keys of
    :class:`~haq.imagefolder.Preprocess` override the defaults), the dataset's classes and
    the full-precision accuracy measured on its test split (``progress``: a bar for it)."""
    check_output(out)  # not after the test-set pass
    kwargs = dict(model_kwargs or {})
    model = load_weights(load_model_spec(spec, **kwargs), weights)
    shape = tuple(input_shape or default_input_shape(spec))
    meta = CheckpointMeta(spec, shape, dataset, kwargs)  # type: ignore[arg-type]
    prep = replace(preprocess_for(meta), **(preprocess or {}))
    meta.preprocess = prep.to_dict()
    test = load_dataset(dataset, train=False, preprocess=prep)
    if test.input_shape != shape:
        raise HaqError(
            f"dataset {dataset!r} has images {test.input_shape}; the model expects {shape}"
        )
    check_outputs(model, shape, test.num_classes, dataset)
    dev = pick_device(device)
    batch = inference_batch(test, 256, dev)
    loader = make_loader(test, batch, workers=workers, pin_memory=dev.type == "cuda")
    acc = evaluate(model, loader, device=dev, progress=progress, desc="test set")
    meta.accuracy = {"top1": acc.top1, "top5": acc.top5}
    meta.classes = list(getattr(test, "classes", []))
    meta.extra = {"imported_from": str(weights), "test_images": acc.n_images}
    return save_checkpoint(out, model.cpu(), meta), meta


def check_outputs(model: nn.Module, shape: tuple[int, ...], num_classes: int, dataset: str) -> None:
    """A model must have an output for every class of the dataset it is scored on."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        outputs = int(model(torch.zeros(1, *shape)).shape[1])
    model.train(was_training)
    if outputs < num_classes:
        raise HaqError(
            f"the model has {outputs} outputs but {dataset!r} has {num_classes} classes; "
            "give the model's num_classes (--model-kwargs) or another dataset"
        )
