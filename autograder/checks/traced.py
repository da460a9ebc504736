"""Checks for notebook 04_traced: ``TracedModule.forward`` (lazy, shared parameters, traced once by many threads), the
state-dict hooks that hide the ``module.`` level, and a question on what a trace freezes.

Each check builds HSD-3's ``qd_d2rl_d_256`` critic from the model factory on a seeded walker-like Dict observation,
wraps it in the student's class and compares against the eager critic it wraps (the reference behaviour of
``hsd3_learn.models.traced.TracedModule``: a trace computes exactly what the eager module computes, with its
parameters).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from gymnasium import spaces
from torch import nn

from autograder.core import CheckFailed, assert_close, assert_equal, cases, check, describe, run_student
from hsd3_learn.models.factory import make_model

__all__ = ["state_dict_hooks", "traced_forward", "traced_prediction", "traced_threads"]

OUTPUT_ATOL = 1e-6  # a trace replays the same kernels as eager: equal up to float rounding
GRAD_ATOL = 1e-5


# --------------------------------------------------------------------------------------------------------------
# Shared setup


def _critic(seed: int) -> tuple[nn.Module, dict[str, torch.Tensor], torch.Tensor]:
    """A seeded ``qd_d2rl_d_256`` critic with informative outputs, and a batch of (obs, action) for it.

    obs: {"observation": [B, O], "time": [B, 1]}, action: [B, A]; the critic returns [B, 2]. The global RNG state of
    the notebook is left as it was.
    """
    n_obs, n_act, batch = 4 + seed % 5, 2 + seed % 3, 3 + seed % 4
    obs_space = spaces.Dict({"observation": spaces.Box(-1, 1, (n_obs,)), "time": spaces.Box(0, 1, (1,))})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        critic = make_model("qd_d2rl_d_256", obs_space, spaces.Box(-1, 1, (n_act,)))
        nn.init.normal_(critic.net.out.weight, std=0.3)  # the real output layer starts at zero: make outputs differ
        nn.init.normal_(critic.net.out.bias, std=0.3)
    return (critic, *_batch(seed, n_obs, n_act, batch))


def _batch(seed: int, n_obs: int, n_act: int, batch: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + seed)
    obs = {"observation": torch.randn(batch, n_obs, generator=g), "time": torch.rand(batch, 1, generator=g)}
    return obs, torch.rand(batch, n_act, generator=g) * 2 - 1


def _case(seed: int, obs: dict[str, torch.Tensor], action: torch.Tensor) -> str:
    return f"seed={seed}, qd_d2rl_d_256 critic, obs {describe(obs)}, action {describe(action)}"


@contextlib.contextmanager
def _count_traces(delay: float = 0.0) -> Iterator[list[int]]:
    """Count calls of ``torch.jit.trace`` while inside; ``delay`` seconds make each trace slow (to expose races)."""
    calls: list[int] = []
    real_trace = torch.jit.trace

    def counting_trace(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        time.sleep(delay)
        return real_trace(*args, **kwargs)

    torch.jit.trace = counting_trace
    try:
        yield calls
    finally:
        torch.jit.trace = real_trace


def _wrap(student_cls: type, critic: nn.Module, case: str) -> nn.Module:
    return run_student(student_cls, critic, what=f"{getattr(student_cls, '__name__', 'TracedModule')}(critic)",
                       case=case)


# --------------------------------------------------------------------------------------------------------------
# Exercise 1: forward


@check("TracedModule.forward")
def traced_forward(student_cls: type, seeds: Any = None) -> str:
    """Lazy trace on the first call, outputs and gradients equal to eager, one trace reused for other batch sizes,
    parameters shared with the wrapped module (an optimizer step on it changes the traced output)."""
    for seed in cases(seeds, [0]):
        critic, obs, action = _critic(seed)
        case = _case(seed, obs, action)
        wrapper = _wrap(student_cls, critic, case)
        assert_equal("is_traced before the first call", wrapper.is_traced, False, case=case,
                     hint="trace lazily, in forward: the constructor does not know the inputs yet")
        with _count_traces() as traces:
            got = run_student(wrapper, obs, action, what="TracedModule(critic)(obs, action)", case=case)
            if "_traced" in wrapper._modules:
                raise CheckFailed(
                    "TracedModule: the trace was registered as a submodule (it shows up in state_dict() and "
                    f"named_children())\n  case: {case}\n  hint: store it with self.__dict__['_traced'] = ..., "
                    "not self._traced = ... (nn.Module registers any module assigned as an attribute)")
            assert_equal("is_traced after the first call", wrapper.is_traced, True, case=case,
                         hint="on the first call store self._trace(inputs) in self.__dict__['_traced'] and call it; "
                              "calling self.module directly gives the right numbers but traces nothing")
            assert_close("traced output (first call)", got, critic(obs, action), atol=OUTPUT_ATOL, case=case,
                         hints={"shape": "return what the trace returns for *inputs, unchanged"})
            obs_b, action_b = _batch(seed + 1, obs["observation"].shape[1], action.shape[1], action.shape[0] + 5)
            case_b = _case(seed, obs_b, action_b) + " (second call, another batch size)"
            got_b = run_student(wrapper, obs_b, action_b, what="TracedModule(critic)(obs, action)", case=case_b)
            assert_close("traced output (second call)", got_b, critic(obs_b, action_b), atol=OUTPUT_ATOL,
                         case=case_b)
            assert_equal("number of traces recorded in two calls", len(traces), 1, case=case,
                         hint="keep the trace and reuse it: only the first call traces")
        _check_shared_parameters(wrapper, critic, obs, action, case)
    return f"{len(cases(seeds, [0]))} critic(s): lazy, equal to eager (outputs, gradients), parameters shared"


def _check_shared_parameters(wrapper: nn.Module, critic: nn.Module, obs: dict, action: torch.Tensor,
                             case: str) -> None:
    """Gradients through the trace land on the critic's parameters; a step on them changes the traced output."""
    weights = torch.linspace(-1.0, 1.0, action.shape[0] * 2).reshape(-1, 2)
    critic.zero_grad(set_to_none=True)
    (critic(obs, action) * weights).sum().backward()
    expected = {name: p.grad.clone() for name, p in critic.named_parameters()}
    critic.zero_grad(set_to_none=True)
    (wrapper(obs, action) * weights).sum().backward()
    for name, p in critic.named_parameters():
        if p.grad is None:
            raise CheckFailed(f"TracedModule: no gradient reached the wrapped module's parameter {name!r}\n"
                              f"  case: {case}\n  hint: trace self.module itself (not a copy) so that the trace "
                              "uses its parameters")
        assert_close(f"gradient of {name} through the trace", p.grad, expected[name], atol=GRAD_ATOL, case=case)
    before = wrapper(obs, action).detach()
    torch.optim.SGD(critic.parameters(), lr=0.1).step()
    after = wrapper(obs, action).detach()
    if torch.equal(after, before):
        raise CheckFailed("TracedModule: an optimizer step on the wrapped module did not change the traced output\n"
                          f"  case: {case}\n  hint: the trace must share the wrapped module's parameters: trace "
                          "self.module, never a copy of it")
    assert_close("traced output after an optimizer step", after, critic(obs, action), atol=OUTPUT_ATOL, case=case)


