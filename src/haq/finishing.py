"""The long final finetune of a chosen policy (``haq finetune``)."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from haq.checkpoint import CheckpointMeta, builtin_checkpoint, model_splits, resolve_model
from haq.data import Data, calibration_loader, inference_batch, make_loader
from haq.errors import HaqError
from haq.fileio import atomic_write_json, check_output, read_json
from haq.options import check_bounds
from haq.policy import Policy, Uniform, policy_arg, policy_for
from haq.quant.api import quantize
from haq.quant.calibrate import Calibration
from haq.quant.serialize import quantizer_facts, read_quantized, save_quantized
from haq.search.config import SearchConfig
from haq.search.rundir import RunDir
from haq.specs import DataSpec, FinetuneSpec, ModelSpec, QuantSpec
from haq.train import Accuracy, EpochCheckpoint, evaluate, finetune, pick_device


def final_finetune(
    policy: Policy | Uniform,
    model: ModelSpec,
    data: DataSpec,
    quant: QuantSpec,
    out: str | Path,
    train: FinetuneSpec | None = None,
    device: str | None = None,
    progress: bool = True,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Quantize the pretrained model with ``policy`` (or a uniform one), finetune on the whole
    training set as ``train`` says (SGD, cosine from its ``lr``), measure top-1 on the
    untouched test set, save the result. The quantizer settings ``quant`` should be the
    search's: ``haq finetune --run`` takes them from the run's configuration.

    The saved file holds the quantized model's state dict, the policy with its test
    accuracy, what is needed to rebuild it (``load_quantized``) and ``source``: the policy's
    digest plus what the caller says about where it came from (run directory, episode).
    """
    train = train or FinetuneSpec()
    why = check_bounds(train)
    if why:
        raise HaqError(why)
    check_output(out)  # not after the finetune
    net, meta = resolve_model(model.model_name(), model.checkpoint, model.weights)
    device = str(pick_device(device))
    train_data, test = model_splits(data.dataset, meta, data.crop_ratio, data.min_crop_scale)
    cuda = device.startswith("cuda")

    def batches(split: Data, size: int, shuffle: bool = False) -> Any:
        return make_loader(split, size, shuffle, train.seed, data.workers, pin_memory=cuda)

    calib = Calibration(net, *calibration_loader(train_data, quant.calib_batches, data.workers))
    policy = policy_for(policy, calib.layer_names, model.model_name() or meta.model)
    test_batch = inference_batch(test, 512, device)

    def score(m: Any, desc: str) -> Accuracy:
        return evaluate(m, batches(test, test_batch), device=device, progress=progress, desc=desc)

    fp = score(net, "full precision")
    q = quantize(net, policy, calibration=calib, per_channel=quant.per_channel, weight_clip=quant.weight_clip)  # fmt: skip
    before = score(q, "before finetune")
    saved = _epoch_checkpoint(out, policy, model, data, quant, train)
    finetune(
        q,
        batches(train_data.view(True), train.batch_size, shuffle=True),
        epochs=train.epochs,
        lr=train.lr,
        seed=train.seed,
        device=device,
        progress=progress,
        checkpoint=saved,
        compile=train.compile,
    )
    after = score(q, "after finetune")
    result = {
        "fp_test_top1": fp.top1,
        "quantized_test_top1_before_finetune": before.top1,
        "quantized_test_top1": after.top1,
        "quantized_test_top5": after.top5,
        "epochs": train.epochs,
        "lr": train.lr,
    }
    provenance = {"policy_sha256": policy.digest(), **(source or {})}
    _save_final(out, q, policy, _record(meta, model, data.dataset, result, provenance))
    saved.path.unlink(missing_ok=True)
    return result


def _record(
    meta: CheckpointMeta,
    model: ModelSpec,
    dataset: str,
    result: dict[str, Any],
    source: dict[str, Any],
) -> dict[str, Any]:
    """What a finetuned file says of itself besides its weights and policy."""
    return {
        "model": meta.model,
        "checkpoint": str(model.checkpoint or builtin_checkpoint(meta.model) or ""),
        "weights": model.weights,
        "model_kwargs": meta.model_kwargs,
        "input_shape": list(meta.input_shape),
        "dataset": dataset,
        "result": result,
        "source": source,
    }


def _epoch_checkpoint(out: str | Path, policy: Policy, *specs: Any) -> EpochCheckpoint:
    """``OUT.partial``, where the finetune saves each epoch's end: a killed ``haq finetune``
    run again with the same arguments continues from there. Keyed by the policy and every
    option that decides the result (not the device, the workers or the progress bars)."""
    options = [
        {k: v for k, v in asdict(s).items() if k not in ("workers", "device")} for s in specs
    ]
    facts = json.dumps([policy.digest(), options], sort_keys=True, default=str)
    key = hashlib.sha256(facts.encode()).hexdigest()
    return EpochCheckpoint(Path(f"{out}.partial"), key)


