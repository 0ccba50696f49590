"""Quantizers, the quantize verb, and training utilities on real (digits) data."""

import copy
import itertools

import pytest
import torch

from haq.data import TensorLoader, load_dataset
from haq.errors import HaqError
from haq.models import create_model
from haq.policy import Policy
from haq.quant.api import quantize
from haq.quant.calibrate import Calibration
from haq.quant.kmeans import cluster_counts, kmeans_1d, shared_weight
from haq.quant.linear import quantize_symmetric, quantize_unsigned, weight_clip
from haq.quant.modules import quant_layers
from haq.train import Compiled, evaluate, finetune
from tests.conftest import stopped_and_resumed


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", train=True), load_dataset("digits", train=False)


@pytest.mark.parametrize("bits", range(1, 9))
def test_at_most_2_pow_b_values(bits):
    torch.manual_seed(bits)
    w = torch.randn(64, 32, 3, 3)
    for method in ("kl", "mse", "max"):
        q = quantize_symmetric(w, bits, weight_clip(w, bits, method))
        assert q.unique().numel() <= 2**bits
    a = quantize_unsigned(torch.rand(10000) * 6, bits, torch.tensor(4.0))
    assert a.unique().numel() <= 2**bits


def test_error_falls_as_bits_rise():
    torch.manual_seed(0)
    w = torch.randn(128, 64) * 0.1
    errors = [
        float(((quantize_symmetric(w, b, weight_clip(w, b)) - w) ** 2).mean()) for b in range(2, 9)
    ]
    assert all(e1 > e2 for e1, e2 in itertools.pairwise(errors))


@pytest.mark.parametrize("per_channel", [False, True])
def test_kl_clip_never_exceeds_max(per_channel):
    torch.manual_seed(1)
    for dist in (torch.randn(32, 200), torch.rand(32, 200) - 0.5, torch.randn(32, 200) ** 3):
        for bits in range(2, 9):
            clip = weight_clip(dist, bits, "kl", per_channel=per_channel)
            top = dist.abs().amax(dim=1) if per_channel else dist.abs().max()
            assert (clip <= top + 1e-7).all()
            assert (clip > 0).all()
    heavy = torch.cat([torch.randn(5000) * 0.01, torch.tensor([1.0])])  # one outlier
    assert float(weight_clip(heavy, 3, "kl")) < 0.5  # KL clips the outlier at low bits


def test_ste_passes_gradients():
    w = torch.randn(16, 8, requires_grad=True)
    quantize_symmetric(w, 4, torch.tensor(1.0)).sum().backward()
    assert w.grad is not None and (w.grad != 0).any()
    x = (torch.rand(100) * 3).requires_grad_()
    clip = torch.tensor(2.0, requires_grad=True)
    quantize_unsigned(x, 4, clip).sum().backward()
    assert (x.grad[x.detach() < 2.0] == 1).all() and (x.grad[x.detach() > 2.0] == 0).all()
    assert clip.grad is not None and float(clip.grad) > 0  # PACT: clip learns


def test_kmeans_clusters():
    torch.manual_seed(0)
    w = torch.randn(1000)
    c, assign = kmeans_1d(w, 8)
    assert c.numel() == 8 and assign.max() < 8
    assert float(((c[assign] - w) ** 2).mean()) < float(((c[assign].roll(1) - w) ** 2).mean())


