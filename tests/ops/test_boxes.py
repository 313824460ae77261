"""Box utilities against torchvision.ops, plus hand-worked golden cases and properties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from minimaskrcnn.ops.boxes import box_area, box_convert, box_iou, clip_boxes_to_image, remove_small_boxes

TOL = {np.float64: 1e-10, np.float32: 1e-5}
FORMATS = ("xyxy", "xywh", "cxcywh")


def random_boxes(rng, n, dtype=np.float64, lo=-20.0, hi=100.0, max_size=50.0):
    xy = rng.uniform(lo, hi, (n, 2))
    wh = rng.uniform(0.0, max_size, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(dtype)


# ---------------------------------------------------------------- golden cases (worked by hand)

def test_box_area_golden():
    boxes = np.array([[0, 0, 2, 3],     # 2 wide, 3 high: 6 (no +1)
                      [1, 1, 1, 5],     # zero width: 0
                      [5, 5, 3, 6]],    # reversed in x: (3 - 5) * (6 - 5) = -2, not clamped
                     dtype=np.float64)
    np.testing.assert_array_equal(box_area(boxes), [6.0, 0.0, -2.0])


def test_box_iou_golden():
    a = np.array([[0, 0, 2, 2]], dtype=np.float64)
    b = np.array([[1, 1, 3, 3],     # overlap is the unit square (1,1,2,2): 1 / (4 + 4 - 1) = 1/7
                  [0, 0, 2, 2],     # identical: 4 / 4 = 1
                  [2, 0, 4, 2],     # shares only the edge x = 2: intersection width 0 -> IoU 0
                  [5, 5, 6, 6],     # disjoint: sides clamped at 0 -> IoU 0
                  [0, 0, 1, 2]],    # inside a: 2 / (4 + 2 - 2) = 1/2
                 dtype=np.float64)
    np.testing.assert_allclose(box_iou(a, b), [[1 / 7, 1.0, 0.0, 0.0, 0.5]], rtol=0, atol=1e-15)


def test_box_convert_golden():
    xyxy = np.array([[1.0, 2.0, 5.0, 10.0]])
    # xywh keeps the corner and gives the size 4 x 8; cxcywh the centre ((1+5)/2, (2+10)/2) = (3, 6)
    np.testing.assert_array_equal(box_convert(xyxy, "xyxy", "xywh"), [[1, 2, 4, 8]])
    np.testing.assert_array_equal(box_convert(xyxy, "xyxy", "cxcywh"), [[3, 6, 4, 8]])
    np.testing.assert_array_equal(box_convert(np.array([[3.0, 6, 4, 8]]), "cxcywh", "xywh"), [[1, 2, 4, 8]])


def test_clip_and_remove_small_golden():
    boxes = np.array([[-5, -5, 5, 5],      # clipped to (0, 0, 5, 5)
                      [8, 2, 30, 4],       # x2 clipped to width 10: (8, 2, 10, 4), 2 wide
                      [20, 20, 30, 30]],   # wholly outside: collapses to (10, 12, 10, 12)
                     dtype=np.float64)
    clipped = clip_boxes_to_image(boxes, (12, 10))  # (height, width)
    np.testing.assert_array_equal(clipped, [[0, 0, 5, 5], [8, 2, 10, 4], [10, 12, 10, 12]])
    # sides 5x5, 2x2, 0x0: min_size 2 keeps the first two (>= is inclusive), 3 only the first
    np.testing.assert_array_equal(remove_small_boxes(clipped, 2.0), [0, 1])
    np.testing.assert_array_equal(remove_small_boxes(clipped, 3.0), [0])
    assert remove_small_boxes(clipped, 3.0).dtype == np.int64


# ---------------------------------------------------------------- against torchvision

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_box_area_and_iou_match_torchvision(torch, torchvision, rng, dtype):
    b1 = random_boxes(rng, 37, dtype)
    b2 = random_boxes(rng, 23, dtype)
    b2[:3] = b1[:3]                      # identical pairs
    b2[3] = b2[3, [2, 3, 0, 1]]          # a reversed box
    b1[4, 2] = b1[4, 0]                  # a zero-width box
    ops = torchvision.ops
    area = ops.box_area(torch.from_numpy(b1)).numpy()
    np.testing.assert_allclose(box_area(b1), area, rtol=0, atol=TOL[dtype])
    ours = box_iou(b1, b2)
    theirs = ops.box_iou(torch.from_numpy(b1), torch.from_numpy(b2)).numpy()
    assert ours.dtype == dtype and ours.shape == (37, 23)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=TOL[dtype])


def test_box_iou_zero_area_pair_is_nan_like_torchvision(torch, torchvision):
    a = np.array([[1.0, 1.0, 1.0, 1.0]])
    ours = box_iou(a, a)
    theirs = torchvision.ops.box_iou(torch.from_numpy(a), torch.from_numpy(a)).numpy()
    assert np.isnan(ours[0, 0]) and np.isnan(theirs[0, 0])


def test_box_iou_empty_lists():
    some = random_boxes(np.random.default_rng(1), 3)
    assert box_iou(np.zeros((0, 4)), some).shape == (0, 3)
    assert box_iou(some, np.zeros((0, 4))).shape == (3, 0)
    assert box_area(np.zeros((0, 4))).shape == (0,)
    assert remove_small_boxes(np.zeros((0, 4)), 1.0).shape == (0,)
    assert clip_boxes_to_image(np.zeros((0, 4)), (5, 5)).shape == (0, 4)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_clip_and_remove_small_match_torchvision(torch, torchvision, rng, dtype):
    boxes = random_boxes(rng, 50, dtype)
    ours = clip_boxes_to_image(boxes, (60, 45))
    theirs = torchvision.ops.clip_boxes_to_image(torch.from_numpy(boxes), (60, 45)).numpy()
    np.testing.assert_array_equal(ours, theirs)
    keep = remove_small_boxes(boxes, 20.0)
    theirs = torchvision.ops.remove_small_boxes(torch.from_numpy(boxes), 20.0).numpy()
    np.testing.assert_array_equal(keep, theirs)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("in_fmt", FORMATS)
@pytest.mark.parametrize("out_fmt", FORMATS)
def test_box_convert_matches_torchvision(torch, torchvision, rng, dtype, in_fmt, out_fmt):
    boxes = random_boxes(rng, 20, dtype)
    ours = box_convert(boxes, in_fmt, out_fmt)
    theirs = torchvision.ops.box_convert(torch.from_numpy(boxes), in_fmt, out_fmt).numpy()
    assert ours.dtype == dtype
    np.testing.assert_array_equal(ours, theirs)  # same operations in the same order: bit-identical
    assert ours is not boxes


# ---------------------------------------------------------------- properties

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, (6, 4), elements=finite), arrays(np.float64, (5, 4), elements=finite))
def test_box_iou_properties(a, b):
    # make every box well-formed with positive size
    a = np.concatenate([np.minimum(a[:, :2], a[:, 2:]), np.maximum(a[:, :2], a[:, 2:]) + 1.0], axis=1)
    b = np.concatenate([np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:]) + 1.0], axis=1)
    iou = box_iou(a, b)
    assert np.all(iou >= 0) and np.all(iou <= 1 + 1e-12)
    np.testing.assert_allclose(iou, box_iou(b, a).T, rtol=0, atol=1e-15)          # symmetric
    np.testing.assert_allclose(np.diag(box_iou(a, a)), 1.0, rtol=0, atol=1e-12)  # a box with itself


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, (4, 4), elements=finite), st.sampled_from(FORMATS), st.sampled_from(FORMATS))
def test_box_convert_round_trip(boxes, in_fmt, out_fmt):
    back = box_convert(box_convert(boxes, in_fmt, out_fmt), out_fmt, in_fmt)
    np.testing.assert_allclose(back, boxes, rtol=0, atol=1e-9)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_boxes_rejected(bad):
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, bad]])
    for call in (lambda: box_area(boxes), lambda: box_iou(boxes, boxes[:1]),
                 lambda: clip_boxes_to_image(boxes, (4, 4)), lambda: remove_small_boxes(boxes, 1.0),
                 lambda: box_convert(boxes, "xyxy", "xywh")):
        with pytest.raises(ValueError, match="boxes.* finite"):
            call()
    with pytest.raises(ValueError, match="boxes2 must be finite"):
        box_iou(boxes[:1], boxes)


def test_bad_shapes_and_types_rejected():
    with pytest.raises(ValueError, match=r"boxes must have shape \(\.\.\., 4\)"):
        box_area(np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"boxes1 must have shape \(N, 4\)"):
        box_iou(np.zeros((2, 3, 4)), np.zeros((1, 4)))
    with pytest.raises(TypeError, match="boxes must have dtype float32 or float64"):
        box_area(np.zeros((3, 4), dtype=np.bool_))
    with pytest.raises(TypeError, match="boxes must have dtype float32 or float64"):
        clip_boxes_to_image(np.zeros((3, 4), dtype=np.int64), (4, 4))
    with pytest.raises(TypeError, match="same dtype"):
        box_iou(np.zeros((1, 4)), np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="in_fmt must be one of"):
        box_convert(np.zeros((1, 4)), "xyzw", "xyxy")
    with pytest.raises(ValueError, match="size must be a pair"):
        clip_boxes_to_image(np.zeros((1, 4)), 5)
