"""The README is a user's guide (short, the main command on its first screen) and no relative
link in the README, docs/ or benchmarks/RESULTS.md points at a missing file."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_readme_is_short_with_the_main_command_first():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    first_screen = "\n".join(lines[:40])
    assert "bash scripts/setup.sh && .venv/bin/haq search" in first_screen
    assert "bash scripts/test.sh" in "\n".join(lines)


def test_relative_links_resolve():
    pages = [ROOT / "README.md", ROOT / "benchmarks" / "RESULTS.md", *ROOT.glob("docs/**/*.md")]
    broken = [
        f"{page.relative_to(ROOT)}: {target}"
        for page in pages
        for target in LINK.findall(page.read_text())
        if "://" not in target and not (page.parent / target).exists()
    ]
    assert not broken, "\n".join(broken)
