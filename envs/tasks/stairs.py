"""Stairs: climb a flight of 10 steps, cross a 6 m landing, go down 10 steps; +1 per step passed.

Faithful to bisk 1.0's ``BiskStairs``: from x = 3 the steps rise by ``step_height`` (0.2 m) each, to 2.0 m; a
6 m landing at 2.0 m follows, then ten steps down from 2.0 m (flush with the landing) to 0.2 m. Each step is
U(``step_length_min`` 0.5, ``step_length_max`` 1.0) long, re-drawn every episode. Reward +1 when the torso passes
the centre of a new step (20 in all). 1000 steps; a fall ends the episode with -1 (``info["score"]`` keeps the task
score).

Heights are measured from the ground under the torso (bisk's ``joints-relz`` features): :meth:`Stairs.torso_height`
casts a ray straight down from the torso and replaces the torso height both in the fall check and in the
``observation`` vector (the root z entry: walker ``rootz``, halfcheetah ``rootz``, humanoids the free joint's z).

Observation key ``next_steps`` (3): [centre x of the next step - torso x, the same for the step after it (10 when
there is none), 1 if the next step was never passed before], "next" meaning the first one ahead of the torso;
after the last step [10, 20, flag] as in bisk.

Differences from the original:

1. The ray only tests the stairs (they sit in their own geom group, ``STAIRS_GROUP``, visible by default); when it
   misses them, the torso is above the floor plane at z = 0, whose height it then reports. bisk instead repeated
   the ray while it hit the robot's own geoms; both give the height above the first non-robot surface below.
2. The 21 boxes are mocap bodies (an :class:`~envs.tasks.course.ObstacleWindow` showing all of them), so that
   re-packing them each episode keeps contacts right; no extra ``stairs_side`` camera: the robots' own ``side``
   camera already follows the robot (a camera in the world body would follow the obstacles' mass too).
"""

from __future__ import annotations

import bisect

import mujoco
import numpy as np
from gymnasium import spaces

from envs.base import ARENA_HALF_WIDTH
from envs.tasks.course import ObstacleCourse, ObstacleWindow

__all__ = ["N_STEPS", "STAIRS_GROUP", "Stairs", "stair_boxes"]

N_STEPS = 20  # 10 up, 10 down
START_X = 3.0  # where the first step begins
LANDING_LENGTH = 6.0
STAIRS_GROUP = 2  # geom group of the stairs: the height ray sees only them (groups 0-2 are drawn by default)
STAIR_RGBA = ((0.8, 0.9, 0.8, 1.0), (0.6, 0.6, 0.6, 1.0))  # alternating along the course
DOWN = np.array([0.0, 0.0, -1.0])


def stair_boxes(lengths: np.ndarray, step_height: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes of one up-landing-down course, in x order: centres [21, 3], half-sizes [21, 3], step centres x [20].

    ``lengths`` [20] are the step lengths (m); the landing (index 10 of the boxes) is ``LANDING_LENGTH`` long.
    """
    half = N_STEPS // 2
    box_lengths = np.concatenate([lengths[:half], [LANDING_LENGTH], lengths[half:]])
    tops = step_height * np.concatenate([np.arange(1, half + 1), [half], np.arange(half, 0, -1)])
    starts = START_X + np.concatenate([[0.0], np.cumsum(box_lengths)[:-1]])
    n = len(box_lengths)
    pos = np.stack([starts + box_lengths / 2, np.zeros(n), tops / 2], axis=-1)
    size = np.stack([box_lengths / 2, np.full(n, ARENA_HALF_WIDTH), tops / 2], axis=-1)
    step_centres = np.delete(pos[:, 0], half)
    return pos, size, step_centres


class Stairs(ObstacleCourse):
    """Up and down stairs. Options: ``step_height`` (0.2), ``step_length_min`` (0.5), ``step_length_max`` (1.0)."""

    task_kwargs = {"step_height": 0.2, "step_length_min": 0.5, "step_length_max": 1.0}

    def build_task(self, spec: mujoco.MjSpec) -> None:
        o = self.options
        if not all(isinstance(o[k], (int, float)) for k in self.task_kwargs):
            raise TypeError(f"step_height, step_length_min and step_length_max must be numbers (m); got {o}")
        if not o["step_height"] > 0:
            raise ValueError(f"step_height must be > 0 m; got {o['step_height']}")
        if not 0 < o["step_length_min"] <= o["step_length_max"]:
            raise ValueError(f"need 0 < step_length_min <= step_length_max; got {o['step_length_min']}, "
                             f"{o['step_length_max']}")
        self.boxes = ObstacleWindow("stair", mujoco.mjtGeom.mjGEOM_BOX, STAIR_RGBA[0], slots=N_STEPS + 1)
        self.boxes.add_to_spec(spec, group=STAIRS_GROUP)

    def init_task(self) -> None:
        self.boxes.bind(self.model, self.data)
        self.model.geom_rgba[self.boxes.geom_ids[1::2]] = STAIR_RGBA[1]  # all boxes are always shown, in order
        self._ray_groups = np.zeros(mujoco.mjNGROUP, np.uint8)
        self._ray_groups[STAIRS_GROUP] = 1
        self._ray_hit = np.zeros(1, np.int32)
        self._z_feature = int(np.flatnonzero(self._qpos_idx == _root_z_address(self.model))[0])

    def reset_task(self) -> None:
        o = self.options
        lengths = self.np_random.uniform(o["step_length_min"], o["step_length_max"], size=N_STEPS)
        pos, size, step_centres = stair_boxes(lengths, o["step_height"])
        self.boxes.set(pos, size, self.torso_x())
        self.start_course(step_centres)
        self._centres = step_centres.tolist()

    def torso_height(self) -> float:
        """Height of the torso above the surface below it: a step, the landing, or the floor (z = 0)."""
        torso = self.data.xpos[self.torso_id]
        distance = mujoco.mj_ray(self.model, self.data, torso, DOWN, self._ray_groups, 1, -1, self._ray_hit)
        return float(distance) if distance >= 0 else float(torso[2])

    def _observation(self) -> dict[str, np.ndarray]:
        obs = super()._observation()
        obs["observation"][self._z_feature] = self.torso_height()
        return obs

    def task_observation_space(self) -> dict[str, spaces.Box]:
        return {"next_steps": spaces.Box(-np.inf, np.inf, (3,), np.float32)}

    def task_observation(self) -> dict[str, np.ndarray]:
        x = self.torso_x()
        i = bisect.bisect_left(self._centres, x)
        fresh = float(i >= self.cleared)
        if i >= N_STEPS:
            return {"next_steps": np.array([10.0, 20.0, fresh], np.float32)}
        after = self._centres[i + 1] - x if i + 1 < N_STEPS else 10.0
        return {"next_steps": np.array([self._centres[i] - x, after, fresh], np.float32)}

    def task_reward(self) -> tuple[float, bool]:
        return float(self.update_progress()), False


def _root_z_address(model: mujoco.MjModel) -> int:
    """qpos address of the robot's root height: the ``rootz`` slide joint, or the z of the free joint."""
    rootz = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "rootz")
    if rootz >= 0:
        return int(model.jnt_qposadr[rootz])
    free = np.flatnonzero(model.jnt_type == mujoco.mjtJoint.mjJNT_FREE)
    return int(model.jnt_qposadr[free[0]]) + 2
