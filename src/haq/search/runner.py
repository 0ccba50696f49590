"""The search loop: rounds of episodes, the evaluation cache, records, checkpoint and resume.

Each episode the strategy (haq.search.strategies) drafts a policy, the loop enforces the
budgets, evaluates new policies (in this process or on Ray actors, haq.search.parallel),
records the episode and tells the strategy the reward; after every round it checkpoints.
The run directory's files belong to haq.search.rundir.RunDir; what a run builds before its
first episode to haq.search.setup; the final summary to haq.search.summary. Every accuracy
comes from :func:`haq.evaluation.evaluate_policy` (policy in, accuracy and timings out): the
loop never touches the model itself.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from haq.errors import HaqError
from haq.evaluation import evaluate_policy
from haq.policy import Policy
from haq.search.budget import ENFORCERS, format_value
from haq.search.config import SearchConfig
from haq.search.parallel import LocalPool, Outcome, Pool, make_pool
from haq.search.rundir import RunDir, new_run_id
from haq.search.setup import Announce, SearchContext, build_context, resolve_config
from haq.search.state import SearchState, policy_key
from haq.search.strategies import REGISTRY, Proposal, Strategy
from haq.search.summary import summarize
from haq.textfmt import progress_bar


@dataclass
class Evaluated:
    accuracy: float
    cached: bool


class Search:
    """One run. ``run()`` executes the remaining episodes and returns the summary."""

    def __init__(
        self,
        ctx: SearchContext,
        out_dir: Path,
        progress: bool = True,
        strategy: Strategy | None = None,
        run_id: str | None = None,
    ) -> None:
        """``ctx.cfg`` must be resolved (:meth:`SearchConfig.resolved`); ``strategy``
        defaults to the registry's for ``ctx.cfg.strategy``; ``run_id`` is the identity
        config.json, every record and the checkpoint carry (None: a run from before ids)."""
        self.ctx, self.out, self.progress = ctx, out_dir, progress
        self.files = RunDir(out_dir)
        self.run_id = run_id
        self.weights_only = ctx.cfg.mode == "kmeans"
        self.strategy = strategy or REGISTRY[ctx.cfg.strategy].factory(ctx, progress)
        self.state = SearchState(records=[])
        self.pool: Pool = LocalPool(ctx.setup)  # run() starts Ray actors for --eval-workers N
        self.agent_s = 0.0
        self.eval_s = 0.0

    # --- one policy ------------------------------------------------------------------------
    def policy(self, w: np.ndarray, a: np.ndarray, **info: Any) -> Policy:
        return Policy.from_arrays(self.ctx.names, w, a, self.ctx.cfg.mode, info)

    def evaluate(self, w: np.ndarray, a: np.ndarray) -> Evaluated:
        key = policy_key(w, a)
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
    def propose(self, episode: int, taken: set[str]) -> Proposal:
        """The episode's policy before and after enforcement. A strategy that allows redraws
        (the agent past its warm-up, ``--redraws N``) draws again, its noise doubled, while
        the enforced policy was already evaluated or proposed earlier in this round; the
        last draw stands. ``taken`` collects the round's keys."""
        for widen in range(self.strategy.redraws(episode) + 1):
            draft = self.strategy.ask(episode, widen)
            w, a = self._enforce(draft.w, draft.a)
            key = policy_key(w, a)
            if key not in self.state.cache and key not in taken:
                break
        taken.add(key)
        return Proposal(draft, w, a, widen)

    def round(self, episodes: range) -> list[dict[str, Any]]:
        """One round: a policy per episode (the agent acts with its current weights and each
        episode's own noise), the new ones evaluated in parallel, then the agent learns from
        each in episode order. A round of one episode is the serial search exactly."""
        t0 = time.perf_counter()
        taken: set[str] = set()
        proposals = [self.propose(episode, taken) for episode in episodes]
        t1 = time.perf_counter()
        scored = self._evaluate_round([(p.w, p.a) for p in proposals])
        t2 = time.perf_counter()
        records = []
        for episode, p, (ev, out) in zip(episodes, proposals, scored, strict=True):
            reward = self.reward(ev.accuracy)
            self.strategy.tell(episode, p.draft, p, reward)
            records.append(self._record(episode, p, ev, out, reward))
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
        keys = [policy_key(w, a) for w, a in policies]
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        new = [k for k in first if k not in self.state.cache]
        outcomes = self.pool.evaluate([self.policy(*policies[first[k]]) for k in new])
        fresh = dict(zip(new, outcomes, strict=True))
        for k, done in fresh.items():
            self.state.cache[k] = done.accuracy
            self.state.busy_s += done.eval_s
        self.state.evaluations += len(new)  # the search's cost (not the uniform check's)
        out: list[tuple[Evaluated, Outcome | None]] = []
        for i, k in enumerate(keys):
            o = fresh.get(k) if first[k] == i else None
            out.append((Evaluated(self.state.cache[k], o is None), o))
        return out

    def _record(
        self, episode: int, p: Proposal, ev: Evaluated, out: Outcome | None, reward: float
    ) -> dict[str, Any]:
        info = self.strategy.describe(episode, p.redraws)
        return {
            "episode": episode,
            "phase": info["phase"],
            "w_bits": p.w.tolist(),
            "a_bits": p.a.tolist(),
            "enforced": p.enforced,
            "cost": self.costs(p.w, p.a),
            "accuracy": ev.accuracy,
            "reward": reward,
            "cached": ev.cached,
            "eval_seconds": round(out.eval_s, 4) if out else 0.0,
            "worker": out.worker if out else None,
            "wait_seconds": round(out.wait_s, 4) if out else 0.0,
            "sigma": info["sigma"],
            "redraws": p.redraws,
        }

    # --- persistence ---------------------------------------------------------------------
    def save_state(self) -> None:
        self.strategy.save(self.state)
        payload = {
            "run_id": self.run_id,
            "state": self.state.__dict__,
            "timers": [self.agent_s, self.eval_s],
        }
        self.files.save_state(payload)

    def load_state(self) -> None:
        path = self.files.state
        try:
            payload = self.files.load_state()
            self.state = SearchState(**payload["state"])
            self.agent_s, self.eval_s = payload.get("timers", [0.0, 0.0])
            self.strategy.load(self.state)
        except Exception as err:
            raise HaqError(
                f"{path}: corrupt or incompatible search state ({err}); nothing was changed"
            ) from err
        if payload.get("run_id") != self.run_id:
            raise HaqError(
                f"{path} belongs to another run (run id {payload.get('run_id')}; config.json "
                f"says {self.run_id}); nothing was changed"
            )
        records = self.state.records
        if records is not None and (
            len(records) != self.state.episode or any(r.get("run") != self.run_id for r in records)
        ):
            raise HaqError(f"{path}: its records do not match the run; nothing was changed")

    def _restore_files(self) -> None:
        """Make the run's files agree with the checkpoint (records, best_policy.json)."""
        records = self.files.reconcile(self.state.episode, self.state.records)
        best = self.state.best_episode
        if 0 <= best < len(records) and not self.files.best.is_file():
            print(f"note: {self.files.best} rebuilt from the checkpoint", file=sys.stderr)
            self._write_best(records[best])

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
            episode=record["episode"],
            # what it was searched for: haq cost of this file costs that by default
            **c.model_info,
            hardware_spec=c.cfg.hardware,
        )
        self.files.save_best(policy)

    # --- the loop ------------------------------------------------------------------------
    def run(self, resume: bool = False) -> dict[str, Any]:
        """Run the remaining episodes (after restoring the checkpoint when ``resume``) and
        return the summary."""
        cfg = self.ctx.cfg
        if resume:
            self.load_state()
            self._restore_files()
        self.files.save_config(cfg, self.run_id)  # a resumed run: its grown episodes
        planned_s = self.strategy.prepare(self.state)
        if planned_s is not None:
            self.agent_s += planned_s
            self.save_state()
        total = self.strategy.total()
        if self.state.episode < total:
            self.pool = make_pool(cfg, self.ctx.setup)
        bar = progress_bar(
            total=total, initial=self.state.episode, desc=f"search ({cfg.strategy})",
            disable=not self.progress,
        )  # fmt: skip
        try:
            with self.files.open_log() as log:
                for start in range(self.state.episode, total, cfg.eval_workers):
                    episodes = range(start, min(start + cfg.eval_workers, total))
                    for record in self.round(episodes):
                        self._commit(record, log)
                    self.state.episode = episodes[-1] + 1
                    self._checkpoint()
                    bar.set_postfix_str(self._progress_text(record))
                    bar.update(len(episodes))
        finally:
            bar.close()
            self.pool.close()
        return self.summarize()

    def _checkpoint(self) -> None:
        t_save = time.perf_counter()
        try:
            self.save_state()
        except HaqError as err:
            raise HaqError(
                f"{err}; the previous checkpoint is intact, resume with --resume {self.out}"
            ) from err
        self.agent_s += time.perf_counter() - t_save  # checkpointing is overhead too

    def _progress_text(self, record: dict[str, Any]) -> str:
        """The progress bar's tail: best so far, the last policy's cost against the budget."""
        budget = self.ctx.budgets[0]
        best_acc = self.state.best_reward / 0.1 + self.ctx.fp_accuracy
        last = format_value(budget.metric, record["cost"][budget.metric])
        worker = (
            ""
            if record["worker"] is None or self.pool.workers == 1
            else f", worker {record['worker']} waited {record['wait_seconds']:.0f} s"
        )
        return (
            f"best {best_acc:.2f}% (fp {self.ctx.fp_accuracy:.2f}%), {budget.metric} {last} / "
            f"{format_value(budget.metric, budget.limit)}{worker}"
        )

    def _commit(self, record: dict[str, Any], log: Any) -> None:
        """Append an episode's record (and keep a copy for the checkpoint); a new best
        rewrites best_policy.json."""
        record["run"] = self.run_id
        line = json.dumps(record)
        if self.state.records is not None:
            self.state.records.append(json.loads(line))
        try:
            log.write(line + "\n")
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

    def summarize(self) -> dict[str, Any]:
        """summary.json of the finished search (haq.search.summary)."""
        return summarize(self)


