"""Per-environment wrappers that HSD-3's training runs stack on a task env, and ``make_env`` to build them by name.

HSD-3's configs list wrappers as short strings (``env.wrappers: [time, ...]``); the training script builds the task,
applies them in order and vectorises the result (see :mod:`hsd3_learn.envs.vector`). The wrappers here:

- :class:`StepCounter` (hucc ``FrameCounter``, config ``time``): ``obs["time"]`` = the step index within the
  episode, optionally modulo an interval;
- :class:`RewardAccumulator` (hucc ``RewardAccWrapper``): ``info["reward_acc"]`` = the episode's reward so far,
  which HSD-Bandit reads as its bandit reward;
- :class:`DictObservation` (hucc ``DictObs``): a ``Box`` observation becomes ``{"observation": ...}``;
- :class:`GoalSpaceFeatures` (hucc ``BiskFeatures``, config ``bisk_features: _goal_space:bodyfeet``): an extra
  observation key with goal-space features, read from the simulation by a callable;
- gymnasium's own ``FlattenObservation`` (SAC and Switching Ensemble eat one flat vector) and ``TimeLimit``.

    env = make_env("Hurdles", "walker", ["time", "reward_acc"])
    obs, info = env.reset(seed=0)        # obs: {"next_hurdle": [3], "observation": [60], "time": [1]}

Differences from hucc:

1. ``obs["time"]`` is a float32 ``[1]`` array, not int32: every observation key then batches into one float tensor.
2. Each observation gets its own ``time`` array; hucc handed out one array that it mutated in place on every step,
   so a stored observation silently changed later.
3. :class:`StepCounter` needs a ``Dict`` observation (put ``dict_obs`` first) instead of wrapping a ``Box`` itself:
   one wrapper, one job.
4. :class:`GoalSpaceFeatures` takes the feature extractor and its bounds as arguments instead of asking the bisk env
   for a featurizer by name, so this module does not depend on the goal-space definitions.
5. ``time_limit:N`` replaces the task's own limit (``envs.make(max_episode_steps=N)``); hucc stacked a second
   ``TimeLimit``, whose limit could never exceed the first one's.
6. ``info["reward_acc"]`` is also set (to 0) by ``reset``, so vector envs report it for every env on every step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import FlattenObservation, TimeLimit

import envs  # the task suite (the top-level package), not hsd3_learn.envs

__all__ = ["apply_wrappers", 
    "WRAPPER_ARGS",
    "DictObservation",
    "FlattenObservation",
    "GoalSpaceFeatures",
    "RewardAccumulator",
    "StepCounter",
    "TimeLimit",
    "make_env",
    "parse_wrapper",
]

#: an extractor of goal-space features: the raw (unwrapped) task env -> features [G]
FeatureExtractor = Callable[[gym.Env], np.ndarray]
#: a config entry of ``make_env``: a short name (``"time:5"``) or any ``env -> wrapped env`` callable
WrapperSpec = str | Callable[[gym.Env], gym.Env]


def _dict_space(env: gym.Env, wrapper: str) -> spaces.Dict:
    """The env's observation space, which must be a ``Dict`` for wrappers that add a key."""
    space = env.observation_space
    if not isinstance(space, spaces.Dict):
        raise TypeError(f"{wrapper} needs a Dict observation space; got {type(space).__name__} "
                        "(wrap the env in DictObservation first)")
    return space


def _with_key(space: spaces.Dict, key: str, sub_space: spaces.Box, wrapper: str) -> spaces.Dict:
    """``space`` plus a new ``key`` (gymnasium sorts the keys of a plain dict)."""
    if key in space.spaces:
        raise ValueError(f"{wrapper}: the observation already has a key {key!r}; keys: {list(space.spaces)}")
    return spaces.Dict({**space.spaces, key: sub_space})