# --------------------------------------------------------------------------------------------------------------
# Exercise 1 (continued): many threads at once


class _RecordingLock:
    """A lock that counts how often it is taken (to see whether forward locks after the trace exists)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acquired = 0

    def acquire(self, *args: Any, **kwargs: Any) -> bool:
        self.acquired += 1
        return self.lock.acquire(*args, **kwargs)

    def release(self) -> None:
        self.lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _call_from_threads(wrapper: nn.Module, obs: dict, action: torch.Tensor, n_threads: int,
                       timeout: float) -> tuple[list[torch.Tensor], list[BaseException], int]:
    """Start ``n_threads`` threads that call ``wrapper`` at the same moment; (results, errors, threads still alive)."""
    results: list[torch.Tensor] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads)

    def worker() -> None:
        try:
            barrier.wait(timeout)
            with torch.no_grad():
                out = wrapper(obs, action)
            results.append(out)
        except BaseException as err:  # reported by the main thread, with the case
            errors.append(err)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(n_threads)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return results, errors, sum(t.is_alive() for t in threads)


@check("TracedModule.forward from many threads")
def traced_threads(student_cls: type, seeds: Any = None, n_threads: int = 8, timeout: float = 20.0) -> str:
    """``n_threads`` threads call a fresh wrapper at once: exactly one trace, every result equal to eager, and no
    lock taken once the trace exists (the fast path of double-checked locking). Threads still running after
    ``timeout`` seconds are reported as a deadlock."""
    for seed in cases(seeds, [0]):
        critic, obs, action = _critic(seed)
        case = _case(seed, obs, action) + f", {n_threads} threads calling a fresh TracedModule at once"
        wrapper = _wrap(student_cls, critic, case)
        with _count_traces(delay=0.05) as traces:
            results, errors, alive = _call_from_threads(wrapper, obs, action, n_threads, timeout)
        for err in errors:
            if isinstance(err, NotImplementedError):
                raise err
        if alive:
            raise CheckFailed(f"TracedModule: {alive} of {n_threads} threads did not finish within {timeout:g} s "
                              "(deadlock?)\n"
                              f"  case: {case}\n  hint: threading.Lock is not re-entrant: take self._lock once, "
                              "and do not call retrace() or anything else that locks while holding it")
        if errors:
            err = errors[0]
            raise CheckFailed(f"TracedModule(critic)(obs, action) raised {type(err).__name__} in a thread: {err}\n"
                              f"  case: {case}")
        assert_equal("number of traces recorded", len(traces), 1, case=case,
                     hint="double-checked locking: when self._traced is None, take self._lock and test again "
                          "before tracing; another thread may have traced while this one waited for the lock")
        expected = critic(obs, action).detach()
        for out in results:
            assert_close("output of a thread", out, expected, atol=OUTPUT_ATOL, case=case)
        recording = _RecordingLock()
        wrapper._lock = recording
        run_student(wrapper, obs, action, what="TracedModule(critic)(obs, action)", case=case + " (after tracing)")
        assert_equal("times the lock was taken by a call after tracing", recording.acquired, 0, case=case,
                     hint="fast path: read self._traced first and only take the lock when it is None; locking on "
                          "every call makes all workers wait for each other")
    return f"{n_threads} threads: traced once, all outputs equal to eager, no lock after tracing"


# --------------------------------------------------------------------------------------------------------------
# Exercise 2: state-dict hooks


class _Head(nn.Module):
    """A wrapped module whose parameter names contain the text "module." in the middle of a name."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 4)
        self.head_module = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_module(torch.relu(self.linear(x)))


