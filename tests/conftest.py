"""Shared fixtures: small real models and layer specs built by hand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from haq.layers import LayerSpec


def conv_spec(
    ic: int, oc: int, k: int, hw: int, stride: int = 1, groups: int = 1, name: str = "conv"
) -> LayerSpec:
    """A LayerSpec for a 'same'-padded conv, computed by hand (no torch involved)."""
    out = (hw + 2 * (k // 2) - k) // stride + 1
    kind = "depthwise" if groups > 1 and groups == ic else ("pointwise" if k == 1 else "conv")
    n_w = oc * (ic // groups) * k * k
    return LayerSpec(
        0,
        name,
        kind,
        ic,
        oc,
        (k, k),
        (stride, stride),
        (k // 2, k // 2),
        groups,
        (hw, hw),
        (out, out),
        n_w,
        0,
        out * out * n_w,
    )


def linear_spec(fin: int, fout: int, name: str = "fc") -> LayerSpec:
    return LayerSpec(
        0,
        name,
        "linear",
        fin,
        fout,
        (1, 1),
        (1, 1),
        (0, 0),
        1,
        (1, 1),
        (1, 1),
        fin * fout,
        fout,
        fin * fout,
    )


class TinyNet(nn.Module):
    """A small CNN the project did not define in its registry, for 'any model' paths."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, groups=8),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(1))


@pytest.fixture
def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return TinyNet()


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> str:
    """A TinyNet trained for a few seconds on digits (about 98% test top-1), as a checkpoint."""
    from haq.checkpoint import CheckpointMeta, save_checkpoint
    from haq.data import TensorLoader, load_dataset
    from haq.train import finetune

    torch.manual_seed(0)
    model = TinyNet()
    finetune(
        model, TensorLoader(load_dataset("digits"), 64, shuffle=True), epochs=4, lr=0.05, seed=0
    )
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, model, CheckpointMeta("tests.conftest:TinyNet", (1, 8, 8), "digits"))
    return str(path)


def stop_at_step(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Ctrl-C in a finetune: the ``n``-th SGD step from now raises KeyboardInterrupt (undo
    with ``monkeypatch.undo()``)."""
    original, steps = torch.optim.SGD.step, {"n": 0}

    def step(self: torch.optim.SGD, *args: object, **kwargs: object) -> object:
        steps["n"] += 1
        if steps["n"] == n:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", step)


def stopped_and_resumed(
    run: Callable[..., Any], where: Any, monkeypatch: pytest.MonkeyPatch, step: int
) -> Any:
    """``run(where)`` stopped by Ctrl-C at its ``step``-th SGD step, then run again with the
    same epoch checkpoint ``where``: what the second try returns (the checkpoint must exist
    between the two)."""
    stop_at_step(monkeypatch, step)
    with pytest.raises(KeyboardInterrupt):
        run(where)
    monkeypatch.undo()
    assert where.path.is_file()
    return run(where)
