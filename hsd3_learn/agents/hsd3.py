"""HSD-3's high level: a SAC agent that steers a frozen goal-reaching skill by choosing a feature subset and a subgoal.

HSD-3 (Gehring et al., "Hierarchical Skills for Efficient Exploration", NeurIPS 2021, arXiv:2110.10809, Sec. 4.2;
hsd3-spec section 4). Every ``action_interval`` (c = 5) env steps the high level picks a subset f ~ pi_f of the
goal-space features (K subsets, ``pi_task``) and a normalised subgoal c_f ~ pi_g(.|s, f) (one tanh-Gaussian head
per subset, ``pi_subgoal``); :class:`~hsd3_learn.agents.hsd3_interface.HiToLoInterface` turns the pair into the
input of the pre-trained low-level policy, which acts deterministically and is never trained here. The math lives
in :mod:`hsd3_learn.agents.hsd3_math`, whose equation numbers this module uses:

- (E1) masked log-prob of a subgoal, (E2) the exact expectation over all K subsets shared by (E3) the policy loss
  and (E4) the critic target, (E5)/(E6) the per-subset subgoal temperatures and the subset temperature;
- (E7) subgoal translation, with the absolute target kept fixed inside the interval (the interface);
- (E8) DynE dense transitions: every env step starts a high-level transition (time = steps since the decision)
  that runs until the next decision, a terminal or the end of the interval.

**Exact expectation, all heads at once.** (E2) needs, for every state, Q and log pi_g of every subset's own
subgoal. hucc repeated the batch K times through both policies and the critic; here pi_g's trunk runs once and
all K heads are read from it (:func:`all_subgoal_heads`, [B, K, G]); only the critic sees the batch repeated K
times (:func:`q_all_subsets`). The values are the same, pi_g costs K times less.

**The high-level observation** is the env's observation without the goal-space key; its ``time`` entry (the episode
step count from :func:`~hsd3_learn.agents.hsd3_interface.make_hsd3_env`) is replaced by the steps since the last
decision (0 to c - 1) for the critic and by 0 for the policies. Decisions happen at each episode's first step and
then every c steps, per env. The low-level checkpoint format and subset selection are described in
:mod:`hsd3_learn.agents.hsd3_interface`, whose names are re-exported here.

Differences from hucc's ``HSD3Agent`` (``hucc/agents/hsd3.py``; the interface's are listed in its module):

1. Only ``expectation_d: full`` and ``dyne_updates: true`` (the shipped settings), no tracing (speed only).
2. pi_g's trunk is evaluated once for all K heads instead of on the batch repeated K times (same values).
3. The interval restarts at every episode start and counts steps since the last decision, kept per env by the
   agent; hucc read ``time mod c`` from the env (the same when episodes start at step 0). The current high-level
   actions live in the agent, one context for exploring and one for greedy acting (hucc: the vector env's
   ``ctx``), so evaluations between training steps leave the training envs' intervals alone.
4. Agent checkpoints hold the high level, its target critic, optimizers, temperatures, replay buffer, DynE staging
   and the current high-level actions, not the low level, which is reloaded from ``lo.init_from``; the target
   network copies only the critic (hucc deep-copied the whole model and used only ``hi.q``).
5. One fresh batch per update (hucc drew all ``num_updates`` batches at once below a batch size of 512: same
   distribution); ``clip_grad_norm`` works (hucc's referenced a missing attribute) and never clips temperatures.
6. Random exploration draws from torch's global generator (part of checkpoints), not the action space's sampler;
   low-level actions in (-1, 1) are mapped affinely onto the env's bounds (hucc: times ``high[0]``).
7. ``n_updates`` counts gradient steps; ``observe`` returns and logs the metrics averaged over its updates (hucc
   logged the last one).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import gymnasium as gym
import torch
from gymnasium import spaces
from torch import Tensor, nn

from hsd3_learn.agents.base import Agent, action_bounds, frozen, make_adam, make_config
from hsd3_learn.agents.hsd3_interface import (GOAL_SPACE_KEY, LOW_LEVEL_FORMAT, LOW_LEVEL_MODEL,
                                              DeterministicLowLevel, HiToLoInterface, LowLevelCheckpoint,
                                              LowLevelGoal, load_low_level, low_level_observation_space,
                                              make_hsd3_env, save_low_level, select_subsets, side_file)
from hsd3_learn.agents.hsd3_math import (DyneStaging, StagedTransition, critic_target, expected_policy_terms,
                                         masked_log_prob, policy_loss, subgoal_temperature_loss,
                                         subset_temperature_loss)
from hsd3_learn.agents.sac import critic_loss, polyak_update
from hsd3_learn.models.blocks import MultiHeadGaussianFromEmbedding, TanhNormal
from hsd3_learn.models.factory import TaskConditionedPolicy, make_model
from hsd3_learn.envs.goal_spaces import GOAL_SPACE_KINDS
from hsd3_learn.replaybuffer import ReplayBuffer
from hsd3_learn.utils import resolve_device

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["GOAL_SPACE_KEY", "LOW_LEVEL_FORMAT", "LOW_LEVEL_MODEL", "ActingContexts", "DeterministicLowLevel",
           "GoalSpaceConfig", "HSD3Agent", "HSD3Config", "HiToLoInterface", "HighLevelContext", "LowLevelCheckpoint",
           "LowLevelConfig", "LowLevelGoal", "SubsetEvaluation", "all_subgoal_heads", "evaluate_subsets",
           "high_level_critic_loss", "load_low_level", "low_level_observation_space", "make_hsd3_env",
           "q_all_subsets", "save_low_level", "select_subsets", "side_file"]


# ---------------------------------------------------------------------------------------- losses (pure functions)


class SubsetEvaluation(NamedTuple):
    """The policies and a critic evaluated with every subset at every state (the inputs of E2)."""

    subset_probs: Tensor  # [B, K] pi_f(f|s)
    subset_entropy: Tensor  # [B] H(pi_f(.|s))
    subgoals: Tensor  # [B, K, G] reparameterised samples of each head, zero outside the subset
    subgoal_log_probs: Tensor  # [B, K] (E1) masked mean log-probs
    q: Tensor  # [B, K] min of the two critics at (s, f, c_f)


def all_subgoal_heads(pi_subgoal: TaskConditionedPolicy, obs: Mapping[str, Tensor]) -> TanhNormal:
    """Every head of a multi-head pi_g at once: a TanhNormal over [B, K, G] (the trunk runs once)."""
    return pi_subgoal.head(pi_subgoal.trunk(pi_subgoal.flatten(obs)))


def q_all_subsets(q: nn.Module, obs: Mapping[str, Tensor], subgoals: Tensor) -> Tensor:
    """min(Q1, Q2) [B, K] of each subset f with its own subgoal ``subgoals[:, f]`` ([B, K, G]).

    The critic reads the batch repeated K times (state b, subset f at row b * K + f).
    """
    n_batch, n_subsets, n_goal = subgoals.shape
    repeated = {key: value.repeat_interleave(n_subsets, dim=0) for key, value in obs.items()}
    task = torch.arange(n_subsets, device=subgoals.device).repeat(n_batch)
    values = q(repeated, {"task": task, "subgoal": subgoals.reshape(n_batch * n_subsets, n_goal)})
    return values.min(dim=-1).values.view(n_batch, n_subsets)


def evaluate_subsets(pi_task: nn.Module, pi_subgoal: TaskConditionedPolicy, q: nn.Module,
                     obs: Mapping[str, Tensor], masks: Tensor) -> SubsetEvaluation:
    """Sample every subset's subgoal at every state and score it: what (E2)-(E6) need. masks: [K, G].

    Gradients reach pi_f through the probabilities and pi_g through the reparameterised subgoals; call it without
    gradients for the critic target, with the critic frozen for the policy loss.
    """
    dist_task = pi_task(obs)
    dist_subgoal = all_subgoal_heads(pi_subgoal, obs)
    raw = dist_subgoal.rsample()  # [B, K, G]
    log_probs = masked_log_prob(dist_subgoal.log_prob(raw), masks)
    subgoals = raw * masks
    return SubsetEvaluation(dist_task.probs, dist_task.entropy(), subgoals, log_probs, q_all_subsets(q, obs, subgoals))


def high_level_critic_loss(batch: Mapping[str, Tensor], model: nn.ModuleDict, target_q: nn.Module, masks: Tensor,
                           alpha_c: Tensor, alpha_d: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """(E4) Squared TD error of both critics against the soft target of the expectation over subsets.

    ``batch`` holds DynE transitions: ``obs/<key>`` and ``next_obs/<key>`` (high-level observations, next time
    0), ``task`` [B], ``subgoal`` [B, G], ``reward`` [B] and ``discount`` [B] (gamma^(k+1), 0 after a terminal).
    The target uses fresh actions of the current policies (``model.pi_task``, ``model.pi_subgoal``) and
    ``target_q``; alpha_c [K] and alpha_d are constants. Info as :func:`hsd3_learn.agents.sac.critic_loss`.
    """
    obs, next_obs = unprefixed(batch, "obs/"), unprefixed(batch, "next_obs/")
    with torch.no_grad():
        future = evaluate_subsets(model.pi_task, model.pi_subgoal, target_q, next_obs, masks)
        terms = expected_policy_terms(future.subset_probs, future.q, future.subgoal_log_probs, alpha_c, alpha_d)
        target = critic_target(batch["reward"], batch["discount"], terms)
    q = model.q(obs, {"task": batch["task"], "subgoal": batch["subgoal"]})
    return critic_loss(q, target)


def prefixed(values: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """``{key: v}`` -> ``{prefix + key: v}``: observations stored in one flat replay row (``obs/``, ``next_obs/``)."""
    return {prefix + key: value for key, value in values.items()}


def unprefixed(values: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries of a replay batch under ``prefix``, with the prefix removed (the inverse of :func:`prefixed`)."""
    return {key[len(prefix):]: value for key, value in values.items() if key.startswith(prefix)}


