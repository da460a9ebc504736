"""The MuJoCo walker task suite: HSD-3's benchmark (bipedal-skills) on the official ``mujoco`` bindings.

    import envs
    env = envs.make("Hurdles", "walker")          # a gymnasium env with a 1000-step time limit
    obs, info = env.reset(seed=0)                 # obs: {"observation": [60], "next_hurdle": [3]}

Every task x robot pair is also registered with gymnasium as ``hsd3/<Task>-<robot>-v1``, e.g.
``gymnasium.make("hsd3/Hurdles-walker-v1")``. Rendering: ``envs.make(..., render_mode="rgb_array")``; on a machine
without a display this package selects MuJoCo's EGL backend (``MUJOCO_GL=egl``) before MuJoCo is imported.

Robots: walker, halfcheetah, humanoid, humanoidpc. Tasks: see :data:`TASKS` and each task module's docstring.
"""

from __future__ import annotations

import importlib
from typing import Any

from hsd3_learn.render import ensure_headless_gl

ensure_headless_gl()

import gymnasium as gym  # noqa: E402  (after choosing the GL backend)
from gymnasium.wrappers import TimeLimit  # noqa: E402

from envs.robots import ROBOTS, get_robot  # noqa: E402

__all__ = ["ROBOTS", "TASKS", "env_id", "make", "task_class"]

#: task name -> (implementation "module:Class", episode length in steps)
TASKS: dict[str, tuple[str, int]] = {
    "Floor": ("envs.tasks.floor:Floor", 1000),
    "Hurdles": ("envs.tasks.hurdles:Hurdles", 1000),
    "GoalWall": ("envs.tasks.goalwall:GoalWall", 250),
    "PoleBalance": ("envs.tasks.polebalance:PoleBalance", 1000),
    "Limbo": ("envs.tasks.limbo:Limbo", 1000),
    "HurdlesLimbo": ("envs.tasks.hurdles_limbo:HurdlesLimbo", 1000),
    "Gaps": ("envs.tasks.gaps:Gaps", 1000),
    "Stairs": ("envs.tasks.stairs:Stairs", 1000),
}


def task_class(task: str) -> type:
    """The class implementing ``task``; an unknown name lists the valid ones."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    module, _, name = TASKS[task][0].partition(":")
    return getattr(importlib.import_module(module), name)


def env_id(task: str, robot: str) -> str:
    """The gymnasium id of a task x robot pair: ``hsd3/<Task>-<robot>-v1``."""
    task_class(task)
    get_robot(robot)
    return f"hsd3/{task}-{robot}-v1"


def make(task: str, robot: str = "walker", max_episode_steps: int | None = None, **kwargs: Any) -> gym.Env:
    """Build ``task`` for ``robot`` with the task's time limit (truncation, not termination).

    ``kwargs`` go to the task (e.g. ``max_height=0.4`` for Hurdles) or the base env (``render_mode``, ``width``,
    ``height``, ``camera``, ``shadows``).
    """
    cls = task_class(task)
    get_robot(robot)
    steps = TASKS[task][1] if max_episode_steps is None else max_episode_steps
    return TimeLimit(cls(robot=robot, **kwargs), max_episode_steps=steps)


def _entry_point(task: str) -> Any:
    def build(robot: str, **kwargs: Any) -> gym.Env:
        return task_class(task)(robot=robot, **kwargs)

    return build


def _register_all() -> None:
    for task, (_, steps) in TASKS.items():
        for robot in ROBOTS:
            gym.register(id=f"hsd3/{task}-{robot}-v1", entry_point=_entry_point(task), max_episode_steps=steps,
                         kwargs={"robot": robot})


_register_all()
