"""Anchors: the fixed reference boxes the RPN classifies and regresses from.

At every location of a feature map with stride s (one feature cell = s x s image pixels) the RPN
looks at A anchors, one per (size, aspect ratio) pair. Aspect ratio means **h / w**, and an anchor of
size S and ratio r has area ~S^2: h = S * sqrt(r), w = S / sqrt(r).

Two conventions exist and tutorials mix them up, so both are here:

1. ``AnchorGenerator`` (torchvision, Detectron2, this package). Cell anchors are centred on 0:
   ``round((-w/2, -h/2, w/2, h/2))`` with round-half-to-even; location (row y, column x) shifts them
   by ``(x*s, y*s)`` - the anchor centre sits on the *top-left corner* of the feature cell, with no
   +0.5. Size 32, ratio 1 at location (0, 0): (-16, -16, 16, 16), width 32 (no "+1").

2. ``legacy_anchors`` (py-faster-rcnn, the original Faster R-CNN code): a 16 x 16 base box
   (0, 0, 15, 15) in *inclusive integer pixel* coordinates (width = x2 - x1 + 1 = 16, centre 7.5),
   reshaped to each ratio with a rounded width, then scaled by 8, 16, 32. Its first anchor is
   (-84, -40, 99, 55): width 99 - (-84) + 1 = 184 = 23 * 8 and height 96 = 12 * 8, centred on 7.5.
   Those numbers are *not* valid boxes in convention 1 (there they would be 183 wide).
"""

from __future__ import annotations

import numpy as np

from .._checks import pair


