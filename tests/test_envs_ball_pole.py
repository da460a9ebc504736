"""Tests of the GoalWall and PoleBalance tasks: API checks, scoring, termination rules and observations."""

from __future__ import annotations

import math

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.robots import ROBOTS
from envs.tasks.goalwall import BALL_RADIUS, GOAL_RADIUS, GOALS_2D, GOALS_3D, GoalWall, goal_score
from envs.tasks.polebalance import PoleBalance

# --------------------------------------------------------------------------------------------------------------
# helpers


def qpos_adr(env: gym.Env, joint: str) -> int:
    return int(env.model.jnt_qposadr[mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_JOINT, joint)])


def dof_adr(env: gym.Env, joint: str) -> int:
    return int(env.model.jnt_dofadr[mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_JOINT, joint)])


def set_torso_x(env: gym.Env, x: float) -> None:
    """Move the robot along the corridor (planar: the rootx slide; humanoids: the free joint's x)."""
    env.data.qpos[qpos_adr(env, "rootx" if env.robot.planar else "root")] = x
    mujoco.mj_forward(env.model, env.data)


def place_ball(env: GoalWall, y: float, z: float, x: float | None = None, vx: float = 2.0) -> None:
    """Put the ball centre at (x, y, z), by default 1 cm short of the wall, flying at it with speed ``vx``."""
    d = env.data
    x = env.wall_x - BALL_RADIUS - 0.01 if x is None else x
    if env.robot.planar:
        d.qpos[qpos_adr(env, "task-ball-x")], d.qpos[qpos_adr(env, "task-ball-z")] = x, z
        d.qvel[dof_adr(env, "task-ball-x")], d.qvel[dof_adr(env, "task-ball-z")] = vx, 0.0
    else:
        adr, dof = qpos_adr(env, "task-ball"), dof_adr(env, "task-ball")
        d.qpos[adr : adr + 3] = x, y, z
        d.qvel[dof : dof + 6] = [vx, 0, 0, 0, 0, 0]
    mujoco.mj_forward(env.model, d)


def shoot(env: gym.Env, velocity: tuple[float, ...], seed: int = 0) -> tuple[float, int]:
    """bisk's test shot: kick the ball with ``velocity`` (x, z) or (x, y, z), stand still; (total score, steps)."""
    env.reset(seed=seed)
    u = env.unwrapped
    if u.robot.planar:
        u.data.qvel[[dof_adr(u, "task-ball-x"), dof_adr(u, "task-ball-z")]] = velocity
    else:
        dof = dof_adr(u, "task-ball")
        u.data.qvel[dof : dof + 3] = velocity
    total, steps, ended = 0.0, 0, False
    while not ended:
        _, _, terminated, truncated, info = env.step(np.zeros(env.action_space.shape))
        total, steps, ended = total + info["score"], steps + 1, terminated or truncated
    return total, steps


def rollout(env: gym.Env, seed: int, steps: int = 15) -> list[dict[str, np.ndarray]]:
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(0)
    out = [obs]
    for _ in range(steps):
        obs, _, terminated, _, _ = env.step(rng.uniform(-1, 1, env.action_space.shape))
        out.append(obs)
        if terminated:
            break
    return out


# --------------------------------------------------------------------------------------------------------------
# both tasks


@pytest.mark.parametrize("task", ["GoalWall", "PoleBalance"])
@pytest.mark.parametrize("robot", list(ROBOTS))
def test_check_env_passes(task: str, robot: str) -> None:
    check_env(envs.make(task, robot).unwrapped, skip_render_check=True)


def test_tasks_are_registered_with_their_episode_lengths() -> None:
    assert envs.TASKS["GoalWall"][1] == 250 and envs.TASKS["PoleBalance"][1] == 1000
    assert envs.make("GoalWall", "walker")._max_episode_steps == 250
    env = gym.make("hsd3/PoleBalance-humanoid-v1")
    assert env.spec.max_episode_steps == 1000 and isinstance(env.unwrapped, PoleBalance)


