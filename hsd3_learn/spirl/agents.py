"""SPiRL's reinforcement-learning phase: SAC in the skill space of a pre-trained skill model, regularised towards
the learned skill prior (spirl-spec section 3); Skill-Critic's fine-tuned low level builds on it in
:mod:`hsd3_learn.spirl.skill_critic` (section 4).

Every H env steps the high level (HL) picks a skill z for each env; the low level (LL) turns it into actions:
SPiRL v1 (``"spirl"`` model) plans H actions open loop once per skill, SPiRL-cl (``"spirl_cl"``) decodes
``a_t = dec(s_t, z)`` at every step, Skill-Critic's LL reads ``(s_t, z, k)`` with k = 0..H-1 the step in the skill.
The HL learns by SAC on one transition per skill. Equations (B batch; ``r`` = ``max_action_range`` = 2)::

    (1) u ~ pi(.|s) = N(mu, sigma) over [nz],  z = r * tanh(u / r)    (the decoder reads the squashed z)
    (2) D(s) = KL(pi(.|s) || p(.|s)), Monte Carlo over 10 draws of u, clamped to +-100  (SPiRL: pre-tanh u)
        D(s) = log pi(z|s)                                            (no prior: SAC's entropy term)
    (3) y_H = R_H + gamma * (1 - d) * [min_j Q'_j(s', z') - alpha * D(s')],  z' ~ pi(s')
    (4) L_pi = mean_B [alpha * D(s) - min_j Q_j(s, z~pi)]
    (5) L(alpha) = mean_B alpha * (delta - D(s)).detach()            (alpha = exp(log_alpha), grows while D > delta)

With D = log pi and delta = -target_entropy, (5) is SAC's temperature loss, so the three agents share one update.

**Observations.** The env gives a Dict whose ``observation`` holds the robot's joints (walker: 60, with world x),
optional task features (``next_hurdle``, ...) and ``time``, the episode step (env wrapper ``time``, no interval).
:func:`agent_observation` builds what every network reads: the skill state (the kept entries of ``observation``,
normalised with the dataset's mean and std, as the skill model was trained) followed by the task features. Its first
S columns are what the prior and the decoders see. The skill checkpoint's ``stats`` carries the normalisation and the
kept entries under :data:`STATS_KEYS`.

**Transitions.** A HL transition is (s at the decision, z, the undiscounted sum of the skill's rewards, s after H
steps or at the episode's end, d = terminated): an episode end mid-skill closes it early. Decisions happen where
``time`` is 0 and every H steps after, per env and separately for exploring and greedy acting. After
``warmup_samples`` env steps, every new HL transition triggers ``updates_per_transition`` updates.

Differences from ``clvrai/spirl``:

1. A timeout is not terminal: the HL target bootstraps through it (the original counted timeouts as done).
2. The SPiRL policy's copy of the prior net also reads the task features, through extra first-layer inputs with zero
   weights: it starts as the prior exactly and can still learn the task (the original's prior read the whole env
   observation; here the prior only knows the robot).
3. Every MLP here (critics, the no-prior policy) is the skill model's ``Predictor`` with LayerNorm, not BatchNorm:
   no running statistics to freeze (spirl-spec section 7).
4. States are normalised with the dataset's mean and std before any network sees them, as in offline training
   (the original did not normalise; MuJoCo velocities need it).
5. LL actions are clipped to the env's action bounds before they are applied.
6. Skills are squashed as ``z = r tanh(u / r)``, not ``r tanh(u)``: the original's slope r = 2 at the origin doubles
   every draw of the prior, so its "policy initialised from the prior" did not act like the prior. Measured on the
   walker (bench/spirl.py's prior-rollout check, SPiRL-cl laptop model, 10 episodes of 1000 steps on Floor): with
   ``r tanh(u)`` the walker fell in all of them after 180 steps on average, with ``r tanh(u / r)`` 7 of 10 lasted
   the whole episode. The KL stays on the pre-tanh u, as in the original.
"""

from __future__ import annotations

import copy
import math
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import gymnasium as gym
import torch
from gymnasium import spaces
from torch import Tensor, nn
from torch import distributions as D
from torch.nn import functional as F

