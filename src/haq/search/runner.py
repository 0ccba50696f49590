"""The search loop: strategies, run directory, cache, checkpoint/resume, summary.

Run directory::

    config.json        the SearchConfig, with the defaults that depend on others resolved
    episodes.jsonl     one line per episode: policy, cost per metric, accuracy, reward, seconds
    best_policy.json   the best policy so far (the format haq cost / eval / export read)
    state.pt           agent, replay buffer, RNG states, episode counter, evaluation cache,
                       the ilp / greedy sensitivities and planned policies
    summary.json       written at the end: best vs uniform (also on unseen images), costs,
                       what the search cost (evaluations, sensitivity passes, seconds)

Every episode's accuracy comes from :func:`haq.evaluation.evaluate_policy` (policy in,
accuracy and timings out): the loop never touches the model itself.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from haq.checkpoint import read_checkpoint, resolve_model
from haq.data import Data
from haq.errors import HaqError
from haq.evaluation import EvalSetup, evaluate_policy
from haq.fileio import atomic_write_json, atomic_write_text, read_json, save_payload
from haq.hardware import load_hardware
from haq.hardware.table import CostTable, cost_table
from haq.layers import extract_layers
from haq.policy import Policy
from haq.runlock import LOCK_NAME, run_lock
from haq.search.baselines import largest_uniform_bits
from haq.search.budget import ENFORCERS, Budget, check_feasible, format_value, parse_budget
from haq.search.config import CHANGEABLE_ON_RESUME, SearchConfig
from haq.search.ddpg import DDPG
from haq.search.env import STATE_DIM, Episode
from haq.search.parallel import LocalPool, Outcome, Pool, make_pool
from haq.search.planners import act_weights, plan_greedy, plan_ilp
from haq.search.sensitivity import Sensitivity, measure_sensitivity
from haq.search.setup import build_eval_setup
from haq.train import evaluate, pick_device

STATE_FORMAT = "haq-search-state-3"
RESTORE = (
    "restore episodes.jsonl from a copy, or start the search again with a new --out "
    '(docs/runs.md, "Recovering a run")'
)
PLANNERS = ("ilp", "greedy")  # strategies that plan on measured sensitivities


@dataclass
class SearchContext:
    """What a run builds once: model, data, calibration, cost table, budgets, pins."""

    cfg: SearchConfig
    setup: EvalSetup
    table: CostTable
    budgets: list[Budget]
    pinned_w: np.ndarray
    pinned_a: np.ndarray
    fp_accuracy: float
    metrics: list[str]
    check_data: Data | None = None  # images no episode is scored on
    setup_s: float = 0.0  # seconds build_context took (data, calibration, FP evaluation)

    @property
    def names(self) -> list[str]:
        return self.table.layer_names


def resolve_pins(
    spec: list[str], names: list[str], weights_only: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``first`` pins the first layer's weights (its input is the image, costed at 8 bits),
    ``last`` pins the last layer to w8a8, any other entry is a layer name pinned to w8a8."""
    n = len(names)
    pw, pa = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for item in spec:
        if item in ("", "none"):
            continue
        if item == "first":
            pw[0], pa[0] = 8, 8
        elif item == "last":
            pw[-1] = 8
            pa[-1] = 8
        elif item in names:
            i = names.index(item)
            pw[i], pa[i] = 8, 8
        else:
            raise HaqError(
                f"--keep-8bit: {item!r} is not 'first', 'last' or a layer name of the model"
            )
    if weights_only:
        pa[:] = 8
    return pw, pa


