"""HurdlesLimbo: 200 obstacles alternating between hurdles (jump over) and limbo bars (crouch under).

Faithful to bisk's ``BiskHurdlesLimbo``: obstacles spaced ``1 + U(3, 6)`` then ``U(3, 6)`` apart, even ones hurdles
as in :mod:`envs.tasks.hurdles` (``max_hurdle_height`` 0.3), odd ones bars as in :mod:`envs.tasks.limbo`
(``min_bar_height`` 'auto': 1.2 m walker, 1.0 m other robots); ``fixed_height`` fixes both kinds. Reward +1 when
the torso passes a new obstacle; with ``notouch`` -1 the first time the robot touches each bar (the bar turns red).
1000 steps; a fall ends the episode with -1 (``info["score"]`` keeps the task score).

Observation key ``next_obstacle`` (4): [kind (0 hurdle, 1 bar), x of the next obstacle - torso x, its height,
1 if it was never passed before], the next obstacle being the first one ahead of the torso. The height is the
top of a hurdle or of a bar; after the last obstacle [0, 10, 0.1, flag].

Differences from the original (fixes):

1. Hurdle heights: bisk reported ``2 * centre z = h + 0.02`` for a hurdle whose visible top is ``1.5 h + 0.01``
   (and Hurdles reported a third value, 2 h). Here hurdles are built and reported exactly as in
   :mod:`envs.tasks.hurdles` (:func:`~envs.tasks.hurdles.hurdle_tops`): a box standing on the floor whose reported
   height is its visible top.
2. After the last obstacle bisk's observation raised an error (the kind was never assigned); here it reads kind 0.
3. Hurdles and bars are two :class:`~envs.tasks.course.ObstacleWindow` (six of each in the simulation at once).
"""

from __future__ import annotations

import bisect

import mujoco
import numpy as np
from gymnasium import spaces

from envs.base import ARENA_HALF_WIDTH
from envs.tasks.course import N_OBSTACLES, ObstacleCourse, ObstacleWindow, obstacle_spacing
from envs.tasks.hurdles import hurdle_tops
from envs.tasks.limbo import LimboBars, bar_undersides, check_flag, min_bar_height

__all__ = ["HURDLE", "BAR", "HurdlesLimbo"]

HURDLE, BAR = 0, 1  # obstacle kinds, as reported in ``next_obstacle``
HURDLE_HALF_THICKNESS = 0.05
HURDLE_RGBA = (0.8, 0.3, 0.3, 1.0)


class HurdlesLimbo(ObstacleCourse):
    """Alternating hurdles and bars. Options: ``notouch`` (False), ``min_bar_height`` ('auto'),
    ``max_hurdle_height`` (0.3), ``fixed_height`` (False)."""

    task_kwargs = {"notouch": False, "min_bar_height": "auto", "max_hurdle_height": 0.3, "fixed_height": False}

    def build_task(self, spec: mujoco.MjSpec) -> None:
        self.notouch = check_flag("notouch", self.options["notouch"])
        self.fixed_height = check_flag("fixed_height", self.options["fixed_height"])
        self.min_bar_height = min_bar_height(self.robot.name, self.options["min_bar_height"])
        self.max_hurdle_height = self.options["max_hurdle_height"]
        if not (isinstance(self.max_hurdle_height, (int, float)) and self.max_hurdle_height >= 0.1):
            raise ValueError(f"max_hurdle_height must be a number >= 0.1 m; got {self.max_hurdle_height!r}")
        self.needs_substeps = self.notouch
        self.hurdles = ObstacleWindow("hurdle", mujoco.mjtGeom.mjGEOM_BOX, HURDLE_RGBA)
        self.hurdles.add_to_spec(spec)
        self.bars = LimboBars()
        self.bars.add_to_spec(spec)

    def init_task(self) -> None:
        self.hurdles.bind(self.model, self.data)
        self.bars.bind(self.model, self.data)
        self.kinds = np.arange(N_OBSTACLES) % 2  # even: hurdle, odd: bar

    def reset_task(self) -> None:
        xs = obstacle_spacing(self.np_random, N_OBSTACLES)
        n_hurdles = (N_OBSTACLES + 1) // 2
        tops = hurdle_tops(self.np_random, n_hurdles, self.max_hurdle_height, self.fixed_height)
        undersides = bar_undersides(self.np_random, N_OBSTACLES - n_hurdles, self.min_bar_height, self.fixed_height)
        self.hurdles.set(*_hurdle_boxes(xs[HURDLE::2], tops), self.torso_x())
        self.bars.set(xs[BAR::2], undersides, self.torso_x())
        self.heights = np.empty(N_OBSTACLES)
        self.heights[HURDLE::2], self.heights[BAR::2] = tops, self.bars.tops
        self.start_course(xs)
        self._xs = xs.tolist()

    def substep_hook(self) -> None:
        self.bars.record_contacts()

    def task_observation_space(self) -> dict[str, spaces.Box]:
        return {"next_obstacle": spaces.Box(-np.inf, np.inf, (4,), np.float32)}

    def task_observation(self) -> dict[str, np.ndarray]:
        x = self.torso_x()
        i = bisect.bisect_left(self._xs, x)
        fresh = float(i >= self.cleared)
        if i >= N_OBSTACLES:
            return {"next_obstacle": np.array([HURDLE, 10.0, 0.1, fresh], np.float32)}
        return {"next_obstacle": np.array([self.kinds[i], self._xs[i] - x, self.heights[i], fresh], np.float32)}

    def task_reward(self) -> tuple[float, bool]:
        penalty = self.bars.new_touches() if self.notouch else 0
        passed = self.update_progress()
        x = self.torso_x()
        self.hurdles.sync(x)
        self.bars.sync(x)
        return float(passed - penalty), False


def _hurdle_boxes(xs: np.ndarray, tops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres [N, 3] and half-sizes [N, 3] of hurdle boxes at ``xs`` standing on the floor, ``tops`` high."""
    n = len(xs)
    pos = np.stack([xs, np.zeros(n), tops / 2], axis=-1)
    size = np.stack([np.full(n, HURDLE_HALF_THICKNESS), np.full(n, ARENA_HALF_WIDTH), tops / 2], axis=-1)
    return pos, size