class AnchorGenerator:
    """torchvision's ``AnchorGenerator``: A = len(sizes[l]) * len(aspect_ratios[l]) anchors per location.

    Args:
        sizes: one tuple of anchor sizes (pixels, the square root of the area) per feature level,
            e.g. ``((32,), (64,), (128,), (256,), (512,))`` for FPN. A flat tuple ``(32, 64)`` means
            one size per level, as in torchvision.
        aspect_ratios: one tuple of ratios h/w per level, e.g. ``((0.5, 1.0, 2.0),) * 5``; a flat
            tuple is used for every level.

    Example (one level, size 32, ratios (0.5, 1, 2)): sqrt(0.5) = 0.7071, so the ratio-0.5 anchor is
    w = 32 / 0.7071 = 45.25, h = 32 * 0.7071 = 22.63, i.e. round(-22.63, -11.31, 22.63, 11.31) =
    (-23, -11, 23, 11); ratio 1 gives (-16, -16, 16, 16); ratio 2 gives (-11, -23, 11, 23).
    """

    def __init__(self, sizes=((128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),)):
        sizes = tuple(sizes)
        aspect_ratios = tuple(aspect_ratios)
        if len(sizes) == 0:
            raise ValueError("sizes must hold at least one level")
        if not isinstance(sizes[0], (list, tuple)):
            sizes = tuple((s,) for s in sizes)
        if len(aspect_ratios) == 0:
            raise ValueError("aspect_ratios must hold at least one ratio")
        if not isinstance(aspect_ratios[0], (list, tuple)):
            aspect_ratios = (aspect_ratios,) * len(sizes)
        if len(aspect_ratios) != len(sizes):
            raise ValueError(f"aspect_ratios must have one tuple per level ({len(sizes)}), "
                             f"got {len(aspect_ratios)}")
        for level, (ss, rs) in enumerate(zip(sizes, aspect_ratios)):
            if len(ss) == 0 or any(not np.isfinite(s) or s <= 0 for s in ss):
                raise ValueError(f"sizes[{level}] must be non-empty positive numbers, got {ss!r}")
            if len(rs) == 0 or any(not np.isfinite(r) or r <= 0 for r in rs):
                raise ValueError(f"aspect_ratios[{level}] must be non-empty positive numbers, got {rs!r}")
        self.sizes = tuple(tuple(s) for s in sizes)
        self.aspect_ratios = tuple(tuple(r) for r in aspect_ratios)
        self.cell_anchors = [cell_anchors(s, r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def num_anchors_per_location(self) -> list[int]:
        """A for every level: ``len(sizes[l]) * len(aspect_ratios[l])``."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def grid_anchors(self, image_size, feature_sizes, dtype=np.float32) -> list[np.ndarray]:
        """Anchors of every level, tiled over its feature map.

        Args:
            image_size: ``(H, W)`` of the (padded) input batch, in pixels.
            feature_sizes: one ``(h, w)`` per level; the stride of a level is
                ``(H // h, W // w)`` (integer division, as in torchvision).
            dtype: float32 (default) or float64 for the returned arrays.

        Returns:
            list with one (h * w * A, 4) array ``(x1, y1, x2, y2)`` per level. Row
            ``(y * w + x) * A + a`` is cell anchor a at feature location (y, x): location-major
            (row-major over the map), then the A cell anchors in (ratio, size) order.
        """
        image_h, image_w = pair(image_size, "image_size", minimum=1)
        feature_sizes = list(feature_sizes)
        if len(feature_sizes) != len(self.cell_anchors):
            raise ValueError(f"feature_sizes must have one (h, w) per level ({len(self.cell_anchors)}), "
                             f"got {len(feature_sizes)}")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        anchors = []
        for level, (size, base) in enumerate(zip(feature_sizes, self.cell_anchors)):
            grid_h, grid_w = pair(size, f"feature_sizes[{level}]", minimum=1)
            stride_h, stride_w = image_h // grid_h, image_w // grid_w
            # 1. the top-left corner of every feature cell, in image pixels (integers, exact)
            shift_x = np.arange(grid_w, dtype=np.int64) * stride_w
            shift_y = np.arange(grid_h, dtype=np.int64) * stride_h
            shift_y, shift_x = np.meshgrid(shift_y, shift_x, indexing="ij")
            shifts = np.stack((shift_x.ravel(), shift_y.ravel(), shift_x.ravel(), shift_y.ravel()), axis=1)
            # 2. every cell anchor moved to every corner: (locations, A, 4) -> (locations * A, 4)
            tiled = shifts[:, None, :].astype(dtype) + base.astype(dtype)[None, :, :]
            anchors.append(tiled.reshape(-1, 4))
        return anchors


def cell_anchors(sizes, aspect_ratios) -> np.ndarray:
    """The A zero-centred anchors of one level, (len(aspect_ratios) * len(sizes), 4) float32.

    Computed in float32 like torchvision (which builds them in float32 before casting), so that
    rounding of values near .5 agrees with it. Order: for each ratio, for each size.
    """
    scales = np.asarray(sizes, dtype=np.float32)
    ratios = np.asarray(aspect_ratios, dtype=np.float32)
    h_ratios = np.sqrt(ratios)
    w_ratios = np.float32(1) / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).ravel()
    hs = (h_ratios[:, None] * scales[None, :]).ravel()
    base = np.stack((-ws, -hs, ws, hs), axis=1) / np.float32(2)
    return np.round(base)  # numpy rounds half to even, like torch.round


def legacy_anchors(base_size: int = 16, ratios=(0.5, 1.0, 2.0), scales=(8, 16, 32)) -> np.ndarray:
    """py-faster-rcnn's ``generate_anchors``: (len(ratios) * len(scales), 4) float64, inclusive pixels.

    Kept as a documented contrast (see the module docstring); the model never uses it.
    In this convention a box (x1, y1, x2, y2) covers the integer pixels x1..x2, so its width is
    ``x2 - x1 + 1`` and its centre ``x1 + 0.5 * (w - 1)``.

    Steps, with the default arguments:
    1. base box (0, 0, 15, 15): w = h = 16, centre (7.5, 7.5), area 256.
    2. for each ratio r: w = round(sqrt(256 / r)), h = round(w * r) (numpy rounding, half to even):
       r = 0.5 -> w = round(22.63) = 23, h = round(11.5) = 12; r = 1 -> 16 x 16;
       r = 2 -> w = round(11.31) = 11, h = 22.
    3. for each scale k: w*k by h*k around the same centre, corners centre -/+ 0.5 * (size - 1).
       r = 0.5, k = 8: 184 x 96 -> (7.5 - 91.5, 7.5 - 47.5, 7.5 + 91.5, 7.5 + 47.5) = (-84, -40, 99, 55).
    """
    base_w = base_h = float(base_size)
    ctr_x = ctr_y = 0.5 * (base_size - 1)
    rows = []
    for r in ratios:
        w = np.round(np.sqrt(base_w * base_h / r))
        h = np.round(w * r)
        for k in scales:
            ws, hs = w * k, h * k
            rows.append((ctr_x - 0.5 * (ws - 1), ctr_y - 0.5 * (hs - 1),
                         ctr_x + 0.5 * (ws - 1), ctr_y + 0.5 * (hs - 1)))
    return np.array(rows, dtype=np.float64)
