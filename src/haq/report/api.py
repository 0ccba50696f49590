"""``make_report``: figures + one self-contained HTML page for one or more runs."""

from __future__ import annotations

import base64
import html
import sys
from pathlib import Path

from haq.errors import HaqError
from haq.fileio import atomic_write_text
from haq.report import plots
from haq.report.data import RunData, load_run


def make_report(run_dirs: list[str | Path], out_dir: str | Path) -> Path:
    """Write PNGs and ``index.html`` (images embedded) to ``out_dir``; returns the HTML path."""
    if not run_dirs:
        raise HaqError("give at least one run directory")
    runs = [load_run(p) for p in run_dirs]
    for run in runs:
        if run.stale:
            print(f"warning: {run.stale}", file=sys.stderr)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HaqError(f"cannot create report directory {str(out)!r}: {err.strerror}") from err
    figures: list[tuple[str, Path | None]] = []  # None: a figure the run has none of
    figures.append(("Per-layer bits of the best policy", plots.bits_figure(runs, out / "bits.png")))
    for run in runs:
        tag = run.name
        figures.append(
            (f"{tag}: per-layer cost and bound", plots.cost_figure(run, out / f"cost_{tag}.png"))
        )
        figures.append(
            (f"{tag}: roofline", plots.roofline_figure(run, out / f"roofline_{tag}.png"))
        )
        figures.append(
            (f"{tag}: search curve", plots.search_figure(run, out / f"search_{tag}.png"))
        )
    figures.append(
        (
            "Accuracy vs cost of every evaluated policy",
            plots.pareto_figure(runs, out / "pareto.png"),
        )
    )
    page = out / "index.html"
    atomic_write_text(page, _html(runs, [(t, p) for t, p in figures if p is not None]))
    return page


def _final_paragraph(run: RunData) -> str:
    """The final finetune's test accuracy, or the warning that final.pt is stale."""
    if run.stale:
        return f"<p><b>Warning:</b> {html.escape(run.stale)}</p>"
    if run.final is None:
        return f"<p>Not finetuned yet: <code>haq finetune --run {html.escape(str(run.path))}</code></p>"
    res = run.final.get("result", {})
    return (
        f"<p>Final finetune (final.pt, {res.get('epochs', '?')} epoch(s)): test top-1 "
        f"<b>{res.get('quantized_test_top1', float('nan')):.2f}%</b>, full precision "
        f"{res.get('fp_test_top1', float('nan')):.2f}%.</p>"
    )


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _html(runs: list[RunData], figures: list[tuple[str, Path]]) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>haq report</title><style>",
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}",
        "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:right}th{background:#f3f3f3}img{max-width:100%}h2{margin-top:1.5em}",
        "</style></head><body><h1>haq search report</h1>",
    ]
    for run in runs:
        s = run.summary
        best = run.best
        parts.append(f"<h2>{html.escape(run.label)}</h2>")

        def pct(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f}%"

        acc_rows = [
            ["full precision", pct(s["fp_heldout_top1"]) if s else "-", "-"],
            [
                f"best policy (episode {best['episode']})",
                pct(best["accuracy"]),
                pct(s["best"].get("check_top1")) if s else "-",
            ],
        ]
        if s:
            u = s["uniform"]
            acc_rows.append(
                [f"uniform w{u['bits']}a{u['bits']}", pct(u["accuracy"]), pct(u.get("check_top1"))]
            )
        cost = s.get("search_cost") if s else None
        spent = (
            f" Search cost: {cost['policy_evaluations']} policy evaluations, "
            f"{cost['sensitivity_passes']} sensitivity passes, {cost['wall_s']:.0f} s."
            if cost
            else ""
        )
        parts.append(
            f"<p>model <b>{html.escape(run.config['model'])}</b>, {len(run.episodes)} episodes, "
            f"strategy {html.escape(run.config['strategy'])}, mode {html.escape(run.config['mode'])}. "
            "Accuracy: top-1 after the short per-episode finetune, on the held-out train subset "
            f"the search scored and on unseen train images.{spent}</p>"
        )
        parts.append(_table(["policy", "held-out top-1", "unseen top-1"], acc_rows))
        parts.append(_final_paragraph(run))
        parts.append(
            _table(
                ["metric", "best policy", "budget", "all w8a8", "policy / w8a8"],
                plots.summary_rows(run),
            )
        )
    for title, path in figures:
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(
            f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)
