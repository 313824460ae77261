"""Drawing with matplotlib, headless: every function returns a ``matplotlib.figure.Figure``.

Figures are built with the object-oriented API (``Figure`` + the Agg canvas), never with pyplot's
global state, so nothing here needs a display and nothing leaks between calls. Save with
``fig.savefig(path)``; in a notebook a returned Figure displays itself.

Frames: images are drawn with pixel (row i, column j) covering ``[j, j+1) × [i, i+1)``, so a box
(x1, y1, x2, y2) in the package's continuous pixel coordinates lands exactly on the pixel edges it
names. ``draw_instances`` and ``draw_anchors`` on their own figure map one image pixel to ``scale``
× ``scale`` figure pixels at ``dpi`` (100), which is what lets tests find the drawn pixels.

The RoI sampling helpers (:func:`roi_pool_bins`, :func:`roi_align_sampling_points`) are public so a
notebook can print the numbers behind the picture; they follow torchvision's kernels.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba_array
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

__all__ = [
    "PALETTE",
    "draw_instances",
    "draw_anchors",
    "draw_boxes",
    "draw_box_refinement",
    "roi_pool_bins",
    "roi_align_sampling_points",
    "draw_roi_sampling",
    "plot_pr_curves",
    "show_masks_grid",
    "show_samples_grid",
]

#: Distinct colours (RGB in [0, 1]) cycled over instances.
PALETTE = np.array([
    [0.90, 0.10, 0.10], [0.10, 0.60, 0.95], [0.20, 0.80, 0.20], [1.00, 0.60, 0.00],
    [0.60, 0.20, 0.90], [0.00, 0.80, 0.80], [0.95, 0.20, 0.70], [0.60, 0.60, 0.10],
    [0.40, 0.25, 0.10], [0.50, 0.50, 0.95],
])
_DPI = 100


def _new_figure(width_px: float, height_px: float) -> tuple[Figure, object]:
    """A figure exactly width_px × height_px pixels at _DPI, with one axes filling it."""
    fig = Figure(figsize=(width_px / _DPI, height_px / _DPI), dpi=_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    return fig, ax


def _as_rgb_image(image, name: str = "image") -> np.ndarray:
    """(H, W, 3) or (H, W) uint8 / float in [0, 1] → (H, W, 3) float64 in [0, 1]."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"{name} must have shape (H, W, 3) or (H, W), got {image.shape}")
    image = image[..., :3]
    if image.dtype == np.uint8:
        return image.astype(np.float64) / 255.0
    if np.issubdtype(image.dtype, np.floating):
        return np.clip(image.astype(np.float64), 0.0, 1.0)
    raise TypeError(f"{name} must be uint8 or float in [0, 1], got dtype {image.dtype}")


def _prepare_axes(ax, image: np.ndarray, scale: float):
    h, w = image.shape[:2]
    if ax is None:
        fig, ax = _new_figure(w * scale, h * scale)
    else:
        fig = ax.figure
    ax.imshow(image, extent=(0, w, h, 0), interpolation="nearest")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()
    return fig, ax


