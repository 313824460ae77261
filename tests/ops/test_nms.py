"""NMS and batched NMS: golden cases, torchvision equality, properties, all backends."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minimaskrcnn.ops.boxes import box_iou
from minimaskrcnn.ops.nms import batched_nms, nms

CPU_BACKENDS = ["reference", "numba"]


def random_boxes(rng, n, dtype=np.float64, extent=100.0, max_size=40.0):
    xy = rng.uniform(0, extent, (n, 2))
    wh = rng.uniform(1.0, max_size, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(dtype)


def tv_nms(torch, torchvision, boxes, scores, thr):
    return torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr).numpy()


def stable_order_oracle(torch, torchvision, boxes, scores, thr):
    """torchvision's kernel walked in *our* tie order: replace the scores by strictly decreasing ranks.

    torchvision's CPU kernel sorts with an unstable (SIMD) sort, so with tied scores its walking order
    is unspecified; giving it distinct ranks in the stable order checks the rest of its algorithm.
    """
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores), dtype=scores.dtype)
    ranks[order] = np.arange(len(scores), 0, -1)
    return tv_nms(torch, torchvision, boxes, ranks, thr)


# ---------------------------------------------------------------- golden cases

# a = (0,0,2,2) and b = (1,0,3,2) overlap in (1,0,2,2): inter 2, union 4 + 4 - 2 = 6, IoU 1/3.
# c = (4,4,5,5) touches neither. Scores a > b > c.
GOLDEN_BOXES = np.array([[0, 0, 2, 2], [1, 0, 3, 2], [4, 4, 5, 5]], dtype=np.float64)
GOLDEN_SCORES = np.array([0.9, 0.8, 0.7])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_golden_suppression(backend):
    # 1/3 > 0.3: b is suppressed by a; c survives
    keep = nms(GOLDEN_BOXES, GOLDEN_SCORES, 0.3, backend=backend)
    np.testing.assert_array_equal(keep, [0, 2])
    assert keep.dtype == np.int64
    # 1/3 > 0.4 is false: nothing is suppressed; nor at 1/3 itself (2/6 and 1/3 are the same double)
    np.testing.assert_array_equal(nms(GOLDEN_BOXES, GOLDEN_SCORES, 0.4, backend=backend), [0, 1, 2])
    np.testing.assert_array_equal(nms(GOLDEN_BOXES, GOLDEN_SCORES, 1 / 3, backend=backend), [0, 1, 2])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_iou_exactly_at_threshold_is_kept(torch, torchvision, backend):
    # a = (0,0,3,1), b = (1,0,4,1): inter 2, union 3 + 3 - 2 = 4, IoU = 0.5 exactly (in any float format).
    # Suppression needs IoU > threshold (strict), so at 0.5 both stay; just below 0.5, b goes.
    for dtype in (np.float32, np.float64):
        boxes = np.array([[0, 0, 3, 1], [1, 0, 4, 1]], dtype=dtype)
        scores = np.array([0.9, 0.8], dtype=dtype)
        np.testing.assert_array_equal(nms(boxes, scores, 0.5, backend=backend), [0, 1])
        np.testing.assert_array_equal(nms(boxes, scores, np.nextafter(0.5, 0), backend=backend), [0])
        np.testing.assert_array_equal(tv_nms(torch, torchvision, boxes, scores, 0.5), [0, 1])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_float32_iou_compared_in_float64(torch, torchvision, backend):
    # IoU = 2/3 computed in float32 is 0.6666667 (slightly above 2/3); as a float64 threshold 2/3 is
    # smaller than that float, so b is suppressed - but it would survive if the threshold were first
    # rounded to float32 (0.6666667 > 0.6666667 is false). torchvision compares in double.
    boxes = np.array([[0, 0, 3, 1], [0, 0, 2, 1]], dtype=np.float32)  # inter 2, union 3: IoU 2/3
    scores = np.array([0.9, 0.8], dtype=np.float32)
    assert float(np.float32(2) / np.float32(3)) > 2 / 3  # (a bare float32 > float would compare in float32)
    np.testing.assert_array_equal(nms(boxes, scores, 2 / 3, backend=backend), [0])
    np.testing.assert_array_equal(tv_nms(torch, torchvision, boxes, scores, 2 / 3), [0])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_ties_keep_lower_index_first(backend):
    # three identical boxes with the same score: the stable order walks 0, 1, 2; box 0 is kept and
    # suppresses the others (IoU 1). A fourth disjoint box with the same score comes after them.
    boxes = np.array([[0, 0, 2, 2]] * 3 + [[10, 10, 12, 12]], dtype=np.float64)
    scores = np.full(4, 0.5)
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, backend=backend), [0, 3])
    # equal scores among disjoint boxes: output ties are ordered by index
    scores = np.array([0.3, 0.7, 0.7, 0.3])
    boxes = random_boxes(np.random.default_rng(0), 4) + np.arange(4)[:, None] * 1000.0
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, backend=backend), [1, 2, 0, 3])


def test_ties_match_torchvision_kernel_in_stable_order(torch, torchvision, rng):
    boxes = random_boxes(rng, 300, extent=60.0)
    scores = rng.integers(0, 5, 300).astype(np.float64)  # many ties
    for backend in CPU_BACKENDS:
        np.testing.assert_array_equal(nms(boxes, scores, 0.4, backend=backend),
                                      stable_order_oracle(torch, torchvision, boxes, scores, 0.4))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_zero_boxes(backend):
    keep = nms(np.zeros((0, 4)), np.zeros(0), 0.5, backend=backend)
    assert keep.shape == (0,) and keep.dtype == np.int64
    keep = batched_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64), 0.5, backend=backend)
    assert keep.shape == (0,) and keep.dtype == np.int64


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_one_box_and_degenerate_boxes(torch, torchvision, backend):
    np.testing.assert_array_equal(nms(np.array([[0.0, 0, 1, 1]]), np.array([1.0]), 0.5, backend=backend), [0])
    # zero-area boxes: IoU of two of them is 0/0 = nan, which is never > threshold: all kept
    boxes = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 2, 2], [3, 3, 1, 1]], dtype=np.float64)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    ours = nms(boxes, scores, 0.5, backend=backend)
    np.testing.assert_array_equal(ours, tv_nms(torch, torchvision, boxes, scores, 0.5))


# ---------------------------------------------------------------- against torchvision

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_matches_torchvision(torch, torchvision, rng, dtype, threshold):
    boxes = random_boxes(rng, 200, dtype)
    scores = rng.permutation(200).astype(dtype) / 200  # distinct scores
    expected = tv_nms(torch, torchvision, boxes, scores, threshold)
    for backend in CPU_BACKENDS:
        np.testing.assert_array_equal(nms(boxes, scores, threshold, backend=backend), expected)


def test_matches_torchvision_large_numba(torch, torchvision, rng):
    boxes = random_boxes(rng, 3000, np.float32, extent=400.0, max_size=120.0)
    scores = rng.random(3000).astype(np.float32)
    assert len(np.unique(scores)) == 3000
    np.testing.assert_array_equal(nms(boxes, scores, 0.7), tv_nms(torch, torchvision, boxes, scores, 0.7))


@pytest.mark.parametrize("n", [300, 1500])  # torchvision: offset trick below 1000 boxes, per-class loop above
def test_batched_nms_matches_torchvision(torch, torchvision, rng, n):
    boxes = random_boxes(rng, n, extent=80.0)
    scores = rng.permutation(n).astype(np.float64) / n
    idxs = rng.integers(0, 7, n)
    expected = torchvision.ops.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                                           torch.from_numpy(idxs), 0.5).numpy()
    for backend in CPU_BACKENDS:
        np.testing.assert_array_equal(batched_nms(boxes, scores, idxs, 0.5, backend=backend), expected)


def test_batched_nms_golden():
    # two identical boxes in different classes both survive; in the same class only the better one
    boxes = np.array([[0, 0, 2, 2]] * 3, dtype=np.float64)
    scores = np.array([0.5, 0.9, 0.7])
    np.testing.assert_array_equal(batched_nms(boxes, scores, np.array([0, 1, 0]), 0.5), [1, 2])
    np.testing.assert_array_equal(batched_nms(boxes, scores, np.array([0, 0, 0]), 0.5), [1])
    np.testing.assert_array_equal(batched_nms(boxes, scores, np.array([3, 1, 2]), 0.5), [1, 2, 0])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_non_contiguous_input(torch, torchvision, rng, backend):
    big = random_boxes(rng, 120)
    boxes = np.asfortranarray(big)[::2]           # strided rows, column-major
    scores = rng.random(120)[::2]
    expected = tv_nms(torch, torchvision, np.ascontiguousarray(boxes), np.ascontiguousarray(scores), 0.5)
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, backend=backend), expected)


# ---------------------------------------------------------------- properties

@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 60), st.sampled_from([0.1, 0.3, 0.5, 0.7]),
       st.sampled_from(CPU_BACKENDS), st.booleans())
def test_nms_properties(seed, n, threshold, backend, tied):
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, n, extent=50.0)
    scores = (rng.integers(0, 4, n) if tied else rng.random(n)).astype(np.float64)
    keep = nms(boxes, scores, threshold, backend=backend)
    # a subset, without repeats, in decreasing score order (ties by index)
    assert len(np.unique(keep)) == len(keep) and np.all((keep >= 0) & (keep < n))
    s = scores[keep]
    assert np.all((s[:-1] > s[1:]) | ((s[:-1] == s[1:]) & (keep[:-1] < keep[1:])))
    # no kept pair overlaps more than the threshold
    iou = box_iou(boxes[keep], boxes[keep])
    np.fill_diagonal(iou, 0)
    assert not np.any(iou > threshold)
    # every dropped box overlaps a kept box that comes before it in the walking order
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(-scores, kind="stable")] = np.arange(n)
    for j in np.setdiff1d(np.arange(n), keep):
        earlier = keep[rank[keep] < rank[j]]
        assert np.any(box_iou(boxes[j:j + 1], boxes[earlier])[0] > threshold)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 80))
def test_backends_agree(seed, n):
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, n, np.float32, extent=40.0)
    scores = rng.integers(0, 3, n).astype(np.float32)
    idxs = rng.integers(0, 3, n)
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, backend="reference"), nms(boxes, scores, 0.5))
    np.testing.assert_array_equal(batched_nms(boxes, scores, idxs, 0.5, backend="reference"),
                                  batched_nms(boxes, scores, idxs, 0.5))


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_rejected(bad):
    boxes = np.array([[0.0, 0, 1, 1], [0, 0, bad, 1]])
    with pytest.raises(ValueError, match="boxes must be finite"):
        nms(boxes, np.ones(2), 0.5)
    with pytest.raises(ValueError, match="scores must be finite"):
        nms(boxes[:1], np.array([bad]), 0.5)
    with pytest.raises(ValueError, match="iou_threshold must be finite"):
        nms(boxes[:1], np.ones(1), bad)


def test_bad_shapes_rejected():
    with pytest.raises(ValueError, match=r"boxes must have shape \(N, 4\)"):
        nms(np.zeros((3, 5)), np.zeros(3), 0.5)
    with pytest.raises(ValueError, match="boxes must be 2-D"):
        nms(np.zeros(4), np.zeros(1), 0.5)
    with pytest.raises(ValueError, match=r"scores must have shape \(3,\) like boxes"):
        nms(np.zeros((3, 4)), np.zeros(2), 0.5)
    with pytest.raises(TypeError, match="boxes must have dtype float32 or float64"):
        nms(np.zeros((3, 4), dtype=np.int32), np.zeros(3), 0.5)
    with pytest.raises(ValueError, match="backend must be one of"):
        nms(np.zeros((3, 4)), np.zeros(3), 0.5, backend="gpu")
    with pytest.raises(ValueError, match=r"idxs must have shape \(3,\)"):
        batched_nms(np.zeros((3, 4)), np.zeros(3), np.zeros(2, dtype=np.int64), 0.5)
    with pytest.raises(TypeError, match="idxs must have an integer dtype"):
        batched_nms(np.zeros((3, 4)), np.zeros(3), np.zeros(3), 0.5)


# ---------------------------------------------------------------- CUDA tier (simulated)

def test_cuda_backend_under_simulator():
    """test_nms_cudasim.py in a fresh interpreter, with NUMBA_ENABLE_CUDASIM=1 set before numba loads."""
    from conftest import require

    require("numba.cuda")  # skips locally, fails in CI when numba-cuda is missing
    here = Path(__file__).parent
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             str(here / "test_nms_cudasim.py")], env=env, capture_output=True, text=True,
                            cwd=here.parent.parent)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout.split("\n")[-2]
