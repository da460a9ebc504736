"""Tests of hsd3_learn.spaces: batched flatten/unflatten agree with gymnasium and invert each other."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from hsd3_learn.spaces import flatdim, th_flatten, th_unflatten

HSD3_OBS = spaces.Dict(
    {
        "observation": spaces.Box(-np.inf, np.inf, (5,), np.float32),
        "task": spaces.Discrete(4),
        "time": spaces.Box(0, 1, (1,), np.float32),
        "grid": spaces.Box(-1, 1, (2, 3), np.float32),
    }
)
HSD3_ACTION = spaces.Dict({"task": spaces.Discrete(3, start=1), "subgoal": spaces.Box(-1, 1, (2,), np.float32)})


def _batch(space: spaces.Space, n: int, seed: int = 0):
    """n gymnasium samples stacked into torch tensors (what a vector env hands to the agent)."""
    space.seed(seed)
    samples = [space.sample() for _ in range(n)]
    if isinstance(space, spaces.Dict):
        return {k: torch.as_tensor(np.stack([s[k] for s in samples])) for k in space.spaces}
    return torch.as_tensor(np.stack(samples))


@pytest.mark.parametrize("space", [spaces.Box(-1, 1, (3, 2)), spaces.Discrete(5), HSD3_OBS, HSD3_ACTION])
def test_flatten_matches_gymnasium_per_sample(space: spaces.Space) -> None:
    batch = _batch(space, 6)
    flat = th_flatten(space, batch)
    assert flat.shape == (6, flatdim(space)) == (6, spaces.flatdim(space))
    space.seed(0)
    for row in flat:
        expected = spaces.flatten(space, space.sample())
        np.testing.assert_allclose(row.numpy(), expected.astype(np.float32), rtol=0, atol=1e-6)


@pytest.mark.parametrize("space", [spaces.Box(-1, 1, (3, 2)), spaces.Discrete(5, start=-2), HSD3_OBS, HSD3_ACTION])
def test_unflatten_inverts_flatten(space: spaces.Space) -> None:
    batch = _batch(space, 7, seed=3)
    back = th_unflatten(space, th_flatten(space, batch))
    if isinstance(space, spaces.Dict):
        assert list(back) == list(space.spaces)  # space order
        for key in space.spaces:
            assert torch.equal(back[key].to(batch[key].dtype), batch[key]), key
    else:
        assert torch.equal(back.to(batch.dtype), batch)


def test_dict_is_concatenated_in_space_order() -> None:
    space = spaces.Dict({"b": spaces.Box(0, 1, (1,)), "a": spaces.Box(0, 1, (2,))})  # gymnasium sorts: a, b
    flat = th_flatten(space, {"b": torch.tensor([[9.0]]), "a": torch.tensor([[1.0, 2.0]])})
    assert flat.tolist() == [[1.0, 2.0, 9.0]]


def test_discrete_is_one_hot_and_keeps_gradients_of_boxes() -> None:
    space = spaces.Dict({"x": spaces.Box(-1, 1, (2,)), "k": spaces.Discrete(3)})
    x = torch.randn(2, 2, requires_grad=True)
    flat = th_flatten(space, {"x": x, "k": torch.tensor([2, 0])})
    assert flat[:, :3].tolist() == [[0, 0, 1], [1, 0, 0]]  # "k" sorts before "x"
    flat.sum().backward()
    assert torch.equal(x.grad, torch.ones(2, 2))


def test_flatten_keeps_device_and_float_dtype() -> None:
    space = spaces.Box(-1, 1, (2,), np.float64)
    flat = th_flatten(space, torch.zeros(3, 2, dtype=torch.float64))
    assert flat.dtype == torch.float64 and flat.device.type == "cpu"


def test_errors_are_clear() -> None:
    with pytest.raises(ValueError, match=r"Box\(3,\): expected a tensor \[B, \*\(3,\)\]; got \(2, 4\)"):
        th_flatten(spaces.Box(-1, 1, (3,)), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"Discrete\(3\): expected an integer tensor \[B\]"):
        th_flatten(spaces.Discrete(3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"missing keys \['time'\]"):
        th_flatten(HSD3_OBS, {k: v for k, v in _batch(HSD3_OBS, 2).items() if k != "time"})
    with pytest.raises(ValueError, match=r"expected a tensor \[B, 5\]; got \(2, 4\)"):
        th_unflatten(spaces.Discrete(5), torch.zeros(2, 4))
    with pytest.raises(TypeError, match="unsupported space MultiBinary"):
        flatdim(spaces.MultiBinary(3))


def test_dict_promotes_to_the_widest_float_and_rejects_empty() -> None:
    space = spaces.Dict({"a": spaces.Box(-1, 1, (1,), np.float32), "b": spaces.Box(-1, 1, (1,), np.float64)})
    flat = th_flatten(space, {"a": torch.zeros(2, 1), "b": torch.full((2, 1), 1 + 1e-12, dtype=torch.float64)})
    assert flat.dtype == torch.float64 and flat[0, 1].item() == 1 + 1e-12  # no silent downcast
    with pytest.raises(ValueError, match="cannot flatten an empty Dict"):
        th_flatten(spaces.Dict({}), {})
