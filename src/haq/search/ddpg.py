"""DDPG for HAQ, in one readable module (in the spirit of CleanRL).

Hyperparameters are the HAQ reference defaults. Each transition of an episode carries the
episode's final reward (the reward only exists once the whole policy is evaluated); a
moving-average baseline of the reward is subtracted when training the critic. The agent owns
its random generators, so its behaviour does not depend on anything else that draws random
numbers (finetuning, data shuffling): a resumed search replays exactly.

Why the networks are written out by hand (forward and backward, parameters in one flat
vector per network that Adam steps in one fused kernel) instead of ``nn.Module`` + autograd:
the paper's schedule makes one minibatch update per decision, 106 per episode on the
reference model, and at batch 64 with 300 units the matrix products are so small that
autograd's graph, the optimizer's per-tensor loops and the module calls cost as much as the
arithmetic. The agent should stay a small share of the search time (target: under 5 %); the
explicit version does the same mathematics in about half the time
(``benchmarks/bench_agent.py --autograd``). The readable version is here too, as the
reference: :class:`Net` (an ``nn.Module`` over the same parameters) trained through autograd
and ``torch.optim.Adam`` with ``DDPGConfig(autograd=True)``; the tests hold both to the same
losses and weights.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from haq.options import SEED_MAX, opt


@dataclass
class DDPGConfig:
    hidden: int = 300  # actor and critic: input -> 300 -> 300 -> 1
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    tau: float = 0.01  # soft target update
    discount: float = 1.0
    replay_episodes: int = 128  # replay capacity = 128 x decisions per episode
    batch_size: int = 64
    warmup_episodes: int = opt(20, "random warm-up episodes of the haq agent", flag="warmup", low=0)
    anchor: bool = opt(
        True,
        "no anchor episode: every warm-up episode random, as in the paper (by default the "
        "first proposes the top bit for every decision, enforced to the budget, so every "
        "search scores the policy a saturated agent ends with; with --warmup 0 there is none)",
    )
    init_sigma: float = 0.5  # exploration: truncated normal, sigma = 0.5 * decay^(ep - warmup)
    # None: the paper's 0.99 per episode over its 600 episodes, stretched to this run's length
    # (see stretched_sigma_decay); a number is used as given (0.99 = the paper's literal rule)
    sigma_decay: float | None = opt(
        None,
        "the agent's per-episode exploration decay; default: the paper's 0.99 over 600 "
        "episodes stretched to --episodes (0.864 at 60); 0.99 = the paper's literal rule",
        show_default=False,
        above=0,
        high=1,
    )
    redraws: int = opt(
        0,
        "after warm-up, when the agent proposes a policy that was already evaluated, redraw "
        "its exploration noise up to N times, doubling sigma each time (at most 0.5), so a "
        "converged agent keeps trying new policies near its own; 0 = the paper's agent "
        "(a repeat is a cache hit and costs no evaluation)",
        low=0,
        high=64,
    )
    baseline_alpha: float = 0.5  # moving-average reward baseline
    autograd: bool = False  # learn through Net + autograd + torch Adam: the reference, slower
    seed: int = opt(
        0,
        "seed of the search strategy: the agent's networks and noise, the random strategy's "
        "policies (the data split and the finetunes keep --seed)",
        flag="search-seed",
        low=0,
        high=SEED_MAX,
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PAPER_EPISODES = 600  # the paper's search length, for which 0.99 per episode was chosen
PAPER_SIGMA_DECAY = 0.99


def stretched_sigma_decay(episodes: int, warmup_episodes: int) -> float:
    """The per-episode exploration decay that takes sigma from 0.5 to the paper's final value
    (0.5 x 0.99^580, about 0.0015) over this run's episodes instead of the paper's 600.

    Why: with the literal 0.99 a 60-episode run ends at sigma 0.33, a standard deviation of
    more than 2 bits on every decision, so the agent never exploits what it learned (measured
    on bismo-cloud: the best of 60 episodes stayed below uniform w5a5). At 600 episodes and 20
    warm-up episodes this returns exactly 0.99.
    """
    paper_steps = PAPER_EPISODES - warmup_episodes
    steps = max(1, episodes - warmup_episodes)
    return float(PAPER_SIGMA_DECAY ** (max(1, paper_steps) / steps))


# (name, shape) of the three layers' weights and biases, W stored (out, in) like nn.Linear
def _layout(n_in: int, hidden: int) -> list[tuple[str, tuple[int, ...]]]:
    return [
        ("w1", (hidden, n_in)),
        ("b1", (hidden,)),
        ("w2", (hidden, hidden)),
        ("b2", (hidden,)),
        ("w3", (1, hidden)),
        ("b3", (1,)),
    ]


def _relu_backward(grad: Tensor, out: Tensor) -> Tensor:
    """grad where the ReLU's output is positive, else 0 (ATen's own kernel: several times
    faster than building a boolean mask and filling with it)."""
    return torch.ops.aten.threshold_backward(grad, out, 0.0)


class MLP:
    """``n_in -> hidden -> ReLU -> hidden -> ReLU -> 1`` (then a sigmoid for the actor).

    Parameters live in one flat vector ``flat`` (and their gradients in ``grad``) with named
    views into it, so Adam and the soft target update are a handful of whole-vector operations.
    """

    def __init__(self, n_in: int, hidden: int, sigmoid: bool, gen: torch.Generator) -> None:
        layout = _layout(n_in, hidden)
        total = sum(math.prod(shape) for _, shape in layout)
        self.sigmoid = sigmoid
        self.flat, self.grad = torch.empty(total), torch.zeros(total)
        self.flat.grad = self.grad  # what torch.optim reads; gradients are written in place
        self.p: dict[str, Tensor] = {}
        self.g: dict[str, Tensor] = {}
        offset = 0
        for name, shape in layout:
            n = math.prod(shape)
            self.p[name] = self.flat[offset : offset + n].view(shape)
            self.g[name] = self.grad[offset : offset + n].view(shape)
            offset += n
        # DDPG paper initialisation (which the HAQ reference follows): hidden layers
        # U(+-1/sqrt(fan_in)), output layer U(+-3e-3) so initial outputs sit near the middle.
        for i, fan_in in ((1, n_in), (2, hidden)):
            bound = 1.0 / math.sqrt(fan_in)
            for key in (f"w{i}", f"b{i}"):
                self.p[key].uniform_(-bound, bound, generator=gen)
        for key in ("w3", "b3"):
            self.p[key].uniform_(-3e-3, 3e-3, generator=gen)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Output (B, 1) and what ``backward`` needs."""
        p = self.p
        h1 = torch.addmm(p["b1"], x, p["w1"].t()).clamp_(min=0.0)
        h2 = torch.addmm(p["b2"], h1, p["w2"].t()).clamp_(min=0.0)
        y = torch.addmm(p["b3"], h2, p["w3"].t())
        if self.sigmoid:
            y = y.sigmoid_()
        return y, (x, h1, h2, y)

    def backward(
        self,
        cache: tuple[Tensor, ...],
        dy: Tensor,
        param_grads: bool,
        input_cols: slice | None = None,
    ) -> Tensor | None:
        """Back-propagate ``dy = dLoss/dy``. Writes parameter gradients into ``grad`` when
        ``param_grads``; returns dLoss/dx for the input columns ``input_cols`` if given."""
        x, h1, h2, y = cache
        p, g = self.p, self.g
        dz3 = dy * y * (1.0 - y) if self.sigmoid else dy
        if param_grads:
            torch.mm(dz3.t(), h2, out=g["w3"])
            torch.sum(dz3, 0, out=g["b3"])
        dz2 = _relu_backward(torch.mm(dz3, p["w3"]), h2)
        if param_grads:
            torch.mm(dz2.t(), h1, out=g["w2"])
            torch.sum(dz2, 0, out=g["b2"])
        dz1 = _relu_backward(torch.mm(dz2, p["w2"]), h1)
        if param_grads:
            torch.mm(dz1.t(), x, out=g["w1"])
            torch.sum(dz1, 0, out=g["b1"])
        return None if input_cols is None else torch.mm(dz1, p["w1"][:, input_cols])

    def __call__(self, x: Tensor) -> Tensor:
        return self.forward(x)[0]


