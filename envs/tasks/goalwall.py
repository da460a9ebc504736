"""GoalWall: kick a ball into a goal on a wall; 250 steps, one shot per episode.

Faithful to bisk's ``BiskGoalWall``: a ball (sphere, radius 0.15 m, 0.1 kg, condim 6, rolling friction, a very stiff
contact ``solref (-10000, -30)``) starts ``init_distance`` (2.5 m) ahead of the robot, 0.1 m above the floor; a wall
stands 4 m further on (x = 6.5 m). The first time the ball touches the wall the episode ends, and scores if the
ball's centre is within 0.4 m of a goal's centre: planar robots (walker, halfcheetah) have one goal (y 0, z 1) worth 1;
humanoids have two, ``goal1`` (y -1, z 0.65) worth 1 and ``goal2`` (y +1, z 1.35) worth 2. A shot only counts from
behind the line at x = 4.0 m: while the torso is past it, the score is 0. A fall ends the episode with -1.

Ball joints (``task-ball-x``, ``task-ball-z`` slides and the ``task-ball-ry`` hinge in 2-D; the free joint
``task-ball`` in 3-D) stay out of ``observation``. The ``ball`` observation is the ball's position, x (and y in 3-D)
relative to the torso, z, the 2-D spin angle wrapped to [-pi, pi], then the ball's velocities (3-D: linear, then
angular in the ball's frame): 6 numbers in 2-D, 9 in 3-D. The default camera is bisk's fixed ``sideline`` view of
the whole pitch.

Differences from the original:

1. The line rule zeroes ``info["score"]`` too: bisk zeroed only the reward, so HSD-3's evaluation (the sum of
   ``info["score"]``) counted goals scored by walking past the line.
2. The shot lands where the ball first touched the wall (bisk kept the last touching substep of the control step).
3. ``touch_ball_reward`` (bisk's off-by-default bonus for touching the ball, unused by HSD-3) is not offered.
4. The ball's spin hinge is unlimited: bisk's range of +-pi is read in degrees, so under today's ``autolimits`` it
   would all but stop the ball from rolling. The cheetah's total-mass rescaling leaves the ball at 0.1 kg (bisk's
   settotalmass also scaled the ball).
5. The arena keeps the base env's invisible corridor walls (y = +-8 m, x = -4 m); bisk's GoalWall had none. They
   only matter for a ball or robot far off to the side or behind the start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np
from gymnasium import spaces

from envs.base import BiskEnv

__all__ = ["BALL_RADIUS", "GOAL_RADIUS", "GOALS_2D", "GOALS_3D", "Goal", "GoalWall", "goal_score"]

BALL_RADIUS = 0.15
BALL_MASS = 0.1
GOAL_RADIUS = 0.4  # a shot scores when the ball centre hits the wall within this distance of a goal centre
WALL_BEHIND_BALL = 4.0  # wall x = init_distance + 4
LINE_BEHIND_BALL = 1.5  # line x = init_distance + 1.5
WALL_HALF_WIDTH, WALL_HALF_HEIGHT = 3.0, 1.0  # the drawn wall: y in [-3, 3], z in [0, 2] (it collides as a plane)
NEAR_WALL = 0.5  # contacts are only scanned while the ball centre is this close to touching the wall


@dataclass(frozen=True)
class Goal:
    """A target circle on the wall: centre (y, z) in metres and the score of a shot into it."""

    name: str
    y: float
    z: float
    score: float


GOALS_2D = (Goal("goal", 0.0, 1.0, 1.0),)
GOALS_3D = (Goal("goal1", -1.0, 0.65, 1.0), Goal("goal2", 1.0, 1.35, 2.0))


def goal_score(ball_yz: tuple[float, float], goals: tuple[Goal, ...]) -> float:
    """Score of a ball that hit the wall with its centre at ``ball_yz``: the goal it landed in, else 0."""
    for goal in goals:
        if math.hypot(ball_yz[0] - goal.y, ball_yz[1] - goal.z) <= GOAL_RADIUS:
            return goal.score
    return 0.0


class GoalWall(BiskEnv):
    """Score a goal on the wall. Option: ``init_distance`` (2.5 m), the ball's start ahead of the robot."""

    task_kwargs = {"init_distance": 2.5}
    needs_substeps = True  # the wall touch is seen in the contacts of single physics steps

    def __init__(self, robot: str = "walker", camera: str = "sideline", **kwargs: Any) -> None:
        """As :class:`BiskEnv`, but viewed by default through bisk's fixed ``sideline`` camera (ball, line, wall)."""
        super().__init__(robot=robot, camera=camera, **kwargs)

    # ---------------------------------------------------------------------------------------------------- model

    def build_task(self, spec: mujoco.MjSpec) -> None:
        distance = self.options["init_distance"]
        if not isinstance(distance, (int, float)) or not distance >= 0.5:
            raise ValueError(f"init_distance must be a number >= 0.5 (m, clear of the robot); got {distance!r}")
        self.wall_x = distance + WALL_BEHIND_BALL
        self.line_x = distance + LINE_BEHIND_BALL
        self.goals = GOALS_2D if self.robot.planar else GOALS_3D
        self._add_ball(spec)
        self._add_wall(spec)
        self._add_line(spec)
        euler = np.array([80.0, -5.0, 0.0])
        camera = spec.worldbody.add_camera(name="sideline", pos=[self.wall_x / 3, -9, 2])
        camera.alt.type = mujoco.mjtOrientation.mjORIENTATION_EULER
        camera.alt.euler = euler if spec.compiler.degree else np.deg2rad(euler)

    def _add_ball(self, spec: mujoco.MjSpec) -> None:
        """The ball with its own joints; every setting explicit, as the robot's defaults would apply otherwise."""
        spec.add_texture(name="task-ball", type=mujoco.mjtTexture.mjTEXTURE_CUBE,
                         builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER, mark=mujoco.mjtMark.mjMARK_CROSS, width=151,
                         height=151, rgb1=[0.1, 0.1, 0.1], rgb2=[0.9, 0.9, 0.9], markrgb=[1, 1, 1])
        material = spec.add_material(name="task-ball")
        material.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = "task-ball"
        ball = spec.worldbody.add_body(name="task-ball")
        loose = dict(damping=0.0, stiffness=0.0, armature=0.0, frictionloss=0.0,
                     limited=mujoco.mjtLimited.mjLIMITED_FALSE)
        if self.robot.planar:
            ball.add_joint(name="task-ball-x", type=mujoco.mjtJoint.mjJNT_SLIDE, axis=[1, 0, 0], **loose)
            ball.add_joint(name="task-ball-z", type=mujoco.mjtJoint.mjJNT_SLIDE, axis=[0, 0, 1], **loose)
            ball.add_joint(name="task-ball-ry", type=mujoco.mjtJoint.mjJNT_HINGE, axis=[0, 1, 0], **loose)
        else:
            ball.add_joint(name="task-ball", type=mujoco.mjtJoint.mjJNT_FREE, damping=0.0, armature=0.0)
        ball.add_geom(name="task-ball", type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[BALL_RADIUS, 0, 0], mass=BALL_MASS,
                      condim=6, friction=[0.7, 0.005, 0.005], solref=[-10000, -30], solimp=[0.9, 0.95, 0.001, 0.5, 2],
                      priority=1, contype=1, conaffinity=1, material="task-ball", rgba=[1, 1, 1, 1])

    def _add_wall(self, spec: mujoco.MjSpec) -> None:
        """A plane facing the robot (normal -x) with the goals drawn on it as white discs in red rings."""
        spec.add_material(name="task-wall", reflectance=0.5, shininess=1, emission=0.5, specular=1)
        wall = spec.worldbody.add_geom(name="task-wall", type=mujoco.mjtGeom.mjGEOM_PLANE, material="task-wall",
                                       size=[WALL_HALF_WIDTH, WALL_HALF_HEIGHT, 1], rgba=[0, 0.5, 0.1, 1],
                                       pos=[self.wall_x, 0, WALL_HALF_HEIGHT], contype=1, conaffinity=1)
        wall.alt.type = mujoco.mjtOrientation.mjORIENTATION_XYAXES
        wall.alt.xyaxes = [0, -1, 0, 0, 0, 1]
        disc = dict(type=mujoco.mjtGeom.mjGEOM_ELLIPSOID, material="task-wall")  # glowing: the light is overhead
        ring = GOAL_RADIUS + 0.05
        for goal in self.goals:
            centre = [self.wall_x, goal.y, goal.z]
            spec.worldbody.add_site(name=f"task-{goal.name}", size=[0.01, GOAL_RADIUS, GOAL_RADIUS], pos=centre,
                                    rgba=[1, 1, 1, 1], **disc)
            spec.worldbody.add_site(name=f"task-{goal.name}-ring", size=[0.005, ring, ring], pos=centre,
                                    rgba=[1, 0, 0, 1], **disc)

    def _add_line(self, spec: mujoco.MjSpec) -> None:
        """The line to shoot from: a yellow-and-black strip on the floor (a site, so it does not collide)."""
        spec.add_texture(name="task-line", type=mujoco.mjtTexture.mjTEXTURE_2D,
                         builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER, width=50, height=50, rgb1=[0, 0, 0],
                         rgb2=[1, 0.8, 0])
        material = spec.add_material(name="task-line", texrepeat=[1, 10], texuniform=False)
        material.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = "task-line"
        spec.worldbody.add_site(name="task-line", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.1, WALL_HALF_WIDTH, 0.01],
                                pos=[self.line_x, 0, 0.02], material="task-line")

    def init_task(self) -> None:
        m = self.model
        self._ball_geom = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "task-ball")
        self._wall_geom = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "task-wall")
        if self.robot.planar:  # slides x, z and the spin hinge: one qpos and one qvel each
            joints = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f"task-ball-{axis}") for axis in ("x", "z", "ry")]
            self._ball_qpos = m.jnt_qposadr[joints]
            self._ball_qvel = m.jnt_dofadr[joints]
        else:  # the free joint: qpos x, y, z, quaternion; qvel linear then angular velocity
            joint = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "task-ball")
            adr = int(m.jnt_qposadr[joint])
            self._ball_qpos = adr + np.arange(3)
            self._ball_quat = slice(adr + 3, adr + 7)
            self._ball_qvel = m.jnt_dofadr[joint] + np.arange(6)
        self._ball_x = int(self._ball_qpos[0])
        self.wall_hit: tuple[float, float] | None = None

    # ---------------------------------------------------------------------------------------------------- episode

    def reset_task(self) -> None:
        """Ball at (init_distance, 0, r + 0.1) with bisk's small noise: U(-0.01, 0.01) on qpos, 0.01 N(0, 1) on qvel."""
        d, rng = self.data, self.np_random
        start = np.zeros(len(self._ball_qpos))
        start[0] = self.options["init_distance"]
        start[1 if self.robot.planar else 2] = BALL_RADIUS + 0.1
        d.qpos[self._ball_qpos] = start + rng.uniform(-0.01, 0.01, size=len(start))
        if not self.robot.planar:
            quat = np.array([1.0, 0.0, 0.0, 0.0]) + rng.uniform(-0.01, 0.01, size=4)
            d.qpos[self._ball_quat] = quat / np.linalg.norm(quat)
        d.qvel[self._ball_qvel] = 0.01 * rng.standard_normal(len(self._ball_qvel))
        self.wall_hit = None

    def substep_hook(self) -> None:
        """Record where the ball centre (y, z) first touches the wall in this control step."""
        d = self.data
        if self.wall_hit is not None or d.qpos[self._ball_x] + BALL_RADIUS + NEAR_WALL < self.wall_x:
            return  # already hit, or too far from the wall for any contact (a cheap test before the scan)
        contact = d.contact
        pairs = contact.geom  # [ncon, 2] geom ids, in either order
        ball_wall = (((pairs[:, 0] == self._ball_geom) & (pairs[:, 1] == self._wall_geom))
                     | ((pairs[:, 0] == self._wall_geom) & (pairs[:, 1] == self._ball_geom)))
        if np.any(ball_wall & (contact.dist <= 0)):
            position = d.qpos[self._ball_qpos]  # 2-D: x, z, spin; 3-D: x, y, z
            self.wall_hit = (0.0, float(position[1])) if self.robot.planar else (float(position[1]), float(position[2]))

    def task_reward(self) -> tuple[float, bool]:
        """The goal's score when the ball hit the wall in this step (0 past the line); a wall hit ends the episode."""
        hit, self.wall_hit = self.wall_hit, None
        if hit is None:
            return 0.0, False
        if self.torso_x() > self.line_x:
            return 0.0, True
        return goal_score(hit, self.goals), True

    # ---------------------------------------------------------------------------------------------------- observation

    def task_observation_space(self) -> dict[str, spaces.Box]:
        size = 6 if self.robot.planar else 9
        return {"ball": spaces.Box(-np.inf, np.inf, (size,), np.float32)}

    def task_observation(self) -> dict[str, np.ndarray]:
        """Ball position (x, and y in 3-D, relative to the torso; z; 2-D spin wrapped to [-pi, pi]), then velocity."""
        d = self.data
        position = d.qpos[self._ball_qpos]
        position[0] -= d.xpos[self.torso_id, 0]
        if self.robot.planar:
            position[2] = math.remainder(position[2], 2 * math.pi)
        else:
            position[1] -= d.xpos[self.torso_id, 1]
        return {"ball": np.concatenate([position, d.qvel[self._ball_qvel]]).astype(np.float32)}