def search(
    cfg: SearchConfig | None = None,
    out_dir: str | Path = "runs/search",
    resume: bool = False,
    progress: bool = True,
    announce: Announce | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Run (or continue, with ``resume=True``) a search; returns the summary dict.
    ``announce(config)``: called once the resolved configuration passed every check that
    needs no data (the CLI then names the run directory, device and strategy).

    A new run refuses a directory that already holds episodes; a resumed run refuses a
    configuration different from the saved one (``episodes`` may grow, ``device`` change).
    """
    out = Path(out_dir)
    files = RunDir(out)
    created = not out.exists()
    if not resume:
        files.check_new()  # before anything is written: never touch someone else's files
    try:
        with files.lock("haq search --resume" if resume else "haq search", create=not resume):
            cfg = resolve_config(cfg, out, resume, overrides)
            restart = resume and not files.has_checkpoint()  # killed before its checkpoint
            if restart:
                print(f"note: {out} has no checkpoint yet; the run starts again", file=sys.stderr)
                files.episodes.unlink(missing_ok=True)
            run_id = files.run_id() if resume and not restart else new_run_id()
            ctx = build_context(cfg, progress, announce)
            return Search(ctx, out, progress, run_id=run_id).run(resume and not restart)
    except BaseException as err:
        # failed before its first checkpoint: leave the directory as it was, unless the user
        # stopped a started run (Ctrl-C), which --resume starts again like a killed one
        stopped = isinstance(err, KeyboardInterrupt) and files.config.is_file()
        if not resume and not files.has_checkpoint() and not stopped:
            files.remove_unstarted(created)
        raise
