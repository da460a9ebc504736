"""Checks for notebook 01_utils: dim_select, natural sorting, optimizers from configs, the preemption hook,
atomic saves. Each compares the student's object with ``hsd3_learn.utils`` on the same seeded inputs."""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autograder.core import CheckFailed, assert_close, assert_equal, cases, check, describe, run_student
from hsd3_learn import utils as ref

__all__ = ["atomic_save", "dim_select", "make_optim", "natural_key", "preemption_hook", "sorted_nicely_sep"]


def _dim_select_cases(seed: int, edge_cases: bool) -> list[tuple[torch.Tensor, int, torch.Tensor]]:
    """(input, dim, index) triples for the three layouts HSD-3 uses, from one seed."""
    g = torch.Generator().manual_seed(seed)
    b, n, a, t, k = 2 + seed % 5, 3 + seed % 4, 2 + seed % 3, 4 + seed % 3, 2
    out = [
        (torch.randn(b, n, generator=g), 1, torch.randint(n, (b,), generator=g)),  # Q of the chosen subset
        (torch.randn(b, n, a, generator=g), 1, torch.randint(n, (b,), generator=g)),  # the head of each task
        (torch.randn(b, t, a, generator=g), 1, torch.randint(t, (b, k), generator=g)),  # K steps per row
        (torch.randn(t, b, a, generator=g), 0, torch.randint(t, (b,), generator=g)),  # the step each env is at
    ]
    if edge_cases:
        out += [
            (torch.randn(b, n, generator=g), -1, torch.randint(n, (b,), generator=g)),  # negative dim
            (torch.randn(1, n, generator=g), 1, torch.tensor([n - 1])),  # batch of one, last entry
            (torch.randn(b, n, generator=g).double(), 1, torch.randint(n, (b,), generator=g).int()),  # int32 index
        ]
    return out


