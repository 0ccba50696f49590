"""The one owner of a search run directory's files: their names, readers, writers and lock.

    config.json        the SearchConfig, defaults resolved, and the run's identity ``run_id``
    episodes.jsonl     one record per episode: policy, cost per metric, accuracy, reward, ...
    best_policy.json   the best policy so far (the format haq cost / eval / export read)
    state.pt           the checkpoint: episode counter, best reward and episode, a copy of
                       every record, the strategy's state; a digest of its tensors
    summary.json       written at the end: best vs uniform (also on unseen images), costs, cost
    final.pt           ``haq finetune --run``: the finetuned quantized model ...
    final.json         ... and its record (result, the policy it came from)
    report/            figures and index.html
    .haq.lock          the lock (haq.runlock)

The search loop (haq.search.runner), report, export and finetune all go through
:class:`RunDir`; no other module names these files.

On resume the checkpoint is the source of truth for how many episodes are done and holds a
copy of every record it covers: a torn, unreadable or missing record inside that range is
rebuilt from the copy with a note; a record that reads but differs from the copy (edited, or
from another run) is refused; records written after the checkpoint are dropped (that episode
runs again). Checkpoints written before the copies existed are reconciled as before: a torn
last line and later records dropped, anything wrong inside the range refused.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch

from haq.errors import HaqError
from haq.fileio import (
    atomic_write_json,
    atomic_write_text,
    check_digest,
    read_json,
    save_payload,
)
from haq.policy import Policy
from haq.runlock import LOCK_NAME, run_lock
from haq.search.config import SearchConfig

STATE_FORMAT = "haq-search-state-3"
RESTORE = (
    "restore episodes.jsonl from a copy, or start the search again with a new --out "
    '(docs/runs.md, "Recovering a run")'
)


def new_run_id() -> str:
    """A fresh run identity (written into config.json, every record and the checkpoint)."""
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True)
class RunDir:
    """A search run directory (which need not exist yet)."""

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    def __str__(self) -> str:
        return str(self.path)

    # --- names -----------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def episodes(self) -> Path:
        return self.path / "episodes.jsonl"

    @property
    def state(self) -> Path:
        return self.path / "state.pt"

    @property
    def best(self) -> Path:
        return self.path / "best_policy.json"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def final(self) -> Path:
        return self.path / "final.pt"

    @property
    def final_record(self) -> Path:
        return self.path / "final.json"

    @property
    def report(self) -> Path:
        return self.path / "report"

    # --- ownership ---------------------------------------------------------------------------
    def lock(self, command: str, create: bool = False, shared: bool = False) -> Any:
        """The run's lock (haq.runlock): exclusive for writers, ``shared`` for readers."""
        return run_lock(self.path, command, create=create, shared=shared)

    def check_new(self) -> None:
        """A new run needs an absent or empty directory (its lock file aside)."""
        out = self.path
        if not out.is_dir():
            if out.exists():
                raise HaqError(f"--out {out} is a file, not a directory")
            return
        if self.config.is_file():
            raise HaqError(f"{out} already holds a haq run; continue it with --resume {out}")
        others = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME)
        if others:
            shown = ", ".join(others[:3]) + (" ..." if len(others) > 3 else "")
            raise HaqError(
                f"--out {out} is not empty and not a haq run ({shown}); choose another --out"
            )

    def has_checkpoint(self) -> bool:
        return self.state.is_file()

    def remove_unstarted(self, created: bool) -> None:
        """After a new run failed before its first checkpoint: leave the directory as it was
        (remove what the run wrote, and the directory itself if the run made it)."""
        for path in (self.config, self.episodes):
            path.unlink(missing_ok=True)
        out = self.path
        if created and out.is_dir() and [p.name for p in out.iterdir()] == [LOCK_NAME]:
            shutil.rmtree(out, ignore_errors=True)

    # --- configuration ------------------------------------------------------------------------
    def load_config(self) -> SearchConfig:
        return SearchConfig.load(self.config)

    def save_config(self, cfg: SearchConfig, run_id: str | None) -> None:
        cfg.save(self.config, run_id)

    def run_id(self) -> str | None:
        """The identity config.json gives the run (None: a run from before ids)."""
        data = read_json(self.config, "search configuration")
        run_id = data.get("run_id") if isinstance(data, dict) else None
        if run_id is not None and not isinstance(run_id, str):
            raise HaqError(f"{self.config}: run_id must be a string (got {run_id!r})")
        return run_id

    # --- checkpoint ---------------------------------------------------------------------------
    def save_state(self, payload: dict[str, Any]) -> None:
        save_payload({"format": STATE_FORMAT, **payload}, self.state)

    def load_state(self) -> dict[str, Any]:
        """The checkpoint's payload; ValueError when it is not a readable, intact one."""
        payload = torch.load(self.state, map_location="cpu", weights_only=False)
        if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
            raise ValueError("unknown format")
        check_digest(payload, self.state)
        return payload

    # --- records -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def open_log(self) -> Iterator[IO[str]]:
        """``episodes.jsonl`` for appending records."""
        log = self.episodes.open("a")
        try:
            yield log
        finally:
            with contextlib.suppress(OSError):  # a full disk was reported by the writer
                log.close()

    def read_episodes(self) -> list[dict[str, Any]]:
        """Every record (every line must read)."""
        path = self.episodes
        if not path.is_file():
            raise HaqError(
                f"{self.path}: no episodes.jsonl (not a search run directory, or it has not "
                "started)"
            )
        records = []
        for i, line in enumerate(path.read_bytes().splitlines()):
            if line.strip():
                try:
                    records.append(json.loads(line.decode("utf-8")))
                except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
                    raise HaqError(
                        f"{path}: line {i + 1} is not JSON ({err}); `haq search --resume "
                        f"{self.path}` repairs the file from the run's checkpoint"
                    ) from err
                if not isinstance(records[-1], dict) or "reward" not in records[-1]:
                    raise HaqError(f"{path}: line {i + 1} is not an episode record")
        if not records:
            raise HaqError(f"{path}: the run has no finished episode")
        return records

    def finished(self) -> bool:
        """Whether the search ran to its end: its summary covers every record."""
        summary = self.load_summary()
        return summary is not None and summary.get("episodes") == len(self.read_episodes())

    def reconcile(self, done: int, saved: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        """Rewrite ``episodes.jsonl`` to hold exactly the ``done`` records the checkpoint
        covers; return them. ``saved``: the checkpoint's copies (None: it has none)."""
        if saved is None:
            return self._reconcile_unsaved(done)
        found: set[int] = set()
        unreadable = later = 0
        for raw in self._lines():
            record = _parse(raw)
            if record is None:
                unreadable += 1
            elif not 0 <= record["episode"] < done:
                later += 1
            elif record != saved[record["episode"]]:
                raise HaqError(
                    f"{self.episodes}: the record of episode {record['episode']} differs from "
                    f"the one the checkpoint holds (edited, or from another run); {RESTORE}"
                )
            else:
                found.add(record["episode"])
        if done - len(found):
            _note(
                f"{self.episodes}: rebuilt {done - len(found)} missing or unreadable record(s) "
                f"from the checkpoint ({unreadable} unreadable line(s) dropped)"
            )
        elif unreadable:
            _note(f"{self.episodes}: dropped {unreadable} torn or unreadable line(s)")
        if later:
            _note(f"dropped {later} record(s) written after the last checkpoint; episode {done} runs again")  # fmt: skip
        self._write_records(saved[:done])
        return saved[:done]

    def _reconcile_unsaved(self, done: int) -> list[dict[str, Any]]:
        """The reconciliation of checkpoints that hold no copy of the records."""
        lines = self._lines()
        records: list[dict[str, Any]] = []
        for i, raw in enumerate(lines):
            record = _parse(raw)
            if record is None:
                if i == len(lines) - 1 and i >= done:
                    _note(f"{self.episodes}: dropped a torn last line")
                    break
                raise HaqError(f"{self.episodes}: record {i + 1} is unreadable; {RESTORE}")
            records.append(record)
            if i < done and record["episode"] != i:
                raise HaqError(
                    f"{self.episodes}: record {i + 1} is episode {record['episode']}, expected "
                    f"{i} (a record was deleted or duplicated); {RESTORE}"
                )
        if len(records) < done:
            raise HaqError(
                f"{self.episodes} holds {len(records)} of the {done} episodes that state.pt "
                f"records as done; {RESTORE}"
            )
        if len(records) > done:
            _note(f"dropped {len(records) - done} record(s) written after the last checkpoint; episode {done} runs again")  # fmt: skip
        self._write_records(records[:done])
        return records[:done]

    def _lines(self) -> list[bytes]:
        path = self.episodes
        return [ln for ln in path.read_bytes().split(b"\n") if ln.strip()] if path.exists() else []

    def _write_records(self, records: list[dict[str, Any]]) -> None:
        atomic_write_text(self.episodes, "".join(json.dumps(r) + "\n" for r in records))

    # --- results -------------------------------------------------------------------------------
    def save_best(self, policy: Policy) -> None:
        policy.save(self.best)

    def load_best(self) -> Policy:
        if not self.best.is_file():
            raise HaqError(f"{self.path}: no best_policy.json (not a search run directory with episodes)")  # fmt: skip
        return Policy.load(self.best)

    def save_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.summary, summary)

    def load_summary(self) -> dict[str, Any] | None:
        """summary.json, or None before the run's end."""
        if not self.summary.is_file():
            return None
        summary = read_json(self.summary, "run summary")
        return summary if isinstance(summary, dict) else None


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    ok = isinstance(record, dict) and isinstance(record.get("episode"), int)
    return record if ok else None


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)
