"""SAC-MT: the goal-conditioned multi-task SAC that pre-trains HSD-3's low-level skill policy.

The agent learns on :class:`~hsd3_learn.envs.pretraining.PretrainingEnv`, whose observation is a ``Dict``:
``observation`` (proprioception), ``desired_goal`` (goal minus current features over the task map), ``task`` (the
multi-hot mask of the goal's feature subset) and ``gs_observation`` (raw goal-space features, kept in the replay
buffer for controllability estimates but never a network input). Every network reads ``desired_goal, observation,
task`` flattened in the ``Dict``'s key order, so one policy pi(a | s, g, task) covers all feature subsets.

It is SAC (Haarnoja et al. 2018, arXiv:1812.05905; see :mod:`hsd3_learn.agents.sac`, whose pure losses it reuses)
with the changes of HSD-3 (Gehring et al. 2021, arXiv:2110.10809; hsd3-spec sections 3 and 9):

- soft Q target (SAC Eqs. 3, 5): ``y = r + gamma * not_done * (min_i Qbar_i(s', a') - alpha * log pi(a'|s'))``
  with ``gamma = 1 - 1/72`` (one goal's horizon) and ``not_done = 1 - terminated``: only falls end the bootstrap.
  Soft resets (a goal reached or timed out, ``info["SoftReset"]``) and the truncation after 100 goals do not;
- critic, policy and temperature losses: SAC Eqs. 5, 7 and 18, alpha optionally one per task (``per_task_alpha``);
- reachability R(s, g, a), the probability of reaching the goal before it ends (a hit ends the goal), by
  undiscounted TD with MSE: ``target = reached_goal + (1 - last_step_of_task) * Rbar(s', a')``, ``a' ~ pi(.|s')``;
  clamped to [0, 1] it is what the pre-training curriculum reads as controllability;
- target networks for Q and R, ``Rbar/Qbar <- polyak * Rbar/Qbar + (1 - polyak) * R/Q`` after every update;
- a ``start_state`` flag per stored transition (``info["time"] == 0``: the first state of a goal), so that
  controllability can later be estimated from states where goals start.

**Soft resets.** When a goal ends inside an episode, ``PretrainingEnv.step`` starts the next goal before it
returns, so ``next_obs`` is the first observation of the *new* goal: the same robot state with a new
``desired_goal`` and ``task``. The transition is stored exactly as returned, as hucc did. The Q target therefore
bootstraps into the new goal (reaching a goal is worth its potential reward plus the discounted value of pursuing a
fresh random goal from there), while the reachability target stops at ``last_step_of_task`` and never mixes goals.

Differences from hucc's ``SACMTAgent`` (``hucc/agents/sacmt.py``):

1. The hard reset after 100 goals is a gymnasium truncation and bootstraps like a soft reset (hucc's env returned
   ``done`` without ``EpisodeContinues``, which made it terminal although the robot had not fallen).
2. Step flags come from gymnasium's vector ``info`` (arrays, with ``final_info`` for envs that ended in
   ``same_step`` autoreset) instead of a list of per-env dicts; ``observe`` requires them.
3. Per-task temperatures live in one tensor indexed by the task mask read as a binary number (hucc: a dict keyed
   by a hash of the mask, one optimizer each, created on first sight), so the checkpoint knows its size up front.
   One Adam drives them all: a task absent from a batch still moves by Adam's momentum, and bias correction counts
   all steps (hucc stepped each task's optimizer only when the task was in the batch; with 31 tasks and batch 256
   a task misses a batch with probability ~2e-4).
4. Target copies exist only for the critic and the reachability net (hucc also copied the policy, never read it).
5. No distributed actor/learner split, no task-keyed TD-error, sample-count or priority bookkeeping, no
   histograms: one process, and the metrics of :mod:`hsd3_learn.agents.sac` plus the reachability ones.
6. With ``update_reachability`` false no reachability network is built (hucc built one whenever the model config
   named it, and left it untrained).
7. As in :mod:`hsd3_learn.agents.sac`: affine action bounds, uniform exploration from torch's generator,
   ``n_updates`` counts gradient steps, ``observe`` returns the metrics averaged over its updates.
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
from hsd3_learn.agents.sac import (actor_loss, critic_loss, critic_target, polyak_update,
                                   temperature_loss)
from hsd3_learn.models.factory import make_model
from hsd3_learn.replaybuffer import ReplayBuffer
from hsd3_learn.utils import resolve_device

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["SACMTAgent", "SACMTConfig", "per_task_temperature_loss", "reachability_loss", "reachability_target",
           "step_flags", "task_ids"]

#: the observation key that is stored for replay but never fed to a network
GS_OBSERVATION = "gs_observation"
#: the per-env ``info`` entries SAC-MT needs from every step
STEP_INFO_KEYS = ("reached_goal", "last_step_of_task", "time")
#: per-task temperatures are indexed by the task mask as a binary number, so masks longer than this are refused
MAX_TASK_BITS = 16


@dataclass
class SACMTConfig:
    """Hyperparameters of SAC-MT; the defaults are ``walker_pretrain`` (HSD-3 spec section 9)."""

    gamma: float = 1.0 - 1.0 / 72  # discount per env step: one goal's horizon of 72 steps
    polyak: float = 0.995  # weight of the old target in the target-network average
    batch_size: int = 256  # transitions per gradient step
    rpbuf_size: int = 3_000_000  # replay capacity in transitions (a multiple of the number of envs)
    samples_per_update: int = 1000  # env steps (summed over envs) between two rounds of updates
    num_updates: int = 50  # gradient steps per round
    warmup_samples: int = 10_000  # transitions in the buffer before the first update
    randexp_samples: int = 10_000  # env steps with uniformly random actions at the start of training
    init_alpha: float = 0.1  # initial entropy temperature (of every task with per_task_alpha)
    target_entropy: float | None = None  # entropy target in nats; None means -|A| (minus the action dimension)
    per_task_alpha: bool = False  # one temperature per task mask instead of one shared (off in both pretrain configs)
    update_reachability: bool = True  # build and train the reachability network
    lr_pi: float = 1e-4  # Adam learning rate of the policy
    lr_q: float = 1e-4  # Adam learning rate of the critics
    lr_reachability: float = 1e-4  # Adam learning rate of the reachability network
    lr_alpha: float = 1e-4  # Adam learning rate of log(alpha)
    clip_grad_norm: float = 0.0  # clip each network's gradient to this L2 norm; 0 disables clipping
    device: str = "auto"  # where networks and the buffer live: "auto" (CUDA if present), "cpu", "cuda:N"
    pi: str | dict[str, Any] = "pi_d2rl_d_1024"  # policy on Dict obs: a shorthand or {name: shorthand, **options}
    q: str | dict[str, Any] = "qd_d2rl_d_1024"  # fused double critic on Dict obs, [B, 2]
    reachability: str | dict[str, Any] = "q_d2rl_d_1024"  # single critic on Dict obs, [B]; used if update_reachability

    def __post_init__(self) -> None:
        """Reject values that would fail later or silently do nothing."""
        for name in ("gamma", "polyak"):
            _check(0.0 <= getattr(self, name) <= 1.0, name, "must lie in [0, 1]", getattr(self, name))
        for name in ("batch_size", "rpbuf_size", "samples_per_update", "num_updates"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool) and value >= 1, name,
                   "must be a positive int", value)
        for name in ("warmup_samples", "randexp_samples"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool) and value >= 0, name,
                   "must be a non-negative int", value)
        for name in ("init_alpha", "lr_pi", "lr_q", "lr_reachability", "lr_alpha"):
            _check(getattr(self, name) > 0, name, "must be positive", getattr(self, name))
        _check(self.clip_grad_norm >= 0, "clip_grad_norm", "must be >= 0 (0 disables it)", self.clip_grad_norm)
        for name in ("per_task_alpha", "update_reachability"):
            _check(isinstance(getattr(self, name), bool), name, "must be a bool", getattr(self, name))


def _check(ok: bool, name: str, rule: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"SACMTConfig.{name} {rule}; got {value!r}")


# --------------------------------------------------------------------------------------------------------------
# Pure functions: reachability, per-task temperatures, step flags


def reachability_target(reached_goal: Tensor, last_step_of_task: Tensor, next_reachability: Tensor) -> Tensor:
    """Undiscounted TD target ``reached_goal + (1 - last_step_of_task) * next_reachability``: [B].

    reached_goal (1 where this step reached the goal), last_step_of_task (1 where the goal ended: reached, timed
    out or fallen) and next_reachability (``Rbar(s', a')`` of the target network, ``a' ~ pi(.|s')``) are all [B].
    The target counts goal hits until the goal ends, so it never bootstraps across a soft reset.
    """
    for name, value in (("last_step_of_task", last_step_of_task), ("next_reachability", next_reachability)):
        if reached_goal.ndim != 1 or value.shape != reached_goal.shape:
            raise ValueError(f"reachability_target: reached_goal and {name} must both be [B]; got "
                             f"{tuple(reached_goal.shape)} and {tuple(value.shape)}")
    propagate = 1.0 - last_step_of_task.to(next_reachability.dtype)
    return reached_goal.to(next_reachability.dtype) + propagate * next_reachability


def reachability_loss(reachability: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Mean squared TD error ``mean_B (R(s, a) - target)^2``.

    reachability: [B], the network's estimate at the stored action; target: [B] from :func:`reachability_target`.
    Info (detached): ``reachability_mean`` and ``reachability_target_mean``.
    """
    if reachability.ndim != 1 or target.shape != reachability.shape:
        raise ValueError(f"reachability_loss: reachability and target must both be [B]; got "
                         f"{tuple(reachability.shape)} and {tuple(target.shape)}")
    loss = (reachability - target).pow(2).mean()
    info = {"reachability_mean": reachability.detach().mean(), "reachability_target_mean": target.detach().mean()}
    return loss, info


