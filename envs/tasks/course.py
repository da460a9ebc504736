"""Shared machinery of the obstacle-course tasks: obstacles along x, shown to the physics through a small window.

A course has 200 obstacles, but only the few around the robot can touch it. Simulating all 200 as bodies makes every
physics step about three times slower (MuJoCo's broad phase scales with the number of bodies), so each kind of
obstacle is an :class:`ObstacleWindow`: the full course lives in arrays, and ``WINDOW`` mocap bodies take the
positions and sizes of the obstacles nearest to the torso (2 behind, 4 ahead), moving along as it advances. The
robot cannot tell the difference; resets re-randomise the arrays without recompiling.
"""

from __future__ import annotations

import bisect

import mujoco
import numpy as np

from envs.base import BiskEnv

__all__ = ["N_OBSTACLES", "WINDOW", "ObstacleCourse", "ObstacleWindow", "obstacle_spacing"]

N_OBSTACLES = 200
WINDOW = 6  # obstacles of one kind present in the simulation at once
BEHIND = 2  # of which this many behind the torso


def obstacle_spacing(rng: np.random.Generator, n: int, start: float = 1.0, low: float = 3.0, high: float = 6.0) -> np.ndarray:
    """x positions ``start + cumsum(U(low, high))``: bisk's spacing of hurdles and bars."""
    xs = rng.uniform(low, high, size=n)
    np.cumsum(xs, out=xs)
    xs += start
    return xs


class ObstacleWindow:
    """One kind of obstacle (e.g. hurdles): ``N`` logical obstacles shown through ``WINDOW`` mocap bodies."""

    def __init__(self, prefix: str, geom_type: mujoco.mjtGeom, rgba: tuple[float, ...], slots: int = WINDOW) -> None:
        self.prefix, self.geom_type, self.rgba, self.slots = prefix, geom_type, rgba, slots
        self.pos = np.zeros((0, 3))
        self.size = np.zeros((0, 3))
        self._xs: list[float] = []
        self._start: int | None = None

    def add_to_spec(self, spec: mujoco.MjSpec, **geom: object) -> None:
        """Create the mocap bodies (parked far away until :meth:`set` places them)."""
        for i in range(self.slots):
            body = spec.worldbody.add_body(name=f"{self.prefix}-{i}", mocap=True, pos=[-1000.0 - i, 0.0, -10.0])
            body.add_geom(name=f"{self.prefix}-{i}", type=self.geom_type, size=[0.1, 0.1, 0.1], rgba=list(self.rgba),
                          contype=1, conaffinity=1, **geom)

    def bind(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        """Cache the slots' mocap and geom ids in the compiled model."""
        self.model, self.data = model, data
        bodies = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, f"{self.prefix}-{i}") for i in range(self.slots)]
        self.mocap_ids = np.array([model.body_mocapid[b] for b in bodies])
        self.geom_ids = np.array([mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, f"{self.prefix}-{i}")
                                  for i in range(self.slots)])
        self._bvh_ids = model.body_bvhadr[bodies]  # each slot body's bounding box, used by the midphase
        rotations = np.zeros((self.slots, 9))
        for rotation, geom in zip(rotations, self.geom_ids):
            mujoco.mju_quat2Mat(rotation, model.geom_quat[geom])
        self._abs_rot = np.abs(rotations.reshape(-1, 3, 3))  # geom-frame half-extents -> body frame
        self._axis_aligned = bool(np.allclose(self._abs_rot, np.eye(3)))  # then the body box is the geom box

    def set(self, pos: np.ndarray, size: np.ndarray, x: float, xs: list[float] | None = None) -> None:
        """A new course: obstacle centres ``pos`` [N, 3] (sorted by x) and geom sizes ``size`` [N, 3].

        The arrays are kept, not copied (resets are frequent): do not modify them until the next ``set``. ``xs``
        may pass ``pos[:, 0]`` as a list when the caller already has one.
        """
        self.pos, self.size = pos, size
        self._xs = pos[:, 0].tolist() if xs is None else xs  # a Python list: bisect on it is fastest
        self._start = None
        self.sync(x)

    def sync(self, x: float) -> None:
        """Show the obstacles around position ``x`` (cheap when nothing changes)."""
        n = len(self._xs)
        nearest = bisect.bisect_left(self._xs, x)
        start = min(max(nearest - BEHIND, 0), max(n - self.slots, 0))
        if start == self._start:
            return
        self._start = start
        shown = slice(start, min(start + self.slots, n))
        k = shown.stop - shown.start
        self.data.mocap_pos[self.mocap_ids[:k]] = self.pos[shown]
        if k < self.slots:  # a course shorter than the window: park the spare slots
            self.data.mocap_pos[self.mocap_ids[k:]] = [-1000.0, 0.0, -10.0]
        size = self.size[shown]
        gids = self.geom_ids[:k]
        self.model.geom_size[gids] = size
        self.model.geom_rbound[gids] = _bounding_radius(self.geom_type, size)
        half = _aabb_half(self.geom_type, size)
        self.model.geom_aabb[gids, 3:] = half
        # Robot bodies with several geoms (humanoid feet, cheetah torso) meet an obstacle through the midphase,
        # which reads the body's box compiled for the parked size: without this, off-centre contacts are missed.
        self.model.bvh_aabb[self._bvh_ids[:k], 3:] = (
            half if self._axis_aligned else np.einsum("kij,kj->ki", self._abs_rot[:k], half)
        )


class ObstacleCourse(BiskEnv):
    """A corridor of obstacles; +1 each time the torso passes a new one (``info["score"]``)."""

    def start_course(self, xs: np.ndarray, xs_list: list[float] | None = None) -> None:
        """Remember the x positions that count as progress (sorted); ``xs_list`` may pass them as a list already."""
        self.course_x = np.asarray(xs, dtype=float)
        self._course_list = self.course_x.tolist() if xs_list is None else xs_list
        self.cleared = 0
        self.ahead = 0  # index of the first obstacle ahead of the torso, as of the last update

    def update_progress(self, x: float | None = None) -> int:
        """Number of obstacles newly passed by the torso (at ``x``, default: now) in this step (the sparse reward)."""
        self.ahead = passed = bisect.bisect_left(self._course_list, self.torso_x() if x is None else x)
        new = max(0, passed - self.cleared)
        self.cleared = max(self.cleared, passed)
        return new


def _bounding_radius(geom_type: mujoco.mjtGeom, size: np.ndarray) -> np.ndarray:
    if geom_type == mujoco.mjtGeom.mjGEOM_CAPSULE:
        return size[:, 0] + size[:, 1]
    return np.sqrt((size * size).sum(axis=-1))


def _aabb_half(geom_type: mujoco.mjtGeom, size: np.ndarray) -> np.ndarray:
    if geom_type == mujoco.mjtGeom.mjGEOM_CAPSULE:
        return np.stack([size[:, 0], size[:, 0], size[:, 0] + size[:, 1]], axis=-1)
    return np.array(size, dtype=float)
