"""Limbo: pass under 200 randomly spaced bars of random height; +1 per bar passed.

Faithful to bisk's ``BiskLimbo``: bars are capsules of radius 0.1 m spanning the corridor along y, spaced
``1 + U(3, 6)`` then ``U(3, 6)`` apart, their undersides at b ~ U(m, m + 0.3) (``fixed_height``: b = m) with
``min_height='auto'``: m = 1.2 m for the walker and 1.0 m for the other robots. The standing walker's torso top is
near 1.67 m and the humanoid's head near 1.58 m, so they must crouch. Reward +1 when the torso passes a new bar;
with ``notouch`` also -1 the first time the robot touches each bar (contact distance <= 0 in any physics substep),
and the bar turns red. 1000 steps; a fall ends the episode with -1 (``info["score"]`` keeps the task score).

Observation key ``next_bar`` (3): [x of the next bar - torso x, height of its top (b + 0.2), 1 if it was never
passed before], the next bar being the first one ahead of the torso; after the last bar [1, 2, flag] as in bisk.

Differences from the original: the bars are shown through an :class:`~envs.tasks.course.ObstacleWindow` (the six
nearest of them are in the simulation), and the contact scan runs only with ``notouch`` (without it bisk recorded
touches that it never used).
"""

from __future__ import annotations

import bisect
import math

import mujoco
import numpy as np
from gymnasium import spaces

from envs.base import ARENA_HALF_WIDTH
from envs.tasks.course import N_OBSTACLES, ObstacleCourse, ObstacleWindow, obstacle_spacing

__all__ = ["BAR_RADIUS", "Limbo", "LimboBars", "bar_undersides", "check_flag", "min_bar_height"]

BAR_RADIUS = 0.1
BAR_HEIGHT_RANGE = 0.3  # undersides vary over [m, m + 0.3]
BAR_RGBA = (0.8, 0.9, 0.8, 1.0)
TOUCHED_RGBA = (0.8, 0.0, 0.0, 1.0)
AUTO_MIN_HEIGHT = {"walker": 1.2}  # every other robot: DEFAULT_MIN_HEIGHT
DEFAULT_MIN_HEIGHT = 1.0
ALONG_Y = (math.sqrt(0.5), -math.sqrt(0.5), 0.0, 0.0)  # turns a capsule's z axis onto the y axis


def min_bar_height(robot: str, option: float | str) -> float:
    """Lowest bar underside (m): a positive number, or ``'auto'`` (1.2 m walker, 1.0 m other robots, as bisk)."""
    if option == "auto":
        return AUTO_MIN_HEIGHT.get(robot, DEFAULT_MIN_HEIGHT)
    if isinstance(option, bool) or not isinstance(option, (int, float)) or not option > 0:
        raise ValueError(f"bar height must be 'auto' or a positive number of metres; got {option!r}")
    return float(option)


def bar_undersides(rng: np.random.Generator, n: int, min_height: float, fixed_height: bool) -> np.ndarray:
    """Underside heights (m) of ``n`` bars: b ~ U(min_height, min_height + 0.3), or b = min_height."""
    if fixed_height:
        return np.full(n, min_height)
    return rng.uniform(min_height, min_height + BAR_HEIGHT_RANGE, size=n)


