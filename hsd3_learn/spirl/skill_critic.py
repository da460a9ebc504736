"""Skill-Critic (spirl-spec section 4): SPiRL's high level (:mod:`hsd3_learn.spirl.agents`) plus a low level that is
fine-tuned by SAC, regularised towards the frozen skill decoder, with its own critic.

Skill-Critic adds a LL policy pi_L(a | s, z, k) initialised from the decoder, a frozen decoder copy p_a, the LL
critic Q_L(s, z, k, a) and, with beta' = 1 iff the next index k' = 0 (the next step starts a new skill)::

    (6) y_L = r + gamma_L * (1 - d) * [(1 - beta') min Q'_L(s', z, k', a') + beta' min Q'_H(s', z'') - alpha_L D_L],
        a' ~ pi_L(s', z, k'),  z'' ~ pi_H(s'),  D_L = KL(pi_L(s', z, k') || p_a(s', z, k'))  (MC)
    (7) L_piL = mean_B [alpha_L D_L(s, z, k) - min Q_L(s, z, k, a~pi_L)],  L(alpha_L) as SPiRL's (5) with delta_L

Its two stages: ``warm_start`` (the first ``warm_start_samples`` env steps: HL policy, HL critic and LL critic
learn, the LL acts with its mean) and ``hybrid`` (everything learns, the LL samples when exploring).

Differences from ``CeHao1/skill-critic`` (besides those of :mod:`hsd3_learn.spirl.agents`):

1. The index k stored with a LL transition is the one used to act; the original incremented its counter before
   storing, so the stored k was one step ahead and beta' fired one step early.
2. The stages run in one job (``warm_start_samples``) instead of two runs with a manual weight copy.
3. The LL stores and scores its unclipped action (the env receives it clipped to the action bounds).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import torch
from torch import Tensor, nn
from torch import distributions as D
from torch.nn import functional as F

from hsd3_learn.agents.base import frozen, make_adam, optimizer_step
from hsd3_learn.agents.sac import actor_loss, critic_loss, polyak_update
from hsd3_learn.replaybuffer import ReplayBuffer
from hsd3_learn.spirl.agents import DoubleCritic, SkillContext, SPiRLAgent, SPiRLConfig, check_option, \
    divergence_temperature_loss, is_int, squash
from hsd3_learn.spirl.models import diag_gaussian, mc_kl

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["SkillCriticAgent", "SkillCriticConfig", "TimeIndexedPolicy", "low_level_target"]


@dataclass
class SkillCriticConfig(SPiRLConfig):
    """Skill-Critic: SPiRL's high level plus a fine-tuned, decoder-regularised low level (fetch values)."""

    warm_start_samples: int = 100_000  # env steps of the warm-start stage (about 10 % of a 1M-step budget)
    ll_gamma: float = 0.99  # discount per env step of the low-level critic
    ll_batch_size: int = 256  # low-level transitions per gradient step
    ll_rpbuf_size: int = 1_000_000  # low-level replay capacity (rounded up to a multiple of the number of envs)
    ll_target_divergence: float = 100.0  # delta_L: KL(pi_L || decoder) in nats per step (maze 80, fetch 100)
    ll_log_sigma_offset: float = -3.0  # manual_log_sigma added to the decoder's untrained log-std head
    ll_init_log_alpha: float = 0.0  # initial log alpha_L

    def __post_init__(self) -> None:
        """Also check the low-level settings."""
        super().__post_init__()
        check_option(self, 0.0 <= self.ll_gamma <= 1.0, "ll_gamma", "must lie in [0, 1]")
        for name in ("ll_batch_size", "ll_rpbuf_size"):
            check_option(self, is_int(getattr(self, name)) and getattr(self, name) >= 1, name, "must be a positive int")
        check_option(self, is_int(self.warm_start_samples) and self.warm_start_samples >= 0, "warm_start_samples",
                     "must be a non-negative int")


class TimeIndexedPolicy(nn.Module):
    """Skill-Critic's pi_L(a | s, z, k): a decoder MLP on (s, z, onehot(k)) -> (mu, log std) [B, A], with the fixed
    ``log_sigma_offset`` added to the log std (the decoder's log-std head had no offline gradient)."""

    def __init__(self, decoder: nn.Module, horizon: int, log_sigma_offset: float) -> None:
        super().__init__()
        self.decoder = decoder
        self.horizon = horizon
        self.log_sigma_offset = log_sigma_offset

    def forward(self, state: Tensor, z: Tensor, k: Tensor) -> D.Independent:
        """Gaussian over actions [B, A] for states [B, S], skills [B, nz] and step indices k [B] (long, 0..H-1)."""
        step = F.one_hot(k.long(), self.horizon).to(state.dtype)
        mean, log_std = self.decoder(torch.cat([state, z, step], dim=-1)).chunk(2, dim=-1)
        return diag_gaussian(mean, log_std + self.log_sigma_offset)


