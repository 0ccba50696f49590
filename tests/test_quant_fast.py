"""The fast quantizers against the formulas they replace (tests/reference_quant.py): the same
quantized values and the same gradients, to the last bit, on every bit width 1-8, signed and
unsigned activations, per-tensor and per-channel weight clips. Bit for bit because the short
finetune of a search turns a difference in the last bit into a different accuracy."""

import numpy as np
import pytest
import torch

from haq.errors import HaqError
from haq.models import create_model
from haq.policy import Policy
from haq.quant.api import Requantizer, quantize
from haq.quant.calibrate import Calibration
from haq.quant.linear import (
    act_inference,
    act_inference_levels,
    inference_scales,
    pact,
    quantize_signed_act,
    quantize_symmetric,
    quantize_unsigned,
    signed_levels,
    signed_pact,
    symmetric_grid,
    unsigned_levels,
)
from haq.quant.modules import QuantLayer, quant_layers
from tests import reference_quant as ref

BITS = range(1, 9)


def _run(fn, x, clip, grad):
    """fn(x, clip)'s value and the gradients of x and (a learnable) clip."""
    x = x.clone().requires_grad_()
    clip = clip.clone().requires_grad_(clip.dim() == 0)
    y = fn(x, clip)
    y.backward(grad)
    return y.detach(), x.grad, clip.grad