@pytest.mark.parametrize("task", ["GoalWall", "PoleBalance"])
def test_same_seed_same_actions_same_trajectory(task: str) -> None:
    env = envs.make(task, "walker")
    first, second, other = rollout(env, 3), rollout(env, 3), rollout(env, 4)
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert all(np.array_equal(a[key], b[key]) for key in a)
    key = "ball" if task == "GoalWall" else "pole"
    assert not np.array_equal(first[0][key], other[0][key])


@pytest.mark.parametrize("task", ["GoalWall", "PoleBalance"])
@pytest.mark.parametrize("robot", ["walker", "humanoid"])
def test_task_joints_and_bodies_stay_out_of_the_robot_observation(task: str, robot: str) -> None:
    env = envs.make(task, robot).unwrapped
    assert env.observation_space["observation"].shape == ((60,) if robot == "walker" else (151,))
    names = [env.model.joint(j).name for j in range(env.model.njnt)]
    assert any(name.startswith("task-") for name in names)  # the task added joints, named for exclusion


# --------------------------------------------------------------------------------------------------------------
# GoalWall


def test_goal_score_counts_the_goal_within_its_radius() -> None:
    assert goal_score((0.0, 1.0), GOALS_2D) == 1.0
    assert goal_score((0.0, 1.0 + GOAL_RADIUS - 1e-6), GOALS_2D) == 1.0
    assert goal_score((0.0, 1.0 + GOAL_RADIUS + 1e-6), GOALS_2D) == 0.0
    assert goal_score((-1.0, 0.65), GOALS_3D) == 1.0
    assert goal_score((1.0 + 0.3, 1.35 - 0.2), GOALS_3D) == 2.0
    assert goal_score((0.0, 1.0), GOALS_3D) == 0.0


@pytest.mark.parametrize(("robot", "y", "z", "score"), [("walker", 0.0, 1.0, 1.0), ("walker", 0.0, 1.35, 1.0),
                                                      ("walker", 0.0, 1.5, 0.0), ("halfcheetah", 0.0, 0.75, 1.0),
                                                      ("humanoid", -1.0, 0.65, 1.0), ("humanoid", 1.0, 1.35, 2.0),
                                                      ("humanoid", 0.0, 1.0, 0.0)])
def test_a_ball_hitting_the_wall_ends_the_episode_and_scores_its_goal(robot: str, y: float, z: float,
                                                                      score: float) -> None:
    env = envs.make("GoalWall", robot).unwrapped
    env.reset(seed=0)
    place_ball(env, y, z)
    _, reward, terminated, _, info = env.step(np.zeros(env.action_space.shape))
    assert terminated and info["score"] == score and reward == score


def test_the_ball_flying_towards_the_wall_does_not_end_the_episode_early() -> None:
    env = envs.make("GoalWall", "walker").unwrapped
    env.reset(seed=0)
    place_ball(env, 0.0, 1.0, x=env.wall_x - 1.0, vx=2.0)  # 0.85 m to go: about 17 steps
    _, reward, terminated, _, info = env.step(np.zeros(6))
    assert not terminated and info["score"] == reward == 0.0


@pytest.mark.parametrize("robot", ["walker", "humanoid"])
def test_no_score_while_the_torso_is_past_the_line(robot: str) -> None:
    env = envs.make("GoalWall", robot).unwrapped
    env.reset(seed=0)
    assert env.line_x == pytest.approx(4.0) and env.wall_x == pytest.approx(6.5)
    set_torso_x(env, env.line_x + 0.3)
    place_ball(env, -1.0 if robot == "humanoid" else 0.0, 0.65 if robot == "humanoid" else 1.0)
    _, reward, terminated, _, info = env.step(np.zeros(env.action_space.shape))
    assert terminated and info["score"] == 0.0 and reward == 0.0


@pytest.mark.parametrize(("robot", "velocity", "expected"), [("walker", (10, 4), 1.0), ("walker", (10, 0), 0.0),
                                                             ("humanoid", (10, -3, 2.5), 1.0),
                                                             ("humanoid", (10, 3, 4), 2.0)])