def low_level_target(reward: Tensor, not_done: Tensor, gamma: float, boundary: Tensor, next_q_low: Tensor,
                     next_q_high: Tensor, next_divergence: Tensor, alpha: float | Tensor) -> Tensor:
    """(6) Skill-Critic's LL target [B]: ``r + gamma * not_done * (Q - alpha * D_L)`` with Q the LL value
    ``next_q_low`` or, where ``boundary`` (k' = 0: a new skill starts), the HL value ``next_q_high``.

    All inputs are [B]; ``boundary`` and ``not_done`` are bool. Call it without gradients.
    """
    for name, value in (("not_done", not_done), ("boundary", boundary), ("next_q_low", next_q_low),
                        ("next_q_high", next_q_high), ("next_divergence", next_divergence)):
        if reward.ndim != 1 or value.shape != reward.shape:
            raise ValueError(f"low_level_target: reward and {name} must both be [B]; got {tuple(reward.shape)} and "
                             f"{tuple(value.shape)}")
    next_value = torch.where(boundary, next_q_high, next_q_low) - alpha * next_divergence
    return reward + gamma * not_done.to(reward.dtype) * next_value


class SkillCriticAgent(SPiRLAgent):
    """Skill-Critic: SPiRL's high level plus a fine-tuned low level pi_L with its own critic Q_L (equations 6-7)."""

    config_class = SkillCriticConfig

    def __init__(self, obs_space: gym.Space, action_space: gym.Space, num_envs: int = 1,
                 cfg: SkillCriticConfig | Mapping[str, Any] | None = None,
                 writer: SummaryWriter | None = None) -> None:
        """As :class:`SkillSpaceAgent`; the skill model must be a ``"skill_critic"`` one."""
        super().__init__(obs_space, action_space, num_envs, cfg, writer)
        if self.skill.kind != "skill_critic":
            raise ValueError(f"SkillCriticAgent needs a 'skill_critic' skill model; {self.cfg.skill_model!r} is a "
                             f"{self.skill.kind!r} one")
        settings, decoder = self.cfg, self.skill.model.decoder
        self.ll_policy = TimeIndexedPolicy(copy.deepcopy(decoder).requires_grad_(True), self.H,
                                           settings.ll_log_sigma_offset).to(self.device)
        self.ll_reference = TimeIndexedPolicy(decoder, self.H, settings.ll_log_sigma_offset)  # frozen p_a
        n_inputs, n_actions = self.obs_dim + self.nz + self.H, self._action_low.shape[0]
        self.ll_q = DoubleCritic(n_inputs, n_actions, settings.q_width, settings.q_layers).to(self.device)
        self.ll_target_q = copy.deepcopy(self.ll_q).requires_grad_(False)
        self.log_alpha_ll = torch.tensor(float(settings.ll_init_log_alpha), device=self.device, requires_grad=True)
        self.ll_optim = {"pi": make_adam(self.ll_policy.parameters(), settings.lr_pi, self.device),
                         "q": make_adam(self.ll_q.parameters(), settings.lr_q, self.device),
                         "alpha": make_adam([self.log_alpha_ll], settings.lr_alpha, self.device)}
        capacity = -(-settings.ll_rpbuf_size // num_envs) * num_envs  # the buffer stores whole vector steps
        self.ll_buffer = ReplayBuffer(capacity, interleave=num_envs, device=self.device)
        self.set_checkpoint_attr("ll_policy", "ll_q", "ll_target_q", "log_alpha_ll", "ll_optim", "ll_buffer")

    @property
    def stage(self) -> str:
        """``"warm_start"`` for the first ``warm_start_samples`` env steps, then ``"hybrid"``."""
        return "warm_start" if self.n_samples < self.cfg.warm_start_samples else "hybrid"

    @property
    def ll_alpha(self) -> Tensor:
        """alpha_L as a constant (0-d)."""
        return self.log_alpha_ll.detach().exp()

    def low_level_input(self, obs: Tensor, z: Tensor, k: Tensor) -> Tensor:
        """Q_L's input besides the action: [obs, z, onehot(k)] -> [B, D + nz + H]."""
        return torch.cat([obs, z, F.one_hot(k.long(), self.H).to(obs.dtype)], dim=-1)

    def _low_level_action(self, state: Tensor, context: SkillContext, explore: bool) -> Tensor:
        """pi_L's action [N, A] at the acting step k: a sample when exploring in the hybrid stage, else the mean."""
        dist = self.ll_policy(state, context.z, context.since)
        return dist.sample() if explore and self.stage == "hybrid" else dist.mean

    def _store(self, x: Tensor, context: SkillContext, reward: Tensor, terminated: Tensor, ended: Tensor,
               next_x: Tensor) -> int:
        """Also store the low-level step, with the k and the unclipped action it was acted with."""
        self.ll_buffer.put_row({"obs": x, "z": context.z, "k": context.since, "action": context.action,
                                "reward": reward, "terminated": terminated, "next_obs": next_x})
        return super()._store(x, context, reward, terminated, ended, next_x)

    def update(self) -> dict[str, Tensor]:
        """The high-level update, then the LL critic (both stages) and the LL policy and alpha_L (hybrid only)."""
        metrics = super().update()
        batch = self.ll_buffer.get_batch(self.cfg.ll_batch_size)
        loss, info = critic_loss(self.ll_q(self.low_level_input(batch["obs"], batch["z"], batch["k"]),
                                           batch["action"]), self.low_level_critic_target(batch))
        grad_norm = optimizer_step(self.ll_optim["q"], loss)
        metrics.update({"train/loss_q_ll": loss.detach(), "health/grad_norm_q_ll": grad_norm,
                        **{f"health/{name}_ll": value for name, value in info.items()}})
        if self.stage == "hybrid":
            metrics.update(self._low_level_actor_and_temperature_steps(batch))
        polyak_update(self.ll_target_q, self.ll_q, self.cfg.polyak)
        return metrics

    def _low_level_divergence(self, obs: Tensor, z: Tensor, k: Tensor) -> tuple[D.Independent, Tensor]:
        """pi_L(.|s, z, k) and D_L [B] = MC KL(pi_L || frozen decoder)."""
        state = obs[:, : self.state_dim]
        dist = self.ll_policy(state, z, k)
        return dist, mc_kl(dist, self.ll_reference(state, z, k), self.cfg.n_mc_samples)

    @torch.no_grad()
    def low_level_critic_target(self, batch: Mapping[str, Tensor]) -> Tensor:
        """(6) y_L [B]: k' = (k + 1) mod H; at k' = 0 the HL critic values a fresh skill z'' ~ pi_H(s')."""
        next_obs, z = batch["next_obs"], batch["z"]
        next_k = (batch["k"] + 1) % self.H
        dist, divergence = self._low_level_divergence(next_obs, z, next_k)
        next_q_low = self.ll_target_q(self.low_level_input(next_obs, z, next_k), dist.sample()).min(dim=-1).values
        new_z = squash(self.policy(next_obs).sample(), self.cfg.max_action_range)
        next_q_high = self.target_q(next_obs, new_z).min(dim=-1).values
        return low_level_target(batch["reward"], ~batch["terminated"], self.cfg.ll_gamma, next_k == 0, next_q_low,
                                next_q_high, divergence, self.ll_alpha)

    def _low_level_actor_and_temperature_steps(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """(7) with Q_L frozen, then alpha_L towards delta_L."""
        obs, z, k = batch["obs"], batch["z"], batch["k"]
        dist, divergence = self._low_level_divergence(obs, z, k)
        with frozen(self.ll_q):
            q = self.ll_q(self.low_level_input(obs, z, k), dist.rsample()).min(dim=-1).values
            loss, _ = actor_loss(q, divergence, self.ll_alpha)
            grad_norm = optimizer_step(self.ll_optim["pi"], loss)
        alpha_loss, info = divergence_temperature_loss(self.log_alpha_ll, divergence.detach(),
                                                       self.cfg.ll_target_divergence)
        optimizer_step(self.ll_optim["alpha"], alpha_loss)
        return {"train/loss_pi_ll": loss.detach(), "train/loss_alpha_ll": alpha_loss.detach(),
                "health/alpha_ll": info["alpha"], "health/kl_decoder": divergence.detach().mean(),
                "health/grad_norm_pi_ll": grad_norm}
