"""HSD-Bandit and SD: HSD-3's high level with a multi-armed bandit in place of the subset policy pi_f.

The HSD-Bandit baseline (Gehring et al., "Hierarchical Skills for Efficient Exploration", NeurIPS 2021,
arXiv:2110.10809, Sec. 5; hsd3-spec sections 5 and 9, ``walker_hsdb``/``walker_sd``) keeps HSD-3's frozen skill,
interface, subgoal policy pi_g and DynE transitions (:mod:`hsd3_learn.agents.hsd3`), but the feature subset is
fixed for a whole episode and chosen outside the RL problem:

- training: each episode's subset is drawn uniformly (the first K draws go through the arms 0..K-1 once, hucc's
  ``_initial_actions_d``); at the end of the episode the bandit gets (the arm used at the last step, the episode's
  return); evaluation plays ``bandit.best_action()``. ``sample_action()`` is never used.
- learning: per-subset SAC on (s, f, c_f) with the stored subset f, one masked temperature alpha_c[f] per subset
  (E1, E5 of :mod:`hsd3_learn.agents.hsd3_math`), no expectation over subsets and no subset temperature:

      y = R + gamma^(k+1) (1 - done) (min Qbar(s', f, c') - alpha_c[f] log pi_g(c'|s', f)),   c' ~ pi_g(.|s', f)
      L_pi = mean_B (alpha_c[f] log pi_g(c|s, f) - min Q(s, f, c)),   c ~ pi_g(.|s, f)

  The critic (``qd_d2rl_d_256``) reads the flattened Dict action: one-hot(f) and the masked subgoal.

**SD** is the same agent with one subset of all features (:func:`sd_subsets`, walker ``"0+1+2+3+4+5+6"``) and the
uniform bandit: ``{"bandit": "uniform", "bandit_kwargs": None, "subsets": sd_subsets("walker"), ...}``. With
``subsets`` left at None the subsets come from the low level (``goal_space``, as HSD-3).

Differences from hucc's ``HSDBAgent`` (``hucc/agents/hsdb.py``), besides those of :mod:`hsd3_learn.agents.hsd3`:

1. The first K training episodes take the arms in order 0..K-1 (hucc: the same idea); every later one is uniform.
2. The episode return is ``info["reward_acc"]`` when the step's info has it (from ``info["final_info"]`` in
   same-step auto-reset; the ``reward_acc`` wrapper adds it), else the reward sum the agent tracks per env: both
   are the same.
3. The bandit's state is part of agent checkpoints (numpy arrays stored as tensors, for ``weights_only`` loading).
4. ``HSD3Config``'s pi_f and alpha_d fields (``pi_task``, ``lr_pi_task``, ``init_alpha_d``, ``lr_alpha_d``,
   ``target_entropy_factor_d``) are inherited but unused: one config class, one set of validations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from hsd3_learn.agents.base import frozen, make_adam, make_config
from hsd3_learn.agents.hsd3 import (HighLevelContext, HSD3Agent, HSD3Config, LowLevelCheckpoint, unprefixed)
from hsd3_learn.agents.hsd3_math import masked_log_prob, subgoal_temperature_loss
from hsd3_learn.agents.sac import actor_loss, critic_loss, critic_target, polyak_update
from hsd3_learn.envs import FEATURE_DIMS, task_map
from hsd3_learn.models.bandits import BANDITS, Bandit, make_bandit
from hsd3_learn.models.blocks import MultiHeadGaussianFromEmbedding
from hsd3_learn.models.factory import TaskConditionedPolicy, make_model

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["BanditState", "HSDBAgent", "HSDBConfig", "bandit_critic_loss", "bandit_policy_loss",
           "bandit_temperature_loss", "sample_subgoals", "sd_subsets"]


def sd_subsets(robot: str) -> list[str]:
    """SD's single subset: every goal-space feature of ``robot`` in one group (walker: ``["0+1+2+3+4+5+6"]``)."""
    if robot not in FEATURE_DIMS:
        raise ValueError(f"no goal space for robot {robot!r}; valid robots: {', '.join(FEATURE_DIMS)}")
    return ["+".join(str(f) for f in sorted(task_map(FEATURE_DIMS[robot])))]


# ---------------------------------------------------------------------------------------- losses (pure functions)


def sample_subgoals(pi_subgoal: nn.Module, obs: Mapping[str, Tensor], task: Tensor,
                    masks: Tensor) -> tuple[Tensor, Tensor]:
    """Reparameterised subgoals [B, G] of each row's subset task [B] (zero outside it) and their (E1) log-probs [B].

    masks: [K, G]; pi_subgoal picks its head by ``task``.
    """
    dist = pi_subgoal({**obs, "task": task})
    raw = dist.rsample()
    mask = masks[task]
    return raw * mask, masked_log_prob(dist.log_prob(raw), mask)


