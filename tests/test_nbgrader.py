"""The assignment notebooks under real nbgrader: generate_assignment, then autograde four submissions.

A temporary course folder holds one nbgrader assignment per assignment notebook (01–04). nbgrader's
own commands run in subprocesses, as an instructor would run them: ``nbgrader generate_assignment``
makes the student version (solutions and hidden tests removed), then ``nbgrader autograde`` executes
four submissions of it:

* ``solution`` — the instructor's solutions typed into the released notebook: full marks;
* ``unchanged`` — the released notebook as it is: zero;
* ``wrapper`` — every solution a one-line call to this package or to torch / torchvision: zero on every
  graded cell (graded mode refuses them);
* ``bug`` — the solution with one planted bug: only the graded cells of that part lose their points.

The scores are read from nbgrader's gradebook (its database, through ``nbgrader.api.Gradebook``). The
autograde time of the solution is measured without ``MINIMASKRCNN_FAST`` (grading must be short without
any environment variable set by hand) and must stay under two minutes per notebook; the other three
submissions are graded with it, which shrinks only the notebooks' timing and demo sizes, two notebooks at
a time (each notebook has its own course folder and gradebook).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
MAX_AUTOGRADE_S = 120.0

# (grade_id of the solution cell, index of the region in it) -> the wrapper's lines for that region.
# Regions without a package or torch equivalent keep the instructor's solution (they are not graded alone).
WRAPPERS = {
    "01_conv_backprop": {
        ("conv_loops", 0): [
            "from minimaskrcnn.nn.functional import conv2d_forward",
            "out = conv2d_forward(x, w, b, stride, padding, dilation)[0]",
        ],
        ("im2col", 0): [
            "import torch",
            "return torch.nn.functional.unfold(torch.from_numpy(x), (KH, KW), dilation, padding, "
            "stride).permute(1, 0, 2).reshape(C * KH * KW, -1).numpy()",
        ],
        ("im2col", 1): [
            "from minimaskrcnn.nn.functional import conv2d_forward",
            "out, cols = conv2d_forward(x, w, b, stride, padding, dilation)[0], None",
        ],
        ("backward", 0): [
            "import torch",
            "return torch.nn.functional.fold(torch.from_numpy(np.ascontiguousarray(dcols.reshape("
            "C * KH * KW, N, -1).transpose(1, 0, 2))), (H, W), (KH, KW), dilation, padding, "
            "stride).numpy()",
        ],
        ("backward", 1): [
            "from minimaskrcnn.nn.functional import conv2d_backward, conv2d_forward",
            "dx, dw, db = conv2d_backward(dout, conv2d_forward(x, w, b, stride, padding, dilation)[1])",
        ],
    },
    "02_anchors_and_rpn": {
        ("box_coder", 0): [
            "from minimaskrcnn.ops import BoxCoder",
            "return BoxCoder(weights).encode(reference_boxes, proposals)",
        ],
        ("box_coder", 1): [
            "from minimaskrcnn.ops import BoxCoder",
            "return BoxCoder(weights).decode(deltas, boxes)",
        ],
        ("nms", 0): ["from minimaskrcnn.ops import box_iou", "return box_iou(box[None], boxes)[0]"],
        ("nms", 1): [
            "import torch, torchvision",
            "return torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), "
            "iou_threshold).numpy()",
        ],
    },
    "03_roi_pool_vs_roi_align": {
        ("roi_pool", 0): [
            "from minimaskrcnn.ops.roi_pool import round_half_away",
            "return round_half_away(v)",
        ],
        ("roi_pool", 1): [
            "from minimaskrcnn.ops import roi_pool",
            "out[...] = roi_pool(input, boxes, output_size, spatial_scale)",
        ],
        ("roi_align", 0): [
            "from minimaskrcnn.testing import _bilinear_ref",
            "return _bilinear_ref(y, x, H, W)",
        ],
        ("roi_align", 2): [
            "import torch, torchvision",
            "out[...] = torchvision.ops.roi_align(torch.from_numpy(input), torch.from_numpy(boxes), "
            "output_size, spatial_scale, sampling_ratio, aligned).numpy()",
        ],
        ("roi_align", 3): [
            "from minimaskrcnn.ops import roi_align_backward",
            "dx[...] = roi_align_backward(grad_output, boxes, input_shape, output_size, "
            "spatial_scale, sampling_ratio, aligned)",
        ],
    },
    "04_mask_loss_softmax_vs_sigmoid": {
        ("losses", 0): [
            "from minimaskrcnn.model.roi_heads import mask_loss",
            'loss, dlogits = mask_loss(mask_logits, labels, mask_targets, "sigmoid")',
        ],
        ("losses", 1): [
            "from minimaskrcnn.model.roi_heads import mask_loss",
            'loss, dlogits = mask_loss(mask_logits, labels, mask_targets, "softmax")',
        ],
    },
}

# One planted bug per notebook: (solution cell, text, replacement, graded cells that must lose their points).
BUGS = {
    "01_conv_backprop": (
        "backward",
        "dw = (G @ cols.T).reshape(w.shape)",
        "dw = (cols @ G.T).reshape(w.shape)",
        {"test_conv_backward"},
    ),
    "02_anchors_and_rpn": (
        "nms",
        "> iou_threshold]] = True",
        ">= iou_threshold]] = True",
        {"test_nms_golden"},
    ),
    "03_roi_pool_vs_roi_align": (
        "roi_pool",
        "return int(math.floor(v + 0.5)) if v >= 0 else -int(math.floor(-v + 0.5))",
        "return int(np.round(v))",
        {"test_roi_pool_golden", "test_roi_pool_random"},
    ),
    "04_mask_loss_softmax_vs_sigmoid": (
        "losses",
        "loss = (np.maximum(u, 0) - u * t + np.log1p(np.exp(-np.abs(u)))).sum() / n",
        "loss = (np.maximum(u, 0) - u * t + np.log1p(np.exp(-np.abs(u)))).sum() / R",
        {"test_sigmoid_golden", "test_sigmoid_random"},
    ),
}
STUDENTS = ("solution", "unchanged", "wrapper", "bug")


def require(module_name: str):
    """The fixtures' rule (tests/conftest.py): a missing module skips locally and fails in CI."""
    import importlib

    try:
        return importlib.import_module(module_name)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        if os.environ.get("CI"):
            pytest.fail(f"{module_name!r} is required in CI but cannot be imported: {exc}")
        pytest.skip(f"{module_name} not installed")