def draw_instances(image, boxes, labels, scores=None, masks=None, class_names=None, ax=None, *,
                   alpha: float = 0.5, scale: float = 4.0, show_text: bool = True,
                   colors=None, mask_style: str = "fill") -> Figure:
    """Image with instance masks (tinted, or outlined), boxes and "class score" captions.

    image (H, W, 3) uint8 or float in [0, 1]; boxes (K, 4) (x1, y1, x2, y2) pixels; labels (K,) ints
    (named through ``class_names[label]`` when given); scores (K,) or None; masks (K, H, W) bool (or
    probabilities, thresholded at 0.5) or None. ``ax``: draw into an existing axes (returns its
    figure); otherwise a new figure of (W·scale) × (H·scale) pixels. Each instance k gets
    ``colors[k]`` or ``PALETTE[k % len(PALETTE)]``; with ``mask_style="fill"`` a mask pixel becomes
    (1 − alpha)·image + alpha·colour, with ``"outline"`` each mask's boundary is drawn in its colour
    instead (the image stays untouched: overlapping or duplicate masks stay readable).
    """
    if mask_style not in ("fill", "outline"):
        raise ValueError(f"mask_style must be 'fill' or 'outline', got {mask_style!r}")
    img = _as_rgb_image(image)
    h, w = img.shape[:2]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1)
    k = len(boxes)
    if len(labels) != k:
        raise ValueError(f"labels must have one entry per box ({k}), got {len(labels)}")
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(scores) != k:
            raise ValueError(f"scores must have one entry per box ({k}), got {len(scores)}")
    if colors is None:
        colors = PALETTE[np.arange(k) % len(PALETTE)]
    colors = np.asarray(colors, dtype=np.float64).reshape(-1, 3)
    if masks is not None:
        masks = np.asarray(masks)
        if masks.shape != (k, h, w):
            raise ValueError(f"masks must have shape ({k}, {h}, {w}), got {masks.shape}")
        binary = masks if masks.dtype == bool else masks >= 0.5
        if mask_style == "fill":
            img = img.copy()
            for i in range(k):
                img[binary[i]] = (1 - alpha) * img[binary[i]] + alpha * colors[i]
    fig, ax = _prepare_axes(ax, img, scale)
    if masks is not None and mask_style == "outline":
        for i in range(k):
            if binary[i].any() and not binary[i].all():
                ax.contour(binary[i].astype(np.float64), levels=[0.5], colors=[colors[i]], linewidths=1.2)
    for i in range(k):
        x1, y1, x2, y2 = boxes[i]
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colors[i], linewidth=1.5))
        if show_text:
            name = class_names[int(labels[i])] if class_names is not None else str(int(labels[i]))
            text = name if scores is None else f"{name} {scores[i]:.2f}"
            # Above the box, or just inside it when the box touches the top of the image.
            above = y1 >= 0.08 * h
            ax.text(x1, y1, text, color=_text_colour(colors[i]), fontsize=7,
                    va="bottom" if above else "top", ha="left",
                    bbox={"facecolor": colors[i], "alpha": 0.8, "pad": 1, "edgecolor": "none"})
    return fig


def draw_anchors(image, anchors, ax=None, *, center=None, colors=None, scale: float = 4.0,
                 linewidth: float = 1.0) -> Figure:
    """Anchors at one location drawn over the image.

    image (H, W, 3) or (H, W), or an int pair (H, W) for a blank grey canvas; anchors (A, 4)
    (x1, y1, x2, y2) pixels, typically the A anchors of one feature-map location (they may stick out
    of the image: the view grows to show them). ``center`` (x, y) marks the location (default: the
    centre of the first anchor). Colours cycle over ``colors`` or PALETTE.
    """
    if isinstance(image, tuple) and len(image) == 2:
        image = np.full((int(image[0]), int(image[1]), 3), 0.85)
    img = _as_rgb_image(image)
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 4)
    if colors is None:
        colors = PALETTE[np.arange(len(anchors)) % len(PALETTE)]
    fig, ax = _prepare_axes(ax, img, scale)
    h, w = img.shape[:2]
    for a, colour in zip(anchors, colors):
        ax.add_patch(Rectangle((a[0], a[1]), a[2] - a[0], a[3] - a[1], fill=False, edgecolor=colour,
                               linewidth=linewidth))
    if len(anchors):
        if center is None:
            center = ((anchors[0, 0] + anchors[0, 2]) / 2, (anchors[0, 1] + anchors[0, 3]) / 2)
        ax.plot([center[0]], [center[1]], marker="+", color="black", markersize=8)
        ax.set_xlim(min(0, anchors[:, 0].min()), max(w, anchors[:, 2].max()))
        ax.set_ylim(max(h, anchors[:, 3].max()), min(0, anchors[:, 1].min()))
    return fig


def _box_colours(colors, k: int) -> np.ndarray:
    """(k, 4) RGBA: ``colors`` is None (PALETTE cycled), one colour, or k colours."""
    if colors is None:
        return to_rgba_array(PALETTE[np.arange(k) % len(PALETTE)]) if k else np.zeros((0, 4))
    rgba = to_rgba_array(colors)
    if len(rgba) == 1:
        return np.repeat(rgba, k, axis=0)
    if len(rgba) != k:
        raise ValueError(f"colors must be one colour or one per box ({k}), got {len(rgba)}")
    return rgba