def _fresh(kind: str, seed: int) -> nn.Module:
    """Same architecture for every seed, weights drawn from ``seed`` (so that loading visibly changes them)."""
    if kind == "head":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return _Head()
    critic = _critic(0)[0]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in critic.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return critic


def _trees(student_cls: type, kind: str, layout: str, seed: int, case: str) -> tuple[nn.Module, nn.Module]:
    """(a tree holding the student's wrapper, the same tree with the plain module) for one nesting ``layout``."""
    inner, plain_inner = _fresh(kind, seed), _fresh(kind, seed + 1)
    wrapped = _wrap(student_cls, inner, case)
    if layout == "top":
        return wrapped, plain_inner
    if layout == "dict":  # like HSD-3's model tree {pi, q}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            pi, pi_plain = nn.Linear(3, 2), nn.Linear(3, 2)
        return nn.ModuleDict({"pi": pi, "q": wrapped}), nn.ModuleDict({"pi": pi_plain, "q": plain_inner})
    # two levels and two wrappers side by side: {hi: {q: traced, q2: traced}}
    second, plain_second = _fresh(kind, seed + 2), _fresh(kind, seed + 3)
    return (nn.ModuleDict({"hi": nn.ModuleDict({"q": wrapped, "q2": _wrap(student_cls, second, case)})}),
            nn.ModuleDict({"hi": nn.ModuleDict({"q": plain_inner, "q2": plain_second})}))


_KINDS = {"critic": "qd_d2rl_d_256 critic", "head": "a module with a child named `head_module`"}
_LAYOUTS = {"top": "alone", "dict": "inside ModuleDict {pi, q}", "nested": "in {hi: {q, q2}} next to a second wrapper"}
_PREFIX_HINT = ("a parent passes its own prefix (e.g. 'q.' or 'hi.q.'): rename only the keys that start with "
                "prefix + 'module.', and keep the prefix in front of the new key")


def _state_dict(tree: nn.Module, what: str, case: str) -> dict[str, torch.Tensor]:
    return run_student(tree.state_dict, what=what, case=case)


def _load(tree: nn.Module, state: dict[str, torch.Tensor], what: str, case: str, hint: str) -> None:
    try:
        tree.load_state_dict(state)
    except NotImplementedError:
        raise
    except Exception as err:
        message = " ".join(line.strip() for line in str(err).strip().splitlines())
        message = message if len(message) <= 240 else message[:237] + "..."
        raise CheckFailed(f"{what} raised {type(err).__name__}: {message}\n  case: {case}\n  hint: {hint}") from err


def _assert_same_tensors(what: str, got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                         case: str) -> None:
    for key, value in expected.items():
        assert_close(f"{what}[{key!r}]", got[key], value, atol=0.0, case=case)


