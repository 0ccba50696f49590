"""MobileNet-V1 and MobileNet-V2 with the standard ImageNet layouts.

Both take ``num_classes``, ``in_channels`` and ``width_mult``; ``stem_stride`` and
``stage_strides`` let small variants keep enough spatial resolution for 28x28 inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round channel counts as the MobileNet papers do (multiples of 8, never -10%)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """MobileNet-V2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_relu(cin, hidden, 1, 1))
        layers += [
            _conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


# (expansion t, channels c, repeats n) of the 7 stages; strides come separately.
_V2_STAGES = [(1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1)]
_V2_STRIDES = (1, 2, 2, 2, 1, 2, 1)


class MobileNetV2(nn.Module):
    """Stem, 17 inverted-residual blocks, 1x1 conv to 1280 (x width), global pool, FC."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        width_mult: float = 1.0,
        stem_stride: int = 2,
        stage_strides: Sequence[int] = _V2_STRIDES,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if len(stage_strides) != len(_V2_STAGES):
            raise ValueError(f"stage_strides needs {len(_V2_STAGES)} entries")
        cin = _make_divisible(32 * width_mult)
        last = _make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [_conv_bn_relu(in_channels, cin, 3, stem_stride)]
        for (t, c, n), s in zip(_V2_STAGES, stage_strides, strict=True):
            cout = _make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        features.append(_conv_bn_relu(cin, last, 1, 1))
        self.features = nn.Sequential(*features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


# (output channels, stride) of the 13 depthwise-separable blocks of MobileNet-V1.
_V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)]
_V1_BLOCKS += [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


class MobileNetV1(nn.Module):
    """Stem conv, 13 depthwise-separable blocks, global pool, FC."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        width_mult: float = 1.0,
        stem_stride: int = 2,
        block_strides: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        strides = list(block_strides) if block_strides else [s for _, s in _V1_BLOCKS]
        cin = _make_divisible(32 * width_mult)
        layers: list[nn.Module] = [_conv_bn_relu(in_channels, cin, 3, stem_stride)]
        for (c, _), s in zip(_V1_BLOCKS, strides, strict=True):
            cout = _make_divisible(c * width_mult)
            layers += [_conv_bn_relu(cin, cin, 3, s, groups=cin), _conv_bn_relu(cin, cout, 1, 1)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