def draw_boxes(image, boxes, ax=None, *, colors=None, alphas=None, captions=None, linestyle: str = "-",
               linewidth: float = 1.0, scale: float = 4.0, fontsize: float = 6.0) -> Figure:
    """Plain box outlines over an image: proposals, sampled anchors, RoIs.

    image (H, W, 3) or (H, W); boxes (K, 4) (x1, y1, x2, y2) pixels (clipped to the view when they
    stick out). ``colors``: one colour (any matplotlib spec) for every box, K colours, or None
    (PALETTE cycled). ``alphas`` (K,) opacity of each outline in [0, 1] (e.g. a score), default 1.
    ``captions``: K strings written at the boxes' top-left corners (``fontsize`` points), or None.
    ``ax``: draw into an existing axes (returns its figure); otherwise a new (W·scale) × (H·scale)
    figure.
    """
    img = _as_rgb_image(image)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    k = len(boxes)
    rgba = _box_colours(colors, k)
    if alphas is not None:
        alphas = np.asarray(alphas, dtype=np.float64).reshape(-1)
        if len(alphas) != k:
            raise ValueError(f"alphas must have one entry per box ({k}), got {len(alphas)}")
        rgba = rgba.copy()
        rgba[:, 3] = np.clip(alphas, 0.0, 1.0)
    if captions is not None and len(captions) != k:
        raise ValueError(f"captions must have one entry per box ({k}), got {len(captions)}")
    fig, ax = _prepare_axes(ax, img, scale)
    _add_boxes(ax, boxes, rgba, linestyle, linewidth, captions, fontsize)
    return fig


def _text_colour(rgb) -> str:
    """Black text on light colours (luminance > 0.6), white text on dark ones."""
    return "black" if float(np.dot(np.asarray(rgb)[:3], (0.299, 0.587, 0.114))) > 0.6 else "white"


def _add_boxes(ax, boxes: np.ndarray, rgba: np.ndarray, linestyle: str, linewidth: float, captions=None,
               fontsize: float = 6.0):
    for i in range(len(boxes)):
        x1, y1, x2, y2 = boxes[i]
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=rgba[i],
                               linestyle=linestyle, linewidth=linewidth))
        if captions is not None:
            ax.text(x1, y1, str(captions[i]), color=_text_colour(rgba[i]), fontsize=fontsize,
                    va="bottom", ha="left",
                    bbox={"facecolor": rgba[i, :3], "alpha": 0.8, "pad": 0.5, "edgecolor": "none"})


def draw_box_refinement(image, before, after, ax=None, *, colors=None, linewidth: float = 1.5,
                        scale: float = 4.0) -> Figure:
    """What a regression head did to each box: ``before`` (K, 4) dashed, ``after`` (K, 4) solid in the
    same colour, and a thin line from the centre of one to the centre of the other.

    Used for anchor → RPN proposal and proposal → detection (box-head refinement). Colours as in
    :func:`draw_boxes`; ``ax`` and ``scale`` as there.
    """
    before = np.asarray(before, dtype=np.float64).reshape(-1, 4)
    after = np.asarray(after, dtype=np.float64).reshape(-1, 4)
    if before.shape != after.shape:
        raise ValueError(f"before and after must both be (K, 4), got {before.shape} and {after.shape}")
    rgba = _box_colours(colors, len(before))
    fig, ax = _prepare_axes(ax, _as_rgb_image(image), scale)
    _add_boxes(ax, before, rgba, "--", linewidth)
    _add_boxes(ax, after, rgba, "-", linewidth)
    for b, a, c in zip(before, after, rgba):
        ax.plot([(b[0] + b[2]) / 2, (a[0] + a[2]) / 2], [(b[1] + b[3]) / 2, (a[1] + a[3]) / 2], color=c,
                linewidth=0.8, marker=".", markersize=3)
    return fig


