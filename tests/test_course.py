"""The course as TAs and students use it: build, release, autograde with real nbgrader, export, self-check.

One session-scoped build of the whole course into a temporary copy is shared by the tests:

- the committed notebooks equal a fresh build (``make notebooks`` would change nothing);
- no solution code, solution markers or hidden tests reach ``course/``;
- every solution autogrades to full marks and every released notebook to zero, through ``nbgrader autograde`` and
  ``nbgrader export``, and the released notebooks fail only with ``NotImplementedError``;
- broken submissions (an import error, an infinite loop, a deleted test cell, stderr spam, ``sys.exit``, a file that
  is not a notebook) are graded in one batch without stopping it, each with the expected score;
- ``python -m autograder check`` passes on each solution and fails on each release.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from autograder.build import REPO_ROOT, assignments, build

ASSIGNMENTS = assignments()
BROKEN_TARGET = "01_utils"  # the notebook the broken submissions are made from
BOT_TIMEOUT = 20  # seconds per cell for the broken batch (01_utils cells take well under a second)

pytestmark = pytest.mark.skipif(not ASSIGNMENTS, reason="no notebook sources in solutions/")


def _env() -> dict[str, str]:
    """The venv's bin on PATH (nbgrader runs alembic) and quiet, headless libraries."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "PYTHONWARNINGS": "ignore"}


