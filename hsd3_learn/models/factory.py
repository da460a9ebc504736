"""The model factory: build HSD-3's networks from one-token names in the config.

A config names a model by a *shorthand* whose parts can be read off:

``{role}_{family}[_{variant}][_d]_{width}``

- role: ``pi`` policy (returns a distribution), ``q`` one Q-function (``[B]``), ``qd`` two fused Q-functions
  (``[B, 2]``), ``phi`` a skill discriminator (DIAYN).
- family: ``d2rl`` (dense-skip MLP, 4 layers), ``relu`` (plain MLP; the width reads ``3x256``), ``bilinear_d2rl``
  (layers bilinear in the task one-hot, for the Switching Ensemble).
- variant: ``mt`` one Gaussian head per ``task`` (HSD-3's pi_g), ``discrete`` a categorical head (pi_f),
  ``flattsg`` the critic reads the action ``{task, subgoal}`` as ``vec(onehot(task) ⊗ subgoal)`` (HSD-3's Q).
- ``_d``: the observation is a ``Dict`` space, flattened in key order; without it a ``Box`` is required.
- width: hidden units per layer.

``make_model`` accepts a shorthand string, a dict ``{name: shorthand, **kwargs}``, or a nested dict of those
(-> ``nn.ModuleDict``, e.g. ``{hi: {pi_task: ..., pi_subgoal: ..., q: ...}, lo: {pi: ...}}``). Observation and
action spaces are either one gymnasium space for the whole tree or plain ``dict``s mirroring the config tree.

Calling conventions of the built models: policies ``pi(obs) -> distribution``; critics ``q(obs, action) ->
[B]`` or ``[B, 2]``.

Differences from hucc: critics take ``(obs, action)`` instead of a pre-concatenated input, so Dict actions (HSD-3's
``{task, subgoal}``) need no special casing by the agents; shorthands are registered once with their parameters
instead of one decorated function per name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import torch
from gymnasium import spaces
from torch import nn

from hsd3_learn.models.blocks import (
    BilinearSkipNetwork,
    CategoricalFromEmbedding,
    EmbedDiscreteSkill,
    ExpandTaskSubgoal,
    FlattenSpace,
    GaussianFromEmbedding,
    MultiHeadGaussianFromEmbedding,
    SkipDoubleQNetwork,
    SkipNetwork,
    SplitTaskInput,
    SqueezeLastDim,
    task_index,
)
from hsd3_learn.spaces import flatdim

__all__ = [
    "BilinearQFunction",
    "QFunction",
    "SHORTHANDS",
    "StackCritics",
    "TaskConditionedPolicy",
    "make_model",
    "register_shorthand",
]

Builder = Callable[..., nn.Module]
SHORTHANDS: dict[str, Builder] = {}


def register_shorthand(name: str, builder: Builder, **preset: Any) -> None:
    """Register ``builder(name, obs_space, action_space, **preset, **options)`` under ``name`` (names are unique).

    ``builder`` receives the shorthand's own name so that its error messages can say which model failed.
    """
    if name in SHORTHANDS:
        raise ValueError(f"model shorthand {name!r} is already registered")

    def build(obs_space: gym.Space, action_space: gym.Space, **options: Any) -> nn.Module:
        return builder(name, obs_space, action_space, **{**preset, **options})

    build.__name__ = name
    build.builder = builder  # type: ignore[attr-defined]  # for option checking in make_model
    build.preset = preset  # type: ignore[attr-defined]
    SHORTHANDS[name] = build


# --------------------------------------------------------------------------------------------------------------
# Assembled models


class QFunction(nn.Module):
    """``q(obs, action)``: encode both, concatenate, run the critic network (``[B]`` or ``[B, n_critics]``)."""

    def __init__(self, obs_encoder: nn.Module, action_encoder: nn.Module, net: nn.Module):
        super().__init__()
        self.obs_encoder = obs_encoder
        self.action_encoder = action_encoder
        self.net = net

    def forward(self, obs: Any, action: Any) -> torch.Tensor:
        return self.net(torch.cat([self.obs_encoder(obs), self.action_encoder(action)], dim=-1))


class TaskConditionedPolicy(nn.Module):
    """``pi(obs)`` where ``obs["task"]`` picks an output head (``mt``) or conditions every layer (bilinear)."""

    def __init__(self, split: SplitTaskInput, flatten: FlattenSpace, trunk: nn.Module, head: nn.Module, n_tasks: int):
        super().__init__()
        self.split = split
        self.flatten = flatten
        self.trunk = trunk
        self.head = head
        self.n_tasks = n_tasks

    def forward(self, obs: Mapping[str, torch.Tensor]) -> Any:
        rest, task = self.split(obs)
        x = self.flatten(rest)
        if isinstance(self.trunk, BilinearSkipNetwork):
            return self.head(self.trunk(x, _one_hot(task, self.n_tasks, x.dtype)))
        return self.head(self.trunk(x), task)


class BilinearQFunction(nn.Module):
    """``q(obs, action)`` with every layer bilinear in the one-hot ``obs["task"]`` -> ``[B]``."""

    def __init__(self, split: SplitTaskInput, flatten: FlattenSpace, trunk: BilinearSkipNetwork, n_tasks: int):
        super().__init__()
        self.split = split
        self.flatten = flatten
        self.trunk = trunk
        self.n_tasks = n_tasks
        n_hid = trunk.layers[-1].weight.shape[0]
        self.out = _small_output_layer(n_hid)
        self.squeeze = SqueezeLastDim()

    def forward(self, obs: Mapping[str, torch.Tensor], action: torch.Tensor) -> torch.Tensor:
        rest, task = self.split(obs)
        x = torch.cat([self.flatten(rest), action], dim=-1)
        return self.squeeze(self.out(self.trunk(x, _one_hot(task, self.n_tasks, x.dtype))))


class StackCritics(nn.Module):
    """Independent critics evaluated on the same input, stacked: ``[B]`` each -> ``[B, n_critics]``."""

    def __init__(self, *critics: nn.Module):
        super().__init__()
        self.critics = nn.ModuleList(critics)

    def forward(self, obs: Any, action: Any) -> torch.Tensor:
        return torch.stack([q(obs, action) for q in self.critics], dim=-1)


def _one_hot(task: torch.Tensor, n_tasks: int, dtype: torch.dtype) -> torch.Tensor:
    return nn.functional.one_hot(task_index(task, n_tasks), n_tasks).to(dtype)


def _small_output_layer(n_in: int) -> nn.Linear:
    """Scalar output layer initialised in U(-0.003, 0.003), as hucc did for single Q-functions."""
    layer = nn.Linear(n_in, 1)
    nn.init.uniform_(layer.weight, -3e-3, 3e-3)
    nn.init.uniform_(layer.bias, -3e-3, 3e-3)
    return layer


# --------------------------------------------------------------------------------------------------------------
# Space checks


def _obs_encoder(name: str, obs_space: gym.Space, dict_obs: bool) -> tuple[FlattenSpace, int]:
    if dict_obs and not isinstance(obs_space, spaces.Dict):
        raise ValueError(f"{name}: the _d variants need a Dict observation space; got {type(obs_space).__name__}")
    if not dict_obs and not isinstance(obs_space, spaces.Box):
        raise ValueError(
            f"{name}: needs a Box observation space; got {type(obs_space).__name__} (use the _d variant for Dict)"
        )
    return FlattenSpace(obs_space), flatdim(obs_space)


def _box_actions(name: str, action_space: gym.Space) -> int:
    if not isinstance(action_space, spaces.Box) or len(action_space.shape) != 1:
        raise ValueError(f"{name}: needs a 1-D Box action space; got {action_space}")
    return int(action_space.shape[0])


def _split_task(name: str, obs_space: gym.Space) -> tuple[SplitTaskInput, FlattenSpace, int, int]:
    """Dict obs with a ``task`` key -> (splitter, flattener of the rest, rest width, number of tasks)."""
    if not isinstance(obs_space, spaces.Dict) or "task" not in obs_space.spaces:
        raise ValueError(f"{name}: needs a Dict observation space with a 'task' key; got {obs_space}")
    task_space = obs_space["task"]
    if isinstance(task_space, spaces.Discrete):
        n_tasks = int(task_space.n)
    elif isinstance(task_space, spaces.Box) and len(task_space.shape) == 1:
        n_tasks = int(task_space.shape[0])
    else:
        raise ValueError(f"{name}: 'task' must be Discrete(K) or a one-hot Box(K,); got {task_space}")
    rest = spaces.Dict({k: v for k, v in obs_space.spaces.items() if k != "task"})
    return SplitTaskInput("task"), FlattenSpace(rest), flatdim(rest), n_tasks


# --------------------------------------------------------------------------------------------------------------
# Builders (one per family; registered below under every shorthand name)


def gaussian_policy(name: str, obs_space: gym.Space, action_space: gym.Space, *, width: int, dict_obs: bool,
                    n_layers: int = 4, log_std_min: float = -5.0, log_std_max: float = 2.0) -> nn.Module:
    """``pi_d2rl[_d]_W``: flatten -> D2RL -> tanh-Gaussian over the Box action."""
    flatten, n_in = _obs_encoder(name, obs_space, dict_obs)
    n_act = _box_actions(name, action_space)
    head = GaussianFromEmbedding(width, n_act, log_std_min, log_std_max)
    return nn.Sequential(flatten, SkipNetwork(n_in, width, n_layers), head)


def multihead_policy(name: str, obs_space: gym.Space, action_space: gym.Space, *, width: int,
                     n_layers: int = 4, log_std_min: float = -5.0, log_std_max: float = 2.0) -> nn.Module:
    """``pi_d2rl_mt_d_W``: the task is removed from the input and picks one of K tanh-Gaussian heads."""
    split, flatten, n_in, n_tasks = _split_task(name, obs_space)
    n_act = _box_actions(name, action_space)
    head = MultiHeadGaussianFromEmbedding(width, n_act, n_tasks, log_std_min, log_std_max)
    return TaskConditionedPolicy(split, flatten, SkipNetwork(n_in, width, n_layers), head, n_tasks)


def discrete_policy(name: str, obs_space: gym.Space, action_space: gym.Space, *, width: int,
                    dict_obs: bool = True, n_layers: int = 4) -> nn.Module:
    """``pi_d2rl_discrete_d_W``: flatten -> D2RL -> categorical over a Discrete action."""
    if not isinstance(action_space, spaces.Discrete):
        raise ValueError(f"{name}: needs a Discrete action space; got {action_space}")
    flatten, n_in = _obs_encoder(name, obs_space, dict_obs)
    head = CategoricalFromEmbedding(width, int(action_space.n))
    return nn.Sequential(flatten, SkipNetwork(n_in, width, n_layers), head)


def _action_encoder(name: str, action_space: gym.Space, task_subgoal: bool) -> tuple[nn.Module, int]:
    if not task_subgoal:
        return FlattenSpace(action_space), flatdim(action_space)
    if not (isinstance(action_space, spaces.Dict) and {"task", "subgoal"} <= set(action_space.spaces)):
        raise ValueError(f"{name}: needs a Dict action space with 'task' and 'subgoal'; got {action_space}")
    task, subgoal = action_space["task"], action_space["subgoal"]
    if not isinstance(task, spaces.Discrete) or not isinstance(subgoal, spaces.Box):
        raise ValueError(f"{name}: 'task' must be Discrete and 'subgoal' a Box; got {action_space}")
    n_tasks, n_subgoal = int(task.n), flatdim(subgoal)
    return ExpandTaskSubgoal(n_tasks, n_subgoal), n_tasks * n_subgoal


def critic(name: str, obs_space: gym.Space, action_space: gym.Space, *, width: int, dict_obs: bool,
           n_critics: int, skip: bool = True, n_layers: int = 4, task_subgoal: bool = False) -> nn.Module:
    """``q_*`` (one critic, ``[B]``) and ``qd_*`` (fused critics, ``[B, n_critics]``)."""
    obs_encoder, n_obs = _obs_encoder(name, obs_space, dict_obs)
    action_encoder, n_act = _action_encoder(name, action_space, task_subgoal)
    n_in = n_obs + n_act
    if n_critics == 1:
        net = nn.Sequential(SkipNetwork(n_in, width, n_layers), _small_output_layer(width), SqueezeLastDim())
    else:
        net = SkipDoubleQNetwork(n_in, width, n_layers, n_critics, skip=skip)
    return QFunction(obs_encoder, action_encoder, net)


def bilinear_policy(name: str, obs_space: gym.Space, action_space: gym.Space, *, width: int,
                    n_layers: int = 4) -> nn.Module:
    """``pi_bilinear_d2rl_d_W``: a tanh-Gaussian policy whose layers are bilinear in the task one-hot."""
    split, flatten, n_in, n_tasks = _split_task(name, obs_space)
    n_act = _box_actions(name, action_space)
    trunk = BilinearSkipNetwork(n_in, n_tasks, width, n_layers)
    return TaskConditionedPolicy(split, flatten, trunk, GaussianFromEmbedding(width, n_act), n_tasks)


def bilinear_critic(name: str, obs_space: gym.Space, action_space: gym.Space, *, width: int,
                    n_layers: int = 4) -> nn.Module:
    """``q_bilinear_d2rl_d_W``: one critic, bilinear in the task one-hot of the observation."""
    split, flatten, n_in, n_tasks = _split_task(name, obs_space)
    n_act = _box_actions(name, action_space)
    return BilinearQFunction(split, flatten, BilinearSkipNetwork(n_in + n_act, n_tasks, width, n_layers), n_tasks)


def double_q(name: str, obs_space: gym.Space, action_space: gym.Space, *, q_name: str,
             n_critics: int = 2) -> nn.Module:
    """``{name: double_q, q_name: ...}``: ``n_critics`` independent copies of a single-critic shorthand."""
    return StackCritics(*[make_model(q_name, obs_space, action_space) for _ in range(n_critics)])


def discriminator(name: str, obs_space: gym.Space, action_space: gym.Space, *, width: int,
                  n_layers: int = 4) -> nn.Module:
    """``phi_diayn_d2rl_W``: features -> categorical over skills (``action_space`` = Discrete(n_skills))."""
    return discrete_policy(name, obs_space, action_space, width=width, dict_obs=isinstance(obs_space, spaces.Dict),
                           n_layers=n_layers)


def continuous_skill_policy(name: str, obs_space: gym.Space, action_space: gym.Space, *, width: int = 256,
                            n_embed: int = 7) -> nn.Module:
    """``pi_diayn_cskill``: embed the one-hot skill as ``tanh(W z)`` (``n_embed`` dims), then ``pi_d2rl_d``."""
    _, _, _, n_skills = _split_task(name, obs_space)
    embedded = spaces.Dict({**obs_space.spaces, "task": spaces.Box(-1.0, 1.0, (n_embed,))})
    policy = gaussian_policy(name, embedded, action_space, width=width, dict_obs=True)
    return nn.Sequential(EmbedDiscreteSkill(n_skills, n_embed, "task"), *policy)


def _register_all() -> None:
    reg = register_shorthand
    for w in (256, 512, 1024):
        reg(f"pi_d2rl_{w}", gaussian_policy, width=w, dict_obs=False)
        reg(f"pi_d2rl_d_{w}", gaussian_policy, width=w, dict_obs=True)
        reg(f"q_d2rl_{w}", critic, width=w, dict_obs=False, n_critics=1)
        reg(f"q_d2rl_d_{w}", critic, width=w, dict_obs=True, n_critics=1)
        reg(f"qd_d2rl_{w}", critic, width=w, dict_obs=False, n_critics=2)
        reg(f"qd_d2rl_d_{w}", critic, width=w, dict_obs=True, n_critics=2)
        reg(f"qd_d2rl_flattsg_d_{w}", critic, width=w, dict_obs=True, n_critics=2, task_subgoal=True)
    for w in (256, 512):
        reg(f"pi_d2rl_mt_d_{w}", multihead_policy, width=w)
        reg(f"pi_d2rl_discrete_d_{w}", discrete_policy, width=w)
    for w in (256, 1024):
        reg(f"phi_diayn_d2rl_{w}", discriminator, width=w)
    reg("qd_relu_d_3x256", critic, width=256, dict_obs=True, n_critics=2, skip=False, n_layers=3)
    reg("pi_bilinear_d2rl_d_256", bilinear_policy, width=256)
    reg("q_bilinear_d2rl_d_256", bilinear_critic, width=256)
    reg("double_q", double_q)
    reg("pi_diayn_cskill", continuous_skill_policy)


_register_all()


# --------------------------------------------------------------------------------------------------------------
# The factory


def _subspace(space: Any, key: str, kind: str) -> Any:
    """The space for child ``key``: a gymnasium space is shared by all children; a plain dict is indexed."""
    if space is None or isinstance(space, gym.Space):
        return space
    if isinstance(space, Mapping):
        if key not in space:
            raise ValueError(f"make_model: no {kind} space for model {key!r}; spaces given for {sorted(space)}")
        return space[key]
    raise TypeError(f"make_model: {kind} space must be a gymnasium space or a dict of them; got {type(space).__name__}")


def _build_shorthand(name: str, obs_space: Any, action_space: Any, kwargs: dict[str, Any]) -> nn.Module:
    if name not in SHORTHANDS:
        raise ValueError(f"unknown model shorthand {name!r}; valid: {', '.join(sorted(SHORTHANDS))}")
    if not isinstance(obs_space, gym.Space) or not isinstance(action_space, gym.Space):
        raise TypeError(f"{name}: needs gymnasium spaces for observation and action; got {obs_space!r}, {action_space!r}")
    build = SHORTHANDS[name]
    params = inspect.signature(build.builder).parameters
    fixed = sorted(set(kwargs) & set(build.preset))
    if fixed:
        raise ValueError(f"{name}: options {fixed} are fixed by the shorthand's name; choose another shorthand")
    accepted = set(params) - {"name", "obs_space", "action_space", *build.preset}
    unknown = set(kwargs) - accepted
    if unknown:
        raise ValueError(f"{name}: unknown options {sorted(unknown)}; valid: {sorted(accepted)}")
    required = [k for k in accepted if params[k].default is inspect.Parameter.empty and k not in kwargs]
    if required:
        raise ValueError(f"{name}: missing required options {sorted(required)}, e.g. {{name: {name}, {required[0]}: ...}}")
    return build(obs_space, action_space, **kwargs)


def make_model(cfg: Any, obs_space: Any, action_space: Any) -> nn.Module:
    """Build a model (or a ``ModuleDict`` tree of models) from a config, see the module docstring.

    Args:
        cfg: a shorthand name, ``{name: shorthand, **options}``, or a nested mapping of those (OmegaConf ok).
        obs_space: a gymnasium space, or a plain ``dict`` of spaces with the same keys as ``cfg``.
        action_space: likewise.
    """
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - hydra-core is a hard dependency
        pass
    if isinstance(cfg, str):
        return _build_shorthand(cfg, obs_space, action_space, {})
    if not isinstance(cfg, Mapping):
        raise TypeError(f"make_model: config must be a shorthand string or a mapping; got {cfg!r}")
    if "name" in cfg:
        options = {k: v for k, v in cfg.items() if k != "name"}
        return _build_shorthand(cfg["name"], obs_space, action_space, options)
    children = {
        key: make_model(sub, _subspace(obs_space, key, "observation"), _subspace(action_space, key, "action"))
        for key, sub in cfg.items()
    }
    return nn.ModuleDict(children)