class StepCounter(gym.ObservationWrapper):
    """Adds ``obs["time"]``: how many steps the episode has run (0 after ``reset``), as float32 ``[1]``.

    HSD-3 feeds it to policies that must know where they are in time (the pre-training env's goal horizon, the
    high level's action interval). With ``interval=c`` the value is ``steps % c``, i.e. the position within the
    current c-step window, in ``[0, c - 1]``.
    """

    def __init__(self, env: gym.Env, interval: int | None = None, key: str = "time") -> None:
        super().__init__(env)
        if interval is not None and (not isinstance(interval, int) or interval < 1):
            raise ValueError(f"StepCounter: interval must be a positive int or None; got {interval!r}")
        self.interval, self.key = interval, key
        high = np.inf if interval is None else interval - 1
        time_space = spaces.Box(0.0, high, (1,), np.float32)
        self.observation_space = _with_key(_dict_space(env, "StepCounter"), key, time_space, "StepCounter")
        self.steps = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        self.steps = 0
        return super().reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        self.steps += 1
        return super().step(action)

    def observation(self, observation: dict) -> dict:
        """The wrapped observation plus the (possibly wrapped-around) step count."""
        count = self.steps if self.interval is None else self.steps % self.interval
        return {**observation, self.key: np.array([count], dtype=np.float32)}