def build_context(cfg: SearchConfig) -> SearchContext:
    """Everything before the first episode, including the feasibility check."""
    t0 = time.perf_counter()
    cfg.validate()
    hw = load_hardware(cfg.hardware, cfg.batch)
    for metric in cfg.budgets:
        if metric == "energy" and not hw.has_energy:
            raise HaqError(
                f"hardware {hw.name!r} has no energy model; use --latency or another hardware"
            )
    model, meta = resolve_model(cfg.model, cfg.checkpoint, cfg.weights)
    device = str(pick_device(cfg.device))
    # everything that can be refused without data comes first: budgets, pins, feasibility
    layers = extract_layers(model, tuple(meta.input_shape))
    table = cost_table(layers, hw, {"model": cfg.model, "input_shape": list(meta.input_shape)})
    budgets = [parse_budget(m, text, table) for m, text in cfg.budgets.items()]
    weights_only = cfg.mode == "kmeans"
    pw, pa = resolve_pins(cfg.keep_8bit, table.layer_names, weights_only)
    check_feasible(table, budgets, cfg.min_bit, pw, pa)
    setup, check = build_eval_setup(cfg, model, meta, device)
    held_out = setup.loader(setup.eval_data, setup.eval_batch_size)
    fp = evaluate(model, held_out, device=device).top1
    metrics = [m for m in ("latency", "energy", "size", "bops") if table.metric_available(m)]
    return SearchContext(
        cfg, setup, table, budgets, pw, pa, fp, metrics, check, time.perf_counter() - t0
    )


@dataclass
class Evaluated:
    accuracy: float
    cached: bool


@dataclass
class SearchState:
    """Everything needed to continue a run after a crash."""

    episode: int = 0
    best_reward: float = -np.inf
    best_episode: int = -1
    cache: dict[str, float] = field(default_factory=dict)
    evaluations: int = 0  # policies evaluated (cache hits not counted)
    random_rng: dict[str, Any] | None = None
    agent: dict[str, Any] | None = None
    sensitivity: dict[str, Any] | None = None  # ilp / greedy: Sensitivity.to_dict()
    plan: list[tuple[list[int], list[int]]] | None = None  # ilp / greedy: (w, a) per episode
    busy_s: float = 0.0  # seconds the evaluation workers spent evaluating
    pool_wall_s: float = 0.0  # seconds x workers of the rounds' evaluation phases


def _key(w: np.ndarray, a: np.ndarray) -> str:
    return ",".join(f"{x}/{y}" for x, y in zip(w.tolist(), a.tolist(), strict=True))


