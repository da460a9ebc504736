"""HSD-3's own environment code: goal spaces (features, ranges, normalisation) and the skill pre-training env.

The robots and tasks themselves live in the top-level ``envs`` package (the role bipedal-skills plays for the
original ``hucc``); this package adds what HSD-3 needs on top of them, as ``hucc.envs`` did:

- :mod:`hsd3_learn.envs.goal_spaces`: ``goal_space(robot)`` -> :class:`GoalSpace` (``bodyfeet`` features, ranges,
  ``project``/``backproject``), feature subsets (``enumerate_subsets``, ``task_map``, ``subset_mask``);
- :mod:`hsd3_learn.envs.pretraining`: :class:`PretrainingEnv`, goal reaching over feature subsets;
- :mod:`hsd3_learn.envs.wrappers`: step counter, reward accumulation, dict observations, goal-space features,
  ``make_env`` from short wrapper names;
- :mod:`hsd3_learn.envs.vector`: Sync/Async vector envs with explicit autoreset, and ``TorchVectorEnv``.

The pre-training env is also registered with gymnasium as ``hsd3/Pretraining-<robot>-v1`` for walker, humanoid and
humanoidpc (hucc: ``ContCtrlgsPreTraining-v1``), without a time limit: it ends itself after 100 goals.
"""

from __future__ import annotations

import gymnasium as gym

from hsd3_learn.envs.goal_spaces import (FEATURE_DIMS, GOAL_SPACE_KINDS, GoalSpace, enumerate_subsets, goal_space,
                                         parse_subset, subset_mask, task_map)
from hsd3_learn.envs.pretraining import CTRL_COST, PretrainingEnv

__all__ = ["CTRL_COST", "FEATURE_DIMS", "GOAL_SPACE_KINDS", "PRETRAINING_ROBOTS", "GoalSpace", "PretrainingEnv",
           "enumerate_subsets", "goal_space", "parse_subset", "pretraining_env_id", "subset_mask", "task_map"]

#: robots with a goal space, hence a pre-training env
PRETRAINING_ROBOTS = tuple(FEATURE_DIMS)


def pretraining_env_id(robot: str) -> str:
    """The gymnasium id of the pre-training env for ``robot``: ``hsd3/Pretraining-<robot>-v1``."""
    if robot not in PRETRAINING_ROBOTS:
        raise ValueError(f"no pre-training env for robot {robot!r}; valid robots: {', '.join(PRETRAINING_ROBOTS)}")
    return f"hsd3/Pretraining-{robot}-v1"


def _register_all() -> None:
    for robot in PRETRAINING_ROBOTS:
        gym.register(id=pretraining_env_id(robot), entry_point="hsd3_learn.envs.pretraining:PretrainingEnv",
                     kwargs={"robot": robot})


_register_all()