class Net(nn.Module):
    """The same network as an ``nn.Module`` for autograd, its parameters aliasing an
    :class:`MLP`'s (so the flat vector, the target update and checkpoints are shared)."""

    w1: Tensor
    b1: Tensor
    w2: Tensor
    b2: Tensor
    w3: Tensor
    b3: Tensor

    def __init__(self, mlp: MLP) -> None:
        super().__init__()
        self.sigmoid = mlp.sigmoid
        for name, view in mlp.p.items():
            self.register_parameter(name, nn.Parameter(view))  # shares the storage

    def forward(self, x: Tensor) -> Tensor:
        h1 = F.relu(F.linear(x, self.w1, self.b1))
        h2 = F.relu(F.linear(h1, self.w2, self.b2))
        y = F.linear(h2, self.w3, self.b3)
        return torch.sigmoid(y) if self.sigmoid else y


class ReplayBuffer:
    """A ring buffer of transitions, one float32 row each: ``[s, a, r, done, s']``.

    One row per transition makes a minibatch one gather, and ``[s, a]`` (the critic's input)
    is a contiguous slice of it.
    """

    def __init__(self, capacity: int, state_dim: int) -> None:
        self.capacity, self.state_dim = capacity, state_dim
        self.rows = np.zeros((capacity, 2 * state_dim + 3), np.float32)
        self.pos = 0
        self.size = 0

    def add(self, s: np.ndarray, a: float, r: float, s2: np.ndarray, done: bool) -> None:
        d = self.state_dim
        row = self.rows[self.pos]
        row[:d], row[d], row[d + 1], row[d + 2], row[d + 3 :] = s, a, r, float(done), s2
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, rng: np.random.Generator, n: int) -> Tensor:
        """``n`` rows drawn uniformly with replacement, as an (n, 2 * state_dim + 3) tensor."""
        return torch.from_numpy(self.rows[rng.integers(0, self.size, size=n)])

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "pos": self.pos, "size": self.size}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if d["rows"].shape != self.rows.shape:
            raise ValueError(f"replay buffer shape {d['rows'].shape} != {self.rows.shape}")
        self.rows, self.pos, self.size = d["rows"], int(d["pos"]), int(d["size"])