def _save_final(out: str | Path, q: Any, policy: Policy, info: dict[str, Any]) -> None:
    """``out`` (the quantized model, the policy with its test accuracy and clips, ``info``)
    and its record ``out.json``."""
    result = info["result"]
    policy.layer_info = quantizer_facts(q)
    accuracy = {"test_top1": result["quantized_test_top1"], "fp_test_top1": result["fp_test_top1"]}
    policy.info = {**policy.info, "accuracy": {**policy.info.get("accuracy", {}), **accuracy}}
    out_path = save_quantized(out, q, policy, info)
    atomic_write_json(out_path.with_suffix(".json"), {**info, "policy": policy.to_dict()})


@dataclass
class FinetuneJob:
    """A final finetune ready to run: the policy, the model and data it belongs to, the
    quantizer options, where the result goes, where the policy came from, and a note for the
    user."""

    policy: Policy | Uniform
    model: ModelSpec
    data: DataSpec
    quant: QuantSpec
    out: str
    source: dict[str, Any]
    note: str | None = None

    def run(
        self, train: FinetuneSpec | None = None, device: str | None = None, progress: bool = True
    ) -> dict[str, Any]:
        """:func:`final_finetune` with this job."""
        return final_finetune(
            self.policy, self.model, self.data, self.quant, self.out, train, device, progress,
            self.source,
        )  # fmt: skip


def job_from_run(
    run: str | Path,
    policy_file: str | None = None,
    out: str | None = None,
    crop_ratio: float | None = None,
    workers: int | None = None,
) -> FinetuneJob:
    """The best policy of a search run (or ``policy_file``) with exactly the search's model,
    data and quantizer settings (``crop_ratio`` and ``workers``, when given, replace the
    run's); written to ``RUN/final.pt`` unless ``out`` says otherwise."""

    run = Path(run)
    files = RunDir(run)
    if not files.best.is_file():
        raise HaqError(f"{run}: no best_policy.json (not a finished search run directory)")
    cfg = files.load_config()
    if policy_file:
        policy = policy_arg(policy_file, cfg.mode)
        source: dict[str, Any] = {"run": str(run), "policy": str(policy_file)}
        return _run_job(files, cfg, policy, source, out, crop_ratio, workers)
    policy = Policy.load(files.best)
    source = {"run": str(run), "episode": policy.info.get("episode")}
    job = _run_job(files, cfg, policy, source, out, crop_ratio, workers)
    if not files.finished():
        job.note = (
            f"note: the search in {run} has not finished; finetuning its best policy so far "
            f"(episode {source['episode']}). If it goes on and finds a better one, export will "
            "ask for a new finetune."
        )
    return job


def _run_job(
    files: RunDir,
    cfg: SearchConfig,
    policy: Policy | Uniform,
    source: dict[str, Any],
    out: str | None,
    crop_ratio: float | None,
    workers: int | None,
) -> FinetuneJob:
    data = DataSpec.of(cfg)
    if crop_ratio is not None:
        data.crop_ratio = crop_ratio
    if workers is not None:
        data.workers = workers
    target = out or str(files.final)
    return FinetuneJob(policy, ModelSpec.of(cfg), data, QuantSpec.of(cfg), target, source)


def job_from_policy(
    policy_file: str,
    model: ModelSpec,
    data: DataSpec,
    quant: QuantSpec,
    out: str | None = None,
) -> FinetuneJob:
    """A policy file (or ``wXaY``) on a model given by name or checkpoint; written next to the
    policy file (``NAME.final.pt``; ``wXaY.final.pt`` here) unless ``out`` says otherwise."""
    policy = policy_arg(policy_file)
    target = out or str(Path(policy_file).with_suffix(".final.pt"))
    key = "policy" if isinstance(policy, Uniform) else "policy_file"
    return FinetuneJob(policy, model, data, quant, target, {key: str(policy_file)})


def _rebuild_final_record(files: RunDir) -> dict[str, Any] | None:
    """final.json from final.pt, which holds the same facts (a kill between writing the two
    must not waste a finished finetune); None when final.pt does not read."""
    try:
        payload = read_quantized(files.final)
    except HaqError:
        return None
    record = {
        k: v
        for k, v in payload.items()
        if k not in ("format", "quant_flags", "state_dict", "digest")
    }
    atomic_write_json(files.final_record, record)
    print(f"note: {files.final_record} rebuilt from final.pt", file=sys.stderr)
    return record


def stale_final(run: str | Path) -> str | None:
    """Why ``RUN/final.pt`` no longer matches the run's best policy, or None when it does (or
    there is none): a search resumed after ``haq finetune --run`` may have found a better one."""
    files = RunDir(run)
    final, best = files.final_record, files.best
    if not files.final.is_file() or not best.is_file():
        return None
    record = read_json(final, "finetune record") if final.is_file() else {}
    if not isinstance(record, dict) or not isinstance(record.get("policy"), dict):
        record = _rebuild_final_record(files)
        if record is None:
            return f"{run}/final.pt has no readable record {final.name}; run 'haq finetune --run {run}'"
    tuned = Policy.from_dict(record["policy"], str(final))
    now = Policy.load(best)
    if tuned.key() == now.key():
        return None
    return (
        f"{run}/final.pt was finetuned from the policy of episode {tuned.info.get('episode', '?')}, "
        f"but the run's best policy is now episode {now.info.get('episode', '?')}: "
        f"run 'haq finetune --run {run}' again, or remove final.pt to use the new best policy"
    )