def task_ids(task: Tensor) -> Tensor:
    """Task masks [B, T] (multi-hot, 0/1) -> one integer per row [B]: the mask read as a binary number.

    Entry j of the mask contributes ``2**j``, so every distinct mask gets its own index in ``[0, 2**T)``; this is
    how per-task temperatures are looked up.
    """
    if task.ndim != 2 or task.shape[1] > MAX_TASK_BITS:
        raise ValueError(f"task_ids: task must be [B, T] with T <= {MAX_TASK_BITS}; got {tuple(task.shape)}")
    powers = 2 ** torch.arange(task.shape[1], device=task.device)
    return ((task > 0.5).long() * powers).sum(dim=1)


def per_task_temperature_loss(log_alpha: Tensor, task_id: Tensor, log_prob: Tensor,
                              target_entropy: float) -> tuple[Tensor, dict[str, Tensor]]:
    """SAC's temperature loss for every task in the batch, summed over tasks.

    log_alpha: [K], one log-temperature per task; task_id: [B] indices into it; log_prob: [B], ``log pi(a~|s)``
    summed over action dims. Task k's term is ``temperature_loss(log_alpha[k], log_prob[task_id == k])``, so its
    alpha follows the entropy of its own samples only. With K = 1 and all ids 0 this is plain SAC. Info
    (detached): ``alpha``, the mean temperature over the tasks present.
    """
    if log_alpha.ndim != 1 or task_id.ndim != 1 or log_prob.shape != task_id.shape:
        raise ValueError(f"per_task_temperature_loss: log_alpha must be [K], task_id and log_prob [B]; got "
                         f"{tuple(log_alpha.shape)}, {tuple(task_id.shape)} and {tuple(log_prob.shape)}")
    losses, alphas = [], []
    for task in task_id.unique().tolist():
        loss, info = temperature_loss(log_alpha[task], log_prob[task_id == task], target_entropy)
        losses.append(loss)
        alphas.append(info["alpha"])
    return torch.stack(losses).sum(), {"alpha": torch.stack(alphas).mean()}