from hsd3_learn.agents.base import Agent, action_bounds, frozen, make_adam, make_config, mean_metrics, \
    optimizer_step
from hsd3_learn.agents.sac import actor_loss, critic_loss, critic_target, polyak_update
from hsd3_learn.replaybuffer import ReplayBuffer
from hsd3_learn.spaces import flatdim
from hsd3_learn.spirl.data import DatasetStats
from hsd3_learn.spirl.models import Predictor, SkillModelCheckpoint, gaussian_from_params, load_skill_model, mc_kl
from hsd3_learn.utils import resolve_device

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["STATS_KEYS", "DoubleCritic", "GaussianPolicy", "NoPriorAgent", "NoPriorConfig", "SPiRLAgent",
           "SPiRLConfig", "SkillAgentConfig", "SkillContext", "SkillContexts", "SkillSpaceAgent", "SkillTransitions",
           "agent_observation", "check_option", "divergence_temperature_loss", "is_int", "prior_initialised_net",
           "skill_state", "squash", "squashed_log_prob"]

#: entries of a skill checkpoint's ``stats`` the agents read: the state normalisation [S] and the indices [S] of
#: the env's ``observation`` that form the skill state (absent: no normalisation; the observation is the state)
STATS_KEYS = ("obs_mean", "obs_std", "kept_observation_entries")
#: observation keys that are not task features
_NOT_TASK_KEYS = ("observation", "time")


# --------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class SkillAgentConfig:
    """What every skill-space agent shares (spirl-spec section 3: kitchen HRL settings unless noted)."""

    skill_model: str | None = None  # path of the skill-model checkpoint (save_skill_model); required
    gamma: float = 0.99  # discount per high-level step (one skill of H env steps)
    polyak: float = 0.995  # weight of the old target critic in its average (tau = 5e-3)
    batch_size: int = 256  # high-level transitions per gradient step
    rpbuf_size: int = 1_000_000  # high-level replay capacity in transitions
    warmup_samples: int = 5000  # env steps (summed over envs) before the first update
    randexp_samples: int = 0  # env steps with uniformly random skills at the start (prior-initialised agents: 0)
    updates_per_transition: int = 1  # gradient steps per new high-level transition
    lr_pi: float = 3e-4  # Adam learning rate of the policies
    lr_q: float = 3e-4  # Adam learning rate of the critics
    lr_alpha: float = 3e-4  # Adam learning rate of log(alpha)
    init_log_alpha: float = 0.0  # initial log temperature
    max_action_range: float = 2.0  # r in z = r * tanh(u / r)
    q_width: int = 256  # critic width
    q_layers: int = 5  # critic LayerNorm blocks (q_layers + 2 linears: 5 -> kitchen's 7)
    device: str = "auto"  # "auto" (CUDA if present), "cpu", "cuda:N"

    def __post_init__(self) -> None:
        """Reject values that would fail later or silently do nothing."""
        for name in ("gamma", "polyak"):
            check_option(self, 0.0 <= getattr(self, name) <= 1.0, name, "must lie in [0, 1]")
        for name in ("batch_size", "rpbuf_size", "updates_per_transition", "q_width"):
            check_option(self, is_int(getattr(self, name)) and getattr(self, name) >= 1, name, "must be a positive int")
        for name in ("warmup_samples", "randexp_samples", "q_layers"):
            check_option(self, is_int(getattr(self, name)) and getattr(self, name) >= 0, name,
                         "must be a non-negative int")
        for name in ("lr_pi", "lr_q", "lr_alpha", "max_action_range"):
            check_option(self, getattr(self, name) > 0, name, "must be positive")


@dataclass
class NoPriorConfig(SkillAgentConfig):
    """The no-prior baseline (SSP): entropy-regularised SAC with a random-init MLP policy."""

    randexp_samples: int = 5000  # env steps with uniformly random skills (the warmup of the original)
    target_entropy: float | None = None  # entropy target of z in nats; None means -nz
    pi_width: int = 256  # policy MLP width (the original's hl_policy_params nz_mid)
    pi_layers: int = 5  # policy LayerNorm blocks

    def __post_init__(self) -> None:
        """Also check the policy's size."""
        super().__post_init__()
        check_option(self, is_int(self.pi_width) and self.pi_width >= 1, "pi_width", "must be a positive int")
        check_option(self, is_int(self.pi_layers) and self.pi_layers >= 0, "pi_layers", "must be a non-negative int")