def _assert_same(new, old):
    for a, b in zip(new, old, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.equal(a, b)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("per_channel", [False, True])
def test_weight_quantizer_equals_reference(bits, per_channel):
    torch.manual_seed(bits)
    w = torch.randn(16, 8, 3, 3) * 0.2
    w[0, 0, 0, 0] = 0.0  # sign(0) is +1 at 1 bit
    clip = ref.weight_clip(w, bits, "kl", per_channel)
    shaped = clip.view(-1, 1, 1, 1) if per_channel else clip
    g = torch.randn_like(w)
    new = _run(lambda x, c: quantize_symmetric(x, bits, c.detach()), w, shaped, g)
    old = _run(lambda x, c: ref.quantize_symmetric(x, bits, c.detach()), w, shaped, g)
    _assert_same(new, old)
    assert max(row.unique().numel() for row in new[0]) <= 2**bits


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("signed", [False, True])
def test_activation_quantizer_equals_reference(bits, signed):
    torch.manual_seed(100 + bits)
    x = torch.randn(8, 16, 7, 7) * 2 if signed else torch.relu(torch.randn(8, 16, 7, 7)) * 3
    a_clip = torch.tensor(1.25)
    # zero, beyond the clip both ways, and exact ties with the clip (autograd halves those)
    x[0, 0, 0, :5] = torch.tensor([0.0, 1.5, -1.5, 1.25, -1.25])
    g = torch.randn_like(x)
    new_fn = quantize_signed_act if signed else quantize_unsigned
    new = _run(lambda x, c: new_fn(x, bits, c.abs() + 1e-8), x, a_clip, g)
    old = _run(lambda x, c: ref.quantize_activation(x, c, bits, signed), x, a_clip, g)
    _assert_same(new, old)
    assert new[0].unique().numel() <= 2**bits
    with torch.no_grad():
        fast = act_inference(x, inference_scales(a_clip.abs() + 1e-8, bits, signed))
        assert torch.equal(fast, ref.quantize_activation(x, a_clip, bits, signed))


def test_quantized_model_trains_like_the_reference(monkeypatch):
    """A whole quantized MobileNet-V2 (unsigned and signed inputs, mixed bits): the loss and
    every gradient of a training step equal the reference quantizers' to the last bit."""
    torch.manual_seed(0)
    model = create_model("mobilenet_v2_fmnist")
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    calib = Calibration(model, [(x, y)], batches=1)
    n = len(calib.layer_names)
    bits = torch.randint(2, 9, (2, n), generator=torch.Generator().manual_seed(1))
    policy = Policy.from_arrays(calib.layer_names, bits[0].numpy(), bits[1].numpy())
    assert any(calib.signed.values()) and not all(calib.signed.values())

    def step():
        q = quantize(model, policy, calibration=calib).train()
        torch.manual_seed(2)  # the same dropout draws
        loss = torch.nn.functional.cross_entropy(q(x), y)
        loss.backward()
        return [loss.detach()] + [p.grad for p in q.parameters() if p.grad is not None]

    fast = step()
    monkeypatch.setattr(
        QuantLayer,
        "quantize_activation",
        lambda self, x: ref.quantize_activation(x, self.a_clip, self.a_bits, self.a_signed),
    )
    monkeypatch.setattr(
        QuantLayer,
        "quantized_weight",
        lambda self: ref.quantized_weight(self.layer.weight, self.w_clip, self.w_bits),
    )
    reference = step()
    assert len(fast) == len(reference) > n
    for a, b in zip(fast, reference, strict=True):
        assert torch.equal(a, b)


# --- weight clip searches ------------------------------------------------------------------
def _clip_rows():
    """Real weights (a depthwise, a pointwise and the classifier layer of the shipped
    MobileNet-V2) and hand-made rows with ties: zeros, constants, repeated values, values all
    above most candidate thresholds (the depthwise rows of 9 weights often are)."""
    model = create_model("mobilenet_v2_fmnist")
    mods = dict(model.named_modules())
    convs = [n for n, m in mods.items() if isinstance(m, torch.nn.Conv2d)]
    weights = [mods[n].weight.detach() for n in (convs[1], convs[2], convs[-1])]
    weights.append(mods["classifier.1"].weight.detach() if "classifier.1" in mods else weights[0])
    made = torch.tensor(
        [
            [0.0] * 9,
            [0.5] * 9,
            [0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 2.0, 0.0, 3.0],
            list(range(9)),
            [0.6, 0.7, 0.8, 0.9, 1.0, 0.75, 0.85, 0.95, 0.65],  # nothing below most thresholds
        ],
        dtype=torch.float32,
    )
    return [*weights, made, -made]


@pytest.mark.parametrize("method", ["kl", "mse"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_weight_clip_searches_equal_one_row_searches(method, per_channel):
    """All rows scored at once (and near ties settled exactly) give the clips of the old
    one-row-at-a-time search, to the last bit, at every bit width; except an all-zero row,
    whose clip of 0 made NaN (now ZERO_ROW_CLIP from 2 bits)."""
    from haq.quant.linear import ZERO_ROW_CLIP, weight_clip

    for w in _clip_rows():
        for bits in BITS:
            new = weight_clip(w, bits, method, per_channel)
            old = ref.weight_clip(w, bits, method, per_channel)
            if bits > 1:
                old = torch.where(old > 0, old, ZERO_ROW_CLIP)
            assert torch.equal(new, old), (tuple(w.shape), bits)


def test_row_histograms_equal_numpy_histograms():
    """The histograms of many rows at once equal np.histogram's of each row (counts and
    edges to the last bit), values on the bin edges and at the max included."""
    from haq.quant.linear import _row_histograms

    gen = np.random.default_rng(0)
    rows = np.abs(gen.standard_normal((64, 300))) * gen.uniform(1e-3, 10.0, (64, 1))
    edges = np.linspace(0.0, rows[:8].max(axis=1), 33, axis=1)
    rows[:8, :33] = edges  # every edge of a 32-bin histogram, exactly
    rows[8:16, :5] = rows[8:16].max(axis=1, keepdims=True)  # the max repeated
    for n_bins in (32, 512):
        counts, got = _row_histograms(rows, n_bins)
        for r, row in enumerate(rows):
            want, want_edges = np.histogram(row, bins=n_bins, range=(0.0, row.max()))
            assert np.array_equal(counts[r], want) and np.array_equal(got[r], want_edges)


# --- bits as tensors (the compiled search's reused model) ----------------------------------
@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("per_channel", [False, True])
def test_weight_levels_as_tensors_equal_the_integer_quantizer(bits, per_channel):
    """Grid sizes held in 0-d tensors (what a compiled model reads) give the integer
    quantizer's values and gradients bit for bit."""
    torch.manual_seed(200 + bits)
    w = torch.randn(16, 8, 3, 3) * 0.2
    g = torch.randn_like(w)
    clip = torch.rand(16).view(-1, 1, 1, 1) * 0.5 + 0.1 if per_channel else torch.tensor(0.45)
    levels = torch.tensor(float(signed_levels(bits)))
    new = _run(lambda x, c: symmetric_grid(x, c, levels), w, clip, g)
    _assert_same(new, _run(lambda x, c: quantize_symmetric(x, bits, c), w, clip, g))


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("signed", [False, True])
def test_activation_levels_as_tensors_equal_the_integer_quantizers(bits, signed):
    """The same for activations, in training (PACT, signed PACT) and in inference."""
    torch.manual_seed(300 + bits)
    x = torch.randn(8, 16, 7, 7) * 2 if signed else torch.relu(torch.randn(8, 16, 7, 7)) * 3
    x[0, 0, 0, :3] = torch.tensor([0.0, 1.25, -1.25])  # ties with the clip
    g, a_clip = torch.randn_like(x), torch.tensor(1.25)
    steps = torch.tensor(float(signed_levels(bits) if signed else unsigned_levels(bits)))
    fn, old_fn = (signed_pact, quantize_signed_act) if signed else (pact, quantize_unsigned)
    new = _run(lambda x, c: fn(x, c.abs() + 1e-8, steps), x, a_clip, g)
    _assert_same(new, _run(lambda x, c: old_fn(x, bits, c.abs() + 1e-8), x, a_clip, g))
    with torch.no_grad():
        clip = a_clip.abs() + 1e-8
        fast = act_inference_levels(x, clip, steps, signed)
        assert torch.equal(fast, act_inference(x, inference_scales(clip, bits, signed)))


def test_a_reloaded_model_trains_like_a_fresh_quantized_copy():
    """Requantizer: one quantized model loaded with policy after policy (after a training
    step changed its weights, clips and statistics) trains and infers exactly like the copy
    ``quantize`` makes for each policy; a layer at 1 bit included."""
    torch.manual_seed(0)
    model = create_model("mobilenet_v2_fmnist")
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    calib = Calibration(model, [(x, y)], batches=1)
    n = len(calib.layer_names)
    gen = torch.Generator().manual_seed(3)
    rq = Requantizer(model, calib)

    def step(q):
        q.train()
        torch.manual_seed(2)
        loss = torch.nn.functional.cross_entropy(q(x), y)
        loss.backward()
        out = [loss.detach()] + [p.grad.clone() for p in q.parameters() if p.grad is not None]
        with torch.no_grad():
            torch.optim.SGD(q.parameters(), lr=0.1).step()  # the next load must undo this
            out.append(q.eval()(x))
        q.zero_grad(set_to_none=True)
        return out

    for i in range(3):
        w, a = torch.randint(2, 9, (2, n), generator=gen).numpy()
        w[5] = 1 if i == 1 else w[5]
        policy = Policy.from_arrays(calib.layer_names, w, a)
        fresh, reused = step(quantize(model, policy, calibration=calib)), step(rq.load(policy))
        assert len(fresh) == len(reused) > n
        for a_, b_ in zip(fresh, reused, strict=True):
            assert torch.equal(a_, b_)
    assert all(layer.bits_as_tensors for layer in quant_layers(rq.model).values())
    with pytest.raises(HaqError, match="linear-mode policies only"):
        rq.load(Policy(calib.layer_names, [4] * n, [8] * n, mode="kmeans"))
