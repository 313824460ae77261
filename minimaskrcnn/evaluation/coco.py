"""COCO detection / instance-segmentation metrics, equal to pycocotools' ``COCOeval``.

``coco_evaluate(coco_gt, detections, iou_type)`` takes the ground truth as a COCO instances dict
(``images``, ``annotations``, ``categories``) and the detections as a COCO results list (dicts with
``image_id``, ``category_id``, ``score`` and ``bbox`` [x, y, w, h] and/or ``segmentation`` RLE), and
returns the 12 summary numbers of ``COCOeval.summarize()`` together with the precision array behind
them. The algorithm, step by step (every detail below changes numbers in the last digits or more):

1. Group ground truths (GTs) and detections by (image, category). Per group, detections are sorted by
   score, highest first, with a *stable* mergesort (ties keep the order of the results list), and cut
   to the largest max-detections setting (100).
2. IoU of every detection with every GT of its group: box IoU on [x, y, w, h] boxes, or mask IoU on
   RLEs. Against a crowd GT (``iscrowd=1``) IoU = intersection / area(detection).
3. For every area range (all [0, 1e10], small [0, 32²], medium [32², 96²], large [96², 1e10], both
   ends inclusive) a GT is *ignored* when it is a crowd or its ``area`` field lies outside the range;
   ignored GTs are moved to the end (stable). For every IoU threshold t in linspace(.5, .95, 10)
   (looked up by index: the eighth is 0.8999999999999999, not 0.9) each detection, best first, takes
   the unmatched GT with the highest IoU >= t (on equal IoU the later GT wins; a crowd GT may take
   many detections); once it holds a non-ignored GT it never moves to an ignored one. A detection
   matched to an ignored GT, or unmatched with its own area outside the range, is ignored.
4. Per category, area range and max-detections m: pool the first m detections of every image, sort
   them by score (stable, images in increasing id order), accumulate true / false positives over the
   non-ignored detections, recall = TP / #non-ignored GTs, precision = TP / (TP + FP + eps). Precision
   is made monotone from the right (the PR curve's upper envelope); the interpolated precision at each
   of the 101 recall points r = 0, 0.01, ..., 1 is the precision at the first detection with recall
   >= r (``searchsorted(..., side="left")``), 0 where recall never reaches r. Categories without a
   non-ignored GT get -1 and are left out of every mean.
5. AP = mean of the interpolated precisions over recall points, IoU thresholds and categories; AR =
   mean over thresholds and categories of the final recall.

Detections follow pycocotools' ``loadRes``: a detection with a ``bbox`` gets area = w * h (even for
segm evaluation); one without gets the area of its mask and the box of its mask; ``iscrowd`` is 0.
A GT without ``iscrowd`` counts as 0. A GT's ``ignore`` key has no effect: pycocotools overwrites it
with ``iscrowd`` before matching, and so do we.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from numba import njit

from ..datasets import rle as _rle

__all__ = ["coco_evaluate", "voc_ap", "STAT_NAMES"]

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
# COCOeval builds these with linspace, not arange: arange's points drift slightly above the decimals.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
AREA_RANGES = {"all": (0.0, 1e10), "small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2),
               "large": (96.0**2, 1e10)}
# pycocotools caps IoU thresholds just below 1 so that a perfect match (IoU == 1.0) still counts
_MAX_IOU_THRESHOLD = 1 - 1e-10


# ----------------------------------------------------------------------------------------------------
# Input validation: every error names the annotation (or detection) and the field
# ----------------------------------------------------------------------------------------------------
def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _finite_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _check_xywh(box, where: str) -> list:
    if not isinstance(box, (list, tuple, np.ndarray)) or len(box) != 4 or not all(
            _finite_number(v) for v in box):
        raise ValueError(f"{where}: field 'bbox' must be 4 finite numbers [x, y, w, h], got {box!r}")
    if box[2] < 0 or box[3] < 0:
        raise ValueError(f"{where}: field 'bbox' has a negative width or height: {list(box)}")
    return [float(v) for v in box]


def _segmentation_counts(segm, img: dict, where: str) -> np.ndarray:
    """Run lengths of a COCO 'segmentation' (polygons, compressed or uncompressed RLE)."""
    h, w = img["height"], img["width"]
    if isinstance(segm, list):
        try:
            rle = _rle.polygons_to_rle(segm, h, w)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: field 'segmentation': {exc}") from None
        return _rle._parse_rle(rle)[2]
    if not isinstance(segm, dict):
        raise ValueError(f"{where}: field 'segmentation' must be a list of polygons or an RLE dict, "
                         f"got {type(segm).__name__}")
    try:
        sh, sw, counts = _rle._parse_rle(segm, "segmentation")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: field 'segmentation': {exc}") from None
    if (sh, sw) != (h, w):
        raise ValueError(f"{where}: field 'segmentation' has size [{sh}, {sw}] but its image is [{h}, {w}]")
    return counts


def _check_gt(coco_gt, iou_type: str):
    """Validate the ground-truth dict; return (images by id, sorted category ids, names, annotations)."""
    if not isinstance(coco_gt, dict):
        raise TypeError(f"coco_gt must be a COCO instances dict, got {type(coco_gt).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco_gt.get(key), list):
            raise ValueError(f"coco_gt must have a list under {key!r}")
    images = {}
    for i, img in enumerate(coco_gt["images"]):
        if not isinstance(img, dict) or not _is_int(img.get("id")):
            raise ValueError(f"coco_gt['images'][{i}]: field 'id' must be an integer")
        where = f"image id {img['id']}"
        if img["id"] in images:
            raise ValueError(f"{where}: field 'id' is duplicated")
        for key in ("height", "width"):
            if key in img or iou_type == "segm":
                if not _is_int(img.get(key)) or img[key] <= 0:
                    raise ValueError(f"{where}: field {key!r} must be a positive integer, "
                                     f"got {img.get(key)!r}")
        images[img["id"]] = img
    names = {}
    for i, cat in enumerate(coco_gt["categories"]):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")):
            raise ValueError(f"coco_gt['categories'][{i}]: field 'id' must be an integer")
        if cat["id"] in names:
            raise ValueError(f"category id {cat['id']}: field 'id' is duplicated")
        names[cat["id"]] = str(cat.get("name", cat["id"]))
    anns, seen = [], set()
    for i, ann in enumerate(coco_gt["annotations"]):
        if not isinstance(ann, dict) or not _is_int(ann.get("id")) or ann["id"] == 0:
            # id 0 cannot work: COCOeval records "matched to GT id 0" as "unmatched"
            raise ValueError(f"coco_gt['annotations'][{i}]: field 'id' must be a non-zero integer")
        where = f"annotation id {ann['id']}"
        if ann["id"] in seen:
            raise ValueError(f"{where}: field 'id' is duplicated")
        seen.add(ann["id"])
        for key in ("image_id", "category_id", "area") + (("bbox",) if iou_type == "bbox" else
                                                             ("segmentation",)):
            if key not in ann:
                raise ValueError(f"{where}: missing field {key!r}")
        if ann["image_id"] not in images:
            raise ValueError(f"{where}: field 'image_id' = {ann['image_id']!r} is not in coco_gt['images']")
        if ann["category_id"] not in names:
            raise ValueError(f"{where}: field 'category_id' = {ann['category_id']!r} is not in "
                             "coco_gt['categories']")
        if not _finite_number(ann["area"]) or ann["area"] < 0:
            raise ValueError(f"{where}: field 'area' must be a finite number >= 0, got {ann['area']!r}")
        crowd = ann.get("iscrowd", 0)
        if crowd not in (0, 1):
            raise ValueError(f"{where}: field 'iscrowd' must be 0 or 1, got {crowd!r}")
        rec = {"id": ann["id"], "image_id": ann["image_id"], "category_id": ann["category_id"],
               "area": float(ann["area"]), "iscrowd": bool(crowd)}
        if iou_type == "bbox":
            rec["bbox"] = _check_xywh(ann["bbox"], where)
        else:
            rec["counts"] = _segmentation_counts(ann["segmentation"], images[ann["image_id"]], where)
        anns.append(rec)
    return images, sorted(names), names, anns


def _check_detections(detections, images: dict, names: dict, iou_type: str) -> list:
    """Validate results and complete them as pycocotools' loadRes does (area, box, iscrowd)."""
    if not isinstance(detections, (list, tuple)):
        raise TypeError(f"detections must be a list of dicts, got {type(detections).__name__}")
    has_box = [isinstance(d, dict) and "bbox" in d for d in detections]
    if any(has_box) and not all(has_box):
        # loadRes decides from the first result alone; a mixed list would be evaluated inconsistently
        raise ValueError("detections: either every detection has a 'bbox' field or none has")
    out = []
    for i, det in enumerate(detections):
        where = f"detection {i}"
        if not isinstance(det, dict):
            raise ValueError(f"{where}: must be a dict, got {type(det).__name__}")
        for key in ("image_id", "category_id", "score"):
            if key not in det:
                raise ValueError(f"{where}: missing field {key!r}")
        if det["image_id"] not in images:
            raise ValueError(f"{where}: field 'image_id' = {det['image_id']!r} is not in coco_gt['images']")
        if det["category_id"] not in names:
            raise ValueError(f"{where}: field 'category_id' = {det['category_id']!r} is not in "
                             "coco_gt['categories']")
        if not _finite_number(det["score"]):
            raise ValueError(f"{where}: field 'score' must be a finite number, got {det['score']!r}")
        rec = {"image_id": det["image_id"], "category_id": det["category_id"], "score": float(det["score"])}
        img = images[det["image_id"]]
        if "bbox" in det:
            box = _check_xywh(det["bbox"], where)
            rec["area"] = box[2] * box[3]
            if iou_type == "bbox":
                rec["bbox"] = box
            elif "segmentation" in det:
                rec["counts"] = _segmentation_counts(det["segmentation"], img, where)
            else:  # loadRes turns a box result into a 4-corner polygon for segm evaluation
                x1, y1, x2, y2 = box[0], box[1], box[0] + box[2], box[1] + box[3]
                rec["counts"] = _segmentation_counts([[x1, y1, x1, y2, x2, y2, x2, y1]], img, where)
        else:
            if "segmentation" not in det:
                raise ValueError(f"{where}: needs a field 'bbox' or 'segmentation'")
            counts = _segmentation_counts(det["segmentation"], img, where)
            rec["area"] = float(counts[1::2].sum())
            if iou_type == "bbox":
                rec["bbox"] = list(_rle._bbox_from_counts(img["height"], img["width"], counts))
            else:
                rec["counts"] = counts
        out.append(rec)
    return out