@dataclass
class SPiRLConfig(SkillAgentConfig):
    """SPiRL and SPiRL-cl (the skill model's kind decides the decoder): the policy is KL-regularised to the prior.

    ``target_divergence`` delta = 3 nats for the walker (maze 1, kitchen 5): a policy with KL = delta from the prior
    can concentrate on a slice of about exp(-delta), i.e. 5 %, of the prior's skills, enough to pick "walk forward"
    or "jump" out of the task-agnostic walking data while staying among skills the decoder knows.
    """

    target_divergence: float = 3.0  # delta: the KL(pi || prior) in nats that alpha steers towards
    n_mc_samples: int = 10  # draws of the Monte-Carlo KL

    def __post_init__(self) -> None:
        """Also check the KL settings."""
        super().__post_init__()
        check_option(self, is_int(self.n_mc_samples) and self.n_mc_samples >= 1, "n_mc_samples",
                     "must be a positive int")
        check_option(self, math.isfinite(self.target_divergence), "target_divergence", "must be finite")


def is_int(value: Any) -> bool:
    """An int that is not a bool (YAML's true would pass isinstance(value, int))."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_option(cfg: Any, ok: bool, name: str, what: str) -> None:
    """Fail with one line naming the config class, the option and what it must be."""
    if not ok:
        raise ValueError(f"{type(cfg).__name__}.{name} {what}; got {getattr(cfg, name)!r}")


# --------------------------------------------------------------------------------------------------------------
# Observations, policies, critics


def skill_state(observation: Tensor, kept_entries: Tensor, stats: DatasetStats | None) -> Tensor:
    """The skill model's state [N, S]: the kept entries of the env's joints [N, O], normalised like the dataset."""
    state = observation[..., kept_entries]
    return state if stats is None else stats.normalize(state)


def agent_observation(obs: Mapping[str, Tensor], kept_entries: Tensor, stats: DatasetStats | None,
                      task_keys: Sequence[str]) -> Tensor:
    """What the agents' networks read [N, S + F]: the skill state, then the task features ``obs[key]`` flattened in
    the order of ``task_keys``. The first S columns alone are the input of the prior and the decoders."""
    state = skill_state(obs["observation"], kept_entries, stats)
    return torch.cat([state, *(obs[key].flatten(1).to(state.dtype) for key in task_keys)], dim=-1)


def squash(u: Tensor, max_range: float) -> Tensor:
    """(1) The skill the decoder reads, ``r * tanh(u / r)`` with r = ``max_range``: [B, nz]. Its slope at 0 is 1, so
    a draw u of the prior is the skill z = u the decoder learned, up to a squeeze of the rare |u| near r."""
    return max_range * torch.tanh(u / max_range)


def squashed_log_prob(dist: D.Distribution, u: Tensor, max_range: float) -> Tensor:
    """log density [B] of z = r tanh(u / r) for u ~ dist: ``log dist(u) - sum log(1 - tanh(v)^2)``, v = u / r.

    ``log(1 - tanh(v)^2) = 2 (log 2 - v - softplus(-2v))`` stays finite where tanh saturates.
    """
    v = u / max_range
    log_jacobian = 2.0 * (math.log(2.0) - v - F.softplus(-2.0 * v))
    return dist.log_prob(u) - log_jacobian.sum(dim=-1)


class GaussianPolicy(nn.Module):
    """pi(u | x) = N(mu, sigma) over pre-tanh skills [B, nz]; ``net`` maps x [B, D] to (mu, log sigma) [B, 2 nz]."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> D.Independent:
        """The Gaussian over u for inputs [B, D] (log sigma clamped to [-10, 2], as the prior's)."""
        return gaussian_from_params(self.net(x))


