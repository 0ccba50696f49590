"""The report's figures. Each function takes loaded runs and writes one PNG (pure plotting)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from haq.errors import HaqError
from haq.hardware import ARCHS
from haq.report.data import RunData
from haq.search.budget import format_value

STYLE: Any = {  # matplotlib's stubs type rc keys as literals
    "figure.dpi": 110,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
W_COLOR, A_COLOR = "#1f77b4", "#ff7f0e"
BOUND_COLORS = {"compute": "#4c72b0", "memory": "#dd8452"}
UNIT_SCALE = {
    "latency": (1e3, "ms"),
    "energy": (1e3, "mJ"),
    "size": (1e-3, "kB"),
    "bops": (1e-9, "GBOPs"),
}


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")  # written whole, then renamed
    try:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png")
        tmp.replace(path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise HaqError(f"cannot write {str(path)!r}: {err.strerror}") from err
    finally:
        plt.close(fig)
    return path


def bits_figure(runs: list[RunData], path: Path) -> Path:
    """Per-layer weight and activation bits of each run's best policy, one panel per run."""
    with plt.rc_context(STYLE):
        n = len(runs[0].table.layers)
        fig, axes = plt.subplots(
            len(runs), 1, figsize=(max(8, 0.17 * n + 2), 2.4 * len(runs)), squeeze=False
        )
        for ax, run in zip(axes[:, 0], runs, strict=True):
            w, a = run.best_bits()
            x = np.arange(len(w))
            ax.bar(x - 0.2, w, 0.4, color=W_COLOR, label="weight bits")
            ax.bar(x + 0.2, a, 0.4, color=A_COLOR, label="activation bits")
            dw = [i for i, s in enumerate(run.table.layers) if s.kind == "depthwise"]
            ax.scatter(dw, np.full(len(dw), 8.6), marker="v", color="k", s=10, label="depthwise")
            ax.set_ylim(0, 9.2)
            ax.set_yticks(range(0, 9, 2))
            ax.set_ylabel("bits")
            ax.set_title(run.label)
            ax.set_xlim(-1, len(w))
        axes[-1, 0].set_xlabel("layer index (execution order)")
        axes[0, 0].legend(loc="lower right", ncol=3, fontsize=8)
        return _save(fig, path)


def cost_figure(run: RunData, path: Path) -> Path:
    """Per-layer latency (and energy) of the best policy, bars coloured by the bound."""
    w, a = run.best_bits()
    cost = run.table.policy_cost(w, a)
    panels = [("latency", cost.latency_s * 1e3, "latency (ms per batch)")]
    if cost.energy_j is not None:
        panels.append(("energy", cost.energy_j * 1e3, "energy (mJ per batch)"))
    bound = np.where(cost.memory_bound, "memory", "compute")
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            len(panels), 1, figsize=(max(8, 0.17 * len(w) + 2), 2.4 * len(panels)), squeeze=False
        )
        for ax, (_, values, label) in zip(axes[:, 0], panels, strict=True):
            x = np.arange(len(values))
            for kind, color in BOUND_COLORS.items():
                sel = bound == kind
                ax.bar(x[sel], values[sel], color=color, label=f"{kind} bound")
            ax.set_ylabel(label)
            ax.legend(fontsize=8)
        axes[0, 0].set_title(f"{run.label}: per-layer cost of the best policy")
        axes[-1, 0].set_xlabel("layer index")
        return _save(fig, path)


def roofline_figure(run: RunData, path: Path) -> Path | None:
    """Operational intensity (MACs per DRAM byte) vs attainable MAC/s, at w8a8 and at the
    best policy, under the hardware's roofs."""
    hw = run.table.hardware
    if hw.arch not in ARCHS:  # a measured table: no roofs to draw
        return None
    arch = ARCHS[hw.arch]
    bw = arch.bandwidth_bytes_per_s(hw)
    macs = run.table.macs * hw.batch
    w, a = run.best_bits()
    n = len(w)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
        for ax, (title, wb, ab) in zip(
            axes, (("all w8a8", np.full(n, 8), np.full(n, 8)), ("best policy", w, a)), strict=True
        ):
            idx = (np.arange(n), wb - 1, ab - 1)
            oi = macs / run.table.dram_bytes[idx]
            perf = macs / run.table.latency_s[idx]
            mem = run.table.memory_bound[idx]
            ridge = arch.peak_macs_per_s(hw, 2, 2) / bw  # show every roof's flat part
            xs = np.logspace(
                np.log10(min(oi.min(), ridge) / 3), np.log10(max(oi.max(), ridge) * 3), 200
            )
            for bits, style in ((8, "-"), (4, "--"), (2, ":")):
                peak = arch.peak_macs_per_s(hw, bits, bits)
                ax.plot(
                    xs,
                    np.minimum(peak, bw * xs),
                    "k" + style,
                    lw=1,
                    label=f"roof at w{bits}a{bits}",
                )
            ax.scatter(
                oi[~mem], perf[~mem], c=BOUND_COLORS["compute"], s=18, label="compute-bound layer"
            )
            ax.scatter(
                oi[mem], perf[mem], c=BOUND_COLORS["memory"], s=18, label="memory-bound layer"
            )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("operational intensity (MACs per DRAM byte)")
            ax.set_title(f"{hw.name} (batch {hw.batch}): {title}")
        axes[0].set_ylabel("attainable performance (MAC/s)")
        axes[0].legend(fontsize=7, loc="lower right")
        return _save(fig, path)


