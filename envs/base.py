"""The base class of every task: an arena with a robot, built with ``mujoco.MjSpec``, as a gymnasium 1.x env.

A task subclasses :class:`BiskEnv` (named after the benchmark it reimplements) and fills in four hooks:

- ``build_task(spec)``: add obstacles to the arena (mocap bodies, so they can move without recompiling);
- ``reset_task()``: re-randomise them with ``self.np_random`` (sizes, positions);
- ``task_observation()`` / ``task_observation_space()``: the extra observation key (e.g. ``next_hurdle``);
- ``task_reward()``: the sparse reward of this step (``info["score"]``) and whether the task ended.

Everything else is shared: building and compiling the model once, reset noise, stepping with frame skip, the
``observation`` features (joint positions, joint velocities, clipped external contact forces per body: bisk's
``joints`` features), falls (reward -1 and ``terminated``), and rendering through ``mujoco.Renderer``.

Differences from bisk (dm_control):

1. Plain ``mujoco`` bindings and ``MjSpec`` instead of dm_control's ``mjcf``; robot names carry no ``robot/`` prefix.
2. Obstacles are mocap bodies moved through ``data.mocap_pos``; resized geoms get their bounding sphere and box
   updated too (``geom_rbound``/``geom_aabb``), which static world geoms would miss in MuJoCo's midphase.
3. One ``mj_step(nstep=frame_skip)`` per control step, then ``mj_kinematics`` so positions match the new state
   (dm_control's legacy stepping gives the same), unless a task asks for a hook after every substep.
4. A NaN or infinite action raises a ``ValueError`` instead of silently corrupting the simulation.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from envs.robots import Robot, get_robot, robot_spec

__all__ = ["ARENA_HALF_WIDTH", "BiskEnv"]

# Bound once: attribute lookups on the mujoco module cost measurable time in the step loop.
_mj_step, _mj_kinematics, _mj_rne_post_constraint = mujoco.mj_step, mujoco.mj_kinematics, mujoco.mj_rnePostConstraint

ARENA_HALF_WIDTH = 8.0  # the corridor is 16 m wide, as in bisk
OBS_CLIP = 1.0  # cfrc_ext entries are clipped to [-1, 1]


class BiskEnv(gym.Env):
    """A robot in an arena. Subclasses add the task; see the module docstring for the hooks."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 40}
    #: keyword arguments a task accepts, with defaults (documented per task)
    task_kwargs: dict[str, Any] = {}
    #: whether ``substep_hook`` must run after every physics substep (contacts with obstacles)
    needs_substeps = False
    #: joints (and bodies attached to the robot) added by the task that are not part of the robot's features
    extra_joint_prefix = "task-"

    def __init__(self, robot: str = "walker", render_mode: str | None = None, width: int = 320, height: int = 240,
                 camera: str = "side", shadows: bool = False, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(self.task_kwargs))
        if unknown:
            valid = ", ".join(sorted(self.task_kwargs)) or "none"
            raise ValueError(f"{type(self).__name__}: unknown options {unknown}; valid: {valid}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array'; got {render_mode!r}")
        self.options = {**self.task_kwargs, **kwargs}
        self.robot: Robot = get_robot(robot)
        self.render_mode, self.width, self.height, self.camera, self.shadows = render_mode, width, height, camera, shadows
        self.frame_skip = self.robot.frame_skip
        spec = self._build_spec()
        self.model = spec.compile()
        self.data = mujoco.MjData(self.model)
        self._apply_total_mass()
        self._index_robot()
        self.init_task()
        self.dt = self.model.opt.timestep * self.frame_skip
        self.metadata = {**self.metadata, "render_fps": int(round(1.0 / self.dt))}
        n_act = self.model.nu
        self._action_shape = (n_act,)
        self.action_space = spaces.Box(-1.0, 1.0, (n_act,), np.float32)
        self.observation_space = spaces.Dict({
            "observation": spaces.Box(-np.inf, np.inf, (self._n_features,), np.float32),
            **self.task_observation_space(),
        })
        self._renderer: mujoco.Renderer | None = None

    # ---------------------------------------------------------------------------------------------------------- model

    def _build_spec(self) -> mujoco.MjSpec:
        spec = robot_spec(self.robot.name)
        spec.visual.global_.offwidth = max(self.width, 720)
        spec.visual.global_.offheight = max(self.height, 720)
        self._add_arena(spec)
        self.build_task(spec)
        return spec

    def _add_arena(self, spec: mujoco.MjSpec) -> None:
        """Checkered floor, skybox, a light that follows the robot, invisible side and back walls (bisk's corridor)."""
        spec.add_texture(name="skybox", type=mujoco.mjtTexture.mjTEXTURE_SKYBOX, builtin=mujoco.mjtBuiltin.mjBUILTIN_GRADIENT,
                         rgb1=[0.4, 0.6, 0.8], rgb2=[0, 0, 0], width=200, height=200)
        spec.add_texture(name="grid", type=mujoco.mjtTexture.mjTEXTURE_2D, builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER,
                         rgb1=[0.1, 0.2, 0.3], rgb2=[0.2, 0.3, 0.4], width=300, height=300, mark=mujoco.mjtMark.mjMARK_EDGE,
                         markrgb=[0.2, 0.3, 0.4])
        material = spec.add_material(name="grid", texrepeat=[1, 1], texuniform=True, reflectance=0.2)
        material.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = "grid"
        world = spec.worldbody
        # The light rides with the robot (tracking its torso's subtree), so it lights the robot wherever it goes.
        spec.body(self.robot.torso).add_light(name="light", pos=[0, 0, 4], dir=[0, 0, -1],
                                              mode=mujoco.mjtCamLight.mjCAMLIGHT_TRACKCOM, diffuse=[0.8, 0.8, 0.8])
        w = ARENA_HALF_WIDTH
        if self.has_floor():
            world.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[100, w, 1], pos=[100 - w, 0, 0],
                           material="grid", contype=1, conaffinity=1)
        # Thin boxes rather than infinite planes: the broad phase then skips them unless the robot is close.
        wall = dict(type=mujoco.mjtGeom.mjGEOM_BOX, rgba=[0, 0, 0, 0], contype=1, conaffinity=1)
        world.add_geom(name="wall-left", pos=[100 - w, w + 0.1, 2], size=[100, 0.1, 2], **wall)
        world.add_geom(name="wall-right", pos=[100 - w, -w - 0.1, 2], size=[100, 0.1, 2], **wall)
        world.add_geom(name="wall-back", pos=[-w / 2 - 0.1, 0, 2], size=[0.1, w, 2], **wall)

    def _apply_total_mass(self) -> None:
        """Scale the robot's masses to its declared total (Gym's settotalmass for the cheetah)."""
        if self.robot.total_mass is None:
            return
        robot_bodies = self._robot_body_ids()
        scale = self.robot.total_mass / float(self.model.body_mass[robot_bodies].sum())
        self.model.body_mass[robot_bodies] *= scale
        self.model.body_inertia[robot_bodies] *= scale

    def _robot_body_ids(self) -> np.ndarray:
        torso = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, self.robot.torso)
        task = self.extra_joint_prefix  # a task's bodies on the robot (PoleBalance's pole) are not robot parts
        return np.array([b for b in range(self.model.nbody)
                         if self._is_under(b, torso) and not (self.model.body(b).name or "").startswith(task)])

    def _is_under(self, body: int, root: int) -> bool:
        while body > 0:
            if body == root:
                return True
            body = int(self.model.body_parentid[body])
        return False

    def _index_robot(self) -> None:
        """Indices of the robot's joints and bodies for the ``observation`` features, and its initial qpos."""
        m = self.model
        joints = [j for j in range(m.njnt) if not (m.joint(j).name or "").startswith(self.extra_joint_prefix)]
        self._qpos_idx = np.concatenate([np.arange(m.jnt_qposadr[j], m.jnt_qposadr[j] + _qpos_width(m, j)) for j in joints])
        self._qvel_idx = np.concatenate([np.arange(m.jnt_dofadr[j], m.jnt_dofadr[j] + _dof_width(m, j)) for j in joints])
        self._body_idx = self._robot_body_ids()
        self._n_features = len(self._qpos_idx) + len(self._qvel_idx) + 6 * len(self._body_idx)
        self._qpos_sel, self._qvel_sel, self._body_sel = (_as_index(i) for i in (self._qpos_idx, self._qvel_idx,
                                                                                 self._body_idx))
        self._obs_split = (len(self._qpos_idx), len(self._qpos_idx) + len(self._qvel_idx))
        self._feature_views = self._views()
        self._views_are_live = all(isinstance(sel, slice) for sel in (self._qpos_sel, self._qvel_sel, self._body_sel))
        self.torso_id = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, self.robot.torso)
        # Views into MjData, kept: each attribute access on MjData builds a new numpy wrapper (about 0.5 us).
        self._ctrl, self._qpos = self.data.ctrl, self.data.qpos
        self._torso_xpos = self.data.xpos[self.torso_id]
        self._torso_up = self.data.xmat[self.torso_id, 6:9]
        pitch_joint = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "rooty")
        self._pitch_adr = int(m.jnt_qposadr[pitch_joint]) if pitch_joint >= 0 else None
        self.init_qpos = m.qpos0.copy()
        for name, value in self.robot.root_qpos.items():
            adr = m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)]
            values = np.atleast_1d(np.asarray(value, dtype=float))
            self.init_qpos[adr : adr + len(values)] = values

    def _views(self) -> tuple[np.ndarray, ...]:
        """The data arrays the features come from; views (no copy) where the indices are contiguous slices."""
        d = self.data
        forces = d.cfrc_ext[self._body_sel]
        return (d.qpos[self._qpos_sel], d.qvel[self._qvel_sel], forces.reshape(-1))

    def _feature_arrays(self) -> tuple[np.ndarray, ...]:
        """The current feature sources (fresh copies where fancy indexing is needed)."""
        return self._feature_views if self._views_are_live else self._views()

    # ------------------------------------------------------------------------------------------------------ task hooks

    def has_floor(self) -> bool:
        """Whether the arena has the flat floor plane (Gaps builds its own ground)."""
        return True

    def build_task(self, spec: mujoco.MjSpec) -> None:
        """Add the task's obstacles to ``spec`` (called once, before compiling)."""

    def init_task(self) -> None:
        """Cache ids of the task's bodies and geoms (called once, after compiling)."""

    def reset_task(self) -> None:
        """Re-randomise the obstacles for a new episode with ``self.np_random``."""

    def task_observation_space(self) -> dict[str, spaces.Box]:
        """Spaces of the task's extra observation keys."""
        return {}

    def task_observation(self) -> dict[str, np.ndarray]:
        """Values of the task's extra observation keys."""
        return {}

    def task_reward(self) -> tuple[float, bool]:
        """(sparse reward of this step = ``info["score"]``, whether the task ended the episode)."""
        return 0.0, False

    def substep_hook(self) -> None:
        """Runs after every physics substep when ``needs_substeps`` is set (e.g. to watch contacts)."""

    def torso_height(self) -> float:
        """Height used for the fall check; Stairs replaces it by the height above the ground below."""
        return float(self._torso_xpos[2])

    # ---------------------------------------------------------------------------------------------------- gym API

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)  # also zeroes ctrl
        qpos, qvel = self._qpos, d.qvel
        qpos[:] = self.init_qpos
        qpos[self._qpos_sel] += self.np_random.uniform(-0.1, 0.1, size=len(self._qpos_idx))
        qvel[self._qvel_sel] = 0.1 * self.np_random.standard_normal(len(self._qvel_idx))
        self.reset_task()
        _mj_step(m, d)  # one physics step with zero control (as bisk): contacts and forces for the first obs
        _mj_kinematics(m, d)
        _mj_rne_post_constraint(m, d)
        return self._observation(), {}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        if not isinstance(action, np.ndarray):
            action = np.asarray(action, dtype=np.float64)
        if action.shape != self._action_shape:
            raise ValueError(f"action must have shape {self._action_shape}; got {action.shape}")
        if not math.isfinite(action.dot(action)):  # NaN and inf propagate; cheaper than np.isfinite().all()
            raise ValueError(f"action contains NaN or inf: {action}")
        self._ctrl[:] = action  # MuJoCo clamps to the actuators' ctrlrange [-1, 1]
        self._simulate()
        score, task_done = self.task_reward()
        pitch = float(self._qpos[self._pitch_adr]) if self._pitch_adr is not None else 0.0
        fell = self.robot.fell_over(self.torso_height(), pitch, float(self._torso_up[2]))
        reward = -1.0 if fell else score
        info = {"score": score, "fell_over": fell}
        return self._observation(), reward, bool(fell or task_done), False, info

    def _simulate(self) -> None:
        m, d = self.model, self.data
        if self.needs_substeps:
            for _ in range(self.frame_skip):
                _mj_step(m, d)
                self.substep_hook()
        else:
            _mj_step(m, d, self.frame_skip)
        _mj_kinematics(m, d)
        _mj_rne_post_constraint(m, d)

    def _observation(self) -> dict[str, np.ndarray]:
        features = np.concatenate(self._feature_arrays(), dtype=np.float32)
        forces = features[self._obs_split[1] :]
        np.minimum(forces, OBS_CLIP, out=forces)  # two ufuncs: several times cheaper than np.clip on small arrays
        np.maximum(forces, -OBS_CLIP, out=forces)
        obs = self.task_observation()
        obs["observation"] = features
        return obs

    def torso_x(self) -> float:
        """Progress along the corridor: the torso's world x position."""
        return float(self._torso_xpos[0])

    # ---------------------------------------------------------------------------------------------------- rendering

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            if not self.shadows:
                self.model.vis.quality.shadowsize = 0  # no shadow map to allocate: the first frame comes 10x sooner
            self._renderer = mujoco.Renderer(self.model, self.height, self.width)
            flags = self._renderer.scene.flags
            flags[mujoco.mjtRndFlag.mjRND_SHADOW] = int(self.shadows)
            flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = int(self.shadows)
        self._renderer.update_scene(self.data, camera=self.camera)
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def _qpos_width(model: mujoco.MjModel, joint: int) -> int:
    kind = int(model.jnt_type[joint])
    return 7 if kind == int(mujoco.mjtJoint.mjJNT_FREE) else 4 if kind == int(mujoco.mjtJoint.mjJNT_BALL) else 1


def _dof_width(model: mujoco.MjModel, joint: int) -> int:
    kind = int(model.jnt_type[joint])
    return 6 if kind == int(mujoco.mjtJoint.mjJNT_FREE) else 3 if kind == int(mujoco.mjtJoint.mjJNT_BALL) else 1


def _as_index(idx: np.ndarray) -> slice | np.ndarray:
    """A slice when the indices are contiguous (numpy indexes slices several times faster)."""
    if len(idx) and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))):
        return slice(int(idx[0]), int(idx[0]) + len(idx))
    return idx