def test_kicked_ball_scores_like_the_original_tests(robot: str, velocity: tuple[float, ...], expected: float) -> None:
    """bisk's test_goalwall shots: the ball flies 4 m into the wall within the 250 steps."""
    total, steps = shoot(envs.make("GoalWall", robot), velocity)
    assert total == expected and steps < 250


@pytest.mark.parametrize("robot", ["walker", "humanoid"])
def test_ball_observation_is_relative_position_then_velocity(robot: str) -> None:
    env = envs.make("GoalWall", robot).unwrapped
    obs, _ = env.reset(seed=5)
    d, torso = env.data, env.data.xpos[env.torso_id]
    if robot == "walker":
        x, z, ry = (d.qpos[qpos_adr(env, f"task-ball-{n}")] for n in ("x", "z", "ry"))
        vel = [d.qvel[dof_adr(env, f"task-ball-{n}")] for n in ("x", "z", "ry")]
        expected = [x - torso[0], z, ry, *vel]
    else:
        adr, dof = qpos_adr(env, "task-ball"), dof_adr(env, "task-ball")
        expected = [d.qpos[adr] - torso[0], d.qpos[adr + 1] - torso[1], d.qpos[adr + 2], *d.qvel[dof : dof + 6]]
    assert obs["ball"] == pytest.approx(np.array(expected, np.float32), abs=1e-6)
    assert obs["ball"][0] == pytest.approx(2.5, abs=0.15)  # 2.5 m ahead of the torso, up to the reset noise
    assert obs["ball"][1 if robot == "walker" else 2] == pytest.approx(BALL_RADIUS + 0.1, abs=0.02)


def test_ball_spin_angle_is_wrapped_to_pi() -> None:
    env = envs.make("GoalWall", "walker").unwrapped
    env.reset(seed=0)
    env.data.qpos[qpos_adr(env, "task-ball-ry")] = 7.0
    assert env.task_observation()["ball"][2] == pytest.approx(7.0 - 2 * math.pi, abs=1e-6)


def test_goalwall_options_and_camera() -> None:
    env = GoalWall("walker", init_distance=3.0)
    assert (env.wall_x, env.line_x, env.camera) == (7.0, 4.5, "sideline")
    with pytest.raises(ValueError, match="init_distance"):
        GoalWall("walker", init_distance=0.1)
    with pytest.raises(ValueError, match="touch_ball_reward"):
        GoalWall("walker", touch_ball_reward=1.0)


# --------------------------------------------------------------------------------------------------------------
# PoleBalance


def tilt_pole(env: PoleBalance, angle: float, pole: int = 0) -> None:
    """Tilt one pole joint by ``angle`` (rad): about y for hinges, about x for ball joints; velocities zeroed."""
    d, adr = env.data, qpos_adr(env, f"task-pole-{pole}")
    if env.robot.planar:
        d.qpos[adr] = angle
    else:
        d.qpos[adr : adr + 4] = [math.cos(angle / 2), math.sin(angle / 2), 0.0, 0.0]
    d.qvel[:] = 0.0
    mujoco.mj_forward(env.model, d)


@pytest.mark.parametrize("robot", list(ROBOTS))
def test_pole_scores_one_per_step_while_upright(robot: str) -> None:
    env = envs.make("PoleBalance", robot).unwrapped
    env.reset(seed=0)
    assert env.tower_height() == pytest.approx(0.5, abs=0.05)
    for _ in range(3):
        _, reward, terminated, _, info = env.step(np.zeros(env.action_space.shape))
        assert not terminated and reward == info["score"] == 1.0


@pytest.mark.parametrize("robot", ["walker", "halfcheetah", "humanoid"])
def test_a_tilted_pole_ends_the_episode_and_that_step_scores_zero(robot: str) -> None:
    env = envs.make("PoleBalance", robot).unwrapped
    env.reset(seed=0)
    tilt_pole(env, math.radians(60))
    _, reward, terminated, _, info = env.step(np.zeros(env.action_space.shape))
    assert terminated and reward == info["score"] == 0.0 and not info["fell_over"]


