"""Records are validated and artefacts know their source (issue 14, items 2 and 3):
``episodes.jsonl`` is checked against ``state.pt`` on resume, result files are written
atomically even when the disk is full, and a ``final.pt`` that no longer matches the run's
best policy is refused by export and flagged by report."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from haq.cli import main
from haq.errors import HaqError
from haq.export import load_for_export
from haq.finishing import stale_final
from haq.policy import Policy
from haq.report.data import load_run
from haq.search.rundir import RunDir
from haq.search.runner import search
from tests.test_search import TIMING_KEYS, tiny_cfg


@pytest.fixture
def run3(tiny_ckpt: str, tmp_path: Path) -> Path:
    """A finished 3-episode random search (random: every episode is a new policy)."""
    run = tmp_path / "run"
    search(tiny_cfg(tiny_ckpt, strategy="random", episodes=3), run, progress=False)
    return run


def _lines(run: Path) -> list[str]:
    return (run / "episodes.jsonl").read_text().splitlines()


def test_a_torn_last_line_is_dropped_and_that_episode_run_again(
    run3: Path, capsys: pytest.CaptureFixture
) -> None:
    before = _lines(run3)
    with (run3 / "episodes.jsonl").open("a") as fh:
        fh.write(before[0][:40])  # the process died while writing episode 3's record
    # the report refuses the run in one line, naming the repair
    assert main(["report", str(run3), "--out", str(run3 / "rep")]) == 2
    err = capsys.readouterr().err
    assert "line 4 is not JSON" in err and f"haq search --resume {run3}` repairs" in err
    summary = search(None, run3, resume=True, progress=False, episodes=4)
    assert "dropped 1 torn or unreadable line(s)" in capsys.readouterr().err
    records = RunDir(run3).read_episodes()
    assert summary["episodes"] == 4 and [r["episode"] for r in records] == [0, 1, 2, 3]
    assert _lines(run3)[:3] == before


def test_records_after_the_checkpoint_are_dropped(
    run3: Path, capsys: pytest.CaptureFixture
) -> None:
    lines = _lines(run3)
    extra = json.loads(lines[2]) | {"episode": 3}
    (run3 / "episodes.jsonl").write_text("\n".join([*lines, json.dumps(extra)]) + "\n")
    search(None, run3, resume=True, progress=False, episodes=4)
    assert "dropped 1 record(s) written after the last checkpoint" in capsys.readouterr().err
    assert [r["episode"] for r in RunDir(run3).read_episodes()] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "damage",
    [
        lambda ls: [ls[0], ls[2]],  # a deleted line
        lambda ls: [ls[0], ls[0], ls[1], ls[2]],  # a duplicated one
        lambda ls: [],  # emptied
        lambda ls: [ls[0], "{not json", ls[2]],  # a torn line inside the checkpoint's range
        lambda ls: ls[:2],  # the last deleted
    ],
    ids=["deleted", "duplicated", "emptied", "corrupt-middle", "last-deleted"],
)
def test_lost_or_torn_records_are_rebuilt_from_the_checkpoint(
    run3: Path, damage, capsys: pytest.CaptureFixture
) -> None:
    lines = _lines(run3)
    (run3 / "episodes.jsonl").write_text("".join(ln + "\n" for ln in damage(lines)))
    (run3 / "best_policy.json").unlink()
    search(None, run3, resume=True, progress=False, episodes=4)
    err = capsys.readouterr().err
    assert "best_policy.json rebuilt from the checkpoint" in err
    after = _lines(run3)
    assert after[:3] == lines and len(after) == 4
    assert Policy.load(run3 / "best_policy.json").names


def test_an_edited_record_or_a_foreign_checkpoint_is_refused_and_nothing_changes(
    run3: Path, tiny_ckpt: str, tmp_path: Path
) -> None:
    files = {p.name: p.read_bytes() for p in run3.iterdir() if p.is_file()}
    lines = _lines(run3)
    edited = json.loads(lines[1])
    edited["accuracy"] += 1.0
    text = "".join(ln + "\n" for ln in [lines[0], json.dumps(edited), lines[2]])
    (run3 / "episodes.jsonl").write_text(text)
    with pytest.raises(HaqError, match="episode 1 differs from the one the checkpoint holds"):
        search(None, run3, resume=True, progress=False, episodes=4)
    assert (run3 / "episodes.jsonl").read_text() == text
    assert (run3 / "config.json").read_bytes() == files["config.json"]  # still 3 episodes
    (run3 / "episodes.jsonl").write_bytes(files["episodes.jsonl"])
    # the same configuration run again elsewhere: another run, another identity
    other = tmp_path / "other"
    search(tiny_cfg(tiny_ckpt, strategy="random", episodes=2), other, progress=False)
    (run3 / "state.pt").write_bytes((other / "state.pt").read_bytes())
    with pytest.raises(HaqError, match="state.pt belongs to another run"):
        search(None, run3, resume=True, progress=False, episodes=4)
    assert (run3 / "config.json").read_bytes() == files["config.json"]
    assert (run3 / "episodes.jsonl").read_bytes() == files["episodes.jsonl"]


def test_a_run_killed_before_its_first_checkpoint_starts_again_on_resume(
    run3: Path, capsys: pytest.CaptureFixture
) -> None:
    first = _lines(run3)
    for name in ("state.pt", "summary.json", "best_policy.json"):
        (run3 / name).unlink()
    (run3 / "episodes.jsonl").write_text(first[0] + "\n")  # written before the kill
    summary = search(None, run3, resume=True, progress=False)
    assert "has no checkpoint yet; the run starts again" in capsys.readouterr().err
    again = _lines(run3)
    strip = [{k: v for k, v in json.loads(ln).items() if k not in TIMING_KEYS} for ln in again]
    before = [{k: v for k, v in json.loads(ln).items() if k not in TIMING_KEYS} for ln in first]
    assert summary["episodes"] == 3 and strip == before


def test_a_run_made_before_run_ids_resumes_reports_and_exports(tmp_path: Path) -> None:
    """A run directory written by main on 2026-12-04 (no run id, no record copies in its
    checkpoint, committed under tests/data/) still resumes, reports and exports."""
    import shutil

    run = tmp_path / "old"
    shutil.copytree(Path(__file__).parent / "data" / "run-2026-12-04", run)
    before = _lines(run)
    summary = search(None, run, resume=True, progress=False, episodes=3)
    after = _lines(run)
    assert summary["episodes"] == 3 and after[:2] == before and len(after) == 3
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    out = tmp_path / "old.onnx"
    assert main(["export", "--run", str(run), "--format", "onnx", "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000


def _finetune(run: Path) -> None:
    assert main(["finetune", "--run", str(run), "--epochs", "0.05", "--no-progress"]) == 0


def test_a_stale_final_pt_is_refused_by_export_and_flagged_by_report(
    run3: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _finetune(run3)
    final = json.loads((run3 / "final.json").read_text())
    best = Policy.load(run3 / "best_policy.json")
    assert final["source"] == {
        "policy_sha256": best.digest(),
        "run": str(run3),
        "episode": best.info["episode"],
    }
    assert stale_final(run3) is None
    assert "finetuned quantized checkpoint" in load_for_export(run=run3)[3]
    # the search is resumed and finds a better policy: best_policy.json changes
    newer = Policy(best.names, [8] * len(best.names), [8] * len(best.names), info={"episode": 7})
    newer.save(run3 / "best_policy.json")
    with pytest.raises(HaqError, match=r"final.pt was finetuned from the policy of episode \d+, "):
        load_for_export(run=run3)
    out = tmp_path / "m.pt"
    assert main(["export", "--run", str(run3), "--format", "torch", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "best policy is now episode 7" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert load_run(run3).stale is not None
    assert main(["report", str(run3), "--out", str(tmp_path / "rep")]) == 0
    assert "warning: " in capsys.readouterr().err
    assert "Warning:" in (tmp_path / "rep" / "index.html").read_text()
    _finetune(run3)  # finetuning again makes final.pt current
    assert stale_final(run3) is None and load_run(run3).final is not None


def test_a_lost_final_json_is_rebuilt_from_final_pt(
    run3: Path, capsys: pytest.CaptureFixture
) -> None:
    """A kill between writing final.pt and final.json must not waste the finetune."""
    _finetune(run3)
    record = json.loads((run3 / "final.json").read_text())
    (run3 / "final.json").unlink()
    capsys.readouterr()
    assert stale_final(run3) is None
    assert "final.json rebuilt from final.pt" in capsys.readouterr().err
    assert json.loads((run3 / "final.json").read_text()) == record
    assert load_for_export(str(run3))[3]


def test_finetune_of_an_unfinished_run_says_so(run3: Path, capsys: pytest.CaptureFixture) -> None:
    assert RunDir(run3).finished()
    (run3 / "summary.json").unlink()  # as after a kill before the end
    assert not RunDir(run3).finished()
    _finetune(run3)
    assert "has not finished; finetuning its best policy so far" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["config.json", "summary.json"])
@pytest.mark.parametrize("content", [b"{trunc", b"\xff\xfe", b"[1, 2]"])
def test_corrupt_run_files_give_one_line_in_report_and_export(
    run3: Path, tmp_path: Path, capsys: pytest.CaptureFixture, name: str, content: bytes
) -> None:
    (run3 / name).write_bytes(content)
    assert main(["report", str(run3), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert name in err and len(err.strip().splitlines()) == 1, err
    if name == "config.json":
        out = str(tmp_path / "m.pt")
        assert main(["export", "--run", str(run3), "--format", "torch", "--out", out]) == 2
        err = capsys.readouterr().err
        assert name in err and len(err.strip().splitlines()) == 1, err


FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
from haq.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _full_disk(limit: int, *argv: str) -> subprocess.CompletedProcess:
    """``haq ARGV`` in a process that may not write files over ``limit`` bytes: writes past
    it fail as on a full disk (EFBIG instead of ENOSPC, same path through the code)."""
    return subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(limit), *argv], capture_output=True, text=True
    )


def test_a_full_disk_leaves_the_old_files_intact(run3: Path, tmp_path: Path) -> None:
    assert resource.RLIMIT_FSIZE and signal.SIGXFSZ  # POSIX limits this test relies on
    report = tmp_path / "cost.json"
    report.write_text("old report\n")
    done = _full_disk(100, "cost", "--format", "json", "--output", str(report))
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"haq: error: cannot write {str(report)!r}: File too large"
    ]
    assert report.read_text() == "old report\n"
    assert not list(tmp_path.glob("*.tmp"))
    # the next record (or the checkpoint after it) cannot be written: the run stops with
    # one line, keeps the last checkpoint, and resumes
    records, state = _lines(run3), (run3 / "state.pt").read_bytes()
    limit = (run3 / "episodes.jsonl").stat().st_size + 50  # a record is some 300-500 bytes
    done = _full_disk(limit, "search", "--resume", str(run3), "--episodes", "4", "--no-progress")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "cannot write" in last and "resume with --resume" in last, done.stderr
    assert _lines(run3)[:3] == records and (run3 / "state.pt").read_bytes() == state
    # the report at the end cannot be written: the search is saved, the report is skipped
    done = _full_disk(4096, "search", "--resume", str(run3), "--episodes", "4", "--no-progress")
    assert done.returncode == 0 and "report not written: cannot write" in done.stderr
    assert [r["episode"] for r in RunDir(run3).read_episodes()] == [0, 1, 2, 3] and RunDir(
        run3
    ).finished()


SAVE_OVER = """
import resource, signal, sys, torch
from haq.errors import HaqError
from haq.fileio import save_payload
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
try:
    save_payload({"format": "x", "t": torch.zeros(10_000)}, sys.argv[1])
except HaqError as err:
    print(err)
"""


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    path.write_bytes(b"the previous checkpoint")
    done = subprocess.run([sys.executable, "-c", SAVE_OVER, str(path)], capture_output=True)
    assert done.stdout.decode().strip() == f"cannot write {str(path)!r}: write failed (disk full?)"
    assert path.read_bytes() == b"the previous checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]
