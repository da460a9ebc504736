"""Gaps: run across 200 platforms separated by lava-filled gaps; +1 per platform reached, touching lava ends it.

Faithful to bisk's ``BiskGaps``: there is no floor plane. The robot starts on a base platform (top at z = 0 for
x in [-8, 4]); from x = 4 the course alternates a gap g ~ U(``min_gap`` 0.2, ``max_gap`` 0.7) filled with lava
(a box whose top is 5 cm below the platforms) and a platform s ~ U(0.5, ``max_size`` 2.5) long (humanoids
U(1.0, ``max_size``)); ``fixed_size``: g = ``min_gap``, s = ``max_size``. Reward +1 when the torso passes the
start of a new platform. Any contact between the robot and lava, checked after every physics substep, ends the
episode with reward -1; a fall also ends it with -1 (``info["score"]`` then keeps the task score). 1000 steps.

Observation key ``next_gap_platform`` (3): [start of the next gap - torso x, start of the next platform - torso x,
1 if that platform was never reached before], "next" meaning the first one ahead of the torso; 1.0 for a distance
past the end of the course, as in bisk.

Differences from the original:

1. Platforms and lava are shown through :class:`~envs.tasks.course.ObstacleWindow` (even and odd platforms in two
   windows of their own colour, lava in a third) rather than 400 static boxes. The windows follow a point one metre
   behind the torso, so the course is complete from at least 2.3 m behind the torso to 1.7 m ahead of it (a
   trailing foot always has its platform or lava under it).
2. On the lava step ``info["score"]`` is -1 like the reward (a task failure, not a fall): bisk 1.0 reported the
   platform count of that step there, bisk 2.0 that count minus 1.
3. ``max_size`` below the shortest platform (0.5 m, humanoids 1.0 m) is an error instead of being silently raised.
4. Lava is plain orange rather than bisk's lava texture.
"""

from __future__ import annotations

import bisect

import mujoco
import numpy as np
from gymnasium import spaces

from envs.base import ARENA_HALF_WIDTH
from envs.tasks.course import N_OBSTACLES, ObstacleCourse, ObstacleWindow
from envs.tasks.limbo import check_flag

__all__ = ["COURSE_START", "Gaps"]

COURSE_START = 4.0  # x where the base platform ends and the first gap begins
HALF_THICKNESS = 0.1  # of platforms and lava boxes
LAVA_DEPTH = 0.05  # lava tops lie this far below the platform tops
LOOKBACK = 1.0  # the windows follow a point this far behind the torso (see the module docstring)
PLATFORM_RGBA = ((0.2, 0.3, 0.4, 1.0), (0.3, 0.4, 0.5, 1.0))  # even, odd platforms
LAVA_RGBA = (1.0, 0.35, 0.05, 1.0)