def _replace_regions(source: str, replace) -> str:
    """``source`` with the i-th solution region's lines replaced by ``replace(i, lines, indent)``."""
    out, region, inside, index = [], [], False, 0
    for line in source.splitlines():
        if line.strip() == BEGIN:
            indent, inside, region = line[: len(line) - len(line.lstrip())], True, []
        elif line.strip() == END:
            out += [indent + new if new else new for new in replace(index, region, indent)]
            inside, index = False, index + 1
        elif inside:
            region.append(line)
        else:
            out.append(line)
    return "\n".join(out)


def _submission(nbformat, released, source, name, student):
    """The released notebook with its solution cells written as ``student`` would."""
    nb = nbformat.from_dict(released)
    if student == "unchanged":
        return nb
    sources = {
        c.metadata["nbgrader"]["grade_id"]: c.source
        for c in source.cells
        if c.metadata.get("nbgrader", {}).get("solution")
    }
    bug_cell, bug_from, bug_to, _ = BUGS[name]
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if not cell.metadata.get("nbgrader", {}).get("solution"):
            continue

        def replace(i, lines, indent, gid=gid):
            if student == "wrapper" and (gid, i) in WRAPPERS[name]:
                return WRAPPERS[name][gid, i]
            return [ln[len(indent) :] if ln.startswith(indent) else ln for ln in lines]

        text = _replace_regions(sources[gid], replace)
        if student == "bug" and gid == bug_cell:
            assert bug_from in text, f"{name}: the planted bug's text is not in cell {gid}"
            text = text.replace(bug_from, bug_to)
        cell.source = text
    return nb


def _nbgrader(args, cwd, env, timeout=600):
    proc = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"nbgrader {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