def bandit_critic_loss(batch: Mapping[str, Tensor], model: nn.ModuleDict, target_q: nn.Module, masks: Tensor,
                       alpha_c: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Squared TD error of both critics against the soft target of the stored subset (module docstring).

    ``batch`` as :func:`hsd3_learn.agents.hsd3.high_level_critic_loss` (DynE rows, ``discount`` = gamma^(k+1) or 0);
    the next subgoal comes from ``model.pi_subgoal`` with the same subset, which is fixed for the episode.
    alpha_c [K] is a constant. Info as :func:`hsd3_learn.agents.sac.critic_loss`.
    """
    obs, next_obs, task = unprefixed(batch, "obs/"), unprefixed(batch, "next_obs/"), batch["task"]
    with torch.no_grad():
        next_subgoal, next_log_prob = sample_subgoals(model.pi_subgoal, next_obs, task, masks)
        next_q = target_q(next_obs, {"task": task, "subgoal": next_subgoal}).min(dim=-1).values
        target = critic_target(batch["reward"], batch["discount"], 1.0, next_q, next_log_prob, alpha_c[task])
    q = model.q(obs, {"task": task, "subgoal": batch["subgoal"]})
    return critic_loss(q, target)


def bandit_policy_loss(obs: Mapping[str, Tensor], task: Tensor, pi_subgoal: nn.Module, q: nn.Module, masks: Tensor,
                       alpha_c: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """SAC's actor loss of pi_g for the stored subsets task [B]: mean_B (alpha_c[f] log pi_g - min Q).

    Call it with ``q`` frozen. Info (detached): ``q`` (mean min Q), ``entropy`` (per active dim) and ``log_prob``
    [B], the (E1) log-probs that the temperature loss needs.
    """
    subgoal, log_prob = sample_subgoals(pi_subgoal, obs, task, masks)
    q_min = q(obs, {"task": task, "subgoal": subgoal}).min(dim=-1).values
    loss, info = actor_loss(q_min, log_prob, alpha_c.detach()[task])
    return loss, {**info, "q": q_min.detach().mean(), "log_prob": log_prob.detach()}


def bandit_temperature_loss(log_alpha_c: Tensor, log_prob: Tensor, task: Tensor,
                            target_entropy_factor: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """(E5) with pi_f replaced by the stored subset: each alpha_c[f] [K] moves only with the rows of subset f.

    log_prob [B] (E1 log-probs), task [B]. Info as :func:`hsd3_learn.agents.hsd3_math.subgoal_temperature_loss`.
    """
    n_subsets = log_alpha_c.shape[0]
    weights = nn.functional.one_hot(task, n_subsets).to(log_prob.dtype)
    return subgoal_temperature_loss(log_alpha_c, log_prob[:, None].expand(-1, n_subsets), weights,
                                    target_entropy_factor)


# -------------------------------------------------------------------------------------------------------- config


def _walker_hsdb_bandit_kwargs() -> dict[str, Any]:
    return {"beta": "auto", "window": 500, "eps": 0.5}


@dataclass
class HSDBConfig(HSD3Config):
    """HSD-Bandit hyperparameters; the defaults are ``walker_hsdb`` (hsd3-spec section 9). SD: see the module."""

    warmup_samples: int = 31_000  # transitions in the buffer before the first update
    randexp_samples: int = 31_000  # env steps with uniformly random subgoals at the start
    q: str | dict[str, Any] = "qd_d2rl_d_256"  # double critic on flatten(obs, one-hot subset, subgoal), [B, 2]
    lr_q: float = 3e-4  # Adam learning rate of the critics
    bandit: str = "agent57"  # a name of hsd3_learn.models.bandits.BANDITS
    bandit_kwargs: dict[str, Any] | None = field(default_factory=_walker_hsdb_bandit_kwargs)  # its arguments; None: none
    subsets: list[str] | None = None  # the arms' subset names; None: from the low level (goal_space)

    def __post_init__(self) -> None:
        """HSD3Config's checks, then the bandit and the subset names."""
        super().__post_init__()
        if self.bandit not in BANDITS:
            raise ValueError(f"HSDBConfig.bandit {self.bandit!r} is unknown; valid bandits: {', '.join(BANDITS)}")
        self.bandit_kwargs = dict(self.bandit_kwargs or {})  # None: the bandit's defaults (configs merge dicts)
        try:
            make_bandit(self.bandit, 1, **self.bandit_kwargs)
        except TypeError as err:
            raise ValueError(f"HSDBConfig.bandit_kwargs {self.bandit_kwargs} do not fit bandit {self.bandit!r} ({err});"
                             " the uniform bandit takes none: bandit_kwargs: null") from None
        if self.subsets is not None:
            if isinstance(self.subsets, str) or not self.subsets or not all(isinstance(s, str) for s in self.subsets):
                raise ValueError(f"HSDBConfig.subsets must be None or a non-empty list of names such as '0,3+4'; "
                                 f"got {self.subsets!r}")
            self.subsets = list(self.subsets)


class BanditState:
    """A bandit's ``state_dict`` with numpy arrays as tensors, so agent checkpoints load with ``weights_only``."""

    def __init__(self, bandit: Bandit) -> None:
        self.bandit = bandit

    def state_dict(self) -> dict[str, Any]:
        """The bandit's statistics (arrays as tensors) and generator state."""
        return {k: torch.from_numpy(v.copy()) if isinstance(v, np.ndarray) else v
                for k, v in self.bandit.state_dict().items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the bandit exactly where it was saved."""
        self.bandit.load_state_dict({k: v.numpy() if isinstance(v, Tensor) else v for k, v in state.items()})


# --------------------------------------------------------------------------------------------------------- agent


class HSDBAgent(HSD3Agent):
    """HSD-Bandit (or SD) over a frozen skill, for N envs stepped together; see the module docstring."""

    def __init__(self, obs_space: gym.Space, action_space: gym.Space, num_envs: int = 1,
                 cfg: HSDBConfig | Mapping[str, Any] | None = None, writer: SummaryWriter | None = None) -> None:
        """Arguments as :class:`HSD3Agent`, with an :class:`HSDBConfig` (or a mapping of its fields)."""
        super().__init__(obs_space, action_space, num_envs, make_config(HSDBConfig, cfg), writer)
        self.bandit = make_bandit(self.cfg.bandit, self.iface.n_subsets, **self.cfg.bandit_kwargs)
        self.bandit_state = BanditState(self.bandit)
        self.episode_return = torch.zeros(num_envs, device=self.device)  # [N] reward so far in each episode
        self.n_subset_draws = 0  # training episodes started (the first K cycle through the arms)
        self.set_checkpoint_attr("bandit_state", "episode_return", "n_subset_draws")

    def _choose_subsets(self, low: LowLevelCheckpoint) -> list[str]:
        """``cfg.subsets`` when given (SD), else the low level's selection as in HSD-3."""
        return list(self.cfg.subsets) if self.cfg.subsets is not None else super()._choose_subsets(low)

    def _build_model(self) -> nn.ModuleDict:
        """pi_subgoal (one head per subset) and q on the high-level observation and the Dict action."""
        obs_hi, action = self.iface.observation_space_hi, self.iface.action_space
        model = make_model({"pi_subgoal": self.cfg.pi_subgoal, "q": self.cfg.q},
                           {"pi_subgoal": spaces.Dict({**obs_hi.spaces, "task": action["task"]}), "q": obs_hi},
                           {"pi_subgoal": action["subgoal"], "q": action}).to(self.device)
        if not (isinstance(model.pi_subgoal, TaskConditionedPolicy) and
                isinstance(model.pi_subgoal.head, MultiHeadGaussianFromEmbedding)):
            raise ValueError(f"HSDBAgent: pi_subgoal must be a multi-head policy (pi_d2rl_mt_d_*); got "
                             f"{self.cfg.pi_subgoal!r}")
        return model

    def _make_temperatures_and_optimizers(self) -> None:
        """alpha_c [K] and Adam for pi_g, q and alpha_c (no pi_f, no alpha_d)."""
        self.log_alpha_c = torch.full((self.iface.n_subsets,), math.log(self.cfg.init_alpha_c),
                                      device=self.device, requires_grad=True)
        self.optim = {"pi_subgoal": make_adam(self.model.pi_subgoal.parameters(), self.cfg.lr_pi_subgoal, self.device),
                      "q": make_adam(self.model.q.parameters(), self.cfg.lr_q, self.device),
                      "alpha_c": make_adam([self.log_alpha_c], self.cfg.lr_alpha_c, self.device)}
        self.set_checkpoint_attr("log_alpha_c")

    # ---------------------------------------------------------------- acting

    def _decide(self, obs: dict[str, Tensor], features: Tensor, explore: bool) -> HighLevelContext:
        """New subgoals for all N envs under each episode's subset: uniform during ``randexp_samples`` when
        exploring, else pi_g's sample (exploring) or ``tanh(mean)`` (greedy)."""
        task = self._episode_subsets(obs, explore)
        n_envs = features.shape[0]
        if explore and self.n_samples < self.cfg.randexp_samples:
            subgoal = 2 * torch.rand(n_envs, self.iface.masks.shape[1], device=self.device) - 1
        else:
            obs_hi = self.iface.observation_hi(obs, torch.zeros(n_envs, device=self.device))
            dist = self.model.pi_subgoal({**obs_hi, "task": task})
            subgoal = dist.sample() if explore else dist.mean
        subgoal = subgoal * self.iface.masks[task]
        goal = self.iface.translate(features, task, subgoal)
        since = torch.zeros(n_envs, dtype=torch.long, device=self.device)
        return HighLevelContext(task, subgoal, goal.desired_goal, goal.task, features, since)

    def _episode_subsets(self, obs: dict[str, Tensor], explore: bool) -> Tensor:
        """[N] each env's subset: new ones for envs at an episode start (time 0), the episode's one elsewhere."""
        previous = self.contexts.streams.get("explore" if explore else "greedy")
        n_envs = obs["time"].shape[0]
        starting = obs["time"][:, 0] == 0
        if previous is None or previous.task.shape[0] != n_envs:
            task, starting = torch.zeros(n_envs, dtype=torch.long, device=self.device), torch.ones_like(starting)
        else:
            task = previous.task.clone()
        n_new = int(starting.sum())
        if n_new:
            task[starting] = self._training_subsets(n_new) if explore else self.bandit.best_action()
        return task

    def _training_subsets(self, n_new: int) -> Tensor:
        """[n_new] subsets of new training episodes: arm i for the i-th episode while i < K, then uniform."""
        n_subsets = self.iface.n_subsets
        order = torch.arange(self.n_subset_draws, self.n_subset_draws + n_new, device=self.device)
        self.n_subset_draws += n_new
        return torch.where(order < n_subsets, order, torch.randint(n_subsets, (n_new,), device=self.device))

    # ---------------------------------------------------------------- learning

    def observe(self, obs: Mapping[str, Tensor], action: Tensor, reward: Tensor, terminated: Tensor,
                truncated: Tensor, next_obs: Mapping[str, Tensor],
                info: Mapping[str, Any] | None = None) -> dict[str, float]:
        """As :meth:`HSD3Agent.observe`, then one bandit update per finished episode: (the subset at its last step,
        its return). ``info`` (optional) is the vector env's step info; its ``reward_acc`` is the return if there."""
        metrics = super().observe(obs, action, reward, terminated, truncated, next_obs)
        self.episode_return += reward.to(self.device, torch.float32)
        done = (terminated | truncated).to(self.device)
        if done.any():
            returns = self._episode_returns(info)
            tasks = self.last_context.task
            for env in done.nonzero().view(-1).tolist():
                self.bandit.update(int(tasks[env]), float(returns[env]))
            self.episode_return[done] = 0.0
        return metrics

    def _episode_returns(self, info: Mapping[str, Any] | None) -> Tensor:
        """[N] ``reward_acc`` of the step's last-step info when given (same-step auto-reset: ``final_info``), else
        the tracked returns."""
        final = (info or {}).get("final_info", info or {})
        if "reward_acc" not in final:
            return self.episode_return
        return torch.as_tensor(np.asarray(final["reward_acc"], dtype=np.float32), device=self.device)

    def update(self) -> dict[str, Tensor]:
        """One critic, one pi_g and one alpha_c step on a fresh batch, then the polyak average."""
        batch = self.buffer.get_batch(self.cfg.batch_size)
        alpha_c, masks, task = self.log_alpha_c.detach().exp(), self.iface.masks, batch["task"]
        loss_q, info_q = bandit_critic_loss(batch, self.model, self.target_q, masks, alpha_c)
        norm_q = self._step(("q",), loss_q)["q"]
        obs = unprefixed(batch, "obs/")
        obs = {**obs, "time": torch.zeros_like(obs["time"])}  # the policy acts at decisions (time 0)
        with frozen(self.model.q):
            loss_pi, info_pi = bandit_policy_loss(obs, task, self.model.pi_subgoal, self.model.q, masks, alpha_c)
            norm_pi = self._step(("pi_subgoal",), loss_pi)["pi_subgoal"]
        loss_c, info_c = bandit_temperature_loss(self.log_alpha_c, info_pi["log_prob"], task,
                                                 self.cfg.target_entropy_factor_c)
        self._temperature_step("alpha_c", loss_c)
        polyak_update(self.target_q, self.model.q, self.cfg.polyak)
        self.n_updates += 1
        return {"train/loss_q": loss_q.detach(), "train/loss_pi": loss_pi.detach(),
                "train/loss_alpha_c": loss_c.detach(), "health/grad_norm_q": norm_q,
                "health/grad_norm_pi_subgoal": norm_pi, "health/q_pi": info_pi["q"],
                "health/subgoal_entropy": info_pi["entropy"], "health/alpha_c": info_c["alpha_c"],
                **{f"health/{name}": value for name, value in info_q.items()}}
