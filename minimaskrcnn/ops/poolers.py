"""Multi-scale RoIAlign: pool each RoI from the FPN level that suits its size (torchvision's
``MultiScaleRoIAlign``), and its backward into every level.

FPN (Lin et al. 2017, eq. 1) assigns a RoI of width w and height h (image pixels) to level

    k = floor(k0 + log2(sqrt(w·h) / 224) + eps),   clamped to [k_min, k_max],

so a 224×224 RoI (the ImageNet pre-training size) reads level k0 = 4 (stride 16), a RoI half that
size one level finer, and so on. ``eps = 1e-6`` keeps a RoI of exactly 112 or 448 pixels on the level
the formula means despite rounding in log2. Level k of the pyramid has stride 2**k, so its
``spatial_scale`` is 2**−k; the scales are inferred from the feature and image sizes as torchvision
does: scale = 2**round(log2(feature_height / image_height)), with the largest image of the batch.

Then every RoI is pooled with RoIAlign (or, for the paper's ablation, RoIPool: ``pooler="pool"``)
from its level's map, and the results are put back in the RoIs' original order. The backward splits
the output gradient by level again and scatters each part into its own level's map.
"""

from __future__ import annotations

import math

import numpy as np

from minimaskrcnn.ops._roi_common import check_features, check_output_size, rois_from_boxes
from minimaskrcnn.ops.roi_align import roi_align, roi_align_backward
from minimaskrcnn.ops.roi_pool import roi_pool, roi_pool_backward

__all__ = ["level_mapper", "infer_scales", "multiscale_roi_align", "multiscale_roi_align_backward"]

POOLERS = ("align", "pool")


def level_mapper(boxes, k_min: int, k_max: int, canonical_scale=224, canonical_level=4, eps=1e-6):
    """FPN level of each box, as an index into the list of levels (0 ↔ level k_min).

    Parameters
    ----------
    boxes : (K, 4) array (x1, y1, x2, y2) in image pixels, or a list of such arrays (concatenated
        in order). The arithmetic runs in the boxes' float dtype, as torchvision's does.
    k_min, k_max : the finest and coarsest pyramid levels available (e.g. 2 and 5 for P2-P5).

    Returns
    -------
    (K,) int64 array with values in [0, k_max − k_min]. A box with zero area goes to k_min
    (log2(0) = −inf); a reversed box (negative area, undefined in torchvision) also goes to k_min.
    """
    if isinstance(boxes, (list, tuple)):
        boxes = np.concatenate([np.asarray(b).reshape(-1, 4) for b in boxes]) if boxes else np.zeros((0, 4))
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (K, 4), got {boxes.shape}")
    if not np.issubdtype(boxes.dtype, np.floating):
        boxes = boxes.astype(np.float32)
    T = boxes.dtype.type
    # sqrt(w·h): the RoI's scale in image pixels.
    s = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.floor(canonical_level + np.log2(s / T(canonical_scale)) + T(eps))
    k = np.where(np.isnan(k), k_min, np.clip(k, k_min, k_max))
    return k.astype(np.int64) - int(k_min)


def infer_scales(feature_shapes, image_sizes):
    """Spatial scale of each level and (k_min, k_max), from the shapes alone, as torchvision does.

    feature_shapes : list of (N, C, H_l, W_l); image_sizes : list of (height, width) per image.
    scale_l = 2**round(log2(H_l / max_height)) (torchvision uses the height ratio; the log2 runs in
    float32 and round is half-to-even), k_min = int(−log2 scale_first), k_max = int(−log2 scale_last).
    """
    if not image_sizes:
        raise ValueError("image_sizes must hold one (height, width) per image, got an empty list")
    max_h = max(int(s[0]) for s in image_sizes)
    if max_h <= 0:
        raise ValueError(f"image_sizes must be positive, got {image_sizes!r}")
    scales = []
    for shp in feature_shapes:
        ratio = np.float32(float(shp[2]) / float(max_h))
        scales.append(2.0 ** float(np.round(np.log2(ratio))))
    k_min = int(-math.log2(np.float32(scales[0])))
    k_max = int(-math.log2(np.float32(scales[-1])))
    return scales, k_min, k_max


