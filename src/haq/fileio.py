"""Reading and writing haq's own torch files: one place for atomic writes and clear errors.

Every file haq writes with ``torch.save`` is a dict with a ``format`` key naming what it is
(``haq-checkpoint-1``, ``haq-quantized-1``, ``haq-torch-export-1``, ...).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from haq.errors import HaqError


def save_payload(payload: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` to a temporary name, then rename: a crash never leaves half a file."""
    out = Path(path)
    tmp = out.with_name(out.name + ".tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as fh:
            torch.save(payload, fh)
        tmp.replace(out)
    except (OSError, RuntimeError) as err:  # torch's writer reports a failed write as either
        tmp.unlink(missing_ok=True)
        reason = err.strerror if isinstance(err, OSError) else "write failed (disk full?)"
        raise HaqError(f"cannot write {str(out)!r}: {reason}") from err
    return out


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary name, then rename (one-line error on failure)."""
    out = Path(path)
    tmp = out.with_name(out.name + ".tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        tmp.replace(out)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise HaqError(f"cannot write {str(out)!r}: {err.strerror}") from err
    return out


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """``data`` as indented JSON, written atomically (see ``atomic_write_text``)."""
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: str | Path, what: str) -> Any:
    """The JSON document at ``path``; a one-line HaqError naming ``what`` it should be when it
    is missing, unreadable, not UTF-8 or not JSON."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise HaqError(f"{what} {str(p)!r} not found") from err
    except OSError as err:
        raise HaqError(f"cannot read {what} {str(p)!r}: {err.strerror}") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HaqError(f"{what} {str(p)!r} is corrupt ({err}); restore or remove it") from err


def load_payload(path: str | Path, fmt: str, what: str) -> dict[str, Any]:
    """The dict saved at ``path`` if its ``format`` is ``fmt``; else a HaqError naming ``what``
    the file should have been."""
    p = Path(path)
    if not p.is_file():
        raise HaqError(f"{what} {str(p)!r} not found")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as err:
        raise HaqError(f"{what} {str(p)!r} is unreadable: {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise HaqError(f"{str(p)!r} is not a {what}")
    return payload


def payload_format(path: str | Path) -> str | None:
    """The ``format`` of a haq torch file, or None for anything else."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:
        return None
    return payload.get("format") if isinstance(payload, dict) else None
