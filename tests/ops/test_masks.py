"""Mask targets and mask pasting against torchvision's roi_heads functions."""

import numpy as np
import pytest

from minimaskrcnn.ops.masks import paste_masks_in_image, project_masks_on_boxes

TOL = {np.float64: 1e-10, np.float32: 1e-5}


def boxes_touching_image(rng, n, H, W, dtype):
    """Random boxes, partly outside the image but each overlapping it (torchvision's paste code
    raises on a box wholly outside)."""
    x1 = rng.uniform(-15, W - 5, n)
    y1 = rng.uniform(-15, H - 5, n)
    w = rng.uniform(0, 40, n)
    h = rng.uniform(0, 40, n)
    x2 = np.maximum(x1 + w, rng.uniform(1, 5, n))
    y2 = np.maximum(y1 + h, rng.uniform(1, 5, n))
    return np.stack([x1, y1, x2, y2], axis=1).astype(dtype)


# ---------------------------------------------------------------- paste_masks_in_image

def test_paste_golden_worked_example():
    # The docstring's example: M = 2 all-ones map, box (10, 10, 20, 20), 40 x 40 image.
    # Padded map (4 x 4): a 2 x 2 block of ones in a zero border; scale 4/2 = 2 grows the box about
    # (15, 15) to (5, 5, 25, 25): 21 x 21 pixels at rows/cols 5..25.
    out = paste_masks_in_image(np.ones((1, 2, 2)), np.array([[10.0, 10.0, 20.0, 20.0]]), (40, 40))
    assert out.shape == (1, 40, 40) and out.dtype == np.float64
    inside = np.zeros((40, 40), dtype=bool)
    inside[5:26, 5:26] = True
    assert np.all(out[0][~inside] == 0)
    # local pixel 10 (image 15): src = (10 + 0.5) * 4/21 - 0.5 = 1.5, between map cells 1 and 2, both 1
    assert out[0, 15, 15] == pytest.approx(1.0, abs=1e-15)
    # local row 3 (image 8): src = 3.5 * 4/21 - 0.5 = 1/6: 5/6 of border cell 0 (a zero) + 1/6 of cell 1
    assert out[0, 8, 15] == pytest.approx(1 / 6, abs=1e-12)
    # local row 0 (image 5): src = 0.5 * 4/21 - 0.5 < 0 -> clamped to 0: the zero border
    assert out[0, 5, 15] == 0.0
    # thresholded at 0.5, the mask keeps rows with 0.5 <= src <= 2.5 (at least half from cells 1, 2):
    # (r + 0.5) * 4/21 in [1, 3] -> local r in [4.75, 15.25] -> 5..15, image rows 10..20 (the box +1)
    rows = np.flatnonzero(out[0, :, 15] >= 0.5)
    np.testing.assert_array_equal(rows, np.arange(10, 21))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("padding", [0, 1, 2])
def test_paste_matches_torchvision(torch, torchvision, rng, dtype, padding):
    from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste

    N, M, H, W = 25, 28, 50, 64
    masks = rng.random((N, M, M)).astype(dtype)
    boxes = boxes_touching_image(rng, N, H, W, dtype)
    boxes[0] = [3.0, 4.0, 3.0, 4.0]   # zero-size box: still one pixel wide after the +1
    boxes[1] = [-10.0, -10.0, 80, 70]  # larger than the image on every side
    ours = paste_masks_in_image(masks, boxes, (H, W), padding=padding)
    theirs = tv_paste(torch.from_numpy(masks)[:, None], torch.from_numpy(boxes), (H, W), padding=padding)
    assert ours.dtype == dtype and ours.shape == (N, H, W)
    np.testing.assert_allclose(ours, theirs[:, 0].numpy(), rtol=0, atol=TOL[dtype])


def test_paste_box_wholly_outside_pastes_nothing():
    # documented choice: torchvision raises a shape error for such a box; we return an empty map
    out = paste_masks_in_image(np.ones((2, 4, 4)), np.array([[-30.0, 5, -10, 9], [50, 50, 60, 60]]), (20, 20))
    assert out.shape == (2, 20, 20) and not out.any()


