"""Tests of the envs core: robots, the base env, Floor and Hurdles, make() and the gymnasium registry."""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.robots import ROBOTS, robot_spec
from envs.tasks.hurdles import hurdle_tops


@pytest.mark.parametrize("robot", list(ROBOTS))
def test_robot_models_compile_with_the_original_sizes(robot: str) -> None:
    env = envs.make("Floor", robot).unwrapped
    sizes = {"walker": (9, 9, 6, 60), "halfcheetah": (9, 9, 6, 60), "humanoid": (28, 27, 21, 151),
             "humanoidpc": (28, 27, 21, 151)}[robot]
    assert (env.model.nq, env.model.nv, env.model.nu, env.observation_space["observation"].shape[0]) == sizes
    rate = {"walker": 0.025, "halfcheetah": 0.05, "humanoid": 0.025, "humanoidpc": 0.025}[robot]
    assert env.dt == pytest.approx(rate)


def test_humanoidpc_actuators_are_pd_controllers_around_the_range_midpoint() -> None:
    model = robot_spec("humanoidpc").compile()
    i = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, "abdomen_y")
    low, high = np.deg2rad([-75, 30])
    kp = 40.0
    assert model.actuator_gainprm[i, 0] == pytest.approx(kp * (high - low) / 2)
    assert model.actuator_biasprm[i, :3] == pytest.approx([kp * (low + high) / 2, -kp, 0.0])
    assert list(model.actuator_forcerange[i]) == [-kp, kp]


def test_halfcheetah_has_the_declared_total_mass() -> None:
    env = envs.make("Floor", "halfcheetah").unwrapped
    assert env.model.body_mass[env._body_idx].sum() == pytest.approx(14.0)


@pytest.mark.parametrize("task", ["Floor", "Hurdles"])
@pytest.mark.parametrize("robot", list(ROBOTS))
def test_check_env_passes(task: str, robot: str) -> None:
    check_env(envs.make(task, robot).unwrapped, skip_render_check=True)


def _rollout(env: gym.Env, seed: int, steps: int = 20) -> list[np.ndarray]:
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(0)
    out = [obs["observation"]]
    for _ in range(steps):
        obs, *_ = env.step(rng.uniform(-1, 1, env.action_space.shape))
        out.append(obs["observation"])
    return out


def test_same_seed_same_actions_same_trajectory() -> None:
    env = envs.make("Hurdles", "walker")
    first, second = _rollout(env, 7), _rollout(env, 7)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    third = _rollout(env, 8)
    assert not np.array_equal(first[0], third[0])


def test_hurdles_are_rerandomised_on_reset_without_recompiling() -> None:
    env = envs.make("Hurdles", "walker").unwrapped
    model = env.model
    env.reset(seed=1)
    first = env.course_x.copy(), env.tops.copy()
    env.reset(seed=2)
    assert env.model is model
    assert not np.allclose(first[0], env.course_x) and not np.allclose(first[1], env.tops)
    assert np.all(np.diff(env.course_x) >= 3) and np.all(np.diff(env.course_x) <= 6)
    assert 4 <= env.course_x[0] <= 7
    assert np.all((env.tops >= 0.16 - 1e-9) & (env.tops <= 0.46 + 1e-9))


def test_hurdle_heights_follow_the_original_distribution_and_the_observation_reports_them() -> None:
    rng = np.random.default_rng(0)
    assert np.allclose(hurdle_tops(rng, 3, 0.3, fixed_height=True), 1.5 * 0.3 + 0.01)
    env = envs.make("Hurdles", "walker").unwrapped
    obs, _ = env.reset(seed=3)
    gid = env.hurdles.geom_ids[0]
    top = env.data.mocap_pos[env.hurdles.mocap_ids[0], 2] + env.model.geom_size[gid, 2]
    assert obs["next_hurdle"][1] == pytest.approx(top, abs=1e-6)  # reported height = visible top
    assert obs["next_hurdle"][0] == pytest.approx(env.course_x[0] - env.torso_x(), abs=1e-5)
    assert obs["next_hurdle"][2] == 1.0


def test_a_walker_placed_past_a_hurdle_scores_exactly_once() -> None:
    env = envs.make("Hurdles", "walker").unwrapped
    env.reset(seed=0)
    rootx = env.model.jnt_qposadr[mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_JOINT, "rootx")]
    env.data.qpos[rootx] = env.course_x[0] + 0.3  # just past the first hurdle
    env.data.qvel[:] = 0
    mujoco.mj_forward(env.model, env.data)
    env.hurdles.sync(env.torso_x())
    _, reward, _, _, info = env.step(np.zeros(6))
    assert reward == 1.0 and info["score"] == 1.0
    for _ in range(3):
        _, reward, terminated, _, info = env.step(np.zeros(6))
        if not terminated:
            assert info["score"] == 0.0
    assert env.cleared == 1