def multiscale_roi_align(features, boxes, image_sizes, output_size, sampling_ratio=2, *, canonical_scale=224,
                         canonical_level=4, aligned=False, pooler="align", backend="numba"):
    """Pool every RoI from its FPN level.

    Parameters
    ----------
    features : list of L arrays (N, C, H_l, W_l), finest level first, same N, C and dtype.
    boxes : list of N arrays (L_i, 4), (x1, y1, x2, y2) in image pixels, one per image.
    image_sizes : list of N (height, width) of the images the features were computed from (before
        padding is fine: torchvision passes the resized, unpadded sizes and rounds the ratio).
    output_size : int or (PH, PW).
    sampling_ratio, aligned : passed to every RoIAlign (torchvision: 2 and False).
    pooler : "align" (RoIAlign, the paper) or "pool" (quantized RoIPool, for the ablation; then
        ``sampling_ratio`` and ``aligned`` are unused).
    backend : "reference" | "numba" | "cuda", passed to the per-level op.

    Returns
    -------
    out : (K, C, PH, PW), K = sum of L_i, RoIs in the order of ``boxes``.
    cache : what ``multiscale_roi_align_backward`` needs.
    """
    if pooler not in POOLERS:
        raise ValueError(f"pooler must be one of {POOLERS}, got {pooler!r}")
    if not isinstance(features, (list, tuple)) or not features:
        raise ValueError("features must be a non-empty list of (N, C, H, W) arrays")
    feats = [check_features(f, f"features[{i}]") for i, f in enumerate(features)]
    N, C = feats[0].shape[:2]
    for i, f in enumerate(feats):
        if f.shape[:2] != (N, C) or f.dtype != feats[0].dtype:
            raise ValueError(f"features[{i}] must have N={N}, C={C} and dtype {feats[0].dtype} like "
                             f"features[0], got shape {f.shape} and dtype {f.dtype}")
    if not isinstance(boxes, (list, tuple)):
        raise ValueError("boxes must be a list of (L_i, 4) arrays, one per image")
    PH, PW = check_output_size(output_size)
    rois = rois_from_boxes(boxes, N, feats[0].dtype, "boxes")
    scales, k_min, k_max = infer_scales([f.shape for f in feats], image_sizes)

    # 1. Level of every RoI (a single map takes them all, as in torchvision).
    if len(feats) == 1:
        levels = np.zeros(rois.shape[0], dtype=np.int64)
    else:
        levels = level_mapper(rois[:, 1:], k_min, k_max, canonical_scale, canonical_level)
    # 2. Pool each level's RoIs from its map with its scale, writing back in the original order.
    out = np.zeros((rois.shape[0], C, PH, PW), dtype=feats[0].dtype)
    per_level = []
    for lvl, (f, scale) in enumerate(zip(feats, scales)):
        idx = np.flatnonzero(levels == lvl)
        argmax = None
        if pooler == "align":
            out[idx] = roi_align(f, rois[idx], (PH, PW), scale, sampling_ratio, aligned, backend=backend)
        else:
            out[idx], argmax = roi_pool(f, rois[idx], (PH, PW), scale, return_argmax=True, backend=backend)
        per_level.append((idx, rois[idx], f.shape, scale, argmax))
    cache = {"per_level": per_level, "output_size": (PH, PW), "sampling_ratio": sampling_ratio,
             "aligned": aligned, "pooler": pooler, "backend": backend, "num_rois": rois.shape[0]}
    return out, cache


def multiscale_roi_align_backward(dout, cache):
    """Gradient w.r.t. every level: a list of arrays shaped like ``features`` (zeros for a level that
    received no RoI). ``dout`` is (K, C, PH, PW)."""
    PH, PW = cache["output_size"]
    dout = check_features(dout, "dout")
    C = cache["per_level"][0][2][1]
    if dout.shape != (cache["num_rois"], C, PH, PW):
        raise ValueError(f"dout must have shape {(cache['num_rois'], C, PH, PW)}, got {dout.shape}")
    grads = []
    for idx, rois, shape, scale, argmax in cache["per_level"]:
        if cache["pooler"] == "align":
            grads.append(roi_align_backward(dout[idx], rois, shape, (PH, PW), scale, cache["sampling_ratio"],
                                            cache["aligned"], backend=cache["backend"]))
        else:
            grads.append(roi_pool_backward(dout[idx], rois, argmax, shape, backend=cache["backend"]))
    return grads
