"""Vector envs for HSD-3's training loops: N copies of a task stepped together, with torch tensors in and out.

    venv = TorchVectorEnv(make_vector_env([partial(make_env, "Hurdles", "walker")] * 2), device="cpu")
    obs, info = venv.reset(seed=0)                  # env i is seeded with 0 + i; obs["observation"]: [N, 60]
    obs, reward, terminated, truncated, info = venv.step(actions)   # actions [N, A]; reward etc. [N]
    next_obs = info.get("final_obs", obs)           # the observation this step's action led to, for the replay buffer

**Auto-reset.** gymnasium 1.x vector envs reset a finished sub-env by themselves, in one of two modes:

- ``next_step`` (gymnasium's default): the step that ends an episode returns its last observation; the *next*
  ``step`` call ignores that env's action, resets it and returns the first observation of the new episode with
  reward 0. A training loop must notice that step and not store it as a transition.
- ``same_step`` (our default): the step that ends an episode already resets it: it returns the *new* episode's first
  observation, and puts the last one in ``info["final_obs"]`` (and the last step's info in ``info["final_info"]``),
  with ``info["_final_obs"]`` marking which envs ended. Every step is then a real transition, which is what
  HSD-3's loops (hucc's ``reset_if_done``) assume.

In ``same_step`` mode the info keys of the last step of an episode (``score``, ``reward_acc``) are found under
``info["final_info"]``; ``info`` itself holds the reset info for that env.

**Sync or async.** ``SyncVectorEnv`` steps the envs one after the other in this process; ``AsyncVectorEnv`` runs
each in its own process. A Walker step takes about as long as the inter-process round trip (~100 µs), so on a
2-core machine Sync is faster (≈6.4k vs ≈4.4k env-steps/s with 2 Hurdles envs); Async pays off with many cores or
heavy robots. Worker processes are started with ``forkserver`` (or ``spawn``), never ``fork``: a forked child
inherits OpenGL contexts and torch's thread pools in a broken state.

Differences from hucc:

1. gymnasium's ``SyncVectorEnv``/``AsyncVectorEnv`` with their built-in ``same_step`` auto-reset replace hucc's
   copies of gym 0.18's vector envs (``CompatSyncVectorEnv``, ``TorchAsyncVectorEnv``) and ``reset_if_done()``.
2. ``TorchVectorEnv`` returns reward, terminated and truncated as ``[N]`` tensors (hucc: reward and done ``[N, 1]``),
   keeps gymnasium's split of ``done`` into terminated/truncated, and seeds through ``reset(seed=)``.
3. ``TorchVectorEnv`` has no ``ctx`` scratch dictionary or ``render_*`` helpers; agents keep their own state, and
   ``call("render")`` renders every env.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv, VectorWrapper
from gymnasium.vector.utils import concatenate, create_empty_array, iterate

__all__ = ["ASYNC_CONTEXTS", "AUTORESET_MODES", "TorchVectorEnv", "make_vector_env"]

#: ``autoreset`` argument -> gymnasium's mode (see the module docstring)
AUTORESET_MODES: dict[str, AutoresetMode] = {"same_step": AutoresetMode.SAME_STEP, "next_step": AutoresetMode.NEXT_STEP}
#: multiprocessing start methods that are safe with MuJoCo rendering and torch threads
ASYNC_CONTEXTS = ("forkserver", "spawn")

TensorTree = torch.Tensor | dict[str, "TensorTree"]


def make_vector_env(env_fns: Sequence[Callable[[], gym.Env]], kind: str = "sync", autoreset: str = "same_step",
                    context: str = "forkserver") -> VectorEnv:
    """One vector env over the envs that ``env_fns`` build (one env per function).

    ``kind`` is ``"sync"`` (all in this process) or ``"async"`` (one process each, started with ``context``);
    ``autoreset`` is ``"same_step"`` or ``"next_step"``. For ``async`` the functions are pickled (with
    cloudpickle) into the workers, so they must not capture unpicklable objects.
    """
    if not env_fns or not all(callable(fn) for fn in env_fns):
        raise ValueError(f"env_fns must be a non-empty sequence of callables that build envs; got {env_fns!r}")
    if autoreset not in AUTORESET_MODES:
        raise ValueError(f"unknown autoreset {autoreset!r}; valid: {', '.join(AUTORESET_MODES)}")
    mode = AUTORESET_MODES[autoreset]
    if kind == "sync":
        return SyncVectorEnv(list(env_fns), autoreset_mode=mode)
    if kind != "async":
        raise ValueError(f"unknown vector env kind {kind!r}; valid: sync, async")
    if context not in ASYNC_CONTEXTS:
        raise ValueError(f"unknown context {context!r}; valid: {', '.join(ASYNC_CONTEXTS)} (fork breaks GL and torch)")
    return AsyncVectorEnv(list(env_fns), context=context, autoreset_mode=mode)


class TorchVectorEnv(VectorWrapper):
    """A vector env that speaks torch: float32 observation tensors ``[N, ...]`` on ``device``, reward/terminated/
    truncated ``[N]`` tensors, and actions as tensors ``[N, A]`` (any device) or arrays.

    ``single_observation_space``/``single_action_space`` describe one env (what networks are built for);
    ``observation_space``/``action_space`` the batch of N. ``info`` keeps gymnasium's numpy arrays, except that
    ``info["final_obs"]`` (only on steps where some env ended, ``same_step`` mode) becomes a tensor tree like the
    observations, whose rows for envs that did not end are their current observation, and ``info["_final_obs"]``
    a bool tensor ``[N]``.
    """

    def __init__(self, venv: VectorEnv, device: str | torch.device = "cpu") -> None:
        super().__init__(venv)
        self.device = torch.device(device)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[TensorTree, dict]:
        """Reset every env; an integer ``seed`` seeds env i with ``seed + i`` and the action spaces with ``seed``."""
        if seed is not None and not isinstance(seed, int):
            raise TypeError(f"seed must be an int or None; got {type(seed).__name__}")
        obs, info = self.env.reset(seed=seed, options=options)
        if seed is not None:  # random exploration (action_space.sample()) is then reproducible too
            self.action_space.seed(seed)
            self.single_action_space.seed(seed)
        return self._to_torch(obs), info

    def step(self, actions: torch.Tensor | np.ndarray | Mapping[str, Any]) -> tuple[
            TensorTree, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Step env i with ``actions[i]``; returns (obs, reward [N], terminated [N], truncated [N], info)."""
        obs, reward, terminated, truncated, info = self.env.step(_to_numpy(actions))
        if "final_obs" in info:
            info = {**info, "final_obs": self._to_torch(self._final_obs_batch(obs, info)),
                    "_final_obs": torch.tensor(info["_final_obs"], device=self.device)}
        return (self._to_torch(obs), self._tensor(reward), torch.tensor(terminated, device=self.device),
                torch.tensor(truncated, device=self.device), info)

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """``getattr(env, name)(*args, **kwargs)`` on every env (the attribute itself if it is not callable)."""
        return self.env.call(name, *args, **kwargs)

    def _final_obs_batch(self, obs: Any, info: dict) -> Any:
        """gymnasium's per-env ``final_obs`` (None where an env did not end) as one batch shaped like ``obs``."""
        ended, finals = info["_final_obs"], info["final_obs"]
        rows = [finals[i] if ended[i] else current for i, current in enumerate(iterate(self.observation_space, obs))]
        space = self.single_observation_space
        return concatenate(space, rows, create_empty_array(space, self.num_envs))

    def _to_torch(self, obs: Any) -> TensorTree:
        if isinstance(obs, Mapping):
            return {key: self._to_torch(value) for key, value in obs.items()}
        return self._tensor(obs)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.tensor(array, dtype=torch.float32, device=self.device)


def _to_numpy(actions: Any) -> Any:
    """Tensor actions (on any device) -> numpy arrays; mappings of them recursively."""
    if isinstance(actions, torch.Tensor):
        return actions.detach().cpu().numpy()
    if isinstance(actions, Mapping):
        return {key: _to_numpy(value) for key, value in actions.items()}
    return actions