def prior_initialised_net(prior_net: Predictor, n_extra: int) -> Predictor:
    """A trainable copy of the prior net whose first layer also reads ``n_extra`` task features, with zero weights:
    on [state, features] it computes exactly ``prior_net(state)`` until training moves it."""
    net = copy.deepcopy(prior_net).requires_grad_(True)
    first = net.net[0]
    wider = nn.Linear(first.in_features + n_extra, first.out_features).to(first.weight.device, first.weight.dtype)
    with torch.no_grad():
        wider.weight.zero_()
        wider.weight[:, : first.in_features] = first.weight
        wider.bias.copy_(first.bias)
    net.net[0] = wider
    return net


class DoubleCritic(nn.Module):
    """Q_1, Q_2 (clipped double Q): two MLPs on [x, action] -> [B, 2]."""

    def __init__(self, in_dim: int, action_dim: int, width: int, n_layers: int) -> None:
        super().__init__()
        self.nets = nn.ModuleList(Predictor(in_dim + action_dim, 1, width, n_layers) for _ in range(2))

    def forward(self, x: Tensor, action: Tensor) -> Tensor:
        """x [B, D], action [B, A] -> [B, 2]."""
        inputs = torch.cat([x, action], dim=-1)
        return torch.cat([net(inputs) for net in self.nets], dim=-1)


# --------------------------------------------------------------------------------------------------------------
# Losses (pure functions); the high-level target (3) is SAC's critic_target with D in place of log pi


def divergence_temperature_loss(log_alpha: Tensor, divergence: Tensor,
                                target_divergence: float) -> tuple[Tensor, dict[str, Tensor]]:
    """(5) ``mean_B exp(log_alpha) * (delta - D).detach()``: the gradient raises alpha while the divergence D [B]
    is above delta and lowers it below. Info (detached): ``alpha``."""
    if log_alpha.ndim != 0 or divergence.ndim != 1:
        raise ValueError(f"divergence_temperature_loss: log_alpha must be 0-d and divergence [B]; got "
                         f"{tuple(log_alpha.shape)} and {tuple(divergence.shape)}")
    alpha = log_alpha.exp()
    return (alpha * (target_divergence - divergence).detach()).mean(), {"alpha": alpha.detach()}


# --------------------------------------------------------------------------------------------------------------
# Acting state and staging


class SkillContext(NamedTuple):
    """The skill in force in each of N envs."""

    z: Tensor  # [N, nz] the squashed skill the decoder reads
    since: Tensor  # [N] long: k, the steps since the decision (0 = decided at this step)
    plan: Tensor  # [N, H, A] SPiRL v1's open-loop actions; [N, 0, A] for closed-loop decoders
    action: Tensor  # [N, A] the low-level action of this step, before clipping


def _where(mask: Tensor, chosen: SkillContext, kept: SkillContext) -> SkillContext:
    """Per env, ``chosen`` where mask [N] is true, else ``kept``."""
    return SkillContext(*(torch.where(mask.view(-1, *[1] * (a.ndim - 1)), a, b) for a, b in zip(chosen, kept)))