def step_flags(info: Mapping[str, Any], n_envs: int) -> dict[str, np.ndarray]:
    """The per-env flags of one vector-env step: ``reached_goal``, ``last_step_of_task``, ``start_state``: [N] bools.

    ``info`` is a gymnasium vector-env info dict. With ``same_step`` autoreset an env that ended has its step info
    under ``info["final_info"]`` (``info["_final_info"]`` marks those envs) and its reset info in ``info``, so the
    values are taken from the former for ended envs. ``start_state`` is ``time == 0``: the step left a goal's
    first state.
    """
    ended = np.asarray(info.get("_final_info", np.zeros(n_envs, bool)), dtype=bool)
    final = info.get("final_info", {})
    values = {}
    for key in STEP_INFO_KEYS:
        if key not in info and key not in final:
            raise ValueError(f"step_flags: info lacks {key!r}; SAC-MT needs {', '.join(STEP_INFO_KEYS)} "
                             "(PretrainingEnv provides them)")
        current = np.asarray(info[key]) if key in info else np.asarray(final[key])
        if key in final:
            current = np.where(ended, np.asarray(final[key]), current)
        if current.shape != (n_envs,):
            raise ValueError(f"step_flags: info[{key!r}] must have one entry per env ({n_envs}); got {current.shape}")
        values[key] = current
    return {"reached_goal": values["reached_goal"].astype(bool),
            "last_step_of_task": values["last_step_of_task"].astype(bool),
            "start_state": values["time"] == 0}