class Search:
    """One run. ``run()`` executes the remaining episodes and returns the summary."""

    def __init__(self, ctx: SearchContext, out_dir: Path, progress: bool = True) -> None:
        """``ctx.cfg`` must be resolved (:meth:`SearchConfig.resolved`)."""
        self.ctx, self.out, self.progress = ctx, out_dir, progress
        cfg = ctx.cfg
        self.weights_only = cfg.mode == "kmeans"
        self.episode_spec = Episode(ctx.table.layers, self.weights_only)
        self.agent = (
            DDPG(STATE_DIM, len(self.episode_spec), cfg.ddpg) if cfg.strategy == "haq" else None
        )
        self.random_rng = np.random.default_rng(cfg.ddpg.seed + 1)  # the search seed
        self.state = SearchState()
        self.pool: Pool = LocalPool(ctx.setup)  # run() starts Ray actors for --eval-workers N
        self.agent_s = 0.0
        self.eval_s = 0.0

    # --- one policy ------------------------------------------------------------------------
    def policy(self, w: np.ndarray, a: np.ndarray, **info: Any) -> Policy:
        return Policy.from_arrays(self.ctx.names, w, a, self.ctx.cfg.mode, info)

    def evaluate(self, w: np.ndarray, a: np.ndarray) -> Evaluated:
        key = _key(w, a)
        if key in self.state.cache:
            return Evaluated(self.state.cache[key], True)
        result, _ = evaluate_policy(self.ctx.setup, self.policy(w, a))
        self.state.cache[key] = result.accuracy.top1
        return Evaluated(result.accuracy.top1, False)

    def reward(self, accuracy: float) -> float:
        return 0.1 * (accuracy - self.ctx.fp_accuracy)

    def costs(self, w: np.ndarray, a: np.ndarray) -> dict[str, float]:
        cost = self.ctx.table.policy_cost(w, a)
        return {m: cost.total(m) for m in self.ctx.metrics}

    def _pin(self, w: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.where(self.ctx.pinned_w > 0, self.ctx.pinned_w, w),
            np.where(self.ctx.pinned_a > 0, self.ctx.pinned_a, a),
        )

    def _enforce(self, w: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = self.ctx
        w, a = self._pin(w, a)
        return ENFORCERS[c.cfg.enforce](
            c.table, w, a, c.budgets, c.cfg.min_bit, c.pinned_w, c.pinned_a, self.weights_only
        )

    # --- episodes ------------------------------------------------------------------------
    def _propose(
        self, episode: int, widen: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, Any]:
        """(w, a, states, actions) before enforcement; states and actions only for the agent,
        whose noise is doubled ``widen`` times."""
        cfg = self.ctx.cfg
        ep = self.episode_spec
        if cfg.strategy == "uniform":
            found = largest_uniform_bits(
                self.ctx.table,
                self.ctx.budgets,
                cfg.min_bit,
                cfg.max_bit,
                self.ctx.pinned_w,
                self.ctx.pinned_a,
                self.weights_only,
            )
            assert found is not None  # feasibility was checked
            return found[0], found[1], None, None
        if cfg.strategy in PLANNERS:
            assert self.state.plan is not None
            w, a = self.state.plan[episode]
            return np.array(w), np.array(a), None, None
        if cfg.strategy == "random":
            actions = self.random_rng.uniform(0.0, 1.0, len(ep))
            w, a = ep.actions_to_bits(actions, cfg.min_bit, cfg.max_bit)
            return w, a, None, None
        assert self.agent is not None
        states, actions, prev = [], [], 0.0
        for t in range(len(ep)):
            s = ep.state(t, prev)
            prev = self.agent.act(s, episode, widen=widen)
            states.append(s)
            actions.append(prev)
        w, a = ep.actions_to_bits(actions, cfg.min_bit, cfg.max_bit)
        return w, a, np.stack(states), np.asarray(actions, dtype=np.float32)

    def _fresh_proposal(self, episode: int, taken: set[str]) -> tuple[Any, ...]:
        """(w0, a0, w, a, states, actions, redraws): the episode's policy before and after
        enforcement. With ``--redraws N`` an agent past warm-up whose enforced policy was
        already evaluated (or proposed earlier in this round) redraws with its noise doubled,
        up to N times; the last draw stands. ``taken`` collects the round's keys."""
        cfg = self.ctx.cfg
        agent_search = self.agent is not None and episode >= cfg.ddpg.warmup_episodes
        redraws = cfg.ddpg.redraws if agent_search else 0
        for widen in range(redraws + 1):
            w0, a0, states, actions = self._propose(episode, widen)
            w, a = self._enforce(w0, a0)
            key = _key(w, a)
            if key not in self.state.cache and key not in taken:
                break
        taken.add(key)
        return w0, a0, w, a, states, actions, widen

    def _learn(self, episode: int, states: np.ndarray, actions: np.ndarray, reward: float) -> None:
        """Store the episode as the actor took it (its own actions and the states it saw,
        as the reference code does) with the reward of the enforced policy; then update."""
        assert self.agent is not None
        self.agent.observe_episode(states, actions, reward)
        if episode >= self.ctx.cfg.ddpg.warmup_episodes:
            self.agent.update(len(states))

    def _plan(self) -> None:
        """ilp / greedy: measure the sensitivities and plan the policies to evaluate, once
        (both are saved with the state, so a resumed run does not repeat them)."""
        c, cfg = self.ctx, self.ctx.cfg
        if self.state.sensitivity is None:
            sens = measure_sensitivity(
                c.setup,
                cfg.mode,
                range(cfg.min_bit, cfg.max_bit + 1),
                c.pinned_w,
                c.pinned_a,
                images=cfg.sensitivity_images,
                progress=self.progress,
            )
            self.state.sensitivity = sens.to_dict()
        sens = Sensitivity.from_dict(self.state.sensitivity)
        t0 = time.perf_counter()
        limits = (c.table, c.budgets)
        bits = (cfg.min_bit, cfg.max_bit, c.pinned_w, c.pinned_a, self.weights_only)
        if cfg.strategy == "ilp":
            plans: list[tuple[np.ndarray, np.ndarray]] = []
            for act_weight in act_weights(int(cfg.episodes or 1)):
                score = sens.pair_table(act_weight)
                plans += plan_ilp(*limits, score, *bits, k=1, exclude=plans)
        else:
            plans = [plan_greedy(*limits, sens.pair_table(), *bits)]
        self.agent_s += time.perf_counter() - t0
        self.state.plan = [(w.tolist(), a.tolist()) for w, a in plans]

    def _total(self) -> int:
        cfg = self.ctx.cfg
        if cfg.strategy == "uniform":
            return 1
        if self.state.plan is not None:
            return min(int(cfg.episodes or 1), len(self.state.plan))
        return int(cfg.episodes or 1)

    def round(self, episodes: range) -> list[dict[str, Any]]:
        """One round: a policy per episode (the agent acts with its current weights and each
        episode's own noise), the new ones evaluated in parallel, then the agent learns from
        each in episode order. A round of one episode is the serial search exactly."""
        t0 = time.perf_counter()
        taken: set[str] = set()
        proposals = [self._fresh_proposal(episode, taken) for episode in episodes]
        t1 = time.perf_counter()
        scored = self._evaluate_round([(p[2], p[3]) for p in proposals])
        t2 = time.perf_counter()
        records = []
        for episode, (w0, a0, w, a, states, actions, widen), (ev, out) in zip(
            episodes, proposals, scored, strict=True
        ):
            reward = self.reward(ev.accuracy)
            if states is not None:
                self._learn(episode, states, actions, reward)
            records.append(self._record(episode, w0, a0, w, a, ev, out, reward, widen))
        t3 = time.perf_counter()
        self.agent_s += (t1 - t0) + (t3 - t2)
        self.eval_s += t2 - t1
        self.state.pool_wall_s += (t2 - t1) * self.pool.workers
        for r in records:
            r["seconds"] = round((t3 - t0) / len(records), 4)
        return records

    def _evaluate_round(
        self, policies: list[tuple[np.ndarray, np.ndarray]]
    ) -> list[tuple[Evaluated, Outcome | None]]:
        """Accuracy of every policy; the ones not in the cache are sent to the pool once."""
        keys = [_key(w, a) for w, a in policies]
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        new = [k for k in first if k not in self.state.cache]
        outcomes = self.pool.evaluate([self.policy(*policies[first[k]]) for k in new])
        fresh = dict(zip(new, outcomes, strict=True))
        for k, o in fresh.items():
            self.state.cache[k] = o.accuracy
            self.state.busy_s += o.eval_s
        self.state.evaluations += len(new)  # the search's cost (not the uniform check's)
        out: list[tuple[Evaluated, Outcome | None]] = []
        for i, k in enumerate(keys):
            o = fresh.get(k) if first[k] == i else None
            out.append((Evaluated(self.state.cache[k], o is None), o))
        return out

    def _record(
        self,
        episode: int,
        w0: np.ndarray,
        a0: np.ndarray,
        w: np.ndarray,
        a: np.ndarray,
        ev: Evaluated,
        out: Outcome | None,
        reward: float,
        widen: int,
    ) -> dict[str, Any]:
        warm = self.ctx.cfg.strategy == "haq" and episode < self.ctx.cfg.ddpg.warmup_episodes
        return {
            "episode": episode,
            "phase": "warmup" if warm else "search",
            "w_bits": w.tolist(),
            "a_bits": a.tolist(),
            "enforced": bool((w != w0).any() or (a != a0).any()),
            "cost": self.costs(w, a),
            "accuracy": ev.accuracy,
            "reward": reward,
            "cached": ev.cached,
            "eval_seconds": round(out.eval_s, 4) if out else 0.0,
            "worker": out.worker if out else None,
            "wait_seconds": round(out.wait_s, 4) if out else 0.0,
            "sigma": self.agent.sigma(episode, widen) if self.agent and not warm else None,
            "redraws": widen,
        }

    # --- persistence ---------------------------------------------------------------------
    def save_state(self) -> None:
        self.state.random_rng = self.random_rng.bit_generator.state
        self.state.agent = self.agent.state_dict() if self.agent else None
        payload = {
            "format": STATE_FORMAT,
            "state": self.state.__dict__,
            "timers": [self.agent_s, self.eval_s],
        }
        save_payload(payload, self.out / "state.pt")

    def load_state(self) -> None:
        path = self.out / "state.pt"
        try:
            payload = torch.load(path, map_location="cpu", weights_only=False)
            if payload.get("format") != STATE_FORMAT:
                raise ValueError("unknown format")
            self.state = SearchState(**payload["state"])
            self.agent_s, self.eval_s = payload.get("timers", [0.0, 0.0])
            if self.state.random_rng is not None:
                self.random_rng.bit_generator.state = self.state.random_rng
            if self.agent is not None:
                if self.state.agent is None:
                    raise ValueError("no agent state")
                self.agent.load_state_dict(self.state.agent)
        except Exception as err:
            raise HaqError(
                f"{path}: corrupt or incompatible search state ({err}); nothing was changed"
            ) from err

    def _reconcile_episodes(self) -> None:
        """Make ``episodes.jsonl`` agree with ``state.pt``, the source of truth for how many
        episodes are done: a torn last line and records written after the last checkpoint
        are dropped (that episode runs again); a missing, duplicated or unreadable record
        earlier in the file is an error that says what to do."""
        path = self.out / "episodes.jsonl"
        done = self.state.episode
        lines = [ln for ln in path.read_bytes().split(b"\n") if ln.strip()] if path.exists() else []
        records: list[str] = []
        for i, raw in enumerate(lines):
            try:
                text = raw.decode("utf-8")
                number = json.loads(text)["episode"]
            except (UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError) as err:
                if i == len(lines) - 1 and i >= done:
                    print(f"note: {path}: dropped a torn last line", file=sys.stderr)
                    break
                raise HaqError(
                    f"{path}: record {i + 1} is unreadable ({type(err).__name__}); {RESTORE}"
                ) from err
            records.append(text)
            if i < done and number != i:
                raise HaqError(
                    f"{path}: record {i + 1} is episode {number}, expected {i} (a record was "
                    f"deleted or duplicated); {RESTORE}"
                )
        if len(records) < done:
            raise HaqError(
                f"{path} holds {len(records)} of the {done} episodes that state.pt records "
                f"as done; {RESTORE}"
            )
        if len(records) > done:
            print(
                f"note: dropped {len(records) - done} record(s) written after the last "
                f"checkpoint; episode {done} runs again",
                file=sys.stderr,
            )
        atomic_write_text(path, "".join(r + "\n" for r in records[:done]))

    def _write_best(self, record: dict[str, Any]) -> None:
        c = self.ctx
        w, a = np.array(record["w_bits"]), np.array(record["a_bits"])
        policy = self.policy(
            w,
            a,
            hardware=c.table.hardware.name,
            batch=c.table.hardware.batch,
            budgets={
                b.metric: {"text": b.text, "limit": b.limit, "reference": b.reference}
                for b in c.budgets
            },
            cost=record["cost"],
            accuracy={"heldout_top1": record["accuracy"], "fp_heldout_top1": c.fp_accuracy},
            model=c.cfg.model,
            episode=record["episode"],
        )
        policy.save(self.out / "best_policy.json")

    # --- the loop ------------------------------------------------------------------------
    def run(self, resume: bool = False) -> dict[str, Any]:
        cfg = self.ctx.cfg
        if resume:
            self.load_state()
            self._reconcile_episodes()
        if cfg.strategy in PLANNERS and self.state.plan is None:
            self._plan()
            self.save_state()
        total = self._total()
        if self.state.episode < total:
            self.pool = make_pool(cfg, self.ctx.setup)
        log = (self.out / "episodes.jsonl").open("a")
        bar = tqdm(
            total=total,
            initial=self.state.episode,
            desc=f"search ({cfg.strategy})",
            disable=not self.progress,
        )
        main_budget = self.ctx.budgets[0]
        try:
            for start in range(self.state.episode, total, cfg.eval_workers):
                episodes = range(start, min(start + cfg.eval_workers, total))
                for record in self.round(episodes):
                    self._commit(record, log)
                self.state.episode = episodes[-1] + 1
                t_save = time.perf_counter()
                try:
                    self.save_state()
                except HaqError as err:
                    raise HaqError(
                        f"{err}; the previous checkpoint is intact, resume with --resume {self.out}"
                    ) from err
                self.agent_s += time.perf_counter() - t_save  # checkpointing is overhead too
                best_acc = self.state.best_reward / 0.1 + self.ctx.fp_accuracy
                last = format_value(main_budget.metric, record["cost"][main_budget.metric])
                worker = (
                    ""
                    if record["worker"] is None or self.pool.workers == 1
                    else (f", worker {record['worker']} waited {record['wait_seconds']:.0f} s")
                )
                bar.set_postfix_str(
                    f"best {best_acc:.2f}% (fp {self.ctx.fp_accuracy:.2f}%), {main_budget.metric} "
                    f"{last} / {format_value(main_budget.metric, main_budget.limit)}{worker}"
                )
                bar.update(len(episodes))
        finally:
            bar.close()
            self.pool.close()
            with contextlib.suppress(OSError):  # a full disk was reported above
                log.close()
        return self.summarize()

    def _commit(self, record: dict[str, Any], log: Any) -> None:
        """Append an episode's record; a new best rewrites best_policy.json."""
        try:
            log.write(json.dumps(record) + "\n")
            log.flush()
        except OSError as err:
            raise HaqError(
                f"cannot write {self.out / 'episodes.jsonl'}: {err.strerror}; the run stopped "
                f"after {self.state.episode} episode(s), resume with --resume {self.out}"
            ) from err
        if record["reward"] > self.state.best_reward:
            self.state.best_reward = record["reward"]
            self.state.best_episode = record["episode"]
            self._write_best(record)

    def _check(self, w: np.ndarray, a: np.ndarray) -> float | None:
        """Top-1 of a policy evaluated like an episode but scored on the check subset."""
        if self.ctx.check_data is None:
            return None
        setup = replace(self.ctx.setup, eval_data=self.ctx.check_data)
        result, _ = evaluate_policy(setup, self.policy(w, a))
        return result.accuracy.top1

    def summarize(self) -> dict[str, Any]:
        c = self.ctx
        records = read_episodes(self.out)
        best = max(records, key=lambda r: r["reward"])
        uniform = self._uniform_summary()
        bw, ba = np.array(best["w_bits"]), np.array(best["a_bits"])
        sens = self.state.sensitivity or {"passes": 0, "seconds": 0.0}
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
                "check_top1": self._check(bw, ba),
                "cost": best["cost"],
                "w_bits": best["w_bits"],
                "a_bits": best["a_bits"],
            },
            "uniform": uniform,
            **self._model_facts(),
            "search_cost": {
                "policy_evaluations": self.state.evaluations,
                "sensitivity_passes": sens["passes"],
                "wall_s": self.agent_s + self.eval_s + sens["seconds"],
            },
            "timing_s": {
                "setup": c.setup_s,
                "agent": self.agent_s,
                "evaluation": self.eval_s,
                "sensitivity": sens["seconds"],
                "agent_fraction": self.agent_s / max(self.agent_s + self.eval_s, 1e-9),
            },
            "parallel": {
                "eval_workers": c.cfg.eval_workers,
                "workers_replaced": self.pool.replaced,
                "utilisation": self.state.busy_s / max(self.state.pool_wall_s, 1e-9),
            },
        }
        atomic_write_json(self.out / "summary.json", summary)
        return summary

    def _uniform_summary(self) -> dict[str, Any]:
        """The largest uniform policy within every budget, evaluated like an episode."""
        c = self.ctx
        uniform = largest_uniform_bits(
            c.table,
            c.budgets,
            c.cfg.min_bit,
            c.cfg.max_bit,
            c.pinned_w,
            c.pinned_a,
            self.weights_only,
        )
        assert uniform is not None
        uw, ua = uniform
        key = _key(uw, ua)
        if key in self.state.cache or c.check_data is None:
            accuracy, check = self.evaluate(uw, ua).accuracy, self._check(uw, ua)
        else:  # one finetune for both subsets
            result, model = evaluate_policy(c.setup, self.policy(uw, ua), return_model=True)
            accuracy = self.state.cache[key] = result.accuracy.top1
            loader = c.setup.loader(c.check_data, c.setup.eval_batch_size)
            check = evaluate(model, loader, device=c.setup.device).top1  # type: ignore[arg-type]
        return {
            "bits": int(uw[int(np.argmin(c.pinned_w > 0))]),  # the first free layer's bits
            "accuracy": accuracy,
            "check_top1": check,
            "cost": self.costs(uw, ua),
            "w_bits": uw.tolist(),
            "a_bits": ua.tolist(),
        }

    def _model_facts(self) -> dict[str, Any]:
        """What the summary says about the model and hardware, whatever the policy."""
        c = self.ctx
        all8 = np.full(len(c.names), 8)
        return {
            "w8a8_cost": self.costs(*self._pin(all8, all8)),
            "fp32_size_bytes": c.table.fp32_size_bytes(),
            "layer_names": c.names,
            "layer_kinds": [s.kind for s in c.table.layers],
            "memory_bound_w8a8": c.table.uniform_cost(8).memory_bound.tolist(),
        }