def test_quantize_any_model_leaves_original(tiny_net, digits):
    train, _ = digits
    loader = TensorLoader(train, 128)
    before = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    cal = Calibration(tiny_net, loader)
    assert cal.layer_names == ["body.0", "body.2", "body.5", "head"]
    assert cal.reads_network_input["body.0"] and not cal.reads_network_input["body.2"]
    assert cal.signed["body.0"] and not cal.signed["head"]  # image normalised; after ReLU
    q = quantize(tiny_net, Policy.uniform("w4a4", cal.layer_names), calibration=cal)
    assert len(quant_layers(q)) == 4
    assert not any(type(m).__name__ == "QuantLayer" for m in tiny_net.modules())
    for k, v in tiny_net.state_dict().items():
        assert torch.equal(v, before[k])
    ql = quant_layers(q)
    assert not ql["body.0"].quantize_input and ql["body.2"].quantize_input
    w = ql["body.5"].quantized_weight()
    assert w.unique().numel() <= 16
    # same result from a plain loader as from a prebuilt Calibration
    q2 = quantize(tiny_net, Policy.uniform("w4a4", cal.layer_names), calibration=loader)
    x = train.images[:16]
    assert torch.allclose(q.eval()(x), q2.eval()(x))


def test_quantize_takes_a_policy_as_text_and_refuses_a_dataset_for_batches(
    tiny_net, digits, tmp_path
):
    """``quantize(model, "w4a4", ...)`` or a policy file, as the commands take them; a
    dataset passed where batches go is one clear error, not a TypeError or single images."""
    train, test = digits
    cal = Calibration(tiny_net, TensorLoader(train, 128))
    policy = Policy.from_arrays(cal.layer_names, [8, 3, 4, 2], [8, 4, 5, 6])
    policy.save(tmp_path / "p.json")
    x = train.images[:16]
    want = quantize(tiny_net, Policy.uniform("w4a4", cal.layer_names), calibration=cal).eval()(x)
    assert torch.equal(quantize(tiny_net, "w4a4", calibration=cal).eval()(x), want)
    from_file = quantize(tiny_net, tmp_path / "p.json", calibration=cal)
    assert [(m.w_bits, m.a_bits) for m in quant_layers(from_file).values()] == [
        (8, 8), (3, 4), (4, 5), (2, 6)
    ]  # fmt: skip
    with pytest.raises(HaqError, match="neither 'wXaY'"):
        quantize(tiny_net, "w4", calibration=cal)
    for verb, call in [
        ("calibration", lambda: Calibration(tiny_net, train)),
        ("evaluate", lambda: evaluate(tiny_net, test)),
        ("finetune", lambda: finetune(tiny_net, train, steps=1)),
    ]:
        with pytest.raises(HaqError, match=f"^{verb} takes batches, not a dataset"):
            call()


def test_prepare_computes_every_clip_up_front(tiny_net, digits):
    """Calibration.prepare fills the clip caches for all bit widths with the values a first
    use computes, so quantizing any policy afterwards computes no clip."""
    loader = TensorLoader(digits[0], 128)
    eager, lazy = Calibration(tiny_net, loader), Calibration(tiny_net, loader)
    eager.prepare(range(1, 9), "kl", per_channel=True)
    assert len(eager._act_cache) == len(eager._w_cache) == 8 * len(eager.layer_names)
    mods = dict(tiny_net.named_modules())
    for name in lazy.layer_names:
        for b in range(1, 9):  # prepared all at once, lazily one by one: the same clips
            w = mods[name].weight
            assert lazy.act_clip(name, b) == eager._act_cache[(name, b)]
            assert torch.equal(
                lazy.weight_clip(name, w, b, "kl", True), eager._w_cache[(name, b, "kl", True)]
            )
    before = dict(eager._w_cache)
    quantize(
        tiny_net, Policy.uniform("w3a5", eager.layer_names), calibration=eager, per_channel=True
    )
    assert eager._w_cache == before


def test_inference_fast_path_matches_training_path(tiny_net, digits):
    train, _ = digits
    q = quantize(
        tiny_net,
        Policy.uniform("w3a3", ["body.0", "body.2", "body.5", "head"]),
        calibration=TensorLoader(train, 128),
    ).eval()
    x = train.images[:64]
    with torch.no_grad():
        fast = q(x)
    slow = q(x)  # grad enabled: the STE path
    assert torch.allclose(fast, slow.detach(), atol=1e-4)


