"""Tests of hsd3_learn.envs.wrappers and hsd3_learn.envs.vector: the per-env wrappers, make_env's config strings,
sync/async vector envs with same-step auto-reset, seeding, and the torch interface."""

from __future__ import annotations

import functools
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AsyncVectorEnv, SyncVectorEnv
from gymnasium.wrappers import TimeLimit

import envs
from hsd3_learn.envs.vector import AUTORESET_MODES, TorchVectorEnv, make_vector_env
from hsd3_learn.envs.wrappers import (WRAPPER_ARGS, DictObservation, FlattenObservation, GoalSpaceFeatures,
                                      RewardAccumulator, StepCounter, make_env, parse_wrapper)


class CountingEnv(gym.Env):
    """A toy env with a Box observation: step t (1, 2, 3) gives reward t and observation [t, -t]; 3 steps long."""

    observation_space = spaces.Box(-10.0, 10.0, (2,), np.float32)
    action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        return np.array([self.t, -self.t], np.float32), float(self.t), self.t == 3, False, {}


def hurdles(wrappers: list[str] | None = None, **kwargs: Any) -> gym.Env:
    return make_env("Hurdles", "walker", wrappers, **kwargs)


def env_chain(env: gym.Env) -> list[type]:
    """Wrapper types from the outside in, ending with the task class."""
    chain = [type(env)]
    while isinstance(env, gym.Wrapper):
        env = env.env
        chain.append(type(env))
    return chain


def random_actions(n_steps: int, n_envs: int, seed: int = 0) -> np.ndarray:
    """[T, N, 6] uniform walker actions (random actions make the walker fall within ~20-50 steps)."""
    return np.random.default_rng(seed).uniform(-1, 1, (n_steps, n_envs, 6)).astype(np.float32)


# ------------------------------------------------------------------------------------------------------ StepCounter


def test_step_counter_counts_steps_and_restarts_at_reset() -> None:
    env = hurdles(["time"])
    obs, _ = env.reset(seed=0)
    assert obs["time"].dtype == np.float32 and obs["time"].shape == (1,) and obs["time"][0] == 0
    assert set(obs) == {"observation", "next_hurdle", "time"} == set(env.observation_space.spaces)
    times = [env.step(np.zeros(6))[0]["time"][0] for _ in range(3)]
    assert times == [1.0, 2.0, 3.0]
    obs, _ = env.reset()
    assert obs["time"][0] == 0
    assert env.observation_space.contains(obs)


def test_step_counter_modulo_interval() -> None:
    env = hurdles(["time:3"])
    obs, _ = env.reset(seed=0)
    times = [obs["time"][0]] + [env.step(np.zeros(6))[0]["time"][0] for _ in range(5)]
    assert times == [0, 1, 2, 0, 1, 2]
    assert env.observation_space["time"] == spaces.Box(0.0, 2.0, (1,), np.float32)


def test_step_counter_gives_each_observation_its_own_array() -> None:
    env = hurdles(["time"])
    first, _ = env.reset(seed=0)
    env.step(np.zeros(6))
    assert first["time"][0] == 0  # hucc mutated one shared array, so stored observations changed


def test_step_counter_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match="DictObservation first"):
        StepCounter(CountingEnv())
    with pytest.raises(ValueError, match="positive int"):
        StepCounter(hurdles(), interval=0)
    with pytest.raises(ValueError, match="already has a key 'time'"):
        StepCounter(hurdles(["time"]))


# ---------------------------------------------------------------------------------- RewardAccumulator, DictObservation


def test_reward_accumulator_sums_rewards_per_episode() -> None:
    env = RewardAccumulator(CountingEnv())
    _, info = env.reset(seed=0)
    assert info["reward_acc"] == 0.0
    accs = [env.step(np.zeros(1))[4]["reward_acc"] for _ in range(3)]
    assert accs == [1.0, 3.0, 6.0]
    _, info = env.reset()
    assert info["reward_acc"] == 0.0
    assert env.step(np.zeros(1))[4]["reward_acc"] == 1.0