class DDPG:
    """Actor-critic agent with target networks, replay, warm-up and decaying exploration."""

    def __init__(self, state_dim: int, decisions_per_episode: int, cfg: DDPGConfig) -> None:
        """``cfg.sigma_decay`` None means the paper's literal 0.99 here; the search runner
        resolves None with :func:`stretched_sigma_decay` before it builds the agent."""
        self.cfg, self.state_dim = cfg, state_dim
        self.sigma_decay = PAPER_SIGMA_DECAY if cfg.sigma_decay is None else cfg.sigma_decay
        gen = torch.Generator().manual_seed(cfg.seed)  # network init; global RNG untouched
        self.actor = MLP(state_dim, cfg.hidden, sigmoid=True, gen=gen)
        self.critic = MLP(state_dim + 1, cfg.hidden, sigmoid=False, gen=gen)  # input [s, a]
        self.actor_target = MLP(state_dim, cfg.hidden, sigmoid=True, gen=gen)
        self.critic_target = MLP(state_dim + 1, cfg.hidden, sigmoid=False, gen=gen)
        self.actor_target.flat.copy_(self.actor.flat)
        self.critic_target.flat.copy_(self.critic.flat)
        if cfg.autograd:  # the reference: modules over the same parameters, torch's Adam
            self.nets = Net(self.actor), Net(self.critic)
            actor_params: list[Tensor] = list(self.nets[0].parameters())
            critic_params: list[Tensor] = list(self.nets[1].parameters())
            fused = False
        else:  # torch's fused Adam: one kernel over each network's flat vector
            actor_params, critic_params, fused = [self.actor.flat], [self.critic.flat], True
        self.actor_opt = torch.optim.Adam(actor_params, lr=cfg.actor_lr, fused=fused)
        self.critic_opt = torch.optim.Adam(critic_params, lr=cfg.critic_lr, fused=fused)
        self.buffer = ReplayBuffer(cfg.replay_episodes * decisions_per_episode, state_dim)
        self.rng = np.random.default_rng(cfg.seed)
        self.baseline: float | None = None

    # --- acting --------------------------------------------------------------------------
    def sigma(self, episode: int, widen: int = 0) -> float:
        """The episode's exploration noise; ``widen`` doublings for a redraw (at most the
        initial sigma)."""
        decayed = self.sigma_decay ** max(0, episode - self.cfg.warmup_episodes)
        return self.cfg.init_sigma * min(1.0, decayed * 2.0**widen)

    def act(self, state: np.ndarray, episode: int, explore: bool = True, widen: int = 0) -> float:
        """Uniform in warm-up (1, the top bit, in the anchor episode 0: the draw is still
        made, so the other episodes are unchanged); else the actor's output plus
        truncated-normal noise in [0, 1], its sigma doubled ``widen`` times."""
        if explore and episode < self.cfg.warmup_episodes:
            u = float(self.rng.uniform(0.0, 1.0))
            return 1.0 if self.cfg.anchor and episode == 0 else u
        mu = self.mean_action(state)
        if not explore:
            return mu
        sigma = self.sigma(episode, widen)
        for _ in range(100):  # truncated normal on [0, 1] by rejection
            a = self.rng.normal(mu, sigma)
            if 0.0 <= a <= 1.0:
                return float(a)
        return float(np.clip(mu, 0.0, 1.0))

    def mean_action(self, state: np.ndarray) -> float:
        """The actor's output for ``state``: the mean of the exploring action."""
        return float(self.actor(torch.from_numpy(state).unsqueeze(0)))

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
        # Two threads make an episode's updates ~1.3x faster here (bench_agent.py --threads);
        # many threads on such small products mostly synchronise, hence the cap (a decision,
        # not measured past 2).
        torch.set_num_threads(min(threads, 4))
        try:
            for _ in range(n_updates):
                self.train_step(self.buffer.sample(self.rng, self.cfg.batch_size))
        finally:
            torch.set_num_threads(threads)

    def train_step(self, batch: Tensor) -> tuple[float, float]:
        """One critic step, one actor step and one soft target update on a minibatch of
        replay rows. Returns (critic loss, actor loss) as they were before the steps."""
        cfg, d = self.cfg, self.state_dim
        s, sa, s2 = batch[:, :d], batch[:, : d + 1], batch[:, d + 3 :]
        r, done = batch[:, d + 1 : d + 2], batch[:, d + 2 : d + 3]
        batch_mean = float(r.mean())
        if self.baseline is None:
            self.baseline = batch_mean
        else:
            self.baseline += cfg.baseline_alpha * (batch_mean - self.baseline)
        # critic: regress Q(s, a) on (r - baseline) + discount * Q'(s', mu'(s'))
        next_q = self.critic_target(torch.cat([s2, self.actor_target(s2)], 1))
        target = (r - self.baseline) + cfg.discount * (1.0 - done) * next_q
        step = self._autograd_step if cfg.autograd else self._explicit_step
        losses = step(s, sa, target)
        # targets <- (1 - tau) targets + tau online
        self.actor_target.flat.lerp_(self.actor.flat, cfg.tau)
        self.critic_target.flat.lerp_(self.critic.flat, cfg.tau)
        return losses

    def _autograd_step(self, s: Tensor, sa: Tensor, target: Tensor) -> tuple[float, float]:
        """The critic's and the actor's step through autograd (the reference)."""
        actor, critic = self.nets
        critic_loss = F.mse_loss(critic(sa), target)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        # actor: ascend Q(s, mu(s)); the critic's gradients from this are cleared before use
        actor_loss = -critic(torch.cat([s, actor(s)], 1)).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        return critic_loss.item(), actor_loss.item()

    def _explicit_step(self, s: Tensor, sa: Tensor, target: Tensor) -> tuple[float, float]:
        """The same two steps, back-propagated by hand into the flat gradient vectors."""
        n, d = s.shape
        q, cache = self.critic.forward(sa)
        err = q - target
        critic_loss = float(err.square().mean())
        self.critic.backward(cache, err.mul_(2.0 / n), param_grads=True)
        self.critic_opt.step()
        # actor: ascend Q(s, mu(s)); the critic's weights get no gradient here
        mu, actor_cache = self.actor.forward(s)
        q_pi, cache = self.critic.forward(torch.cat([s, mu], 1))
        actor_loss = -float(q_pi.mean())
        dq = torch.full_like(q_pi, -1.0 / n)
        dmu = self.critic.backward(cache, dq, param_grads=False, input_cols=slice(d, d + 1))
        assert dmu is not None
        self.actor.backward(actor_cache, dmu, param_grads=True)
        self.actor_opt.step()
        return critic_loss, actor_loss

    # --- checkpointing -------------------------------------------------------------------
    _NETS = ("actor", "critic", "actor_target", "critic_target")

    def state_dict(self) -> dict[str, Any]:
        return {
            **{k: getattr(self, k).flat.clone() for k in self._NETS},
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "buffer": self.buffer.state_dict(),
            "rng": self.rng.bit_generator.state,
            "baseline": self.baseline,
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        for key in self._NETS:
            net: MLP = getattr(self, key)
            if d[key].shape != net.flat.shape:
                raise ValueError(f"{key}: {d[key].numel()} parameters, expected {net.flat.numel()}")
            net.flat.copy_(d[key])
        self.actor_opt.load_state_dict(d["actor_opt"])
        self.critic_opt.load_state_dict(d["critic_opt"])
        self.buffer.load_state_dict(d["buffer"])
        self.rng.bit_generator.state = d["rng"]
        self.baseline = d["baseline"]