def test_kmeans_tied_after_finetune(tiny_net, digits):
    train, _ = digits
    names = ["body.0", "body.2", "body.5", "head"]
    q = quantize(
        tiny_net, Policy.uniform("w2a8", names, mode="kmeans"), calibration=TensorLoader(train, 128)
    )
    finetune(q, TensorLoader(train, 64, shuffle=True), steps=5, lr=0.05)
    for layer in quant_layers(q).values():
        assert layer.quantized_weight().unique().numel() <= 4
        assert not layer.quantize_input  # size mode: weights only


def test_kmeans_centroid_gets_mean_gradient():
    torch.manual_seed(0)
    w = torch.randn(40, 30)
    c, assign = kmeans_1d(w, 4)
    counts = cluster_counts(assign, 4)
    centroids = c.clone().requires_grad_(True)
    upstream = torch.randn(40, 30)
    (shared_weight(centroids, assign, counts) * upstream).sum().backward()
    for k in range(4):
        assert torch.allclose(centroids.grad[k], upstream[assign == k].mean(), atol=1e-6)


def test_kmeans_finetune_at_default_lr_does_not_collapse():
    """`haq finetune`'s lr (0.01, momentum 0.9) on the shipped MobileNet-V2-style model must
    improve a k-means model, not wreck it: with Deep Compression's summed centroid gradient
    this very run fell from 90 % to 9 % (chance) in 20 steps."""
    from haq.checkpoint import builtin_checkpoint, load_checkpoint
    from haq.layers import extract_layers

    ckpt = builtin_checkpoint("mobilenet_v2_fmnist")
    assert ckpt is not None
    model, _ = load_checkpoint(ckpt)
    train = load_dataset("fashion-mnist", train=True).subset(torch.arange(2560))
    test = load_dataset("fashion-mnist", train=False).subset(torch.arange(1000))
    names = [spec.name for spec in extract_layers(model, (1, 28, 28))]
    policy = Policy.uniform("w4a8", names, mode="kmeans")
    q = quantize(model, policy, calibration=TensorLoader(train, 128))
    before = evaluate(q, TensorLoader(test, 250)).top1
    finetune(q, TensorLoader(train, 64, shuffle=True), steps=20, lr=0.01, seed=0)
    after = evaluate(q, TensorLoader(test, 250)).top1
    assert before > 85.0 and after >= before - 1.0, (before, after)


def test_wrong_policy_names(tiny_net, digits):
    train, _ = digits
    bad = Policy.uniform("w8a8", ["body.0", "body.2", "body.5"])
    with pytest.raises(HaqError, match="no bits for layer 'head'"):
        quantize(tiny_net, bad, calibration=TensorLoader(train, 128))
    bad = Policy.uniform("w8a8", ["body.0", "body.2", "body.5", "tail"])
    with pytest.raises(HaqError, match="'tail', which the model does not have"):
        quantize(tiny_net, bad, calibration=TensorLoader(train, 128))


def test_signed_inputs_detected_in_mobilenet():
    model = create_model("mobilenet_v2_fmnist").eval()
    x = torch.randn(8, 1, 28, 28)
    cal = Calibration(model, [(x, torch.zeros(8, dtype=torch.long))], batches=1)
    # block 3's expansion conv reads the linear bottleneck (+ residual) output: signed
    assert cal.signed["features.3.conv.0.0"]
    # a depthwise conv reads a ReLU6 output: unsigned
    assert not cal.signed["features.3.conv.1.0"]


def test_finetune_improves_and_is_deterministic(tiny_net, digits):
    train, test = digits
    start = evaluate(tiny_net, TensorLoader(test, 300)).top1

    def run():
        torch.manual_seed(0)
        from tests.conftest import TinyNet

        m = TinyNet()
        m.load_state_dict(tiny_net.state_dict())
        finetune(m, TensorLoader(train, 64, shuffle=True, seed=3), epochs=3, lr=0.05, seed=3)
        return m

    a, b = run(), run()
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    end = evaluate(a, TensorLoader(test, 300))
    assert end.top1 > start + 30 and end.top1 > 80 and end.n_images == 300
    assert end.top5 >= end.top1


