"""Tests of autograder.checks.traced: each check passes on the reference, fails with a useful message on realistic
mistakes, lets the student's NotImplementedError through untouched, and writes nothing to stderr."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from autograder.checks import traced as check
from autograder.core import CheckFailed
from hsd3_learn.models.traced import TracedModule

EXAMPLE = torch.tensor([1.0, 2.0, 4.0])


def scale_by_max(x: torch.Tensor) -> torch.Tensor:
    """The notebook's exercise-3 function: a branch and a Python number frozen by the trace, a shape that is not."""
    top = x.max().item()
    if x.mean() > 0:
        y = x / top
    else:
        y = -x
    return y * x.shape[0]


def reference_prediction(x: torch.Tensor) -> torch.Tensor:
    return x / 4.0 * x.shape[0]


# --------------------------------------------------------------------------------------------------------------
# Broken students


class Unfinished(TracedModule):
    """The released notebook before the student writes anything."""

    def forward(self, *inputs: Any) -> Any:
        raise NotImplementedError()

    @staticmethod
    def _drop_module_level(module: Any, state_dict: dict, prefix: str, local_metadata: Any) -> None:
        raise NotImplementedError()

    @staticmethod
    def _add_module_level(module: Any, state_dict: dict, prefix: str, *args: Any) -> None:
        raise NotImplementedError()


class NeverTraces(TracedModule):
    def forward(self, *inputs: Any) -> Any:
        return self.module(*inputs)


class RegistersTrace(TracedModule):
    def forward(self, *inputs: Any) -> Any:
        if self._traced is None:
            self._traced = self._trace(inputs)  # nn.Module registers it as a submodule
        return self._traced(*inputs)


class TracesEveryCall(TracedModule):
    def forward(self, *inputs: Any) -> Any:
        self.__dict__["_traced"] = self._trace(inputs)
        return self._traced(*inputs)


class TracesACopy(TracedModule):
    def forward(self, *inputs: Any) -> Any:
        if self._traced is None:
            self.__dict__["_traced"] = torch.jit.trace(copy.deepcopy(self.module), inputs, strict=False)
        return self._traced(*inputs)


class NoLock(TracedModule):
    def forward(self, *inputs: Any) -> Any:
        if self._traced is None:
            self.__dict__["_traced"] = self._trace(inputs)
        return self._traced(*inputs)


class LockWithoutSecondCheck(TracedModule):
    def forward(self, *inputs: Any) -> Any:
        if self._traced is None:
            with self._lock:
                self.__dict__["_traced"] = self._trace(inputs)
        return self._traced(*inputs)


class LocksEveryCall(TracedModule):
    def forward(self, *inputs: Any) -> Any:
        with self._lock:
            if self._traced is None:
                self.__dict__["_traced"] = self._trace(inputs)
            return self._traced(*inputs)


class Deadlocks(TracedModule):
    def forward(self, *inputs: Any) -> Any:
        if self._traced is None:
            with self._lock:
                self.retrace()  # takes the same non-reentrant lock again
        return self._traced(*inputs)


class DropIgnoresPrefix(TracedModule):
    @staticmethod
    def _drop_module_level(module: Any, state_dict: dict, prefix: str, local_metadata: Any) -> None:
        for key in [k for k in state_dict if k.startswith("module.")]:
            state_dict[key[len("module."):]] = state_dict.pop(key)


class DropReplacesEverywhere(TracedModule):
    @staticmethod
    def _drop_module_level(module: Any, state_dict: dict, prefix: str, local_metadata: Any) -> None:
        for key in [k for k in state_dict if "module." in k]:
            state_dict[key.replace("module.", "")] = state_dict.pop(key)


class AddIgnoresPrefix(TracedModule):
    @staticmethod
    def _add_module_level(module: Any, state_dict: dict, prefix: str, *args: Any) -> None:
        for key in [k for k in state_dict if not k.startswith(prefix + "module.")]:
            state_dict["module." + key] = state_dict.pop(key)


class NoHooks(TracedModule):
    @staticmethod
    def _drop_module_level(module: Any, state_dict: dict, prefix: str, local_metadata: Any) -> None:
        return None

    @staticmethod
    def _add_module_level(module: Any, state_dict: dict, prefix: str, *args: Any) -> None:
        return None


# --------------------------------------------------------------------------------------------------------------
# Reference passes, quietly


