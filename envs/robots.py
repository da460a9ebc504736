"""The robots: walker, halfcheetah, humanoid (torques) and humanoidpc (position control).

Each robot is an MJCF file in ``envs/assets`` (adapted from dm_control / Gym / bipedal-skills; see the headers and
THIRD_PARTY_NOTICES.md) plus the facts a task needs: control rate, initial root pose, how to tell a fall, which body
is the torso. ``robot_spec(name)`` returns a fresh ``mujoco.MjSpec`` of the robot with its torso moved to the origin;
the initial root pose lives in :attr:`Robot.root_qpos`, so that root slide joints read world coordinates (as the fall
thresholds and HSD-3's goal-space ranges assume).

| robot | timestep x frame skip | integrator | actuators |
|---|---|---|---|
| walker | 0.0025 s x 10 = 0.025 s (40 Hz) | Euler | 6 motors (gear 100/50/20) |
| halfcheetah | 0.01 s x 5 = 0.05 s (20 Hz) | RK4 | 6 motors |
| humanoid | 0.005 s x 5 = 0.025 s (40 Hz) | Euler | 21 motors |
| humanoidpc | same | Euler | 21 PD actuators: target = mid + ctrl x half-range, kp = gear |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import mujoco
import numpy as np

__all__ = ["ROBOTS", "Robot", "get_robot", "robot_spec"]

ASSETS = Path(__file__).resolve().parent / "assets"


@dataclass(frozen=True)
class Robot:
    """Static facts about one robot."""

    name: str
    asset: str  # file in envs/assets
    frame_skip: int
    root_qpos: dict[str, float | tuple[float, ...]]  # initial value of the root joints, world coordinates
    torso: str = "torso"  # body whose x position measures progress
    planar: bool = True  # moves in the x-z plane only
    position_control: bool = False
    total_mass: float | None = None  # applied after compiling (Gym's settotalmass)
    fall_height: float = 0.9  # torso below this height (m) is a fall
    fall_pitch: float | None = None  # |rooty| above this (rad) is a fall (walker)
    feet: tuple[str, str] = field(default=("left_foot", "right_foot"))

    def fell_over(self, height: float, pitch: float, upright: float) -> bool:
        """bisk's fall rules, from the torso height (m), the root pitch (rad) and the torso's up-vector z component."""
        if self.name == "halfcheetah":
            return upright < -0.8 and height < 0.12
        if self.fall_pitch is not None and abs(pitch) > self.fall_pitch:
            return True
        return height < self.fall_height


ROBOTS: dict[str, Robot] = {
    "walker": Robot("walker", "walker.xml", 10, {"rootz": 1.3, "rootx": 0.0, "rooty": 0.0}, fall_pitch=1.4),
    "halfcheetah": Robot("halfcheetah", "halfcheetah.xml", 5, {"rootx": 0.0, "rootz": 0.7, "rooty": 0.0},
                         total_mass=14.0, feet=("bfoot", "ffoot")),
    "humanoid": Robot("humanoid", "humanoid.xml", 5, {"root": (0.0, 0.0, 1.3, 1.0, 0.0, 0.0, 0.0)}, planar=False),
    "humanoidpc": Robot("humanoidpc", "humanoid.xml", 5, {"root": (0.0, 0.0, 1.3, 1.0, 0.0, 0.0, 0.0)},
                        planar=False, position_control=True),
}


def get_robot(name: str) -> Robot:
    """The robot called ``name``; an unknown name lists the valid ones."""
    if name not in ROBOTS:
        raise ValueError(f"unknown robot {name!r}; valid robots: {', '.join(ROBOTS)}")
    return ROBOTS[name]


def robot_spec(name: str) -> mujoco.MjSpec:
    """A fresh MjSpec of the robot, torso at the origin (the root pose goes into qpos), PD actuators for ``*pc``."""
    robot = get_robot(name)
    spec = mujoco.MjSpec.from_file(str(ASSETS / robot.asset))
    spec.body(robot.torso).pos = [0.0, 0.0, 0.0]
    if robot.position_control:
        _to_position_control(spec)
    return spec


def _to_position_control(spec: mujoco.MjSpec) -> None:
    """Motors -> PD actuators: force = kp (target - q), target = mid + ctrl * half, |force| <= gear, kp = gear."""
    degree = spec.compiler.degree
    for actuator in spec.actuators:
        joint = spec.joint(actuator.target)
        low, high = (np.deg2rad(joint.range) if degree else np.asarray(joint.range, dtype=float))
        mid, half = (low + high) / 2, (high - low) / 2
        kp = float(actuator.gear[0])
        actuator.gear = [1.0, 0, 0, 0, 0, 0]
        actuator.gaintype = mujoco.mjtGain.mjGAIN_FIXED
        actuator.biastype = mujoco.mjtBias.mjBIAS_AFFINE
        actuator.gainprm = [kp * half] + [0.0] * 9
        actuator.biasprm = [kp * mid, -kp, 0.0] + [0.0] * 7
        actuator.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
        actuator.forcerange = [-kp, kp]