@check("dim_select")
def dim_select(student: Callable[..., torch.Tensor], seeds: Any = None, edge_cases: bool = False) -> str:
    """Outputs and gradients of ``student(input, dim, index)`` against the reference, for every layout."""
    n = 0
    for seed in cases(seeds, [0, 1]):
        for x, dim, index in _dim_select_cases(seed, edge_cases):
            case = f"seed={seed}, input {describe(x)}, dim={dim}, index {describe(index)}"
            x_ref, x_student = x.clone().requires_grad_(), x.clone().requires_grad_()
            expected = ref.dim_select(x_ref, dim, index)
            got = run_student(student, x_student, dim, index.clone(), what="dim_select", case=case)
            assert_close("dim_select output", got, expected, atol=0.0, case=case,
                         hints={"shape": "one pick per row removes `dim`; K picks per row replace it by K"})
            weights = torch.randn(expected.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
            (expected * weights).sum().backward()
            if not got.requires_grad:
                raise CheckFailed(f"dim_select output has no gradient\n  case: {case}\n"
                                  "  hint: select with torch.gather (differentiable), not by converting to Python")
            (got * weights).sum().backward()
            assert_close("dim_select gradient w.r.t. input", x_student.grad, x_ref.grad, atol=1e-12, case=case)
            n += 1
    return f"{n} cases, outputs and gradients match"


NATURAL_CASES = [
    "f10", "f2", "x1y20", "", "abc", "007", "3+4", "0,1,2", "Rootz", "v1.10", "v1.9", "a-b", "checkpoint-100.pt",
]


@check("natural_key")
def natural_key(student: Callable[[str], list]) -> str:
    """The sort key must split digits from text and compare numbers as numbers."""
    for text in NATURAL_CASES:
        got = run_student(student, text, what="_natural_key", case=repr(text))
        assert_equal(f"_natural_key({text!r})", got, ref._natural_key(text),
                     hint="re.split(r'(\\d+)', text) keeps the digit runs; int() them, lower() the rest")
    items = ["x10", "x2", "X3", "x1", "y", "x", "x02"]
    got = sorted(items, key=student)
    assert_equal("sorted(items, key=_natural_key)", got, ref.sorted_nicely(items))
    return f"{len(NATURAL_CASES)} strings"


SUBSET_LISTS = [
    ["0,1,2", "3+4", "10", "0,3+4", "2", "0,1"],
    ["5+6", "0", "1", "2", "3+4", "0,1", "0,2", "1,2", "0,1,2,3+4,5+6"],
    ["a", "b,c", "a,b,c,d", "c"],
    [],
]


@check("sorted_nicely_sep")
def sorted_nicely_sep(student: Callable[..., list[str]]) -> str:
    """Rank (number of parts) first, natural order second, for HSD-3's subset names."""
    for items in SUBSET_LISTS:
        got = run_student(student, list(items), what="sorted_nicely_sep", case=repr(items))
        assert_equal(f"sorted_nicely_sep({items!r})", got, ref.sorted_nicely_sep(items),
                     hint="key = (number of sep-separated parts, natural key)")
    got = run_student(student, ["a-b", "c", "d-e-f"], sep="-", what="sorted_nicely_sep", case="sep='-'")
    assert_equal("sorted_nicely_sep(..., sep='-')", got, ref.sorted_nicely_sep(["a-b", "c", "d-e-f"], sep="-"))
    return f"{len(SUBSET_LISTS) + 1} lists"


def _tree() -> nn.ModuleDict:
    """A model shaped like HSD-3's: a high level with three networks, a frozen low level, a parameter-free module."""
    return nn.ModuleDict({
        "hi": nn.ModuleDict({"pi_task": nn.Linear(4, 3), "pi_subgoal": nn.Linear(4, 2), "q": nn.Linear(6, 2),
                             "flatten": nn.Flatten()}),
        "lo": nn.ModuleDict({"pi": nn.Linear(5, 2)}),
    })


OPTIM_CONFIGS = [
    {"hi": {"pi_task": {"_target_": "torch.optim.Adam", "lr": 3e-4},
            "pi_subgoal": {"_target_": "torch.optim.Adam", "lr": 3e-4},
            "q": {"_target_": "torch.optim.SGD", "lr": 1e-4, "momentum": 0.9}}},
    {"hi": {"_target_": "torch.optim.AdamW", "lr": 1e-3}},
    {"hi": {"flatten": {"_target_": "torch.optim.Adam", "lr": 1e-3}, "q": {"_target_": "torch.optim.Adam"}},
     "lo": {"pi": {"_target_": "torch.optim.RMSprop", "lr": 1e-2}}},
]


def _summarise(optims: Any, model: nn.Module, path: str) -> Any:
    """Optimizer tree -> comparable description (class, hyperparameters, which parameters it owns)."""
    if optims is None:
        return None
    if isinstance(optims, dict):
        return {k: _summarise(v, getattr(model, k), f"{path}.{k}") for k, v in optims.items()}
    if not isinstance(optims, torch.optim.Optimizer):
        raise CheckFailed(f"make_optim: {path} should be an optimizer, None or a dict; got {type(optims).__name__}")
    names = {id(p): n for n, p in model.named_parameters()}
    owned = sorted(names.get(id(p), "<foreign>") for g in optims.param_groups for p in g["params"])
    hyper = {k: v for k, v in optims.defaults.items() if isinstance(v, (int, float, bool, str, type(None)))}
    return (type(optims).__name__, owned, hyper)


@check("make_optim")
def make_optim(student: Callable[..., Any]) -> str:
    """Same optimizer classes, hyperparameters and parameter ownership as the reference, for nested configs."""
    for cfg in OPTIM_CONFIGS:
        model = _tree()
        expected = _summarise(ref.make_optim(cfg, model), model, "optim")
        got = _summarise(run_student(student, cfg, model, what="make_optim", case=repr(cfg)), model, "optim")
        assert_equal("make_optim tree", got, expected, case=f"config {cfg}",
                     hint="recurse over the config's keys with the matching child of the model; "
                          "a node with _target_ becomes an optimizer (None if the module has no parameters)")
    model = _tree()
    try:
        with torch.no_grad():
            run_student(student, {"hi": {"nope": {"_target_": "torch.optim.Adam"}}}, model,
                        what="make_optim", case="unknown key")
    except CheckFailed as err:
        if isinstance(err.__cause__, ValueError) and "valid keys" in str(err.__cause__):
            return f"{len(OPTIM_CONFIGS)} configs and the unknown-key error"
        raise CheckFailed(f"make_optim with an unknown key should raise ValueError listing the valid keys; got {err}")
    raise CheckFailed("make_optim with an unknown key ('hi.nope') should raise ValueError listing the valid keys")


@check("PreemptionHook")
def preemption_hook(student_cls: type) -> str:
    """Deferred and immediate modes on a real SIGUSR1 sent to this process; handlers restored afterwards."""
    calls: list[str] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: calls.append("previous"))
    try:
        hook = run_student(student_cls, lambda: calls.append("checkpoint"), signals=(signal.SIGUSR1,),
                           what="PreemptionHook(...)", case="deferred")
        with hook:
            first = run_student(hook.checkpoint_if_requested, what="checkpoint_if_requested()", case="no signal yet")
            assert_equal("checkpoint_if_requested() before any signal", first, False)
            os.kill(os.getpid(), signal.SIGUSR1)
            assert_equal("hook.requested after SIGUSR1", hook.requested, int(signal.SIGUSR1),
                         hint="the handler only records the signal number")
            assert_equal("calls made inside the handler (deferred mode)", calls, [],
                         hint="in deferred mode the handler must not checkpoint; the loop does, at a safe point")
            second = run_student(hook.checkpoint_if_requested, what="checkpoint_if_requested()", case="after signal")
            assert_equal("checkpoint_if_requested() after SIGUSR1", second, True)
            assert_equal("calls after checkpoint_if_requested()", calls, ["checkpoint", "previous"],
                         hint="save first, then call the previous handler with (signum, frame)")
        calls.clear()
        immediate = student_cls(lambda: calls.append("checkpoint"), signals=(signal.SIGUSR1,), immediate=True)
        with immediate:
            os.kill(os.getpid(), signal.SIGUSR1)
        assert_equal("calls in immediate mode", calls, ["checkpoint", "previous"],
                     hint="with immediate=True the handler checkpoints and chains right away")
        calls.clear()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert_equal("calls after the hook was uninstalled", calls, ["previous"])
    finally:
        signal.signal(signal.SIGUSR1, previous)
    return "deferred and immediate modes, chaining and restoring"


