"""Soft Actor-Critic: the flat baseline of HSD-3 (``walker_sac``) and the template of every agent after it.

SAC (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications", arXiv:1812.05905) learns a
tanh-Gaussian policy pi and two critics Q1, Q2 (one fused network) off-policy from a replay buffer:

- soft Q target (Eqs. 3 and 5, with the clipped double Q of Fujimoto et al. 2018):
  ``y = r + gamma * (1 - terminated) * (min_i Qbar_i(s', a') - alpha * log pi(a'|s'))``, ``a' ~ pi(.|s')``;
- critic loss (Eq. 5): ``sum_i mean_B (Q_i(s, a) - y)^2``;
- policy loss (Eq. 7): ``mean_B (alpha * log pi(a~|s) - min_i Q_i(s, a~))``, ``a~`` reparameterised;
- temperature loss (Eq. 18): ``-mean_B alpha * (log pi(a~|s) + target_entropy)`` with ``alpha = exp(log_alpha)``;
- target critic: ``Qbar <- polyak * Qbar + (1 - polyak) * Q`` after every update.

The losses are pure module-level functions so that each can be tested, and written again in a notebook, on its
own; :class:`SACAgent` only wires them to networks, optimizers, the replay buffer and the update schedule
(HSD-3 spec sections 5 and 9: after ``warmup_samples``, every ``samples_per_update`` env steps summed over envs,
run ``num_updates`` updates of one Q, one pi and one alpha step each).

Differences from hucc's ``SACAgent`` (``hucc/agents/sac.py``):

1. Observations are always flattened (``walker_sac`` sets hucc's ``flatten_obs``) and stored flat in the replay
   buffer: one key instead of one per Dict entry.
2. Timeouts come from gymnasium's ``truncated`` flag instead of ``info['TimeLimit.truncated']``; as in hucc
   they are not terminal, the target bootstraps through them.
3. Uniform exploration draws from torch's global generator, not the action space's sampler, so a checkpoint's
   RNG state covers it.
4. Policy actions in (-1, 1) are mapped affinely onto ``[low, high]`` (hucc multiplied by ``high[0]``); the two
   agree for the symmetric bounds of every robot here.
5. The target network copies only the critic (hucc deep-copied the policy too but never used that copy), and
   tracing the critic (``trace``, speed only) is not offered.
6. The temperature is always learned (``walker_sac`` learns it; hucc also allowed a fixed one).
7. ``n_updates`` counts gradient steps (hucc counted batches of ``num_updates``); ``observe`` returns and logs
   the metrics averaged over the updates it ran (hucc logged the last one), with health metrics every update.
8. ``action(obs, explore)`` takes the exploration switch explicitly instead of reading the agent's mode.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from hsd3_learn.agents.base import Agent, action_bounds, frozen, make_adam, make_config, optimizer_step
from hsd3_learn.models.factory import make_model
from hsd3_learn.replaybuffer import ReplayBuffer
from hsd3_learn.spaces import flatdim, th_flatten
from hsd3_learn.utils import resolve_device

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["SACAgent", "SACConfig", "actor_loss", "critic_loss", "critic_target", "polyak_update",
           "temperature_loss"]


@dataclass
class SACConfig:
    """Hyperparameters of SAC; the defaults are ``walker_sac`` (HSD-3 spec section 9)."""

    gamma: float = 0.99  # discount per env step
    polyak: float = 0.995  # weight of the old target in the target-network average
    batch_size: int = 256  # transitions per gradient step
    rpbuf_size: int = 1_000_000  # replay capacity in transitions (a multiple of the number of envs)
    samples_per_update: int = 50  # env steps (summed over envs) between two rounds of updates
    num_updates: int = 50  # gradient steps per round
    warmup_samples: int = 1000  # transitions in the buffer before the first update
    randexp_samples: int = 1000  # env steps with uniformly random actions at the start of training
    init_alpha: float = 0.1  # initial entropy temperature
    target_entropy: float | None = None  # entropy target in nats; None means -|A| (minus the action dimension)
    lr_pi: float = 3e-4  # Adam learning rate of the policy
    lr_q: float = 3e-4  # Adam learning rate of the critics
    lr_alpha: float = 1e-4  # Adam learning rate of log(alpha)
    clip_grad_norm: float = 0.0  # clip each network's gradient to this L2 norm; 0 disables clipping
    device: str = "auto"  # where networks and the buffer live: "auto" (CUDA if present), "cpu", "cuda:N"
    pi: str | dict[str, Any] = "pi_d2rl_256"  # policy: a model-factory shorthand or {name: shorthand, **options}
    q: str | dict[str, Any] = "qd_d2rl_256"  # fused double critic, [B, 2]: a shorthand or {name: ..., **options}

    def __post_init__(self) -> None:
        """Reject values that would fail later or silently do nothing."""
        for name in ("gamma", "polyak"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SACConfig.{name} must lie in [0, 1]; got {getattr(self, name)}")
        for name in ("batch_size", "rpbuf_size", "samples_per_update", "num_updates"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"SACConfig.{name} must be a positive int; got {getattr(self, name)!r}")
        for name in ("warmup_samples", "randexp_samples"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"SACConfig.{name} must be a non-negative int; got {getattr(self, name)!r}")
        for name in ("init_alpha", "lr_pi", "lr_q", "lr_alpha"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SACConfig.{name} must be positive; got {getattr(self, name)}")
        if self.clip_grad_norm < 0:
            raise ValueError(f"SACConfig.clip_grad_norm must be >= 0 (0 disables it); got {self.clip_grad_norm}")


# --------------------------------------------------------------------------------------------------------------
# Losses (pure functions)


def critic_target(reward: Tensor, not_done: Tensor, gamma: float, next_q_min: Tensor, next_log_prob: Tensor,
                  alpha: float | Tensor) -> Tensor:
    """Soft TD target ``y = r + gamma * not_done * (next_q_min - alpha * next_log_prob)``: [B].

    reward, not_done (1 where the episode goes on, 0 where it terminated; truncation counts as going on),
    next_q_min (``min_i Qbar_i(s', a')`` of the target critics) and next_log_prob (``log pi(a'|s')`` summed over
    action dims) are all [B]. Call it without gradients: the target is a constant for the critic.
    """
    for name, value in (("not_done", not_done), ("next_q_min", next_q_min), ("next_log_prob", next_log_prob)):
        if value.shape != reward.shape or reward.ndim != 1:
            raise ValueError(f"critic_target: reward and {name} must both be [B]; got {tuple(reward.shape)} and "
                             f"{tuple(value.shape)}")
    soft_value = next_q_min - alpha * next_log_prob
    return reward + gamma * not_done.to(reward.dtype) * soft_value


def critic_loss(q: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Sum over critics of the mean squared TD error, ``sum_i mean_B (q[:, i] - target)^2``.

    q: [B, 2] (both critics at the stored action), target: [B]. Info (detached): ``q_mean`` over both critics,
    ``target_mean``, and ``residual_variance`` = mean over critics of ``Var_B(target - q_i) / Var_B(target)``
    (population variances): 0 when Q explains the targets, about 1 when it explains nothing.
    """
    if q.ndim != 2 or target.shape != q.shape[:1]:
        raise ValueError(f"critic_loss: q must be [B, n_critics] and target [B]; got {tuple(q.shape)} and "
                         f"{tuple(target.shape)}")
    residual = target.unsqueeze(1) - q  # [B, 2]
    loss = residual.pow(2).mean(dim=0).sum()
    with torch.no_grad():
        target_var = target.var(unbiased=False).clamp_min(1e-8)
        info = {"q_mean": q.mean(), "target_mean": target.mean(),
                "residual_variance": (residual.var(dim=0, unbiased=False) / target_var).mean()}
    return loss, info