def _check_max_dets(max_dets) -> tuple:
    try:
        md = tuple(int(m) for m in max_dets)
    except TypeError:
        raise TypeError(f"max_dets must be a sequence of 3 ints, got {max_dets!r}") from None
    if len(md) != 3 or md[0] < 1 or not (md[0] < md[1] < md[2]):
        raise ValueError(f"max_dets must be 3 increasing positive ints like (1, 10, 100), got {max_dets!r}")
    return md


# ----------------------------------------------------------------------------------------------------
# Per-image matching (step 3)
# ----------------------------------------------------------------------------------------------------
@njit(cache=True)
def _match_image(ious, gt_ignore, gt_crowd, thresholds):
    """Greedy COCO matching of one image and category for every IoU threshold.

    ious: (D, G) float64, detections sorted by score, GTs sorted with ignored ones last;
    gt_ignore, gt_crowd: (G,) bool; thresholds: (T,). Returns dt_matched (T, D) bool and
    dt_ignore (T, D) bool (matched to an ignored GT).
    """
    T, D, G = thresholds.shape[0], ious.shape[0], ious.shape[1]
    dt_matched = np.zeros((T, D), dtype=np.bool_)
    dt_ignore = np.zeros((T, D), dtype=np.bool_)
    for t in range(T):
        gt_taken = np.zeros(G, dtype=np.bool_)
        for d in range(D):
            best = min(thresholds[t], 1 - 1e-10)  # a match needs IoU >= best
            m = -1
            for g in range(G):
                if gt_taken[g] and not gt_crowd[g]:  # a crowd GT can absorb many detections
                    continue
                if m > -1 and not gt_ignore[m] and gt_ignore[g]:
                    break  # holding a real GT: ignored GTs (all later) cannot replace it
                if ious[d, g] < best:
                    continue
                best = ious[d, g]  # ">=": on equal IoU the later GT wins
                m = g
            if m == -1:
                continue
            dt_matched[t, d] = True
            dt_ignore[t, d] = gt_ignore[m]
            gt_taken[m] = True
    return dt_matched, dt_ignore