def read_episodes(run_dir: Path) -> list[dict[str, Any]]:
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
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
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


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested options as dotted names: {"ddpg": {"seed": 1}} -> {"ddpg.seed": 1}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def resolve_config(
    cfg: SearchConfig | None, out: Path, resume: bool, overrides: dict[str, Any]
) -> SearchConfig:
    """The configuration a run uses: for a new run ``cfg`` (default: the embedded default)
    with ``overrides``, resolved; for a resumed run the saved one with ``overrides``, which
    may only grow ``episodes`` or change how it runs (``CHANGEABLE_ON_RESUME``)."""
    if not resume:
        if cfg is None and "checkpoint" in overrides and "model" not in overrides:
            overrides = {**overrides, "model": read_checkpoint(overrides["checkpoint"])[0].model}
        return (cfg or SearchConfig()).with_overrides(overrides).resolved()  # validated
    saved_path = out / "config.json"
    if not saved_path.is_file():
        raise HaqError(f"{out}: cannot resume: no config.json there")
    saved = SearchConfig.load(saved_path)
    wanted = (cfg or saved).with_overrides(overrides)
    if wanted.ddpg.sigma_decay is None:  # a caller's config without the resolved value
        wanted.ddpg = replace(wanted.ddpg, sigma_decay=saved.ddpg.sigma_decay)
    if wanted.episodes is None:
        wanted.episodes = saved.episodes
    if saved.episodes is not None and wanted.episodes < saved.episodes:
        raise HaqError(
            f"--episodes {wanted.episodes}: {out} was started for {saved.episodes} episodes; "
            "a resumed run can only grow; nothing was changed"
        )
    before, after = _flat(saved.to_dict()), _flat(wanted.to_dict())
    diff = [
        f"{k} {before.get(k)!r} -> {after.get(k)!r}"
        for k in sorted(before.keys() | after.keys())
        if k.split(".")[0] not in CHANGEABLE_ON_RESUME and after.get(k) != before.get(k)
    ]
    if diff:
        raise HaqError(
            f"{out} belongs to a different configuration (differs in: {', '.join(diff)}); "
            "nothing was changed"
        )
    if not (out / "state.pt").is_file():
        raise HaqError(f"{out}: cannot resume: no state.pt (corrupt run directory)")
    return wanted