def test_paste_zero_masks(torch, torchvision):
    out = paste_masks_in_image(np.zeros((0, 28, 28), np.float32), np.zeros((0, 4), np.float32), (7, 9))
    assert out.shape == (0, 7, 9) and out.dtype == np.float32


def test_paste_bad_input():
    masks, boxes = np.ones((2, 4, 4)), np.array([[0.0, 0, 2, 2], [1, 1, 3, 3]])
    with pytest.raises(ValueError, match="boxes must be finite"):
        paste_masks_in_image(masks, np.array([[0.0, 0, 2, 2], [1, 1, np.nan, 3]]), (8, 8))
    with pytest.raises(ValueError, match=r"boxes must have shape \(2, 4\)"):
        paste_masks_in_image(masks, boxes[:1], (8, 8))
    with pytest.raises(ValueError, match=r"masks must have shape \(N, M, M\)"):
        paste_masks_in_image(np.ones((2, 4, 5)), boxes, (8, 8))
    with pytest.raises(ValueError, match="masks must be 3-D"):
        paste_masks_in_image(np.ones((2, 1, 4, 4)), boxes, (8, 8))
    with pytest.raises(ValueError, match="image_shape must be >= 1"):
        paste_masks_in_image(masks, boxes, (0, 8))
    with pytest.raises(ValueError, match="padding must be an int >= 0"):
        paste_masks_in_image(masks, boxes, (8, 8), padding=-1)
    with pytest.raises(TypeError, match="masks must have dtype float32 or float64"):
        paste_masks_in_image(masks.astype(bool), boxes, (8, 8))


# ---------------------------------------------------------------- project_masks_on_boxes

def test_project_golden():
    # a 10 x 10 mask whose left half (columns 0..4) is 1; box (0, 0, 10, 10) at M = 2:
    # each bin is 5 x 5 pixels with ceil(10/2) = 5 x 5 samples at x = 0.5, 1.5, ..., 4.5 (left bins)
    # and 5.5, ..., 9.5 (right bins); every row of the mask is the same, so only x matters.
    # Left: x = 0.5 .. 3.5 blend two ones -> 1; x = 4.5 blends column 4 (1) and 5 (0) -> 0.5;
    #       mean (1 + 1 + 1 + 1 + 0.5) / 5 = 0.9.  Right: x >= 5.5 reads columns >= 5 only -> 0.
    mask = np.zeros((1, 10, 10), dtype=bool)
    mask[0, :, :5] = True
    out = project_masks_on_boxes(mask, np.array([[0.0, 0.0, 10.0, 10.0]]), 2)
    np.testing.assert_allclose(out, [[[0.9, 0.0], [0.9, 0.0]]], rtol=0, atol=1e-15)
    # a box inside the ones: every sample reads 1
    np.testing.assert_allclose(project_masks_on_boxes(mask, np.array([[0.0, 0.0, 4.0, 10.0]]), 3), 1.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_project_matches_torchvision(torch, torchvision, rng, dtype, backend):
    from torchvision.models.detection.roi_heads import project_masks_on_boxes as tv_project

    K, H, W, P = 4, 40, 50, 12
    gt = rng.random((K, H, W)) > 0.6
    boxes = boxes_touching_image(rng, P, H, W, dtype)
    matched = rng.integers(0, K, P)
    ours = project_masks_on_boxes(gt, boxes, 14, matched_idxs=matched, backend=backend)
    theirs = tv_project(torch.from_numpy(gt), torch.from_numpy(boxes), torch.from_numpy(matched), 14).numpy()
    assert ours.dtype == dtype and ours.shape == (P, 14, 14)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=TOL[dtype])
    # without matched_idxs, box p uses mask p
    direct = project_masks_on_boxes(gt[matched], boxes, 14, backend=backend)
    np.testing.assert_allclose(direct, ours, rtol=0, atol=TOL[dtype])


def test_project_no_boxes():
    out = project_masks_on_boxes(np.zeros((0, 5, 5), bool), np.zeros((0, 4), np.float32), 28)
    assert out.shape == (0, 28, 28) and out.dtype == np.float32