def test_a_finetune_stopped_mid_epoch_continues_from_its_last_epoch_to_the_same_bits(
    tiny_net, digits, tmp_path, monkeypatch
):
    """A quantized finetune (3 epochs, shuffled, augmented, with dropout-free TinyNet and
    the quantizers' learnt clips) stopped in its third epoch and run again with the same
    checkpoint continues after epoch 2 and ends with the uninterrupted run's parameters and
    buffers, bit for bit; a state of another key is ignored."""
    from haq.train import EpochCheckpoint

    train, _ = digits
    cal = Calibration(tiny_net, TensorLoader(train, 128))
    policy = Policy.uniform("w4a4", cal.layer_names)

    def run(where=None):
        q = quantize(tiny_net, policy, calibration=cal)
        loader = TensorLoader(train, 128, shuffle=True, seed=5)  # 12 batches an epoch
        spec = {"lr": 0.05, "seed": 5, "augment": True}
        finetune(q, loader, epochs=3, checkpoint=where, **spec)
        return q.state_dict()

    clean = run()
    where = EpochCheckpoint(tmp_path / "f.partial", key="k")
    resumed = stopped_and_resumed(run, where, monkeypatch, 30)
    for key, value in clean.items():
        assert torch.equal(value, resumed[key]), key
    other = run(EpochCheckpoint(where.path, key="another"))  # starts over: the same result
    assert all(torch.equal(v, other[k]) for k, v in clean.items())
    where.path.write_bytes(b"cut short")  # a damaged state: a note, and a fresh start
    damaged = run(where)
    assert all(torch.equal(v, damaged[k]) for k, v in clean.items())


def test_nan_loss_stops_clearly(tiny_net, digits):
    train, _ = digits
    with pytest.raises(HaqError, match="diverged"):
        finetune(tiny_net, TensorLoader(train, 64), steps=50, lr=1e12, momentum=0.0)


def test_empty_dataset(digits):
    train, _ = digits
    with pytest.raises(HaqError, match="empty"):
        TensorLoader(train.subset(torch.tensor([], dtype=torch.long)), 8)


def test_pact_function_matches_autograd_of_the_formula() -> None:
    """The memory-saving PACT function gives the values and gradients autograd gives for
    ``ste_round(min(relu(x), c) / s) * s``."""
    from haq.quant.linear import ste_round

    gen = torch.Generator().manual_seed(0)
    for bits in (2, 4, 8):
        x = (torch.randn(4, 8, 5, 5, generator=gen) * 2).requires_grad_()
        clip = torch.tensor(1.7, requires_grad=True)
        g = torch.randn(4, 8, 5, 5, generator=gen)
        x2 = x.detach().clone().requires_grad_()
        clip2 = clip.detach().clone().requires_grad_()
        scale = clip2 / (2**bits - 1)
        ref = ste_round(torch.minimum(torch.relu(x2), clip2) / scale) * scale
        (ref * g).sum().backward()
        out = quantize_unsigned(x, bits, clip)
        (out * g).sum().backward()
        assert torch.equal(out, ref)
        assert torch.allclose(x.grad, x2.grad) and torch.allclose(clip.grad, clip2.grad, atol=1e-5)


def test_finetune_under_torch_compile_trains_the_quantized_model(tiny_net, digits):
    """``compile=True`` trains the model it is given (the compiled module shares its
    parameters and buffers) and reaches what the eager finetune reaches, up to the rounding
    of the compiled kernels."""
    train, test = digits
    cal = Calibration(tiny_net, TensorLoader(train, 128))
    policy = Policy.uniform("w4a4", cal.layer_names)
    eager = quantize(tiny_net, policy, calibration=cal)
    compiled = quantize(tiny_net, policy, calibration=cal)
    before = {k: v.clone() for k, v in compiled.state_dict().items()}
    for model, flag in ((eager, False), (compiled, True)):
        loader = TensorLoader(train, 64, shuffle=True, seed=0)
        finetune(model, loader, steps=30, lr=0.02, seed=0, compile=flag)
    changed = [k for k, v in compiled.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.endswith("running_mean") for k in changed) and len(changed) > 8
    top = [evaluate(m, TensorLoader(test, 300)).top1 for m in (eager, compiled)]
    assert abs(top[0] - top[1]) < 3.0, top
    assert not compiled.training