class Gaps(ObstacleCourse):
    """Jump over lava. Options: ``max_size`` (2.5), ``min_gap`` (0.2), ``max_gap`` (0.7), ``fixed_size`` (False)."""

    task_kwargs = {"max_size": 2.5, "min_gap": 0.2, "max_gap": 0.7, "fixed_size": False}
    needs_substeps = True  # lava contacts are checked after every substep

    def has_floor(self) -> bool:
        return False

    def build_task(self, spec: mujoco.MjSpec) -> None:
        self._check_options()
        w = ARENA_HALF_WIDTH
        spec.worldbody.add_geom(name="base", type=mujoco.mjtGeom.mjGEOM_BOX, material="grid",
                                size=[(COURSE_START + w) / 2, w, HALF_THICKNESS],
                                pos=[(COURSE_START - w) / 2, 0, -HALF_THICKNESS], contype=1, conaffinity=1)
        self.platforms = [ObstacleWindow(f"platform-{parity}", mujoco.mjtGeom.mjGEOM_BOX, rgba)
                          for parity, rgba in zip(("even", "odd"), PLATFORM_RGBA)]
        self.lava = ObstacleWindow("lava", mujoco.mjtGeom.mjGEOM_BOX, LAVA_RGBA)
        for window in (*self.platforms, self.lava):
            window.add_to_spec(spec)

    def _check_options(self) -> None:
        o = self.options
        self.fixed_size = check_flag("fixed_size", o["fixed_size"])
        self.min_size = 1.0 if self.robot.name.startswith("humanoid") else 0.5
        if not all(isinstance(o[k], (int, float)) for k in ("max_size", "min_gap", "max_gap")):
            raise TypeError(f"max_size, min_gap and max_gap must be numbers (m); got {o}")
        if not o["max_size"] >= self.min_size:
            raise ValueError(f"max_size must be >= {self.min_size} m for {self.robot.name}; got {o['max_size']}")
        if not 0 < o["min_gap"] <= o["max_gap"]:
            raise ValueError(f"need 0 < min_gap <= max_gap; got min_gap={o['min_gap']}, max_gap={o['max_gap']}")

    def init_task(self) -> None:
        for window in (*self.platforms, self.lava):
            window.bind(self.model, self.data)
        robot_geoms = np.flatnonzero(np.isin(self.model.geom_bodyid, self._robot_body_ids())).tolist()
        lava_geoms = self.lava.geom_ids.tolist()
        # Geom pairs, in either order, whose contact means the robot touches lava.
        self._burning_pairs = frozenset((a, b) for r in robot_geoms for g in lava_geoms for a, b in ((r, g), (g, r)))

    def reset_task(self) -> None:
        rng, o = self.np_random, self.options
        if self.fixed_size:
            gaps, sizes = np.full(N_OBSTACLES, float(o["min_gap"])), np.full(N_OBSTACLES, float(o["max_size"]))
        else:
            gaps = rng.uniform(o["min_gap"], o["max_gap"], size=N_OBSTACLES)
            sizes = rng.uniform(self.min_size, o["max_size"], size=N_OBSTACLES)
        gap_starts = COURSE_START + np.concatenate([[0.0], np.cumsum(gaps + sizes)[:-1]])
        platform_starts = gap_starts + gaps
        x = self.torso_x() - LOOKBACK
        self.lava.set(*_slabs(gap_starts, gaps, -LAVA_DEPTH), x)
        for parity, window in enumerate(self.platforms):
            window.set(*_slabs(platform_starts[parity::2], sizes[parity::2], 0.0), x)
        self._gap_starts, self._platform_starts = gap_starts.tolist(), platform_starts.tolist()
        self.start_course(platform_starts)
        self.touched_lava = False

    def substep_hook(self) -> None:
        # A set test on a handful of Python pairs: ~1 us, about 3x cheaper than numpy indexing at this size.
        if not self._burning_pairs.isdisjoint(map(tuple, self.data.contact.geom.tolist())):
            self.touched_lava = True

    def task_observation_space(self) -> dict[str, spaces.Box]:
        return {"next_gap_platform": spaces.Box(-np.inf, np.inf, (3,), np.float32)}

    def task_observation(self) -> dict[str, np.ndarray]:
        x = self.torso_x()
        gap = bisect.bisect_left(self._gap_starts, x)
        platform = bisect.bisect_left(self._platform_starts, x)
        to_gap = self._gap_starts[gap] - x if gap < N_OBSTACLES else 1.0
        to_platform = self._platform_starts[platform] - x if platform < N_OBSTACLES else 1.0
        return {"next_gap_platform": np.array([to_gap, to_platform, float(platform >= self.cleared)], np.float32)}

    def task_reward(self) -> tuple[float, bool]:
        reached = self.update_progress()
        x = self.torso_x() - LOOKBACK
        for window in (*self.platforms, self.lava):
            window.sync(x)
        if self.touched_lava:
            return -1.0, True
        return float(reached), False


def _slabs(starts: np.ndarray, lengths: np.ndarray, top: float) -> tuple[np.ndarray, np.ndarray]:
    """Centres [N, 3] and half-sizes [N, 3] of corridor-wide boxes starting at ``starts``, ``top`` high."""
    n = len(starts)
    pos = np.stack([starts + lengths / 2, np.zeros(n), np.full(n, top - HALF_THICKNESS)], axis=-1)
    size = np.stack([lengths / 2, np.full(n, ARENA_HALF_WIDTH), np.full(n, HALF_THICKNESS)], axis=-1)
    return pos, size
