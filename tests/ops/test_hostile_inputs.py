"""Hostile inputs to the public ops: refused before any kernel runs, never a crash, an overflow or a
silently wrong value; on every input they accept, the tiers agree.

The probes that used to kill the interpreter (SIGSEGV inside Numba) run in a subprocess with a
timeout, so a regression fails this test instead of taking the test run down with it.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minimaskrcnn.ops import (
    batched_nms,
    box_area,
    box_convert,
    box_iou,
    project_masks_on_boxes,
    roi_align,
    roi_align_backward,
    roi_pool,
    roi_pool_backward,
)
from minimaskrcnn.ops._roi_common import MAX_SAMPLES_PER_BIN, coordinate_limit

BACKENDS = ("reference", "numba", "cuda")  # validation runs before any tier, the GPU one included
X = np.random.default_rng(0).random((1, 2, 8, 8)).astype(np.float32)
BOX = np.array([[0, 1, 1, 6, 6]], np.float32)

# -- class 1: crashes inside Numba -------------------------------------------------------------------

_CRASH_PROBES = {
    "roi_align_backward_hw_overflow":
        "roi_align_backward(np.ones((1, 1, 2, 2), np.float32), np.array([[0, 0, 0, 4, 4.]], np.float32), "
        "(1, 1, 2**32, 2**32), 2, backend=b)",
    "roi_pool_backward_huge_shape":
        "roi_pool_backward(np.ones((1, 1, 2, 2), np.float32), np.array([[0, 0, 0, 4, 4.]], np.float32), "
        "np.zeros((1, 1, 2, 2), np.int32), (1, 1, 2**33, 2**33), backend=b)",
    "roi_pool_backward_plane_past_int32":
        "roi_pool_backward(np.ones((1, 1, 2, 2), np.float32), np.array([[0, 0, 0, 4, 4.]], np.float32), "
        "np.zeros((1, 1, 2, 2), np.int32), (1, 1, 2**16, 2**16), backend=b)",
}


@pytest.mark.parametrize("probe", list(_CRASH_PROBES))
def test_crash_probes_raise_instead_of_crashing(probe):
    code = ("import numpy as np\nfrom minimaskrcnn.ops import roi_align_backward, roi_pool_backward\n"
            "for b in ('numba', 'reference', 'cuda'):\n"
            "    try:\n"
            f"        {_CRASH_PROBES[probe]}\n"
            "    except ValueError as exc:\n"
            "        assert 'input_shape' in str(exc), exc\n"
            "        print('refused', b)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"rc {res.returncode}: {res.stderr[-2000:]}"
    assert res.stdout.split() == ["refused", "numba", "refused", "reference", "refused", "cuda"], res.stdout


# -- class 2: silently wrong values -----------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_roi_align_huge_adaptive_grid_is_refused(backend):
    # 2.2e4 px at scale 1 with 7 x 7 bins: 3143 x 3143 samples per bin (the probe that returned ±1e38).
    big = np.array([[0, 0, 0, 2.2e4, 2.2e4]], np.float32)
    with pytest.raises(ValueError, match=r"boxes\[0\].*3143 x 3143 .*sampling_ratio"):
        roi_align(X, big, 7, backend=backend)
    with pytest.raises(ValueError, match=r"boxes\[0\].*samples per bin"):
        roi_align_backward(np.ones((1, 2, 7, 7), np.float32), big, X.shape, 7, backend=backend)
    with pytest.raises(ValueError, match="sampling_ratio must be at most 256"):
        roi_align(X, BOX, 7, sampling_ratio=257, backend=backend)


def test_roi_align_huge_box_with_fixed_sampling_is_exact():
    # A fixed grid needs no big scratch: the same box is fine and the tiers agree bit for bit.
    big = np.array([[0, -3e4, -3e4, 2.2e4, 2.2e4]], np.float32)
    ref = roi_align(X, big, 7, sampling_ratio=2, backend="reference")
    np.testing.assert_array_equal(roi_align(X, big, 7, sampling_ratio=2, backend="numba"), ref)
    assert np.all(np.isfinite(ref))


def test_grid_limit_is_exactly_max_samples_per_bin():
    side = int(np.sqrt(MAX_SAMPLES_PER_BIN))  # 256 samples per side: accepted; one more pixel: refused
    x = np.zeros((1, 1, 4, 4), np.float32)
    roi_align(x, np.array([[0, 0, 0, side, side]], np.float32), 1, sampling_ratio=-1)
    with pytest.raises(ValueError, match="samples per bin"):
        roi_align(x, np.array([[0, 0, 0, side + 1, side]], np.float32), 1, sampling_ratio=-1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_roi_pool_box_beyond_the_dtype_is_refused_in_every_tier(dtype):
    lim = coordinate_limit(dtype)
    far = np.array([[0, -2 * lim, 0, 2 * lim, 4]], dtype)
    for backend in BACKENDS:
        with pytest.raises(ValueError, match=r"boxes\[0\].*beyond"):
            roi_pool(X.astype(dtype), far, 2, backend=backend)
        with pytest.raises(ValueError, match=r"boxes\[0\].*beyond"):
            roi_align(X.astype(dtype), far, 2, sampling_ratio=2, backend=backend)
    # At the limit itself both CPU tiers agree (the probe on which they disagreed used 1e20).
    edge = np.array([[0, -lim, -lim, lim, lim]], dtype)
    np.testing.assert_array_equal(roi_pool(X.astype(dtype), edge, 2, backend="numba"),
                                  roi_pool(X.astype(dtype), edge, 2, backend="reference"))


def test_project_masks_on_huge_box_is_refused_not_nan():
    masks = np.ones((1, 8, 8), bool)
    with pytest.raises(ValueError, match="samples per bin"):
        project_masks_on_boxes(masks, np.array([[0, 0, 3e4, 3e4]], np.float32), 28)
    # a large but sane box still gives targets in [0, 1]
    t = project_masks_on_boxes(masks, np.array([[0, 0, 3e3, 3e3]], np.float32), 28)
    assert np.all((t >= 0) & (t <= 1))


@pytest.mark.parametrize("bad", [2.0, (2.0, 2), (2, 2.5), True, (2, np.float64(2))])
def test_float_output_size_is_refused(bad):
    for call in (lambda: roi_align(X, BOX, bad), lambda: roi_pool(X, BOX, bad)):
        with pytest.raises(TypeError, match="output_size must be an int or a pair of ints"):
            call()


@pytest.mark.parametrize("bad", [(1, 2, 8.0, 8), (1, 2, 8, 8.5), (1.0, 2, 8, 8), (1, True, 8, 8)])
def test_float_input_shape_is_refused(bad):
    g = np.ones((1, 2, 2, 2), np.float32)
    with pytest.raises(TypeError, match="input_shape must be a sequence of 4 ints"):
        roi_align_backward(g, BOX, bad, 2)
    with pytest.raises(TypeError, match="input_shape must be a sequence of 4 ints"):
        roi_pool_backward(g, BOX, np.zeros((1, 2, 2, 2), np.int32), bad)


# -- the tiers agree on every accepted input (hypothesis) ------------------------------------------

_coord = st.one_of(st.floats(-20, 30, width=32),
                   st.sampled_from([-1e30, 1e30, -3e7, 3e7, 2.0**24, -(2.0**24), 1e10, -1e10]))


@settings(max_examples=60, deadline=None)
@given(coords=st.lists(_coord, min_size=4, max_size=4), scale=st.sampled_from([1.0, 0.25, 1 / 16]),
       sampling_ratio=st.sampled_from([-1, 0, 1, 2]), aligned=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_any_finite_box_gives_the_same_result_in_every_cpu_tier(coords, scale, sampling_ratio, aligned,
                                                                dtype):
    x = np.random.default_rng(1).random((1, 2, 5, 6)).astype(dtype)
    rois = np.array([[0] + coords], dtype)
    g = np.random.default_rng(2).random((1, 2, 2, 2)).astype(dtype)
    calls = {
        "align": lambda b: roi_align(x, rois, 2, scale, sampling_ratio, aligned, backend=b),
        "align_bwd": lambda b: roi_align_backward(g, rois, x.shape, 2, scale, sampling_ratio, aligned,
                                                  backend=b),
        "pool": lambda b: roi_pool(x, rois, 2, scale, return_argmax=True, backend=b),
    }
    for name, call in calls.items():
        results = []
        for backend in ("reference", "numba"):
            try:
                results.append(call(backend))
            except ValueError as exc:  # refused: then by both tiers, with the same message
                results.append(str(exc))
        ref, fast = results
        assert type(ref) is type(fast), (name, ref, fast)
        if isinstance(ref, str):
            assert ref == fast
            continue
        ref, fast = (r if isinstance(r, tuple) else (r,) for r in (ref, fast))
        for a, b in zip(ref, fast):  # same arithmetic in the same order: bit for bit
            assert a.dtype.kind != "f" or np.all(np.isfinite(a)), name
            np.testing.assert_array_equal(b, a, err_msg=name)


# -- class 7: the conventions of torchvision's own tests ---------------------------------------------


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.int16, np.float16])
def test_box_ops_take_integer_and_half_boxes_as_torchvision(torch, dtype):
    import torchvision.ops as tvo

    rng = np.random.default_rng(3)
    xy = rng.integers(0, 60, (6, 2))
    boxes = np.concatenate([xy, xy + rng.integers(0, 40, (6, 2))], 1).astype(dtype)
    tb = torch.from_numpy(boxes)
    area = box_area(boxes)
    want = tvo.box_area(tb).numpy()
    assert area.dtype == want.dtype
    np.testing.assert_array_equal(area, want)
    iou = box_iou(boxes, boxes[::-1].copy())
    # uint8: torchvision subtracts before it upcasts, so its sides wrap around (IoUs of -4); we upcast
    # first (README, "where we differ") and equal its IoU of the same boxes in int32.
    t1 = tb.int() if dtype == np.uint8 else tb
    want = tvo.box_iou(t1, t1.flip(0)).numpy()
    assert iou.dtype == want.dtype
    np.testing.assert_array_equal(iou, want)
    for a, b in (("xyxy", "xywh"), ("xyxy", "cxcywh"), ("xywh", "xyxy"), ("cxcywh", "xyxy"),
                 ("xywh", "cxcywh"), ("cxcywh", "xywh")):
        ours = box_convert(boxes, a, b)
        want = tvo.box_convert(tb, a, b).numpy()
        assert ours.dtype == want.dtype, (a, b)
        np.testing.assert_array_equal(ours, want, err_msg=f"{a} -> {b}")


@pytest.mark.parametrize("op", ["align", "pool"])
def test_float16_roi_ops_as_torchvision(torch, op):
    import torchvision.ops as tvo

    x = np.random.default_rng(4).random((2, 3, 10, 12)).astype(np.float16)
    rois = np.array([[0, 1.5, 2.25, 8.5, 9], [1, 0, 0, 11, 9.75], [1, 3, 3, 3.5, 4]], np.float16)
    tx, tr = torch.from_numpy(x), torch.from_numpy(rois)
    if op == "align":
        want = tvo.roi_align(tx, tr, (3, 4), 1.0, 2, False).numpy()
        outs = [roi_align(x, rois, (3, 4), 1.0, 2, False, backend=b) for b in ("reference", "numba")]
    else:
        want = tvo.roi_pool(tx, tr, (3, 4), 1.0).numpy()
        outs = [roi_pool(x, rois, (3, 4), 1.0, backend=b) for b in ("reference", "numba")]
    for out in outs:
        assert out.dtype == np.float16
        # torchvision rounds to float16 after every operation, we compute in float32 and round once
        np.testing.assert_allclose(out.astype(np.float32), want.astype(np.float32), atol=2e-3, rtol=2e-3)
    np.testing.assert_array_equal(outs[0], outs[1])
    g = np.ones((3, 3, 3, 4), np.float16)
    dx = roi_align_backward(g, rois, x.shape, (3, 4), 1.0, 2, False)
    assert dx.dtype == np.float16 and dx.shape == x.shape


def test_sampling_ratio_float_is_refused_like_torchvision(torch):
    import torchvision.ops as tvo

    with pytest.raises(RuntimeError, match="sampling_ratio"):
        tvo.roi_align(torch.from_numpy(X), torch.from_numpy(BOX), 2, sampling_ratio=0.0)
    with pytest.raises(TypeError, match="sampling_ratio must be an int"):
        roi_align(X, BOX, 2, sampling_ratio=0.0)
    np.testing.assert_array_equal(roi_align(X, BOX, 2, sampling_ratio=0),
                                  roi_align(X, BOX, 2, sampling_ratio=-1))


def test_batched_nms_with_none_scores_is_refused_even_when_empty():
    # torchvision returns [] here without looking at scores and idxs; we check every argument first
    # (README, "where we differ").
    with pytest.raises(TypeError, match="scores must be a numpy.ndarray"):
        batched_nms(np.zeros((0, 4), np.float32), None, None, 0.5)
    keep = batched_nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), 0.5)
    assert keep.shape == (0,) and keep.dtype == np.int64
