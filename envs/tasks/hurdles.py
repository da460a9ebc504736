"""Hurdles: jump over 200 randomly spaced boxes of random height; +1 per hurdle passed.

Faithful to bisk's ``BiskHurdles``: hurdles 0.1 m thick spanning the corridor, spaced ``1 + U(3, 6)`` then ``U(3, 6)``
apart; reward +1 when the torso passes a new hurdle; 1000 steps; a fall ends the episode with -1.

Difference from the original (a fix): bisk drew h ~ U(0.1, max_height), made a box of half-height h centred at
h/2 + 0.01 (so the visible top is 1.5 h + 0.01) and reported 2 h as the height, which matched neither. Here the
box stands on the floor with the same visible top, 1.5 h + 0.01 in [0.16, 0.46] m by default, and ``next_hurdle``
reports exactly that height.
"""

from __future__ import annotations

import mujoco
import numpy as np
from gymnasium import spaces

from envs.base import ARENA_HALF_WIDTH
from envs.tasks.course import N_OBSTACLES, ObstacleCourse, ObstacleWindow, obstacle_spacing

__all__ = ["Hurdles", "hurdle_tops"]


def hurdle_tops(rng: np.random.Generator, n: int, max_height: float, fixed_height: bool) -> np.ndarray:
    """Visible hurdle heights (m): ``1.5 h + 0.01`` with h ~ U(0.1, max_height) (or h = max_height)."""
    h = np.full(n, max_height) if fixed_height else rng.uniform(0.1, max_height, size=n)
    return 1.5 * h + 0.01


class Hurdles(ObstacleCourse):
    """Walker-and-friends hurdles. Options: ``max_height`` (0.3), ``fixed_height`` (False)."""

    task_kwargs = {"max_height": 0.3, "fixed_height": False}

    def build_task(self, spec: mujoco.MjSpec) -> None:
        if not 0.1 <= self.options["max_height"]:
            raise ValueError(f"max_height must be >= 0.1 m; got {self.options['max_height']}")
        self.hurdles = ObstacleWindow("hurdle", mujoco.mjtGeom.mjGEOM_BOX, (0.8, 0.3, 0.3, 1.0))
        self.hurdles.add_to_spec(spec)

    def init_task(self) -> None:
        self.hurdles.bind(self.model, self.data)
        # Reused every reset: only the x column, and the heights, change.
        self._pos = np.zeros((N_OBSTACLES, 3))
        self._size = np.tile([0.05, ARENA_HALF_WIDTH, 0.0], (N_OBSTACLES, 1))

    def reset_task(self) -> None:
        xs = obstacle_spacing(self.np_random, N_OBSTACLES)
        self.tops = hurdle_tops(self.np_random, N_OBSTACLES, self.options["max_height"], self.options["fixed_height"])
        self._pos[:, 0], self._pos[:, 2] = xs, self.tops / 2  # boxes stand on the floor
        self._size[:, 2] = self.tops / 2
        xs_list = xs.tolist()
        self.hurdles.set(self._pos, self._size, self.torso_x(), xs_list)
        self.start_course(xs, xs_list)

    def task_observation_space(self) -> dict[str, spaces.Box]:
        return {"next_hurdle": spaces.Box(-np.inf, np.inf, (3,), np.float32)}

    def task_observation(self) -> dict[str, np.ndarray]:
        """The first hurdle ahead of the torso: [distance, visible height, 1 if it was never passed]."""
        i = self.ahead
        fresh = float(i >= self.cleared)
        if i >= N_OBSTACLES:
            return {"next_hurdle": np.array([10.0, 0.1, fresh], np.float32)}
        return {"next_hurdle": np.array([self._course_list[i] - self.torso_x(), self.tops[i], fresh], np.float32)}

    def task_reward(self) -> tuple[float, bool]:
        x = self.torso_x()
        self.hurdles.sync(x)
        return float(self.update_progress(x)), False
