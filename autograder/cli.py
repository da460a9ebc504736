"""Command line of the course: self-check a notebook, compare it with the solution, rebuild the course.

    python -m autograder check course/01_utils/01_utils.ipynb     # run it like nbgrader, print a grade table
    python -m autograder diff course/01_utils/01_utils.ipynb      # your code next to the solution's
    python -m autograder build [01_utils ...]                     # solutions/*.ipynb and course/ from the sources
"""

from __future__ import annotations

import argparse
import difflib
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import nbformat

from autograder.build import REPO_ROOT, BuildError, build

__all__ = ["GradeResult", "check_notebook", "grade_cells", "main", "structure_warnings"]

DEFAULT_TIMEOUT = 180


@dataclass
class GradeResult:
    """One graded test cell after execution."""

    grade_id: str
    points: float
    max_points: float
    failure: str  # first line of what went wrong; empty when it passed


def _first_failure(outputs: list) -> str:
    """nbgrader's rule: an error output or anything on stderr fails the cell. Return its first line."""
    for out in outputs:
        if out.get("output_type") == "error":
            return f"{out.get('ename', 'Error')}: {str(out.get('evalue', '')).splitlines()[0] if out.get('evalue') else ''}"
    for out in outputs:
        if out.get("output_type") == "stream" and out.get("name") == "stderr" and out.get("text", "").strip():
            return "wrote to stderr: " + out["text"].strip().splitlines()[0]
    return ""


def grade_cells(nb: nbformat.NotebookNode) -> list[GradeResult]:
    """Score every autograded test cell of an executed notebook the way nbgrader does."""
    results = []
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if not meta.get("grade") or meta.get("solution") or cell.cell_type != "code":
            continue
        failure = _first_failure(cell.get("outputs", []))
        max_points = float(meta.get("points", 0))
        results.append(GradeResult(meta.get("grade_id", "?"), 0.0 if failure else max_points, max_points, failure))
    return results


def _release_of(path: Path) -> Path | None:
    """The official released notebook with the same name, used to detect deleted or edited grade cells."""
    candidate = REPO_ROOT / "course" / path.stem / path.name
    return candidate if candidate.exists() else None


def structure_warnings(nb: nbformat.NotebookNode, reference: nbformat.NotebookNode | None) -> list[str]:
    """Deleted, duplicated or edited grade cells: things nbgrader repairs or scores 0, worth knowing before."""
    from nbgrader.utils import compute_checksum

    warnings = []
    ids = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells if "grade_id" in c.get("metadata", {}).get("nbgrader", {})]
    for grade_id, count in sorted(Counter(ids).items()):
        if count > 1:
            warnings.append(f"grade cell {grade_id!r} appears {count} times (nbgrader keeps only the last one)")
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("locked") and "checksum" in meta and compute_checksum(cell) != meta["checksum"]:
            warnings.append(f"locked cell {meta.get('grade_id')!r} was edited (the grader restores the original)")
    if reference is not None:
        expected = [c.metadata["nbgrader"]["grade_id"] for c in reference.cells
                    if "grade_id" in c.get("metadata", {}).get("nbgrader", {})]
        for grade_id in expected:
            if grade_id not in ids:
                warnings.append(f"grade cell {grade_id!r} was deleted (the grader puts it back)")
    return warnings