class SkillContexts:
    """One :class:`SkillContext` per acting stream: ``explore`` (the training envs) and ``greedy`` (evaluation)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.streams: dict[str, SkillContext] = {}

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors (for checkpoints)."""
        return {name: ctx._asdict() for name, ctx in self.streams.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the streams on this object's device."""
        self.streams = {name: SkillContext(**{key: value.to(self.device) for key, value in ctx.items()})
                        for name, ctx in state.items()}


class SkillTransitions:
    """Per env: the observation where the current skill started, its z and the rewards summed since; emits the
    high-level transitions of the envs whose skill ends (after H steps or at an episode's end)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start_obs: Tensor | None = None  # [N, D]
        self.z: Tensor | None = None  # [N, nz]
        self.reward_sum: Tensor | None = None  # [N]

    def push(self, started: Tensor, obs: Tensor, z: Tensor, reward: Tensor, next_obs: Tensor, terminated: Tensor,
             closes: Tensor) -> dict[str, Tensor] | None:
        """Add one step of N envs (started, closes, terminated [N] bool; obs, next_obs [N, D]; z [N, nz]; reward
        [N]); returns the rows [M, ...] of the M envs in ``closes`` (obs, z, reward, next_obs, terminated) or None."""
        if self.start_obs is None or self.start_obs.shape != obs.shape:
            self.start_obs, self.z = torch.zeros_like(obs), torch.zeros_like(z)
            self.reward_sum = torch.zeros_like(reward)
        self.start_obs = torch.where(started[:, None], obs, self.start_obs)
        self.z = torch.where(started[:, None], z, self.z)
        self.reward_sum = torch.where(started, torch.zeros_like(reward), self.reward_sum) + reward
        if not bool(closes.any()):
            return None
        rows = closes.nonzero().squeeze(1)
        return {"obs": self.start_obs[rows], "z": self.z[rows], "reward": self.reward_sum[rows],
                "next_obs": next_obs[rows], "terminated": terminated[rows]}

    def state_dict(self) -> dict[str, Any]:
        """The open skills (None before the first step)."""
        return {"start_obs": self.start_obs, "z": self.z, "reward_sum": self.reward_sum}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the open skills on this object's device."""
        for name in ("start_obs", "z", "reward_sum"):
            value = state[name]
            setattr(self, name, None if value is None else value.to(self.device))


# --------------------------------------------------------------------------------------------------------------
# The high level, shared


class SkillSpaceAgent(Agent):
    """SAC in skill space over a frozen skill model, for N envs stepped together; see the module docstring.

    Subclasses build the policy (:meth:`_make_policy`) and define the divergence D of (2) and its target delta.
    """

    config_class: type[SkillAgentConfig] = SkillAgentConfig

    def __init__(self, obs_space: gym.Space, action_space: gym.Space, num_envs: int = 1,
                 cfg: SkillAgentConfig | Mapping[str, Any] | None = None, writer: SummaryWriter | None = None) -> None:
        """``obs_space``: one env's Dict observation (``observation``, ``time``, task features); ``action_space``:
        its Box actions; ``cfg``: the agent's config class or a mapping of its fields (``skill_model`` required)."""
        self.cfg = make_config(self.config_class, cfg)
        super().__init__(resolve_device(self.cfg.device), writer)
        if not is_int(num_envs) or num_envs < 1:
            raise ValueError(f"{type(self).__name__}: num_envs must be a positive int; got {num_envs!r}")
        self.num_envs = num_envs
        self.skill = self._load_skill()
        model_cfg = self.skill.config
        self.H, self.nz, self.state_dim = model_cfg.H, model_cfg.nz, model_cfg.state_dim
        center, scale = action_bounds(action_space, self.device, type(self).__name__, model_cfg.action_dim)
        self._action_low, self._action_high = center - scale, center + scale
        self._read_observation_space(obs_space)
        self.policy = self._make_policy().to(self.device)
        self.q = DoubleCritic(self.obs_dim, self.nz, self.cfg.q_width, self.cfg.q_layers).to(self.device)
        self.target_q = copy.deepcopy(self.q).requires_grad_(False)
        self.log_alpha = torch.tensor(float(self.cfg.init_log_alpha), device=self.device, requires_grad=True)
        self.optim = {"pi": make_adam(self.policy.parameters(), self.cfg.lr_pi, self.device),
                      "q": make_adam(self.q.parameters(), self.cfg.lr_q, self.device),
                      "alpha": make_adam([self.log_alpha], self.cfg.lr_alpha, self.device)}
        self.buffer = ReplayBuffer(self.cfg.rpbuf_size, interleave=1, device=self.device)
        self.transitions = SkillTransitions(self.device)
        self.contexts = SkillContexts(self.device)
        self.set_checkpoint_attr("policy", "q", "target_q", "log_alpha", "optim", "buffer", "transitions", "contexts")

    def _load_skill(self) -> SkillModelCheckpoint:
        """The frozen skill model of ``cfg.skill_model``."""
        if self.cfg.skill_model is None:
            raise ValueError(f"{type(self).__name__} needs skill_model: the path of a skill-model checkpoint "
                             "(save_skill_model)")
        skill = load_skill_model(self.cfg.skill_model, self.device)
        skill.model.requires_grad_(False)
        return skill

    def _read_observation_space(self, obs_space: gym.Space) -> None:
        """Kept entries, normalisation and task keys of :func:`agent_observation`; ``obs_dim`` = S + F."""
        who = type(self).__name__
        if not isinstance(obs_space, spaces.Dict) or not {"observation", "time"} <= set(obs_space.spaces):
            raise ValueError(f"{who} needs a Dict observation with 'observation' and 'time' (env wrapper 'time'); "
                             f"got {obs_space}")
        if math.isfinite(float(obs_space["time"].high.max())):
            raise ValueError(f"{who} needs obs['time'] to count episode steps (wrapper 'time' without an interval)")
        self.task_keys = [key for key in obs_space.spaces if key not in _NOT_TASK_KEYS]
        if not all(isinstance(obs_space[key], spaces.Box) for key in self.task_keys):
            raise ValueError(f"{who} reads task features from Box entries only; got {obs_space}")
        stats = self.skill.stats or {}
        n_joints = obs_space["observation"].shape[0]
        kept = stats.get("kept_observation_entries")
        if kept is None and n_joints == self.state_dim:  # the env's observation is the skill state itself
            kept = torch.arange(n_joints)
        if kept is None or len(kept) != self.state_dim or int(kept.max()) >= n_joints:
            raise ValueError(f"{who}: the skill state has {self.state_dim} entries, the env's observation "
                             f"{n_joints}, and the skill checkpoint's stats['kept_observation_entries'] does not map "
                             "one to the other")
        self.kept_entries = torch.as_tensor(kept, dtype=torch.long, device=self.device)
        self.stats = None if "obs_mean" not in stats else DatasetStats(
            stats["obs_mean"].cpu().numpy(), stats["obs_std"].cpu().numpy(), {})
        self.obs_dim = self.state_dim + sum(flatdim(obs_space[key]) for key in self.task_keys)

    @abstractmethod
    def _make_policy(self) -> nn.Module:
        """The high-level policy: inputs [B, D] -> a Gaussian over u [B, nz]."""

    @abstractmethod
    def divergence(self, obs: Tensor, dist: D.Distribution, u: Tensor) -> Tensor:
        """(2) D [B] of the policy ``dist`` = pi(.|obs) with its draw u [B, nz]."""

    @property
    @abstractmethod
    def target_divergence(self) -> float:
        """delta of (5)."""

    @abstractmethod
    def _divergence_metrics(self, divergence: Tensor) -> dict[str, Tensor]:
        """Health metrics of the divergences [B] of the policy step."""

    @property
    def alpha(self) -> Tensor:
        """The high-level temperature as a constant (0-d)."""
        return self.log_alpha.detach().exp()

    def agent_observation(self, obs: Mapping[str, Tensor]) -> Tensor:
        """:func:`agent_observation` of a batch of env observations, on the agent's device: [N, D]."""
        obs = {key: obs[key].to(self.device, torch.float32) for key in ("observation", *self.task_keys)}
        return agent_observation(obs, self.kept_entries, self.stats, self.task_keys)

    # ---------------------------------------------------------------- acting

    @torch.no_grad()
    def action(self, obs: Mapping[str, Tensor], explore: bool) -> Tensor:
        """Env actions [N, A], clipped to the bounds; new skills where ``time`` is 0 or the last one ran H steps.

        Skills: uniform in [-r, r] during the first ``randexp_samples`` when exploring, else policy samples when
        exploring, else ``r * tanh(mean / r)``.
        """
        x = self.agent_observation(obs)
        stream = "explore" if explore else "greedy"
        context = self._advance(self.contexts.streams.get(stream), x, obs["time"].to(self.device), explore)
        action = self._low_level_action(x[:, : self.state_dim], context, explore)
        self.contexts.streams[stream] = context._replace(action=action)
        return torch.maximum(torch.minimum(action, self._action_high), self._action_low)

    def _advance(self, previous: SkillContext | None, x: Tensor, time: Tensor, explore: bool) -> SkillContext:
        """The context of this step: new skills where due, the running ones one step further elsewhere."""
        if previous is None or previous.z.shape[0] != x.shape[0]:
            return self._decide(x, explore)
        due = (time[:, 0] == 0) | (previous.since + 1 >= self.H)
        carried = previous._replace(since=previous.since + 1)
        if not bool(due.any()):
            return carried
        return _where(due, self._decide(x, explore), carried)

    def _decide(self, x: Tensor, explore: bool) -> SkillContext:
        """New skills for all N envs (callers keep the rows that are due), with v1's open-loop plans."""
        n_envs, r = x.shape[0], self.cfg.max_action_range
        if explore and self.n_samples < self.cfg.randexp_samples:
            z = r * (2 * torch.rand(n_envs, self.nz, device=self.device) - 1)
        else:
            dist = self.policy(x)
            z = squash(dist.sample() if explore else dist.mean, r)
        n_actions = self._action_low.shape[0]
        plan = self.skill.model.decode_plan(z) if self.skill.kind == "spirl" else x.new_zeros(n_envs, 0, n_actions)
        since = torch.zeros(n_envs, dtype=torch.long, device=self.device)
        return SkillContext(z, since, plan, x.new_zeros(n_envs, n_actions))

    def _low_level_action(self, state: Tensor, context: SkillContext, explore: bool) -> Tensor:
        """The frozen decoder's action [N, A]: v1 reads its plan, the closed-loop decoders their mean at (s, z(, k))."""
        model = self.skill.model
        if self.skill.kind == "spirl":
            return context.plan[torch.arange(state.shape[0], device=self.device), context.since]
        if self.skill.kind == "spirl_cl":
            return model.decode_step(state, context.z)
        return model.decode_step(state, context.z, context.since)[0]

    # ---------------------------------------------------------------- learning

    def observe(self, obs: Mapping[str, Tensor], action: Tensor, reward: Tensor, terminated: Tensor,
                truncated: Tensor, next_obs: Mapping[str, Tensor],
                info: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Store one step of the training envs (after an exploring :meth:`action`) and run the updates that are due.

        action [N, A]; reward, terminated, truncated [N]; next_obs is what the step led to (``info["final_obs"]``
        where an episode ended). Only ``terminated`` stops the bootstrap; a timeout just closes the skill.
        """
        context = self.contexts.streams.get("explore")
        n_envs, n_actions = self.num_envs, self._action_low.shape[0]
        if context is None or context.z.shape[0] != n_envs:
            raise ValueError(f"observe needs a preceding action(obs, explore=True) on the N={n_envs} training envs")
        if tuple(action.shape) != (n_envs, n_actions):
            raise ValueError(f"observe: action must be [N={n_envs}, A={n_actions}]; got {tuple(action.shape)}")
        for name, value in (("reward", reward), ("terminated", terminated), ("truncated", truncated)):
            if tuple(value.shape) != (n_envs,):
                raise ValueError(f"observe: {name} must be [N={n_envs}]; got {tuple(value.shape)}")
        terminated = terminated.to(self.device, torch.bool)
        ended = terminated | truncated.to(self.device, torch.bool)
        n_new = self._store(self.agent_observation(obs), context, reward.to(self.device, torch.float32), terminated,
                            ended, self.agent_observation(next_obs))
        return self._count_and_update(n_new)

    def _store(self, x: Tensor, context: SkillContext, reward: Tensor, terminated: Tensor, ended: Tensor,
               next_x: Tensor) -> int:
        """Stage the step and store the high-level transitions it closes; returns how many."""
        closes = (context.since + 1 >= self.H) | ended
        rows = self.transitions.push(context.since == 0, x, context.z, reward, next_x, terminated, closes)
        if rows is None:
            return 0
        self.buffer.put(rows)
        return rows["reward"].shape[0]

    def _count_and_update(self, n_transitions: int) -> dict[str, float]:
        """Count the step; after warm-up run ``updates_per_transition`` updates per new transition."""
        self.n_steps += 1
        self.n_samples += self.num_envs
        if self.n_samples < self.cfg.warmup_samples or n_transitions == 0:
            return {}
        metrics = mean_metrics([self.update() for _ in range(n_transitions * self.cfg.updates_per_transition)])
        self.log_scalars("", metrics)
        return metrics

    def update(self) -> dict[str, Tensor]:
        """One critic (3), one policy (4) and one temperature (5) step on a fresh batch, then the polyak average."""
        batch = self.buffer.get_batch(self.cfg.batch_size)
        metrics = self._critic_step(batch)
        metrics.update(self._actor_and_temperature_steps(batch["obs"]))
        polyak_update(self.target_q, self.q, self.cfg.polyak)
        self.n_updates += 1
        return metrics

    @torch.no_grad()
    def high_level_target(self, batch: Mapping[str, Tensor]) -> Tensor:
        """(3) y_H [B] for a batch of transitions (reward [B], terminated [B], next_obs [B, D])."""
        next_obs = batch["next_obs"]
        dist = self.policy(next_obs)
        u = dist.sample()
        divergence = self.divergence(next_obs, dist, u)
        next_q = self.target_q(next_obs, squash(u, self.cfg.max_action_range)).min(dim=-1).values
        return critic_target(batch["reward"], ~batch["terminated"], self.cfg.gamma, next_q, divergence, self.alpha)

    def _critic_step(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        loss, info = critic_loss(self.q(batch["obs"], batch["z"]), self.high_level_target(batch))
        grad_norm = optimizer_step(self.optim["q"], loss)
        return {"train/loss_q": loss.detach(), "health/grad_norm_q": grad_norm,
                **{f"health/{name}": value for name, value in info.items()}}

    def _actor_and_temperature_steps(self, obs: Tensor) -> dict[str, Tensor]:
        """(4) with the critic frozen, then (5) on the same divergences."""
        dist = self.policy(obs)
        u = dist.rsample()
        divergence = self.divergence(obs, dist, u)
        with frozen(self.q):
            q = self.q(obs, squash(u, self.cfg.max_action_range)).min(dim=-1).values
            loss, _ = actor_loss(q, divergence, self.alpha)
            grad_norm = optimizer_step(self.optim["pi"], loss)
        alpha_loss, info = divergence_temperature_loss(self.log_alpha, divergence.detach(), self.target_divergence)
        optimizer_step(self.optim["alpha"], alpha_loss)
        return {"train/loss_pi": loss.detach(), "train/loss_alpha": alpha_loss.detach(), "health/alpha": info["alpha"],
                "health/q_pi": q.detach().mean(), "health/grad_norm_pi": grad_norm,
                **self._divergence_metrics(divergence.detach())}


# --------------------------------------------------------------------------------------------------------------
# The agents


class NoPriorAgent(SkillSpaceAgent):
    """The no-prior baseline (SSP): a random-init MLP policy and SAC's entropy bonus, target entropy -nz."""

    config_class = NoPriorConfig

    def _make_policy(self) -> nn.Module:
        return GaussianPolicy(Predictor(self.obs_dim, 2 * self.nz, self.cfg.pi_width, self.cfg.pi_layers))

    def divergence(self, obs: Tensor, dist: D.Distribution, u: Tensor) -> Tensor:
        """(2) log pi(z|s) [B] of the squashed draw (a one-sample estimate of minus the entropy)."""
        return squashed_log_prob(dist, u, self.cfg.max_action_range)

    @property
    def target_divergence(self) -> float:
        """delta = -target_entropy: (5) is then SAC's temperature loss."""
        return float(self.nz) if self.cfg.target_entropy is None else -float(self.cfg.target_entropy)

    def _divergence_metrics(self, divergence: Tensor) -> dict[str, Tensor]:
        return {"health/entropy": -divergence.mean()}


class SPiRLAgent(SkillSpaceAgent):
    """SPiRL (v1 or -cl, by the skill model's kind): the policy starts as the prior and is KL-regularised to it."""

    config_class = SPiRLConfig

    def _make_policy(self) -> nn.Module:
        return GaussianPolicy(prior_initialised_net(self.skill.model.prior_net, self.obs_dim - self.state_dim))

    def divergence(self, obs: Tensor, dist: D.Distribution, u: Tensor) -> Tensor:
        """(2) Monte-Carlo KL(pi(.|s) || p(.|s)) [B] between the pre-tanh Gaussians (u is not used)."""
        prior = self.skill.model.prior(obs[:, : self.state_dim])
        return mc_kl(dist, prior, self.cfg.n_mc_samples)

    @property
    def target_divergence(self) -> float:
        """delta of the config."""
        return float(self.cfg.target_divergence)

    def _divergence_metrics(self, divergence: Tensor) -> dict[str, Tensor]:
        return {"health/kl_prior": divergence.mean()}