def test_the_tilt_threshold_is_acos_0_8() -> None:
    env = envs.make("PoleBalance", "walker").unwrapped
    env.reset(seed=0)
    rooty = qpos_adr(env, "rooty")
    for angle, ends in ((30.0, False), (45.0, True)):
        env.data.qpos[rooty] = 0.0  # torso upright: the pole's tilt is its joint angle
        tilt_pole(env, math.radians(angle))
        assert env.tower_height() == pytest.approx(0.5 * math.cos(math.radians(angle)))
        assert env.task_reward() == ((0.0, True) if ends else (1.0, False))


def test_a_fall_gives_minus_one_and_scores_zero() -> None:
    env = envs.make("PoleBalance", "walker").unwrapped
    env.reset(seed=0)
    env.data.qpos[qpos_adr(env, "rootz")] = 0.5  # torso below the fall height, pole still upright
    mujoco.mj_forward(env.model, env.data)
    _, reward, terminated, _, info = env.step(np.zeros(6))
    assert terminated and info["fell_over"] and reward == -1.0 and info["score"] == 0.0


@pytest.mark.parametrize("robot", ["walker", "humanoid"])
def test_pole_observation_is_position_then_real_velocity(robot: str) -> None:
    """The fix of bisk's bug: the second half is qvel, not qpos read twice."""
    env = envs.make("PoleBalance", robot).unwrapped
    env.reset(seed=1)
    for _ in range(4):
        obs, *_ = env.step(np.full(env.action_space.shape, 0.5))
    adr, dof = qpos_adr(env, "task-pole-0"), dof_adr(env, "task-pole-0")
    nq, nv = (1, 1) if robot == "walker" else (4, 3)
    assert obs["pole"].shape == (nq + nv,)
    assert obs["pole"][:nq] == pytest.approx(env.data.qpos[adr : adr + nq].astype(np.float32))
    assert obs["pole"][nq:] == pytest.approx(env.data.qvel[dof : dof + nv].astype(np.float32))
    assert np.abs(obs["pole"][nq:]).max() > 1e-3  # the pole is moving, so velocity is not a copy of position
    assert not np.allclose(obs["pole"][nq:], obs["pole"][:nv])


def test_pole_has_its_mass_and_the_cheetah_keeps_its_total_mass() -> None:
    env = envs.make("PoleBalance", "halfcheetah", pole_mass=0.7).unwrapped
    pole = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_BODY, "task-pole-0")
    assert env.model.body_mass[pole] == pytest.approx(0.7)
    assert pole not in env._body_idx
    assert env.model.body_mass[env._body_idx].sum() == pytest.approx(14.0)


@pytest.mark.parametrize("robot", ["walker", "humanoid"])
def test_two_stacked_poles(robot: str) -> None:
    env = envs.make("PoleBalance", robot, n_poles=2).unwrapped
    obs, _ = env.reset(seed=0)
    assert obs["pole"].shape == ((4,) if robot == "walker" else (14,))
    assert env.tower_height() == pytest.approx(1.0, abs=0.1)
    if robot == "walker":
        env.data.qpos[qpos_adr(env, "rooty")] = 0.0
        tilt_pole(env, 0.0, pole=0)
        tilt_pole(env, math.radians(30), pole=1)  # 0.5 + 0.5 cos 30 = 0.93 >= 0.8: still up
        assert env.task_reward() == (1.0, False)
        tilt_pole(env, math.radians(60), pole=1)  # 0.5 + 0.5 cos 60 = 0.75 < 0.8: down
        assert env.task_reward() == (0.0, True)


def test_polebalance_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="n_poles"):
        PoleBalance("walker", n_poles=0)
    with pytest.raises(ValueError, match="pole_length"):
        PoleBalance("walker", pole_length=-1.0)
    with pytest.raises(ValueError, match="pole_mass"):
        PoleBalance("walker", pole_mass="heavy")
