"""Image datasets streamed from disk: ``--dataset imagefolder:DIR`` in the ImageNet layout.

``DIR/train/<class>/<image>`` is the training split (the search's finetune, held-out and check
subsets are index subsets of it) and ``DIR/val/<class>/<image>`` the test split. Without
``val/`` the test split is a fixed 10 % of the training images (seed 0), which the training
split then no longer contains. ``DIR/<class>/<image>`` without ``train/`` is read as the
training images. Classes are the sorted folder names, as torchvision's ImageFolder numbers
them; ``val/`` must hold no class that ``train/`` lacks.

Nothing is loaded up front but the file list: images are decoded in the
:class:`torch.utils.data.DataLoader`'s worker processes, batch by batch, with Pillow.
Preprocessing follows the model's checkpoint (:class:`Preprocess`): evaluation resizes the
shorter side to ``H / crop_ratio`` and crops the centre ``H x W``; training takes a random
crop of ``min_crop_scale``..1 of the area at 3/4..4/3 aspect ratio, resized to ``H x W``, and
mirrors half the images. Grayscale when the model takes one channel. Random choices come from
a seed the sampler hands to each image, so a batch is the same whatever the number of workers.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from haq.errors import HaqError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TEST_SHARE = 0.1  # of the training images, when there is no val/


@dataclass(frozen=True)
class Preprocess:
    """How images become model inputs: shape (C, H, W), per-channel mean and std of pixels in
    [0, 1], the evaluation crop ratio and the training crop's smallest area share."""

    input_shape: tuple[int, int, int]
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop_ratio: float = 0.875
    min_crop_scale: float = 0.08

    def __post_init__(self) -> None:
        c = self.input_shape[0]
        if c not in (1, 3):
            raise HaqError(f"images from disk need a model with 1 or 3 input channels, not {c}")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if len(v) not in (1, c):
                raise HaqError(
                    f"normalisation {name} {v} has {len(v)} values; the model has {c} channels"
                )
        if min(self.std) <= 0:
            raise HaqError(f"normalisation std {self.std} must be positive")
        if not 0 < self.crop_ratio <= 1:
            raise HaqError(f"crop ratio {self.crop_ratio} must be in (0, 1]")
        if not 0 < self.min_crop_scale <= 1:
            raise HaqError(f"smallest crop scale {self.min_crop_scale} must be in (0, 1]")

    def to_dict(self) -> dict[str, object]:
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "crop_ratio": self.crop_ratio,
            "min_crop_scale": self.min_crop_scale,
        }

    def __call__(self, img, rng: np.random.Generator | None) -> Tensor:  # type: ignore[no-untyped-def]
        """A PIL image to a normalised (C, H, W) tensor; ``rng`` given: the training crop."""
        from PIL import Image

        c, h, w = self.input_shape
        img = _eight_bit(img).convert("L" if c == 1 else "RGB")
        if rng is None:
            img = _resize_short(img, round(min(h, w) / self.crop_ratio))
            left, top = (img.width - w) // 2, (img.height - h) // 2
            img = img.crop((left, top, left + w, top + h))
        else:
            box = _random_crop_box(img.width, img.height, self.min_crop_scale, rng)
            img = img.resize((w, h), Image.Resampling.BILINEAR, box=box)
            if rng.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()) / 255.0
        x = x.unsqueeze(0) if c == 1 else x.permute(2, 0, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
        return ((x - mean) / std).contiguous()


def _eight_bit(img):  # type: ignore[no-untyped-def]
    """16-bit grayscale (PNG, TIFF) scaled to 8 bits, 65535 -> 255: PIL's own conversion
    clips at 255, which turns such an image almost white. Float pixels have no known range:
    refused."""
    from PIL import Image

    if img.mode == "F":
        raise ValueError("32-bit float pixels (mode F) have no known range; save 8 or 16 bits")
    if img.mode != "I" and not img.mode.startswith("I;16"):
        return img
    a = np.asarray(img).astype(np.float64)
    if a.size and (a.min() < 0 or a.max() > 65535):
        raise ValueError(f"32-bit integer pixels outside 0..65535 (mode {img.mode})")
    return Image.fromarray(np.rint(a / 257.0).astype(np.uint8), mode="L")


def _resize_short(img, short: int):  # type: ignore[no-untyped-def]
    from PIL import Image

    if min(img.width, img.height) == short:
        return img
    scale = short / min(img.width, img.height)
    size = (max(short, round(img.width * scale)), max(short, round(img.height * scale)))
    return img.resize(size, Image.Resampling.BILINEAR)


def _random_crop_box(
    width: int, height: int, min_scale: float, rng: np.random.Generator
) -> tuple[float, float, float, float]:
    """A random crop of ``min_scale``..1 of the area at aspect 3/4..4/3 (ten tries, then the
    central crop at the nearest allowed aspect), as (left, top, right, bottom)."""
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(min_scale, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w = math.sqrt(target * aspect)
        h = math.sqrt(target / aspect)
        if w <= width and h <= height:
            left = rng.uniform(0, width - w)
            top = rng.uniform(0, height - h)
            return (left, top, left + w, top + h)
    aspect = min(max(width / height, 3 / 4), 4 / 3)
    w, h = (width, width / aspect) if width / height < aspect else (height * aspect, height)
    w, h = min(w, width), min(h, height)
    return ((width - w) / 2, (height - h) / 2, (width + w) / 2, (height + h) / 2)


class FolderData(Dataset):
    """Image files with labels; ``train`` selects the training crop. Items are
    ``(image, label)``; the sampler hands ``(index, seed)`` pairs for training crops."""

    def __init__(
        self,
        files: np.ndarray,
        labels: np.ndarray,
        classes: list[str],
        preprocess: Preprocess,
        train: bool = False,
    ) -> None:
        self.files, self.labels, self.classes = files, labels, classes
        self.preprocess, self.train = preprocess, train

    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.preprocess.input_shape

    def subset(self, indices: Tensor | np.ndarray) -> FolderData:
        idx = np.asarray(indices, dtype=np.int64)
        return FolderData(
            self.files[idx], self.labels[idx], self.classes, self.preprocess, self.train
        )

    def with_classes(self, classes: list[str], where: str) -> FolderData:
        """The same images labelled by their class names' places in ``classes`` (a model's
        outputs, in the order it was trained with); a class not among them is refused."""
        places = {c: i for i, c in enumerate(classes)}
        unknown = [c for c in self.classes if c not in places]
        if unknown:
            raise HaqError(
                f"{where} has {len(unknown)} class(es) the model was not trained on "
                f"({', '.join(unknown[:3])}); its classes, recorded by haq import: "
                f"{', '.join(classes[:3])}{', ...' if len(classes) > 3 else ''}"
            )
        place = np.array([places[c] for c in self.classes], dtype=np.int64)
        return FolderData(self.files, place[self.labels], classes, self.preprocess, self.train)

    def view(self, train: bool) -> FolderData:
        """The same images with the training (random) or evaluation (centre) crop."""
        return FolderData(self.files, self.labels, self.classes, self.preprocess, train)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, int]:
        from PIL import Image, UnidentifiedImageError

        index, seed = key if isinstance(key, tuple) else (key, None)
        rng = np.random.default_rng(seed) if self.train and seed is not None else None
        if self.train and rng is None:
            rng = np.random.default_rng(index)
        path = str(self.files[index])
        try:
            with Image.open(path) as img:
                x = self.preprocess(img, rng)
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise HaqError(f"cannot read image {path}: {err}") from err
        return x, int(self.labels[index])


class SeededSampler(Sampler):
    """Indices in order, or (``shuffle``) in a seeded random order that changes with every
    pass (unless ``repeat``: every pass the same); with ``seeds`` each index comes with its
    own seed for the random crop. Two samplers with the same seed give the same passes,
    whatever the number of loader workers."""

    def __init__(self, n: int, shuffle: bool, seed: int, seeds: bool, repeat: bool = False) -> None:
        self.n, self.shuffle, self.seed, self.seeds = n, shuffle, seed, seeds
        self.repeat = repeat
        self.passes = 0

    def __len__(self) -> int:
        return self.n

    def order_state(self) -> int:
        """Where the sequence of passes stands (a finetune's epoch checkpoint keeps it)."""
        return self.passes

    def set_order_state(self, state: int) -> None:
        self.passes = int(state)

    def __iter__(self) -> Iterator[int | tuple[int, int]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.passes)
        self.passes += not self.repeat
        order = torch.randperm(self.n, generator=gen) if self.shuffle else torch.arange(self.n)
        if not self.seeds:
            yield from order.tolist()
            return
        draws = torch.randint(0, 2**62, (self.n,), generator=gen)
        yield from zip(order.tolist(), draws.tolist(), strict=True)


def _scan(root: Path) -> tuple[list[str], list[str], list[int]]:
    """Sorted class folders and (file, class index) pairs of an ImageFolder directory.

    Hidden files and folders (a leading dot) are skipped. Symlinked directories are followed
    once: a directory already visited, another class's folder, or one that contains the
    folder being scanned (a link to ``..``), is skipped; a file reached twice (through links)
    is counted once, under the first class that reached it, with a note.
    """
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise HaqError(f"{root} has no class folders (expected {root}/<class>/<image files>)")
    top = os.path.realpath(root)
    class_dirs = {os.path.realpath(root / name) for name in classes}  # each is its class's
    visited: set[str] = set()
    seen: set[str] = set()
    files: list[str] = []
    labels: list[int] = []
    repeats = 0
    for label, name in enumerate(classes):
        own = os.path.realpath(root / name)
        for dirpath, dirnames, filenames in os.walk(root / name, followlinks=True):
            here = os.path.realpath(dirpath)
            foreign = here in class_dirs and here != own
            if foreign or here in visited or here == top or top.startswith(here + os.sep):
                dirnames.clear()  # a loop or a second way in: nothing new below
                continue
            visited.add(here)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in sorted(filenames):
                # hidden files are no images of the class: macOS copies leave "._x.jpg"
                # metadata beside every x.jpg, notebooks a .ipynb_checkpoints folder
                if Path(f).suffix.lower() in IMAGE_SUFFIXES and not f.startswith("."):
                    real = os.path.realpath(os.path.join(dirpath, f))
                    if real in seen:
                        repeats += 1
                        continue
                    seen.add(real)
                    files.append(os.path.join(dirpath, f))
                    labels.append(label)
    if repeats:
        print(f"note: {root}: {repeats} image file(s) reached twice through links, counted once",
              file=sys.stderr)  # fmt: skip
    if not files:
        raise HaqError(
            f"{root} has class folders but no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return classes, files, labels


def load_imagefolder(root: str | Path, preprocess: Preprocess, train: bool) -> FolderData:
    """The training (``train``) or test split of an ImageFolder directory (module docstring)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise HaqError(f"image folder {str(root)!r} not found")
    train_dir = root / "train" if (root / "train").is_dir() else root
    classes, files, labels = _scan(train_dir)
    data = FolderData(np.array(files), np.array(labels, dtype=np.int64), classes, preprocess)
    if (root / "val").is_dir():
        if train:
            return data
        val_classes, vfiles, vlabels = _scan(root / "val")
        unknown = sorted(set(val_classes) - set(classes))
        if unknown:
            raise HaqError(f"{root}/val has classes that train/ lacks: {', '.join(unknown[:5])}")
        missing = sorted(set(classes) - set(val_classes))
        if missing:
            print(f"warning: {root}/val has no images of {len(missing)} class(es) of train/ "
                  f"({', '.join(missing[:5])})", file=sys.stderr)  # fmt: skip
        shared = len({os.path.realpath(f) for f in files} & {os.path.realpath(f) for f in vfiles})
        if shared:
            print(f"warning: {root}: {shared} image file(s) of val/ are also in train/; the "
                  "test figure is not on unseen images", file=sys.stderr)  # fmt: skip
        remap = np.array([classes.index(c) for c in val_classes], dtype=np.int64)
        return FolderData(np.array(vfiles), remap[np.array(vlabels)], classes, preprocess)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0)).numpy()
    n_test = max(1, round(TEST_SHARE * len(data)))
    return data.subset(np.sort(order[n_test:] if train else order[:n_test]))
