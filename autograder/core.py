"""The comparison engine behind every check: seeded cases, quiet execution, precise failure messages.

A check calls the student's code and the reference implementation on the same seeded inputs and compares what comes
out. The rules (the course's autograder contract):

- same seeds on both sides; CPU; one thread; deterministic;
- shapes and dtypes are compared before values; values with explicit tolerances;
- a failure raises :class:`CheckFailed` whose first line names the check, the output and the error against its
  tolerance, followed by the case (seed, input shapes), expected vs got at the worst element, and a hint when the
  mistake is a known one;
- nothing is written to stderr (nbgrader scores a test cell 0 on any stderr output), and a pass prints one line to
  stdout;
- the student's ``NotImplementedError`` passes through untouched, so an unfilled notebook fails with exactly that
  error; any other exception from the student's code is reported with the case that triggered it.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import random
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import torch

__all__ = [
    "CheckFailed",
    "assert_close",
    "assert_equal",
    "cases",
    "check",
    "describe",
    "quiet",
    "run_student",
    "seed_all",
]

F = TypeVar("F", bound=Callable[..., Any])


class CheckFailed(AssertionError):
    """A check found a difference between the student's code and the reference."""


def seed_all(seed: int) -> None:
    """Seed Python, NumPy and torch so that both sides of a comparison draw the same numbers."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def _silence_fd2() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null: C++ warnings from torch or MuJoCo bypass ``sys.stderr``."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No warnings and no stderr while checking; torch on one CPU thread for reproducible reductions."""
    threads = torch.get_num_threads()
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stderr(sink), _silence_fd2():
        warnings.simplefilter("ignore")
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def describe(value: Any) -> str:
    """Short description of an input for failure messages: shapes and dtypes, not contents."""
    if isinstance(value, torch.Tensor):
        return f"tensor{list(value.shape)} {str(value.dtype).replace('torch.', '')}"
    if isinstance(value, np.ndarray):
        return f"ndarray{list(value.shape)} {value.dtype}"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {describe(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)) and len(value) <= 6:
        return "(" + ", ".join(describe(v) for v in value) + ")"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def run_student(fn: Callable[..., Any], *args: Any, what: str, case: str, **kwargs: Any) -> Any:
    """Call the student's code; keep ``NotImplementedError``, turn other crashes into a clear failure."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise
    except CheckFailed:
        raise
    except Exception as err:  # the student's bug, reported with the case that triggers it
        raise CheckFailed(f"{what} raised {type(err).__name__}: {err}\n  case: {case}") from err


def _as_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, (int, float, bool, np.number)):
        return torch.tensor(value)
    return None


def assert_equal(name: str, got: Any, expected: Any, case: str = "", hint: str = "") -> None:
    """Exact comparison for non-numeric results (indices, strings, lists); tensors via :func:`assert_close`."""
    if _as_tensor(expected) is not None and not isinstance(expected, (int, bool, str)):
        assert_close(name, got, expected, atol=0.0, rtol=0.0, case=case, hint=hint)
        return
    if got != expected:
        lines = [f"{name}: expected {expected!r}, got {got!r}"]
        if case:
            lines.append(f"  case: {case}")
        if hint:
            lines.append(f"  hint: {hint}")
        raise CheckFailed("\n".join(lines))


def assert_close(
    name: str,
    got: Any,
    expected: Any,
    *,
    atol: float,
    rtol: float = 0.0,
    case: str = "",
    hint: str = "",
    hints: Mapping[str, str] | None = None,
) -> float:
    """Compare two arrays/tensors/numbers: type, shape, dtype, then values (``|got - exp| <= atol + rtol |exp|``).

    ``hints`` maps a known-mistake key to advice: ``"shape"`` is used when the shapes differ (e.g. "flatten q to
    [B]"), ``"values"`` when the values do. Returns the largest absolute error (for the pass message).
    """
    hints = dict(hints or {})
    if hint:
        hints.setdefault("values", hint)
    exp = _as_tensor(expected)
    if exp is None:
        raise TypeError(f"assert_close: cannot compare expected value of type {type(expected).__name__}")
    act = _as_tensor(got)
    context = [f"  case: {case}"] if case else []
    if act is None:
        raise CheckFailed("\n".join([f"{name}: expected a {_kind(expected)}, got {type(got).__name__}", *context]))
    if tuple(act.shape) != tuple(exp.shape):
        lines = [f"{name}: shape differs: expected {list(exp.shape)}, got {list(act.shape)}", *context]
        if "shape" in hints:
            lines.append(f"  hint: {hints['shape']}")
        raise CheckFailed("\n".join(lines))
    if exp.is_floating_point() != act.is_floating_point() or (not exp.is_floating_point() and exp.dtype != act.dtype):
        lines = [f"{name}: dtype differs: expected {_dtype(exp)}, got {_dtype(act)}", *context]
        if "dtype" in hints:
            lines.append(f"  hint: {hints['dtype']}")
        raise CheckFailed("\n".join(lines))
    if exp.numel() == 0:
        return 0.0
    exp64, act64 = exp.to(torch.float64).cpu(), act.to(torch.float64).cpu()
    diff = (act64 - exp64).abs()
    both_nan = torch.isnan(exp64) & torch.isnan(act64)
    both_inf = torch.isinf(exp64) & (exp64 == act64)
    diff = torch.where(both_nan | both_inf, torch.zeros_like(diff), diff)
    diff = torch.nan_to_num(diff, nan=float("inf"))
    excess = diff - (atol + rtol * exp64.abs().nan_to_num(0.0, posinf=0.0, neginf=0.0))
    worst = int(torch.argmax(excess).item())
    max_err = float(diff.max().item())
    if excess.reshape(-1)[worst] > 0:
        index = tuple(int(i) for i in np.unravel_index(worst, tuple(exp.shape))) if exp.ndim else ()
        lines = [
            f"{name}: max abs error {max_err:.3g} > tolerance (atol {atol:g}, rtol {rtol:g})",
            *context,
            f"  worst element at index {list(index)}: expected {exp64.reshape(-1)[worst].item():.6g}, "
            f"got {act64.reshape(-1)[worst].item():.6g}",
        ]
        if "values" in hints:
            lines.append(f"  hint: {hints['values']}")
        raise CheckFailed("\n".join(lines))
    return max_err


def _kind(value: Any) -> str:
    return "tensor" if isinstance(value, torch.Tensor) else "array" if isinstance(value, np.ndarray) else "number"


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def check(title: str) -> Callable[[F], F]:
    """Decorator for check functions: run quietly, print one PASS line with the returned summary.

    The wrapped function raises :class:`CheckFailed` (or the student's ``NotImplementedError``) on failure and
    returns a short summary string on success, e.g. ``"12 cases, max abs error 0"``.
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> None:
            with quiet():
                summary = fn(*args, **kwargs)
            print(f"PASS {title}: {summary}" if summary else f"PASS {title}", file=sys.stdout)

        return wrapper  # type: ignore[return-value]

    return decorate


def cases(seeds: Sequence[int] | range | None, default: Sequence[int]) -> list[int]:
    """The seeds a check runs on: the notebook's visible check uses ``default``; hidden tests pass others."""
    return list(default if seeds is None else seeds)
