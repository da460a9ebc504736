"""Build the course: notebook sources -> solution notebooks (library code inserted) -> released notebooks.

The single source of truth for behaviour is ``hsd3_learn``; the source of truth for text is
``solutions/NN_name/NN_name.py``, a jupytext "percent" file. Cells carry small metadata in their header::

    # %% [markdown]                                   narrative
    # %%                                              ordinary code (setup, experiments)
    # %% kind="solution" id="dim_select"              the student writes here
    # %% kind="tests" id="check_dim_select" points=2  locked, graded check (may hold hidden tests)
    # %% kind="readonly" id="provided_helpers"        locked, provided code
    # %% kind="manual" id="explain_tracing" points=1  graded by a TA (free text or code)

A solution or read-only cell may start with directives that pull code from the library::

    # @library hsd3_learn.utils:dim_select
    # @blank body | Build a gather index ... (~6 lines; torch.gather)

``@library MODULE:NAME`` inserts the source of a top-level function or class, exactly as in the library file.
``@blank TARGET | HINT`` wraps part of it in nbgrader solution markers, preceded by the hint as a comment:
``body`` (a function's body after its docstring), ``method NAME`` (a method's body in a class), or
``lines START ... END`` (from the first line containing START to the next line containing END).

``python -m autograder build`` writes ``solutions/NN/NN.ipynb`` and runs ``nbgrader generate_assignment`` for every
assignment into ``course/``. Both steps are deterministic, so building twice changes nothing.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jupytext
import nbformat

__all__ = ["REPO_ROOT", "BuildError", "assignments", "build", "build_notebook", "library_source", "render_cell"]

REPO_ROOT = Path(__file__).resolve().parents[1]
NBGRADER_SCHEMA = 3
HINT_WIDTH = 100
_ID_RE = re.compile(r"^[a-zA-Z0-9_\-]+$")


class BuildError(ValueError):
    """A notebook source is malformed; the message names the file, cell and problem."""


# --------------------------------------------------------------------------------------------------------------
# Library source


@dataclass
class Blank:
    """One region the student writes: what to blank and the hint shown above the stub."""

    target: str
    hint: str


def library_source(spec: str) -> tuple[list[str], ast.AST]:
    """``"hsd3_learn.utils:dim_select"`` -> (the object's source lines as in the file, its AST node)."""
    module_name, _, name = spec.partition(":")
    if not name:
        raise BuildError(f"@library needs MODULE:NAME, got {spec!r}")
    module = importlib.import_module(module_name)
    path = Path(module.__file__ or "")
    lines = path.read_text().splitlines()
    for node in ast.parse("\n".join(lines)).body:
        if getattr(node, "name", None) == name or _assigns(node, name):
            start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            return lines[start - 1 : node.end_lineno], _shift(node, start - 1)
    raise BuildError(f"@library {spec}: no top-level function, class or assignment named {name!r} in {path.name}")


def _assigns(node: ast.AST, name: str) -> bool:
    return isinstance(node, (ast.Assign, ast.AnnAssign)) and any(
        isinstance(t, ast.Name) and t.id == name for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
    )


def _shift(node: ast.AST, offset: int) -> ast.AST:
    """Make line numbers relative to the extracted snippet (line 1 = first line of the snippet)."""
    for child in ast.walk(node):
        if hasattr(child, "lineno"):
            child.lineno -= offset
            child.end_lineno -= offset
    return node


def _body_range(fn: ast.AST) -> tuple[int, int]:
    """1-based inclusive line range of a function's body after its docstring."""
    body = list(fn.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    if not body:
        raise BuildError(f"@blank: function {fn.name!r} has nothing but a docstring to blank")
    return body[0].lineno, fn.end_lineno


def _region(lines: list[str], node: ast.AST, target: str) -> tuple[int, int]:
    """Resolve a blank target to a 1-based inclusive line range within the snippet."""
    if target == "body":
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            raise BuildError("@blank body: only for a function; use 'method NAME' inside a class")
        return _body_range(node)
    if target.startswith("method "):
        name = target.split(None, 1)[1].strip()
        for item in getattr(node, "body", []):
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == name:
                return _body_range(item)
        raise BuildError(f"@blank {target!r}: no method {name!r} in {getattr(node, 'name', '?')}")
    if target.startswith("lines "):
        start_text, sep, end_text = target[len("lines ") :].partition(" ... ")
        if not sep:
            raise BuildError(f"@blank {target!r}: write 'lines START ... END'")
        start = next((i for i, line in enumerate(lines) if start_text.strip() in line), None)
        if start is None:
            raise BuildError(f"@blank {target!r}: no line contains {start_text.strip()!r}")
        end = next((i for i in range(start, len(lines)) if end_text.strip() in lines[i]), None)
        if end is None:
            raise BuildError(f"@blank {target!r}: no line after the start contains {end_text.strip()!r}")
        return start + 1, end + 1
    raise BuildError(f"@blank target {target!r}: valid targets are 'body', 'method NAME', 'lines START ... END'")


def _with_markers(lines: list[str], node: ast.AST, blanks: list[Blank]) -> list[str]:
    """Insert hint comments and BEGIN/END SOLUTION markers around every blank region."""
    regions = sorted((_region(lines, node, b.target), b.hint) for b in blanks)
    for ((_, previous_last), _), ((next_first, _), _) in zip(regions[:-1], regions[1:]):
        if next_first <= previous_last:
            raise BuildError("@blank regions overlap")
    out = list(lines)
    for (first, last), hint in reversed(regions):
        indent = re.match(r"\s*", lines[first - 1]).group(0)
        out.insert(last, f"{indent}### END SOLUTION")
        out.insert(first - 1, f"{indent}### BEGIN SOLUTION")
        # Keep "about 3 lines" / "1 line" together on one line of the wrapped hint.
        glued = re.sub(r"(\d+) (lines?)", "\\1\u00a0\\2", hint)
        hint_lines = textwrap.wrap(glued, HINT_WIDTH - len(indent) - 2, initial_indent="Hint: ", subsequent_indent="  ",
                                   break_on_hyphens=False)
        hint_lines = [line.replace("\u00a0", " ") for line in hint_lines]
        for line in reversed(hint_lines):
            out.insert(first - 1, f"{indent}# {line}")
    return out


# --------------------------------------------------------------------------------------------------------------
# Cells


def render_cell(source: str, where: str) -> str:
    """Expand the ``@library`` / ``@blank`` directives at the top of a code cell; other lines are kept after.

    Several ``@library`` lines may follow each other (each with its own ``@blank`` lines); their sources are joined
    with two blank lines, as in a module.
    """
    lines = source.splitlines()
    snippets: list[tuple[str, list[Blank]]] = []
    rest: list[str] = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("# @library "):
            snippets.append((stripped[len("# @library ") :].strip(), []))
        elif stripped.startswith("# @blank "):
            target, sep, hint = stripped[len("# @blank ") :].partition("|")
            if not snippets:
                raise BuildError(f"{where}: @blank without a preceding @library")
            if not sep or not hint.strip():
                raise BuildError(f"{where}: '@blank TARGET | HINT' needs a hint after '|'")
            snippets[-1][1].append(Blank(target.strip(), hint.strip()))
        elif stripped or not snippets:
            rest = lines[i:]
            break
    if not snippets:
        return source
    blocks = []
    for spec, blanks in snippets:
        try:
            code, node = library_source(spec)
            blocks.append("\n".join(_with_markers(code, node, blanks) if blanks else code))
        except BuildError as err:
            raise BuildError(f"{where}: {err}") from None
    return "\n\n\n".join(blocks + (["\n".join(rest)] if rest else []))


def _nbgrader_metadata(meta: dict[str, Any], where: str) -> dict[str, Any] | None:
    kind = meta.pop("kind", None)
    grade_id = meta.pop("id", None)
    points = meta.pop("points", None)
    if kind is None:
        if grade_id is not None or points is not None:
            raise BuildError(f"{where}: 'id'/'points' need a kind (solution, tests, readonly, manual)")
        return None
    flags = {
        "solution": (False, False, True),
        "tests": (True, True, False),
        "readonly": (False, True, False),
        "manual": (True, False, True),
    }
    if kind not in flags:
        raise BuildError(f"{where}: unknown kind {kind!r}; valid: {sorted(flags)}")
    if not grade_id or not _ID_RE.match(str(grade_id)):
        raise BuildError(f"{where}: kind={kind!r} needs an id of letters, digits, '_' or '-'")
    grade, locked, solution = flags[kind]
    if grade and (points is None or float(points) < 0):
        raise BuildError(f"{where}: kind={kind!r} needs points >= 0")
    nbgrader = {"grade": grade, "grade_id": str(grade_id), "locked": locked, "schema_version": NBGRADER_SCHEMA,
                "solution": solution, "task": False}
    if grade:
        nbgrader["points"] = points
    return nbgrader


def build_notebook(source_path: Path) -> nbformat.NotebookNode:
    """Read one ``NN_name.py`` source and return the full solution notebook (deterministic ids, no outputs)."""
    nb = jupytext.read(source_path)
    cells = []
    seen: set[str] = set()
    source_cells = [c for c in nb.cells if c.source.strip() or c.metadata]  # jupytext's empty preamble cell
    for index, cell in enumerate(source_cells):
        where = f"{source_path.name}, cell {index + 1}"
        meta = dict(cell.metadata)
        nbgrader = _nbgrader_metadata(meta, where)
        if cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(render_cell(cell.source, where))
        elif nbgrader is None:
            new = nbformat.v4.new_markdown_cell(cell.source) if cell.cell_type == "markdown" else nbformat.v4.new_raw_cell(cell.source)
        else:
            new = nbformat.v4.new_markdown_cell(cell.source)
        if nbgrader is not None:
            if nbgrader["grade_id"] in seen:
                raise BuildError(f"{where}: duplicate id {nbgrader['grade_id']!r}")
            seen.add(nbgrader["grade_id"])
            new.metadata["nbgrader"] = nbgrader
            if nbgrader["locked"]:
                new.metadata.update({"deletable": False, "editable": False})
        new.metadata.update(meta)
        new["id"] = nbgrader["grade_id"] if nbgrader else f"cell-{index:03d}"
        cells.append(new)
    out = nbformat.v4.new_notebook(cells=cells)
    out.metadata = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    return out


# --------------------------------------------------------------------------------------------------------------
# The whole course


def assignments(root: Path = REPO_ROOT) -> list[str]:
    """Assignment names, in course order: every ``solutions/NN_name/NN_name.py``."""
    return sorted(p.parent.name for p in (root / "solutions").glob("*/*.py") if p.stem == p.parent.name)


def _write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True


def build(root: Path = REPO_ROOT, names: list[str] | None = None, release: bool = True) -> list[str]:
    """Rebuild solution notebooks (and, with ``release``, the student notebooks). Returns the assignments built."""
    names = names or assignments(root)
    unknown = sorted(set(names) - set(assignments(root)))
    if unknown:
        raise BuildError(f"unknown assignments {unknown}; valid: {assignments(root)}")
    for name in names:
        notebook = build_notebook(root / "solutions" / name / f"{name}.py")
        _write_if_changed(root / "solutions" / name / f"{name}.ipynb", nbformat.writes(notebook) + "\n")
    if release:
        for name in names:
            _generate_assignment(root, name)
    return names


def _generate_assignment(root: Path, name: str) -> None:
    """``nbgrader generate_assignment NAME --force`` with the venv's bin on PATH (nbgrader calls alembic)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        [sys.executable, "-m", "nbgrader", "generate_assignment", name, "--force", "--log-level=WARN"],
        cwd=root, env=env, capture_output=True, text=True,
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise BuildError(f"nbgrader generate_assignment {name} failed: " + " | ".join(tail))
    released = root / "course" / name / f"{name}.ipynb"
    notebook = json.loads(released.read_text())
    _write_if_changed(released, json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
