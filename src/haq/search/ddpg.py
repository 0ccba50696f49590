"""DDPG for HAQ, in one readable module (in the spirit of CleanRL).

Hyperparameters are the HAQ reference defaults. Each transition of an episode carries the
episode's final reward (the reward only exists once the whole policy is evaluated); a
moving-average baseline of the reward is subtracted when training the critic. The agent owns
its random generators, so its behaviour does not depend on anything else that draws random
numbers (finetuning, data shuffling): a resumed search replays exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


@dataclass
class DDPGConfig:
    hidden: int = 300  # actor and critic: state -> 300 -> 300 -> 1
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    tau: float = 0.01  # soft target update
    discount: float = 1.0
    replay_episodes: int = 128  # replay capacity = 128 x decisions per episode
    batch_size: int = 64
    warmup_episodes: int = 20  # uniformly random actions
    init_sigma: float = 0.5  # exploration: truncated normal, sigma = 0.5 * 0.99^(ep - warmup)
    sigma_decay: float = 0.99
    baseline_alpha: float = 0.5  # moving-average reward baseline
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Actor(nn.Module):
    def __init__(self, state_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(state_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
            nn.Sigmoid(),
        )

    def forward(self, s: Tensor) -> Tensor:
        return self.net(s)


class Critic(nn.Module):
    def __init__(self, state_dim: int, hidden: int) -> None:
        super().__init__()
        self.fs = nn.Linear(state_dim, hidden)
        self.fa = nn.Linear(1, hidden)
        self.out = nn.Sequential(
            nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def forward(self, s: Tensor, a: Tensor) -> Tensor:
        return self.out(self.fs(s) + self.fa(a))


class ReplayBuffer:
    """A ring buffer of (state, action, reward, next state, done) as numpy arrays."""

    def __init__(self, capacity: int, state_dim: int) -> None:
        self.capacity = capacity
        self.s = np.zeros((capacity, state_dim), np.float32)
        self.a = np.zeros((capacity, 1), np.float32)
        self.r = np.zeros((capacity, 1), np.float32)
        self.s2 = np.zeros((capacity, state_dim), np.float32)
        self.done = np.zeros((capacity, 1), np.float32)
        self.pos = 0
        self.size = 0

    def add(self, s: np.ndarray, a: float, r: float, s2: np.ndarray, done: bool) -> None:
        i = self.pos
        self.s[i], self.a[i], self.r[i], self.s2[i], self.done[i] = s, a, r, s2, float(done)
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[Tensor, ...]:
        idx = rng.integers(0, self.size, size=n)
        return tuple(torch.from_numpy(x[idx]) for x in (self.s, self.a, self.r, self.s2, self.done))

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("s", "a", "r", "s2", "done", "pos", "size")}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        for k, v in d.items():
            setattr(self, k, v)


class DDPG:
    """Actor-critic agent with target networks, replay, warm-up and decaying exploration."""

    def __init__(self, state_dim: int, decisions_per_episode: int, cfg: DDPGConfig) -> None:
        self.cfg = cfg
        torch_gen_state = torch.get_rng_state()
        torch.manual_seed(cfg.seed)  # network init only; the global RNG is restored below
        self.actor, self.critic = Actor(state_dim, cfg.hidden), Critic(state_dim, cfg.hidden)
        self.actor_target, self.critic_target = (
            Actor(state_dim, cfg.hidden),
            Critic(state_dim, cfg.hidden),
        )
        torch.set_rng_state(torch_gen_state)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic_target.load_state_dict(self.critic.state_dict())
        self._target_params = [
            *self.actor_target.parameters(),
            *self.critic_target.parameters(),
        ]
        self._source_params = [*self.actor.parameters(), *self.critic.parameters()]
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr, fused=True)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr, fused=True)
        self.buffer = ReplayBuffer(cfg.replay_episodes * decisions_per_episode, state_dim)
        self.rng = np.random.default_rng(cfg.seed)
        self.baseline: float | None = None

    # --- acting --------------------------------------------------------------------------
    def sigma(self, episode: int) -> float:
        return self.cfg.init_sigma * self.cfg.sigma_decay ** max(
            0, episode - self.cfg.warmup_episodes
        )

    def act(self, state: np.ndarray, episode: int, explore: bool = True) -> float:
        """Uniform in warm-up; else the actor's output plus truncated-normal noise in [0, 1]."""
        if explore and episode < self.cfg.warmup_episodes:
            return float(self.rng.uniform(0.0, 1.0))
        with torch.no_grad():
            mu = float(self.actor(torch.from_numpy(state).unsqueeze(0)))
        if not explore:
            return mu
        sigma = self.sigma(episode)
        for _ in range(100):  # truncated normal on [0, 1] by rejection
            a = self.rng.normal(mu, sigma)
            if 0.0 <= a <= 1.0:
                return float(a)
        return float(np.clip(mu, 0.0, 1.0))

    # --- learning ------------------------------------------------------------------------
    def observe_episode(self, states: np.ndarray, actions: np.ndarray, reward: float) -> None:
        """Store every transition of an episode with the episode's reward."""
        n = len(states)
        for t in range(n):
            nxt = states[t + 1] if t + 1 < n else states[t]
            self.buffer.add(states[t], float(actions[t]), reward, nxt, t == n - 1)

    def update(self, n_updates: int) -> None:
        """``n_updates`` minibatch steps (the reference does one per stored transition)."""
        if self.buffer.size < self.cfg.batch_size:
            return
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # 300-unit MLPs: threads only add overhead (and contention)
        try:
            self._updates(n_updates)
        finally:
            torch.set_num_threads(threads)

    def _updates(self, n_updates: int) -> None:
        for _ in range(n_updates):
            s, a, r, s2, done = self.buffer.sample(self.rng, self.cfg.batch_size)
            batch_mean = float(r.mean())
            if self.baseline is None:
                self.baseline = batch_mean
            else:
                self.baseline += self.cfg.baseline_alpha * (batch_mean - self.baseline)
            with torch.no_grad():
                next_q = self.critic_target(s2, self.actor_target(s2))
                target = (r - self.baseline) + self.cfg.discount * (1.0 - done) * next_q
            critic_loss = nn.functional.mse_loss(self.critic(s, a), target)
            self.critic_opt.zero_grad()
            critic_loss.backward()
            self.critic_opt.step()
            self.critic.requires_grad_(False)  # the actor step needs no critic weight gradients
            actor_loss = -self.critic(s, self.actor(s)).mean()
            self.actor_opt.zero_grad()
            actor_loss.backward()
            self.actor_opt.step()
            self.critic.requires_grad_(True)
            self._soft_update()

    def _soft_update(self) -> None:
        """target <- (1 - tau) target + tau source, for both networks in one fused call."""
        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self._source_params, self.cfg.tau)

    # --- checkpointing -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "buffer": self.buffer.state_dict(),
            "rng": self.rng.bit_generator.state,
            "baseline": self.baseline,
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        for key in ("actor", "critic", "actor_target", "critic_target", "actor_opt", "critic_opt"):
            getattr(self, key).load_state_dict(d[key])
        self.buffer.load_state_dict(d["buffer"])
        self.rng.bit_generator.state = d["rng"]
        self.baseline = d["baseline"]