def test_the_window_keeps_the_nearest_hurdles_in_the_simulation() -> None:
    env = envs.make("Hurdles", "walker").unwrapped
    env.reset(seed=0)
    shown = sorted(env.data.mocap_pos[env.hurdles.mocap_ids, 0])
    assert np.allclose(shown, env.course_x[:6])
    env.hurdles.sync(env.course_x[10] + 0.1)  # the torso moved on: slots follow (2 behind, 4 ahead)
    shown = sorted(env.data.mocap_pos[env.hurdles.mocap_ids, 0])
    assert np.allclose(shown, env.course_x[9:15])
    gid = env.hurdles.geom_ids
    assert np.allclose(env.model.geom_rbound[gid], np.linalg.norm(env.model.geom_size[gid], axis=1))


def test_moved_hurdles_collide_with_the_walker() -> None:
    """Contacts work with obstacles moved at reset: a walker pushed into the first hurdle touches it."""
    env = envs.make("Hurdles", "walker", max_height=0.3, fixed_height=True).unwrapped
    env.reset(seed=0)
    joint = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_JOINT, "rootx")
    env.data.qpos[env.model.jnt_qposadr[joint]] = env.course_x[0] - 0.8
    env.data.qvel[env.model.jnt_dofadr[joint]] = 3.0
    hurdle_geoms = set(env.hurdles.geom_ids.tolist())
    touched = False
    for _ in range(40):
        env.step(np.zeros(6))
        pairs = {(int(c.geom1), int(c.geom2)) for c in env.data.contact[: env.data.ncon]}
        touched |= any(g1 in hurdle_geoms or g2 in hurdle_geoms for g1, g2 in pairs)
    assert touched


def test_falling_ends_the_episode_with_minus_one() -> None:
    env = envs.make("Floor", "walker").unwrapped
    env.reset(seed=0)
    rootz = env.model.jnt_qposadr[mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_JOINT, "rootz")]
    env.data.qpos[rootz] = 0.5
    mujoco.mj_forward(env.model, env.data)
    _, reward, terminated, truncated, info = env.step(np.zeros(6))
    assert (reward, terminated, truncated, info["fell_over"], info["score"]) == (-1.0, True, False, True, 0.0)


def test_time_limit_truncates_after_the_episode_length() -> None:
    env = envs.make("Floor", "halfcheetah", max_episode_steps=5)
    env.reset(seed=0)
    flags = [env.step(np.zeros(6))[2:4] for _ in range(5)]
    assert flags[-1] == (False, True) and all(f == (False, False) for f in flags[:-1])


def test_registered_ids_match_make() -> None:
    env = gym.make("hsd3/Hurdles-walker-v1")
    assert env.spec.max_episode_steps == 1000
    assert envs.env_id("Hurdles", "humanoidpc") == "hsd3/Hurdles-humanoidpc-v1"
    ours, theirs = envs.make("Hurdles", "walker"), gym.make("hsd3/Hurdles-walker-v1")
    assert np.array_equal(ours.reset(seed=4)[0]["observation"], theirs.reset(seed=4)[0]["observation"])
    for task in envs.TASKS:
        for robot in ROBOTS:
            assert f"hsd3/{task}-{robot}-v1" in gym.registry


def test_bad_names_options_and_actions_fail_clearly() -> None:
    with pytest.raises(ValueError, match="unknown task 'Hurdle'; valid tasks: Floor, Hurdles"):
        envs.make("Hurdle", "walker")
    with pytest.raises(ValueError, match="unknown robot 'walker2d'; valid robots: walker, halfcheetah"):
        envs.make("Hurdles", "walker2d")
    with pytest.raises(ValueError, match=r"Hurdles: unknown options \['max_hight'\]; valid: fixed_height, max_height"):
        envs.make("Hurdles", "walker", max_hight=1)
    env = envs.make("Floor", "walker")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action contains NaN or inf"):
        env.step(np.array([0, 0, np.nan, 0, 0, 0]))
    with pytest.raises(ValueError, match=r"action must have shape \(6,\); got \(5,\)"):
        env.step(np.zeros(5))


def test_renders_headless_from_the_tracking_camera() -> None:
    env = envs.make("Hurdles", "walker", render_mode="rgb_array", width=160, height=120)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (120, 160, 3) and frame.dtype == np.uint8 and frame.std() > 5
    env.close()