@pytest.fixture(scope="module")
def graded_course(tmp_path_factory):
    require("nbgrader")
    nbformat = require("nbformat")
    from nbgrader.api import Gradebook

    env = {k: v for k, v in os.environ.items() if k != "MINIMASKRCNN_FAST"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["MPLBACKEND"] = "Agg"
    names = list(WRAPPERS)
    # One course folder (and gradebook) per notebook, so that the untimed grading below can run two at a time.
    courses = {}
    for name in names:
        course = courses[name] = tmp_path_factory.mktemp(f"course_{name[:2]}")
        (course / "nbgrader_config.py").write_text(
            "c = get_config()\n"
            f"c.CourseDirectory.root = {str(course)!r}\n"
            f"c.CourseDirectory.db_url = {'sqlite:///' + str(course / 'gradebook.db')!r}\n"
            "c.ExecutePreprocessor.timeout = 300\n"
        )
        (course / "source" / name).mkdir(parents=True)
        (course / "source" / name / f"{name}.ipynb").write_bytes((NOTEBOOKS / f"{name}.ipynb").read_bytes())
        _nbgrader(["generate_assignment", name], course, env)
    released, seconds = {}, {}
    for name in names:  # one at a time: the solution's autograde is the timed one
        course = courses[name]
        release = nbformat.read(course / "release" / name / f"{name}.ipynb", as_version=4)
        source = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        released[name] = release
        for student in STUDENTS:
            folder = course / "submitted" / student / name
            folder.mkdir(parents=True)
            nbformat.write(_submission(nbformat, release, source, name, student), folder / f"{name}.ipynb")
        start = time.perf_counter()
        _nbgrader(["autograde", name, "--student", "solution", "--create"], course, env)
        seconds[name] = time.perf_counter() - start
    # The other three submissions, two notebooks at a time, with MINIMASKRCNN_FAST=1 (it shrinks the
    # notebooks' timing and demo sizes, never the graded checks) to keep this test short. Without --force
    # nbgrader does not grade the solution twice.
    fast = dict(env, MINIMASKRCNN_FAST="1")
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda n: _nbgrader(["autograde", n, "--create"], courses[n], fast), names))
    scores = {}
    for name in names:
        with Gradebook(f"sqlite:///{courses[name] / 'gradebook.db'}") as gb:
            cells = [c.name for c in gb.find_notebook(name, name).grade_cells]
            for student in STUDENTS:
                grades = {cell: gb.find_grade(cell, name, name, student) for cell in cells}
                scores[name, student] = {cell: (g.score, g.max_score) for cell, g in grades.items()}
    for name in names:
        table = {s: sum(v[0] for v in scores[name, s].values()) for s in STUDENTS}
        total = sum(v[1] for v in scores[name, "solution"].values())
        print(f"\n{name}: autograde of the solution {seconds[name]:.1f} s; scores (of {total:g}): {table}")
    return {"scores": scores, "seconds": seconds, "released": released}


@pytest.mark.parametrize("name", list(WRAPPERS))
def test_autograde_scores(graded_course, name):
    scores = {s: graded_course["scores"][name, s] for s in STUDENTS}
    cells = scores["solution"]
    assert len(cells) >= 3
    for cell, (score, max_score) in cells.items():
        assert max_score > 0 and score == max_score, f"solution lost points on {cell}"
        assert scores["unchanged"][cell][0] == 0, f"the released notebook scores on {cell}"
        assert scores["wrapper"][cell][0] == 0, f"a package / torch wrapper scores on {cell}"
    lost = BUGS[name][3]
    assert lost <= set(cells)
    for cell, (score, max_score) in scores["bug"].items():
        expected = 0 if cell in lost else max_score
        assert score == expected, f"planted bug: {cell} scored {score}, expected {expected}"


@pytest.mark.parametrize("name", list(WRAPPERS))
def test_autograde_time(graded_course, name):
    assert graded_course["seconds"][name] < MAX_AUTOGRADE_S


@pytest.mark.parametrize("name", list(WRAPPERS))
def test_released_version_has_no_solutions_or_hidden_tests(graded_course, name):
    text = "\n".join(c.source for c in graded_course["released"][name].cells)
    assert BEGIN not in text and "BEGIN HIDDEN TESTS" not in text
    source = (NOTEBOOKS / f"{name}.ipynb").read_text()
    hidden = re.findall(
        r"seed=(\d+)",
        "".join(
            re.findall(r"### BEGIN HIDDEN TESTS(.*?)### END HIDDEN TESTS", source.replace("\\n", "\n"), re.S)
        ),
    )
    assert hidden
    for seed in hidden:
        assert seed not in text, f"hidden seed {seed} is visible in the released notebook"