def _c_round(x: float) -> int:
    """C's round(): halves away from zero (numpy's np.round goes to even)."""
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def roi_pool_bins(box, output_size, spatial_scale: float, feature_shape) -> np.ndarray:
    """The feature cells each RoIPool bin maxes over, as torchvision's kernel computes them.

    box (x1, y1, x2, y2) image pixels; output_size (PH, PW); feature_shape (H, W) of the map.
    Returns (PH, PW, 4) int64 ``[hstart, hend, wstart, wend]``: bin (ph, pw) covers rows
    hstart..hend−1 and columns wstart..wend−1 (empty when hend ≤ hstart or wend ≤ wstart).

    1. Quantise the box: x1r = round(x1·s) with C rounding (halves away from zero), etc.
    2. roi_w = max(x2r − x1r + 1, 1) (inclusive of both end cells); bin_w = roi_w / PW.
    3. wstart = floor(pw·bin_w) + x1r, wend = ceil((pw + 1)·bin_w) + x1r, clipped to [0, W].
    """
    ph_n, pw_n = _pair(output_size)
    height, width = feature_shape
    x1, y1, x2, y2 = (_c_round(float(v) * spatial_scale) for v in box)
    roi_w, roi_h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
    bin_w, bin_h = roi_w / pw_n, roi_h / ph_n
    out = np.zeros((ph_n, pw_n, 4), dtype=np.int64)
    for ph in range(ph_n):
        hs = min(max(math.floor(ph * bin_h) + y1, 0), height)
        he = min(max(math.ceil((ph + 1) * bin_h) + y1, 0), height)
        for pw in range(pw_n):
            ws = min(max(math.floor(pw * bin_w) + x1, 0), width)
            we = min(max(math.ceil((pw + 1) * bin_w) + x1, 0), width)
            out[ph, pw] = (hs, he, ws, we)
    return out


def roi_align_sampling_points(box, output_size, spatial_scale: float, sampling_ratio: int,
                              aligned: bool, feature_shape=None):
    """Where RoIAlign samples the feature map, as torchvision's kernel computes it.

    box (x1, y1, x2, y2) image pixels; output_size (PH, PW). Returns a dict:

    - ``points`` (PH, PW, gh·gw, 2): the (x, y) sample positions in the *sampling frame*, where
      feature cell (i, j) has its centre at (j, i) (bilinear interpolation reads cell j at x = j).
      Add 0.5 to draw them on a grid whose cell j spans [j, j+1).
    - ``start`` (x, y), ``bin_size`` (bin_w, bin_h), ``grid`` (gh, gw) and ``count`` = max(gh·gw, 1),
      the divisor of the average.
    - ``valid`` (PH, PW, gh·gw) bool when ``feature_shape`` (H, W) is given: False for samples with
      y < −1 or y > H (or x), which add 0 but still count.

    1. off = 0.5 if aligned else 0; start = x1·s − off; roi_w = x2·s − off − start (≥ 1 unless aligned).
    2. bin_w = roi_w / PW; gw = sampling_ratio if > 0 else ceil(roi_w / PW).
    3. sample (iy, ix) of bin (ph, pw): y = start_y + ph·bin_h + (iy + 0.5)·bin_h / gh (same for x).
    """
    ph_n, pw_n = _pair(output_size)
    off = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (float(v) * spatial_scale - off for v in box)
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
    bin_w, bin_h = roi_w / pw_n, roi_h / ph_n
    gh = sampling_ratio if sampling_ratio > 0 else max(math.ceil(roi_h / ph_n), 0)
    gw = sampling_ratio if sampling_ratio > 0 else max(math.ceil(roi_w / pw_n), 0)
    iy, ix = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    iy, ix = iy.ravel(), ix.ravel()
    ph = np.arange(ph_n)[:, None, None]
    pw = np.arange(pw_n)[None, :, None]
    ys = y1 + ph * bin_h + (iy + 0.5) * bin_h / max(gh, 1)
    xs = x1 + pw * bin_w + (ix + 0.5) * bin_w / max(gw, 1)
    ys, xs = np.broadcast_arrays(ys, xs)
    points = np.stack([xs, ys], axis=-1)
    result = {"points": points, "start": (x1, y1), "bin_size": (bin_w, bin_h), "grid": (gh, gw),
              "count": max(gh * gw, 1)}
    if feature_shape is not None:
        height, width = feature_shape
        result["valid"] = (ys >= -1) & (ys <= height) & (xs >= -1) & (xs <= width)
    return result


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