class RewardAccumulator(gym.Wrapper):
    """Keeps ``info["reward_acc"]``: the sum of the rewards so far in this episode (0 after ``reset``).

    HSD-Bandit scores a chosen goal space by the return of the episode it was used in; reading the running sum
    from the info dict spares the training loop from tracking returns per env.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.reward_acc = 0.0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        observation, info = self.env.reset(seed=seed, options=options)
        self.reward_acc = 0.0
        return observation, {**info, "reward_acc": self.reward_acc}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.reward_acc += float(reward)
        return observation, reward, terminated, truncated, {**info, "reward_acc": self.reward_acc}


class DictObservation(gym.ObservationWrapper):
    """Turns a ``Box`` observation into ``{"observation": obs}``, so that key-adding wrappers and dict-eating
    agents work on plain envs too."""

    def __init__(self, env: gym.Env, key: str = "observation") -> None:
        super().__init__(env)
        if not isinstance(env.observation_space, spaces.Box):
            got = type(env.observation_space).__name__
            raise TypeError(f"DictObservation needs a Box observation space; got {got}")
        self.key = key
        self.observation_space = spaces.Dict({key: env.observation_space})

    def observation(self, observation: np.ndarray) -> dict[str, np.ndarray]:
        """The observation under its key."""
        return {self.key: observation}


class GoalSpaceFeatures(gym.ObservationWrapper):
    """Adds ``obs[key]``: goal-space features [G] computed by ``extractor(env.unwrapped)`` after every reset/step.

    HSD-3's high level observes where the robot is in the goal space (e.g. Walker's 7 ``bodyfeet`` features) to
    choose subgoals relative to it. ``low``/``high`` [G] are the features' nominal ranges, which HSD-3 uses to
    normalise goals; the values are not clipped to them (a fallen walker's torso is below its range).
    """

    def __init__(self, env: gym.Env, extractor: FeatureExtractor, low: Sequence[float] | np.ndarray,
                 high: Sequence[float] | np.ndarray, key: str = "_goal_space") -> None:
        super().__init__(env)
        if not callable(extractor):
            got = type(extractor).__name__
            raise TypeError(f"GoalSpaceFeatures: extractor must be callable(env) -> features; got {got}")
        low_arr, high_arr = np.asarray(low, np.float32), np.asarray(high, np.float32)
        if low_arr.ndim != 1 or low_arr.shape != high_arr.shape or not np.all(low_arr <= high_arr):
            raise ValueError(f"GoalSpaceFeatures: low and high must be 1-D, of equal length and low <= high; "
                             f"got {low_arr.tolist()} and {high_arr.tolist()}")
        self.extractor, self.key = extractor, key
        feature_space = spaces.Box(low_arr, high_arr, dtype=np.float32)
        self.observation_space = _with_key(_dict_space(env, "GoalSpaceFeatures"), key, feature_space,
                                           "GoalSpaceFeatures")

    def observation(self, observation: dict) -> dict:
        """The wrapped observation plus the current goal-space features."""
        features = np.asarray(self.extractor(self.env.unwrapped), dtype=np.float32)
        expected = self.observation_space[self.key].shape
        if features.shape != expected:
            raise ValueError(f"GoalSpaceFeatures: the extractor returned shape {features.shape}; expected {expected}")
        return {**observation, self.key: features}


#: wrappers that take an integer: "time:N" counts modulo N (optional), "time_limit:N" sets the episode length
WRAPPER_ARGS: dict[str, str] = {"time": "optional", "reward_acc": "none", "flatten": "none", "dict_obs": "none",
                                "time_limit": "required"}

#: how each wrapper name (except time_limit, which goes to envs.make) wraps an env, given its argument or None
_BUILDERS: dict[str, Callable[[gym.Env, int | None], gym.Env]] = {
    "time": lambda env, n: StepCounter(env, interval=n),
    "reward_acc": lambda env, n: RewardAccumulator(env),
    "flatten": lambda env, n: FlattenObservation(env),
    "dict_obs": lambda env, n: DictObservation(env),
}


def parse_wrapper(spec: str) -> tuple[str, int | None]:
    """``"name"`` or ``"name:N"`` -> (name, N or None), checked against :data:`WRAPPER_ARGS`."""
    if not isinstance(spec, str):
        raise TypeError(f"a wrapper is a name like 'time:5' or a callable env -> env; got {spec!r}")
    name, sep, arg_text = spec.partition(":")
    if name not in WRAPPER_ARGS:
        raise ValueError(f"unknown wrapper {spec!r}; valid: {', '.join(WRAPPER_ARGS)} (time and time_limit take ':N')")
    takes = WRAPPER_ARGS[name]
    if takes == "none" and sep:
        raise ValueError(f"wrapper {name!r} takes no argument; got {spec!r}")
    if takes == "required" and not sep:
        raise ValueError(f"wrapper {name!r} needs a step count, e.g. '{name}:500'; got {spec!r}")
    if not sep:
        return name, None
    if not arg_text.isdigit() or int(arg_text) < 1:
        raise ValueError(f"wrapper {spec!r}: the argument must be a positive integer")
    return name, int(arg_text)


def make_env(task: str, robot: str = "walker", wrappers: Sequence[WrapperSpec] | None = None,
             **kwargs: Any) -> gym.Env:
    """``envs.make(task, robot, **kwargs)`` with ``wrappers`` applied in order (the first is innermost).

    Each entry is a name from :data:`WRAPPER_ARGS`, with an integer where it takes one (``"time:5"`` counts modulo 5),
    or a callable ``env -> env`` for wrappers that need objects, e.g. ``lambda e: GoalSpaceFeatures(e, f, low, high)``.
    ``"time_limit:N"`` sets the episode length: it replaces the task's default limit rather than adding a second one.
    """
    parsed = [spec if callable(spec) else parse_wrapper(spec) for spec in (wrappers or [])]
    limits = [spec[1] for spec in parsed if isinstance(spec, tuple) and spec[0] == "time_limit"]
    if len(limits) + ("max_episode_steps" in kwargs) > 1:
        raise ValueError("give the episode length once: one 'time_limit:N' wrapper or max_episode_steps, not both")
    if limits:
        kwargs["max_episode_steps"] = limits[0]
    env = envs.make(task, robot, **kwargs)
    return _wrap(env, [spec for spec in parsed if callable(spec) or spec[0] != "time_limit"])


def apply_wrappers(env: gym.Env, wrappers: Sequence[WrapperSpec]) -> gym.Env:
    """``env`` with ``wrappers`` (names or callables, as in :func:`make_env`) applied in order; ``time_limit`` is
    refused, since the episode length belongs to the env's construction."""
    parsed = [spec if callable(spec) else parse_wrapper(spec) for spec in wrappers]
    if any(isinstance(spec, tuple) and spec[0] == "time_limit" for spec in parsed):
        raise ValueError("apply_wrappers: 'time_limit' cannot be added to a built env; set the episode length "
                         "where the env is made")
    return _wrap(env, parsed)


def _wrap(env: gym.Env, parsed: Sequence[Callable[[gym.Env], gym.Env] | tuple[str, int | None]]) -> gym.Env:
    for spec in parsed:
        env = spec(env) if callable(spec) else _BUILDERS[spec[0]](env, spec[1])
    return env
