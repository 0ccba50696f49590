"""Choose the quantized model to export and write it in the requested format."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from torch import nn

from haq.checkpoint import builtin_checkpoint, model_data, resolve_model
from haq.data import calibration_loader
from haq.errors import HaqError
from haq.export.onnx_format import check_representable, export_onnx
from haq.export.torch_format import to_payload
from haq.fileio import payload_format, save_payload
from haq.finishing import stale_final
from haq.policy import Policy, policy_arg, policy_for
from haq.quant.api import quantize
from haq.quant.calibrate import Calibration
from haq.quant.serialize import QUANTIZED_FORMAT, read_quantized, rebuild_quantized
from haq.search.rundir import RunDir
from haq.specs import DataSpec, ModelSpec, QuantSpec

FORMATS = ("qonnx", "onnx", "torch")


def load_for_export(
    run: str | Path | None = None,
    policy_path: str | Path | None = None,
    model: ModelSpec | None = None,
    data: DataSpec | None = None,
    quant: QuantSpec | None = None,
) -> tuple[nn.Module, Policy, dict[str, Any], str]:
    """(quantized model, policy, info, where it came from).

    A run directory gives its finetuned ``final.pt`` when ``haq finetune`` made one, else its
    best policy applied to the pretrained weights with the run's quantizer settings
    (calibrated, not finetuned). A quantized checkpoint (``haq finetune`` output) is rebuilt
    as is; a pretrained checkpoint is quantized with ``policy_path`` and ``quant``, calibrated
    on ``data``.
    """
    model, data, quant = model or ModelSpec(), data or DataSpec(), quant or QuantSpec()
    if run is not None:
        files = RunDir(run)
        if files.final.is_file():
            stale = stale_final(run)
            if stale:
                raise HaqError(stale)
            return _from_quantized(files.final, policy_path)
        files.load_best()  # refuses a directory without one
        cfg = files.load_config()
        return _from_pretrained(
            policy_path or files.best, ModelSpec.of(cfg), DataSpec.of(cfg), QuantSpec.of(cfg),
            cfg.mode,
        )  # fmt: skip
    if model.checkpoint is not None and _is_quantized(model.checkpoint):
        return _from_quantized(Path(model.checkpoint), policy_path)
    if policy_path is None:
        raise HaqError("give --run DIR, or --policy (wXaY or a policy .json)")
    return _from_pretrained(policy_path, model, data, quant)


def _is_quantized(path: str) -> bool:
    return payload_format(path) == QUANTIZED_FORMAT


def _from_quantized(
    path: Path, policy_path: str | Path | None
) -> tuple[nn.Module, Policy, dict[str, Any], str]:
    payload = read_quantized(path)
    q, policy = rebuild_quantized(payload)
    if (
        policy_path is not None
        and policy_for(policy_arg(policy_path), policy.names).key() != policy.key()
    ):
        raise HaqError(f"{policy_path} differs from the policy stored in {path}")
    info: dict[str, Any] = {k: payload[k] for k in ("model", "model_kwargs", "input_shape") if k in payload}  # fmt: skip
    return q, policy, info, f"finetuned quantized checkpoint {path}"


def _from_pretrained(
    policy_path: str | Path,
    spec: ModelSpec,
    data: DataSpec,
    quant: QuantSpec,
    mode: str = "linear",
) -> tuple[nn.Module, Policy, dict[str, Any], str]:
    """``mode``: the quantizer of a ``wXaY`` policy (a run's own; a file says its own)."""
    read = policy_arg(policy_path, mode)
    net, meta = resolve_model(spec.model_name(), spec.checkpoint, spec.weights)
    ckpt = spec.checkpoint or spec.weights or builtin_checkpoint(meta.model)
    train = model_data(data.dataset, meta, data.crop_ratio, data.min_crop_scale)
    calib = Calibration(net, *calibration_loader(train, quant.calib_batches, data.workers))
    policy = policy_for(read, calib.layer_names, spec.model_name() or meta.model)
    q = quantize(
        net,
        policy,
        calibration=calib,
        per_channel=quant.per_channel,
        weight_clip=quant.weight_clip,
    ).eval()
    info = {
        "model": spec.model_name() or meta.model,
        "model_kwargs": meta.model_kwargs,
        "input_shape": list(meta.input_shape),
    }
    return (
        q,
        policy,
        info,
        f"pretrained {ckpt} quantized with {policy_path} (calibrated, not finetuned)",
    )


def export_model(
    q: nn.Module, policy: Policy, info: dict[str, Any], fmt: str, out: str | Path
) -> Path:
    """Write ``q`` to ``out`` in ``fmt``; nothing is left behind when it fails."""
    if fmt not in FORMATS:
        raise HaqError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    out_path = Path(out).resolve() if Path(out).is_symlink() else Path(out)  # write through links
    if not out_path.parent.exists():
        raise HaqError(
            f"cannot write {str(out_path)!r}: directory {str(out_path.parent)!r} does not exist"
        )
    if fmt != "torch":
        check_representable(q, fmt)
    if fmt == "torch":
        return save_payload(to_payload(q, policy, info), out_path)
    tmp = out_path.with_name(f".{out_path.name[:200]}.{os.getpid()}.partial")
    try:
        export_onnx(q, fmt, tuple(info["input_shape"]), tmp)
        tmp.replace(out_path)
    except OSError as err:
        raise HaqError(f"cannot write {str(out_path)!r}: {err.strerror}") from err
    finally:
        with contextlib.suppress(OSError):  # never hide the error above
            tmp.unlink(missing_ok=True)
    return out_path
