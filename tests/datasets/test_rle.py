"""RLE mask API against pycocotools.mask on thousands of random masks, polygons and boxes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minimaskrcnn.datasets.rle import (
    bbox_iou_coco,
    mask_to_rle,
    merge,
    polygons_to_rle,
    rle_area,
    rle_iou,
    rle_to_bbox,
    rle_to_mask,
)

# (h, w) shapes: 1x1, thin, odd, and a few larger ones
SHAPES = [(1, 1), (1, 7), (9, 1), (2, 3), (5, 5), (7, 13), (16, 16), (31, 17), (40, 57)]


def random_masks(rng, h, w, n):
    """(n, h, w) bool: empty, full, noise of several densities and blobs (long runs)."""
    masks = np.empty((n, h, w), dtype=bool)
    masks[0] = False
    masks[1] = True
    for i in range(2, n):
        kind = i % 3
        if kind == 0:
            masks[i] = rng.random((h, w)) < rng.uniform(0.02, 0.98)
        else:  # an axis-aligned blob plus noise flips: long runs, runs across columns
            y0, y1 = np.sort(rng.integers(0, h + 1, 2))
            x0, x1 = np.sort(rng.integers(0, w + 1, 2))
            m = np.zeros((h, w), bool)
            m[y0:y1, x0:x1] = True
            masks[i] = m ^ (rng.random((h, w)) < 0.02 * (kind - 1))
    return masks


def pyco_encode(mask_util, masks):
    """pycocotools encode of an (n, h, w) stack in one call (it wants Fortran (h, w, n) uint8)."""
    return mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))


@pytest.mark.parametrize("shape", SHAPES)
def test_encode_decode_area_bbox_equal_pycocotools(pycocotools, shape):
    from pycocotools import mask as mask_util

    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    masks = random_masks(rng, *shape, n=400)  # 9 shapes x 400 = 3600 masks
    refs = pyco_encode(mask_util, masks)
    ref_area = [mask_util.area(r) for r in refs]  # area() of a list fails past 255 RLEs
    ref_bbox = mask_util.toBbox(refs)
    ours = [mask_to_rle(m) for m in masks]
    assert [o["counts"] for o in ours] == [r["counts"].decode("ascii") for r in refs]
    assert all(o["size"] == list(shape) for o in ours)
    np.testing.assert_array_equal(rle_area(ours), ref_area)
    np.testing.assert_array_equal(rle_to_bbox(ours), ref_bbox)
    # decoding our RLEs and pycocotools' (bytes counts) both give the masks back
    np.testing.assert_array_equal(np.stack([rle_to_mask(o) for o in ours]), masks)
    np.testing.assert_array_equal(np.stack([rle_to_mask(r) for r in refs]), masks)


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (31, 17)])
def test_uncompressed_counts(pycocotools, shape):
    from pycocotools import mask as mask_util

    rng = np.random.default_rng(1)
    for m in random_masks(rng, *shape, n=50):
        flat = m.ravel(order="F")
        change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        runs = np.diff(np.r_[0, change, flat.size]).tolist()
        counts = ([0] + runs) if flat[0] else runs
        unc = {"size": list(shape), "counts": counts}
        np.testing.assert_array_equal(rle_to_mask(unc), m)
        assert rle_area(unc) == m.sum()
        ref = mask_util.frPyObjects(unc, *shape)
        assert merge([unc])["counts"] == ref["counts"].decode()


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (7, 13), (40, 57)])
def test_rle_iou_equals_pycocotools(pycocotools, shape):
    from pycocotools import mask as mask_util

    rng = np.random.default_rng(7)
    dt_masks, gt_masks = random_masks(rng, *shape, n=30), random_masks(rng, *shape, n=20)
    dt, gt = pyco_encode(mask_util, dt_masks), pyco_encode(mask_util, gt_masks)
    crowd = (rng.random(20) < 0.3).astype(np.uint8)
    ref = mask_util.iou(dt, gt, crowd)
    ours = rle_iou([mask_to_rle(m) for m in dt_masks], [mask_to_rle(m) for m in gt_masks], crowd)
    np.testing.assert_array_equal(ours, ref)
    # the same from plain bool arithmetic
    inter = (dt_masks[:, None] & gt_masks[None]).sum(axis=(2, 3))
    union = np.where(crowd[None, :].astype(bool), dt_masks.sum(axis=(1, 2))[:, None],
                     (dt_masks[:, None] | gt_masks[None]).sum(axis=(2, 3)))
    np.testing.assert_array_equal(ours, np.where(inter > 0, inter / np.maximum(union, 1), 0.0))


def test_bbox_iou_equals_pycocotools(pycocotools):
    from pycocotools import mask as mask_util

    rng = np.random.default_rng(3)
    # integer boxes make touching / nested / identical / zero-size boxes common
    dt = np.c_[rng.integers(0, 20, (300, 2)), rng.integers(0, 12, (300, 2))].astype(float)
    gt = np.c_[rng.integers(0, 20, (200, 2)), rng.integers(0, 12, (200, 2))].astype(float)
    dt[:100] += rng.random((100, 4))  # and some fractional ones
    crowd = (rng.random(200) < 0.3).astype(np.uint8)
    np.testing.assert_array_equal(bbox_iou_coco(dt, gt, crowd), mask_util.iou(dt, gt, crowd))
    np.testing.assert_array_equal(bbox_iou_coco(dt, gt), mask_util.iou(dt, gt, np.zeros(200, np.uint8)))
    assert bbox_iou_coco(np.zeros((0, 4)), gt).shape == (0, 200)


def random_polygons(rng, h, w):
    polys = []
    for _ in range(int(rng.integers(1, 4))):
        k = int(rng.integers(3, 9))
        kind = rng.integers(3)
        if kind == 0:  # anywhere, partly outside the image, negative coordinates included
            xy = rng.uniform(-5, max(h, w) + 5, 2 * k)
        elif kind == 1:  # on the 1/5-pixel grid and half pixels: exact ties in the rounding
            xy = rng.integers(-2, 2 * max(h, w) + 2, 2 * k) / rng.choice([2.0, 5.0, 10.0])
        else:  # repeated vertices and axis-aligned edges
            xy = np.repeat(rng.integers(0, max(h, w), k), 2).astype(float)
            xy = np.roll(xy, 1)
        polys.append(xy.tolist())
    return polys


def test_polygons_equal_pycocotools(pycocotools):
    from pycocotools import mask as mask_util

    rng = np.random.default_rng(11)
    for i in range(1500):
        h, w = (int(v) for v in rng.integers(1, 45, 2))
        polys = random_polygons(rng, h, w)
        ref = mask_util.merge(mask_util.frPyObjects(polys, h, w))
        ours = polygons_to_rle(polys, h, w)
        assert ours["counts"] == ref["counts"].decode(), (i, polys, h, w)
        assert ours["size"] == [h, w]


def test_merge_equals_pycocotools(pycocotools):
    from pycocotools import mask as mask_util

    rng = np.random.default_rng(5)
    masks = random_masks(rng, 13, 11, n=60)
    for i in range(0, 60, 3):
        ours_rles = [mask_to_rle(m) for m in masks[i : i + 3]]
        refs = pyco_encode(mask_util, masks[i : i + 3])
        for intersect in (False, True):
            ref = mask_util.merge(refs, intersect=int(intersect))
            assert merge(ours_rles, intersect=intersect)["counts"] == ref["counts"].decode()


def test_golden_encodings():
    # [[0, 1, 1],      column-major: 0 0 | 1 1 | 1 0 -> runs 2 zeros, 3 ones, 1 zero -> "231"
    #  [0, 1, 0]]      (small runs are written as the digit 48 + n)
    assert mask_to_rle(np.array([[0, 1, 1], [0, 1, 0]], bool)) == {"size": [2, 3], "counts": "231"}
    # runs [0, 40, 3, 2] (a 5x9 mask: 40 ones, 3 zeros, 2 ones):
    #   0 -> "0";  40 = 0b01000 + 1 * 32 -> groups 8 (more: 8 | 0x20 = 40 -> "X") then 1 -> "1";
    #   3 -> "3";  the 4th run is stored as 2 - 40 = -38 = 26 - 64 -> group 26 (0x10 set, more: 58 -> "j")
    #   then -2 -> group 30 with the sign bit, last -> 78 -> "N"
    flat = np.r_[np.ones(40), np.zeros(3), np.ones(2)].astype(bool)
    rle = mask_to_rle(flat.reshape(9, 5).T)
    assert rle == {"size": [5, 9], "counts": "0X13jN"}
    np.testing.assert_array_equal(rle_to_mask(rle).ravel(order="F"), flat)
    # empty and full masks; a single pixel's box covers that whole pixel
    assert mask_to_rle(np.zeros((2, 2), bool))["counts"] == "4"
    assert mask_to_rle(np.ones((2, 2), bool))["counts"] == "04"
    one = np.zeros((4, 5), bool)
    one[2, 3] = True
    np.testing.assert_array_equal(rle_to_bbox(mask_to_rle(one)), [3, 2, 1, 1])
    np.testing.assert_array_equal(rle_to_bbox(mask_to_rle(np.zeros((3, 3), bool))), [0, 0, 0, 0])


def test_golden_polygon():
    # The square with corners (1, 1) and (3, 3): pixel (x, y) covers [x, x+1) x [y, y+1), so the
    # pixel centres inside the square are x + .5, y + .5 in {1.5, 2.5}: columns 1 and 2, rows 1 and 2
    # -> 4 pixels (pixel 3's centre 3.5 lies outside).
    m = rle_to_mask(polygons_to_rle([[1, 1, 3, 1, 3, 3, 1, 3]], 5, 5))
    expected = np.zeros((5, 5), bool)
    expected[1:3, 1:3] = True
    np.testing.assert_array_equal(m, expected)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**32 - 1))
def test_round_trip_property(h, w, seed):
    m = np.random.default_rng(seed).random((h, w)) < 0.5
    rle = mask_to_rle(m)
    np.testing.assert_array_equal(rle_to_mask(rle), m)
    assert rle_area(rle) == m.sum()
    assert rle_iou([rle], [rle])[0, 0] == (1.0 if m.any() else 0.0)


def test_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        mask_to_rle(np.zeros(5, bool))
    with pytest.raises(TypeError, match="0/1"):
        mask_to_rle(np.full((2, 2), 3))
    with pytest.raises(ValueError, match="invalid compressed counts string at character 1"):
        rle_to_mask({"size": [2, 2], "counts": "0~"})
    with pytest.raises(ValueError, match="add up to 3 pixels but size 2x2 has 4"):
        rle_to_mask({"size": [2, 2], "counts": [1, 2]})
    with pytest.raises(ValueError, match="negative run"):
        rle_to_mask({"size": [2, 2], "counts": [5, -1]})
    with pytest.raises(ValueError, match="missing the key 'size'"):
        rle_area({"counts": "4"})
    with pytest.raises(ValueError, match="same size"):
        rle_iou([mask_to_rle(np.ones((2, 2), bool))], [mask_to_rle(np.ones((2, 3), bool))])
    with pytest.raises(TypeError, match="dt must be a list of RLE dicts"):
        rle_iou(mask_to_rle(np.ones((2, 2), bool)), [mask_to_rle(np.ones((2, 2), bool))])
    with pytest.raises(ValueError, match="iscrowd"):
        rle_iou([mask_to_rle(np.ones((2, 2), bool))], [mask_to_rle(np.ones((2, 2), bool))], [0, 1])
    with pytest.raises(ValueError, match=r"polygons\[1\].*even number"):
        polygons_to_rle([[0, 0, 1, 0, 1, 1], [0, 0, 1, 1]], 4, 4)
    with pytest.raises(ValueError, match="finite"):
        polygons_to_rle([[0, 0, 1, 0, np.nan, 1]], 4, 4)
    with pytest.raises(ValueError, match="same size"):
        merge([mask_to_rle(np.ones((2, 2), bool)), mask_to_rle(np.ones((3, 2), bool))])


def test_polygon_far_outside_is_refused_not_traced():
    # 1e7 pixels of boundary traced at 1/5 pixel would need ~10^8 points: refused with a clear error
    with pytest.raises(ValueError, match="too long to rasterise"):
        polygons_to_rle([[0, 0, 1e7, 0, 1e7, 1e7]], 10, 10)
    # a polygon partly outside the image is fine (clipped), as in pycocotools
    assert rle_area(polygons_to_rle([[-20, -20, 30, -20, 30, 30, -20, 30]], 10, 10)) == 100
