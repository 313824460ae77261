"""The CUDA NMS tier, run under Numba's CUDA simulator (or on a real GPU).

Skipped unless NUMBA_ENABLE_CUDASIM=1 is set before numba is imported (or a GPU is present);
``test_nms.py::test_cuda_backend_under_simulator`` runs this file in a subprocess with the variable set.
Inputs are small: the simulator runs every CUDA thread as a Python thread.
"""

import os

import numpy as np
import pytest

from minimaskrcnn.ops.nms import batched_nms, nms


def _cuda_usable():
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return True
    try:
        from numba import cuda

        return cuda.is_available()
    except Exception:  # pragma: no cover - numba-cuda missing or broken
        return False


pytestmark = pytest.mark.skipif(not _cuda_usable(), reason="needs NUMBA_ENABLE_CUDASIM=1 or a CUDA GPU")


def random_boxes(rng, n, dtype, extent=60.0, max_size=30.0):
    xy = rng.uniform(0, extent, (n, 2))
    wh = rng.uniform(1.0, max_size, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(dtype)


def test_golden():
    # IoU(a, b) = 2 / (4 + 4 - 2) = 1/3: suppressed at 0.3, kept at 0.4; c is disjoint
    boxes = np.array([[0, 0, 2, 2], [1, 0, 3, 2], [4, 4, 5, 5]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7], dtype=np.float32)
    np.testing.assert_array_equal(nms(boxes, scores, 0.3, backend="cuda"), [0, 2])
    np.testing.assert_array_equal(nms(boxes, scores, 0.4, backend="cuda"), [0, 1, 2])


def test_threshold_exactly_and_float64_comparison():
    # IoU exactly 0.5 survives 0.5; float32 IoU 2/3 (0.6666667) is > the float64 threshold 2/3
    boxes = np.array([[0, 0, 3, 1], [1, 0, 4, 1]], dtype=np.float32)
    np.testing.assert_array_equal(nms(boxes, np.array([0.9, 0.8], np.float32), 0.5, backend="cuda"), [0, 1])
    boxes = np.array([[0, 0, 3, 1], [0, 0, 2, 1]], dtype=np.float32)
    np.testing.assert_array_equal(nms(boxes, np.array([0.9, 0.8], np.float32), 2 / 3, backend="cuda"), [0])


def test_zero_and_one_box():
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5, backend="cuda").shape == (0,)
    np.testing.assert_array_equal(nms(np.array([[0.0, 0, 1, 1]]), np.ones(1), 0.5, backend="cuda"), [0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [5, 64, 65, 130])  # inside one 64-block, exactly one, across blocks
def test_equals_cpu_tiers(dtype, n):
    rng = np.random.default_rng(n)
    boxes = random_boxes(rng, n, dtype)
    scores = rng.integers(0, 6, n).astype(dtype)  # ties included
    expected = nms(boxes, scores, 0.4, backend="reference")
    np.testing.assert_array_equal(nms(boxes, scores, 0.4, backend="cuda"), expected)
    np.testing.assert_array_equal(nms(boxes, scores, 0.4, backend="numba"), expected)


def test_batched_equals_cpu():
    rng = np.random.default_rng(3)
    boxes = random_boxes(rng, 90, np.float64)
    scores = rng.random(90)
    idxs = rng.integers(0, 3, 90)
    np.testing.assert_array_equal(batched_nms(boxes, scores, idxs, 0.5, backend="cuda"),
                                  batched_nms(boxes, scores, idxs, 0.5, backend="reference"))
