"""The pre-training env: spaces, goals, potential reward, soft resets, falls, hard resets, task distribution."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from hsd3_learn.envs import PretrainingEnv, goal_space, pretraining_env_id
from hsd3_learn.envs.goal_spaces import FEATURE_DIMS, enumerate_subsets


def _distance(env: PretrainingEnv) -> float:
    """The normalised distance to the goal, from scratch (features in float64)."""
    feats = env.goal_features
    space = goal_space(env.robot.name)
    current = space.psi[feats] * space.features(env)[feats] + space.offset[feats]
    diff = env.goal - current
    for k, f in enumerate(feats):
        if f in space.twist_feats:
            half = space.psi[f] * math.pi
            diff[k] = (diff[k] + half) % (2 * half) - half
    return float(np.linalg.norm(diff))


def _steps_standing(env: PretrainingEnv, n: int) -> list[tuple]:
    """``n`` steps with zero action, putting the robot back in its standing pose before each (it never falls)."""
    results = []
    for _ in range(n):
        env.data.qpos[:] = env.init_qpos
        env.data.qvel[:] = 0.0
        mujoco.mj_kinematics(env.model, env.data)
        results.append(env.step(np.zeros(env.action_space.shape)))
    return results


@pytest.mark.parametrize("robot, n_obs, n_tasks, n_features", [("walker", 59, 7, 7), ("humanoidpc", 149, 10, 12)])
def test_spaces_and_check_env(robot: str, n_obs: int, n_tasks: int, n_features: int) -> None:
    env = PretrainingEnv(robot=robot)
    expected = {"observation": n_obs, "desired_goal": n_tasks, "task": n_tasks, "gs_observation": n_features}
    assert list(env.observation_space.spaces) == sorted(expected)
    obs, info = env.reset(seed=0)
    for key, size in expected.items():
        assert obs[key].shape == (size,) and obs[key].dtype == np.float32, key
    assert obs in env.observation_space
    assert info["subset"] in env.subsets
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*infinity.*")  # unbounded features, as every MuJoCo env
        check_env(env, skip_render_check=True)


def test_registered_with_gymnasium() -> None:
    env = gym.make(pretraining_env_id("walker"))
    assert env.spec.max_episode_steps is None  # the env ends its episodes itself
    obs, _ = env.reset(seed=1)
    assert obs["observation"].shape == (59,)
    with pytest.raises(ValueError, match="valid robots: walker, humanoid, humanoidpc"):
        pretraining_env_id("halfcheetah")


def test_observation_hides_world_position_and_matches_the_goal() -> None:
    env = PretrainingEnv(robot="walker", subsets=["1,2"])
    obs, _ = env.reset(seed=2)
    qpos = env.data.qpos
    np.testing.assert_allclose(obs["observation"][:8], np.delete(qpos[:9], 1), rtol=1e-6)  # rootz, rooty, joints
    np.testing.assert_allclose(obs["gs_observation"], env.goal_space.features(env), rtol=1e-6)
    np.testing.assert_array_equal(obs["task"], [0, 1, 1, 0, 0, 0, 0])
    target = goal_space("walker").backproject(env.goal, [1, 2])
    to_go = target - env.goal_space.features(env)[[1, 2]]
    np.testing.assert_allclose(obs["desired_goal"], [0, to_go[0], to_go[1], 0, 0, 0, 0], rtol=1e-6)
    assert abs(to_go[0]) <= 3.0  # the x goal is relative: within +-3 m of the start


def test_delta_goals_are_relative_to_the_current_position() -> None:
    env = PretrainingEnv(robot="walker", subsets=["1"], precision=100.0)
    env.reset(seed=3)
    env.data.qpos[1] = 10.0  # the next goal starts 10 m down the floor
    mujoco.mj_kinematics(env.model, env.data)
    obs, *_ , info = env.step(np.zeros(6))
    assert info["SoftReset"]
    x = env.goal_space.features(env)[1]
    assert abs(env.goal[0] - env.goal_space.project([x], [1])[0]) <= 1.0
    assert abs(obs["desired_goal"][1]) <= 3.0 and obs["desired_goal"][1] != 0.0


def test_observation_is_translation_invariant() -> None:
    envs = [PretrainingEnv(robot="walker", subsets=["0"]) for _ in range(2)]
    for env in envs:
        env.reset(seed=4)
    envs[1].data.qpos[1] += 5.0
    mujoco.mj_kinematics(envs[1].model, envs[1].data)
    action = np.full(6, 0.3)
    (obs_a, *_), (obs_b, *_) = (env.step(action) for env in envs)
    np.testing.assert_allclose(obs_a["observation"], obs_b["observation"], atol=1e-4)
    assert obs_b["gs_observation"][1] - obs_a["gs_observation"][1] == pytest.approx(5.0, abs=1e-4)


def test_reward_is_the_decrease_in_distance_minus_ctrl_cost() -> None:
    env = PretrainingEnv(robot="walker")
    env.reset(seed=5)
    before = _distance(env)
    action = np.array([0.5, -0.5, 0.2, 1.0, 0.0, -0.1])
    _, reward, terminated, truncated, info = env.step(action)
    after = _distance(env)
    assert not (terminated or truncated or info["SoftReset"])
    assert info["potential"] == pytest.approx(before - after, abs=1e-12)
    assert info["distance"] == pytest.approx(after, abs=1e-12)
    assert reward == pytest.approx(before - after - 0.001 * float(np.sum(action**2)), abs=1e-12)
    assert info["time"] == 0 and info["EpisodeContinues"] and not info["last_step_of_task"]


def test_humanoid_reward_has_no_ctrl_cost_and_wraps_twist() -> None:
    env = PretrainingEnv(robot="humanoid", subsets=["0+3,3+4"])
    obs, _ = env.reset(seed=6)
    assert env.goal_features == [0, 3, 4]
    before = _distance(env)
    _, reward, _, _, info = env.step(np.full(21, 0.7))
    assert reward == pytest.approx(before - _distance(env), abs=1e-12)
    assert info["potential"] == reward


def test_twist_goal_in_desired_goal_is_wrapped() -> None:
    env = PretrainingEnv(robot="humanoid", subsets=["3+4"])
    env.reset(seed=7)
    psi = env.goal_space.psi[3]
    env._goal[0] = psi * 3.0  # a twist goal of 3 rad; the robot faces about 0 rad
    env.data.qpos[3:7] = [math.cos(-1.5), 0, 0, math.sin(-1.5)]  # now facing -3 rad
    mujoco.mj_kinematics(env.model, env.data)
    obs = env._pretraining_observation(np.zeros(env._n_features, np.float32), env.goal_space.features(env))
    assert obs["desired_goal"][2] == pytest.approx(6.0 - 2 * math.pi, abs=1e-5)  # not 6 rad the long way round


def test_success_starts_a_new_goal_in_the_same_episode() -> None:
    env = PretrainingEnv(robot="walker", precision=100.0)  # every goal counts as reached at once
    env.reset(seed=8)
    goal = env.goal
    _, _, terminated, truncated, info = env.step(np.zeros(6))
    assert info["reached_goal"] and info["last_step_of_task"] and info["SoftReset"] and info["EpisodeContinues"]
    assert not (terminated or truncated)
    assert env.goal.shape != goal.shape or not np.allclose(env.goal, goal)
    _, _, _, _, info = env.step(np.zeros(6))
    assert info["time"] == 0


def test_horizon_ends_a_goal() -> None:
    env = PretrainingEnv(robot="walker", precision=1e-9, max_steps=3)
    env.reset(seed=9)
    infos = [env.step(np.zeros(6))[-1] for _ in range(3)]
    assert [i["time"] for i in infos] == [0, 1, 2]
    assert [i["SoftReset"] for i in infos] == [False, False, True]
    assert [i["last_step_of_task"] for i in infos] == [False, False, True]
    assert not any(i["reached_goal"] for i in infos)
    assert env.step(np.zeros(6))[-1]["time"] == 0


def test_hard_reset_after_100_goals() -> None:
    env = PretrainingEnv(robot="walker", precision=100.0)
    env.reset(seed=10)
    flags = [result[2:] for result in _steps_standing(env, 100)]
    assert all(not term and not trunc and info["SoftReset"] for term, trunc, info in flags[:99])
    terminated, truncated, info = flags[-1]
    assert truncated and not terminated
    assert info["reached_goal"] and info["last_step_of_task"]
    assert not info["SoftReset"] and not info["EpisodeContinues"]


def test_hard_reset_interval_and_reset() -> None:
    env = PretrainingEnv(robot="walker", precision=100.0, hard_reset_interval=2)
    env.reset(seed=11)
    env.data.qpos[1] += 2.0  # walked away
    assert not env.step(np.zeros(6))[3]
    assert env.step(np.zeros(6))[3]
    env.reset()
    assert abs(env.data.qpos[1]) < 0.2  # back at the start (reset noise is at most 0.1)
    assert not env.step(np.zeros(6))[3]


def test_fall_terminates_with_penalty() -> None:
    env = PretrainingEnv(robot="walker", precision=100.0)
    env.reset(seed=12)
    env.data.qpos[2] = 1.5  # pitched past the 1.4 rad fall limit
    mujoco.mj_kinematics(env.model, env.data)
    _, reward, terminated, truncated, info = env.step(np.ones(6))
    assert reward == -1.0
    assert terminated and not truncated
    assert info["fell_over"] and not info["reached_goal"] and info["last_step_of_task"]
    assert not info["SoftReset"] and not info["EpisodeContinues"]


def test_default_task_distribution_is_all_31_subsets_uniform() -> None:
    env = PretrainingEnv(robot="walker", precision=100.0, hard_reset_interval=1000)
    assert list(env.subsets) == enumerate_subsets(FEATURE_DIMS["walker"])
    np.testing.assert_allclose(list(env.subsets.values()), 1 / 31)
    env.reset(seed=13)
    seen = {result[-1]["subset"] for result in _steps_standing(env, 300)}
    assert len(seen) == 31


def test_set_subsets_with_weights() -> None:
    env = PretrainingEnv(robot="humanoidpc")
    env.set_subsets({"0+3": 0.0, "3+9+10+11": 2.0})
    assert env.subsets == {"0+3": 0.0, "3+9+10+11": 1.0}
    obs, _ = env.reset(seed=14)
    assert env.subset == "3+9+10+11" and env.goal_features == [3, 9, 10, 11]
    np.testing.assert_array_equal(obs["task"], [0, 0, 1, 0, 0, 0, 0, 1, 1, 1])
    assert np.count_nonzero(obs["desired_goal"]) == 4


def test_same_seed_same_episode() -> None:
    runs = []
    for _ in range(2):
        env = PretrainingEnv(robot="walker")
        obs, _ = env.reset(seed=15)
        rewards = [env.step(np.full(6, 0.1))[1] for _ in range(5)]
        runs.append((obs["desired_goal"], env.goal, rewards))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert runs[0][2] == runs[1][2]


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="valid robots"):
        PretrainingEnv(robot="halfcheetah")
    with pytest.raises(ValueError, match="unknown options"):
        PretrainingEnv(robot="walker", horizon=72)
    with pytest.raises(ValueError, match="precision must be > 0"):
        PretrainingEnv(robot="walker", precision=0)
    with pytest.raises(ValueError, match="max_steps must be an int"):
        PretrainingEnv(robot="walker", max_steps=7.5)
    with pytest.raises(ValueError, match="hard_reset_interval must be an int"):
        PretrainingEnv(robot="walker", hard_reset_interval=0)
    with pytest.raises(ValueError, match="ctrl_cost must be >= 0"):
        PretrainingEnv(robot="walker", ctrl_cost=-1.0)
    with pytest.raises(ValueError, match="goal features"):
        PretrainingEnv(robot="walker", feature_dims="0#7")
    env = PretrainingEnv(robot="walker")
    with pytest.raises(ValueError, match="not in the task map"):
        env.set_subsets(["0,9"])
    with pytest.raises(ValueError, match="at least one name"):
        env.set_subsets([])
    with pytest.raises(ValueError, match="weights >= 0"):
        env.set_subsets({"0": -1.0, "1": 2.0})
    with pytest.raises(TypeError, match="string"):
        env.set_subsets("0,1")
