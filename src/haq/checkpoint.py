"""Model checkpoints that remember what they are: model spec, input shape, dataset, accuracy.

The reference models ship inside the package (``haq/checkpoints/*.pt``, a few hundred KB
each), so the main job never retrains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from haq.errors import HaqError
from haq.fileio import load_payload, save_payload
from haq.models import load_model_spec

BUILTIN_DIR = Path(__file__).parent / "checkpoints"
CHECKPOINT_FORMAT = "haq-checkpoint-1"


@dataclass
class CheckpointMeta:
    """What a checkpoint says about itself."""

    model: str
    input_shape: tuple[int, int, int]
    dataset: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def builtin_checkpoint(model: str) -> Path | None:
    """The shipped checkpoint of a reference model, if there is one."""
    path = BUILTIN_DIR / f"{model}.pt"
    return path if path.is_file() else None


def save_checkpoint(path: str | Path, model: nn.Module, meta: CheckpointMeta) -> Path:
    """Write the state dict and metadata atomically."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_payload(
        {"format": CHECKPOINT_FORMAT, "meta": meta.__dict__, "state_dict": state}, path
    )


def read_checkpoint(path: str | Path) -> tuple[CheckpointMeta, dict[str, Any]]:
    """Metadata and raw payload of a checkpoint file, with clear errors."""
    payload = load_payload(path, CHECKPOINT_FORMAT, "checkpoint (written by 'haq pretrain')")
    m = payload["meta"]
    meta = CheckpointMeta(
        model=m["model"],
        input_shape=tuple(m["input_shape"]),  # type: ignore[arg-type]
        dataset=m["dataset"],
        model_kwargs=m.get("model_kwargs", {}),
        accuracy=m.get("accuracy", {}),
        extra=m.get("extra", {}),
    )
    return meta, payload


def load_checkpoint(
    path: str | Path, model_spec: str | None = None
) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the model a checkpoint was written for and load its weights.

    When ``model_spec`` is given and differs from the checkpoint's architecture, the weights
    will not fit and a :class:`HaqError` says so.
    """
    meta, payload = read_checkpoint(path)
    spec = model_spec or meta.model
    model = load_model_spec(spec, **(meta.model_kwargs if spec == meta.model else {}))
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise HaqError(
            f"checkpoint {str(path)!r} was written for model {meta.model!r}, "
            f"not for {spec!r} ({first})"
        ) from err
    model.eval()
    return model, meta
