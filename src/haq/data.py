"""Datasets that work offline, and the paper's search split.

Built-in names:

- ``fashion-mnist`` and ``mnist``: the standard IDX ``.gz`` files, searched in ``$HAQ_DATA``
  (or ``$HAQ_DATA/<name>``), then in ``/usr/share/datasets/<name>`` where Debian's
  ``dataset-fashion-mnist`` package installs them. Nothing is downloaded.
- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images; a fixed 1,497/300 train/test
  split), for tiny tests.
- ``imagefolder:DIR``: images streamed from disk (:mod:`haq.imagefolder`), preprocessed as
  the model's checkpoint says.

The built-in ones are held in memory as tensors (:class:`TensorData`, the fast path); a
dataset on disk is a :class:`~haq.imagefolder.FolderData`. Both have ``len``, ``subset``,
``view``, ``input_shape`` and ``num_classes``, and :func:`make_loader` batches either.

The search never touches the test split: :func:`search_split` carves a fixed-seed finetune
subset and a disjoint held-out subset out of the *training* set, as the paper does.
"""

from __future__ import annotations

import gzip
import multiprocessing
import multiprocessing.context
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from haq.errors import HaqError
from haq.imagefolder import FolderData, Preprocess, SeededSampler, load_imagefolder

_IDX_FILES = {
    True: ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    False: ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# per-dataset (mean, std) of the training pixels in [0, 1]
_NORMALISATION = {"fashion-mnist": (0.2860, 0.3530), "mnist": (0.1307, 0.3081)}
_HINTS = {
    "fashion-mnist": "install Debian's package 'dataset-fashion-mnist' "
    "(apt-get install dataset-fashion-mnist) or put the four IDX .gz files in $HAQ_DATA",
    "mnist": "put the four MNIST IDX .gz files in $HAQ_DATA/mnist",
}


@dataclass
class TensorData:
    """A whole dataset held in memory as one image tensor (N, C, H, W) and one label tensor."""

    images: Tensor
    labels: Tensor
    num_classes: int

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return (int(c), int(h), int(w))

    def subset(self, indices: Tensor) -> TensorData:
        return TensorData(self.images[indices], self.labels[indices], self.num_classes)

    def view(self, train: bool) -> TensorData:
        """The same data (in-memory images get their augmentation in the training loop)."""
        return self


class DatasetData:
    """Any map-style torch ``Dataset`` of ``(image tensor, label)`` pairs (a torchvision
    dataset with its transforms, your own class), for the Python API. Augmentation is the
    dataset's own business: the training and evaluation views are the same."""

    train = False

    def __init__(
        self,
        dataset: torch.utils.data.Dataset,
        num_classes: int,
        input_shape: tuple[int, int, int] | None = None,
    ) -> None:
        self.dataset, self.num_classes = dataset, num_classes
        self.input_shape = input_shape or tuple(int(d) for d in dataset[0][0].shape)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, int]:
        x, y = self.dataset[key[0] if isinstance(key, tuple) else key]
        return x, int(y)

    def subset(self, indices: Tensor | np.ndarray) -> DatasetData:
        sub = torch.utils.data.Subset(self.dataset, [int(i) for i in indices])
        return DatasetData(sub, self.num_classes, self.input_shape)  # type: ignore[arg-type]

    def view(self, train: bool) -> DatasetData:
        return self


Data = TensorData | FolderData | DatasetData


class TensorLoader:
    """Batches of an in-memory dataset by slicing: much faster than a DataLoader on CPU.

    With ``shuffle`` the order is drawn from its own seeded generator, so two loaders with
    the same seed yield the same batches (needed for reproducible, resumable searches); with
    ``repeat`` every pass starts that generator over.
    """

    def __init__(
        self,
        data: TensorData,
        batch_size: int = 256,
        shuffle: bool = False,
        seed: int = 0,
        repeat: bool = False,
    ) -> None:
        if len(data) == 0:
            raise HaqError("the dataset is empty")
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed, self.repeat = seed, repeat
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return (len(self.data) + self.batch_size - 1) // self.batch_size

    def order_state(self) -> Tensor:
        """Where the sequence of shuffled passes stands (a finetune's epoch checkpoint)."""
        return self.generator.get_state()

    def set_order_state(self, state: Tensor) -> None:
        self.generator.set_state(state)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.data)
        if self.repeat:
            self.generator.manual_seed(self.seed)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            if order is None:
                sl = slice(start, start + self.batch_size)
                yield self.data.images[sl], self.data.labels[sl]
            else:
                idx = order[start : start + self.batch_size]
                yield self.data.images[idx], self.data.labels[idx]