@check("atomic_save")
def atomic_save(student: Callable[[Any, Any], None]) -> str:
    """Round trip, overwrite, no temporary files left, and the old file intact when saving fails."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run" / "checkpoint.pt"
        run_student(student, {"step": 1, "w": torch.arange(3)}, path, what="atomic_save", case="new file")
        if not path.exists():
            raise CheckFailed("atomic_save did not create the file (and its parent folder)")
        loaded = torch.load(path)
        assert_close("saved tensor", loaded["w"], torch.arange(3), atol=0)
        run_student(student, {"step": 2}, path, what="atomic_save", case="overwrite")
        assert_equal("file content after overwrite", torch.load(path), {"step": 2})

        class Unpicklable:
            def __reduce__(self) -> Any:
                raise RuntimeError("cannot pickle")

        try:
            student({"bad": Unpicklable()}, path)
        except RuntimeError:
            pass
        except NotImplementedError:
            raise
        else:
            raise CheckFailed("atomic_save should let the pickling error propagate")
        assert_equal("file content after a failed save", torch.load(path), {"step": 2},
                     hint="write to a temporary file in the same folder, then os.replace it over the target")
        leftovers = sorted(p.name for p in path.parent.iterdir())
        assert_equal("files left in the folder", leftovers, ["checkpoint.pt"],
                     hint="remove the temporary file when saving fails")
    return "round trip, overwrite, failure keeps the old file"