def _nbgrader(root: Path, *args: str, expect_rc: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "nbgrader", *args, "--log-level=WARN"], cwd=root, env=_env(),
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == expect_rc, f"nbgrader {' '.join(args)}: rc {result.returncode}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="session")
def course(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh build of the whole course (solution notebooks + release) in a copy of the course folders."""
    root = tmp_path_factory.mktemp("course")
    shutil.copy(REPO_ROOT / "nbgrader_config.py", root)
    for name in ASSIGNMENTS:
        shutil.copytree(REPO_ROOT / "solutions" / name, root / "solutions" / name,
                        ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints", "__pycache__"))
    build(root=root)
    return root


# --------------------------------------------------------------------------------------------------------------
# Building


@pytest.mark.parametrize("folder", ["solutions", "course"])
def test_committed_notebooks_are_up_to_date(course: Path, folder: str) -> None:
    stale = []
    for name in ASSIGNMENTS:
        fresh = course / folder / name / f"{name}.ipynb"
        committed = REPO_ROOT / folder / name / f"{name}.ipynb"
        if not committed.exists() or committed.read_text() != fresh.read_text():
            stale.append(str(committed.relative_to(REPO_ROOT)))
    assert not stale, f"stale notebooks {stale}: run `make notebooks` and commit the result"


def test_release_folders_hold_only_what_students_need(course: Path) -> None:
    for name in ASSIGNMENTS:
        released = {p.relative_to(REPO_ROOT / "course" / name).as_posix()
                    for p in (REPO_ROOT / "course" / name).rglob("*") if p.is_file()}
        assert f"{name}.ipynb" in released
        assert not [p for p in released if p.endswith(".py")], f"course/{name} contains Python sources: {released}"


def _solution_and_hidden_lines(nb: nbformat.NotebookNode) -> set[str]:
    """Distinctive lines that only the solution has: inside solution regions and hidden-test blocks."""
    secret, inside = set(), False
    for cell in nb.cells:
        for line in cell.source.splitlines():
            marker = line.strip()
            if marker in ("### BEGIN SOLUTION", "### BEGIN HIDDEN TESTS"):
                inside = True
            elif marker in ("### END SOLUTION", "### END HIDDEN TESTS"):
                inside = False
            elif inside and len(marker) >= 30:
                secret.add(marker)
    return secret


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_no_solution_or_hidden_test_reaches_the_release(name: str) -> None:
    released_text = (REPO_ROOT / "course" / name / f"{name}.ipynb").read_text()
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        assert marker not in released_text, f"course/{name} contains {marker!r}"
    released = nbformat.read(REPO_ROOT / "course" / name / f"{name}.ipynb", as_version=4)
    released_lines = {line.strip() for cell in released.cells for line in cell.source.splitlines()}
    solution = nbformat.read(REPO_ROOT / "solutions" / name / f"{name}.ipynb", as_version=4)
    leaked = sorted(_solution_and_hidden_lines(solution) & released_lines)
    assert not leaked, f"course/{name} contains solution or hidden-test lines: {leaked[:3]}"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_graded_test_cells_only_call_checks(name: str) -> None:
    """Student code called directly in a test cell could zero it by writing to stderr; checks silence it."""
    solution = nbformat.read(REPO_ROOT / "solutions" / name / f"{name}.ipynb", as_version=4)
    for cell in solution.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade") and not meta.get("solution"):
            statements = [line.strip() for line in cell.source.splitlines()
                          if line.strip() and not line.strip().startswith("#")]
            assert statements, f"{name}: test cell {meta['grade_id']} is empty"
            other = [s for s in statements if not s.startswith("check.")]
            assert not other, f"{name}: test cell {meta['grade_id']} runs more than checks: {other[:2]}"


def test_build_is_idempotent(course: Path) -> None:
    before = {p: p.read_bytes() for p in course.rglob("*.ipynb")}
    build(root=course, names=ASSIGNMENTS[:1])
    after = {p: p.read_bytes() for p in course.rglob("*.ipynb")}
    assert before == after


# --------------------------------------------------------------------------------------------------------------
# Grading


def _submit(root: Path, student: str, name: str, nb: nbformat.NotebookNode) -> None:
    folder = root / "submitted" / student / name
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / f"{name}.ipynb")


def _cell(nb: nbformat.NotebookNode, grade_id: str) -> nbformat.NotebookNode:
    return next(c for c in nb.cells if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id)


def _broken_submissions(solution: nbformat.NotebookNode) -> dict[str, tuple[nbformat.NotebookNode, set[str]]]:
    """Broken copies of the 01_utils solution, each with the test cells it must fail."""
    bots: dict[str, tuple[nbformat.NotebookNode, set[str]]] = {}

    def variant(student: str, failing: set[str], edit) -> None:
        nb = nbformat.from_dict(json.loads(json.dumps(solution)))
        edit(nb)
        bots[student] = (nb, failing)

    def prepend(grade_id: str, code: str):
        return lambda nb: _cell(nb, grade_id).__setitem__("source", code + "\n" + _cell(nb, grade_id).source)

    variant("import_error_bot", {"check_dim_select"}, prepend("dim_select", "import not_a_real_module"))
    variant("infinite_loop_bot", {"check_atomic_save"}, prepend("atomic_save", "while True:\n    pass"))
    variant("sys_exit_bot", {"check_make_optim"}, prepend("make_optim", "import sys\nsys.exit(1)"))
    variant("deleted_test_bot", set(),
            lambda nb: nb.cells.remove(_cell(nb, "check_make_optim")))
    # Noise from the student's own code: written to stderr at import and on every call. The checks silence the
    # calls, and stderr in a solution cell is not graded: full marks.
    variant("stderr_spam_bot", set(), lambda nb: _cell(nb, "sorted_nicely_sep").__setitem__(
        "source", "import sys\nprint('spam', file=sys.stderr)\n" + _cell(nb, "sorted_nicely_sep").source.replace(
            '    """\n', '    """\n    print("spam", file=sys.stderr)\n', 1)))
    return bots


@pytest.fixture(scope="session")
def graded(course: Path) -> dict[tuple[str, str], tuple[float, float]]:
    """Submit solutions, blank releases and broken copies; autograde every assignment; export the gradebook."""
    for name in ASSIGNMENTS:
        _submit(course, "solution_bot", name, nbformat.read(course / "solutions" / name / f"{name}.ipynb", 4))
        _submit(course, "blank_bot", name, nbformat.read(course / "course" / name / f"{name}.ipynb", 4))
    if BROKEN_TARGET in ASSIGNMENTS:
        solution = nbformat.read(course / "solutions" / BROKEN_TARGET / f"{BROKEN_TARGET}.ipynb", 4)
        for student, (nb, _) in _broken_submissions(solution).items():
            _submit(course, student, BROKEN_TARGET, nb)
        corrupt = course / "submitted" / "corrupt_json_bot" / BROKEN_TARGET / f"{BROKEN_TARGET}.ipynb"
        corrupt.parent.mkdir(parents=True)
        corrupt.write_text("{not a notebook")
    for name in ASSIGNMENTS:
        if name == BROKEN_TARGET:  # nbgrader grades everyone else, then reports the unreadable file with status 1
            _nbgrader(course, "autograde", name, "--force", f"--Execute.timeout={BOT_TIMEOUT}", expect_rc=1)
        else:
            _nbgrader(course, "autograde", name, "--force")
    _nbgrader(course, "export", "--to", str(course / "grades.csv"))
    with open(course / "grades.csv") as f:
        return {(row["student_id"], row["assignment"]): (float(row["score"]), float(row["max_score"]))
                for row in csv.DictReader(f)}


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_solutions_autograde_to_full_marks(graded: dict, name: str) -> None:
    score, max_score = graded[("solution_bot", name)]
    assert max_score > 0 and score == max_score, f"{name}: solution scored {score}/{max_score}"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_released_notebooks_autograde_to_zero_with_only_not_implemented_errors(
    course: Path, graded: dict, name: str
) -> None:
    assert graded[("blank_bot", name)][0] == 0
    nb = nbformat.read(course / "autograded" / "blank_bot" / name / f"{name}.ipynb", 4)
    errors = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
              if out.output_type == "error"]
    assert errors, f"{name}: the blank notebook raised nothing"
    assert {e.ename for e in errors} == {"NotImplementedError"}, [(e.ename, e.evalue) for e in errors]
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade") and not meta.get("solution"):
            assert any(o.output_type == "error" for o in cell.outputs), f"{name}: {meta['grade_id']} did not fail"


@pytest.mark.skipif(BROKEN_TARGET not in ASSIGNMENTS, reason=f"{BROKEN_TARGET} not built")
def test_broken_submissions_are_graded_without_stopping_the_batch(course: Path, graded: dict) -> None:
    solution = nbformat.read(course / "solutions" / BROKEN_TARGET / f"{BROKEN_TARGET}.ipynb", 4)
    points = {c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"]["points"] for c in solution.cells
              if c.metadata.get("nbgrader", {}).get("grade") and not c.metadata["nbgrader"].get("solution")}
    for student, (_, failing) in _broken_submissions(solution).items():
        expected = sum(p for gid, p in points.items() if gid not in failing)
        score, max_score = graded[(student, BROKEN_TARGET)]
        assert max_score == sum(points.values())
        assert score == expected, f"{student}: scored {score}, expected {expected} (failing {sorted(failing)})"
    assert graded[("corrupt_json_bot", BROKEN_TARGET)][0] == 0
    assert graded[("solution_bot", BROKEN_TARGET)][0] == sum(points.values())


# --------------------------------------------------------------------------------------------------------------
# The self-check command


def _self_check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autograder", "check", str(path)], env=_env(),
                          capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_self_check_passes_on_solutions_and_fails_on_releases(name: str) -> None:
    solved = _self_check(REPO_ROOT / "solutions" / name / f"{name}.ipynb")
    assert solved.returncode == 0, solved.stdout + solved.stderr
    assert "FAIL" not in solved.stdout and "total" in solved.stdout
    blank = _self_check(REPO_ROOT / "course" / name / f"{name}.ipynb")
    assert blank.returncode == 1, blank.stdout + blank.stderr
    assert "FAIL  NotImplementedError" in blank.stdout


def _exercise_to_fill(solution: nbformat.NotebookNode) -> str:
    """The last exercise of a notebook that has its own check (the hardest case for "one mistake costs one grade")."""
    ids = [c.metadata["nbgrader"]["grade_id"] for c in solution.cells if c.metadata.get("nbgrader", {}).get("solution")]
    graded = {c.metadata["nbgrader"]["grade_id"] for c in solution.cells if c.metadata.get("nbgrader", {}).get("grade")}
    return [i for i in ids if f"check_{i}" in graded][-1]


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_filling_one_exercise_of_a_release_passes_exactly_its_check(tmp_path: Path, name: str) -> None:
    """A student fills one exercise in the released notebook and sees that check pass, the others still failing."""
    from autograder.cli import check_notebook

    solution = nbformat.read(REPO_ROOT / "solutions" / name / f"{name}.ipynb", 4)
    released = nbformat.read(REPO_ROOT / "course" / name / f"{name}.ipynb", 4)
    exercise = _exercise_to_fill(solution)
    _cell(released, exercise).source = _cell(solution, exercise).source
    shutil.copytree(REPO_ROOT / "course" / name, tmp_path / name)
    path = tmp_path / name / f"{name}.ipynb"
    nbformat.write(released, path)
    results, warnings = check_notebook(path)
    assert not warnings
    passed = {r.grade_id for r in results if not r.failure}
    assert passed == {f"check_{exercise}"}, [(r.grade_id, r.failure) for r in results]
    assert all(r.failure.startswith("NotImplementedError") for r in results if r.failure)