def draw_roi_sampling(feature_shape, box, output_size=(2, 2), spatial_scale: float = 1.0,
                      sampling_ratio: int = 2, aligned=False, footprint=None) -> Figure:
    """RoIPool's quantised bins (first panel) beside RoIAlign's bins and sampling points.

    feature_shape (H, W) of the feature map; box (x1, y1, x2, y2) in image pixels (scaled by
    ``spatial_scale`` onto the map); output_size (PH, PW); sampling_ratio and aligned as in
    ``roi_align`` -- ``aligned`` may also be a sequence, e.g. ``(False, True)``: one RoIAlign panel
    each. Every panel shows the map as a grid whose cell j spans [j, j+1) and the exact scaled box
    (dashed). RoIPool panel: the cells each bin covers (bins may overlap or be empty). RoIAlign
    panels: the bins and sample points; a sample at sampling-frame x sits at x + 0.5 on this grid,
    so with ``aligned=False`` the points sit half a cell right of / below the box -- the
    misalignment that ``aligned=True`` removes. Samples that RoIAlign drops are drawn hollow.
    ``footprint=(ph, pw, iy, ix)``: in each RoIAlign panel, sample (iy, ix) of bin (ph, pw) is
    ringed and the (up to) four cells its bilinear read takes are shaded by their weight (roi_align's
    step 5), which the panel's x label lists.
    """
    from minimaskrcnn.ops.roi_align import _bilinear_weights

    height, width = feature_shape
    ph_n, pw_n = _pair(output_size)
    alignments = [bool(a) for a in aligned] if isinstance(aligned, (list, tuple)) else [bool(aligned)]
    bins = roi_pool_bins(box, output_size, spatial_scale, feature_shape)
    samplings = [roi_align_sampling_points(box, output_size, spatial_scale, sampling_ratio, a, feature_shape)
                 for a in alignments]
    if footprint is not None:  # checked before anything is drawn (the grid may differ per alignment)
        ph, pw, iy, ix = (int(v) for v in footprint)
        for samp in samplings:
            gh, gw = samp["grid"]
            if not (0 <= ph < ph_n and 0 <= pw < pw_n and 0 <= iy < gh and 0 <= ix < gw):
                raise ValueError(f"footprint must index a sample (ph < {ph_n}, pw < {pw_n}, iy < {gh}, "
                                 f"ix < {gw}), got {tuple(footprint)}")
    fig = Figure(figsize=(5 * (1 + len(alignments)), 5), dpi=_DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 1 + len(alignments))
    sx1, sy1, sx2, sy2 = (float(v) * spatial_scale for v in box)
    titles = ["RoIPool: quantised bins"] + [f"RoIAlign: sampling points (aligned={a})" for a in alignments]
    for ax, title in zip(axes, titles):
        for j in range(width + 1):
            ax.plot([j, j], [0, height], color="0.8", linewidth=0.6)
        for i in range(height + 1):
            ax.plot([0, width], [i, i], color="0.8", linewidth=0.6)
        ax.add_patch(Rectangle((sx1, sy1), sx2 - sx1, sy2 - sy1, fill=False, edgecolor="black",
                               linestyle="--", linewidth=1.5))
        ax.set_xlim(-1.5, width + 1.5)
        ax.set_ylim(height + 1.5, -1.5)
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=10)
    for ph in range(ph_n):
        for pw in range(pw_n):
            hs, he, ws, we = bins[ph, pw]
            colour = PALETTE[(ph * pw_n + pw) % len(PALETTE)]
            if he > hs and we > ws:
                axes[0].add_patch(Rectangle((ws, hs), we - ws, he - hs, facecolor=colour, alpha=0.35,
                                            edgecolor=colour, linewidth=1.5))
            for ax, samp in zip(axes[1:], samplings):
                # RoIAlign bin outline, drawn in the grid frame (+0.5, see the docstring).
                bx = samp["start"][0] + pw * samp["bin_size"][0] + 0.5
                by = samp["start"][1] + ph * samp["bin_size"][1] + 0.5
                ax.add_patch(Rectangle((bx, by), samp["bin_size"][0], samp["bin_size"][1], fill=False,
                                       edgecolor=colour, linewidth=1.2))
                pts = samp["points"][ph, pw] + 0.5
                valid = samp["valid"][ph, pw]
                ax.scatter(pts[valid, 0], pts[valid, 1], s=14, color=colour, zorder=3)
                ax.scatter(pts[~valid, 0], pts[~valid, 1], s=14, facecolors="none", edgecolors=colour,
                           zorder=3)
    if footprint is not None:
        ph, pw, iy, ix = (int(v) for v in footprint)
        for ax, samp in zip(axes[1:], samplings):
            gh, gw = samp["grid"]
            x, y = (float(v) for v in samp["points"][ph, pw, iy * gw + ix])
            ax.scatter([x + 0.5], [y + 0.5], s=120, facecolors="none", edgecolors="black", linewidths=1.5,
                       zorder=4)
            reads = _bilinear_weights(y, x, height, width, float)
            if reads is None:
                continue
            y_low, y_high, x_low, x_high, *weights = reads
            cells = {}
            corners = ((y_low, x_low), (y_low, x_high), (y_high, x_low), (y_high, x_high))
            for (r, c), wgt in zip(corners, weights):
                cells[r, c] = cells.get((r, c), 0.0) + wgt  # clamped reads at the border share a cell
            for (r, c), wgt in cells.items():
                ax.add_patch(Rectangle((c, r), 1, 1, facecolor="black", alpha=0.1 + 0.6 * wgt,
                                       edgecolor="black", linewidth=1.0, zorder=2))
            ax.set_xlabel("ringed sample reads cell (row, col) with weight:\n"
                          + ", ".join(f"({r}, {c}) {wgt:.2f}" for (r, c), wgt in sorted(cells.items())),
                          fontsize=9)
    return fig


