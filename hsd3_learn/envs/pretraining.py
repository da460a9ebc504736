"""HSD-3's skill pre-training environment: reach goals in random subsets of the goal-space features.

The robot stands on an empty floor (``envs.tasks.floor.Floor``). Every *goal* picks a feature subset from the
current task distribution (e.g. walker ``"0,3+4"``: root height and left foot), then a goal uniformly in the
normalised space of those features, [-1, 1]^K, offset by the current value for delta features (the root's x, and
y for humanoids). The low-level policy of HSD-3 is trained here with SAC-MT and later reused, frozen, by the high
level, which is why the interface (``desired_goal`` in raw units, ``task`` as a mask) matches HSD-3's subgoals.

Per step (d = L2 distance between goal and projected features, twist wrapped; K chosen features):

    reward = d_prev - d_new - ctrl_cost * |a|^2     (walker ctrl_cost 0.001, humanoids 0)

A goal ends when it is reached (d < ``precision`` 0.1) or after ``max_steps`` (72) steps; the next goal starts from
the current state inside the same episode (a *soft reset*: ``info["SoftReset"]``). A fall gives ``fallover_penalty``
(-1) and ``terminated``; after ``hard_reset_interval`` (100) goals the episode is ``truncated`` and the next
``reset()`` puts the robot back at its start pose. So one episode holds at most 100 x 72 = 7200 steps.

Observation (a ``Dict``, float32; T = task-map size: walker 7, humanoids 10; F = goal features: 7 or 12):

| key | shape | meaning |
|---|---|---|
| ``observation`` | [N] | the robot's ``joints`` features without its world x (and y): walker 59, humanoids 149 |
| ``desired_goal`` | [T] | goal minus current value, raw units, over the task map; 0 outside the subset; twist wrapped |
| ``task`` | [T] | 1 for the subset's features, 0 elsewhere |
| ``gs_observation`` | [F] | the raw goal-space features (for the replay buffer; no network reads them) |

Every step's ``info`` holds the bools ``reached_goal``, ``last_step_of_task``, ``SoftReset`` and ``EpisodeContinues``
(neither terminated nor truncated), ``potential`` (d_prev - d_new), ``distance`` (d_new), ``time`` (step index within
the goal, 0 on its first step), ``subset`` (the goal's subset name), ``fell_over`` and ``score`` (always 0).

Differences from the original ``hucc.envs.ctrlgs.CtrlgsPreTrainingEnv`` (registered with reward='potential',
hard_reset_interval=100, resample_features='soft', implicit_soft_resets in the configs):

1. gymnasium API: a fall is ``terminated``; the end of the 100th goal is ``truncated`` (hucc returned ``done``
   without ``EpisodeContinues``, which SAC-MT treated as terminal, although the state is not).
2. Only what HSD-3 uses: potential reward, uniform goals, a new subset for every goal, soft resets inside
   ``step()``. hucc's alternatives (other rewards, reachability- or Q-based goal sampling, random resets, idle
   steps, non-backprojected goals) are left out.
3. ``info`` flags are always present as bools (hucc added ``SoftReset``/``LastStepOfTask`` only when true and used
   presence as the flag); ``LastStepOfTask`` is spelled ``last_step_of_task``; ``features`` is ``subset``.
4. ``desired_goal`` has unbounded limits: it is a difference that can leave hucc's [min, max] box (e.g. after
   walking away from an x goal), and gymnasium checks observations against their space.
5. The task distribution is set with :meth:`PretrainingEnv.set_subsets` (a list, or names with weights) instead of
   ``set_goal_dims``; the default is all 31 subsets, uniform (the end of hucc's curriculum with ``ctrl_eps`` 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import mujoco
import numpy as np
from gymnasium import spaces

from envs.tasks.floor import Floor
from hsd3_learn.envs.goal_spaces import (FEATURE_DIMS, enumerate_subsets, goal_space, parse_subset, subset_mask,
                                         task_map, wrap_angle)

__all__ = ["CTRL_COST", "PretrainingEnv"]

#: default action cost per robot (hucc's pre-training configs)
CTRL_COST = {"walker": 0.001, "humanoid": 0.0, "humanoidpc": 0.0}


class PretrainingEnv(Floor):
    """Goal reaching over feature subsets on an empty floor (see the module docstring).

    Options (keyword arguments, with defaults): ``subsets`` (None: every subset of ``feature_dims``, uniform; or a
    list of names, or names -> weights), ``feature_dims`` (None: the robot's groups, walker ``"0#1#2#3+4#5+6"``),
    ``precision`` (0.1), ``max_steps`` (72, per goal), ``hard_reset_interval`` (100 goals), ``ctrl_cost`` (None:
    walker 0.001, humanoids 0), ``fallover_penalty`` (-1.0); plus the rendering options of ``BiskEnv``.
    Robots: walker, humanoid, humanoidpc.
    """

    task_kwargs = {"subsets": None, "feature_dims": None, "precision": 0.1, "max_steps": 72,
                   "hard_reset_interval": 100, "ctrl_cost": None, "fallover_penalty": -1.0}

    def __init__(self, robot: str = "walker", **kwargs: Any) -> None:
        self.goal_space = goal_space(robot)  # fails first for a robot without a goal space
        super().__init__(robot=robot, **kwargs)
        opts = self.options
        self.feature_dims: str = opts["feature_dims"] or FEATURE_DIMS[robot]
        self.task_map: dict[int, int] = task_map(self.feature_dims)
        self.precision = _positive(opts["precision"], "precision")
        self.max_steps = _positive_int(opts["max_steps"], "max_steps")
        self.hard_reset_interval = _positive_int(opts["hard_reset_interval"], "hard_reset_interval")
        self.ctrl_cost = CTRL_COST[robot] if opts["ctrl_cost"] is None else float(opts["ctrl_cost"])
        if self.ctrl_cost < 0:
            raise ValueError(f"ctrl_cost must be >= 0; got {self.ctrl_cost}")
        self.fallover_penalty = float(opts["fallover_penalty"])
        for f in self.task_map:
            if f >= self.goal_space.dim:
                raise ValueError(f"feature_dims {self.feature_dims!r} names feature {f}; {robot} has "
                                 f"{self.goal_space.dim} goal features (0-{self.goal_space.dim - 1})")
        self.set_subsets(opts["subsets"] if opts["subsets"] is not None else enumerate_subsets(self.feature_dims))
        self.kept_observation_entries = np.delete(np.arange(self._n_features), self._position_entries())
        n_tasks = len(self.task_map)
        self.observation_space = spaces.Dict({
            "observation": spaces.Box(-np.inf, np.inf, (len(self.kept_observation_entries),), np.float32),
            "desired_goal": spaces.Box(-np.inf, np.inf, (n_tasks,), np.float32),
            "task": spaces.Box(0.0, 1.0, (n_tasks,), np.float32),
            "gs_observation": spaces.Box(-np.inf, np.inf, (self.goal_space.dim,), np.float32),
        })
        self._goals_started = 0

    def _position_entries(self) -> list[int]:
        """Entries of the ``joints`` observation holding the root's world x (and y): HSD-3 hides them."""
        m = self.model
        if self.robot.planar:
            adrs = [m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "rootx")]]
        else:
            root = m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "root")]
            adrs = [root, root + 1]
        return [int(np.flatnonzero(self._qpos_idx == adr)[0]) for adr in adrs]

    # ----------------------------------------------------------------------------------------- task distribution

    def set_subsets(self, subsets: Sequence[str] | Mapping[str, float]) -> None:
        """Set the task distribution: subset names (uniform) or names -> weights. Used from the next goal on."""
        if isinstance(subsets, str):
            raise TypeError(f"subsets must be a list of names or a dict of name -> weight; got the string {subsets!r}")
        names = list(subsets)
        weights = np.array([subsets[n] for n in names] if isinstance(subsets, Mapping) else [1.0] * len(names),
                           dtype=np.float64)
        if not names or np.any(weights < 0) or weights.sum() <= 0:
            raise ValueError(f"subsets need at least one name and weights >= 0 with a positive sum; got {subsets!r}")
        self._subset_masks = [subset_mask(name, self.task_map) for name in names]  # validates the names
        self._subset_names = names
        self._subset_features = [np.array(parse_subset(name), dtype=np.intp) for name in names]
        self._subset_probs = weights / weights.sum()

    @property
    def subsets(self) -> dict[str, float]:
        """The current task distribution: subset name -> probability."""
        return dict(zip(self._subset_names, self._subset_probs.tolist()))

    @property
    def subset(self) -> str:
        """Name of the current goal's subset, e.g. ``"0,3+4"``."""
        return self._subset

    @property
    def goal_features(self) -> list[int]:
        """Goal-space features [K] of the current goal, in the order of :attr:`goal`."""
        return self._features.tolist()

    @property
    def goal(self) -> np.ndarray:
        """The current goal [K] in normalised units (delta features include the state at the goal's start)."""
        return self._goal.copy()

    # ---------------------------------------------------------------------------------------------------- goals

    def _start_goal(self, features: np.ndarray) -> None:
        """Sample a subset and a goal for it from the current raw goal-space features [F]."""
        i = int(self.np_random.choice(len(self._subset_names), p=self._subset_probs))
        self._subset, self._features = self._subset_names[i], self._subset_features[i]
        self._mask = self._subset_masks[i]
        goal = self.np_random.uniform(-1.0, 1.0, size=len(self._features))
        current = self.goal_space.project(features[self._features], self._features)
        for k, f in enumerate(self._features):
            if f in self.goal_space.delta_feats:
                goal[k] += current[k]
        self._goal = goal
        self._task_positions = [self.task_map[f] for f in self._features.tolist()]
        self._goal_step = 0
        self._goals_started += 1
        self._distance = self._distance_to_goal(features)

    def _distance_to_goal(self, features: np.ndarray) -> float:
        """L2 distance between the goal and the projected features [F] over the subset, twist wrapped."""
        current = self.goal_space.project(features[self._features], self._features)
        diff = self.goal_space.projected_difference(self._goal, current, self._features)
        return math.sqrt(float(diff @ diff))

    def _pretraining_observation(self, joints: np.ndarray, features: np.ndarray) -> dict[str, np.ndarray]:
        """The observation dict from the ``joints`` features [N + hidden] and the raw goal features [F]."""
        target = self.goal_space.backproject(self._goal, self._features)
        to_go = target - features[self._features]
        for k, f in enumerate(self._features):
            if f in self.goal_space.twist_feats:
                to_go[k] = wrap_angle(to_go[k])
        desired = np.zeros(len(self.task_map), np.float32)
        desired[self._task_positions] = to_go
        return {"observation": joints[self.kept_observation_entries], "desired_goal": desired, "task": self._mask.copy(),
                "gs_observation": features.astype(np.float32)}

    # -------------------------------------------------------------------------------------------------- gym API

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        """Hard reset: the robot back to its (noisy) start pose, a new subset and goal."""
        obs, _ = super().reset(seed=seed, options=options)
        features = self.goal_space.features(self)
        self._goals_started = 0
        self._start_goal(features)
        return self._pretraining_observation(obs["observation"], features), {"subset": self._subset}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        """One control step [A]; a reached or timed-out goal is replaced by a new one inside the episode."""
        obs, _, _, _, info = super().step(action)
        features = self.goal_space.features(self)
        fell = bool(info["fell_over"])
        distance = self._distance_to_goal(features)
        potential, self._distance = self._distance - distance, distance
        reached = distance < self.precision and not fell
        reward = self.fallover_penalty if fell else potential - self.ctrl_cost * float(np.square(action).sum())
        time, self._goal_step = self._goal_step, self._goal_step + 1
        last_step = reached or fell or self._goal_step >= self.max_steps
        truncated = last_step and not fell and self._goals_started % self.hard_reset_interval == 0
        soft_reset = last_step and not fell and not truncated
        info.update(potential=potential, distance=distance, reached_goal=reached, last_step_of_task=last_step,
                    SoftReset=soft_reset, EpisodeContinues=not (fell or truncated), time=time, subset=self._subset)
        if soft_reset:
            self._start_goal(features)
        return self._pretraining_observation(obs["observation"], features), reward, fell, truncated, info


def _positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not value > 0:
        raise ValueError(f"{name} must be > 0; got {value!r}")
    return float(value)


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1; got {value!r}")
    return int(value)
