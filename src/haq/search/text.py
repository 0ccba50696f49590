"""Terminal rendering of a finished search (the table ``haq search`` ends with)."""

from __future__ import annotations

from typing import Any

from haq.search.budget import format_value
from haq.search.strategies import REGISTRY
from haq.textfmt import table


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}%"


def _ratio(value: float, ref: float) -> str:
    return f"{value / ref:.3f}x" if ref else "-"


def format_summary(s: dict[str, Any]) -> str:
    budgets = ", ".join(
        f"{m} <= {format_value(m, b['limit'])} ({b['text']})" for m, b in s["budgets"].items()
    )
    ref = s["w8a8_cost"]
    metrics = [m for m in ("latency", "energy", "size") if m in ref]
    headers = (
        ["policy", "held-out top-1", "unseen top-1"]
        + [f"{m}" for m in metrics]
        + [f"{m} vs w8a8" for m in metrics if m != "size"]
    )
    headers.append("size vs fp32")
    rows = []
    for label, entry in (
        (f"{REGISTRY[s['strategy']].label} (best of {s['episodes']})", s["best"]),
        (f"uniform w{s['uniform']['bits']}a{s['uniform']['bits']}", s["uniform"]),
    ):
        cost = entry["cost"]
        row = [label, _pct(entry["accuracy"]), _pct(entry.get("check_top1"))]
        row += [format_value(m, cost[m]) for m in metrics]
        row += [_ratio(cost[m], ref[m]) for m in metrics if m != "size"]
        row.append(_ratio(cost["size"], s["fp32_size_bytes"]))
        rows.append(row)
    rows.append(["full precision", f"{s['fp_heldout_top1']:.2f}%"] + ["-"] * (len(headers) - 2))
    lines = [
        f"model {s['model']} on {s['hardware']} (batch {s['batch']}), mode {s['mode']}; budget: {budgets}",
        "accuracy: top-1 after the short per-episode finetune, on the held-out train subset "
        "the search scored (its best is a maximum over many evaluations) and on "
        f"{s.get('check_images', 0):,} unseen train images; 'haq finetune' gives the test-set figure",
        "",
        table(headers, rows),
        "",
        "per-layer bits (w/a), best policy vs uniform; bound = on this hardware at w8a8:",
    ]
    layer_rows = []
    for i, name in enumerate(s["layer_names"]):
        layer_rows.append(
            [
                name,
                s["layer_kinds"][i],
                f"{s['best']['w_bits'][i]}/{s['best']['a_bits'][i]}",
                f"{s['uniform']['w_bits'][i]}/{s['uniform']['a_bits'][i]}",
                "memory" if s["memory_bound_w8a8"][i] else "compute",
            ]
        )
    lines.append(table(["layer", "kind", "best w/a", "uniform w/a", "bound"], layer_rows, "lllll"))
    t, c = s["timing_s"], s["search_cost"]
    sens = (
        f", sensitivity {t['sensitivity']:.1f} s ({c['sensitivity_passes']} forward passes)"
        if c["sensitivity_passes"]
        else ""
    )
    lines += [
        "",
        f"search cost: {c['policy_evaluations']} policy evaluations, {c['wall_s']:.1f} s in all: "
        f"evaluation {t['evaluation']:.1f} s{sens}, "
        f"{'agent' if s['strategy'] == 'haq' else 'planning'} and budget enforcement "
        f"{t['agent']:.1f} s ({100 * t['agent_fraction']:.1f}% of agent + evaluation); "
        f"setup before the first evaluation {t.get('setup', 0.0):.1f} s",
    ]
    return "\n".join(lines)