def actor_loss(q_min: Tensor, log_prob: Tensor, alpha: float | Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Policy loss ``mean_B (alpha * log_prob - q_min)``.

    q_min: [B], ``min_i Q_i(s, a~)`` at reparameterised actions ``a~ ~ pi(.|s)``; log_prob: [B], ``log pi(a~|s)``
    summed over action dims; alpha: the temperature as a constant. Info (detached): ``entropy``, the
    single-sample estimate ``-mean_B log_prob``.
    """
    if q_min.ndim != 1 or log_prob.shape != q_min.shape:
        raise ValueError(f"actor_loss: q_min and log_prob must both be [B]; got {tuple(q_min.shape)} and "
                         f"{tuple(log_prob.shape)}")
    loss = (alpha * log_prob - q_min).mean()
    return loss, {"entropy": -log_prob.detach().mean()}


def temperature_loss(log_alpha: Tensor, log_prob: Tensor, target_entropy: float) -> tuple[Tensor, dict[str, Tensor]]:
    """Temperature loss ``-mean_B exp(log_alpha) * (log_prob + target_entropy)``; only log_alpha gets a gradient.

    log_alpha: 0-d; log_prob: [B], ``log pi(a~|s)`` summed over action dims. The gradient lowers alpha while the
    policy's entropy ``-log_prob`` is above ``target_entropy`` and raises it below. Info (detached): ``alpha``.
    """
    if log_alpha.ndim != 0 or log_prob.ndim != 1:
        raise ValueError(f"temperature_loss: log_alpha must be 0-d and log_prob [B]; got {tuple(log_alpha.shape)} "
                         f"and {tuple(log_prob.shape)}")
    alpha = log_alpha.exp()
    loss = -(alpha * (log_prob + target_entropy).detach()).mean()
    return loss, {"alpha": alpha.detach()}


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, polyak: float) -> None:
    """In place, for every parameter: ``target <- polyak * target + (1 - polyak) * source``."""
    if not 0.0 <= polyak <= 1.0:
        raise ValueError(f"polyak_update: polyak must lie in [0, 1]; got {polyak}")
    target_params, source_params = list(target.parameters()), list(source.parameters())
    if [p.shape for p in target_params] != [p.shape for p in source_params]:
        raise ValueError("polyak_update: target and source must have parameters of the same shapes, in order")
    torch._foreach_lerp_(target_params, source_params, 1.0 - polyak)


# --------------------------------------------------------------------------------------------------------------
# The agent


class SACAgent(Agent):
    """SAC on flattened observations for N envs stepped together; see the module docstring."""

    def __init__(self, obs_space: gym.Space, action_space: gym.Space, num_envs: int = 1,
                 cfg: SACConfig | Mapping[str, Any] | None = None, writer: SummaryWriter | None = None) -> None:
        """Networks for one env's ``obs_space`` (Box or Dict, flattened) and 1-D Box ``action_space``; the replay
        buffer interleaves ``num_envs`` envs; ``cfg`` is a :class:`SACConfig` or a mapping of its fields."""
        self.cfg = make_config(SACConfig, cfg)
        super().__init__(resolve_device(self.cfg.device), writer)
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"SACAgent: num_envs must be a positive int; got {num_envs!r}")
        self.obs_space = obs_space
        self.action_space = action_space
        self.num_envs = num_envs
        self._action_center, self._action_scale = action_bounds(action_space, self.device, "SACAgent")
        n_actions = int(action_space.shape[0])
        flat_space = spaces.Box(-np.inf, np.inf, (flatdim(obs_space),), np.float32)
        self.model = make_model({"pi": self.cfg.pi, "q": self.cfg.q}, flat_space, action_space).to(self.device)
        self._check_models(flat_space.shape[0], n_actions)
        self.target_q = copy.deepcopy(self.model.q).requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(self.cfg.init_alpha), device=self.device, requires_grad=True)
        self.target_entropy = -float(n_actions) if self.cfg.target_entropy is None else self.cfg.target_entropy
        self.optim = {"pi": make_adam(self.model.pi.parameters(), self.cfg.lr_pi, self.device),
                      "q": make_adam(self.model.q.parameters(), self.cfg.lr_q, self.device),
                      "alpha": make_adam([self.log_alpha], self.cfg.lr_alpha, self.device)}
        self.buffer = ReplayBuffer(self.cfg.rpbuf_size, interleave=num_envs, device=self.device)
        self._samples_since_update = 0
        self.set_checkpoint_attr("model", "target_q", "optim", "log_alpha", "buffer", "_samples_since_update")

    def _check_models(self, n_obs: int, n_actions: int) -> None:
        """The policy must give a reparameterisable distribution, the critic [B, 2]."""
        with torch.no_grad():
            obs = torch.zeros(1, n_obs, device=self.device)
            dist = self.model.pi(obs)
            q = self.model.q(obs, torch.zeros(1, n_actions, device=self.device))
        if not getattr(dist, "has_rsample", False):
            raise ValueError(f"SACAgent: pi must return a distribution with rsample(); got {type(dist).__name__}")
        if tuple(q.shape) != (1, 2):
            raise ValueError(f"SACAgent: q must be a fused double critic returning [B, 2] (e.g. qd_d2rl_256); "
                             f"got shape {tuple(q.shape)} for B=1")


    @property
    def alpha(self) -> Tensor:
        """The current temperature ``exp(log_alpha)`` as a constant (0-d)."""
        return self.log_alpha.detach().exp()

    # ---------------------------------------------------------------- acting

    def flatten_obs(self, obs: Tensor | Mapping[str, Tensor]) -> Tensor:
        """A batch of observations (a tensor [N, ...] or a dict of them) -> float32 [N, D] on the agent's device."""
        return th_flatten(self.obs_space, obs).to(self.device, torch.float32)

    def _to_env(self, policy_action: Tensor) -> Tensor:
        """Policy actions in (-1, 1) -> env actions in [low, high]: [N, A]."""
        return self._action_center + self._action_scale * policy_action

    @torch.no_grad()
    def action(self, obs: Tensor | Mapping[str, Tensor], explore: bool) -> Tensor:
        """Env actions [N, A]: uniform during the first ``randexp_samples`` when exploring, else a policy sample
        when exploring, else the deterministic ``tanh(mean)``."""
        flat = self.flatten_obs(obs)
        if explore and self.n_samples < self.cfg.randexp_samples:
            uniform = torch.rand(flat.shape[0], self._action_scale.shape[0], device=self.device)
            return self._to_env(2 * uniform - 1)
        dist = self.model.pi(flat)
        return self._to_env(dist.sample() if explore else dist.mean)

    # ---------------------------------------------------------------- learning

    def observe(self, obs: Tensor | Mapping[str, Tensor], action: Tensor, reward: Tensor, terminated: Tensor,
                truncated: Tensor, next_obs: Tensor | Mapping[str, Tensor],
                info: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Store one vector-env step and run the updates that are due; returns their mean metrics or ``{}``.

        action: [N, A]; reward, terminated, truncated: [N]. next_obs must be the observation the action led to
        (with same-step autoreset, ``info["final_obs"]`` for envs that ended). Only ``terminated`` stops the
        bootstrap: a truncated (timed-out) episode is not terminal, so ``truncated`` is only checked.
        """
        n_envs, n_actions = self.num_envs, self._action_scale.shape[0]
        if tuple(action.shape) != (n_envs, n_actions):
            raise ValueError(f"observe: action must be [N={n_envs}, A={n_actions}]; got {tuple(action.shape)}")
        for name, value in (("reward", reward), ("terminated", terminated), ("truncated", truncated)):
            if tuple(value.shape) != (n_envs,):
                raise ValueError(f"observe: {name} must be [N={n_envs}]; got {tuple(value.shape)}")
        self.buffer.put_row({"obs": self.flatten_obs(obs), "action": action.to(self.device, torch.float32),
                             "reward": reward.to(self.device, torch.float32),
                             "terminated": terminated.to(self.device, torch.bool),
                             "next_obs": self.flatten_obs(next_obs)})
        return self.count_and_update(n_envs, len(self.buffer), self.cfg.warmup_samples, self.cfg.samples_per_update,
                                     self.cfg.num_updates)

    def update(self) -> dict[str, Tensor]:
        """One critic, one policy and one temperature step on a fresh batch, then the polyak average."""
        batch = self.buffer.get_batch(self.cfg.batch_size)
        metrics = self._critic_step(batch)
        log_prob, actor_metrics = self._actor_step(batch["obs"])
        metrics.update(actor_metrics)
        metrics.update(self._temperature_step(log_prob))
        polyak_update(self.target_q, self.model.q, self.cfg.polyak)
        self.n_updates += 1
        return metrics

    def _critic_step(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Regress both critics on the soft target computed with the target critic."""
        with torch.no_grad():
            dist = self.model.pi(batch["next_obs"])
            next_action = dist.sample()
            next_log_prob = dist.log_prob(next_action).sum(dim=-1)
            next_q_min = self.target_q(batch["next_obs"], self._to_env(next_action)).min(dim=-1).values
            target = critic_target(batch["reward"], ~batch["terminated"], self.cfg.gamma, next_q_min,
                                   next_log_prob, self.alpha)
        loss, info = critic_loss(self.model.q(batch["obs"], batch["action"]), target)
        grad_norm = optimizer_step(self.optim["q"], loss, self.cfg.clip_grad_norm)
        return {"train/loss_q": loss.detach(), "health/grad_norm_q": grad_norm,
                **{f"health/{name}": value for name, value in info.items()}}

    def _actor_step(self, obs: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Move the policy towards actions the critics like; the critics themselves get no gradient."""
        dist = self.model.pi(obs)
        action = dist.rsample()
        log_prob = dist.log_prob(action).sum(dim=-1)
        with frozen(self.model.q):
            q_min = self.model.q(obs, self._to_env(action)).min(dim=-1).values
            loss, info = actor_loss(q_min, log_prob, self.alpha)
            grad_norm = optimizer_step(self.optim["pi"], loss, self.cfg.clip_grad_norm)
        metrics = {"train/loss_pi": loss.detach(), "health/grad_norm_pi": grad_norm, "health/entropy": info["entropy"]}
        return log_prob.detach(), metrics

    def _temperature_step(self, log_prob: Tensor) -> dict[str, Tensor]:
        """Adapt alpha so that the policy's entropy approaches ``target_entropy``."""
        loss, info = temperature_loss(self.log_alpha, log_prob, self.target_entropy)
        optim = self.optim["alpha"]
        optim.zero_grad()
        loss.backward()
        optim.step()
        return {"train/loss_alpha": loss.detach(), "health/alpha": info["alpha"]}
