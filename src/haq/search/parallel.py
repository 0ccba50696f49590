"""Where a search's episodes are evaluated: in the search process, or in parallel by Ray actors.

``--eval-workers 1`` (the default) evaluates in the search process, as always. With N > 1
each of N Ray actors builds the run's evaluation once (model, calibration, data subsets:
:func:`haq.search.setup.build_eval_setup`, deterministic, so every worker scores a policy
as the search process would) and then evaluates the policies sent to it, one at a time.

- Ray: a local cluster bound to 127.0.0.1 sized to this machine, or ``--ray-address`` to join
  one. On CPUs the cores are split between the actors (``torch`` threads = cores / N); with
  GPUs each actor gets ``--gpus-per-worker``.
- A worker that dies is replaced and its policy sent again: no policy is lost or scored twice.
- Ray is an optional extra: without it, N > 1 is refused in one line that says how to install it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from haq.errors import HaqError
from haq.evaluation import EvalSetup, evaluate_policy
from haq.policy import Policy
from haq.search.cluster import import_ray, probe, ray_address
from haq.search.config import SearchConfig


@dataclass(frozen=True)
class Outcome:
    """One evaluated policy: held-out top-1, which worker scored it, how long it waited for
    a worker and how long the evaluation took (seconds)."""

    accuracy: float
    worker: int
    wait_s: float
    eval_s: float


class Pool(Protocol):
    workers: int
    replaced: int

    def evaluate(self, policies: Sequence[Policy]) -> list[Outcome]: ...

    def close(self) -> None: ...


class LocalPool:
    """Evaluate in the search process (``--eval-workers 1``)."""

    workers, replaced = 1, 0

    def __init__(self, setup: EvalSetup) -> None:
        self.setup = setup

    def evaluate(self, policies: Sequence[Policy]) -> list[Outcome]:
        out = []
        for policy in policies:
            t = time.perf_counter()
            result, _ = evaluate_policy(self.setup, policy)
            out.append(Outcome(result.accuracy.top1, 0, 0.0, time.perf_counter() - t))
        return out

    def close(self) -> None:
        pass


class EvalWorker:
    """A Ray actor: builds the run's evaluation once, then scores policies."""

    def __init__(self, cfg: dict[str, Any], threads: int) -> None:
        import torch

        from haq.checkpoint import resolve_model
        from haq.search.setup import build_eval_setup
        from haq.train import pick_device

        if threads > 0:
            torch.set_num_threads(threads)
        config = SearchConfig.from_dict(cfg)
        model, meta = resolve_model(config.model, config.checkpoint, config.weights)
        device = str(pick_device(config.device))  # cpu, or the GPU Ray assigned
        self.setup, _ = build_eval_setup(config, model, meta, device)

    def evaluate(self, names: list[str], w: list[int], a: list[int], mode: str) -> tuple:
        started = time.time()
        policy = Policy.from_arrays(names, np.array(w), np.array(a), mode)
        result, _ = evaluate_policy(self.setup, policy)
        return result.accuracy.top1, started, time.time() - started


class RayPool:
    """``n`` EvalWorker actors on a Ray cluster (started here unless ``address`` is given)."""

    def __init__(self, cfg: SearchConfig, n: int) -> None:
        ray = import_ray(n)
        self.ray, self.workers, self.replaced = ray, n, 0
        self.started_ray = not ray.is_initialized()
        if self.started_ray:
            address, source = ray_address(cfg.ray_address)
            where = f"at {address} (from {source})" if address else "on this machine"
            if address:
                probe(address, where)  # again: it may have gone since the search's start
            try:
                if address:
                    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
                else:
                    _start_local_ray(ray)
            except (Exception, SystemExit) as err:  # Ray raises, or exits, when it cannot
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise HaqError(f"cannot start or join a Ray cluster {where}: {first}") from err
        resources = ray.cluster_resources()
        gpus = resources.get("GPU", 0) > 0
        cpus = resources.get("CPU", 1) / n
        self.options = {"num_cpus": cpus, "num_gpus": cfg.gpus_per_worker if gpus else 0}
        self.threads = max(1, int(cpus)) if not gpus else 0
        self.cfg = cfg.to_dict() | {"device": None if gpus else "cpu"}
        self.actor_class = ray.remote(EvalWorker)
        self.actors = [self._start() for _ in range(n)]

    def _start(self) -> Any:
        return self.actor_class.options(**self.options).remote(self.cfg, self.threads)

    def evaluate(self, policies: Sequence[Policy]) -> list[Outcome]:
        """Every policy scored once, each by the next free worker; a worker that dies is
        replaced and its policy sent again."""
        ray = self.ray
        results: list[Outcome | None] = [None] * len(policies)
        pending, free = list(range(len(policies))), list(range(len(self.actors)))
        running: dict[Any, tuple[int, int, float]] = {}
        while pending or running:
            while pending and free:
                job, slot = pending.pop(0), free.pop(0)
                p = policies[job]
                ref = self.actors[slot].evaluate.remote(p.names, p.w_bits, p.a_bits, p.mode)
                running[ref] = (job, slot, time.time())
            (ref,), _ = ray.wait(list(running), num_returns=1)
            job, slot, sent = running.pop(ref)
            try:
                accuracy, started, seconds = ray.get(ref)
            except ray.exceptions.RayActorError as err:
                self.replaced += 1
                if self.replaced > 3 * self.workers:
                    why = str(err).strip().splitlines()[-1][:300]
                    raise HaqError(f"evaluation workers keep dying; the last: {why}") from err
                print(f"note: evaluation worker {slot} died; replaced", file=sys.stderr)
                self.actors[slot] = self._start()
                pending.insert(0, job)
            else:
                results[job] = Outcome(accuracy, slot, max(0.0, started - sent), seconds)
            free.append(slot)
        return [r for r in results if r is not None]

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        if self.started_ray:
            self.ray.shutdown()


def _start_local_ray(ray: Any) -> None:
    """A Ray cluster of this machine's cores, bound to 127.0.0.1. Its worker processes inherit
    the environment of this moment: PYTHONPATH is set so that they import what the search
    process imports (models given as module:function), then restored."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    try:
        ray.init(
            num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR",
            log_to_driver=False, _node_ip_address="127.0.0.1",
        )  # fmt: skip
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def make_pool(cfg: SearchConfig, setup: EvalSetup) -> Pool:
    """The search process itself for one worker, else Ray actors."""
    return LocalPool(setup) if cfg.eval_workers == 1 else RayPool(cfg, cfg.eval_workers)