@check("state-dict hooks")
def state_dict_hooks(student_cls: type, seeds: Any = None, edge_cases: bool = False) -> str:
    """Keys of ``state_dict()`` identical to the unwrapped module's (alone, inside a ModuleDict, two levels deep
    next to a second wrapper), and loading works both ways: traced checkpoint -> eager model, eager -> traced."""
    layouts = [("critic", "top"), ("critic", "dict"), ("critic", "nested")]
    if edge_cases:
        layouts += [("head", "top"), ("head", "nested")]
    n = 0
    for seed in cases(seeds, [0]):
        for kind, layout in layouts:
            case = f"seed={seed}, {_KINDS[kind]}, {_LAYOUTS[layout]}"
            tree, plain = _trees(student_cls, kind, layout, seed, case)
            saved = _state_dict(tree, "state_dict() of the tree with TracedModule", case)
            expected_keys = list(plain.state_dict())
            hint = ("_drop_module_level: " + _PREFIX_HINT) if layout != "top" else \
                "_drop_module_level: replace the leading 'module.' (after prefix) of every key, nothing else"
            if sorted(saved) != sorted(expected_keys):
                extra = sorted(set(saved) - set(expected_keys))[:2]
                missing = sorted(set(expected_keys) - set(saved))[:2]
                raise CheckFailed(f"state_dict keys differ from the unwrapped module's: unexpected {extra}, "
                                  f"missing {missing}\n  case: {case}\n  hint: {hint}")
            assert_equal("state_dict key order", list(saved), expected_keys, case=case,
                         hint="rename keys in their order (pop and re-insert each key once)")
            _load(plain, saved, "eager_model.load_state_dict(traced_model.state_dict())", case,
                  hint="the traced checkpoint must have exactly the keys of the eager one (see _drop_module_level)")
            _assert_same_tensors("eager model after loading the traced checkpoint", plain.state_dict(), saved, case)
            plain_state = {k: v + 1.0 if v.is_floating_point() else v for k, v in plain.state_dict().items()}
            _load(tree, plain_state, "traced_model.load_state_dict(eager_model.state_dict())", case,
                  hint="_add_module_level: every key that starts with prefix becomes prefix + 'module.' + the rest "
                       "(a parent passes its own prefix, e.g. 'q.' or 'hi.q.')")
            reloaded = _state_dict(tree, "state_dict() of the tree with TracedModule", case)
            _assert_same_tensors("traced model after loading an eager checkpoint", reloaded, plain_state, case)
            n += 1
    return f"{n} layouts: same keys as without tracing, loading works both ways"


# --------------------------------------------------------------------------------------------------------------
# Exercise 3: what does the trace compute?


def _prediction_inputs(seed: int, edge_cases: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = [torch.randn(2 + seed % 5, generator=g) * 3 + 1, torch.randn(3 + seed % 3, generator=g) * 3 - 2]
    if edge_cases:
        out += [-torch.rand(4, generator=g) - 0.5,  # every entry negative: eager would take the other branch
                torch.rand(1, generator=g) + 0.5,  # one element
                torch.randn(12, generator=g) * 10]  # longer than the example
    return out


@check("what the trace computes")
def traced_prediction(student: Callable[[torch.Tensor], torch.Tensor], fn: Callable[[torch.Tensor], torch.Tensor],
                      example: torch.Tensor, seeds: Any = None, edge_cases: bool = False) -> str:
    """The student's plain-torch ``student(x)`` against ``torch.jit.trace(fn, example)(x)`` on new inputs [N]."""
    traced = torch.jit.trace(fn, example.clone())
    inputs = [x for seed in cases(seeds, [0, 1]) for x in _prediction_inputs(seed, edge_cases)]
    for x in inputs:
        case = f"x = {[round(v, 3) for v in x.tolist()]} (traced on the example {example.tolist()})"
        expected = traced(x.clone())
        got = run_student(student, x.clone(), what="what_the_trace_computes(x)", case=case)
        hint = "print(traced.code): what became a constant, and what is still computed from x?"
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            hint = _prediction_hint(got, expected, fn(x.clone()), len(x) / len(example)) or hint
        assert_close("what_the_trace_computes(x)", got, expected, atol=1e-5, rtol=1e-5, case=case, hint=hint)
    return f"{len(inputs)} new inputs"


def _prediction_hint(got: torch.Tensor, traced: torch.Tensor, eager: torch.Tensor, length_ratio: float) -> str:
    """Advice for the two known wrong models of tracing: "nothing is frozen" and "everything is frozen"."""
    def same(a: torch.Tensor, b: torch.Tensor) -> bool:
        return torch.allclose(a.double(), b.double(), atol=1e-5, rtol=1e-5)

    if same(got, eager) and not same(got, traced):
        return ("that is what the Python function computes on x; the trace only recorded what happened on the "
                "example (which branch was taken, which Python number came out of .item())")
    if length_ratio != 1 and same(got * length_ratio, traced):
        return "the length is not frozen: x.shape[0] is recorded as an operation (aten::size) and follows the input"
    return ""
