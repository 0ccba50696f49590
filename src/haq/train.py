"""Finetuning, evaluation and from-scratch training on CPU or CUDA.

The device is chosen automatically (CUDA when available) and can be overridden with
``device="cpu"`` / ``"cuda:1"``. Loops longer than a few seconds show a progress bar.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from haq.data import check_batches
from haq.errors import HaqError
from haq.fileio import load_payload, save_payload
from haq.textfmt import progress_bar

Batches = Iterable[tuple[Tensor, Tensor]]


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device is not None:
        try:
            dev = torch.device(device)
        except RuntimeError as err:
            raise HaqError(f"unknown device {str(device)!r}; use cpu, cuda or cuda:N") from err
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise HaqError(f"device {device!r} requested but CUDA is not available")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Compiled(nn.Module):
    """``model`` under ``torch.compile`` with the batch dimension dynamic from the first call:
    one graph serves every batch size, so an epoch's last, smaller batch does not compile
    again (the reference model here, compiled for training at 64 and 32 and for evaluation:
    186 s, then 104 ms a step of 64, against 288 s and 137-149 ms with static shapes first;
    docs/decisions.md).
    Parameters and modes are ``model``'s."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.compiled = torch.compile(model)

    def forward(self, x: Tensor) -> Tensor:
        torch._dynamo.maybe_mark_dynamic(x, 0)
        return self.compiled(x)  # type: ignore[no-any-return]


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@dataclass(frozen=True)
class Accuracy:
    """Top-1 / top-5 accuracy in percent over ``n_images``, and the mean loss."""

    top1: float
    top5: float
    loss: float
    n_images: int


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Batches,
    device: str | torch.device | None = None,
    progress: bool = False,
    desc: str = "evaluate",
) -> Accuracy:
    """Top-1/top-5 accuracy (%) of ``model`` on ``loader``; the model is left in eval mode.
    ``progress``: a bar named ``desc``."""
    check_batches(loader, "evaluate")
    dev = pick_device(device) if device is not None else _model_device(model)
    model.to(dev, memory_format=_memory_format(dev)).eval()  # type: ignore[call-overload]
    sums = torch.zeros(3, dtype=torch.float64, device=dev)  # loss, top-1, top-5 hits
    n = 0
    for x, y in progress_bar(loader, desc=desc, leave=False, disable=not progress):
        x, y = _to(x, dev), y.to(dev, non_blocking=True)
        out = model(x)
        top = out.topk(min(5, out.shape[1]), dim=1).indices
        hit = top.eq(y.unsqueeze(1))
        sums[0] += F.cross_entropy(out.float(), y, reduction="sum")
        sums[1] += hit[:, 0].sum()
        sums[2] += hit.any(dim=1).sum()
        n += int(y.shape[0])
    if n == 0:
        raise HaqError("cannot evaluate on an empty dataset")
    loss_sum, correct1, correct5 = sums.tolist()  # the one host synchronisation
    if not math.isfinite(loss_sum):
        raise HaqError("the model produced NaN/inf outputs during evaluation")
    return Accuracy(100.0 * correct1 / n, 100.0 * correct5 / n, loss_sum / n, n)


def _memory_format(dev: torch.device) -> torch.memory_format:
    """channels_last on CUDA (faster convolutions), the default layout elsewhere."""
    return torch.channels_last if dev.type == "cuda" else torch.preserve_format


def _to(x: Tensor, dev: torch.device) -> Tensor:
    if dev.type == "cuda" and x.dim() == 4:
        return x.to(dev, non_blocking=True, memory_format=torch.channels_last)
    return x.to(dev, non_blocking=True)


def _cycle(loader: Batches, steps: int) -> Iterable[tuple[Tensor, Tensor]]:
    done = 0
    while done < steps:
        empty = True
        for batch in loader:
            empty = False
            yield batch
            done += 1
            if done >= steps:
                return
        if empty:
            raise HaqError("cannot finetune on an empty dataset")


