"""Prefix replay in the sensitivity pass: the same outputs as full passes, on models whose
forward code does what real models do (residual adds, in-place ReLUs, shared modules), and
off by itself where replaying would be wrong."""

import torch
from torch import nn

from haq.models import create_model
from haq.quant.api import set_layer
from haq.search.replay import PrefixReplay


def _passes(model, x, replay, changes):
    """(replayed, full) outputs for each (layer name, replacement module)."""
    out = []
    for name, new in changes:
        old = model.get_submodule(name)
        set_layer(model, name, new)
        try:
            replayed = replay.run(name, lambda: model(x))
            full = model(x)
        finally:
            set_layer(model, name, old)
        out.append((replayed, full))
    return out


def _scaled(layer: nn.Module, factor: float) -> nn.Module:
    new = type(layer).__new__(type(layer))
    new.__dict__.update(layer.__dict__)
    new._parameters = {
        k: (None if v is None else nn.Parameter(v * factor)) for k, v in layer._parameters.items()
    }
    return new


@torch.no_grad()
def test_replay_equals_full_passes_on_mobilenet():
    torch.manual_seed(0)
    model = create_model("mobilenet_v2_fmnist").eval()
    x = torch.randn(16, 1, 28, 28)
    replay = PrefixReplay(model, x)
    assert torch.equal(replay.output, model(x))
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    changes = [(n, _scaled(model.get_submodule(n), 0.5)) for n in names[::7]]
    for _ in range(2):  # the second time around each layer is not checked: still equal
        for replayed, full in _passes(model, x, replay, changes):
            assert torch.equal(replayed, full)
            assert not torch.equal(full, replay.output)  # the change did change the output
    assert replay.enabled
    # replayed modules really were skipped: a change made behind replay's back to an
    # early layer's weights does not show in a pass around a late layer
    early, late = names[0], names[-2]
    model.get_submodule(early).weight.mul_(0)
    with replay.around(late):
        assert torch.equal(model(x), replay.output)


class _MutatesInput(nn.Module):
    """Reads a tensor, then changes it in place after a later module has read it."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        h = self.a(x)
        out = self.b(h)
        h.mul_(3)  # b's input changes after b has read it
        return out + self.c(h)


@torch.no_grad()
def test_replay_turns_itself_off_when_it_would_differ():
    torch.manual_seed(0)
    model = _MutatesInput().eval()
    x = torch.randn(5, 4)
    replay = PrefixReplay(model, x)
    ((replayed, full),) = _passes(model, x, replay, [("b", _scaled(model.b, 2.0))])
    assert torch.equal(replayed, full)  # the checked first pass returned the full one
    assert not replay.enabled


@torch.no_grad()
def test_replay_stays_off_above_its_memory_limit():
    model = create_model("mobilenet_v2_fmnist").eval()
    x = torch.randn(4, 1, 28, 28)
    replay = PrefixReplay(model, x, max_bytes=1000)
    assert not replay.enabled and not replay.calls
    name = "features.3.conv.0.0"
    ((replayed, full),) = _passes(
        model, x, replay, [(name, _scaled(model.get_submodule(name), 0.5))]
    )
    assert torch.equal(replayed, full)