def test_reward_accumulator_on_walker_matches_summed_rewards() -> None:
    env = hurdles(["reward_acc"])
    env.reset(seed=1)
    total = 0.0
    for action in random_actions(200, 1)[:, 0]:
        _, reward, terminated, truncated, info = env.step(action)
        total += reward
        assert info["reward_acc"] == pytest.approx(total) and "score" in info
        if terminated or truncated:
            break
    assert terminated and info["reward_acc"] == -1.0  # the fall penalty; no hurdle cleared by random actions


def test_dict_observation_wraps_box_observations() -> None:
    env = DictObservation(CountingEnv())
    assert env.observation_space == spaces.Dict({"observation": CountingEnv.observation_space})
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs["observation"], [0.0, 0.0])
    obs, reward, *_ = env.step(np.zeros(1))
    np.testing.assert_array_equal(obs["observation"], [1.0, -1.0])
    assert reward == 1.0
    timed = StepCounter(env)  # the Box env now takes key-adding wrappers
    assert set(timed.observation_space.spaces) == {"observation", "time"}
    with pytest.raises(TypeError, match="needs a Box observation space; got Dict"):
        DictObservation(hurdles())


# -------------------------------------------------------------------------------- GoalSpaceFeatures, FlattenObservation


def torso_features(env: gym.Env) -> np.ndarray:
    """A two-feature stand-in for a goal space: torso x and z."""
    return env.unwrapped.data.xpos[env.unwrapped.torso_id, [0, 2]].copy()


def test_goal_space_features_adds_extractor_output_and_bounds() -> None:
    env = GoalSpaceFeatures(hurdles(), torso_features, low=[-3.0, 0.95], high=[3.0, 1.5])
    space = env.observation_space["_goal_space"]
    assert space == spaces.Box(np.array([-3.0, 0.95], np.float32), np.array([3.0, 1.5], np.float32))
    obs, _ = env.reset(seed=0)
    for action in random_actions(3, 1)[:, 0]:
        obs, *_ = env.step(action)
        assert obs["_goal_space"].dtype == np.float32
        np.testing.assert_allclose(obs["_goal_space"], torso_features(env), rtol=1e-6)
    assert obs["_goal_space"][0] != 0.0  # the torso moved: features are recomputed every step