def plot_pr_curves(precision, recall_thresholds, labels, ax=None, *, title: str | None = None) -> Figure:
    """Precision–recall curves, one per label.

    precision (N, R) (or a list of N arrays of length R): precision at each recall threshold, as in
    COCOeval's ``precision[t, :, k, a, m]``; entries −1 (no ground truth) are not drawn.
    recall_thresholds (R,) (COCO: 101 points 0, 0.01, ..., 1); labels: N legend entries.
    """
    recall_thresholds = np.asarray(recall_thresholds, dtype=np.float64).reshape(-1)
    precision = np.asarray(precision, dtype=np.float64)
    if precision.ndim == 1:
        precision = precision[None]
    if precision.ndim != 2 or precision.shape[1] != len(recall_thresholds):
        raise ValueError(f"precision must have shape (N, {len(recall_thresholds)}), got {precision.shape}")
    labels = list(labels)
    if len(labels) != len(precision):
        raise ValueError(f"labels must have {len(precision)} entries, got {len(labels)}")
    if ax is None:
        fig = Figure(figsize=(5, 4), dpi=_DPI)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    for curve, label in zip(precision, labels):
        ax.plot(recall_thresholds, np.where(curve < 0, np.nan, curve), label=str(label), linewidth=1.5)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    if labels:
        ax.legend(fontsize=8, loc="lower left")
    return fig


def _grid_figure(n: int, ncols: int, cell_px: float):
    ncols = max(1, min(ncols, max(n, 1)))
    nrows = max(1, math.ceil(n / ncols))
    fig = Figure(figsize=(ncols * cell_px / _DPI, nrows * cell_px / _DPI), dpi=_DPI)
    FigureCanvasAgg(fig)
    axes = [fig.add_axes((c / ncols, 1 - (r + 1) / nrows, 1 / ncols, 1 / nrows))
            for r in range(nrows) for c in range(ncols)]
    for ax in axes:
        ax.set_axis_off()
    return fig, axes


def show_masks_grid(masks, titles=None, ncols: int = 8, *, cell_px: float = 128.0) -> Figure:
    """A grid of masks (K, H, W) (bool, or float values shown in grey from 0 black to 1 white).

    ``titles``: optional K captions. Each cell is ``cell_px`` pixels square, cells touch, row-major.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (K, H, W), got {masks.shape}")
    fig, axes = _grid_figure(len(masks), ncols, cell_px)
    for i, m in enumerate(masks):
        axes[i].imshow(m.astype(np.float64), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        if titles is not None:
            axes[i].text(0.02, 0.98, str(titles[i]), transform=axes[i].transAxes, color="yellow",
                         fontsize=7, va="top")
    return fig


def show_samples_grid(samples, class_names=None, ncols: int = 4, *, cell_px: float = 256.0) -> Figure:
    """A grid of data-set items (dicts with image, boxes, labels, masks, optional scores) drawn with
    :func:`draw_instances`; ``class_names`` names the labels."""
    samples = list(samples)
    fig, axes = _grid_figure(len(samples), ncols, cell_px)
    for ax, s in zip(axes, samples):
        draw_instances(s["image"], s["boxes"], s["labels"], scores=s.get("scores"), masks=s.get("masks"),
                       class_names=class_names, ax=ax)
    return fig
