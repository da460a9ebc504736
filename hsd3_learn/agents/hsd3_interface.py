"""Between HSD-3's high level and its frozen skill: low-level checkpoints, subset selection and HiToLoInterface.

HSD-3 (Gehring et al., NeurIPS 2021, arXiv:2110.10809, Sec. 4.2; hsd3-spec section 4) drives a goal-reaching policy
pre-trained on feature subsets of the goal space (:mod:`hsd3_learn.envs.pretraining`). The high level acts in a
factorised space, a subset f (one of K) and a normalised subgoal c in [-1, 1]^G; :class:`HiToLoInterface`
translates it into exactly the input the skill saw in pre-training (equation E7 of
:mod:`hsd3_learn.agents.hsd3_math`):

    desired_goal = [backproject(c_f) (+ s for delta features) - s][task map] * mask_f,   twist differences wrapped
    inside the action interval: desired_goal <- (s_prev - s_now + desired_goal) * mask_f  (the target stays put)

and runs the skill deterministically (tanh of its mean) on ``{desired_goal, observation without the world
position, task = mask_f}``. The subgoal is indexed by task-map position (G = T: walker 7, humanoid 10), so one
[K, T] mask is both the subgoal mask and the skill's ``task`` input.

**Low-level checkpoint format** (:func:`save_low_level`, :func:`load_low_level`; hucc: ``checkpoint-lo.pt`` and
``checkpoint-lo_abs.json``). ``<stem>.pt`` is a torch file written atomically and read with ``weights_only=True``::

    {"format": "hsd3_learn.low_level/1", "pi": state_dict of the policy, "robot": "walker",
     "model": "pi_d2rl_d_1024" (the model-factory config that rebuilds the policy),
     "obs_space": {"desired_goal": [T], "observation": [n], "task": [T]}, "action_dim": A}

The policy maps ``{"desired_goal", "observation", "task"}`` (the pre-training env's observation without
``gs_observation``; Dict-flattened in that key order) to a tanh-Gaussian over the A actions. ``<stem>_abs.json``
next to it (written atomically, first) holds ``task_map`` (feature index -> position of the task mask; JSON keys
are strings), ``subsets`` (names such as ``"0,3+4"``) and ``cperf`` (subset -> controllability in [0, 1], or null
when not measured). ``goal_space.subsets: from_lo`` then keeps the subsets with cperf >= 1 - eps and rank (number
of ``,``-groups) in [rank_min, rank_max], sorted by rank then naturally (:func:`select_subsets`).

Differences from hucc's ``HiToLoInterface`` and low-level loading (``hucc/agents/hsd3.py``):

1. The subgoal has T dims, one per task-map position, not max feature index + 1 (humanoid: 10, not 12): the two
   extra humanoid dims were never used by any subset, and the subgoal and task masks become one matrix.
2. Only ``subsets: from_lo``, without ``delta_actions`` or ``mask_gsfeats`` (off in every shipped config).
3. Own checkpoint format (above), loaded strictly: missing or unexpected keys and shape mismatches fail with one
   line (hucc ignored unexpected keys); a missing side file fails with what to do instead of "No goal space
   subsets selected" alone.
4. The interface is built from the env's observation space and the checkpoint; hucc built a dummy pre-training
   env for psi and the observation mask. Here the goal space gives psi, and only the kept observation entries
   are read from a pre-training env (once per robot).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from hsd3_learn.agents.base import UNREADABLE_ERRORS
from hsd3_learn.agents.hsd3_math import (BackprojectionTables, backproject_subgoal, backprojection_tables,
                                         desired_goal, subset_masks, update_bp_subgoal)
from hsd3_learn.envs.goal_spaces import goal_space, parse_subset, subset_mask
from hsd3_learn.envs.pretraining import PretrainingEnv
from hsd3_learn.envs.wrappers import GoalSpaceFeatures, make_env
from hsd3_learn.models.factory import make_model
from hsd3_learn.utils import atomic_save, sorted_nicely_sep

__all__ = ["GOAL_SPACE_KEY", "LOW_LEVEL_FORMAT", "LOW_LEVEL_MODEL", "DeterministicLowLevel", "HiToLoInterface",
           "LowLevelCheckpoint", "LowLevelGoal", "load_low_level", "low_level_observation_space", "make_hsd3_env",
           "save_low_level", "select_subsets", "side_file"]

#: observation key of the raw goal-space features (hucc's ``_goal_space``)
GOAL_SPACE_KEY = "_goal_space"
#: the ``format`` entry of low-level checkpoints
LOW_LEVEL_FORMAT = "hsd3_learn.low_level/1"
#: the low-level policy of every HSD-3 config
LOW_LEVEL_MODEL = "pi_d2rl_d_1024"


# ------------------------------------------------------------------------------------------ low-level checkpoints


@cache
def _pretraining_layout(robot: str) -> tuple[tuple[int, ...], int, int]:
    """(``observation`` entries the low level sees, full ``observation`` size, action size) for ``robot``.

    Read from the pre-training env, which drops the root's world position (the delta features) from the robot's
    ``joints`` features; the task envs keep it, so the interface must drop the same entries.
    """
    env = PretrainingEnv(robot)
    try:
        return tuple(int(i) for i in env.kept_observation_entries), int(env._n_features), int(env.action_space.shape[0])
    finally:
        env.close()


def low_level_observation_space(robot: str, task_map: Mapping[int, int]) -> spaces.Dict:
    """The low level's input: ``desired_goal`` [T], ``observation`` [n] (no world position) and ``task`` [T]."""
    kept, _, _ = _pretraining_layout(robot)
    n_tasks = len(task_map)
    return spaces.Dict({
        "desired_goal": spaces.Box(-np.inf, np.inf, (n_tasks,), np.float32),
        "observation": spaces.Box(-np.inf, np.inf, (len(kept),), np.float32),
        "task": spaces.Box(0.0, 1.0, (n_tasks,), np.float32),
    })