class LimboBars:
    """Limbo bars shown through an :class:`ObstacleWindow`, and which of them the robot has touched.

    Touches are recorded per window slot during a control step (:meth:`record_contacts`, every substep) and turned
    into bar indices once per step (:meth:`new_touches`), before the window moves on.
    """

    def __init__(self) -> None:
        self.window = ObstacleWindow("bar", mujoco.mjtGeom.mjGEOM_CAPSULE, BAR_RGBA)
        self.undersides = np.zeros(0)
        self.tops = np.zeros(0)  # height of each bar's top [N]
        self.touched = np.zeros(0, dtype=bool)

    def add_to_spec(self, spec: mujoco.MjSpec) -> None:
        """Create the bar slots: capsules lying along y."""
        self.window.add_to_spec(spec, quat=list(ALONG_Y))

    def bind(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        """Cache ids; ``_slot_of_geom`` [ngeom] maps a geom id to its bar slot (-1: not a bar)."""
        self.window.bind(model, data)
        self.model, self.data = model, data
        self._slot_of_geom = np.full(model.ngeom, -1)
        self._slot_of_geom[self.window.geom_ids] = np.arange(self.window.slots)
        self._bar_geoms = frozenset(self.window.geom_ids.tolist())
        self._slot_hits = np.zeros(self.window.slots, dtype=bool)

    def set(self, xs: np.ndarray, undersides: np.ndarray, torso_x: float) -> None:
        """A new course: bars at positions ``xs`` [N] (sorted) with underside heights ``undersides`` [N]."""
        n = len(xs)
        self.undersides = np.asarray(undersides, dtype=float)
        self.tops = self.undersides + 2 * BAR_RADIUS
        pos = np.stack([xs, np.zeros(n), self.undersides + BAR_RADIUS], axis=-1)
        size = np.stack([np.full(n, BAR_RADIUS), np.full(n, ARENA_HALF_WIDTH), np.zeros(n)], axis=-1)
        self.window.set(pos, size, torso_x)
        self.touched = np.zeros(n, dtype=bool)
        self._slot_hits[:] = False
        self.model.geom_rgba[self.window.geom_ids] = BAR_RGBA

    def record_contacts(self) -> None:
        """Substep hook: remember the slots of bars in contact (distance <= 0) with anything (only the robot moves)."""
        contact = self.data.contact
        if self._bar_geoms.isdisjoint(contact.geom.ravel().tolist()):
            return  # the common case: a set test is several times cheaper than the numpy scan below
        slots = self._slot_of_geom[contact.geom].max(axis=-1)
        self._slot_hits[slots[(slots >= 0) & (contact.dist <= 0)]] = True

    def new_touches(self) -> int:
        """Number of bars touched for the first time in this control step; they turn red."""
        if not self._slot_hits.any():
            return 0
        bars = self._shown_bars()[self._slot_hits]
        self._slot_hits[:] = False
        new = bars[~self.touched[bars]]
        self.touched[new] = True
        self._paint()
        return len(new)

    def sync(self, torso_x: float) -> None:
        """Show the bars around ``torso_x``, red where touched."""
        self.window.sync(torso_x)
        if self.touched.any():
            self._paint()

    def _shown_bars(self) -> np.ndarray:
        """Index of the bar each slot shows [slots], found from the slot's x position."""
        shown_x = self.data.mocap_pos[self.window.mocap_ids, 0]
        return np.minimum(np.searchsorted(self.window.pos[:, 0], shown_x), len(self.touched) - 1)

    def _paint(self) -> None:
        red = self.touched[self._shown_bars()]
        self.model.geom_rgba[self.window.geom_ids] = np.where(red[:, None], TOUCHED_RGBA, BAR_RGBA)


def check_flag(name: str, value: object) -> bool:
    """A boolean option, or one clear error."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {value!r}")
    return bool(value)


class Limbo(ObstacleCourse):
    """Crouch under bars. Options: ``notouch`` (False), ``min_height`` ('auto'), ``fixed_height`` (False)."""

    task_kwargs = {"notouch": False, "min_height": "auto", "fixed_height": False}

    def build_task(self, spec: mujoco.MjSpec) -> None:
        self.notouch = check_flag("notouch", self.options["notouch"])
        self.fixed_height = check_flag("fixed_height", self.options["fixed_height"])
        self.min_height = min_bar_height(self.robot.name, self.options["min_height"])
        self.needs_substeps = self.notouch  # contacts are only watched when touching costs
        self.bars = LimboBars()
        self.bars.add_to_spec(spec)

    def init_task(self) -> None:
        self.bars.bind(self.model, self.data)

    def reset_task(self) -> None:
        xs = obstacle_spacing(self.np_random, N_OBSTACLES)
        undersides = bar_undersides(self.np_random, N_OBSTACLES, self.min_height, self.fixed_height)
        self.bars.set(xs, undersides, self.torso_x())
        self.start_course(xs)
        self._xs = xs.tolist()  # bisect on a list is fastest

    def substep_hook(self) -> None:
        self.bars.record_contacts()

    def task_observation_space(self) -> dict[str, spaces.Box]:
        return {"next_bar": spaces.Box(-np.inf, np.inf, (3,), np.float32)}

    def task_observation(self) -> dict[str, np.ndarray]:
        x = self.torso_x()
        i = bisect.bisect_left(self._xs, x)
        fresh = float(i >= self.cleared)
        if i >= N_OBSTACLES:
            return {"next_bar": np.array([1.0, 2.0, fresh], np.float32)}
        return {"next_bar": np.array([self._xs[i] - x, self.bars.tops[i], fresh], np.float32)}

    def task_reward(self) -> tuple[float, bool]:
        penalty = self.bars.new_touches() if self.notouch else 0
        passed = self.update_progress()
        self.bars.sync(self.torso_x())
        return float(passed - penalty), False
