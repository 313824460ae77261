"""The notebooks are also graded assignments, in nbgrader's format.

A notebook marks its assignment cells with ``metadata["nbgrader"]``:

* read-only setup cells (``locked``, neither solution nor grade): imports the assignment needs;
* solution cells (``solution: true``): the answer sits between ``### BEGIN SOLUTION`` and
  ``### END SOLUTION``;
* graded cells (``grade: true``, with ``points``): they call a checker of ``minimaskrcnn.testing``
  and assert it returns True.

``student_version`` does what nbgrader's ``ClearSolutions`` preprocessor does to code cells: each
marked region becomes ``# YOUR CODE HERE`` / ``raise NotImplementedError()`` at the marker's
indentation. The tests run the assignment cells of both versions in-process (the full notebooks run
top to bottom in their own kernels through nbmake): every graded cell must pass with the solutions
and fail without them. No nbgrader needed; instructors can still run nbgrader on the notebooks.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"


def assignment_notebooks():
    found = []
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        if any("nbgrader" in c.metadata for c in nb.cells):
            found.append(path)
    return found


def student_version(nb):
    """A copy of ``nb`` with every solution region replaced by ``raise NotImplementedError()``."""
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        if cell.cell_type != "code" or not cell.metadata.get("nbgrader", {}).get("solution"):
            continue
        out, inside = [], False
        for line in cell.source.splitlines():
            if line.strip() == BEGIN:
                indent = line[: len(line) - len(line.lstrip())]
                out += [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError()"]
                inside = True
            elif line.strip() == END:
                inside = False
            elif not inside:
                out.append(line)
        cell.source = "\n".join(out)
        cell.outputs, cell.execution_count = [], None
    return nb


def assignment_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code" and "nbgrader" in c.metadata]


def run_assignment(nb):
    """Execute the assignment cells in order in one fresh namespace.

    Returns a list of (cell, exception or None, printed text) per cell."""
    namespace = {"__name__": "__assignment__"}
    results = []
    for cell in assignment_cells(nb):
        buf = io.StringIO()
        err = None
        with contextlib.redirect_stdout(buf):
            try:
                exec(compile(cell.source, cell.metadata["nbgrader"]["grade_id"], "exec"), namespace)
            except Exception as exc:  # noqa: BLE001 - a failing cell is a result here
                err = exc
        results.append((cell, err, buf.getvalue()))
    return results


def test_notebooks_are_collected():
    assert assignment_notebooks(), "no assignment notebook found under notebooks/"


@pytest.mark.parametrize("path", assignment_notebooks(), ids=lambda p: p.name)
def test_assignment_metadata_is_nbgrader_valid(path):
    nb = nbformat.read(path, as_version=4)
    ids = [c.metadata["nbgrader"]["grade_id"] for c in assignment_cells(nb)]
    assert len(ids) == len(set(ids)), f"duplicate grade_id in {path.name}"
    graded = [c for c in assignment_cells(nb) if c.metadata["nbgrader"].get("grade")]
    solutions = [c for c in assignment_cells(nb) if c.metadata["nbgrader"].get("solution")]
    assert graded and solutions
    for cell in graded:
        meta = cell.metadata["nbgrader"]
        assert meta.get("points", 0) > 0 and meta.get("locked") and not meta.get("solution")
        assert re.search(r"assert\s+check_\w+\(", cell.source), \
            "a graded cell asserts a minimaskrcnn.testing check"
    for cell in solutions:
        assert cell.source.count(BEGIN) == cell.source.count(END) >= 1
    for cell in assignment_cells(nb):
        assert not re.search(r"^\s*[%!]", cell.source, re.M), "assignment cells must be plain Python"
        assert cell.metadata["nbgrader"].get("schema_version") == 3


@pytest.mark.parametrize("path", assignment_notebooks(), ids=lambda p: p.name)
def test_full_version_passes_every_graded_cell(path):
    nb = nbformat.read(path, as_version=4)
    for cell, err, printed in run_assignment(nb):
        grade_id = cell.metadata["nbgrader"]["grade_id"]
        assert err is None, f"{path.name} cell {grade_id} raised {err!r}\n{printed}"
        if cell.metadata["nbgrader"].get("grade"):
            assert "FAIL" not in printed and "-> OK" in printed, f"{grade_id}:\n{printed}"


@pytest.mark.parametrize("path", assignment_notebooks(), ids=lambda p: p.name)
def test_student_version_fails_every_graded_cell(path):
    nb = student_version(nbformat.read(path, as_version=4))
    for cell in assignment_cells(nb):
        if cell.metadata["nbgrader"].get("solution"):
            assert BEGIN not in cell.source and "raise NotImplementedError()" in cell.source
    graded = 0
    for cell, err, _ in run_assignment(nb):
        meta = cell.metadata["nbgrader"]
        if meta.get("grade"):
            graded += 1
            assert isinstance(err, (AssertionError, NotImplementedError)), \
                f"{path.name}: graded cell {meta['grade_id']} passed without the solution"
        elif not meta.get("solution"):
            assert err is None, f"{path.name}: setup cell {meta['grade_id']} failed: {err!r}"
    assert graded >= 1


def test_student_version_keeps_indentation_and_code_outside_markers():
    cell = nbformat.v4.new_code_cell(
        "def f(x):\n    y = 1\n    ### BEGIN SOLUTION\n    return x + y\n    ### END SOLUTION\n\nz = 2")
    cell.metadata["nbgrader"] = {"solution": True, "grade": False, "locked": False, "grade_id": "f",
                                 "schema_version": 3}
    nb = nbformat.v4.new_notebook(cells=[cell])
    src = student_version(nb).cells[0].source
    assert src == "def f(x):\n    y = 1\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\nz = 2"
    namespace = {}
    exec(src, namespace)
    with pytest.raises(NotImplementedError):
        namespace["f"](1)
