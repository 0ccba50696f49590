"""Train a reference model from scratch (``haq pretrain``)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import torch

from haq.checkpoint import CheckpointMeta, preprocess_for, save_checkpoint
from haq.data import TensorData, inference_batch, load_dataset, make_loader
from haq.fileio import check_output
from haq.models import default_input_shape, load_model_spec
from haq.train import evaluate, finetune, pick_device


def pretrain(
    model_spec: str,
    dataset: str,
    out: str | Path,
    epochs: int = 10,  # haq pretrain's default (the shipped MobileNet-V2-style model's)
    lr: float = 0.1,
    batch_size: int = 128,
    weight_decay: float = 5e-4,
    seed: int = 0,
    device: str | None = None,
    augment: bool = True,
) -> tuple[Path, float]:
    """SGD + cosine from scratch; returns (path, test top-1 %).

    ``augment``: random shifts of up to 2 pixels, plus horizontal flips for Fashion-MNIST only
    (clothes are mirror-symmetric, digits are not)."""
    check_output(out)  # not after the training
    shape = default_input_shape(model_spec)
    prep = preprocess_for(CheckpointMeta(model_spec, shape, dataset))
    train = load_dataset(dataset, train=True, preprocess=prep)
    test = load_dataset(dataset, train=False, preprocess=prep)
    with torch.random.fork_rng():  # seeded initialisation; the caller's RNG untouched
        torch.manual_seed(seed)
        model = load_model_spec(model_spec)
    dev = pick_device(device)
    model.to(dev)
    loader = make_loader(train.view(True), batch_size, shuffle=True, seed=seed)
    finetune(
        model,
        loader,
        epochs=epochs,
        lr=lr,
        weight_decay=weight_decay,
        device=dev,
        seed=seed,
        augment=augment and isinstance(train, TensorData),  # on disk: random crops
        flip=dataset == "fashion-mnist",
        label_smoothing=0.1,
        progress=True,
    )
    acc = evaluate(model, make_loader(test, inference_batch(test, 512, dev)), progress=True)
    meta = CheckpointMeta(
        model=model_spec,
        input_shape=cast("tuple[int, int, int]", train.input_shape),
        dataset=dataset,
        preprocess=prep.to_dict() if dataset.startswith("imagefolder:") else {},
        classes=list(getattr(train, "classes", [])),  # what its outputs mean (image folders)
        accuracy={"top1": acc.top1, "top5": acc.top5},
        extra={"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed},
    )
    return save_checkpoint(out, model.cpu(), meta), acc.top1
