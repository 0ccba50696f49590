"""``episodes.jsonl``, the run's records: reading them, and making them agree with the
checkpoint on resume.

The checkpoint (``state.pt``) is the source of truth for how many episodes are done, and
(since the run identity was added) holds a copy of every record it covers. On resume a torn,
unreadable or missing record inside that range is rebuilt from the copy with a note; a record
that reads but differs from the copy (edited, or from another run) is refused; records
written after the checkpoint are dropped (that episode runs again). Checkpoints written
before the copy existed are reconciled as before: torn last line and later records dropped,
anything wrong inside the range refused.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from haq.errors import HaqError
from haq.fileio import atomic_write_text, read_json

RESTORE = (
    "restore episodes.jsonl from a copy, or start the search again with a new --out "
    '(docs/runs.md, "Recovering a run")'
)


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    ok = isinstance(record, dict) and isinstance(record.get("episode"), int)
    return record if ok else None


def _lines(path: Path) -> list[bytes]:
    return [ln for ln in path.read_bytes().split(b"\n") if ln.strip()] if path.exists() else []


def reconcile(path: Path, done: int, saved: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Rewrite ``path`` to hold exactly the ``done`` records the checkpoint covers; return
    them. ``saved``: the checkpoint's copies (None for checkpoints without them)."""
    if saved is None:
        return _reconcile_unsaved(path, done)
    found: dict[int, dict[str, Any]] = {}
    unreadable = later = 0
    for raw in _lines(path):
        record = _parse(raw)
        if record is None:
            unreadable += 1
        elif record["episode"] >= done or record["episode"] < 0:
            later += 1
        elif record != saved[record["episode"]]:
            raise HaqError(
                f"{path}: the record of episode {record['episode']} differs from the one the "
                f"checkpoint holds (edited, or from another run); {RESTORE}"
            )
        else:
            found[record["episode"]] = record
    rebuilt = done - len(found)
    if rebuilt:
        print(
            f"note: {path}: rebuilt {rebuilt} missing or unreadable record(s) from the "
            f"checkpoint ({unreadable} unreadable line(s) dropped)",
            file=sys.stderr,
        )
    elif unreadable:
        print(f"note: {path}: dropped {unreadable} torn or unreadable line(s)", file=sys.stderr)
    if later:
        print(
            f"note: dropped {later} record(s) written after the last checkpoint; episode "
            f"{done} runs again",
            file=sys.stderr,
        )
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in saved[:done]))
    return saved[:done]


def _reconcile_unsaved(path: Path, done: int) -> list[dict[str, Any]]:
    """The reconciliation of checkpoints that hold no copy of the records."""
    lines = _lines(path)
    records: list[dict[str, Any]] = []
    for i, raw in enumerate(lines):
        record = _parse(raw)
        if record is None:
            if i == len(lines) - 1 and i >= done:
                print(f"note: {path}: dropped a torn last line", file=sys.stderr)
                break
            raise HaqError(f"{path}: record {i + 1} is unreadable; {RESTORE}")
        records.append(record)
        if i < done and record["episode"] != i:
            raise HaqError(
                f"{path}: record {i + 1} is episode {record['episode']}, expected {i} (a record "
                f"was deleted or duplicated); {RESTORE}"
            )
    if len(records) < done:
        raise HaqError(
            f"{path} holds {len(records)} of the {done} episodes that state.pt records as "
            f"done; {RESTORE}"
        )
    if len(records) > done:
        print(
            f"note: dropped {len(records) - done} record(s) written after the last "
            f"checkpoint; episode {done} runs again",
            file=sys.stderr,
        )
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records[:done]))
    return records[:done]


def read_episodes(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a run directory (every line must read)."""
    path = Path(run_dir) / "episodes.jsonl"
    if not path.is_file():
        raise HaqError(
            f"{run_dir}: no episodes.jsonl (not a search run directory, or it has not started)"
        )
    records = []
    for i, line in enumerate(path.read_bytes().splitlines()):
        if line.strip():
            try:
                records.append(json.loads(line.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
                raise HaqError(f"{path}: line {i + 1} is not JSON ({err})") from err
            if not isinstance(records[-1], dict) or "reward" not in records[-1]:
                raise HaqError(f"{path}: line {i + 1} is not an episode record")
    if not records:
        raise HaqError(f"{path}: the run has no finished episode")
    return records


def run_finished(run_dir: Path) -> bool:
    """Whether the search in ``run_dir`` ran to its end: its summary covers every record."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        return False
    summary = read_json(path, "run summary")
    return isinstance(summary, dict) and summary.get("episodes") == len(read_episodes(run_dir))