def test_reference_passes_every_check_without_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    check.traced_forward(TracedModule)
    check.traced_forward(TracedModule, seeds=[3, 8])
    check.traced_threads(TracedModule)
    check.traced_threads(TracedModule, seeds=[5], n_threads=16)
    check.state_dict_hooks(TracedModule)
    check.state_dict_hooks(TracedModule, seeds=[4], edge_cases=True)
    check.traced_prediction(reference_prediction, scale_by_max, EXAMPLE)
    check.traced_prediction(reference_prediction, scale_by_max, EXAMPLE, seeds=range(10, 14), edge_cases=True)
    out, err = capfd.readouterr()
    assert err == ""
    assert out.count("PASS ") == 8


def test_checks_leave_torch_jit_trace_and_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check.traced_forward(TracedModule)
    check.traced_threads(TracedModule)
    assert torch.equal(torch.rand(3), expected)
    assert torch.jit.trace.__module__ == "torch.jit._trace"


# --------------------------------------------------------------------------------------------------------------
# Realistic mistakes


@pytest.mark.parametrize(
    ("student", "message"),
    [
        (NeverTraces, "is_traced after the first call"),
        (RegistersTrace, "registered as a submodule"),
        (TracesEveryCall, "number of traces recorded in two calls: expected 1, got 2"),
        (TracesACopy, "no gradient reached the wrapped module's parameter"),
    ],
)
def test_forward_mistakes_fail_with_a_useful_message(student: type, message: str,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CheckFailed, match=message) as info:
        check.traced_forward(student)
    assert "case: seed=0" in str(info.value) and "hint:" in str(info.value)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(
    ("student", "message"),
    [
        (NoLock, "number of traces recorded: expected 1, got [2-8]"),
        (LockWithoutSecondCheck, "number of traces recorded: expected 1, got [2-8]"),
        (LocksEveryCall, "times the lock was taken by a call after tracing: expected 0, got 1"),
    ],
)
def test_thread_mistakes_fail_with_a_useful_message(student: type, message: str,
                                                     capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CheckFailed, match=message) as info:
        check.traced_threads(student)
    assert "8 threads" in str(info.value) and "hint:" in str(info.value)
    assert capfd.readouterr().err == ""


def test_a_deadlock_is_reported_instead_of_hanging() -> None:
    with pytest.raises(CheckFailed, match=r"8 of 8 threads did not finish within 0.5 s \(deadlock\?\)"):
        check.traced_threads(Deadlocks, timeout=0.5)


@pytest.mark.parametrize(
    ("student", "message", "edge_cases"),
    [
        (NoHooks, "state_dict keys differ from the unwrapped module's: unexpected \\['module.net", False),
        (DropIgnoresPrefix, "unexpected \\['q.module.net", False),
        (DropReplacesEverywhere, "missing \\['head_module.bias'", True),
        (AddIgnoresPrefix, "traced_model.load_state_dict\\(eager_model.state_dict\\(\\)\\) raised RuntimeError", False),
    ],
)
def test_state_dict_mistakes_fail_with_a_useful_message(student: type, message: str, edge_cases: bool,
                                                         capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CheckFailed, match=message) as info:
        check.state_dict_hooks(student, edge_cases=edge_cases)
    assert "hint:" in str(info.value)
    assert capfd.readouterr().err == ""


def test_only_the_hidden_edge_case_catches_a_replace_everywhere() -> None:
    check.state_dict_hooks(DropReplacesEverywhere)  # critics have no "module." inside their own names


@pytest.mark.parametrize(
    ("student", "message"),
    [
        (scale_by_max, "that is what the Python function computes on x"),
        (lambda x: x / 4.0 * 3, "x.shape\\[0\\] is recorded as an operation"),
        (lambda x: x / 2.0 * x.shape[0], "print\\(traced.code\\)"),
        (lambda x: (x / 4.0 * x.shape[0]).unsqueeze(0), "shape differs: expected \\[\\d\\], got \\[1, \\d\\]"),
    ],
)
def test_prediction_mistakes_fail_with_a_useful_message(student: Any, message: str,
                                                         capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CheckFailed, match=message):
        check.traced_prediction(student, scale_by_max, EXAMPLE, seeds=range(5), edge_cases=True)
    assert capfd.readouterr().err == ""


# --------------------------------------------------------------------------------------------------------------
# NotImplementedError passes through


@pytest.mark.parametrize(
    "run",
    [
        lambda: check.traced_forward(Unfinished),
        lambda: check.traced_threads(Unfinished),
        lambda: check.state_dict_hooks(Unfinished),
        lambda: check.traced_prediction(lambda x: (_ for _ in ()).throw(NotImplementedError()), scale_by_max,
                                        EXAMPLE),
    ],
    ids=["forward", "threads", "state_dict", "prediction"],
)
def test_not_implemented_passes_through(run: Any, capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(NotImplementedError):
        run()
    assert capfd.readouterr().err == ""
