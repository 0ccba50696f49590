"""Evaluate one policy: quantize, finetune briefly, measure accuracy.

This is a self-contained step (policy in, accuracy and timings out) shared by ``haq eval``
and the search, so a later change can run several evaluations on several workers or GPUs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from torch import nn
from torch.utils.data import DataLoader

from haq.data import Data, calibration_loader, inference_batch, make_loader
from haq.policy import Policy, policy_arg, policy_for
from haq.quant.api import Requantizer, quantize
from haq.quant.calibrate import Calibration
from haq.specs import DataSpec, ModelSpec, QuantSpec
from haq.train import Accuracy, Compiled, evaluate, finetune


@dataclass
class EvalSetup:
    """Everything an evaluation needs besides the policy; built once per run."""

    model: nn.Module
    calibration: Calibration
    finetune_data: Data
    eval_data: Data
    finetune_steps: int = 0
    lr: float = 0.01  # the search's per-episode learning rate (SearchConfig.lr)
    batch_size: int = 128
    eval_batch_size: int = 512
    seed: int = 0
    quant: QuantSpec = field(default_factory=QuantSpec)  # clips; its calib_batches built it
    device: str | None = None
    workers: int | None = None  # loader processes for data on disk (None: default_workers)
    compile: bool = False  # one quantized model reloaded per policy, run under torch.compile
    reused: tuple[Requantizer, nn.Module] | None = field(default=None, repr=False)
    loaders: dict[tuple[int, int, bool], tuple[Data, Any]] = field(default_factory=dict, repr=False)

    def loader(
        self, data: Data, batch_size: int, shuffle: bool = False, start: bool = False
    ) -> Any:
        """Seeded batches of ``data``, the same every pass (pinned memory on CUDA); made once
        per data subset, so loader workers start once per run, not once per episode. With
        ``start`` a loader made now begins its first pass at once (:class:`Started`)."""
        key = (id(data), batch_size, shuffle)  # the entry holds ``data``: the id stays its own
        if key not in self.loaders:
            cuda = self.device is not None and str(self.device).startswith("cuda")
            loader: Any = make_loader(
                data, batch_size, shuffle, self.seed, self.workers, cuda, persistent=True
            )
            if start and isinstance(loader, DataLoader) and loader.num_workers > 0:
                loader = Started(loader)
            self.loaders[key] = (data, loader)
        return self.loaders[key][1]

    def start_loaders(self) -> None:
        """Make the finetune and held-out loaders now and start their first passes: loader
        workers boot and decode their first batches in the background (while the caller
        calibrates and evaluates), not during the first episode."""
        self.loader(self.eval_data, self.eval_batch_size, start=True)
        if self.finetune_steps > 0:
            self.loader(self.finetune_data, self.batch_size, shuffle=True, start=True)

    def quantized(self, policy: Policy) -> nn.Module:
        """``policy``'s quantized model: a new copy, or with ``compile`` the one reused model
        loaded with it, as the compiled module that runs it (compiled on its first call)."""
        if not self.compile:
            q = self.quant
            return quantize(
                self.model,
                policy,
                calibration=self.calibration,
                per_channel=q.per_channel,
                weight_clip=q.weight_clip,
            )
        if self.reused is None:
            rq = Requantizer(
                self.model, self.calibration, self.quant.per_channel, self.quant.weight_clip
            )
            self.reused = (rq, Compiled(rq.model))
        self.reused[0].load(policy)
        return self.reused[1]

    @classmethod
    def build(
        cls,
        model: nn.Module,
        finetune_data: Data,
        eval_data: Data,
        quant: QuantSpec | None = None,
        **kwargs: object,
    ) -> EvalSetup:
        """Calibrate on the first ``quant.calib_batches`` x 256 images of ``finetune_data``
        (training images only, with the evaluation crop)."""
        model.eval()
        quant = quant or QuantSpec()
        workers = kwargs.get("workers")
        loader, n = calibration_loader(finetune_data.view(False), quant.calib_batches, workers)  # type: ignore[arg-type]
        calib = Calibration(model, loader, batches=n)
        device = cast("str | None", kwargs.get("device"))
        kwargs.setdefault("eval_batch_size", inference_batch(eval_data, 512, device))
        return cls(model, calib, finetune_data, eval_data, quant=quant, **kwargs)  # type: ignore[arg-type]


class Started:
    """A persistent DataLoader whose first pass began when it was wrapped (its workers boot
    and prefetch meanwhile); that pass is the first one iterated, later ones start over."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader
        self._first: Iterator[Any] | None = iter(loader)

    def __iter__(self) -> Iterator[Any]:
        first, self._first = self._first, None
        return first if first is not None else iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


@dataclass(frozen=True)
class EvalResult:
    accuracy: Accuracy
    finetune_s: float
    eval_s: float


