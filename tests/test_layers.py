import pytest
import torch
from torch import nn

from haq.errors import HaqError
from haq.layers import extract_layers
from haq.models import create_model


def test_mobilenet_v2_layout():
    layers = extract_layers(create_model("mobilenet_v2"), (3, 224, 224))
    assert len(layers) == 53  # stem + 2 + 16*3 + last 1x1 + FC
    kinds = [s.kind for s in layers]
    assert kinds[0] == "conv" and kinds[-1] == "linear"
    assert kinds.count("depthwise") == 17
    assert layers[-2].out_channels == 1280
    assert layers[0].out_hw == (112, 112)
    # total MACs of MobileNet-V2 at 224 are ~300M (published figure)
    assert 290e6 < sum(s.macs for s in layers) < 310e6
    model = create_model("mobilenet_v2")
    weights = [m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert sum(s.n_weights for s in layers) == sum(weights)
    assert sum(s.n_bias for s in layers) == 1000  # only the classifier has a bias


def test_shapes_and_macs_exact(tiny_net):
    layers = extract_layers(tiny_net, (1, 8, 8))
    names = [s.name for s in layers]
    assert names == ["body.0", "body.2", "body.5", "head"]
    conv, dw, pw, fc = layers
    assert (conv.kind, dw.kind, pw.kind, fc.kind) == ("conv", "depthwise", "pointwise", "linear")
    assert conv.macs == 8 * 8 * 8 * 1 * 9
    assert dw.macs == 8 * 8 * 8 * 1 * 9 and dw.groups == 8
    assert pw.macs == 8 * 8 * 16 * 8
    assert fc.macs == 256 * 10 and fc.in_channels == 256
    assert [s.index for s in layers] == [0, 1, 2, 3]


def test_training_mode_restored(tiny_net):
    tiny_net.train()
    extract_layers(tiny_net, (1, 8, 8))
    assert tiny_net.training


def test_unsupported_layers_warned():
    model = nn.Sequential(nn.Conv3d(1, 2, 1), nn.Flatten(), nn.Linear(2 * 2 * 2 * 2, 3))
    with pytest.warns(UserWarning, match="Conv3d"):
        layers = extract_layers(model, (1, 2, 2, 2))
    assert [s.name for s in layers] == ["2"]


def test_no_quantizable_layers():
    with pytest.raises(HaqError, match="no quantizable layers"):
        extract_layers(nn.Sequential(nn.ReLU()), (1, 4, 4))


def test_rejected_input_shape():
    with pytest.raises(HaqError, match=r"rejected input shape \(1, 224, 224\)"):
        extract_layers(create_model("mobilenet_v2"), (1, 224, 224))


def test_linear_over_sequence_counts_rows():
    model = nn.Sequential(nn.Linear(4, 6))
    (spec,) = extract_layers(model, (5, 4))  # 5 rows of 4 features per sample
    assert spec.positions == 5 and spec.macs == 5 * 4 * 6


@pytest.mark.parametrize("name", ["mobilenet_v1", "resnet18", "resnet50"])
def test_registry_models_extract(name):
    layers = extract_layers(create_model(name), (3, 224, 224))
    assert layers[-1].kind == "linear" and layers[-1].out_channels == 1000
    x = torch.zeros(1, 3, 224, 224)
    assert create_model(name).eval()(x).shape == (1, 1000)


class _Shared(nn.Module):
    """One conv applied twice per forward pass (weight sharing)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.shared = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.shared(torch.relu(self.shared(torch.relu(self.stem(x)))))
        return self.head(x.mean((2, 3)))


def shared_model() -> nn.Module:
    return _Shared()


def test_a_layer_called_twice_is_named_once_in_a_warning(capsys):
    """Costed at one call (docs/decisions.md); the command line prints haq's warnings as one
    line like its errors, not Python's file:line form."""
    with pytest.warns(UserWarning, match="called more than once per forward pass are costed once: shared$"):  # fmt: skip
        layers = extract_layers(_Shared(), (1, 6, 6))
    assert [s.name for s in layers] == ["stem", "shared", "head"]
    assert layers[1].macs == 6 * 6 * 4 * 4 * 9  # one call's
    from haq.cli import main

    argv = ["cost", "--model", "tests.test_layers:shared_model", "--input-shape", "1,6,6"]
    assert main([*argv, "--hardware", "bitfusion"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["haq: warning: layers called more than once per forward pass are costed once: shared"]  # fmt: skip