def check_notebook(path: Path, timeout: int = DEFAULT_TIMEOUT) -> tuple[list[GradeResult], list[str]]:
    """Execute a copy of the notebook top to bottom (errors allowed, like nbgrader) and grade it."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    reference_path = _release_of(path)
    reference = nbformat.read(reference_path, as_version=4) if reference_path else None
    warnings = structure_warnings(nb, reference)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    env_before = os.environ.get("AUTOGRADER_SELF_CHECK")
    os.environ["AUTOGRADER_SELF_CHECK"] = "1"
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                                resources={"metadata": {"path": str(path.parent.resolve())}})
        client.execute(stderr=subprocess.DEVNULL)  # the kernel's own start-up chatter, not the notebook's output
    finally:
        if env_before is None:
            os.environ.pop("AUTOGRADER_SELF_CHECK", None)
    return grade_cells(nb), warnings


def _print_table(results: list[GradeResult]) -> None:
    width = max([len(r.grade_id) for r in results] + [8])
    print(f"{'grade id':<{width}}  {'points':>9}  result")
    for r in results:
        verdict = "pass" if not r.failure else f"FAIL  {r.failure[:100]}"
        print(f"{r.grade_id:<{width}}  {r.points:>4g}/{r.max_points:<4g}  {verdict}")
    total, maximum = sum(r.points for r in results), sum(r.max_points for r in results)
    print(f"{'total':<{width}}  {total:>4g}/{maximum:<4g}")


def _cmd_check(args: argparse.Namespace) -> int:
    status = 0
    for name in args.notebooks:
        path = Path(name)
        if not path.exists() or path.suffix != ".ipynb":
            print(f"error: {name}: not an existing .ipynb file", file=sys.stderr)
            status = 2
            continue
        print(f"== {path}")
        results, warnings = check_notebook(path, timeout=args.timeout)
        for warning in warnings:
            print(f"warning: {warning}")
        if not results:
            print("no graded test cells found")
            status = max(status, 1)
            continue
        _print_table(results)
        if any(r.failure for r in results):
            status = max(status, 1)
    return status


def _cells_by_id(nb: nbformat.NotebookNode) -> dict[str, str]:
    """Exercise cells by grade id, without nbgrader's solution markers (they are noise in a diff)."""
    markers = ("### BEGIN SOLUTION", "### END SOLUTION")
    return {
        c.metadata["nbgrader"]["grade_id"]: "\n".join(
            line for line in c.source.splitlines() if line.strip() not in markers
        )
        for c in nb.cells
        if c.get("metadata", {}).get("nbgrader", {}).get("solution")
    }


def _cmd_diff(args: argparse.Namespace) -> int:
    path = Path(args.notebook)
    solution_path = REPO_ROOT / "solutions" / path.stem / path.name
    if not path.exists() or not solution_path.exists():
        missing = path if not path.exists() else solution_path
        print(f"error: {missing} does not exist (expected course/NN_name/NN_name.ipynb with a solution beside it "
              f"in solutions/)", file=sys.stderr)
        return 2
    mine = _cells_by_id(nbformat.read(path, as_version=4))
    theirs = _cells_by_id(nbformat.read(solution_path, as_version=4))
    for grade_id, solution in theirs.items():
        print(f"=== {grade_id}")
        if grade_id not in mine:
            print("(this exercise cell is missing from your notebook)")
            continue
        diff = list(difflib.unified_diff(mine[grade_id].splitlines(), solution.splitlines(), "yours", "solution",
                                         n=args.context, lineterm=""))
        print("\n".join(diff) if diff else "(identical)")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    try:
        built = build(names=args.assignments or None, release=not args.no_release)
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"built {len(built)} notebooks: {', '.join(built)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m autograder``."""
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_check = sub.add_parser("check", help="run notebooks like nbgrader and print a grade table")
    p_check.add_argument("notebooks", nargs="+")
    p_check.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT, help="seconds per cell")
    p_check.set_defaults(func=_cmd_check)
    p_diff = sub.add_parser("diff", help="show your exercise cells next to the solution's")
    p_diff.add_argument("notebook")
    p_diff.add_argument("--context", type=int, default=3, help="lines of context around each change")
    p_diff.set_defaults(func=_cmd_diff)
    p_build = sub.add_parser("build", help="rebuild solutions/*.ipynb and course/ (make notebooks)")
    p_build.add_argument("assignments", nargs="*")
    p_build.add_argument("--no-release", action="store_true", help="only the solution notebooks")
    p_build.set_defaults(func=_cmd_build)
    args = parser.parse_args(argv)
    return args.func(args)