def test_project_bad_input():
    gt, boxes = np.ones((2, 8, 8), bool), np.array([[0.0, 0, 4, 4], [1, 1, 5, 5]])
    with pytest.raises(TypeError, match="gt_masks must be a bool"):
        project_masks_on_boxes(gt.astype(np.float32), boxes, 7)
    with pytest.raises(ValueError, match=r"gt_masks must have shape \(K, H, W\)"):
        project_masks_on_boxes(gt[0], boxes, 7)
    with pytest.raises(ValueError, match="boxes must be finite"):
        project_masks_on_boxes(gt, np.array([[0.0, 0, 4, 4], [1, 1, np.inf, 5]]), 7)
    with pytest.raises(ValueError, match=r"boxes must have shape \(P, 4\)"):
        project_masks_on_boxes(gt, np.zeros((2, 5)), 7)
    with pytest.raises(ValueError, match="M must be an int >= 1"):
        project_masks_on_boxes(gt, boxes, 0)
    with pytest.raises(ValueError, match="one mask per box"):
        project_masks_on_boxes(gt[:1], boxes, 7)
    with pytest.raises(ValueError, match=r"matched_idxs must index gt_masks"):
        project_masks_on_boxes(gt, boxes, 7, matched_idxs=np.array([0, 2]))
    with pytest.raises(ValueError, match=r"matched_idxs must have shape \(2,\)"):
        project_masks_on_boxes(gt, boxes, 7, matched_idxs=np.array([0]))


# ---------------------------------------------------------------- the continuous paste convention

def test_paste_continuous_golden():
    # The same all-ones 2 x 2 map and box (10, 10, 20, 20) as the worked example, continuous convention:
    # one cell is 10 / 2 = 5 px, pixel c reads cell coordinate s = (c + 0.5 - 10) / 10 * 2 - 0.5.
    out = paste_masks_in_image(np.ones((1, 2, 2)), np.array([[10.0, 10.0, 20.0, 20.0]]), (40, 40),
                               convention="continuous")
    col = out[0, 15]
    # c = 12..17: 0 <= s <= 1, between cells 0 and 1 (both 1) -> 1
    np.testing.assert_allclose(col[12:18], 1.0, rtol=0, atol=1e-15)
    # c = 10: s = -0.4, between the zero outside the map (weight 0.4) and cell 0 (weight 0.6) -> 0.6;
    # c = 9: s = -0.6 -> 0.4; c = 8: s = -0.8 -> 0.2; c <= 7: s <= -1 -> 0. Symmetric on the far side.
    np.testing.assert_allclose(col[[10, 9, 8, 19, 20, 21]], [0.6, 0.4, 0.2, 0.6, 0.4, 0.2],
                               rtol=0, atol=1e-12)
    assert not col[:8].any() and not col[22:].any()
    # thresholded: exactly the 10 pixels whose centres lie in the box (torchvision's paste gives 11, 10..20)
    np.testing.assert_array_equal(np.flatnonzero(col > 0.5), np.arange(10, 20))
    np.testing.assert_array_equal(out[0], out[0].T)


def _grid_sample_paste(torch, masks, boxes, H, W):
    """The continuous convention written with torch's grid_sample (align_corners=False, zeros outside):
    pixel centres (c + 0.5) normalised to [-1, 1] over each box."""
    import torch.nn.functional as TF

    m, b = torch.from_numpy(masks)[:, None], torch.from_numpy(boxes)
    ys = torch.arange(H, dtype=m.dtype) + 0.5
    xs = torch.arange(W, dtype=m.dtype) + 0.5
    gy = (ys[None] - b[:, 1:2]) / (b[:, 3:4] - b[:, 1:2]) * 2 - 1  # (N, H)
    gx = (xs[None] - b[:, 0:1]) / (b[:, 2:3] - b[:, 0:1]) * 2 - 1  # (N, W)
    N = b.shape[0]
    grid = torch.stack([gx[:, None, :].expand(N, H, W), gy[:, :, None].expand(N, H, W)], dim=3)
    return TF.grid_sample(m, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0].numpy()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_paste_continuous_matches_grid_sample(torch, rng, dtype):
    N, M, H, W = 25, 28, 50, 64
    masks = rng.random((N, M, M)).astype(dtype)
    boxes = boxes_touching_image(rng, N, H, W, dtype)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 0.3)  # grid_sample divides by the box size
    boxes[1] = [-10.0, -10.0, 80, 70]  # larger than the image on every side
    boxes[2] = [3.2, 4.7, 3.9, 5.1]  # smaller than a pixel
    ours = paste_masks_in_image(masks, boxes, (H, W), convention="continuous")
    assert ours.dtype == dtype and ours.shape == (N, H, W)
    np.testing.assert_allclose(ours, _grid_sample_paste(torch, masks, boxes, H, W), rtol=0, atol=TOL[dtype])