def _data_dirs(name: str) -> list[Path]:
    dirs = []
    env = os.environ.get("HAQ_DATA")
    if env:
        dirs += [Path(env) / name, Path(env)]
    dirs.append(Path("/usr/share/datasets") / name)
    return dirs


def _read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (the MNIST format): magic, dims, then raw uint8 data."""
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _load_idx(name: str, train: bool) -> TensorData:
    img_file, lbl_file = _IDX_FILES[train]
    for d in _data_dirs(name):
        if (d / img_file).is_file() and (d / lbl_file).is_file():
            try:
                images = _read_idx(d / img_file)
                labels = _read_idx(d / lbl_file)
            except (OSError, ValueError, IndexError) as err:
                raise HaqError(f"cannot read {name} files in {d}: {err}") from err
            mean, std = _NORMALISATION[name]
            x = (torch.from_numpy(images.astype(np.float32) / 255.0) - mean) / std
            return TensorData(
                x.unsqueeze(1).contiguous(), torch.from_numpy(labels.astype(np.int64)), 10
            )
    searched = ", ".join(str(d) for d in _data_dirs(name))
    raise HaqError(f"dataset {name!r} not found (searched {searched}); {_HINTS[name]}")


def _load_digits(train: bool) -> TensorData:
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise HaqError("dataset 'digits' needs scikit-learn: pip install scikit-learn") from err
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32) / 16.0
    x = ((x - 0.3) / 0.4).unsqueeze(1)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    idx = order[:-300] if train else order[-300:]
    return TensorData(x[idx].contiguous(), y[idx], 10)


def list_datasets() -> list[str]:
    return ["digits", "fashion-mnist", "mnist"]


def load_dataset(name: str, train: bool = True, preprocess: Preprocess | None = None) -> Data:
    """The training split (``train=False``: the test split) of a dataset: a built-in one
    loaded into memory, or ``imagefolder:DIR`` streamed from disk with ``preprocess`` (the
    model's input shape and normalisation, see :func:`haq.checkpoint.preprocess_for`)."""
    if name in _NORMALISATION:
        return _load_idx(name, train)
    if name == "digits":
        return _load_digits(train)
    if name.startswith("imagefolder:"):
        if preprocess is None:
            raise HaqError("an imagefolder dataset needs the model's preprocessing")
        return load_imagefolder(name.split(":", 1)[1], preprocess, train)
    raise HaqError(
        f"unknown dataset {name!r}; valid names: {', '.join(list_datasets())}, imagefolder:DIR"
    )


def builtin_normalisation(name: str) -> tuple[float, float] | None:
    """(mean, std) of a built-in dataset's pixels, for images of it saved to disk."""
    return _NORMALISATION.get(name)


def default_workers() -> int:
    """Loader processes for data on disk: one core fewer than the machine has, at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def check_batches(loader: Any, verb: str) -> None:
    """A dataset given where batches are expected: one clear error (iterating one would give
    single images, or fail deep inside)."""
    if isinstance(loader, TensorData | FolderData | DatasetData):
        raise HaqError(
            f"{verb} takes batches, not a dataset: pass haq.data.make_loader(data, 256) "
            "(or a DataLoader)"
        )


def make_loader(
    data: Data,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    workers: int | None = None,
    pin_memory: bool = False,
    persistent: bool = False,
) -> TensorLoader | torch.utils.data.DataLoader:
    """Batches of ``data``: slices of an in-memory dataset, or a DataLoader with ``workers``
    processes (default :func:`default_workers`) decoding images from disk. Seeded: the same
    call gives the same batches. ``persistent``: the workers stay up between passes and
    every pass yields the same batches (a search's episodes each start over).

    Images on disk are read by workers started from a fork server, not forked from this
    process: a fork of a process holding gigabytes of activations shares its pages until this
    process writes them again, and then both copies stay resident (the first real search ran
    out of 24 GB that way)."""
    if isinstance(data, TensorData):
        return TensorLoader(data, batch_size, shuffle=shuffle, seed=seed, repeat=persistent)
    if len(data) == 0:
        raise HaqError("the dataset is empty")
    n_workers = default_workers() if workers is None else workers
    ours = isinstance(data, FolderData)  # a user's dataset class may not survive pickling
    return torch.utils.data.DataLoader(
        cast("torch.utils.data.Dataset[Any]", data),
        batch_size=batch_size,
        sampler=SeededSampler(len(data), shuffle, seed, seeds=data.train, repeat=persistent),
        num_workers=n_workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if n_workers else None,
        persistent_workers=persistent and n_workers > 0,
        multiprocessing_context=_forkserver() if n_workers and ours else None,
    )


def _forkserver() -> multiprocessing.context.BaseContext:
    """The fork server that starts loader workers, with torch, PIL and this module imported
    once, when it starts: each worker is then a fork of it, up in milliseconds. Without the
    preload every worker imports torch itself while this process waits (the pickled dataset
    is larger than the pipe takes): about 1.2 s per worker, one after the other, so 15
    workers kept a GPU idle for 15-20 s per loader."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])  # no effect once the server runs
    return ctx


def inference_batch(data: Data, batch: int, device: str | torch.device | None = None) -> int:
    """The batch of an evaluation or calibration pass: ``batch`` for images up to 64x64; for
    larger ones at most 64 in host memory (512 MobileNet-V2 inputs at 224x224 take about
    8 GB) and at most 256 when evaluating on CUDA (``device``; about 2 GB there, and a GPU
    runs larger batches faster). Calibration passes no device: its batches decide which
    activations it samples, so they stay the same on every device."""
    _, h, w = data.input_shape
    if h * w <= 64 * 64:
        return batch
    return min(batch, 256 if device is not None and str(device).startswith("cuda") else 64)


def calibration_loader(data: Data, batches: int, workers: int | None = None) -> tuple[Any, int]:
    """(loader, number of batches) covering ``batches`` x 256 images of ``data`` in order."""
    size = inference_batch(data, 256)
    return make_loader(data, size, workers=workers), -(-batches * 256 // size)


def first_images(data: Data, n: int) -> Tensor:
    """The first ``n`` images of ``data`` (evaluation crop) as one tensor."""
    if isinstance(data, TensorData):
        return data.images[:n]
    batches = make_loader(data.view(False).subset(np.arange(min(n, len(data)))), 256, workers=0)
    return torch.cat([x for x, _ in batches])


def search_split(
    data: Data, finetune_size: int, heldout_size: int, seed: int = 0, check_size: int = 0
) -> tuple[Data, Data, Data | None]:
    """Disjoint fixed-seed (finetune, held-out, check) subsets of a training set, as in the
    paper, plus a check subset the search never scores (None when ``check_size`` is 0) to
    re-evaluate its best policy on unseen images."""
    n = len(data)
    if n == 0:
        raise HaqError("the dataset is empty")
    if finetune_size + heldout_size + check_size > n:
        raise HaqError(
            f"finetune subset ({finetune_size}) + held-out subset ({heldout_size}) + check "
            f"subset ({check_size}) exceed the {n} training images; choose smaller subsets"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    heldout = order[:heldout_size]
    finetune = order[heldout_size : heldout_size + finetune_size]
    check = order[heldout_size + finetune_size : heldout_size + finetune_size + check_size]
    return (
        data.view(True).subset(finetune),
        data.view(False).subset(heldout),
        data.view(False).subset(check) if check_size else None,
    )
