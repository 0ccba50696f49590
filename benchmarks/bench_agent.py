"""Time of the DDPG agent's per-episode learning step (issue 4's overhead target).

One episode of the reference MobileNet-V2-style model has 106 decisions (53 layers x weight
and activation bits), and the paper's schedule makes one minibatch update per decision. This
times those 106 updates with the paper's 300-300 networks on a full replay buffer, and prints
the median wall and thread (CPU) seconds over the repetitions.

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
    agent = DDPG(STATE_DIM, args.decisions, DDPGConfig())
    rng = np.random.default_rng(0)
    for _ in range(30):  # a buffer as after 30 episodes
        states = rng.random((args.decisions, STATE_DIM), dtype=np.float32)
        agent.observe_episode(states, rng.random(args.decisions), float(rng.normal()))
    agent.update(args.decisions)  # warm-up
    wall, cpu = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        agent.update(args.decisions)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    print(
        f"{args.decisions} DDPG updates per episode: median {statistics.median(wall):.3f} s wall, "
        f"{statistics.median(cpu):.3f} s main-thread CPU (min {min(wall):.3f} s), "
        f"{args.repeats} repeats, {torch.get_num_threads()} torch threads"
    )


if __name__ == "__main__":
    main()