# -------------------------------------------------------------------------------------------------------- config


@dataclass
class LowLevelConfig:
    """Where the frozen skill comes from (hucc's ``lo`` group)."""

    init_from: str | None = None  # path of the low-level checkpoint (save_low_level); required
    model: str | dict[str, Any] | None = None  # factory config of the skill policy; None: the one in the file


@dataclass
class GoalSpaceConfig:
    """Which goal-space subsets the high level chooses among (hucc's ``goal_space`` group, ``subsets: from_lo``)."""

    features: str = "bodyfeet"  # the env's goal space: bodyfeet, or bodyfeet-relz (heights above the ground; Stairs)
    key: str = GOAL_SPACE_KEY  # observation key of the raw goal-space features
    from_lo_eps: float = 1.0  # keep subsets with controllability >= 1 - eps (1.0 keeps all)
    rank_min: int = 1  # fewest feature groups in a subset
    rank_max: int = 99  # most feature groups in a subset


@dataclass
class HSD3Config:
    """Hyperparameters of the HSD-3 high level; the defaults are ``walker_hsd3`` (hsd3-spec section 9)."""

    action_interval: int = 5  # env steps per high-level action (c)
    gamma: float = 0.99  # discount per env step
    polyak: float = 0.995  # weight of the old target critic in its average
    batch_size: int = 256  # transitions per gradient step
    rpbuf_size: int = 1_000_000  # replay capacity in transitions (a multiple of the number of envs)
    samples_per_update: int = 50  # env steps (summed over envs) between two rounds of updates
    num_updates: int = 50  # gradient steps per round
    warmup_samples: int = 1000  # transitions in the buffer before the first update
    randexp_samples: int = 1000  # env steps with uniformly random subsets and subgoals at the start
    init_alpha_c: float = 1.0  # initial subgoal temperature of every subset
    target_entropy_factor_c: float = 1.0  # subgoal entropy target: -factor per active dim
    init_alpha_d: float = 1.0  # initial subset temperature
    target_entropy_factor_d: float = 0.5  # subset entropy target: factor * log K
    lr_pi_task: float = 3e-4  # Adam learning rate of pi_f
    lr_pi_subgoal: float = 3e-4  # Adam learning rate of pi_g
    lr_q: float = 1e-4  # Adam learning rate of the critics
    lr_alpha_c: float = 1e-4  # Adam learning rate of log(alpha_c)
    lr_alpha_d: float = 1e-4  # Adam learning rate of log(alpha_d)
    clip_grad_norm: float = 0.0  # clip each network's gradient to this L2 norm; 0 disables clipping
    device: str = "auto"  # "auto" (CUDA if present), "cpu", "cuda:N"
    pi_task: str | dict[str, Any] = "pi_d2rl_discrete_d_256"  # pi_f: categorical over the K subsets
    pi_subgoal: str | dict[str, Any] = "pi_d2rl_mt_d_256"  # pi_g: one tanh-Gaussian head per subset
    q: str | dict[str, Any] = "qd_d2rl_flattsg_d_256"  # fused double critic on vec(onehot(f) x subgoal), [B, 2]
    lo: LowLevelConfig = field(default_factory=LowLevelConfig)  # the frozen skill
    goal_space: GoalSpaceConfig = field(default_factory=GoalSpaceConfig)  # the subsets

    def __post_init__(self) -> None:
        """Build the nested groups from mappings and reject values that would fail later or do nothing."""
        self.lo = make_config(LowLevelConfig, self.lo)
        self.goal_space = make_config(GoalSpaceConfig, self.goal_space)
        for name in ("gamma", "polyak"):
            _require(0.0 <= getattr(self, name) <= 1.0, name, "must lie in [0, 1]")
        for name in ("action_interval", "batch_size", "rpbuf_size", "samples_per_update", "num_updates"):
            _require(_is_int(getattr(self, name)) and getattr(self, name) >= 1, name, "must be a positive int")
        for name in ("warmup_samples", "randexp_samples"):
            _require(_is_int(getattr(self, name)) and getattr(self, name) >= 0, name, "must be a non-negative int")
        for name in ("init_alpha_c", "init_alpha_d", "lr_pi_task", "lr_pi_subgoal", "lr_q", "lr_alpha_c",
                     "lr_alpha_d"):
            _require(getattr(self, name) > 0, name, "must be positive")
        _require(self.clip_grad_norm >= 0, "clip_grad_norm", "must be >= 0 (0 disables it)")
        gs = self.goal_space
        _require(1 <= gs.rank_min <= gs.rank_max, "goal_space.rank_min", "must satisfy 1 <= rank_min <= rank_max")
        _require(gs.features in GOAL_SPACE_KINDS, "goal_space.features", f"must be one of {', '.join(GOAL_SPACE_KINDS)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(ok: bool, name: str, what: str) -> None:
    if not ok:
        raise ValueError(f"HSD3Config.{name} {what}")


# -------------------------------------------------------------------------------------------------------- acting


class HighLevelContext(NamedTuple):
    """The high-level action in force in each of N envs, and the goal the low level is currently given."""

    task: Tensor  # [N] long: the subset
    subgoal: Tensor  # [N, G] normalised subgoal (zero outside the subset)
    desired_goal: Tensor  # [N, T] the low level's goal at this step (E7)
    task_mask: Tensor  # [N, T] the subset's mask
    features: Tensor  # [N, F] goal-space features at this step
    since: Tensor  # [N] long: steps since the decision (0: decided at this step)


def _where(mask: Tensor, chosen: HighLevelContext, kept: HighLevelContext) -> HighLevelContext:
    """Per env, ``chosen`` where mask [N] is true, else ``kept``."""
    return HighLevelContext(*(torch.where(mask.view(-1, *[1] * (a.ndim - 1)), a, b) for a, b in zip(chosen, kept)))


class ActingContexts:
    """One :class:`HighLevelContext` per acting stream (``explore``, ``greedy``) and the stream acted on last."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.streams: dict[str, HighLevelContext] = {}
        self.last: str | None = None

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and strings (for checkpoints)."""
        return {"last": self.last, "streams": {name: ctx._asdict() for name, ctx in self.streams.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the contexts on this object's device."""
        self.last = state["last"]
        self.streams = {name: HighLevelContext(**{k: v.to(self.device) for k, v in ctx.items()})
                        for name, ctx in state["streams"].items()}


class _Staging(DyneStaging):
    """:class:`DyneStaging` that checkpoints its ring, so a resumed run emits the same transitions."""

    def __init__(self, num_envs: int, interval: int, gamma: float, device: torch.device) -> None:
        super().__init__(num_envs, interval, gamma)
        self.device = device

    def state_dict(self) -> dict[str, Any]:
        """The step count and the staged rows (shared, not copied)."""
        return {"n_steps": self.n_steps, "rows": dict(self._rows)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the step count and the staged rows on this staging's device."""
        self.n_steps = int(state["n_steps"])
        self._rows = {name: rows.to(self.device) for name, rows in state["rows"].items()}


# --------------------------------------------------------------------------------------------------------- agent


class HSD3Agent(Agent):
    """The HSD-3 high level over a frozen skill, for N envs stepped together; see the module docstring."""

    #: the training script builds its envs with :func:`make_hsd3_env` (time step and goal-space features)
    reads_goal_space = True

    def __init__(self, obs_space: gym.Space, action_space: gym.Space, num_envs: int = 1,
                 cfg: HSD3Config | Mapping[str, Any] | None = None, writer: SummaryWriter | None = None) -> None:
        """``obs_space``: one env's observations (:func:`make_hsd3_env`); ``action_space``: its 1-D Box actions;
        ``cfg``: an :class:`HSD3Config` or a mapping of its fields (``lo.init_from`` is required)."""
        self.cfg = make_config(HSD3Config, cfg)
        super().__init__(resolve_device(self.cfg.device), writer)
        if not _is_int(num_envs) or num_envs < 1:
            raise ValueError(f"{type(self).__name__}: num_envs must be a positive int; got {num_envs!r}")
        if self.cfg.lo.init_from is None:
            raise ValueError(f"{type(self).__name__} needs lo.init_from: the path of a low-level checkpoint "
                             "(save_low_level)")
        self.num_envs = num_envs
        low = load_low_level(self.cfg.lo.init_from, self.cfg.lo.model, self.device)
        self.iface = HiToLoInterface(obs_space, low, self._choose_subsets(low), self.cfg.goal_space.key, self.device)
        self._action_center, self._action_scale = action_bounds(action_space, self.device, type(self).__name__,
                                                                   self.iface.n_actions)
        self.model = self._build_model()
        self.target_q = copy.deepcopy(self.model.q).requires_grad_(False)
        self._make_temperatures_and_optimizers()
        self.buffer = ReplayBuffer(self.cfg.rpbuf_size, interleave=num_envs, device=self.device)
        self.staging = _Staging(num_envs, self.cfg.action_interval, self.cfg.gamma, self.device)
        self.contexts = ActingContexts(self.device)
        self._samples_since_update = 0
        self.set_checkpoint_attr("model", "target_q", "optim", "buffer", "staging", "contexts", "_samples_since_update")

    def _choose_subsets(self, low: LowLevelCheckpoint) -> list[str]:
        """The K subset names the high level chooses among: ``goal_space.subsets: from_lo``."""
        gs = self.cfg.goal_space
        return select_subsets(low.subsets, low.cperf, gs.from_lo_eps, gs.rank_min, gs.rank_max)

    def _make_temperatures_and_optimizers(self) -> None:
        """alpha_c [K] and alpha_d, one Adam per network and temperature; declared for checkpoints."""
        self.log_alpha_c = torch.full((self.iface.n_subsets,), math.log(self.cfg.init_alpha_c), device=self.device,
                                      requires_grad=True)
        self.log_alpha_d = torch.tensor(math.log(self.cfg.init_alpha_d), device=self.device, requires_grad=True)
        self.optim = {"pi_task": make_adam(self.model.pi_task.parameters(), self.cfg.lr_pi_task, self.device),
                      "pi_subgoal": make_adam(self.model.pi_subgoal.parameters(), self.cfg.lr_pi_subgoal, self.device),
                      "q": make_adam(self.model.q.parameters(), self.cfg.lr_q, self.device),
                      "alpha_c": make_adam([self.log_alpha_c], self.cfg.lr_alpha_c, self.device),
                      "alpha_d": make_adam([self.log_alpha_d], self.cfg.lr_alpha_d, self.device)}
        self.set_checkpoint_attr("log_alpha_c", "log_alpha_d")

    def _build_model(self) -> nn.ModuleDict:
        """pi_task, pi_subgoal (multi-head, one head per subset) and q on the high-level observation."""
        obs_hi, action = self.iface.observation_space_hi, self.iface.action_space
        obs_subgoal = spaces.Dict({**obs_hi.spaces, "task": action["task"]})
        model = make_model({"pi_task": self.cfg.pi_task, "pi_subgoal": self.cfg.pi_subgoal, "q": self.cfg.q},
                           {"pi_task": obs_hi, "pi_subgoal": obs_subgoal, "q": obs_hi},
                           {"pi_task": action["task"], "pi_subgoal": action["subgoal"], "q": action}).to(self.device)
        pi_subgoal = model.pi_subgoal
        if not (isinstance(pi_subgoal, TaskConditionedPolicy) and
                isinstance(pi_subgoal.head, MultiHeadGaussianFromEmbedding)):
            raise ValueError(f"{type(self).__name__}: pi_subgoal must be a multi-head policy (pi_d2rl_mt_d_*); got "
                             f"{self.cfg.pi_subgoal!r}")
        with torch.no_grad():
            obs = {k: torch.zeros(1, *s.shape, device=self.device) for k, s in obs_hi.spaces.items()}
            q = model.q(obs, {"task": torch.zeros(1, dtype=torch.long, device=self.device),
                              "subgoal": torch.zeros(1, *action["subgoal"].shape, device=self.device)})
        if tuple(q.shape) != (1, 2):
            raise ValueError(f"{type(self).__name__}: q must be a fused double critic returning [B, 2] (qd_d2rl_flattsg_d_*); "
                             f"got shape {tuple(q.shape)} for B=1")
        return model


    # ---------------------------------------------------------------- acting

    @property
    def last_context(self) -> HighLevelContext | None:
        """The high-level state of the envs at the last :meth:`action` call (None before the first)."""
        return self.contexts.streams.get(self.contexts.last or "")

    def _to_device(self, obs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {key: value.to(self.device, torch.float32) for key, value in obs.items()}

    @torch.no_grad()
    def action(self, obs: Mapping[str, Tensor], explore: bool) -> Tensor:
        """Low-level env actions [N, A]; the high level decides per env at episode starts and every c steps.

        High-level actions: uniform during the first ``randexp_samples`` when exploring, else policy samples when
        exploring, else the most likely subset and its head's ``tanh(mean)``.
        """
        obs = self._to_device(obs)
        stream = "explore" if explore else "greedy"
        context = self._advance(self.contexts.streams.get(stream), obs, explore)
        self.contexts.streams[stream], self.contexts.last = context, stream
        goal = LowLevelGoal(context.desired_goal, context.task_mask)
        return self._action_center + self._action_scale * self.iface.act(obs["observation"], goal)

    def _advance(self, previous: HighLevelContext | None, obs: dict[str, Tensor], explore: bool) -> HighLevelContext:
        """The context of this step: new decisions where due, the carried goal elsewhere."""
        features = obs[self.iface.gs_key]
        if previous is None or previous.task.shape[0] != features.shape[0]:
            return self._decide(obs, features, explore)
        due = (obs["time"][:, 0] == 0) | (previous.since + 1 >= self.cfg.action_interval)
        goal = self.iface.carry_goal(previous.features, features, LowLevelGoal(previous.desired_goal,
                                                                               previous.task_mask))
        carried = previous._replace(desired_goal=goal.desired_goal, features=features, since=previous.since + 1)
        if not due.any():
            return carried
        return _where(due, self._decide(obs, features, explore), carried)

    def _decide(self, obs: dict[str, Tensor], features: Tensor, explore: bool) -> HighLevelContext:
        """New high-level actions for all N envs (callers keep the rows that are due) and their goals."""
        n_envs = features.shape[0]
        if explore and self.n_samples < self.cfg.randexp_samples:
            task, subgoal = self.iface.random_action(n_envs)
        else:
            obs_hi = self.iface.observation_hi(obs, torch.zeros(n_envs, device=self.device))
            dist_task = self.model.pi_task(obs_hi)
            task = dist_task.sample() if explore else dist_task.logits.argmax(dim=-1)
            dist_subgoal = self.model.pi_subgoal({**obs_hi, "task": task})
            subgoal = (dist_subgoal.sample() if explore else dist_subgoal.mean) * self.iface.masks[task]
        goal = self.iface.translate(features, task, subgoal)
        since = torch.zeros(n_envs, dtype=torch.long, device=self.device)
        return HighLevelContext(task, subgoal, goal.desired_goal, goal.task, features, since)

    # ---------------------------------------------------------------- learning

    def observe(self, obs: Mapping[str, Tensor], action: Tensor, reward: Tensor, terminated: Tensor,
                truncated: Tensor, next_obs: Mapping[str, Tensor],
                info: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Stage one vector-env step for DynE, store the transition it completes and run the updates that are due.

        ``obs`` is what the last :meth:`action` call saw; action [N, A]; reward, terminated, truncated [N];
        ``next_obs`` the observation the step led to (``info["final_obs"]`` for envs that ended). A timeout is not
        terminal: it ends the transition through the next step's decision, and its next_obs is bootstrapped from.
        """
        context = self.last_context
        n_envs = self.num_envs
        if context is None or context.task.shape[0] != n_envs:
            raise ValueError(f"observe needs a preceding action() call on the N={n_envs} training envs")
        if tuple(action.shape) != (n_envs, self._action_scale.shape[0]):
            raise ValueError(f"observe: action must be [N={n_envs}, A={self._action_scale.shape[0]}]; got "
                             f"{tuple(action.shape)}")
        for name, value in (("reward", reward), ("terminated", terminated), ("truncated", truncated)):
            if tuple(value.shape) != (n_envs,):
                raise ValueError(f"observe: {name} must be [N={n_envs}]; got {tuple(value.shape)}")
        obs_hi = self.iface.observation_hi(self._to_device(obs), context.since)
        next_hi = self.iface.observation_hi(self._to_device(next_obs), torch.zeros(n_envs, device=self.device))
        staged = self.staging.push(reward.to(self.device, torch.float32), terminated.to(self.device),
                                   context.since == 0, task=context.task, subgoal=context.subgoal,
                                   **prefixed(obs_hi, "obs/"), **prefixed(next_hi, "next_obs/"))
        if staged is not None:
            self.buffer.put_row(_transition_row(staged))
        return self.count_and_update(n_envs, len(self.buffer), self.cfg.warmup_samples, self.cfg.samples_per_update,
                                     self.cfg.num_updates)

    def update(self) -> dict[str, Tensor]:
        """One critic, one joint policy and two temperature steps on a fresh batch, then the polyak average."""
        batch = self.buffer.get_batch(self.cfg.batch_size)
        alpha_c, alpha_d = self.log_alpha_c.detach().exp(), self.log_alpha_d.detach().exp()
        loss, info = high_level_critic_loss(batch, self.model, self.target_q, self.iface.masks, alpha_c, alpha_d)
        norms = self._step(("q",), loss)
        metrics = {"train/loss_q": loss.detach(), "health/grad_norm_q": norms["q"],
                   **{f"health/{name}": value for name, value in info.items()}}
        metrics.update(self._policy_and_temperature_steps(unprefixed(batch, "obs/"), alpha_c, alpha_d))
        polyak_update(self.target_q, self.model.q, self.cfg.polyak)
        self.n_updates += 1
        return metrics

    def _policy_and_temperature_steps(self, obs: dict[str, Tensor], alpha_c: Tensor,
                                      alpha_d: Tensor) -> dict[str, Tensor]:
        """(E3) pi_f and pi_g jointly with the critic frozen (time 0, as at a decision), then (E5) and (E6)."""
        obs = {**obs, "time": torch.zeros_like(obs["time"])}
        with frozen(self.model.q):
            ev = evaluate_subsets(self.model.pi_task, self.model.pi_subgoal, self.model.q, obs, self.iface.masks)
            loss, info = policy_loss(ev.subset_probs, ev.q, ev.subgoal_log_probs, alpha_c, alpha_d)
            norms = self._step(("pi_task", "pi_subgoal"), loss)
        loss_c, info_c = subgoal_temperature_loss(self.log_alpha_c, ev.subgoal_log_probs, ev.subset_probs,
                                                  self.cfg.target_entropy_factor_c)
        loss_d, info_d = subset_temperature_loss(self.log_alpha_d, ev.subset_entropy, self.iface.n_subsets,
                                                 self.cfg.target_entropy_factor_d)
        self._temperature_step("alpha_c", loss_c)
        self._temperature_step("alpha_d", loss_d)
        return {"train/loss_pi": loss.detach(), "train/loss_alpha_c": loss_c.detach(),
                "train/loss_alpha_d": loss_d.detach(), "health/q_pi": info["q"],
                "health/subset_entropy": info["subset_entropy"], "health/subgoal_entropy": info["subgoal_entropy"],
                "health/alpha_c": info_c["alpha_c"], "health/alpha_d": info_d["alpha_d"],
                "health/grad_norm_pi_task": norms["pi_task"], "health/grad_norm_pi_subgoal": norms["pi_subgoal"]}

    def _temperature_step(self, name: str, loss: Tensor) -> None:
        """Backward and step one temperature's optimizer (never clipped)."""
        self.optim[name].zero_grad()
        loss.backward()
        self.optim[name].step()

    def _step(self, names: Sequence[str], loss: Tensor) -> dict[str, Tensor]:
        """Backward, clip each network's gradient (when configured) and step; returns the pre-clip norms."""
        for name in names:
            self.optim[name].zero_grad()
        loss.backward()
        max_norm = self.cfg.clip_grad_norm if self.cfg.clip_grad_norm > 0 else math.inf
        norms = {}
        for name in names:
            params = [p for group in self.optim[name].param_groups for p in group["params"]]
            norms[name] = nn.utils.clip_grad_norm_(params, max_norm).detach()
            self.optim[name].step()
        return norms


def _transition_row(staged: StagedTransition) -> dict[str, Tensor]:
    """A replay row [N, ...] from a DynE transition: the first step's state and action, the last step's next
    state, the discounted reward sum and the discount."""
    first = {key: value for key, value in staged.first.items() if not key.startswith("next_obs/")}
    final = {key: value for key, value in staged.final.items() if key.startswith("next_obs/")}
    return {**first, **final, "reward": staged.reward, "discount": staged.discount}
