"""Tests of hsd3_learn.models.traced: a lazily traced module behaves like the module it wraps."""

from __future__ import annotations

import copy
import io
import pickle
import threading

import pytest
import torch
from gymnasium import spaces
from torch import nn

from hsd3_learn.models.factory import make_model
from hsd3_learn.models.traced import TracedModule

OBS = spaces.Dict({"observation": spaces.Box(-1, 1, (5,)), "time": spaces.Box(0, 1, (1,))})
ACT = spaces.Box(-1, 1, (2,))


def _critic() -> nn.Module:
    q = make_model("qd_d2rl_d_256", OBS, ACT)
    nn.init.normal_(q.net.out.weight)  # the real output layer starts at zero; make outputs informative
    return q


def _inputs(batch: int, seed: int = 0) -> tuple[dict, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    obs = {"observation": torch.randn(batch, 5, generator=g), "time": torch.rand(batch, 1, generator=g)}
    return obs, torch.rand(batch, 2, generator=g) * 2 - 1


def test_traces_lazily_and_matches_eager() -> None:
    q = _critic()
    traced = TracedModule(q)
    assert not traced.is_traced
    obs, act = _inputs(16)
    out = traced(obs, act)
    assert traced.is_traced
    torch.testing.assert_close(out, q(obs, act), rtol=0, atol=0)
    obs3, act3 = _inputs(3, seed=1)  # another batch size reuses the same trace
    torch.testing.assert_close(traced(obs3, act3), q(obs3, act3), rtol=0, atol=0)


def test_trace_shares_parameters_and_gradients_with_the_wrapped_module() -> None:
    q = _critic()
    traced = TracedModule(q)
    obs, act = _inputs(8)
    before = traced(obs, act).detach()
    optim = torch.optim.SGD(q.parameters(), lr=0.1)
    traced(obs, act).pow(2).sum().backward()  # gradients computed through the trace land on q's parameters
    assert all(p.grad is not None for p in q.parameters())
    optim.step()
    after = traced(obs, act)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, q(obs, act), rtol=0, atol=0)
    assert len(list(traced.parameters())) == len(list(q.parameters()))  # trace not counted twice


def test_first_call_from_many_threads_traces_once(monkeypatch) -> None:
    calls = []
    real_trace = torch.jit.trace

    def counting_trace(*args, **kwargs):
        calls.append(1)
        return real_trace(*args, **kwargs)

    monkeypatch.setattr(torch.jit, "trace", counting_trace)
    q = _critic()
    traced = TracedModule(q)
    obs, act = _inputs(4)
    expected = q(obs, act).detach()
    results: list[torch.Tensor] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        with torch.no_grad():
            results.append(traced(obs, act))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(results) == 8 and all(torch.equal(r, expected) for r in results)


class _SignGate(nn.Module):
    """Data-dependent control flow: the branch is decided by the values, which a trace cannot follow."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else -x


def test_data_dependent_branches_are_frozen_at_trace_time() -> None:
    traced = TracedModule(_SignGate())
    positive, negative = torch.ones(3), -torch.ones(3)
    assert torch.equal(traced(positive), positive * 2)
    assert torch.equal(traced(negative), negative * 2)  # eager would return +1: the first branch was recorded
    traced.retrace()
    assert torch.equal(traced(negative), torch.ones(3))


def test_state_dict_is_the_same_as_without_tracing() -> None:
    q = _critic()
    traced = TracedModule(q)
    traced(*_inputs(2))
    assert list(traced.state_dict()) == list(q.state_dict())
    tree = nn.ModuleDict({"q": traced})
    plain = nn.ModuleDict({"q": make_model("qd_d2rl_d_256", OBS, ACT)})
    assert list(tree.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(tree.state_dict())  # traced checkpoint -> eager model
    obs, act = _inputs(5)
    torch.testing.assert_close(plain.q(obs, act), q(obs, act))
    nn.init.normal_(plain.q.net.out.weight)
    tree.load_state_dict(plain.state_dict())  # eager checkpoint -> traced model, trace sees the new values
    torch.testing.assert_close(traced(obs, act), plain.q(obs, act), rtol=0, atol=0)


def test_copies_and_pickles_drop_the_trace() -> None:
    q = _critic()
    traced = TracedModule(q)
    obs, act = _inputs(4)
    traced(obs, act)
    clone = copy.deepcopy(traced)
    assert not clone.is_traced
    torch.testing.assert_close(clone(obs, act), q(obs, act), rtol=0, atol=0)
    buffer = io.BytesIO()
    torch.save(traced, buffer)
    restored = pickle.loads(pickle.dumps(traced))
    torch.testing.assert_close(restored(obs, act), q(obs, act), rtol=0, atol=0)


def test_clear_errors() -> None:
    with pytest.raises(TypeError, match="wraps an nn.Module; got function"):
        TracedModule(lambda x: x)  # type: ignore[arg-type]
    policy = TracedModule(make_model("pi_d2rl_d_256", OBS, ACT))
    with pytest.raises(TypeError, match="cannot trace Sequential: inputs and outputs must be tensors"):
        policy(_inputs(2)[0])
    with pytest.raises(ValueError, match="needs at least one tensor input"):
        TracedModule(nn.Identity())()


def test_a_wrapped_module_with_its_own_child_named_module_round_trips() -> None:
    inner = nn.ModuleDict({"module": nn.Linear(2, 2), "head": nn.Linear(2, 1)})
    traced = TracedModule(inner)
    assert sorted(traced.state_dict()) == sorted(inner.state_dict())
    tree = nn.ModuleDict({"q": traced})
    tree.load_state_dict(tree.state_dict())  # strict: every key found
    plain = nn.ModuleDict({"q": nn.ModuleDict({"module": nn.Linear(2, 2), "head": nn.Linear(2, 1)})})
    tree.load_state_dict(plain.state_dict())
    torch.testing.assert_close(inner.module.weight, plain.q.module.weight, rtol=0, atol=0)
