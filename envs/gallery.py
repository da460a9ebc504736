"""Pictures and videos of the tasks: one frame of a task, a gallery of all tasks, a video of an episode.

The course shows every task before training on it, and evaluation writes videos of episodes: a glance at the robot
tells a working policy from one that games the reward. Everything renders off-screen (``envs`` selects MuJoCo's EGL
backend on machines without a display), with shadows off by default: they cost about 5x in software rendering.

    frame = render_frame("GoalWall", "walker")                  # [240, 320, 3] uint8
    frames = task_gallery("walker")                             # {"Floor": frame, "Hurdles": frame, ...}
    save_episode_video("Hurdles", "walker", "hurdles.mp4", steps=200, policy=my_policy)

Frames come from ``env.render()`` with each task's default camera (the robot's tracking ``side`` camera, or the
task's own, e.g. GoalWall's ``sideline``); pass ``camera=...`` to choose another.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import envs
from hsd3_learn.render import write_video

__all__ = ["render_frame", "save_episode_video", "task_gallery"]

Policy = Callable[[dict[str, np.ndarray]], np.ndarray]


def render_frame(task: str, robot: str = "walker", seed: int = 0, width: int = 320, height: int = 240, steps: int = 0,
                 **env_kwargs: Any) -> np.ndarray:
    """One ``[height, width, 3]`` uint8 picture of ``task`` after ``reset(seed)`` and ``steps`` zero-action steps.

    Zero actions keep the picture deterministic (the robot sags under gravity); stepping stops early if the episode
    ends. ``env_kwargs`` go to :func:`envs.make` (e.g. ``camera="back"``, ``shadows=True``, task options).
    """
    _check_steps(steps)
    env = envs.make(task, robot, render_mode="rgb_array", width=width, height=height, **env_kwargs)
    try:
        env.reset(seed=seed)
        zero = np.zeros(env.action_space.shape, env.action_space.dtype)
        for _ in range(steps):
            _, _, terminated, truncated, _ = env.step(zero)
            if terminated or truncated:
                break
        return env.render()
    finally:
        env.close()


def task_gallery(robot: str = "walker", tasks: Iterable[str] | None = None, seed: int = 0, width: int = 320,
                 height: int = 240, steps: int = 0, **env_kwargs: Any) -> dict[str, np.ndarray]:
    """``{task: frame}`` for ``tasks`` (default: every task in :data:`envs.TASKS`), rendered by :func:`render_frame`."""
    names = list(envs.TASKS) if tasks is None else list(tasks)
    for name in names:
        envs.task_class(name)  # an unknown task fails before any rendering
    return {name: render_frame(name, robot, seed=seed, width=width, height=height, steps=steps, **env_kwargs)
            for name in names}


def save_episode_video(env_or_task: gym.Env | str, robot: str | None, path: str | os.PathLike, steps: int,
                       policy: Policy | None = None, fps: float | None = None, seed: int = 0) -> Path:
    """Play one episode for up to ``steps`` steps and write it to ``path`` as an MP4 (the reset frame included).

    Args:
        env_or_task: an env made with ``render_mode="rgb_array"`` (left open), or a task name (built for ``robot``
            and closed afterwards).
        robot: the robot for a task name; for an env ``None``, or the env's own robot.
        path: the ``.mp4`` file to write (see :func:`hsd3_learn.render.write_video`).
        steps: the most steps to play; the video stops earlier when the episode ends.
        policy: maps an observation to an action; default: uniform random actions (seeded with ``seed``).
        fps: frames per second; default: the env's real time (``metadata["render_fps"]``, 40 for the walker).
        seed: the episode's reset seed.

    Returns:
        ``path`` as a ``Path``.
    """
    _check_steps(steps)
    env = _episode_env(env_or_task, robot)
    try:
        video_fps = env.metadata["render_fps"] if fps is None else fps
        return write_video(path, _episode_frames(env, steps, policy, seed), fps=video_fps)
    finally:
        if env is not env_or_task:
            env.close()


def _check_steps(steps: int) -> None:
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0; got {steps!r}")


def _episode_env(env_or_task: gym.Env | str, robot: str | None) -> gym.Env:
    """The env to film: a new one for a task name, else the given env after checking that it can render."""
    if isinstance(env_or_task, str):
        if robot is None:
            raise ValueError(f"robot is needed to build task {env_or_task!r}; valid robots: {', '.join(envs.ROBOTS)}")
        return envs.make(env_or_task, robot, render_mode="rgb_array")
    if not isinstance(env_or_task, gym.Env):
        raise TypeError(f"env_or_task must be a gymnasium Env or a task name; got {type(env_or_task).__name__}")
    if env_or_task.render_mode != "rgb_array":
        raise ValueError(f"the env must be made with render_mode='rgb_array'; got {env_or_task.render_mode!r}")
    own_robot = getattr(getattr(env_or_task.unwrapped, "robot", None), "name", None)
    if robot is not None and robot != own_robot:
        raise ValueError(f"robot {robot!r} does not match the env's robot {own_robot!r}; pass None or {own_robot!r}")
    return env_or_task


def _episode_frames(env: gym.Env, steps: int, policy: Policy | None, seed: int) -> Iterator[np.ndarray]:
    """Frames of one episode, streamed to the encoder as they are rendered."""
    observation, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    yield env.render()
    for _ in range(steps):
        action = env.action_space.sample() if policy is None else policy(observation)
        observation, _, terminated, truncated, _ = env.step(action)
        yield env.render()
        if terminated or truncated:
            return