def side_file(path: str | os.PathLike) -> Path:
    """The JSON side file of a low-level checkpoint: ``dir/checkpoint-lo.pt`` -> ``dir/checkpoint-lo_abs.json``."""
    path = Path(path)
    return path.with_name(f"{path.stem}_abs.json")


@dataclass
class LowLevelCheckpoint:
    """A pre-trained goal-reaching policy and what HSD-3 needs to drive it (see the module docstring)."""

    pi: nn.Module  # pi(obs_lo) -> TanhNormal over [B, A]; frozen (no gradients) and in eval mode
    robot: str
    subsets: list[str]  # every subset the skill was trained on, e.g. "0,3+4"
    task_map: dict[int, int]  # goal-space feature -> position in ``desired_goal``/``task``
    cperf: dict[str, float] | None  # subset -> controllability; None when not measured
    model: str | dict[str, Any]  # the model-factory config of ``pi``
    obs_space: spaces.Dict  # what ``pi`` reads: desired_goal [T], observation [n], task [T]


def _checked_task_map(task_map: Mapping[Any, Any]) -> dict[int, int]:
    """Feature -> position with positions exactly 0..T-1 (JSON keys may be strings)."""
    checked = {int(f): int(p) for f, p in task_map.items()}
    if sorted(checked.values()) != list(range(len(checked))) or not checked:
        raise ValueError(f"task_map must map features to the positions 0..T-1 once each; got {dict(task_map)}")
    return checked


def _checked_subsets(subsets: Sequence[str], task_map: Mapping[int, int]) -> list[str]:
    """Subset names, non-empty and unique, each over features of the task map."""
    names = [] if isinstance(subsets, str) else [str(s) for s in subsets]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"subsets must be a non-empty list of distinct names such as '0,3+4'; got {subsets!r}")
    for name in names:
        subset_mask(name, task_map)  # one-line error for unknown features or malformed names
    return names


def _checked_cperf(cperf: Mapping[str, float] | None, subsets: Sequence[str]) -> dict[str, float] | None:
    """Controllability per subset in [0, 1], for every subset (extra entries such as hucc's ``total`` dropped)."""
    if cperf is None:
        return None
    missing = [s for s in subsets if s not in cperf]
    if missing:
        raise ValueError(f"cperf lacks the subsets {missing}; give a controllability for every subset or None")
    scores = {s: float(cperf[s]) for s in subsets}
    if not all(0.0 <= v <= 1.0 for v in scores.values()):
        raise ValueError(f"cperf values must lie in [0, 1]; got {scores}")
    return scores


def _check_low_level_policy(pi: nn.Module, obs_space: spaces.Dict, n_actions: int) -> None:
    """``pi`` must map a batch of low-level observations to a distribution whose mean is [B, A]."""
    device = next(pi.parameters()).device
    obs = {key: torch.zeros(1, *space.shape, device=device) for key, space in obs_space.spaces.items()}
    with torch.no_grad():
        mean = pi(obs).mean
    if tuple(mean.shape) != (1, n_actions):
        raise ValueError(f"the low-level policy must map {dict(obs_space.spaces)} to actions [B, {n_actions}]; "
                         f"its mean has shape {tuple(mean.shape)} for B=1")


