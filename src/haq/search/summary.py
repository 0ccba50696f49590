"""summary.json of a finished search: the best policy against the largest uniform one that
fits (also re-scored on images no episode was scored on), their costs, facts of the model and
hardware, and what the search cost."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from haq.evaluation import evaluate_policy
from haq.search.baselines import largest_uniform_bits
from haq.search.state import policy_key
from haq.textfmt import STAGE_BAR, progress_bar
from haq.train import evaluate

if TYPE_CHECKING:
    from haq.search.runner import Search


def check_top1(s: Search, w: np.ndarray, a: np.ndarray) -> float | None:
    """Top-1 of a policy evaluated like an episode but scored on the check subset."""
    if s.ctx.check_data is None:
        return None
    setup = replace(s.ctx.setup, eval_data=s.ctx.check_data)
    result, _ = evaluate_policy(setup, s.policy(w, a))
    return result.accuracy.top1


def summarize(s: Search) -> dict[str, Any]:
    """summary.json's content, written; the uniform baseline and the best policy's check
    score are evaluated here (a bar names each while it runs)."""
    c = s.ctx
    records = s.files.read_episodes()
    best = max(records, key=lambda r: r["reward"])
    bw, ba = np.array(best["w_bits"]), np.array(best["a_bits"])
    with progress_bar(total=2, desc="summary", disable=not s.progress, leave=False, bar_format=STAGE_BAR) as bar:  # fmt: skip
        bar.set_postfix_str("the largest uniform policy")
        uniform = _uniform_summary(s)
        bar.update(1)
        if c.check_data is not None:
            bar.set_postfix_str(f"the best policy on {len(c.check_data)} unseen images")
        best_check = check_top1(s, bw, ba)
        bar.update(1)
    sens = s.state.sensitivity or {"passes": 0, "seconds": 0.0}
    summary = {
        "model": c.cfg.model,
        "hardware": c.table.hardware.name,
        "batch": c.table.hardware.batch,
        "strategy": c.cfg.strategy,
        "mode": c.cfg.mode,
        "budgets": {
            b.metric: {"text": b.text, "limit": b.limit, "reference": b.reference}
            for b in c.budgets
        },
        "episodes": len(records),
        "fp_heldout_top1": c.fp_accuracy,
        "check_images": 0 if c.check_data is None else len(c.check_data),
        "best": {
            "episode": best["episode"],
            "accuracy": best["accuracy"],
            "check_top1": best_check,
            "cost": best["cost"],
            "w_bits": best["w_bits"],
            "a_bits": best["a_bits"],
        },
        "uniform": uniform,
        **_model_facts(s),
        "search_cost": {
            "policy_evaluations": s.state.evaluations,
            "sensitivity_passes": sens["passes"],
            "wall_s": s.agent_s + s.eval_s + sens["seconds"],
        },
        "timing_s": {
            "setup": c.setup_s,
            "agent": s.agent_s,
            "evaluation": s.eval_s,
            "sensitivity": sens["seconds"],
            "agent_fraction": s.agent_s / max(s.agent_s + s.eval_s, 1e-9),
        },
        "parallel": {
            "eval_workers": c.cfg.eval_workers,
            "workers_replaced": s.pool.replaced,
            "utilisation": s.state.busy_s / max(s.state.pool_wall_s, 1e-9),
        },
    }
    s.files.save_summary(summary)
    return summary


def _uniform_summary(s: Search) -> dict[str, Any]:
    """The largest uniform policy within every budget, evaluated like an episode."""
    c = s.ctx
    uniform = largest_uniform_bits(
        c.table,
        c.budgets,
        c.cfg.min_bit,
        c.cfg.max_bit,
        c.pinned_w,
        c.pinned_a,
        s.weights_only,
    )
    assert uniform is not None
    uw, ua = uniform
    key = policy_key(uw, ua)
    if key in s.state.cache or c.check_data is None:
        accuracy, check = s.evaluate(uw, ua).accuracy, check_top1(s, uw, ua)
    else:  # one finetune for both subsets
        result, model = evaluate_policy(c.setup, s.policy(uw, ua), return_model=True)
        accuracy = s.state.cache[key] = result.accuracy.top1
        loader = c.setup.loader(c.check_data, c.setup.eval_batch_size)
        check = evaluate(model, loader, device=c.setup.device).top1  # type: ignore[arg-type]
    return {
        "bits": int(uw[int(np.argmin(c.pinned_w > 0))]),  # the first free layer's bits
        "accuracy": accuracy,
        "check_top1": check,
        "cost": s.costs(uw, ua),
        "w_bits": uw.tolist(),
        "a_bits": ua.tolist(),
    }


def _model_facts(s: Search) -> dict[str, Any]:
    """What the summary says about the model and hardware, whatever the policy."""
    c = s.ctx
    all8 = np.full(len(c.names), 8)
    return {
        "w8a8_cost": s.costs(*s._pin(all8, all8)),
        "fp32_size_bytes": c.table.fp32_size_bytes(),
        "layer_names": c.names,
        "layer_kinds": [s.kind for s in c.table.layers],
        "memory_bound_w8a8": c.table.uniform_cost(8).memory_bound.tolist(),
    }
