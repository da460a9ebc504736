"""The agent base class: counters, train/eval mode, checkpoints and TensorBoard scalars shared by every agent.

Every HSD-3 agent (SAC, SAC-MT, HSD-3, HSD-Bandit, ...) is driven by the same training loop: ``action(obs,
explore)`` picks actions for N envs, ``observe(...)`` stores the step and runs updates when they are due. What
the loop needs beyond that lives here:

- counters: ``n_samples`` (env steps summed over envs, the x axis of every plot), ``n_steps`` (vector-env
  steps) and ``n_updates`` (gradient steps);
- checkpoints: a subclass declares the attributes to save with :meth:`Agent.set_checkpoint_attr` (modules,
  optimizers, replay buffers, bandits: anything with ``state_dict``; tensors such as temperatures; dicts of
  these; plain numbers), and :meth:`Agent.save_checkpoint` writes them with the counters and the RNG states of
  Python, NumPy and torch (CPU and CUDA), so that a resumed run continues exactly where it stopped;
- logging: an optional TensorBoard ``SummaryWriter`` and :meth:`Agent.log_scalars`, which only accepts the
  project's metric namespaces ``train/``, ``eval/`` and ``health/``.

Differences from hucc's ``Agent`` (``hucc/agents/agent.py``):

1. The checkpoint also holds the RNG states, the agent's class name, and optionally the replay buffer: a resumed
   run draws the same batches and exploration noise, and loading another agent's file fails clearly.
2. Checkpoints are written atomically and read with ``weights_only=True``: no half-written files after a kill,
   and loading runs no pickled code; a truncated or foreign file gives a one-line error.
3. ``set_checkpoint_attr`` adds to the list instead of replacing it, so subclasses of subclasses can extend it.
4. ``action``/``observe``/``update`` are abstract methods with tensors in and out (hucc passed the env, extra
   values and raw ``step`` results), and the unused ``_update_v`` and effective-space hooks are gone.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import random
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from torch import nn

from hsd3_learn.utils import atomic_save, fused_kwargs

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["Agent", "METRIC_NAMESPACES", "capture_rng_state", "make_config", "restore_rng_state"]

#: the first part of every logged metric name
METRIC_NAMESPACES = ("train", "eval", "health")

ConfigT = TypeVar("ConfigT")
_PLAIN = (bool, int, float, str, type(None))
#: what torch.load raises for a truncated, foreign or corrupt file (turned into one-line errors)
UNREADABLE_ERRORS = (OSError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, KeyError)


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Parameters of ``module`` get no gradient inside the block (gradients still flow to its inputs)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def mean_metrics(metrics: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Average each metric over several updates, with one device-to-host copy for all of them."""
    names = list(metrics[0])
    means = torch.stack([torch.stack([m[name] for m in metrics]).float().mean() for name in names])
    return dict(zip(names, means.tolist()))


