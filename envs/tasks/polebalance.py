"""PoleBalance: keep a pole upright on the robot's torso or head; +1 per step, 1000 steps.

Faithful to bisk's ``BiskPoleBalance``: a capsule pole (length ``pole_length`` 0.5 m, mass ``pole_mass`` 0.5 kg,
radius 0.05 m, 0.02 m on humanoids) stands on the walker's torso top, at the cheetah's torso origin, or on the
humanoid's head. It turns on a hinge about y for planar robots (``task-pole-0``, damping 0.1, range +-180 deg) and on a
ball joint for humanoids (damping 0.1, rotation at most 90 deg). Other joint and geom settings come from the robot's
default class, as in bisk: e.g. the humanoid's pole joint has stiffness 1 N m/rad, and the walker's pole collides with
the floor but not with the walker. ``n_poles`` > 1 stacks poles, each on the previous one's top with its own joint.

Reward: +1 for every step the pole tower stands: the height of its top above its base is at least 0.8 x its upright
height (one pole: tilted less than acos(0.8) = 36.9 deg). The step where it drops below ends the episode and scores 0;
a fall ends it with -1 (and scores 0). The ``pole`` observation is the pole joints' positions (1 per pole in 2-D, a
quaternion of 4 in 3-D) then their velocities (1 or 3 per pole); the pole joints and bodies stay out of
``observation``.

Differences from the original:

1. A fix: bisk's ``pole`` observation read the velocities from ``qpos`` (``qpos[pole_qvel_idx]``): it repeated the
   hinge angles, and for the ball joint it read whatever ``qpos`` entries sat at the velocity addresses (the end of
   the previous joint and part of the quaternion). Here they are the real ``qvel``.
2. The tower height is the tip's height above the base of the first pole; bisk measured from half a pole below the
   first joint to half a pole above the last one, which is the same for one pole and slightly off for stacks.
3. The cheetah's total-mass rescaling leaves the pole at ``pole_mass`` (bisk's settotalmass also scaled the pole).
4. The arena keeps the base env's invisible corridor walls (y = +-8 m, x = -4 m); bisk's PoleBalance had none.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np
from gymnasium import spaces

from envs.base import BiskEnv

__all__ = ["PoleBalance", "TILT_FRACTION"]

TILT_FRACTION = 0.8  # the tower must keep this fraction of its upright height


class PoleBalance(BiskEnv):
    """Balance a pole. Options: ``pole_mass`` (0.5 kg), ``pole_length`` (0.5 m), ``n_poles`` (1)."""

    task_kwargs = {"pole_mass": 0.5, "pole_length": 0.5, "n_poles": 1}

    # ---------------------------------------------------------------------------------------------------- model

    def build_task(self, spec: mujoco.MjSpec) -> None:
        self._check_options()
        length = float(self.options["pole_length"])
        body, base_z = self._pole_mount(spec)
        colors = _rainbow(self.options["n_poles"])
        for i in range(self.options["n_poles"]):  # each pole stands on the previous one's top
            body = body.add_body(name=f"task-pole-{i}", pos=[0, 0, base_z if i == 0 else length])
            self._add_pole_joint(spec, body, f"task-pole-{i}")
            body.add_geom(name=f"task-pole-{i}", type=mujoco.mjtGeom.mjGEOM_CAPSULE, fromto=[0, 0, 0, 0, 0, length],
                          size=[0.05 if self.robot.planar else 0.02, 0, 0], mass=float(self.options["pole_mass"]),
                          rgba=colors[i])

    def _check_options(self) -> None:
        n, mass, length = self.options["n_poles"], self.options["pole_mass"], self.options["pole_length"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n_poles must be an integer >= 1; got {n!r}")
        if not isinstance(mass, (int, float)) or not mass > 0:
            raise ValueError(f"pole_mass must be a positive number (kg); got {mass!r}")
        if not isinstance(length, (int, float)) or not length > 0:
            raise ValueError(f"pole_length must be a positive number (m); got {length!r}")

    def _pole_mount(self, spec: mujoco.MjSpec) -> tuple[mujoco.MjsBody, float]:
        """Where the first pole stands: (body, height in its frame): walker torso top, cheetah torso, humanoid head."""
        if self.robot.name == "walker":
            return spec.body("torso"), float(spec.geom("torso").size[1])  # the capsule's half-length
        if self.robot.name == "halfcheetah":
            return spec.body("torso"), 0.0
        return spec.body("head"), float(spec.geom("head").size[0])  # the sphere's radius

    def _add_pole_joint(self, spec: mujoco.MjSpec, body: mujoco.MjsBody, name: str) -> None:
        """Hinge about y (planar robots) or ball joint (humanoids), limits in the robot's angle unit."""
        degrees = spec.compiler.degree
        if self.robot.planar:
            limit = 180.0 if degrees else math.pi
            body.add_joint(name=name, type=mujoco.mjtJoint.mjJNT_HINGE, axis=[0, 1, 0], damping=0.1, stiffness=0.0,
                           range=[-limit, limit])
        else:
            body.add_joint(name=name, type=mujoco.mjtJoint.mjJNT_BALL, damping=0.1,
                           range=[0.0, 90.0 if degrees else math.pi / 2])

    def init_task(self) -> None:
        m = self.model
        n = self.options["n_poles"]
        joints = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f"task-pole-{i}") for i in range(n)]
        width_q, width_v = (1, 1) if self.robot.planar else (4, 3)
        self._pole_qpos = np.concatenate([m.jnt_qposadr[j] + np.arange(width_q) for j in joints])
        self._pole_qvel = np.concatenate([m.jnt_dofadr[j] + np.arange(width_v) for j in joints])
        self._first_pole = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "task-pole-0")
        self._last_pole = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, f"task-pole-{n - 1}")
        self.upright_height = n * float(self.options["pole_length"])

    # ---------------------------------------------------------------------------------------------------- episode

    def reset_task(self) -> None:
        """Nearly upright poles: bisk's noise U(-0.01, 0.01) on qpos, 0.01 N(0, 1) on qvel; quaternions renormalised."""
        d, rng = self.data, self.np_random
        d.qpos[self._pole_qpos] = self.init_qpos[self._pole_qpos] + rng.uniform(-0.01, 0.01, len(self._pole_qpos))
        if not self.robot.planar:
            for start in range(0, len(self._pole_qpos), 4):
                quat = self._pole_qpos[start : start + 4]
                d.qpos[quat] /= np.linalg.norm(d.qpos[quat])
        d.qvel[self._pole_qvel] = 0.01 * rng.standard_normal(len(self._pole_qvel))

    def tower_height(self) -> float:
        """Height of the top of the last pole above the base of the first (``n_poles x pole_length`` when upright)."""
        d = self.data
        tip_z = d.xpos[self._last_pole, 2] + float(self.options["pole_length"]) * d.xmat[self._last_pole, 8]
        return float(tip_z - d.xpos[self._first_pole, 2])

    def task_reward(self) -> tuple[float, bool]:
        """+1 while the tower stands; the step it tilts past the threshold scores 0 and ends the episode."""
        if self.tower_height() < TILT_FRACTION * self.upright_height:
            return 0.0, True
        return 1.0, False

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        observation, reward, terminated, truncated, info = super().step(action)
        if info["fell_over"]:
            info["score"] = 0.0  # as bisk: a step that ends the episode never scores
        return observation, reward, terminated, truncated, info

    # ---------------------------------------------------------------------------------------------------- observation

    def task_observation_space(self) -> dict[str, spaces.Box]:
        size = len(self._pole_qpos) + len(self._pole_qvel)
        return {"pole": spaces.Box(-np.inf, np.inf, (size,), np.float32)}

    def task_observation(self) -> dict[str, np.ndarray]:
        """Pole joint positions then velocities (the original repeated the positions; see the module docstring)."""
        d = self.data
        return {"pole": np.concatenate([d.qpos[self._pole_qpos], d.qvel[self._pole_qvel]]).astype(np.float32)}


def _rainbow(n: int) -> list[list[float]]:
    """Pole colours, purple for the first, then towards red for the ones stacked on it (bisk's rainbow map)."""
    purple, red = np.array([0.5, 0.0, 1.0]), np.array([1.0, 0.0, 0.0])
    steps = [0.0] + [(i + 1) / n for i in range(1, n)]
    return [[*(purple + t * (red - purple)), 1.0] for t in steps]