def load_optimizers() -> None:
    """Pay now what a process's first optimizer costs: torch.optim imports torch.compile's
    machinery on first use (1.5 s on a 2-core CPU). A search calls it in its setup, so its
    first episode is not slower than the next."""
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)


def augment_batch(x: Tensor, generator: torch.Generator, pad: int = 2, flip: bool = True) -> Tensor:
    """Random shift by up to ``pad`` pixels and (``flip``) random horizontal flip, batch-wise."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dy, dx = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=generator))
    out = padded[:, :, dy : dy + h, dx : dx + w]
    if not flip:
        return out
    flipped = torch.rand(n, generator=generator) < 0.5
    return torch.where(flipped.view(n, 1, 1, 1).to(x.device), out.flip(3), out)


@dataclass(frozen=True)
class TrainSpec:
    """How a finetune trains: SGD with momentum, the learning-rate schedule (``cosine`` to 0
    or ``constant``), augmentation (shifts of up to 2 pixels, with ``flip`` mirroring half),
    label smoothing, and ``compile``: the training step under ``torch.compile`` (minutes to
    compile, then faster steps: for long finetunes; docs/quantization.md)."""

    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 4e-5
    schedule: str = "cosine"
    augment: bool = False
    flip: bool = True
    label_smoothing: float = 0.0
    compile: bool = False


@dataclass(frozen=True)
class EpochCheckpoint:
    """Where a finetune saves its state at the end of every epoch but the last (model,
    optimizer, step, the random generators and the loader's shuffle order), and ``key``: the
    caller's digest of everything that decides the result. A finetune finding a state of its
    key at ``path`` continues from it, with the very result of an uninterrupted run (for
    haq's loaders; a loader of another kind restarts its order); a state of another key is
    replaced."""

    path: Path
    key: str


def finetune(
    model: nn.Module,
    loader: Batches,
    steps: int | None = None,
    epochs: float | None = None,
    device: str | torch.device | None = None,
    seed: int | None = None,
    progress: bool | None = None,
    checkpoint: EpochCheckpoint | None = None,
    **spec: Any,
) -> nn.Module:
    """Train ``model`` in place for ``steps`` batches or ``epochs`` passes, as ``spec`` (the
    fields of :class:`TrainSpec`: lr, momentum, weight_decay, schedule, augment, flip,
    label_smoothing, compile) says; ``checkpoint``: save each epoch's end and continue from
    it (:class:`EpochCheckpoint`). A NaN/inf loss stops with a :class:`HaqError` instead of
    going on to report a meaningless accuracy. Returns the model."""
    check_batches(loader, "finetune")
    train = TrainSpec(**spec)
    if (steps is None) == (epochs is None):
        raise ValueError("give exactly one of steps or epochs")
    if steps is None:
        try:
            per_epoch = len(loader)  # type: ignore[arg-type]
        except TypeError as err:
            raise ValueError("epochs needs a loader with a length; give steps") from err
        steps = max(1, round(float(epochs or 0) * per_epoch))
    if steps <= 0:
        return model
    with torch.random.fork_rng():  # dropout draws seeded; the caller's RNGs untouched
        if seed is not None:
            torch.manual_seed(seed)
        _train(model, loader, steps, train, device, seed, progress, checkpoint)
    return model


def _train(
    model: nn.Module,
    loader: Batches,
    steps: int,
    spec: TrainSpec,
    device: str | torch.device | None,
    seed: int | None,
    progress: bool | None,
    checkpoint: EpochCheckpoint | None = None,
) -> None:
    gen = torch.Generator().manual_seed(0 if seed is None else seed)
    dev = pick_device(device) if device is not None else _model_device(model)
    model.to(dev, memory_format=_memory_format(dev)).train()  # type: ignore[call-overload]
    forward = Compiled(model) if spec.compile else model
    cuda = dev.type == "cuda"
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(
        params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay, foreach=True
    )
    epoch = _epoch_length(loader) if checkpoint else None
    state = _Resumable(model, opt, gen, loader, dev)
    start = state.restore(checkpoint, steps) if checkpoint else 0
    show = steps >= 200 if progress is None else progress
    bar = progress_bar(total=steps, initial=start, desc="finetune", leave=False, disable=not show)
    for step, (x, y) in enumerate(_cycle(loader, steps - start), start):
        if spec.schedule == "cosine":
            for g in opt.param_groups:
                g["lr"] = 0.5 * spec.lr * (1 + math.cos(math.pi * step / steps))
        x, y = _to(x, dev), y.to(dev, non_blocking=True)
        if spec.augment:
            x = augment_batch(x, gen, flip=spec.flip)
        loss = F.cross_entropy(forward(x), y, label_smoothing=spec.label_smoothing)
        # a host synchronisation on CUDA: there only every 20 steps and at the end
        check = not cuda or step % 20 == 0 or step == steps - 1
        if check and not torch.isfinite(loss):
            bar.close()
            raise HaqError(
                f"finetuning diverged: the loss became {float(loss.detach())} at step {step}; "
                "lower the learning rate or raise the bit widths"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update(1)
        if step % 20 == 0 and show:
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        if checkpoint and epoch and (step + 1) % epoch == 0 and step + 1 < steps:
            state.save(checkpoint, step + 1, steps)
    bar.close()
    model.eval()


def _epoch_length(loader: Batches) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def _order_keeper(loader: Batches) -> Any:
    """What holds a haq loader's place in its sequence of shuffled passes (and augmentation
    seeds): the loader, or its sampler; None for other loaders."""
    source = loader.sampler if isinstance(loader, torch.utils.data.DataLoader) else loader
    return source if hasattr(source, "order_state") else None


FINETUNE_STATE = "haq-finetune-state-1"


@dataclass
class _Resumable:
    """What a finetune needs to continue where an epoch ended, to the last bit."""

    model: nn.Module
    opt: torch.optim.Optimizer
    gen: torch.Generator
    loader: Batches
    dev: torch.device

    def _rngs(self) -> dict[str, Any]:
        order = _order_keeper(self.loader)
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(self.dev) if self.dev.type == "cuda" else None,
            "augment": self.gen.get_state(),
            "order": order.order_state() if order is not None else None,
        }

    def save(self, where: EpochCheckpoint, step: int, steps: int) -> None:
        state = {"model": self.model.state_dict(), "optimizer": self.opt.state_dict()}
        save_payload(
            {"format": FINETUNE_STATE, "key": where.key, "step": step, "steps": steps,
             "state": state, "rngs": self._rngs()}, where.path,
        )  # fmt: skip

    def restore(self, where: EpochCheckpoint, steps: int) -> int:
        """The step to continue from (0: nothing of this finetune saved)."""
        if not where.path.is_file():
            return 0
        try:
            saved = load_payload(where.path, FINETUNE_STATE, "finetune state")
        except HaqError as err:  # cut short or damaged: it only ever saves time
            print(f"note: {err}; starting over", file=sys.stderr)
            return 0
        if saved["key"] != where.key or saved["steps"] != steps:
            print(f"note: {where.path} is of another finetune; starting over", file=sys.stderr)
            return 0
        self.model.load_state_dict(saved["state"]["model"])
        self.opt.load_state_dict(saved["state"]["optimizer"])
        rngs = saved["rngs"]
        torch.set_rng_state(rngs["torch"])
        if rngs["cuda"] is not None and self.dev.type == "cuda":
            torch.cuda.set_rng_state(rngs["cuda"], self.dev)
        self.gen.set_state(rngs["augment"])
        order = _order_keeper(self.loader)
        if order is not None and rngs["order"] is not None:
            order.set_order_state(rngs["order"])
        print(f"note: continuing the finetune at step {saved['step']} of {steps} ({where.path})", file=sys.stderr)  # fmt: skip
        return int(saved["step"])
