"""Drawing: render to PNG, read the pixels back, check they changed where they should."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from minimaskrcnn.datasets.shapes import ShapesDataset
from minimaskrcnn.viz import (
    draw_anchors,
    draw_box_refinement,
    draw_boxes,
    draw_instances,
    draw_roi_sampling,
    plot_pr_curves,
    roi_align_sampling_points,
    roi_pool_bins,
    show_masks_grid,
    show_samples_grid,
)


def _png_pixels(fig: Figure) -> np.ndarray:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB")).astype(int)


def _erode(mask: np.ndarray, r: int) -> np.ndarray:
    out = mask.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out &= np.roll(np.roll(mask, dy, axis=0), dx, axis=1)
    return out


def test_draw_instances_tints_exactly_the_masks():
    item = ShapesDataset(5, seed=1, num_instances=(3, 4))[0]
    image, masks = item["image"], item["masks"]
    scale = 2
    plain = _png_pixels(draw_instances(image, np.zeros((0, 4)), [], scale=scale))
    drawn = _png_pixels(draw_instances(image, item["boxes"], item["labels"], masks=masks, scale=scale,
                                       show_text=False, alpha=0.5))
    h, w = image.shape[:2]
    assert plain.shape == drawn.shape == (h * scale, w * scale, 3)
    # Without anything on it, the figure is the image itself, pixel for pixel (nearest upsampling).
    np.testing.assert_allclose(plain, np.kron(image, np.ones((scale, scale, 1))), atol=1)
    up = lambda m: np.kron(m, np.ones((scale, scale), dtype=bool)).astype(bool)  # noqa: E731
    for m in masks:
        inside = up(_erode(m, 2))  # away from the box outline drawn around it
        changed = np.abs(drawn - plain).sum(axis=2) > 30
        assert changed[inside].mean() > 0.95
    # Far from every box the picture is untouched.
    far = np.ones((h, w), dtype=bool)
    for x1, y1, x2, y2 in item["boxes"].astype(int):
        far[max(y1 - 3, 0):y2 + 3, max(x1 - 3, 0):x2 + 3] = False
    assert np.abs(drawn - plain)[up(far)].max() <= 2


def test_draw_instances_outline_draws_the_boundary_and_leaves_the_inside():
    item = ShapesDataset(5, seed=1, num_instances=(3, 4))[0]
    image, masks = item["image"], item["masks"]
    scale = 3
    no_boxes = np.zeros((0, 4))
    plain = _png_pixels(draw_instances(image, no_boxes, [], scale=scale))
    # Boxes far outside the image: only the mask outlines can change pixels.
    off = np.tile([[-50.0, -50.0, -40.0, -40.0]], (len(masks), 1))
    drawn = _png_pixels(draw_instances(image, off, item["labels"], masks=masks, scale=scale, show_text=False,
                                       mask_style="outline"))
    changed = np.abs(drawn - plain).sum(axis=2) > 30
    up = lambda m: np.kron(m, np.ones((scale, scale), dtype=bool)).astype(bool)  # noqa: E731
    union = masks.any(axis=0)
    near = up(~_erode(~union, 2) & ~_erode(union, 2))  # within 2 pixels of a boundary
    assert changed[up(_erode(union, 3))].mean() < 0.01  # the inside keeps the image
    assert changed.any() and changed[~near].mean() < 0.01  # changes lie along the boundaries
    h, w = union.shape
    changed_cells = changed.reshape(h, scale, w, scale).any(axis=(1, 3))  # per image pixel
    line_nearby = ~_erode(~changed_cells, 1)  # a drawn pixel within one pixel (marching squares cuts corners)
    for m in masks:
        assert line_nearby[m & ~_erode(m, 1)].mean() > 0.95  # every mask's own boundary is drawn
    with pytest.raises(ValueError, match="mask_style"):
        draw_instances(image, item["boxes"], item["labels"], masks=masks, mask_style="contour")


def test_draw_instances_into_existing_axes_and_with_text_and_scores():
    ds = ShapesDataset(2, seed=0)
    item = ds[0]
    fig = Figure()
    ax = fig.add_subplot(1, 1, 1)
    scores = np.full(len(item["labels"]), 0.9)
    out = draw_instances(item["image"], item["boxes"], item["labels"], scores=scores,
                         masks=item["masks"].astype(np.float32), class_names=ds.class_names, ax=ax)
    assert out is fig
    texts = [t.get_text() for t in ax.texts]
    assert texts == [f"{ds.class_names[label]} 0.90" for label in item["labels"]]
    with pytest.raises(ValueError, match="masks"):
        draw_instances(item["image"], item["boxes"], item["labels"], masks=item["masks"][:, :5])
    with pytest.raises(ValueError, match="labels"):
        draw_instances(item["image"], item["boxes"], item["labels"][:0])


def test_draw_anchors_draws_outlines():
    anchors = np.array([[8, 8, 24, 24], [0, 12, 32, 20], [12, 0, 20, 32]], dtype=float)
    plain = _png_pixels(draw_anchors((32, 32), np.zeros((0, 4)), scale=4))
    drawn = _png_pixels(draw_anchors((32, 32), anchors, scale=4))
    changed = np.abs(drawn - plain).sum(axis=2) > 30
    # The edge of the square anchor at x = 8 (figure column 32) changed; the middle of a free quarter
    # did not.
    assert changed[40:90, 30:35].any(axis=1).mean() > 0.9
    assert not changed[4:20, 4:20].any()


def test_roi_pool_bins_golden():
    # Box (0.6, 0.4, 5.4, 3.6) at scale 1: C rounding gives (1, 0, 5, 4) — 5.4 → 5, 0.4 → 0.
    # roi_w = 5 − 1 + 1 = 5 columns, roi_h = 4 − 0 + 1 = 5 rows; 2×2 bins of 2.5 cells:
    #   columns: bin 0 floor(0)+1 .. ceil(2.5)+1 = 1..4, bin 1 floor(2.5)+1 .. ceil(5)+1 = 3..6 (overlap at 3)
    #   rows:    bin 0 0..3, bin 1 2..5, clipped to H = 4 → 2..4.
    bins = roi_pool_bins((0.6, 0.4, 5.4, 3.6), (2, 2), 1.0, (4, 8))
    np.testing.assert_array_equal(bins[0, 0], [0, 3, 1, 4])
    np.testing.assert_array_equal(bins[1, 1], [2, 4, 3, 6])
    # Halves round away from zero (C round), not to even: 2.5 → 3, 0.5 → 1.
    np.testing.assert_array_equal(roi_pool_bins((2.5, 0.5, 2.5, 0.5), 1, 1.0, (8, 8))[0, 0], [1, 2, 3, 4])


def test_roi_align_sampling_points_golden():
    # Box (0, 0, 4, 2), output 1×2, sampling_ratio 2, not aligned: bins are 2×2 pixels; the samples
    # of bin (0, 0) sit at 0.5 and 1.5 in both x and y.
    s = roi_align_sampling_points((0, 0, 4, 2), (1, 2), 1.0, 2, False, feature_shape=(4, 4))
    assert s["grid"] == (2, 2) and s["count"] == 4 and s["bin_size"] == (2.0, 2.0)
    np.testing.assert_allclose(s["points"][0, 0], [[0.5, 0.5], [1.5, 0.5], [0.5, 1.5], [1.5, 1.5]])
    np.testing.assert_allclose(s["points"][0, 1][:, 0], [2.5, 3.5, 2.5, 3.5])
    # aligned shifts everything by half a pixel; adaptive sampling takes ceil(roi / bins) per axis.
    s = roi_align_sampling_points((0, 0, 4, 2), (1, 2), 1.0, -1, True)
    assert s["grid"] == (2, 2) and s["start"] == (-0.5, -0.5)
    np.testing.assert_allclose(s["points"][0, 0, 0], [0.0, 0.0])
    # A sample beyond H is dropped (y > H), one at exactly H is kept.
    s = roi_align_sampling_points((0, 2, 1, 6), (1, 1), 1.0, 2, False, feature_shape=(4, 4))
    np.testing.assert_allclose(s["points"][0, 0][:, 1], [3, 3, 5, 5])
    np.testing.assert_array_equal(s["valid"][0, 0], [True, True, False, False])


def _bilinear_taps(y, x, h, w):
    """The four (row, col, weight) taps of a kept sample, clamped as the kernel does."""

    def axis(v, n):
        v = max(v, 0.0)
        lo = int(v)
        if lo >= n - 1:
            return n - 1, n - 1, 0.0
        return lo, lo + 1, v - lo

    yl, yh, ly = axis(y, h)
    xl, xh, lx = axis(x, w)
    return [(yl, xl, (1 - ly) * (1 - lx)), (yl, xh, (1 - ly) * lx),
            (yh, xl, ly * (1 - lx)), (yh, xh, ly * lx)]


def test_roi_align_sampling_points_agree_with_torchvision(torch, torchvision):
    # Put a one-hot "probe" in each feature cell: roi_align's output is then the bilinear weight of that
    # cell summed over the bin's samples / count — recompute those weights from our sample points.
    rng = np.random.default_rng(0)
    h, w = 6, 7
    for _ in range(20):
        x1, y1 = rng.uniform(-2, 5, size=2)
        box = (x1, y1, x1 + rng.uniform(0.2, 6), y1 + rng.uniform(0.2, 5))
        sampling, aligned = int(rng.integers(-1, 3)), bool(rng.integers(2))
        probes = torch.eye(h * w, dtype=torch.float64).reshape(h * w, h, w)[None]
        out = torchvision.ops.roi_align(probes, [torch.tensor([box], dtype=torch.float64)], (2, 3), 1.0,
                                        sampling, aligned)[0].numpy()
        s = roi_align_sampling_points(box, (2, 3), 1.0, sampling, aligned, feature_shape=(h, w))
        ours = np.zeros((h * w, 2, 3))
        for ph in range(2):
            for pw in range(3):
                for (x, y), ok in zip(s["points"][ph, pw], s["valid"][ph, pw]):
                    if ok:  # dropped samples add nothing (but count)
                        for yy, xx, wt in _bilinear_taps(y, x, h, w):
                            ours[yy * w + xx, ph, pw] += wt / s["count"]
        np.testing.assert_allclose(ours, out, atol=1e-12)


def test_draw_roi_sampling_renders_both_panels():
    fig = draw_roi_sampling((6, 8), (4.2, 3.1, 25.3, 17.9), (2, 2), 0.25, 2, aligned=True)
    pixels = _png_pixels(fig)
    left, right = pixels[:, : pixels.shape[1] // 2], pixels[:, pixels.shape[1] // 2:]
    # Both panels hold coloured (non-grey) marks: shaded bins on the left, sample points on the right.
    for panel in (left, right):
        saturation = panel.max(axis=2) - panel.min(axis=2)
        assert (saturation > 60).sum() > 100
    assert len(fig.axes[1].collections) >= 4  # one scatter per bin at least


def test_draw_roi_sampling_three_panels_and_a_footprint():
    # Sample (iy, ix) = (1, 0) of bin (0, 0) is point 2 of roi_align_sampling_points (row-major grid); each
    # RoIAlign panel labels the cells of its bilinear read with roi_align's own weights.
    from minimaskrcnn.ops.roi_align import _bilinear_weights

    box, scale = (4.2, 3.1, 25.3, 17.9), 0.25
    fig = draw_roi_sampling((6, 8), box, (2, 2), scale, 2, aligned=(False, True), footprint=(0, 0, 1, 0))
    assert len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes] == ["RoIPool: quantised bins",
                                                   "RoIAlign: sampling points (aligned=False)",
                                                   "RoIAlign: sampling points (aligned=True)"]
    for ax, aligned in zip(fig.axes[1:], (False, True)):
        x, y = roi_align_sampling_points(box, (2, 2), scale, 2, aligned, (6, 8))["points"][0, 0, 2]
        *_, w1, w2, w3, w4 = _bilinear_weights(y, x, 6, 8, float)
        caption = ax.get_xlabel().split("\n")[1]
        labels = sorted(float(part.split(") ")[1]) for part in caption.split(", ("))
        np.testing.assert_allclose(labels, sorted(round(w, 2) for w in (w1, w2, w3, w4)))
        assert abs(sum(labels) - 1) < 0.03  # the four weights of an in-map sample sum to one
    with pytest.raises(ValueError, match="footprint"):
        draw_roi_sampling((6, 8), box, (2, 2), scale, 2, aligned=True, footprint=(0, 0, 2, 0))


def test_plot_pr_curves():
    recall = np.linspace(0, 1, 101)
    precision = np.stack([1 - 0.5 * recall**2, np.where(recall > 0.8, -1.0, 0.9)])
    fig = plot_pr_curves(precision, recall, ["a", "b"])
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["a", "b"]
    assert np.isnan(ax.lines[1].get_ydata()[-1])  # −1 means "no data", not precision −1
    assert _png_pixels(fig).std() > 0
    with pytest.raises(ValueError, match="precision"):
        plot_pr_curves(precision[:, :50], recall, ["a", "b"])


def test_show_masks_grid_places_masks_in_cells():
    masks = np.zeros((3, 16, 16), dtype=bool)
    masks[0, :8] = True
    masks[2, :, 8:] = True
    pixels = _png_pixels(show_masks_grid(masks, ncols=3, cell_px=32))
    assert pixels.shape == (32, 96, 3)
    grey = pixels.mean(axis=2)
    assert grey[4:12, 4:28].min() > 200 and grey[20:28, 4:28].max() < 50  # cell 0: top half white
    assert grey[:, 36:60].max() < 50  # cell 1 empty
    assert grey[4:28, 84:92].min() > 200 and grey[4:28, 68:76].max() < 50  # cell 2: right half white


def test_show_samples_grid():
    ds = ShapesDataset(4, seed=0)
    fig = show_samples_grid(list(ds), ds.class_names, ncols=2, cell_px=64)
    assert len(fig.axes) == 4 and _png_pixels(fig).shape == (128, 128, 3)
    assert math.isclose(fig.get_figwidth(), 1.28)


def test_draw_boxes_colours_alphas_and_captions():
    boxes = np.array([[8, 8, 24, 24], [2, 2, 12, 30]], dtype=float)
    grey = np.full((32, 32, 3), 200, np.uint8)
    plain = _png_pixels(draw_boxes(grey, np.zeros((0, 4))))
    drawn = _png_pixels(draw_boxes(grey, boxes[:1], colors="red"))
    changed = np.abs(drawn - plain).sum(axis=2) > 30
    # The left edge of the box (x = 8 → figure columns 32..35 at scale 4) turned red; the inside did not.
    edge = drawn[40:90, 30:35]
    assert (edge[..., 0] - edge[..., 1] > 100).any(axis=1).mean() > 0.9
    assert not changed[44:90, 40:90].any()
    # An alpha of 0 draws nothing; captions become texts.
    faint = _png_pixels(draw_boxes(grey, boxes[:1], colors="red", alphas=[0.0]))
    assert np.abs(faint - plain).max() <= 2
    fig = draw_boxes(np.zeros((32, 32, 3)), boxes, colors=["yellow", "navy"], captions=["a", "b"])
    texts = fig.axes[0].texts
    assert [t.get_text() for t in texts] == ["a", "b"]
    assert [t.get_color() for t in texts] == ["black", "white"]  # readable on a light and a dark colour
    with pytest.raises(ValueError, match="colors"):
        draw_boxes(np.zeros((32, 32, 3)), boxes, colors=["red", "blue", "green"])
    with pytest.raises(ValueError, match="alphas"):
        draw_boxes(np.zeros((32, 32, 3)), boxes, alphas=[1.0])


def test_draw_box_refinement_dashed_before_solid_after():
    before, after = np.array([[4.0, 4.0, 14.0, 14.0]]), np.array([[16.0, 16.0, 30.0, 30.0]])
    fig = draw_box_refinement(np.zeros((32, 32, 3)), before, after, colors=["lime"])
    ax = fig.axes[0]
    assert [p.get_linestyle() for p in ax.patches] == ["--", "-"]
    np.testing.assert_allclose(ax.lines[0].get_xydata(), [[9, 9], [23, 23]])  # centre to centre
    pixels = _png_pixels(fig)
    green = (pixels[..., 1] > 150) & (pixels[..., 0] < 100)
    assert green[16 * 4:30 * 4, 16 * 4 - 2:16 * 4 + 2].any(axis=1).mean() > 0.9  # solid edge of "after"
    with pytest.raises(ValueError, match="before and after"):
        draw_box_refinement(np.zeros((32, 32, 3)), before, np.zeros((2, 4)))