def test_paste_continuous_degenerate_and_outside_boxes():
    boxes = np.array([[5.0, 5, 5, 9], [5, 5, 9, 5], [-30, 5, -10, 9], [50, 50, 60, 60]])
    out = paste_masks_in_image(np.ones((4, 4, 4)), boxes, (20, 20), convention="continuous")
    assert out.shape == (4, 20, 20) and not out.any()
    with pytest.raises(ValueError, match="convention must be"):
        paste_masks_in_image(np.ones((1, 4, 4)), boxes[:1], (20, 20), convention="detectron2")


def test_paste_conventions_on_the_same_box():
    # A map that is 1 in every cell, box (4.6, 0, 15.4, 20): torchvision's paste covers the truncated,
    # enlarged box inclusively and keeps 12 columns (4..15); the continuous one keeps the 10 whose
    # centres (5.5 .. 14.5) lie in [4.6, 15.4]: columns 4 and 15 (centres 0.1 px outside, a quarter of a
    # 10.8 / 28 px cell) read 0.24 of the border cell.
    box = np.array([[4.6, 0.0, 15.4, 20.0]])
    tv = paste_masks_in_image(np.ones((1, 28, 28)), box, (20, 20))[0, 10] > 0.5
    cont = paste_masks_in_image(np.ones((1, 28, 28)), box, (20, 20), convention="continuous")[0, 10] > 0.5
    np.testing.assert_array_equal(np.flatnonzero(tv), np.arange(4, 16))
    np.testing.assert_array_equal(np.flatnonzero(cont), np.arange(5, 15))


# ---------------------------------------------------------------- aligned mask targets

def test_project_aligned_golden():
    # GT mask = columns >= 10 of a 4 x 20 image (its edge at x = 10 in continuous coordinates).
    # Box (8, 0, 12, 4), M = 4: bins 1 px wide, ceil(4 / 4) = 1 sample per bin at its centre.
    # aligned=True samples the continuous points 8.5, 9.5, 10.5, 11.5 = indices 8, 9, 10, 11 -> 0, 0, 1, 1:
    #   the edge sits between bins 1 and 2, at x = 10, where it is.
    # aligned=False samples indices 8.5, 9.5, 10.5, 11.5 -> 0, 0.5, 1, 1: the target's edge moves
    #   half a pixel left (toward the box's origin), torchvision's convention.
    mask = np.zeros((1, 4, 20), dtype=bool)
    mask[0, :, 10:] = True
    box = np.array([[8.0, 0.0, 12.0, 4.0]])
    np.testing.assert_allclose(project_masks_on_boxes(mask, box, 4, aligned=True)[0, 1], [0, 0, 1, 1],
                               rtol=0, atol=1e-15)
    np.testing.assert_allclose(project_masks_on_boxes(mask, box, 4)[0, 1], [0, 0.5, 1, 1], rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_project_aligned_matches_torchvision_roi_align(torch, torchvision, rng, dtype):
    from torchvision.ops import roi_align as tv_roi_align

    K, H, W, P = 4, 40, 50, 12
    gt = rng.random((K, H, W)) > 0.6
    boxes = boxes_touching_image(rng, P, H, W, dtype)
    matched = rng.integers(0, K, P)
    ours = project_masks_on_boxes(gt, boxes, 14, matched_idxs=matched, aligned=True)
    rois = torch.from_numpy(np.concatenate([matched[:, None].astype(dtype), boxes], axis=1))
    theirs = tv_roi_align(torch.from_numpy(gt[:, None].astype(dtype)), rois, (14, 14), 1.0, -1, True)[:, 0]
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=0, atol=TOL[dtype])
