"""Time of the DDPG agent's per-episode learning step (issue 4's overhead target).

One episode of the reference MobileNet-V2-style model has 106 decisions (53 layers x weight
and activation bits), and the paper's schedule makes one minibatch update per decision. This
times those 106 updates with the paper's 300-300 networks on a full replay buffer, for the
hand-written learner and the autograd reference (``DDPGConfig(autograd=True)``) taken
alternately in one process, and prints the median wall and thread (CPU) seconds of each over
the repetitions and their ratio.

    python benchmarks/bench_agent.py [--decisions 106] [--repeats 20] [--threads N]

``--threads 1`` against the default (the agent uses up to 4) reproduces the thread speed-up
quoted in docs/search.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from haq.search.ddpg import DDPG, DDPGConfig
from haq.search.env import STATE_DIM


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--decisions", type=int, default=106)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    agents = {}
    for name in ("hand-written", "autograd"):
        agents[name] = agent = DDPG(STATE_DIM, args.decisions, DDPGConfig(autograd=name == "autograd"))  # fmt: skip
        rng = np.random.default_rng(0)
        for _ in range(30):  # a buffer as after 30 episodes
            states = rng.random((args.decisions, STATE_DIM), dtype=np.float32)
            agent.observe_episode(states, rng.random(args.decisions), float(rng.normal()))
        agent.update(args.decisions)  # warm-up
    wall: dict[str, list[float]] = {k: [] for k in agents}
    cpu: dict[str, list[float]] = {k: [] for k in agents}
    for _ in range(args.repeats):  # alternating, so drift hits both alike
        for name, agent in agents.items():
            t0, c0 = time.perf_counter(), time.thread_time()
            agent.update(args.decisions)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.thread_time() - c0)
    for name in agents:
        print(
            f"{name}: {args.decisions} DDPG updates per episode: median "
            f"{statistics.median(wall[name]):.3f} s wall, {statistics.median(cpu[name]):.3f} s "
            f"main-thread CPU (min {min(wall[name]):.3f} s), {args.repeats} repeats, "
            f"{torch.get_num_threads()} torch threads"
        )
    ratio = statistics.median(wall["autograd"]) / statistics.median(wall["hand-written"])
    print(f"autograd / hand-written wall: {ratio:.2f}x")


if __name__ == "__main__":
    main()
