"""Tests of the course machinery's pieces: the comparison engine, the notebook builder and the CLI helpers."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
import torch

from autograder import build as builder
from autograder.cli import GradeResult, grade_cells, main, structure_warnings
from autograder.core import CheckFailed, assert_close, assert_equal, check, quiet, run_student

# --------------------------------------------------------------------------------------------------------------
# core


def test_assert_close_passes_within_tolerance_and_returns_the_error() -> None:
    err = assert_close("q", torch.tensor([1.0, 2.0], dtype=torch.float64),
                       torch.tensor([1.0, 2.0 + 1e-7], dtype=torch.float64), atol=1e-6)
    assert 0 < err < 1e-6


def test_assert_close_reports_shape_before_values_with_a_hint() -> None:
    with pytest.raises(CheckFailed) as info:
        assert_close("q", torch.zeros(4, 1), torch.zeros(4), atol=0, case="seed=3",
                     hints={"shape": "flatten q to [B]"})
    lines = str(info.value).splitlines()
    assert lines[0] == "q: shape differs: expected [4], got [4, 1]"
    assert "  case: seed=3" in lines and "  hint: flatten q to [B]" in lines


def test_assert_close_names_the_worst_element() -> None:
    expected = torch.zeros(2, 3)
    got = expected.clone()
    got[1, 2] = 0.5
    got[0, 0] = 0.1
    with pytest.raises(CheckFailed) as info:
        assert_close("log_prob", got, expected, atol=1e-6, rtol=1e-5, hint="did you add the tanh correction?")
    message = str(info.value)
    assert message.startswith("log_prob: max abs error 0.5 > tolerance (atol 1e-06, rtol 1e-05)")
    assert "worst element at index [1, 2]: expected 0, got 0.5" in message
    assert "hint: did you add the tanh correction?" in message


def test_assert_close_dtype_and_type_mismatches() -> None:
    with pytest.raises(CheckFailed, match="dtype differs: expected int64, got float32"):
        assert_close("index", torch.zeros(3), torch.zeros(3, dtype=torch.long), atol=0)
    with pytest.raises(CheckFailed, match="expected a tensor, got list"):
        assert_close("out", [1.0], torch.ones(1), atol=0)


def test_assert_close_treats_matching_nan_and_inf_as_equal() -> None:
    x = torch.tensor([float("nan"), float("inf"), 1.0])
    assert assert_close("x", x.clone(), x, atol=0) == 0
    with pytest.raises(CheckFailed, match="max abs error inf"):
        assert_close("x", torch.tensor([0.0, float("inf"), 1.0]), x, atol=0)


def test_assert_equal_messages() -> None:
    assert_equal("arm", 3, 3)
    with pytest.raises(CheckFailed, match=r"order: expected \['a', 'b'\], got \['b', 'a'\]"):
        assert_equal("order", ["b", "a"], ["a", "b"])


def test_run_student_keeps_not_implemented_and_wraps_other_errors() -> None:
    def blank():
        raise NotImplementedError()

    with pytest.raises(NotImplementedError):
        run_student(blank, what="f", case="seed=0")
    with pytest.raises(CheckFailed, match=r"f raised ZeroDivisionError: division by zero\n  case: seed=1"):
        run_student(lambda: 1 / 0, what="f", case="seed=1")


def test_check_decorator_prints_one_pass_line_and_is_silent_on_stderr(capfd: pytest.CaptureFixture) -> None:
    @check("demo")
    def demo() -> str:
        print("noise from the student", file=sys.stderr)
        os.write(2, b"C-level noise\n")
        return "2 cases"

    demo()
    out, err = capfd.readouterr()
    assert out == "PASS demo: 2 cases\n"
    assert err == ""


def test_quiet_restores_threads_and_stderr() -> None:
    threads = torch.get_num_threads()
    with quiet():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == threads
    assert sys.stderr is sys.__stderr__ or sys.stderr is not None


# --------------------------------------------------------------------------------------------------------------
# builder


@pytest.fixture
def fake_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A tiny importable module to pull code from."""
    (tmp_path / "tinylib.py").write_text(textwrap.dedent('''
        import math


        def scale(x: float, k: float = 2.0) -> float:
            """Multiply."""
            y = x * k
            return y


        class Counter:
            """Counts."""

            def __init__(self) -> None:
                self.n = 0

            def inc(self) -> int:
                """Add one."""
                self.n += 1
                return self.n


        LIMIT = 3
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "tinylib"


def test_library_directive_inserts_the_exact_source(fake_library: str) -> None:
    out = builder.render_cell(f"# @library {fake_library}:scale\n", "t")
    assert out.splitlines()[0] == "def scale(x: float, k: float = 2.0) -> float:"
    assert out.splitlines()[-1] == "    return y"
    assert builder.render_cell(f"# @library {fake_library}:LIMIT", "t") == "LIMIT = 3"


def test_blank_body_keeps_signature_and_docstring(fake_library: str) -> None:
    out = builder.render_cell(f"# @library {fake_library}:scale\n# @blank body | Multiply x by k (1 line).\n", "t")
    assert out.splitlines() == [
        "def scale(x: float, k: float = 2.0) -> float:",
        '    """Multiply."""',
        "    # Hint: Multiply x by k (1 line).",
        "    ### BEGIN SOLUTION",
        "    y = x * k",
        "    return y",
        "    ### END SOLUTION",
    ]


def test_blank_method_and_lines_and_several_libraries(fake_library: str) -> None:
    source = (f"# @library {fake_library}:Counter\n# @blank method inc | Increment.\n"
              f"# @library {fake_library}:scale\n# @blank lines y = x ... y = x | Just this line.\n\nprint('after')")
    out = builder.render_cell(source, "t")
    assert "        ### BEGIN SOLUTION\n        self.n += 1\n        return self.n\n        ### END SOLUTION" in out
    assert "    # Hint: Just this line.\n    ### BEGIN SOLUTION\n    y = x * k\n    ### END SOLUTION\n    return y" in out
    assert out.endswith("\n\n\nprint('after')")


@pytest.mark.parametrize(
    "directives, message",
    [
        ("# @library tinylib:nope", "no top-level function, class or assignment named 'nope'"),
        ("# @library tinylib", "needs MODULE:NAME"),
        ("# @library tinylib:Counter\n# @blank body | x", "only for a function"),
        ("# @library tinylib:Counter\n# @blank method dec | x", "no method 'dec'"),
        ("# @library tinylib:scale\n# @blank lines zzz ... y | x", "no line contains 'zzz'"),
        ("# @library tinylib:scale\n# @blank weird | x", "valid targets are"),
        ("# @library tinylib:scale\n# @blank body", "needs a hint"),
        ("# @blank body | x", "without a preceding @library"),
        ("# @library tinylib:scale\n# @blank body | a\n# @blank lines y = ... return | b", "overlap"),
    ],
)
def test_builder_errors_name_the_cell_and_problem(fake_library: str, directives: str, message: str) -> None:
    with pytest.raises(builder.BuildError, match=message) as info:
        builder.render_cell(directives, "nb.py, cell 3")
    assert str(info.value).startswith("nb.py, cell 3") or "MODULE:NAME" in str(info.value)


def test_build_notebook_sets_nbgrader_metadata_and_stable_ids(tmp_path: Path, fake_library: str) -> None:
    source = tmp_path / "nb.py"
    source.write_text(textwrap.dedent(f'''
        # %% [markdown]
        # # Title

        # %% kind="solution" id="scale"
        # @library {fake_library}:scale
        # @blank body | Multiply.

        # %% kind="tests" id="check_scale" points=2
        assert scale(2.0) == 4.0

        # %% kind="readonly" id="given"
        x = 1
    '''))
    nb = builder.build_notebook(source)
    assert [c.id for c in nb.cells] == ["cell-000", "scale", "check_scale", "given"]
    assert nb.cells[1].metadata["nbgrader"] == {"grade": False, "grade_id": "scale", "locked": False,
                                                "schema_version": 3, "solution": True, "task": False}
    assert nb.cells[2].metadata["nbgrader"]["points"] == 2 and nb.cells[2].metadata["editable"] is False
    assert nbformat.writes(nb) == nbformat.writes(builder.build_notebook(source))  # deterministic


@pytest.mark.parametrize(
    "header, message",
    [
        ('kind="tests" id="t"', "needs points"),
        ('kind="quiz" id="t"', "unknown kind 'quiz'"),
        ('kind="solution" id="a b"', "needs an id of letters"),
        ('id="t"', "need a kind"),
    ],
)
def test_build_notebook_rejects_bad_headers(tmp_path: Path, header: str, message: str) -> None:
    source = tmp_path / "nb.py"
    source.write_text(f"# %% {header}\nx = 1\n")
    with pytest.raises(builder.BuildError, match=message):
        builder.build_notebook(source)


def test_build_rejects_unknown_assignments() -> None:
    with pytest.raises(builder.BuildError, match="unknown assignments \\['99_nope'\\]"):
        builder.build(names=["99_nope"], release=False)


# --------------------------------------------------------------------------------------------------------------
# CLI helpers


def _graded_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    ok = nbformat.v4.new_code_cell("check()")
    ok.metadata["nbgrader"] = {"grade": True, "grade_id": "ok", "points": 2, "locked": True, "solution": False}
    bad = nbformat.v4.new_code_cell("check()")
    bad.metadata["nbgrader"] = {"grade": True, "grade_id": "bad", "points": 3, "locked": True, "solution": False}
    bad.outputs = [nbformat.v4.new_output("error", ename="NotImplementedError", evalue="", traceback=[])]
    noisy = nbformat.v4.new_code_cell("check()")
    noisy.metadata["nbgrader"] = {"grade": True, "grade_id": "noisy", "points": 1, "locked": True, "solution": False}
    noisy.outputs = [nbformat.v4.new_output("stream", name="stderr", text="UserWarning: careful\n")]
    nb.cells = [ok, bad, noisy]
    return nb


def test_grade_cells_follows_nbgrader_rules() -> None:
    assert grade_cells(_graded_notebook()) == [
        GradeResult("ok", 2.0, 2.0, ""),
        GradeResult("bad", 0.0, 3.0, "NotImplementedError: "),
        GradeResult("noisy", 0.0, 1.0, "wrote to stderr: UserWarning: careful"),
    ]


def test_structure_warnings_find_deleted_duplicated_and_edited_cells() -> None:
    from nbgrader.utils import compute_checksum

    reference = _graded_notebook()
    for cell in reference.cells:
        cell.metadata["nbgrader"]["checksum"] = compute_checksum(cell)
    student = nbformat.from_dict(nbformat.reads(nbformat.writes(reference), 4))
    student.cells[0].source = "pass  # made it pass"
    student.cells.append(nbformat.from_dict(student.cells[1]))
    del student.cells[2]
    warnings = structure_warnings(student, reference)
    assert "grade cell 'bad' appears 2 times (nbgrader keeps only the last one)" in warnings
    assert "locked cell 'ok' was edited (the grader restores the original)" in warnings
    assert "grade cell 'noisy' was deleted (the grader puts it back)" in warnings


def test_cli_rejects_missing_files(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert main(["check", str(tmp_path / "nope.ipynb")]) == 2
    assert "not an existing .ipynb file" in capsys.readouterr().err
    assert main(["diff", str(tmp_path / "nope.ipynb")]) == 2


def test_cli_diff_shows_the_students_cells_next_to_the_solution(capsys: pytest.CaptureFixture) -> None:
    from autograder.build import REPO_ROOT

    released = REPO_ROOT / "course" / "01_utils" / "01_utils.ipynb"
    if not released.exists():
        pytest.skip("01_utils not built")
    assert main(["diff", str(released)]) == 0
    out = capsys.readouterr().out
    assert "=== dim_select" in out and "-    raise NotImplementedError()" in out
    assert "BEGIN SOLUTION" not in out
