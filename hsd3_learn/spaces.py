"""Batched torch versions of gymnasium's ``flatten`` / ``unflatten``.

Networks eat flat vectors, but HSD-3's observations are ``Dict`` spaces (``observation``, ``desired_goal``,
``task``, ``time``, ...) and its high-level action is ``Dict(task=Discrete, subgoal=Box)``. These helpers turn a
batch of such structured values into one ``[B, D]`` tensor and back, on any device, without leaving torch.

Layout (identical to ``gymnasium.spaces.flatten`` for a single sample, so ``flatdim`` agrees):

- ``Box``: ``[B, *shape]`` -> ``[B, prod(shape)]`` (a reshape).
- ``Discrete(n)``: integer ``[B]`` -> one-hot ``[B, n]``; unflatten takes the argmax (and adds ``start``).
- ``Dict``: the flattened sub-spaces concatenated in the space's own key order (gymnasium sorts plain dicts).

Difference from hucc: hucc viewed a ``Discrete`` value as a single number; we use gymnasium's one-hot layout so that
``flatdim`` and ``flatten_space`` from gymnasium describe our tensors exactly.
"""

from __future__ import annotations

from collections.abc import Mapping

import gymnasium as gym
import torch
from gymnasium import spaces

__all__ = ["flatdim", "th_flatten", "th_unflatten"]

TensorTree = torch.Tensor | Mapping[str, "TensorTree"]


def flatdim(space: gym.Space) -> int:
    """Number of features ``th_flatten`` produces for one sample of ``space``."""
    _check_supported(space)
    return int(spaces.flatdim(space))


def _check_supported(space: gym.Space) -> None:
    if isinstance(space, spaces.Dict):
        for sub in space.spaces.values():
            _check_supported(sub)
    elif not isinstance(space, (spaces.Box, spaces.Discrete)):
        raise TypeError(f"unsupported space {type(space).__name__}; valid: Box, Discrete, Dict of those")


def th_flatten(space: gym.Space, x: TensorTree) -> torch.Tensor:
    """Flatten a batch of values of ``space`` into ``[B, flatdim(space)]`` (float for Discrete one-hots)."""
    if isinstance(space, spaces.Box):
        if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != space.shape:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"Box{space.shape}: expected a tensor [B, *{space.shape}]; got {got}")
        return x.reshape(x.shape[0], -1)
    if isinstance(space, spaces.Discrete):
        if not isinstance(x, torch.Tensor) or x.ndim != 1:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"Discrete({space.n}): expected an integer tensor [B]; got {got}")
        index = x.long() - int(space.start)
        return torch.nn.functional.one_hot(index, int(space.n)).to(torch.get_default_dtype())
    if isinstance(space, spaces.Dict):
        if not isinstance(x, Mapping):
            raise ValueError(f"Dict space: expected a mapping with keys {list(space.spaces)}; got {type(x).__name__}")
        missing = [k for k in space.spaces if k not in x]
        if missing:
            raise ValueError(f"Dict space: missing keys {missing}; expected {list(space.spaces)}")
        if not space.spaces:
            raise ValueError("Dict space: cannot flatten an empty Dict (it has no features)")
        parts = [th_flatten(sub, x[key]) for key, sub in space.spaces.items()]
        dtype = torch.get_default_dtype()
        for part in parts:  # float64 anywhere -> float64 everywhere; never downcast
            dtype = torch.promote_types(dtype, part.dtype)
        return torch.cat([p.to(dtype) for p in parts], dim=-1)
    _check_supported(space)
    raise AssertionError("unreachable")  # pragma: no cover


def th_unflatten(space: gym.Space, x: torch.Tensor) -> TensorTree:
    """Inverse of :func:`th_flatten`: ``[B, flatdim(space)]`` -> a batch of values of ``space``."""
    expected = flatdim(space)
    if x.ndim != 2 or x.shape[1] != expected:
        raise ValueError(f"th_unflatten: expected a tensor [B, {expected}]; got {tuple(x.shape)}")
    if isinstance(space, spaces.Box):
        return x.reshape(x.shape[0], *space.shape)
    if isinstance(space, spaces.Discrete):
        return x.argmax(dim=-1) + int(space.start)
    out: dict[str, TensorTree] = {}
    offset = 0
    for key, sub in space.spaces.items():
        width = flatdim(sub)
        out[key] = th_unflatten(sub, x[:, offset : offset + width])
        offset += width
    return out
