"""The notebooks are also graded assignments, in nbgrader's format.

A notebook marks its assignment cells with ``metadata["nbgrader"]``:

* read-only setup cells (``locked``, neither solution nor grade): imports the assignment needs;
* solution cells (``solution: true``): the answer sits between ``### BEGIN SOLUTION`` and
  ``### END SOLUTION``;
* graded cells (``grade: true``, with ``points``): each imports ``minimaskrcnn.testing`` afresh
  (``reload``), asserts one of its checkers with ``graded=True``, and carries nbgrader hidden tests
  (``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS``) whose seeds appear nowhere else.

``student_version`` does what nbgrader's ``ClearSolutions`` and ``ClearHiddenTests`` preprocessors do
to code cells: each solution region becomes ``# YOUR CODE HERE`` / ``raise NotImplementedError()`` at
the marker's indentation, each hidden-test region disappears. The tests run the assignment cells of
both versions in-process (the full notebooks run top to bottom in their own kernels through nbmake):
every graded cell must pass with the solutions and fail without them. ``tests/test_nbgrader.py`` runs
nbgrader itself on them.
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
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
TESTING = Path(__file__).resolve().parent.parent / "minimaskrcnn" / "testing.py"


def assignment_notebooks():
    found = []
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        if any("nbgrader" in c.metadata for c in nb.cells):
            found.append(path)
    return found


def _hidden_regions(source):
    return re.findall(rf"{HIDDEN_BEGIN}(.*?){HIDDEN_END}", source, re.S)


def student_version(nb):
    """A copy of ``nb`` with every solution region replaced by ``raise NotImplementedError()`` and every
    hidden-test region removed."""
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("grade"):
            cell.source = re.sub(rf"\n?{HIDDEN_BEGIN}.*?{HIDDEN_END}", "", cell.source, flags=re.S)
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
        assert re.search(r"^testing = reload\(testing\)$", cell.source, re.M), (
            "a graded cell imports the checkers afresh itself"
        )
        visible = re.sub(rf"{HIDDEN_BEGIN}.*?{HIDDEN_END}", "", cell.source, flags=re.S)
        assert re.search(r"^assert testing\.check_\w+\(.*graded=True\)$", visible, re.M), (
            "a graded cell asserts a minimaskrcnn.testing check in graded mode"
        )
        hidden = _hidden_regions(cell.source)
        assert len(hidden) == 1 and re.search(
            r"assert testing\.check_\w+\(.*seed=\d+.*graded=True\)", hidden[0]
        )
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
            assert isinstance(err, (AssertionError, NotImplementedError)), (
                f"{path.name}: graded cell {meta['grade_id']} passed without the solution"
            )
        elif not meta.get("solution"):
            assert err is None, f"{path.name}: setup cell {meta['grade_id']} failed: {err!r}"
    assert graded >= 1


@pytest.mark.parametrize("path", assignment_notebooks(), ids=lambda p: p.name)
def test_hidden_seeds_appear_nowhere_in_visible_text(path):
    nb = nbformat.read(path, as_version=4)
    hidden_text = "".join(r for c in assignment_cells(nb) for r in _hidden_regions(c.source))
    seeds = set(re.findall(r"seed=(\d+)", hidden_text))
    assert seeds
    visible = "\n".join(c.source for c in student_version(nb).cells) + TESTING.read_text()
    for seed in seeds:
        assert not re.search(rf"\b{seed}\b", visible), f"hidden seed {seed} of {path.name} is visible"
    assert len(seeds) == len(re.findall(r"seed=(\d+)", hidden_text)), "each hidden test has its own seed"


def test_experiment_notebooks_hold_the_long_trainings():
    """The trainings left the assignments (autograding runs every cell of a notebook)."""
    for path in assignment_notebooks():
        text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        assert "train(" not in text and "shapes_model.npz" not in text and "SHIPPED_MODEL" not in text, (
            path.name
        )
    for name in (
        "02b_anchors_and_rpn_experiments",
        "03b_roi_pool_vs_roi_align_experiments",
        "04b_mask_loss_softmax_vs_sigmoid_experiments",
    ):
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        assert not assignment_cells(nb)
        moved = [c for c in nb.cells[2:] if c.cell_type == "code"]  # after the title and the setup cell
        assert moved and all(c.outputs for c in moved), f"{name}: committed outputs missing"


def test_student_version_keeps_indentation_and_code_outside_markers():
    cell = nbformat.v4.new_code_cell(
        "def f(x):\n    y = 1\n    ### BEGIN SOLUTION\n    return x + y\n    ### END SOLUTION\n\nz = 2"
    )
    cell.metadata["nbgrader"] = {
        "solution": True,
        "grade": False,
        "locked": False,
        "grade_id": "f",
        "schema_version": 3,
    }
    nb = nbformat.v4.new_notebook(cells=[cell])
    src = student_version(nb).cells[0].source
    assert src == "def f(x):\n    y = 1\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\nz = 2"
    namespace = {}
    exec(src, namespace)
    with pytest.raises(NotImplementedError):
        namespace["f"](1)


@pytest.mark.parametrize("path", assignment_notebooks(), ids=lambda p: p.name)
def test_markers_only_on_lines_of_their_own(path):
    """nbgrader finds its markers as substrings of any line of any cell: prose must not quote them."""
    for cell in nbformat.read(path, as_version=4).cells:
        for line in cell.source.splitlines():
            for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
                if marker in line:
                    assert cell.cell_type == "code" and line.strip() == f"### {marker}", line