def test_a_compiled_search_compiles_once_for_all_its_policies(digits):
    """``EvalSetup(compile=True)`` (``haq search --compile``): one quantized model with bits
    as tensors under torch.compile; new policies (signed and unsigned inputs, 2-8 bits)
    reuse the graphs compiled for the first one, and score what the eager evaluation scores
    up to the rounding of the compiled kernels (identical without finetuning)."""
    from torch._dynamo.utils import counters

    from haq.evaluation import EvalSetup, evaluate_policy

    train, test = digits
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 1),
        torch.nn.Tanh(),  # signed inputs for the last layer
        torch.nn.Flatten(),
        torch.nn.Linear(16 * 8 * 8, 10),
    )
    finetune(net, TensorLoader(train, 64, shuffle=True, seed=0), steps=60, lr=0.05, seed=0)
    heldout = test.subset(torch.arange(250))
    kw = {"eval_batch_size": 100, "batch_size": 64}  # a smaller last batch: the same graph
    setups = [
        EvalSetup.build(net, train, heldout, finetune_steps=steps, compile=flag, **kw)
        for steps in (0, 8)
        for flag in (False, True)
    ]
    torch._dynamo.reset()
    counters.clear()
    graphs = []
    for bits in ([8, 8, 8], [3, 5, 2], [6, 2, 7]):
        policy = Policy(setups[0].calibration.layer_names, bits, bits[::-1])
        top = [evaluate_policy(s, policy)[0].accuracy.top1 for s in setups]
        graphs.append(counters["stats"]["unique_graphs"])
        assert top[0] == top[1], top  # calibration only: the same images right
        assert abs(top[2] - top[3]) <= 3.0, top
    assert graphs[0] >= 2 and graphs[1] == graphs[2] == graphs[0], graphs
    torch._dynamo.reset()
    counters.clear()
    with torch.no_grad():  # the batch dimension is dynamic from the first call
        Compiled(net).eval()(test.images[:10]), Compiled(net).eval()(test.images[:7])
    assert counters["stats"]["unique_graphs"] == 1


@pytest.mark.parametrize("per_channel", [False, True])
def test_a_pruned_layer_or_channel_trains_without_nan(tiny_net, digits, per_channel):
    """All-zero weights (a pruned layer, pruned output channels) had a clip of 0, so the
    weight quantizer divided 0 by 0: NaN outputs and gradients, a finetune that "diverged".
    Their clip is a tiny positive number now; they quantize to exact zeros."""
    train, _ = digits
    net = copy.deepcopy(tiny_net)
    with torch.no_grad():
        net.body[2].weight.zero_()  # the depthwise conv, whole
        net.body[5].weight[:4].zero_()  # four output channels of the pointwise conv
    x, y = train.images[:32], train.labels[:32]
    for method, spec in itertools.product(("kl", "mse", "max"), ("w2a2", "w4a4", "w8a8")):
        q = quantize(net, spec, calibration=TensorLoader(train, 128), per_channel=per_channel, weight_clip=method)  # fmt: skip
        layers = quant_layers(q)
        assert (layers["body.2"].w_clip > 0).all()
        assert torch.equal(
            layers["body.2"].quantized_weight(), torch.zeros_like(net.body[2].weight)
        )
        assert not layers["body.5"].quantized_weight()[:4].any()
        q.train()
        torch.nn.functional.cross_entropy(q(x), y).backward()
        for name, p in q.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), (method, spec, name)
        assert torch.isfinite(q.eval()(x)).all()
