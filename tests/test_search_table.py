"""benchmarks/search_table.py on the committed benchmark results: the README's tables and the
sample-efficiency plot cover every strategy the results hold; bench_search.py turns a bad option
value into one line and exit code 2."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks import search_table

ROOT = Path(__file__).resolve().parent.parent

RESULTS = json.loads((ROOT / "benchmarks" / "results" / "search.json").read_text())


def test_every_benchmarked_strategy_has_a_label_a_colour_and_a_row(tmp_path):
    held = {e["strategy"] for s in RESULTS.values() for e in s["runs"].values()}
    assert held <= set(search_table.ORDER)
    search_table.plot(RESULTS, tmp_path / "eff.png")  # a strategy without a colour raises
    assert (tmp_path / "eff.png").stat().st_size > 10_000
    rows = search_table.robustness(RESULTS, "random-level").splitlines()
    assert any("--redraws 10" in r and "k-means" in r for r in rows)


def test_readme_tables_rewritten_between_markers_only(tmp_path):
    blocks = ("BENCH-TABLE", "ROBUSTNESS-TABLE", "ROBUSTNESS-LEVEL-TABLE")
    readme = tmp_path / "README.md"
    readme.write_text(
        "intro\n" + "".join(f"<!-- {m} -->\nold\n<!-- /{m} -->\nprose {m}\n" for m in blocks)
    )
    search_table.update_readme(RESULTS, readme)
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro\n")
    assert all(f"prose {m}" in text for m in blocks)
    assert search_table.table(RESULTS) in text
    readme.write_text("no markers here\n")
    with pytest.raises(ValueError, match="no <!-- BENCH-TABLE -->"):
        search_table.update_readme(RESULTS, readme)
    assert readme.read_text() == "no markers here\n"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--episodes", "-5"], "--episodes must be >= 1, got -5"),
        (["--final-epochs", "0"], "--final-epochs must be a positive number"),
    ],
)
def test_bench_search_bad_option_is_one_line_and_exit_2(tmp_path, flags, message):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_search.py"), "--scenarios"]
    cmd += ["size-kmeans", "--runs", str(tmp_path / "runs"), "--json", str(tmp_path / "r.json")]
    done = subprocess.run(cmd + flags, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    last = done.stderr.splitlines()[-1]
    assert last.startswith("bench_search.py: error: ") and message in last
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "r.json").exists()