def _group_ious(dts: list, gts: list, iou_type: str) -> np.ndarray:
    crowd = np.array([g["iscrowd"] for g in gts], dtype=bool)
    if not dts or not gts:
        return np.zeros((len(dts), len(gts)))
    if iou_type == "bbox":
        return _rle.bbox_iou_coco([d["bbox"] for d in dts], [g["bbox"] for g in gts], crowd)
    d_off = np.zeros(len(dts) + 1, dtype=np.int64)
    d_off[1:] = np.cumsum([d["counts"].size for d in dts])
    g_off = np.zeros(len(gts) + 1, dtype=np.int64)
    g_off[1:] = np.cumsum([g["counts"].size for g in gts])
    return _rle._rle_iou_kernel(np.concatenate([d["counts"] for d in dts]), d_off,
                                np.concatenate([g["counts"] for g in gts]), g_off, crowd)


# ----------------------------------------------------------------------------------------------------
# The evaluator
# ----------------------------------------------------------------------------------------------------
def coco_evaluate(coco_gt: dict, detections: list, iou_type: str = "bbox", max_dets=(1, 10, 100)) -> dict:
    """COCO AP / AR of ``detections`` against ``coco_gt``, equal to pycocotools' COCOeval.

    coco_gt: COCO instances dict. ``images``: dicts with integer ``id`` (and ``height``, ``width`` for
        segm); ``categories``: dicts with ``id`` (and ``name``); ``annotations``: dicts with non-zero
        unique ``id``, ``image_id``, ``category_id``, ``area`` (used for the area ranges), ``iscrowd``
        (default 0), ``bbox`` [x, y, w, h] (bbox) or ``segmentation`` (segm: polygons or RLE of the
        image's size).
    detections: list of dicts with ``image_id``, ``category_id``, finite ``score`` and ``bbox``
        [x, y, w, h] and/or ``segmentation`` (RLE of the image's size).
    iou_type: "bbox" or "segm". max_dets: three increasing max-detections-per-image settings.

    Returns a dict with ``stats`` (12 float64 in COCOeval order), the same numbers by name ``AP``,
    ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl``, ``AR1``, ``AR10``, ``AR100``, ``ARs``, ``ARm``,
    ``ARl`` (named after the default max_dets), ``per_category_ap`` {category id: AP at IoU .5:.95,
    area all, max_dets[2]; -1 without GT}, ``category_ids`` (sorted, the K axis), ``category_names``,
    ``precision`` (T, R, K, A, M) interpolated precision at each recall threshold (for PR curves),
    ``recall`` (T, K, A, M), ``scores`` (T, R, K, A, M) the score at each precision point,
    ``iou_thresholds`` (T,), ``recall_thresholds`` (R,), ``area_ranges`` (A names), ``max_dets``.
    Entries without GT are -1. A is (all, small, medium, large); M follows max_dets.

    Unlike pycocotools: stats[0] (AP) uses max_dets[2] even when it is not 100 (COCOeval looks up 100
    literally and reports -1); an empty detection list is allowed (AP 0 where there are GTs);
    detections with an unknown category raise instead of being dropped silently.

    Example::

        out = coco_evaluate(coco_gt, results, iou_type="segm")
        out["AP"], out["AP50"], out["per_category_ap"][1]
        pr_curve = out["precision"][0, :, k, 0, -1]  # IoU .5, category k, all areas, 100 dets
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    max_dets = _check_max_dets(max_dets)
    images, cat_ids, names, gts = _check_gt(coco_gt, iou_type)
    dts = _check_detections(detections, images, names, iou_type)
    img_ids = sorted(images)
    thresholds, rec_thrs = IOU_THRESHOLDS, RECALL_THRESHOLDS
    area_rngs = list(AREA_RANGES.values())
    T, R, K, A, M = len(thresholds), len(rec_thrs), len(cat_ids), len(area_rngs), len(max_dets)

    # 1. group by (image, category), keeping list order inside each group
    gt_groups, dt_groups = {}, {}
    for g in gts:
        gt_groups.setdefault((g["image_id"], g["category_id"]), []).append(g)
    for d in dts:
        dt_groups.setdefault((d["image_id"], d["category_id"]), []).append(d)

    # per (category index, area index): list over images (id order) of per-image results
    per_image = [[[] for _ in range(A)] for _ in range(K)]
    for k, cat in enumerate(cat_ids):
        for img in img_ids:
            g_list = gt_groups.get((img, cat), [])
            d_list = dt_groups.get((img, cat), [])
            if not g_list and not d_list:
                continue  # COCOeval's evalImgs entry is None: the image does not take part
            order = np.argsort([-d["score"] for d in d_list], kind="mergesort")[: max_dets[-1]]
            d_list = [d_list[i] for i in order]
            # 2. IoU of the sorted, cut detections against the GTs in annotation order
            ious = _group_ious(d_list, g_list, iou_type)
            crowd = np.array([g["iscrowd"] for g in g_list], dtype=bool)
            g_area = np.array([g["area"] for g in g_list], dtype=np.float64)
            d_area = np.array([d["area"] for d in d_list], dtype=np.float64)
            scores = np.array([d["score"] for d in d_list], dtype=np.float64)
            for a, (lo, hi) in enumerate(area_rngs):
                # 3. ignore flags for this area range; ignored GTs last (stable)
                g_ign = crowd | (g_area < lo) | (g_area > hi)
                g_order = np.argsort(g_ign, kind="mergesort")
                matched, ignored = _match_image(np.ascontiguousarray(ious[:, g_order]), g_ign[g_order],
                                                crowd[g_order], thresholds)
                outside = (d_area < lo) | (d_area > hi)
                ignored = ignored | (~matched & outside[None, :])
                per_image[k][a].append((scores, matched, ignored, int(np.count_nonzero(~g_ign))))

    # 4. accumulate precision / recall per category, area range and max detections
    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    score_at = -np.ones((T, R, K, A, M))
    for k in range(K):
        for a in range(A):
            entries = per_image[k][a]
            if not entries:
                continue
            n_pos = sum(e[3] for e in entries)
            if n_pos == 0:
                continue
            for m, max_det in enumerate(max_dets):
                scores = np.concatenate([e[0][:max_det] for e in entries])
                order = np.argsort(-scores, kind="mergesort")
                matched = np.concatenate([e[1][:, :max_det] for e in entries], axis=1)[:, order]
                ignored = np.concatenate([e[2][:, :max_det] for e in entries], axis=1)[:, order]
                tp = np.cumsum(matched & ~ignored, axis=1).astype(np.float64)
                fp = np.cumsum(~matched & ~ignored, axis=1).astype(np.float64)
                nd = tp.shape[1]
                rc = tp / n_pos
                pr = tp / (fp + tp + np.spacing(1))
                recall[:, k, a, m] = rc[:, -1] if nd else 0.0
                # upper envelope: precision at rank i = best precision at any rank >= i
                pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
                sorted_scores = scores[order]
                for t in range(T):
                    idx = np.searchsorted(rc[t], rec_thrs, side="left")
                    ok = idx < nd  # recall levels never reached keep precision 0
                    q = np.zeros(R)
                    ss = np.zeros(R)
                    q[ok] = pr[t, idx[ok]]
                    ss[ok] = sorted_scores[idx[ok]]
                    precision[t, :, k, a, m] = q
                    score_at[t, :, k, a, m] = ss

    # 5. summary numbers, computed as COCOeval.summarize does
    def summarize(ap: bool, iou=None, area="all", max_det=max_dets[2]) -> float:
        s = precision if ap else recall
        if iou is not None:
            s = s[np.where(iou == thresholds)[0]]
        a_idx = [list(AREA_RANGES).index(area)]
        m_idx = [max_dets.index(max_det)]
        s = s[:, :, :, a_idx, m_idx] if ap else s[:, :, a_idx, m_idx]
        valid = s[s > -1]
        return float(np.mean(valid)) if valid.size else -1.0

    stats = np.array([
        summarize(True), summarize(True, iou=0.5), summarize(True, iou=0.75),
        summarize(True, area="small"), summarize(True, area="medium"), summarize(True, area="large"),
        summarize(False, max_det=max_dets[0]), summarize(False, max_det=max_dets[1]), summarize(False),
        summarize(False, area="small"), summarize(False, area="medium"), summarize(False, area="large"),
    ])
    per_cat = {}
    for k, cat in enumerate(cat_ids):
        s = precision[:, :, k, 0, M - 1]
        valid = s[s > -1]
        per_cat[cat] = float(np.mean(valid)) if valid.size else -1.0
    result = {"stats": stats}
    result.update({name: float(v) for name, v in zip(STAT_NAMES, stats)})
    result.update({
        "per_category_ap": per_cat, "category_ids": list(cat_ids),
        "category_names": [names[c] for c in cat_ids], "precision": precision, "recall": recall,
        "scores": score_at, "iou_thresholds": thresholds.copy(), "recall_thresholds": rec_thrs.copy(),
        "area_ranges": list(AREA_RANGES), "max_dets": max_dets,
    })
    return result


# ----------------------------------------------------------------------------------------------------
# PASCAL VOC average precision, for comparison
# ----------------------------------------------------------------------------------------------------
def voc_ap(recall, precision, method: str = "11point") -> float:
    """Average precision of one PR curve, the PASCAL VOC way (or COCO's, for comparison).

    recall, precision: (N,) float arrays, one entry per detection in decreasing score order
    (recall non-decreasing, as TP / #GT accumulates). All three methods integrate the
    *interpolated* precision p_interp(r) = max{precision_i : recall_i >= r} (0 if recall never
    reaches r); they differ only in where they sample it:

    - ``"11point"`` (VOC 2007): mean of p_interp at r = 0, 0.1, ..., 1.0 (11 points; the points come
      from ``np.arange(0, 1.1, 0.1)``, as in the reference VOC code, so 0.3 is 0.30000000000000004).
    - ``"all"`` (VOC 2010 onward): the exact area under the interpolated curve, i.e. sum over each
      recall step of (step width) x p_interp at the step's end; no sampling at all.
    - ``"101point"`` (COCO, per IoU threshold and category): mean of p_interp at r = 0, 0.01, ..., 1.0
      (101 points). COCO's AP then also averages over 10 IoU thresholds and over categories.

    Worked example (tested): 3 GT objects, 4 detections ranked TP, FP, TP, FP.
    recall    = [1/3, 1/3, 2/3, 2/3]; precision = [1, 1/2, 2/3, 1/2]
    p_interp(r) = 1 for r <= 1/3, 2/3 for 1/3 < r <= 2/3, 0 above (the third GT is never found).
    - 11 points:  r = 0, .1, .2, .3 -> 1;  .4, .5, .6 -> 2/3;  .7 .. 1 -> 0:  (4 + 2) / 11 = 0.5455
    - all points: 1/3 x 1 + 1/3 x 2/3 = 5/9 = 0.5556
    - 101 points: r = 0 .. .33 (34 points) -> 1;  .34 .. .66 (33) -> 2/3;  rest 0:  56/101 = 0.5545
    """
    rec = np.asarray(recall, dtype=np.float64)
    prec = np.asarray(precision, dtype=np.float64)
    if rec.ndim != 1 or rec.shape != prec.shape:
        raise ValueError(f"recall and precision must be 1-D of equal length, got {rec.shape} and "
                         f"{prec.shape}")
    if not (np.all(np.isfinite(rec)) and np.all(np.isfinite(prec))):
        raise ValueError("recall and precision must be finite")
    if rec.size and (rec.min() < 0 or rec.max() > 1 or np.any(np.diff(rec) < 0)):
        raise ValueError("recall must be non-decreasing values in [0, 1] (detections in score order)")
    if method == "11point":
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            reached = rec >= t
            ap += (prec[reached].max() if reached.any() else 0.0) / 11.0
        return float(ap)
    if method == "all":
        # 1. pad: recall 0 and 1 at the ends with precision 0 there
        mrec = np.concatenate(([0.0], rec, [1.0]))
        mpre = np.concatenate(([0.0], prec, [0.0]))
        # 2. upper envelope from the right
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]
        # 3. sum rectangle areas where recall changes
        i = np.flatnonzero(mrec[1:] != mrec[:-1])
        return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))
    if method == "101point":
        q = np.zeros(RECALL_THRESHOLDS.size)  # recall levels never reached count 0
        if rec.size:
            env = np.maximum.accumulate(prec[::-1])[::-1]  # upper envelope from the right
            idx = np.searchsorted(rec, RECALL_THRESHOLDS, side="left")  # first rank with recall >= r
            ok = idx < rec.size
            q[ok] = env[idx[ok]]
        return float(np.mean(q))
    raise ValueError(f"method must be '11point', 'all' or '101point', got {method!r}")