def search(
    cfg: SearchConfig | None = None,
    out_dir: str | Path = "runs/search",
    resume: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Run (or continue, with ``resume=True``) a search; returns the summary dict.

    A new run refuses a directory that already holds episodes; a resumed run refuses a
    configuration different from the saved one (``episodes`` may grow, ``device`` change).
    """
    out = Path(out_dir)
    created = not out.exists()
    if not resume:
        check_new_run_dir(out)  # before anything is written: never touch someone else's files
    try:
        with run_lock(out, "haq search --resume" if resume else "haq search", create=not resume):
            cfg = resolve_config(cfg, out, resume, overrides)
            ctx = build_context(cfg)
            cfg.save(out / "config.json")  # a resumed run records its grown episode count
            return Search(ctx, out, progress).run(resume=resume)
    except BaseException:
        if not resume and not (out / "state.pt").is_file():  # failed before episode 1:
            for name in ("config.json", "episodes.jsonl"):  # leave the directory as it was
                (out / name).unlink(missing_ok=True)
            if created and out.is_dir() and [p.name for p in out.iterdir()] == [LOCK_NAME]:
                shutil.rmtree(out, ignore_errors=True)
        raise


def check_new_run_dir(out: Path) -> None:
    """A new run needs an absent or empty directory (its lock file aside)."""
    if not out.is_dir():
        if out.exists():
            raise HaqError(f"--out {out} is a file, not a directory")
        return
    if (out / "config.json").is_file():
        raise HaqError(f"{out} already holds a haq run; continue it with --resume {out}")
    others = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME)
    if others:
        shown = ", ".join(others[:3]) + (" ..." if len(others) > 3 else "")
        raise HaqError(
            f"--out {out} is not empty and not a haq run ({shown}); choose another --out"
        )