def test_goal_space_features_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="low and high must be 1-D"):
        GoalSpaceFeatures(hurdles(), torso_features, low=[0.0, 0.0], high=[1.0])
    with pytest.raises(ValueError, match="low <= high"):
        GoalSpaceFeatures(hurdles(), torso_features, low=[1.0, 0.0], high=[0.0, 1.0])
    with pytest.raises(TypeError, match="extractor must be callable"):
        GoalSpaceFeatures(hurdles(), "bodyfeet", low=[0.0], high=[1.0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already has a key 'observation'"):
        GoalSpaceFeatures(hurdles(), torso_features, low=[0, 0], high=[1, 1], key="observation")
    env = GoalSpaceFeatures(hurdles(), torso_features, low=[0.0, 0.0, 0.0], high=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"returned shape \(2,\); expected \(3,\)"):
        env.reset(seed=0)


def test_flatten_concatenates_keys_in_space_order() -> None:
    env = hurdles(["time", "flatten"])
    space = env.observation_space
    assert isinstance(space, spaces.Box) and space.shape == (64,) and space.dtype == np.float32
    assert space.low[-1] == 0.0 and np.all(np.isinf(space.low[:-1]))  # the time feature comes last, from 0
    flat, _ = env.reset(seed=3)
    nested, _ = hurdles(["time"]).reset(seed=3)
    expected = np.concatenate([nested["next_hurdle"], nested["observation"], nested["time"]])  # keys sorted
    assert flat.dtype == np.float32
    np.testing.assert_array_equal(flat, expected)


def test_wrapped_env_passes_gymnasium_env_checker() -> None:
    env = hurdles(["time:5", "reward_acc"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the environment is wrapped": expected here
        check_env(env, skip_render_check=True)


# -------------------------------------------------------------------------------------------------------- make_env


def test_parse_wrapper() -> None:
    assert parse_wrapper("time") == ("time", None)
    assert parse_wrapper("time:5") == ("time", 5)
    assert parse_wrapper("time_limit:500") == ("time_limit", 500)
    assert parse_wrapper("flatten") == ("flatten", None)
    assert set(WRAPPER_ARGS) == {"time", "reward_acc", "flatten", "dict_obs", "time_limit"}


@pytest.mark.parametrize("spec, message", [
    ("frame_skip", "unknown wrapper 'frame_skip'; valid: time, reward_acc, flatten, dict_obs, time_limit"),
    ("reward_acc:3", "takes no argument"),
    ("time_limit", "needs a step count"),
    ("time:0", "positive integer"),
    ("time:x", "positive integer"),
    ("time_limit:-5", "positive integer"),
])
def test_parse_wrapper_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_wrapper(spec)


def test_make_env_applies_wrappers_in_order() -> None:
    env = make_env("Hurdles", "walker", ["flatten", "dict_obs", "time", "reward_acc"])
    assert env_chain(env)[:5] == [RewardAccumulator, StepCounter, DictObservation, FlattenObservation, TimeLimit]
    assert env.observation_space["observation"].shape == (63,)
    env = make_env("Hurdles", "walker", ["time", lambda e: GoalSpaceFeatures(e, torso_features, [0, 0], [1, 1])])
    assert set(env.observation_space.spaces) == {"observation", "next_hurdle", "time", "_goal_space"}
    assert env_chain(make_env("Hurdles"))[:1] == [TimeLimit]


def test_make_env_time_limit_replaces_the_task_limit() -> None:
    env = make_env("Hurdles", "walker", ["time_limit:4", "time"])
    assert env_chain(env).count(TimeLimit) == 1
    assert env.get_wrapper_attr("_max_episode_steps") == 4
    env.reset(seed=0)
    ends = [env.step(np.zeros(6))[2:4] for _ in range(4)]
    assert ends == [(False, False)] * 3 + [(False, True)]
    assert make_env("Hurdles", "walker", ["time_limit:2000"]).get_wrapper_attr("_max_episode_steps") == 2000
    assert make_env("Hurdles", "walker", max_episode_steps=7).get_wrapper_attr("_max_episode_steps") == 7


def test_make_env_errors() -> None:
    with pytest.raises(ValueError, match="give the episode length once"):
        make_env("Hurdles", "walker", ["time_limit:4"], max_episode_steps=5)
    with pytest.raises(ValueError, match="give the episode length once"):
        make_env("Hurdles", "walker", ["time_limit:4", "time_limit:5"])
    with pytest.raises(ValueError, match="unknown wrapper 'timer'"):
        make_env("Hurdles", "walker", ["timer"])
    with pytest.raises(TypeError, match="a wrapper is a name like 'time:5' or a callable"):
        make_env("Hurdles", "walker", [{"time_limit": 500}])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="unknown task 'Hurdle'"):
        make_env("Hurdle", "walker")
    with pytest.raises(ValueError, match="unknown options"):
        make_env("Hurdles", "walker", ["time"], hurdle_colour="red")


# ----------------------------------------------------------------------------------------------------- vector envs

WALKER_FN = functools.partial(make_env, "Hurdles", "walker", ["time", "reward_acc"])


def single_env_trajectory(seed: int, actions: np.ndarray) -> list[tuple]:
    """What one sub-env of a same-step vector env must produce: (obs, reward, terminated, final obs) per step,
    resetting (without a new seed) in the step that ends an episode."""
    env = WALKER_FN()
    env.reset(seed=seed)
    steps = []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        final = None
        if terminated or truncated:
            final, (obs, _) = (obs, info), env.reset()
        steps.append((obs, reward, terminated, final))
    return steps


def test_same_step_autoreset_matches_single_envs() -> None:
    """Each sub-env behaves exactly like a single env seeded with seed + i that resets in the step that ends."""
    actions = random_actions(60, 2)
    venv = make_vector_env([WALKER_FN] * 2)
    try:
        venv.reset(seed=10)
        expected = [single_env_trajectory(10 + i, actions[:, i]) for i in range(2)]
        n_ends = 0
        for t, action in enumerate(actions):
            obs, reward, terminated, truncated, info = venv.step(action)
            for i in range(2):
                want_obs, want_reward, want_terminated, want_final = expected[i][t]
                np.testing.assert_array_equal(obs["observation"][i], want_obs["observation"])
                assert (reward[i], terminated[i], truncated[i]) == (want_reward, want_terminated, False)
                if want_final is None:
                    assert not info.get("_final_obs", np.zeros(2, bool))[i]
                    continue
                n_ends += 1
                assert obs["time"][i, 0] == 0  # the returned observation starts the new episode
                final_obs, final_info = want_final
                np.testing.assert_array_equal(info["final_obs"][i]["observation"], final_obs["observation"])
                assert info["final_obs"][i]["time"][0] == final_obs["time"][0] > 0
                assert info["final_info"]["reward_acc"][i] == final_info["reward_acc"] == -1.0
                assert info["reward_acc"][i] == 0.0  # the new episode's running sum
        assert n_ends >= 2
    finally:
        venv.close()


def test_async_vector_env_matches_sync() -> None:
    """Worker processes (forkserver) step and auto-reset exactly like the in-process vector env.

    The workers build plain ``envs.make`` envs: importing hsd3_learn.envs would load torch in each worker (~2 s)."""
    plain_fn = functools.partial(envs.make, "Hurdles", "walker")
    actions = random_actions(60, 2)
    sync_env, async_env = make_vector_env([plain_fn] * 2), make_vector_env([plain_fn] * 2, kind="async")
    try:
        assert isinstance(async_env, AsyncVectorEnv) and isinstance(sync_env, SyncVectorEnv)
        for venv in (sync_env, async_env):
            venv.reset(seed=3)
        n_ends = 0
        for action in actions:
            (s_obs, *s_rest, s_info), (a_obs, *a_rest, a_info) = sync_env.step(action), async_env.step(action)
            np.testing.assert_array_equal(a_obs["observation"], s_obs["observation"])
            for a, s in zip(a_rest, s_rest):
                np.testing.assert_array_equal(a, s)
            np.testing.assert_array_equal(a_info.get("_final_obs", False), s_info.get("_final_obs", False))
            for i in np.flatnonzero(s_info.get("_final_obs", [])):
                n_ends += 1
                np.testing.assert_array_equal(a_info["final_obs"][i]["observation"],
                                              s_info["final_obs"][i]["observation"])
        assert n_ends >= 2
    finally:
        sync_env.close()
        async_env.close()


def test_next_step_autoreset_spends_a_step_on_the_reset() -> None:
    venv = make_vector_env([WALKER_FN], autoreset="next_step")
    venv.reset(seed=0)
    for action in random_actions(200, 1):
        obs, _, terminated, _, info = venv.step(action)
        if terminated[0]:
            break
    assert obs["time"][0, 0] > 0 and "final_obs" not in info  # the last observation of the episode
    obs, reward, terminated, truncated, _ = venv.step(np.ones((1, 6), np.float32))  # action ignored
    assert obs["time"][0, 0] == 0 and reward[0] == 0.0 and not terminated[0] and not truncated[0]
    venv.close()


def test_make_vector_env_errors() -> None:
    with pytest.raises(ValueError, match="unknown vector env kind 'threads'; valid: sync, async"):
        make_vector_env([WALKER_FN], kind="threads")
    with pytest.raises(ValueError, match="unknown autoreset 'same'; valid: same_step, next_step"):
        make_vector_env([WALKER_FN], autoreset="same")
    with pytest.raises(ValueError, match="unknown context 'fork'"):
        make_vector_env([WALKER_FN], kind="async", context="fork")
    with pytest.raises(ValueError, match="non-empty sequence of callables"):
        make_vector_env([])
    assert set(AUTORESET_MODES) == {"same_step", "next_step"}


# ------------------------------------------------------------------------------------------------- TorchVectorEnv


def rollout(venv: TorchVectorEnv, seed: int, n_steps: int) -> list[torch.Tensor]:
    """Observations of a seeded rollout whose actions come from the (seeded) action space."""
    obs, _ = venv.reset(seed=seed)
    observations = [obs["observation"]]
    for _ in range(n_steps):
        obs, *_ = venv.step(torch.as_tensor(venv.action_space.sample()))
        observations.append(obs["observation"])
    return observations


def test_torch_vector_env_is_deterministic_given_the_seed() -> None:
    venv = TorchVectorEnv(make_vector_env([WALKER_FN] * 2))
    first, again, other = rollout(venv, 5, 30), rollout(venv, 5, 30), rollout(venv, 6, 30)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[-1], other[-1])
    for i in range(2):  # env i is seeded with seed + i
        single_obs, _ = WALKER_FN().reset(seed=5 + i)
        np.testing.assert_array_equal(first[0][i].numpy(), single_obs["observation"])
    venv.close()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_torch_vector_env_types_shapes_and_devices(device: str) -> None:
    venv = TorchVectorEnv(make_vector_env([WALKER_FN] * 2), device=device)
    assert venv.num_envs == 2 and venv.device == torch.device(device)
    assert venv.single_action_space == spaces.Box(-1.0, 1.0, (6,), np.float32)
    assert set(venv.single_observation_space.spaces) == {"observation", "next_hurdle", "time"}
    obs, info = venv.reset(seed=0)
    for key, shape in {"observation": (2, 60), "next_hurdle": (2, 3), "time": (2, 1)}.items():
        assert obs[key].shape == shape and obs[key].dtype == torch.float32 and obs[key].device.type == device
    assert info["reward_acc"].tolist() == [0.0, 0.0]
    actions = torch.as_tensor(random_actions(60, 2), device=device)
    for action in actions:
        obs, reward, terminated, truncated, info = venv.step(action)
        assert reward.shape == terminated.shape == truncated.shape == (2,)
        assert (reward.dtype, terminated.dtype, truncated.dtype) == (torch.float32, torch.bool, torch.bool)
        assert reward.device.type == terminated.device.type == device
        if "final_obs" in info:
            break
    ended = info["_final_obs"]
    assert ended.dtype == torch.bool and torch.equal(ended, terminated | truncated)
    final = info["final_obs"]
    assert final["observation"].shape == (2, 60) and final["observation"].device.type == device
    assert torch.all(final["time"][ended] > 0) and torch.all(obs["time"][ended] == 0)
    assert torch.equal(final["observation"][~ended], obs["observation"][~ended])  # rows of envs still running
    obs, *_ = venv.step(np.zeros((2, 6), np.float32))  # numpy actions work too
    assert obs["time"].device.type == device
    venv.close()


def test_torch_vector_env_call_seeding_and_box_observations() -> None:
    flat_fn = functools.partial(make_env, "Hurdles", "walker", ["flatten"])
    venv = TorchVectorEnv(make_vector_env([flat_fn] * 3))
    obs, _ = venv.reset(seed=1)
    assert isinstance(obs, torch.Tensor) and obs.shape == (3, 63) and obs.dtype == torch.float32
    torso_x = venv.call("torso_x")
    assert isinstance(torso_x, tuple) and len(torso_x) == 3 and len(set(torso_x)) == 3  # seeds 1, 2, 3 differ
    assert venv.call("frame_skip") == (10, 10, 10)  # plain attributes are returned as they are
    sample = venv.action_space.sample()
    venv.reset(seed=1)
    np.testing.assert_array_equal(venv.action_space.sample(), sample)  # exploration is seeded too
    with pytest.raises(TypeError, match="seed must be an int or None"):
        venv.reset(seed=[1, 2, 3])  # type: ignore[arg-type]
    venv.close()