def _atomic_write_text(text: str, path: Path) -> None:
    """Write ``text`` to a temp file next to ``path``, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_low_level(path: str | os.PathLike, pi_module: nn.Module, robot: str, subsets: Sequence[str],
                   task_map: Mapping[int, int], cperf: Mapping[str, float] | None = None,
                   model: str | Mapping[str, Any] = LOW_LEVEL_MODEL) -> None:
    """Write a pre-trained low-level policy as ``path`` plus its side file (format in the module docstring).

    ``pi_module`` is the goal-reaching policy (built from the factory config ``model``) of ``robot``; ``subsets``
    the names it was trained on, ``task_map`` feature -> task-mask position, ``cperf`` optional controllability per
    subset. The side file is written first, so a complete checkpoint always has one.
    """
    task_map = _checked_task_map(task_map)
    obs_space = low_level_observation_space(robot, task_map)
    n_actions = _pretraining_layout(robot)[2]
    _check_low_level_policy(pi_module, obs_space, n_actions)
    names = _checked_subsets(subsets, task_map)
    info = {"task_map": {str(f): p for f, p in task_map.items()}, "subsets": names,
            "cperf": _checked_cperf(cperf, names)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(json.dumps(info, indent=1), side_file(path))
    state = {"format": LOW_LEVEL_FORMAT, "pi": {k: v.detach().cpu() for k, v in pi_module.state_dict().items()},
             "robot": robot, "model": model if isinstance(model, str) else dict(model),
             "obs_space": {key: list(space.shape) for key, space in obs_space.spaces.items()}, "action_dim": n_actions}
    atomic_save(state, path)


def _read_low_level_file(path: Path) -> dict[str, Any]:
    """The torch part of a low-level checkpoint, with one-line errors for unreadable or foreign files."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except UNREADABLE_ERRORS as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot read low-level checkpoint {str(path)!r}: truncated or not a torch file ({reason})"
                         ) from None
    if not isinstance(state, Mapping) or state.get("format") != LOW_LEVEL_FORMAT:
        raise ValueError(f"{str(path)!r} is not a low-level checkpoint (format {LOW_LEVEL_FORMAT!r}, written by "
                         "save_low_level)")
    return dict(state)


