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
from haq.search.runner import read_episodes, run_finished, search
from tests.test_search import tiny_cfg


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
    summary = search(None, run3, resume=True, progress=False, episodes=4)
    assert "dropped a torn last line" in capsys.readouterr().err
    records = read_episodes(run3)
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
    assert [r["episode"] for r in read_episodes(run3)] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda ls: [ls[0], ls[2]], "record 2 is episode 2, expected 1"),  # a deleted line
        (lambda ls: [ls[0], ls[0], ls[1], ls[2]], "record 2 is episode 0, expected 1"),
        (lambda ls: [], "holds 0 of the 3 episodes that state.pt records"),
        (lambda ls: [ls[0], "{not json", ls[2]], "record 2 is unreadable"),
        (lambda ls: ls[:2], "holds 2 of the 3 episodes"),
    ],
    ids=["deleted", "duplicated", "emptied", "corrupt-middle", "last-deleted"],
)
def test_damaged_records_are_an_error_that_changes_nothing(run3: Path, damage, message) -> None:
    lines = _lines(run3)
    text = "".join(ln + "\n" for ln in damage(lines))
    (run3 / "episodes.jsonl").write_text(text)
    with pytest.raises(HaqError, match=message) as err:
        search(None, run3, resume=True, progress=False, episodes=4)
    assert "restore episodes.jsonl from a copy" in str(err.value)
    assert (run3 / "episodes.jsonl").read_text() == text


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


def test_finetune_of_an_unfinished_run_says_so(run3: Path, capsys: pytest.CaptureFixture) -> None:
    assert run_finished(run3)
    (run3 / "summary.json").unlink()  # as after a kill before the end
    assert not run_finished(run3)
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
    assert [r["episode"] for r in read_episodes(run3)] == [0, 1, 2, 3] and run_finished(run3)


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