# --------------------------------------------------------------------------------------------------------------
# The agent


class SACMTAgent(Agent):
    """Goal-conditioned multi-task SAC with a reachability network for N envs; see the module docstring."""

    def __init__(self, obs_space: gym.Space, action_space: gym.Space, num_envs: int = 1,
                 cfg: SACMTConfig | Mapping[str, Any] | None = None, writer: SummaryWriter | None = None) -> None:
        """Networks for one env's Dict ``obs_space`` (all keys but ``gs_observation``) and 1-D Box
        ``action_space``; the replay buffer interleaves ``num_envs`` envs; ``cfg`` is a :class:`SACMTConfig` or a
        mapping of its fields."""
        self.cfg = make_config(SACMTConfig, cfg)
        super().__init__(resolve_device(self.cfg.device), writer)
        if not isinstance(num_envs, int) or isinstance(num_envs, bool) or num_envs < 1:
            raise ValueError(f"SACMTAgent: num_envs must be a positive int; got {num_envs!r}")
        self.net_obs_space = self._network_obs_space(obs_space)
        self.obs_space = obs_space
        self.action_space = action_space
        self.num_envs = num_envs
        self._action_center, self._action_scale = action_bounds(action_space, self.device, "SACMTAgent")
        n_actions = int(action_space.shape[0])
        models = {"pi": self.cfg.pi, "q": self.cfg.q}
        if self.cfg.update_reachability:
            models["reachability"] = self.cfg.reachability
        self.model = make_model(models, self.net_obs_space, action_space).to(self.device)
        self._check_models(n_actions)
        self.target = nn.ModuleDict({name: copy.deepcopy(self.model[name]) for name in models if name != "pi"})
        self.target.requires_grad_(False)
        n_alphas = 2 ** self.net_obs_space["task"].shape[0] if self.cfg.per_task_alpha else 1
        self.log_alpha = torch.full((n_alphas,), math.log(self.cfg.init_alpha), device=self.device,
                                    requires_grad=True)
        self.target_entropy = -float(n_actions) if self.cfg.target_entropy is None else self.cfg.target_entropy
        lrs = {"pi": self.cfg.lr_pi, "q": self.cfg.lr_q, "reachability": self.cfg.lr_reachability}
        self.optim = {name: make_adam(self.model[name].parameters(), lrs[name], self.device) for name in models}
        self.optim["alpha"] = make_adam([self.log_alpha], self.cfg.lr_alpha, self.device)
        self.buffer = ReplayBuffer(self.cfg.rpbuf_size, interleave=num_envs, device=self.device)
        self._samples_since_update = 0
        self.set_checkpoint_attr("model", "target", "optim", "log_alpha", "buffer", "_samples_since_update")

    def _network_obs_space(self, obs_space: gym.Space) -> spaces.Dict:
        """The Dict space the networks read: every key of ``obs_space`` except ``gs_observation``, in order."""
        if not isinstance(obs_space, spaces.Dict):
            raise ValueError(f"SACMTAgent needs a Dict observation space (e.g. PretrainingEnv's); got {obs_space}")
        net_space = spaces.Dict({k: v for k, v in obs_space.spaces.items() if k != GS_OBSERVATION})
        task = net_space.spaces.get("task")
        if not (isinstance(task, spaces.Box) and len(task.shape) == 1):
            raise ValueError(f"SACMTAgent needs a 'task' mask Box(T,) in the observation; got {task}")
        if self.cfg.per_task_alpha and task.shape[0] > MAX_TASK_BITS:
            raise ValueError(f"SACMTAgent: per_task_alpha needs a task mask of at most {MAX_TASK_BITS} entries; "
                             f"got {task.shape[0]}")
        return net_space

    def _check_models(self, n_actions: int) -> None:
        """pi must give a reparameterisable distribution, q [B, 2], reachability [B]."""
        with torch.no_grad():
            obs = {k: torch.zeros(1, *space.shape, device=self.device) for k, space in self.net_obs_space.items()}
            action = torch.zeros(1, n_actions, device=self.device)
            dist = self.model.pi(obs)
            shapes = {name: tuple(self.model[name](obs, action).shape) for name in self.model if name != "pi"}
        if not getattr(dist, "has_rsample", False):
            raise ValueError(f"SACMTAgent: pi must return a distribution with rsample(); got {type(dist).__name__}")
        if shapes["q"] != (1, 2):
            raise ValueError(f"SACMTAgent: q must be a fused double critic returning [B, 2] (e.g. qd_d2rl_d_1024); "
                             f"got shape {shapes['q']} for B=1")
        if shapes.get("reachability", (1,)) != (1,):
            raise ValueError(f"SACMTAgent: reachability must be a single critic returning [B] (e.g. q_d2rl_d_1024); "
                             f"got shape {shapes['reachability']} for B=1")


    @property
    def alpha(self) -> Tensor:
        """The current temperatures ``exp(log_alpha)`` as constants: [K] (K = 1, or 2**T with per_task_alpha)."""
        return self.log_alpha.detach().exp()

    def alpha_for(self, task: Tensor) -> Tensor:
        """The temperature of each row's task: task masks [B, T] -> [B] (the shared alpha without per_task_alpha)."""
        return self.alpha[self._task_id(task.to(self.device))]

    def _task_id(self, task: Tensor) -> Tensor:
        """Index into ``log_alpha`` of each row: [B]; all 0 without per_task_alpha."""
        if self.cfg.per_task_alpha:
            return task_ids(task)
        return torch.zeros(task.shape[0], dtype=torch.long, device=task.device)

    # ---------------------------------------------------------------- acting

    def network_obs(self, obs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """A batch of Dict observations -> the network inputs: float32 [N, ...] on the agent's device."""
        if not isinstance(obs, Mapping):
            raise TypeError(f"SACMTAgent: observations must be a dict of tensors; got {type(obs).__name__}")
        missing = [k for k in self.net_obs_space.spaces if k not in obs]
        if missing:
            raise ValueError(f"SACMTAgent: observation lacks keys {missing}; expected {list(self.net_obs_space)}")
        return {k: obs[k].to(self.device, torch.float32) for k in self.net_obs_space.spaces}

    def _to_env(self, policy_action: Tensor) -> Tensor:
        """Policy actions in (-1, 1) -> env actions in [low, high]: [N, A]."""
        return self._action_center + self._action_scale * policy_action

    @torch.no_grad()
    def action(self, obs: Mapping[str, Tensor], explore: bool) -> Tensor:
        """Env actions [N, A]: uniform during the first ``randexp_samples`` when exploring, else a policy sample
        when exploring, else the deterministic ``tanh(mean)``."""
        net_obs = self.network_obs(obs)
        n_envs = next(iter(net_obs.values())).shape[0]
        if explore and self.n_samples < self.cfg.randexp_samples:
            uniform = torch.rand(n_envs, self._action_scale.shape[0], device=self.device)
            return self._to_env(2 * uniform - 1)
        dist = self.model.pi(net_obs)
        return self._to_env(dist.sample() if explore else dist.mean)

    # ---------------------------------------------------------------- storing

    def observe(self, obs: Mapping[str, Tensor], action: Tensor, reward: Tensor, terminated: Tensor,
                truncated: Tensor, next_obs: Mapping[str, Tensor],
                info: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Store one vector-env step and run the updates that are due; returns their mean metrics or ``{}``.

        action: [N, A]; reward, terminated, truncated: [N]; info: the vector env's info of this step (see
        :func:`step_flags`). next_obs is stored as the env returned it: after a soft reset that is the new goal's
        first observation, and after an episode end it must be ``info["final_obs"]``. Only ``terminated`` (a fall)
        stops the bootstrap; soft resets and ``truncated`` do not.
        """
        if info is None:
            raise ValueError("SACMTAgent.observe needs the step's info (reached_goal, last_step_of_task, time)")
        self._check_step_shapes(action, reward, terminated, truncated)
        self.buffer.put_row(self._transition(obs, action, reward, terminated, next_obs, info))
        return self.count_and_update(self.num_envs, len(self.buffer), self.cfg.warmup_samples,
                                     self.cfg.samples_per_update, self.cfg.num_updates)

    def _check_step_shapes(self, action: Tensor, reward: Tensor, terminated: Tensor, truncated: Tensor) -> None:
        n_envs, n_actions = self.num_envs, self._action_scale.shape[0]
        if tuple(action.shape) != (n_envs, n_actions):
            raise ValueError(f"observe: action must be [N={n_envs}, A={n_actions}]; got {tuple(action.shape)}")
        for name, value in (("reward", reward), ("terminated", terminated), ("truncated", truncated)):
            if tuple(value.shape) != (n_envs,):
                raise ValueError(f"observe: {name} must be [N={n_envs}]; got {tuple(value.shape)}")

    def _transition(self, obs: Mapping[str, Tensor], action: Tensor, reward: Tensor, terminated: Tensor,
                    next_obs: Mapping[str, Tensor], info: Mapping[str, Any]) -> dict[str, Tensor]:
        """One replay row per env: ``obs_<key>``/``next_obs_<key>`` per network input, ``gs_observation`` (when the
        env has it), action, reward, ``not_done`` and the step flags."""
        row = {f"obs_{k}": v for k, v in self.network_obs(obs).items()}
        row.update({f"next_obs_{k}": v for k, v in self.network_obs(next_obs).items()})
        if GS_OBSERVATION in self.obs_space.spaces:
            row[GS_OBSERVATION] = obs[GS_OBSERVATION].to(self.device, torch.float32)
        row.update(action=action.to(self.device, torch.float32), reward=reward.to(self.device, torch.float32),
                   not_done=~terminated.to(self.device, torch.bool))
        for name, flags in step_flags(info, self.num_envs).items():
            row[name] = torch.as_tensor(flags, dtype=torch.bool, device=self.device)
        return row

    # ---------------------------------------------------------------- learning

    def update(self) -> dict[str, Tensor]:
        """One critic, policy, temperature and reachability step on a fresh batch, then the polyak averages."""
        batch = self.buffer.get_batch(self.cfg.batch_size)
        obs = {k: batch[f"obs_{k}"] for k in self.net_obs_space.spaces}
        next_obs = {k: batch[f"next_obs_{k}"] for k in self.net_obs_space.spaces}
        task_id = self._task_id(obs["task"])
        alpha = self.alpha[task_id]  # [B]
        metrics = self._critic_step(obs, batch["action"], batch["reward"], batch["not_done"], next_obs, alpha)
        log_prob, actor_metrics = self._actor_step(obs, alpha)
        metrics.update(actor_metrics)
        metrics.update(self._temperature_step(task_id, log_prob))
        if "reachability" in self.model:
            metrics.update(self._reachability_step(obs, batch, next_obs))
        for name in self.target:
            polyak_update(self.target[name], self.model[name], self.cfg.polyak)
        self.n_updates += 1
        return metrics

    def _sample_next(self, next_obs: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Env actions a' ~ pi(.|s') [B, A] and their log-probabilities summed over action dims [B]."""
        dist = self.model.pi(next_obs)
        next_action = dist.sample()
        return self._to_env(next_action), dist.log_prob(next_action).sum(dim=-1)

    def _critic_step(self, obs: Mapping[str, Tensor], action: Tensor, reward: Tensor, not_done: Tensor,
                     next_obs: Mapping[str, Tensor], alpha: Tensor) -> dict[str, Tensor]:
        """Regress both critics on the soft target of the target critic; alpha: [B], each row's temperature."""
        with torch.no_grad():
            next_action, next_log_prob = self._sample_next(next_obs)
            next_q_min = self.target.q(next_obs, next_action).min(dim=-1).values
            target = critic_target(reward, not_done, self.cfg.gamma, next_q_min, next_log_prob, alpha)
        loss, info = critic_loss(self.model.q(obs, action), target)
        grad_norm = optimizer_step(self.optim["q"], loss, self.cfg.clip_grad_norm)
        return {"train/loss_q": loss.detach(), "health/grad_norm_q": grad_norm,
                **{f"health/{name}": value for name, value in info.items()}}

    def _actor_step(self, obs: Mapping[str, Tensor], alpha: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Move the policy towards actions the critics like; the critics themselves get no gradient."""
        dist = self.model.pi(obs)
        action = dist.rsample()
        log_prob = dist.log_prob(action).sum(dim=-1)
        with frozen(self.model.q):
            q_min = self.model.q(obs, self._to_env(action)).min(dim=-1).values
            loss, info = actor_loss(q_min, log_prob, alpha)
            grad_norm = optimizer_step(self.optim["pi"], loss, self.cfg.clip_grad_norm)
        metrics = {"train/loss_pi": loss.detach(), "health/grad_norm_pi": grad_norm, "health/entropy": info["entropy"]}
        return log_prob.detach(), metrics

    def _temperature_step(self, task_id: Tensor, log_prob: Tensor) -> dict[str, Tensor]:
        """Adapt each task's alpha (or the shared one) so that its policy entropy approaches ``target_entropy``."""
        loss, info = per_task_temperature_loss(self.log_alpha, task_id, log_prob, self.target_entropy)
        optim = self.optim["alpha"]
        optim.zero_grad()
        loss.backward()
        optim.step()
        return {"train/loss_alpha": loss.detach(), "health/alpha": info["alpha"]}

    def _reachability_step(self, obs: Mapping[str, Tensor], batch: Mapping[str, Tensor],
                           next_obs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Regress R(s, a) on the undiscounted TD target of the target reachability net (fresh a' ~ pi(.|s'))."""
        with torch.no_grad():
            next_action, _ = self._sample_next(next_obs)
            next_reachability = self.target.reachability(next_obs, next_action)
            target = reachability_target(batch["reached_goal"], batch["last_step_of_task"], next_reachability)
        loss, info = reachability_loss(self.model.reachability(obs, batch["action"]), target)
        grad_norm = optimizer_step(self.optim["reachability"], loss, self.cfg.clip_grad_norm)
        return {"train/loss_reachability": loss.detach(), "health/grad_norm_reachability": grad_norm,
                **{f"health/{name}": value for name, value in info.items()}}