def _load_strict(pi: nn.Module, weights: Mapping[str, Tensor], path: Path, model: Any) -> None:
    """Load ``weights`` into ``pi``; any missing or unexpected key or shape mismatch fails with one line."""
    expected = pi.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    shapes = [f"{k} {tuple(weights[k].shape)} vs {tuple(expected[k].shape)}" for k in expected
              if k in weights and weights[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(f"low-level checkpoint {str(path)!r} does not fit model {model!r}: missing keys "
                         f"{missing[:3]}, unexpected keys {unexpected[:3]}, shape mismatches (file vs model) "
                         f"{shapes[:3]}; set lo.model to the model it was saved with")
    pi.load_state_dict(weights)


def load_low_level(path: str | os.PathLike, model: str | Mapping[str, Any] | None = None,
                   device: str | torch.device = "cpu") -> LowLevelCheckpoint:
    """Read a checkpoint written by :func:`save_low_level`; the policy comes back frozen, in eval mode, on ``device``.

    ``model`` overrides the factory config recorded in the file (None: use the recorded one).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"low-level checkpoint {str(path)!r} does not exist; pre-training writes it "
                                "(save_low_level), set lo.init_from to its path")
    side = side_file(path)
    if not side.is_file():
        raise FileNotFoundError(f"No goal space subsets selected: the side file {str(side)!r} is missing; copy the "
                                f"_abs.json written with the checkpoint next to it as {side.name}")
    state = _read_low_level_file(path)
    try:
        info = json.loads(side.read_text())
        task_map = _checked_task_map(info["task_map"])
        subsets = _checked_subsets(info["subsets"], task_map)
        cperf = _checked_cperf(info["cperf"], subsets)
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"side file {str(side)!r} is not valid: needs task_map, subsets and cperf ({err!r})"
                         ) from None
    model = state["model"] if model is None else model
    obs_space = spaces.Dict({key: spaces.Box(-np.inf, np.inf, tuple(shape), np.float32)
                             for key, shape in state["obs_space"].items()})
    action_space = spaces.Box(-1.0, 1.0, (int(state["action_dim"]),), np.float32)
    pi = make_model(model, obs_space, action_space)
    _load_strict(pi, state["pi"], path, model)
    pi.requires_grad_(False).eval().to(device)
    return LowLevelCheckpoint(pi=pi, robot=str(state["robot"]), subsets=subsets, task_map=task_map, cperf=cperf,
                              model=model, obs_space=obs_space)


def select_subsets(subsets: Sequence[str], cperf: Mapping[str, float] | None, eps: float = 1.0, rank_min: int = 1,
                   rank_max: int = 99) -> list[str]:
    """``goal_space.subsets: from_lo``: the subsets with cperf >= 1 - eps and rank_min <= rank <= rank_max.

    Rank is the number of feature groups (``"0,3+4"``: 2). Sorted by rank, then naturally. Without a cperf
    (not measured) only the ranks filter. An empty selection fails with what to change.
    """
    cperf = _checked_cperf(cperf, subsets)
    threshold = 1.0 - eps
    chosen = [s for s in subsets if (cperf is None or cperf[s] >= threshold)
              and rank_min <= len(s.split(",")) <= rank_max]
    if not chosen:
        raise ValueError(f"No goal space subsets selected: none of the {len(subsets)} subsets has controllability "
                         f">= {threshold:g} (1 - from_lo_eps) and rank in [{rank_min}, {rank_max}]; raise "
                         "goal_space.from_lo_eps or widen rank_min/rank_max")
    return sorted_nicely_sep(chosen)


# ----------------------------------------------------------------------------------------------------- interface


class LowLevelGoal(NamedTuple):
    """What the low level is told: the goal still to go in raw units and the subset's mask (both [B, T])."""

    desired_goal: Tensor  # [B, T] raw feature differences over the task map, 0 outside the subset
    task: Tensor  # [B, T] multi-hot mask of the subset


class DeterministicLowLevel(nn.Module):
    """The frozen low level acting greedily: ``tanh(mean)`` of the skill policy, [B, A] in (-1, 1)."""

    def __init__(self, pi: nn.Module) -> None:
        super().__init__()
        self.pi = pi.requires_grad_(False).eval()

    def forward(self, obs: Mapping[str, Tensor]) -> Tensor:
        return self.pi(obs).mean

    def train(self, mode: bool = True) -> DeterministicLowLevel:
        """Always stays in eval mode: the low level is never trained."""
        return super().train(False)


class HiToLoInterface:
    """Between the high level and the frozen skill: action space, masks, subgoal translation, low-level input.

    Built for one env observation space (a Dict with ``observation``, ``time`` and the goal-space key) and one
    low-level checkpoint; ``subsets`` are the names the high level chooses among (K of them).
    """

    def __init__(self, obs_space: gym.Space, low_level: LowLevelCheckpoint, subsets: Sequence[str],
                 gs_key: str = GOAL_SPACE_KEY, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.gs = goal_space(low_level.robot)
        self.gs_key = gs_key
        self.kept_observation, n_full, self.n_actions = _pretraining_layout(low_level.robot)
        _check_env_observation(obs_space, gs_key, self.gs.dim, n_full)
        self.task_map = dict(low_level.task_map)
        self.subsets = _checked_subsets(subsets, self.task_map)
        self.task_features = sorted(self.task_map, key=self.task_map.__getitem__)  # [T] feature at each position
        positions = [[self.task_map[f] for f in parse_subset(name)] for name in self.subsets]
        n_positions = len(self.task_features)
        self.action_space = spaces.Dict({"task": spaces.Discrete(len(self.subsets)),
                                         "subgoal": spaces.Box(-1.0, 1.0, (n_positions,), np.float32)})
        self.masks = subset_masks(positions, n_positions).to(self.device)  # [K, T]: subgoal mask = task mask
        tables = backprojection_tables(positions, self.task_features, self.gs.psi, self.gs.offset)
        self.tables = BackprojectionTables(*(t.to(self.device) for t in tables))
        self.observation_space_hi = spaces.Dict({k: v for k, v in obs_space.spaces.items() if k != gs_key})
        self.observation_space_lo = low_level_observation_space(low_level.robot, self.task_map)
        fed = {k: v.shape for k, v in self.observation_space_lo.spaces.items()}
        if {k: v.shape for k, v in low_level.obs_space.spaces.items()} != fed:
            raise ValueError(f"the low-level checkpoint reads {dict(low_level.obs_space.spaces)}; the "
                             f"{low_level.robot} pre-training layout gives {fed}")
        self._kept = torch.tensor(self.kept_observation, dtype=torch.long, device=self.device)
        self.lo = DeterministicLowLevel(low_level.pi).to(self.device)

    @property
    def n_subsets(self) -> int:
        """K, the number of subsets."""
        return len(self.subsets)

    def translate(self, features: Tensor, task: Tensor, subgoal: Tensor) -> LowLevelGoal:
        """(E7) A high-level action -> the low level's goal: features [B, F], task [B], subgoal [B, G] in [-1, 1]."""
        target = backproject_subgoal(subgoal, task, *self.tables, features, self.gs.delta_feats)
        mask = self.masks[task]
        return LowLevelGoal(desired_goal(target, features, self.task_features, mask, self.gs.twist_feats), mask)

    def carry_goal(self, prev_features: Tensor, features: Tensor, goal: LowLevelGoal) -> LowLevelGoal:
        """The same absolute target seen from the new features [B, F] (inside the action interval)."""
        updated = update_bp_subgoal(prev_features, features, goal.desired_goal, goal.task, self.task_features,
                                    self.gs.twist_feats)
        return LowLevelGoal(updated, goal.task)

    def observation_lo(self, observation: Tensor, goal: LowLevelGoal) -> dict[str, Tensor]:
        """The low level's input from the env's ``observation`` [B, n_full] (world position dropped) and a goal."""
        return {"desired_goal": goal.desired_goal, "observation": observation[:, self._kept], "task": goal.task}

    def observation_hi(self, obs: Mapping[str, Tensor], time: Tensor) -> dict[str, Tensor]:
        """The high level's input: ``obs`` without the goal-space key, ``time`` replaced by ``time`` [B]."""
        hi = {key: value for key, value in obs.items() if key in self.observation_space_hi.spaces}
        hi["time"] = time.to(hi["observation"].dtype).view(-1, 1)
        return hi

    def random_action(self, n_envs: int) -> tuple[Tensor, Tensor]:
        """Uniform subsets [N] and uniform subgoals [N, G] in [-1, 1], zero outside each subset."""
        task = torch.randint(self.n_subsets, (n_envs,), device=self.device)
        subgoal = 2 * torch.rand(n_envs, self.masks.shape[1], device=self.device) - 1
        return task, subgoal * self.masks[task]

    def act(self, observation: Tensor, goal: LowLevelGoal) -> Tensor:
        """The frozen low level's action [B, A] in (-1, 1) for the env ``observation`` [B, n_full]."""
        return self.lo(self.observation_lo(observation, goal))


def _check_env_observation(obs_space: gym.Space, gs_key: str, n_features: int, n_observation: int) -> None:
    """The env must give a Dict with the full ``observation``, a ``time`` [1] and the goal-space features."""
    if not isinstance(obs_space, spaces.Dict):
        raise ValueError(f"HSD-3 needs a Dict observation space (build envs with make_hsd3_env); got {obs_space}")
    wanted = {"observation": (n_observation,), "time": (1,), gs_key: (n_features,)}
    for key, shape in wanted.items():
        if key not in obs_space.spaces or obs_space[key].shape != shape:
            raise ValueError(f"HSD-3 needs observation key {key!r} of shape {shape} (build envs with "
                             f"make_hsd3_env); got {dict(obs_space.spaces)}")


def make_hsd3_env(task: str, robot: str = "walker", wrappers: Sequence[str | Callable[[gym.Env], gym.Env]] = (),
                  goal_space_kind: str = "bodyfeet", key: str = GOAL_SPACE_KEY, **kwargs: Any) -> gym.Env:
    """``envs.make(task, robot, **kwargs)`` plus ``obs["time"]`` (episode step) and the goal-space features.

    ``wrappers`` (names or callables, see ``make_env``) come after those two; ``goal_space_kind`` is ``bodyfeet``
    or ``bodyfeet-relz`` (Stairs).
    """
    gs = goal_space(robot, goal_space_kind)

    def add_features(env: gym.Env) -> gym.Env:
        return GoalSpaceFeatures(env, gs.features, gs.low, gs.high, key)

    return make_env(task, robot, ["time", add_features, *wrappers], **kwargs)