def action_bounds(action_space: Any, device: torch.device, who: str,
                  n_actions: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(center, scale) [A] mapping policy outputs u in (-1, 1) to ``center + scale * u`` in ``[low, high]``."""
    from gymnasium import spaces

    if not isinstance(action_space, spaces.Box) or len(action_space.shape) != 1:
        raise ValueError(f"{who} needs a 1-D Box action space; got {action_space}")
    if n_actions is not None and action_space.shape != (n_actions,):
        raise ValueError(f"{who} needs the skill's action space of {n_actions} dims; got {action_space}")
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise ValueError(f"{who} needs finite action bounds; got {action_space}")
    low = torch.as_tensor(action_space.low, dtype=torch.float32, device=device)
    high = torch.as_tensor(action_space.high, dtype=torch.float32, device=device)
    return (high + low) / 2, (high - low) / 2


def optimizer_step(optim: torch.optim.Optimizer, loss: torch.Tensor, clip_grad_norm: float = 0.0) -> torch.Tensor:
    """Backward ``loss``, clip the gradient of ``optim``'s parameters to ``clip_grad_norm`` (0: no clipping) and
    step ``optim``; returns the gradient norm before clipping (logged as a health metric)."""
    optim.zero_grad()
    loss.backward()
    max_norm = clip_grad_norm if clip_grad_norm > 0 else math.inf
    grad_norm = nn.utils.clip_grad_norm_([p for group in optim.param_groups for p in group["params"]], max_norm)
    optim.step()
    return grad_norm.detach()


def make_adam(params: Any, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam, with the fused CUDA kernel when the agent lives on a GPU."""
    return torch.optim.Adam(params, lr=lr, **fused_kwargs("torch.optim.Adam", {}, device.type == "cuda"))


def make_config(config_cls: type[ConfigT], cfg: Any) -> ConfigT:
    """An agent config from None (defaults), an instance, or a mapping such as a Hydra ``DictConfig``.

    Unknown keys fail with one line listing the valid ones, so a typo in a config file cannot go unnoticed.
    """
    if cfg is None:
        return config_cls()
    if isinstance(cfg, config_cls):
        return cfg
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - hydra-core is a hard dependency
        pass
    if not isinstance(cfg, Mapping):
        raise TypeError(f"{config_cls.__name__}: expected None, an instance or a mapping; got {type(cfg).__name__}")
    valid = [field.name for field in dataclasses.fields(config_cls)]
    unknown = sorted(set(cfg) - set(valid))
    if unknown:
        raise ValueError(f"{config_cls.__name__}: unknown keys {unknown}; valid keys: {', '.join(valid)}")
    return config_cls(**cfg)


def capture_rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's global generators (CUDA too when present), as plain data.

    NumPy's key array is stored as a tensor so that the state survives ``torch.load(weights_only=True)``.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Set the global generators back to a state from :func:`capture_rng_state` (CUDA only when both have it)."""
    random.setstate(_as_tuples(state["python"]))
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state((numpy["name"], keys, numpy["pos"], numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """Lists back to tuples, recursively (``random.setstate`` insists on tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuples(item) for item in value)
    return value


def _state_of(value: Any, name: str) -> Any:
    """The checkpointable form of one attribute value (state dicts, detached tensors, dicts, plain values)."""
    if hasattr(value, "state_dict") and hasattr(value, "load_state_dict"):
        return value.state_dict()
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, dict):
        return {key: _state_of(item, f"{name}.{key}") for key, item in value.items()}
    if isinstance(value, _PLAIN):
        return value
    raise TypeError(
        f"checkpoint attribute {name!r} has type {type(value).__name__}; valid: objects with state_dict, tensors, "
        "dicts of those, bool/int/float/str/None"
    )


def _load_into(value: Any, state: Any, name: str) -> Any:
    """Restore ``state`` into ``value`` in place where possible and return the (possibly new) value."""
    if hasattr(value, "state_dict") and hasattr(value, "load_state_dict"):
        value.load_state_dict(state)
        return value
    if isinstance(value, torch.Tensor):
        with torch.no_grad():  # in place: optimizers keep pointing at the same tensor (e.g. log-alpha)
            value.copy_(state)
        return value
    if isinstance(value, dict):
        missing = sorted(set(value) - set(state))
        if missing:
            raise ValueError(f"checkpoint entry {name!r} lacks keys {missing}")
        for key in value:
            value[key] = _load_into(value[key], state[key], f"{name}.{key}")
        return value
    return state


class Agent(ABC):
    """Base class of all agents; subclasses implement :meth:`action`, :meth:`observe` and :meth:`update`."""

    #: whether the agent's envs must add ``obs["time"]`` and the goal-space features (HSD-3, HSD-Bandit)
    reads_goal_space = False

    def __init__(self, device: torch.device, writer: SummaryWriter | None = None) -> None:
        self.device = device
        self.writer = writer  # TensorBoard writer; None logs nothing
        self.n_samples = 0  # env steps summed over envs
        self.n_steps = 0  # vector-env steps (observe calls)
        self.n_updates = 0  # gradient steps
        self._samples_since_update = 0  # samples since the last round of updates (count_and_update)
        self.training = True
        self._checkpoint_attrs: list[str] = []

    # ---------------------------------------------------------------- the interface of the training loop

    def count_and_update(self, n_envs: int, buffer_size: int, warmup_samples: int, samples_per_update: int,
                         num_updates: int) -> dict[str, float]:
        """Count one vector-env step of ``n_envs`` samples; after warm-up, every ``samples_per_update`` samples run
        ``num_updates`` updates (hucc's schedule). Returns the updates' mean metrics (logged), or {} when none ran."""
        self.n_steps += 1
        self.n_samples += n_envs
        self._samples_since_update += n_envs
        if buffer_size < warmup_samples or self._samples_since_update < samples_per_update:
            return {}
        self._samples_since_update = 0
        metrics = mean_metrics([self.update() for _ in range(num_updates)])
        self.log_scalars("", metrics)
        return metrics

    @abstractmethod
    def action(self, obs: Any, explore: bool) -> Any:
        """Actions for a batch of N observations (``[N, ...]`` tensors or a dict of them)."""

    @abstractmethod
    def observe(self, obs: Any, action: Any, reward: torch.Tensor, terminated: torch.Tensor,
                truncated: torch.Tensor, next_obs: Any, info: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Store one vector-env step; run the updates that are due and return their metrics (or ``{}``).

        ``info`` is the vector env's info of the step; agents that need per-step flags (SAC-MT) or episode
        returns (HSD-Bandit) read it, the others ignore it."""

    @abstractmethod
    def update(self) -> dict[str, torch.Tensor]:
        """One gradient step; returns its metrics as detached 0-d tensors keyed by namespaced names."""

    # ---------------------------------------------------------------- mode

    def train(self) -> None:
        """Training mode for the agent and every checkpointed module."""
        self._set_mode(True)

    def eval(self) -> None:
        """Evaluation mode for the agent and every checkpointed module."""
        self._set_mode(False)

    def _set_mode(self, training: bool) -> None:
        self.training = training
        for name in self._checkpoint_attrs:
            value = getattr(self, name)
            for module in value.values() if isinstance(value, dict) else [value]:
                if isinstance(module, nn.Module):
                    module.train(training)

    # ---------------------------------------------------------------- logging

    def log_scalars(self, prefix: str, scalars: Mapping[str, float | torch.Tensor], step: int | None = None) -> None:
        """Write each value as ``prefix + name`` at ``step`` (default: ``n_samples``); no writer, no work.

        Full names must start with a namespace of :data:`METRIC_NAMESPACES`, e.g. ``log_scalars("eval/",
        {"return": 3.0})`` or ``log_scalars("", {"train/loss_q": 0.1})``.
        """
        tags = {f"{prefix}{name}": value for name, value in scalars.items()}
        for tag in tags:
            if tag.split("/", 1)[0] not in METRIC_NAMESPACES or "/" not in tag:
                raise ValueError(f"metric {tag!r} has no namespace; names start with one of "
                                 f"{', '.join(ns + '/' for ns in METRIC_NAMESPACES)}")
        if self.writer is None:
            return
        step = self.n_samples if step is None else step
        for tag, value in tags.items():
            self.writer.add_scalar(tag, float(value), step)

    # ---------------------------------------------------------------- checkpoints

    def set_checkpoint_attr(self, *names: str) -> None:
        """Declare attributes to save in checkpoints, in addition to those declared before."""
        for name in names:
            if not hasattr(self, name):
                raise ValueError(f"{type(self).__name__} has no attribute {name!r} to checkpoint")
            if name in self._checkpoint_attrs:
                raise ValueError(f"checkpoint attribute {name!r} is declared twice")
            _state_of(getattr(self, name), name)  # fails now, not at the first save, on unsupported types
            self._checkpoint_attrs.append(name)

    def _is_buffer(self, name: str) -> bool:
        from hsd3_learn.replaybuffer import ReplayBuffer

        return isinstance(getattr(self, name), ReplayBuffer)

    def checkpoint_state(self, include_buffer: bool = True) -> dict[str, Any]:
        """Everything needed to resume: declared attributes, counters, mode and RNG states.

        Tensors are shared with the agent, not copied: save the result (or deep-copy it) before training on.
        Replay buffers are left out with ``include_buffer=False`` (they can be gigabytes).
        """
        attrs = {name: _state_of(getattr(self, name), name) for name in self._checkpoint_attrs
                 if include_buffer or not self._is_buffer(name)}
        return {"agent": type(self).__name__, "attrs": attrs, "rng": capture_rng_state(),
                "counters": {"n_samples": self.n_samples, "n_steps": self.n_steps, "n_updates": self.n_updates},
                "training": self.training}

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`checkpoint_state`; a missing replay buffer leaves the current one as it is."""
        if state.get("agent") != type(self).__name__:
            raise ValueError(f"checkpoint is for agent {state.get('agent')!r}, not {type(self).__name__!r}")
        attrs = state["attrs"]
        missing = [name for name in self._checkpoint_attrs if name not in attrs and not self._is_buffer(name)]
        if missing:
            raise ValueError(f"checkpoint lacks attributes {missing}; it has {sorted(attrs)}")
        for name in self._checkpoint_attrs:
            if name in attrs:
                setattr(self, name, _load_into(getattr(self, name), attrs[name], name))
        for counter in ("n_samples", "n_steps", "n_updates"):
            setattr(self, counter, int(state["counters"][counter]))
        self._set_mode(bool(state["training"]))
        restore_rng_state(state["rng"])

    def save_checkpoint(self, path: str | os.PathLike, include_buffer: bool = True) -> None:
        """Write :meth:`checkpoint_state` to ``path`` atomically (a crash mid-save keeps the previous file)."""
        atomic_save(self.checkpoint_state(include_buffer), path)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Resume from a file written by :meth:`save_checkpoint` (tensors go to the agent's devices)."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint {os.fspath(path)!r} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except UNREADABLE_ERRORS as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(
                f"cannot read checkpoint {os.fspath(path)!r}: truncated or not a torch file ({reason})"
            ) from None
        if not isinstance(state, Mapping) or not {"agent", "attrs", "rng", "counters", "training"} <= set(state):
            raise ValueError(f"{os.fspath(path)!r} is not an agent checkpoint (written by Agent.save_checkpoint)")
        self.load_checkpoint_state(state)
