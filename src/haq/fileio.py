"""Reading and writing haq's own torch files: one place for atomic writes and clear errors.

Every file haq writes with ``torch.save`` is a dict with a ``format`` key naming what it is
(``haq-checkpoint-1``, ``haq-quantized-1``, ``haq-torch-export-1``, ...).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import torch

from haq.errors import HaqError


def _target(path: str | Path) -> Path:
    """Where a write to ``path`` lands: a symlink is written through to its target (the link
    stays a link)."""
    out = Path(path)
    return out.resolve() if out.is_symlink() else out


def _tmp(out: Path) -> Path:
    """A temporary name beside ``out`` that stays within the name length limit."""
    return out.with_name(f".{out.name[:200]}.{os.getpid()}.tmp")


def _is_device(out: Path) -> bool:
    """A character device or a FIFO (``/dev/stdout``, a pipe): written directly, since a
    rename over it would replace it (or fail)."""
    try:
        mode = out.stat().st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def check_output(path: str | Path) -> None:
    """Refuse, before any long work, a path no file can be written to: a directory, or a
    place below a file or in a directory this process may not write (missing directories are
    fine: the writers make them)."""
    out = _target(path)
    if out.is_dir():
        raise HaqError(f"cannot write {str(path)!r}: it is a directory")
    parent = next((p for p in (out.parent, *out.parent.parents) if p.exists()), None)
    if parent is not None and (not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK)):
        raise HaqError(f"cannot write {str(path)!r}: {str(parent)!r} is not a writable directory")


def _write_atomic(path: str | Path, write: Any, mode: str) -> Path:
    """``write(fh)`` into a temporary file, then rename it over ``path``; a crash never
    leaves half a file. One-line HaqError on failure."""
    out = _target(path)
    if _is_device(out):
        try:
            with out.open(mode) as fh:
                write(fh)
        except OSError as err:
            raise HaqError(f"cannot write {str(path)!r}: {err.strerror}") from err
        return out
    tmp = _tmp(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open(mode) as fh:
            write(fh)
        tmp.replace(out)
    except (OSError, RuntimeError) as err:  # torch's writer reports a failed write as either
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        reason = err.strerror if isinstance(err, OSError) else "write failed (disk full?)"
        raise HaqError(f"cannot write {str(path)!r}: {reason}") from err
    return out


def tensor_digest(obj: Any) -> str:
    """SHA-256 of every tensor (dtype, shape and bytes) and array inside ``obj``, in order."""
    h = hashlib.sha256()

    def walk(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(x, np.ndarray):
            h.update(f"{x.dtype}{x.shape}".encode())
            h.update(np.ascontiguousarray(x).tobytes())
        elif isinstance(x, dict):
            for k, v in x.items():
                if k != "digest":
                    h.update(str(k).encode())
                    walk(v)
        elif isinstance(x, list | tuple):
            for v in x:
                walk(v)

    walk(obj)
    return h.hexdigest()


def check_digest(payload: Any, where: str | Path) -> None:
    """A payload saved with a digest must still match it (a damaged file is refused)."""
    saved = payload.get("digest") if isinstance(payload, dict) else None
    if saved is not None and tensor_digest(payload) != saved:
        raise HaqError(f"{str(where)!r} is damaged: its tensors do not match their digest")


def save_payload(payload: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` atomically, with a digest of the tensors checked on load."""
    signed = {**payload, "digest": tensor_digest(payload)}
    return _write_atomic(path, lambda fh: torch.save(signed, fh), "wb")


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` atomically (one-line error on failure)."""
    return _write_atomic(path, lambda fh: fh.write(text), "w")


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """``data`` as indented JSON, written atomically (see ``atomic_write_text``)."""
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: str | Path, what: str) -> Any:
    """The JSON document at ``path``; a one-line HaqError naming ``what`` it should be when it
    is missing, unreadable, not UTF-8 or not JSON."""
    p = Path(path)
    if p.exists() and not p.is_file():  # a directory, FIFO or device: never block on it
        raise HaqError(f"{what} {str(p)!r} is not a regular file")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise HaqError(f"{what} {str(p)!r} not found") from err
    except OSError as err:
        raise HaqError(f"cannot read {what} {str(p)!r}: {err.strerror}") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HaqError(f"{what} {str(p)!r} is corrupt ({err}); restore or remove it") from err
    except RecursionError as err:
        raise HaqError(f"{what} {str(p)!r} is nested too deeply to be one") from err


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
    check_digest(payload, p)
    return payload


def payload_format(path: str | Path) -> str | None:
    """The ``format`` of a haq torch file, or None for anything else."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:
        return None
    return payload.get("format") if isinstance(payload, dict) else None