def evaluate_policy(
    setup: EvalSetup, policy: Policy, return_model: bool = False, progress: bool = False
) -> tuple[EvalResult, nn.Module | None]:
    """Quantize ``setup.model`` with ``policy``, finetune ``finetune_steps`` batches (fixed
    seed, so the same policy always gives the same accuracy on CPU), then evaluate (with
    ``progress``, bars for both). With ``setup.compile`` the returned model is the reused
    one: the next evaluation changes it."""
    t1 = time.perf_counter()
    q = setup.quantized(policy)
    if setup.finetune_steps > 0:
        loader = setup.loader(setup.finetune_data, setup.batch_size, shuffle=True)
        finetune(
            q, loader, steps=setup.finetune_steps, lr=setup.lr, seed=setup.seed,
            device=setup.device, progress=progress or None,
        )  # fmt: skip
    t2 = time.perf_counter()
    held_out = setup.loader(setup.eval_data, setup.eval_batch_size)
    acc = evaluate(q, held_out, device=setup.device, progress=progress, desc=policy.name())
    t3 = time.perf_counter()
    return EvalResult(acc, t2 - t1, t3 - t2), (q if return_model else None)


@dataclass(frozen=True)
class EvalReport:
    """``haq eval``: one policy against full precision on a dataset's test split."""

    model: str
    n_images: int
    policy: Policy
    full_precision: Accuracy
    quantized: EvalResult
    cost: dict[str, Any] | None  # the policy's totals on ``hardware`` (policy_report)
    hardware: str | None

    def format(self, dataset: str, device: str, finetune_steps: int) -> str:
        """The report as ``haq eval`` prints it."""
        fp, q, policy = self.full_precision, self.quantized, self.policy
        name = policy.name()
        lines = [
            f"model {self.model}  dataset {dataset} test set ({self.n_images} images)  "
            f"device {device}",
            f"full precision   top-1 {fp.top1:6.2f}%   top-5 {fp.top5:6.2f}%",
            f"{name:16s} top-1 {q.accuracy.top1:6.2f}%   top-5 {q.accuracy.top5:6.2f}%   "
            f"({policy.mode}, {finetune_steps} finetune steps, {q.finetune_s + q.eval_s:.1f} s)",
        ]
        if self.cost is not None:
            t = self.cost
            energy = (
                "-"
                if t["energy_mj"] is None
                else f"{t['energy_mj']:.4f} mJ ({t['energy_vs_w8a8']:.3f}x)"
            )
            lines.append(
                f"cost on {self.hardware}: latency {t['latency_ms']:.4f} ms "
                f"({t['latency_vs_w8a8']:.3f}x of w8a8), energy {energy}, "
                f"weights {t['size_bytes'] / 1e3:.1f} kB ({t['size_vs_fp32']:.3f}x of fp32)"
            )
        return "\n".join(lines)


def eval_on_test(
    model: ModelSpec,
    data: DataSpec,
    quant: QuantSpec,
    policy: str,
    *,
    mode: str | None = None,
    hardware: str | None = None,
    progress: bool = False,
    **setup: Any,
) -> EvalReport:
    """Quantize a model with ``policy`` (wXaY or a policy file), finetune ``finetune_steps``
    batches of the training split if asked, and score it and the full-precision model on the
    test split (``progress``: bars for the passes). ``setup``: the options of
    :meth:`EvalSetup` (finetune_steps, lr, seed, device)."""
    from haq.checkpoint import check_outputs, model_splits, resolve_model
    from haq.costing import model_cost_table, policy_report

    net, meta = resolve_model(model.model_name(), model.checkpoint, model.weights)
    shape = cast("tuple[int, int, int]", tuple(meta.input_shape))
    train, test = model_splits(data.dataset, meta, data.crop_ratio, data.min_crop_scale)
    check_outputs(net, shape, test.num_classes, data.dataset)
    built = EvalSetup.build(net, train.view(True), test, quant, workers=data.workers, **setup)
    used = model.model_name() or meta.model  # the spec the model was built from
    pol = policy_for(policy_arg(policy, mode or "linear"), built.calibration.layer_names, used)
    if mode:
        pol.mode = mode
    test_loader = built.loader(test, built.eval_batch_size)
    fp = evaluate(net, test_loader, device=built.device, progress=progress, desc="full precision")
    result, _ = evaluate_policy(built, pol, progress=progress)
    cost, hw_name = None, None
    if hardware:
        table = model_cost_table(net, shape, hardware, None, meta.model)
        cost = policy_report(table, pol)["total"]
        hw_name = f"{table.hardware.name} (batch {table.hardware.batch})"
    return EvalReport(meta.model, fp.n_images, pol, fp, result, cost, hw_name)