def search_figure(run: RunData, path: Path) -> Path:
    """Accuracy, reward and cost per episode, best-so-far line, warm-up shaded."""
    eps = np.array([r["episode"] for r in run.episodes])
    acc = np.array([r["accuracy"] for r in run.episodes])
    reward = np.array([r["reward"] for r in run.episodes])
    metric = run.main_metric
    scale, unit = UNIT_SCALE[metric]
    cost = np.array([r["cost"][metric] for r in run.episodes]) * scale
    warm = [r["episode"] for r in run.episodes if r.get("phase") == "warmup"]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(3, 1, figsize=(8, 6.5), sharex=True)
        for ax, values, label in zip(
            axes,
            (acc, reward, cost),
            ("held-out top-1 (%)", "reward", f"{metric} ({unit})"),
            strict=True,
        ):
            ax.scatter(eps, values, s=8, alpha=0.7)
            ax.set_ylabel(label)
            if warm:
                ax.axvspan(min(warm) - 0.5, max(warm) + 0.5, color="0.85", alpha=0.6, lw=0)
        axes[0].plot(eps, np.maximum.accumulate(acc), "r-", lw=1.2, label="best so far")
        axes[1].plot(eps, np.maximum.accumulate(reward), "r-", lw=1.2)
        if run.summary:
            limit = run.summary["budgets"][metric]["limit"] * scale
            axes[2].axhline(limit, color="k", ls="--", lw=1, label="budget")
            axes[2].legend(fontsize=8)
        axes[0].legend(fontsize=8, loc="lower right")
        shaded = " (grey = random warm-up)" if warm else ""
        axes[0].set_title(f"{run.label}: search curve{shaded}")
        axes[-1].set_xlabel("episode (one policy evaluated each)")
        axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
        return _save(fig, path)


def pareto_figure(runs: list[RunData], path: Path) -> Path:
    """Accuracy vs cost of every evaluated policy; best, uniform baseline and budget marked."""
    with plt.rc_context(STYLE):
        metrics = sorted({r.main_metric for r in runs})
        fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.2), squeeze=False)
        for ax, metric in zip(axes[0], metrics, strict=True):
            scale, unit = UNIT_SCALE[metric]
            for i, run in enumerate(r for r in runs if r.main_metric == metric):
                color = f"C{i}"
                c = np.array([r["cost"][metric] for r in run.episodes]) * scale
                acc = np.array([r["accuracy"] for r in run.episodes])
                ax.scatter(c, acc, s=10, alpha=0.5, color=color, label=f"{run.name} policies")
                _mark(ax, run.best, metric, scale, color, "*", 160, f"{run.name} best")
                if run.summary:
                    u = run.summary["uniform"]
                    label = f"{run.name} uniform w{u['bits']}a{u['bits']}"
                    _mark(ax, u, metric, scale, color, "s", 60, label)
                    ax.axvline(
                        run.summary["budgets"][metric]["limit"] * scale, color=color, ls="--", lw=1
                    )
            ax.set_xlabel(f"{metric} ({unit})")
            ax.set_ylabel("held-out top-1 (%)")
            ax.set_title(f"accuracy vs {metric} (dashed: budget)")
            ax.legend(fontsize=7)
        return _save(fig, path)


def summary_rows(run: RunData) -> list[list[str]]:
    """Rows of the summary table: metric, policy cost, budget, w8a8, policy / w8a8."""
    w, a = run.best_bits()
    cost = run.table.policy_cost(w, a)
    ref = run.table.uniform_cost(8)
    budgets = run.summary["budgets"] if run.summary else {}
    rows = []
    for metric in ("latency", "energy", "size", "bops"):
        if not run.table.metric_available(metric):
            continue
        v, r = cost.total(metric), ref.total(metric)
        b = budgets.get(metric)
        rows.append(
            [
                metric,
                format_value(metric, v),
                format_value(metric, b["limit"]) if b else "-",
                format_value(metric, r),
                f"{v / r:.3f}x",
            ]
        )
    return rows


def _mark(
    ax: Any, point: dict, metric: str, scale: float, color: str, marker: str, size: int, label: str
) -> None:
    """One highlighted policy (best or uniform) on an accuracy-vs-cost plot."""
    ax.scatter(
        [point["cost"][metric] * scale],
        [point["accuracy"]],
        marker=marker,
        s=size,
        color=color,
        edgecolor="k",
        label=label,
    )
