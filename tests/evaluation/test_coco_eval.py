"""coco_evaluate against pycocotools' COCOeval on randomized data sets, plus golden cases and errors."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest

from minimaskrcnn.datasets.rle import mask_to_rle
from minimaskrcnn.evaluation import coco_evaluate, voc_ap
from minimaskrcnn.evaluation.coco import STAT_NAMES


# ----------------------------------------------------------------------------------------------------
# Random data sets that exercise every branch of COCOeval
# ----------------------------------------------------------------------------------------------------
def _ellipse(h, w, box, rng):
    """A bool (h, w) mask: an ellipse (or a rectangle) inside the [x, y, w, h] box."""
    x, y, bw, bh = box
    yy, xx = np.mgrid[0:h, 0:w]
    if rng.random() < 0.3:
        return (xx >= x) & (xx < x + bw) & (yy >= y) & (yy < y + bh)
    cx, cy = x + bw / 2, y + bh / 2
    return ((xx + 0.5 - cx) / max(bw / 2, 0.5)) ** 2 + ((yy + 0.5 - cy) / max(bh / 2, 0.5)) ** 2 <= 1


def _random_box(h, w, rng, size_class=None):
    # sizes spread over the small (< 32²), medium and large (> 96²) area ranges
    ranges = [(2, 30), (34, 94), (100, 150)]
    side = rng.uniform(*ranges[int(rng.integers(3)) if size_class is None else size_class])
    bw = float(np.clip(side * rng.uniform(0.6, 1.4), 1, w))
    bh = float(np.clip(side * side / bw, 1, h))
    return [float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh)), bw, bh]


def _jitter(box, rng, h, w, scale):
    x, y, bw, bh = box
    bw2, bh2 = bw * np.exp(rng.normal(0, scale)), bh * np.exp(rng.normal(0, scale))
    x2, y2 = x + rng.normal(0, scale) * bw, y + rng.normal(0, scale) * bh
    x2, y2 = float(np.clip(x2, 0, w - 1)), float(np.clip(y2, 0, h - 1))
    return [x2, y2, float(min(bw2, w - x2)), float(min(bh2, h - y2))]


def random_dataset(seed, iou_type, n_images=8, with_bbox_in_segm=True):
    """GT dict + results list with crowds, every area range, empty images, ties and > 100 dets."""
    rng = np.random.default_rng(seed)
    cats = [{"id": c, "name": f"c{c}"} for c in (1, 2, 5, 7)]  # category 7 never has a GT
    images, anns, dets = [], [], []
    ann_id = 1
    for i in range(n_images):
        img_id = int(rng.integers(1, 10_000)) * 10 + i  # ids unordered, unique
        h, w = (200, 200) if i == 3 else (int(rng.integers(40, 200)), int(rng.integers(40, 200)))
        images.append({"id": img_id, "height": h, "width": w})
        n_gt = 0 if i == 0 else 4 if i == 3 else int(rng.integers(0, 7))  # image 0 has no GT
        for j in range(n_gt):
            # image 3 holds a small, a medium and a large object and a crowd in category 1
            cat = 1 if i == 3 else int(rng.choice([1, 2, 5]))
            box = _random_box(h, w, rng, size_class=j if i == 3 and j < 3 else None)
            crowd = int(rng.random() < 0.15 or (i == 3 and j == 3))
            mask = _ellipse(h, w, box, rng)
            if not mask.any():
                continue
            ys, xs = np.nonzero(mask)
            tight = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                     float(ys.max() - ys.min() + 1)]
            area = float(mask.sum()) if iou_type == "segm" else tight[2] * tight[3]
            r = rng.random()
            if r < 0.1 and i != 3:
                area = float(rng.choice([32.0**2, 96.0**2]))  # exactly on a range boundary (inclusive)
            elif r < 0.2 and i != 3:
                area = area * float(rng.uniform(0.3, 3))  # the 'area' field, not the mask, decides
            if crowd:
                rle = mask_to_rle(mask)
                counts = np.diff(np.flatnonzero(np.r_[1, np.diff(mask.ravel("F").astype(int)) != 0, 1]))
                segm = {"size": [h, w], "counts": ([0] if mask.ravel("F")[0] else []) + counts.tolist()}
                segm = segm if rng.random() < 0.5 else rle  # uncompressed or compressed RLE
            elif rng.random() < 0.5:
                x, y, bw, bh = tight
                segm = [[x, y, x + bw, y, x + bw, y + bh, x + bw / 2, y + bh * 1.1]]  # polygon
                if rng.random() < 0.3:
                    segm.append([x, y, x + bw / 3, y, x, y + bh / 3])  # a second part
            else:
                segm = mask_to_rle(mask)
            anns.append({"id": ann_id, "image_id": img_id, "category_id": cat, "bbox": tight, "area": area,
                         "iscrowd": crowd, "segmentation": segm})
            ann_id += 1
            # detections of this object: none, one or several (duplicates -> false positives)
            for _ in range(int(rng.choice([0, 1, 1, 2, 3]))):
                dcat = cat if rng.random() < 0.85 else int(rng.choice([1, 2, 5, 7]))
                dbox = _jitter(tight, rng, h, w, rng.choice([0.0, 0.03, 0.1, 0.3]))
                dets.append(_det(img_id, dcat, dbox, h, w, rng, iou_type, with_bbox_in_segm))
        if i != 1:  # image 1 has no detection at all
            for _ in range(int(rng.integers(0, 4))):  # background false positives
                dets.append(_det(img_id, int(rng.choice([1, 2, 5, 7])), _random_box(h, w, rng), h, w, rng,
                                 iou_type, with_bbox_in_segm))
        if i == 2:  # more detections than maxDets=100 on one image and category
            for _ in range(120):
                dets.append(_det(img_id, 1, _random_box(h, w, rng), h, w, rng, iou_type, with_bbox_in_segm))
    gt = {"images": images, "annotations": anns, "categories": cats}
    return gt, dets


def _det(img_id, cat, box, h, w, rng, iou_type, with_bbox):
    score = float(rng.choice([0.1, 0.5, 0.9, 1.0])) if rng.random() < 0.4 else float(rng.random())  # ties
    d = {"image_id": img_id, "category_id": cat, "score": score}
    if iou_type == "bbox" or with_bbox:
        d["bbox"] = [float(v) for v in box]
    if iou_type == "segm":
        d["segmentation"] = mask_to_rle(_ellipse(h, w, box, rng))
    return d


def pycoco_eval(pycocotools, gt, dets, iou_type):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        res = coco.loadRes(copy.deepcopy(dets))
        ev = COCOeval(coco, res, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("seed", range(20))
def test_equals_pycocotools_random(pycocotools, iou_type, seed):
    gt, dets = random_dataset(seed, iou_type, with_bbox_in_segm=seed % 2 == 0)
    ref = pycoco_eval(pycocotools, gt, dets, iou_type)
    ours = coco_evaluate(gt, dets, iou_type)
    np.testing.assert_allclose(ours["stats"], ref.stats, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours["precision"], ref.eval["precision"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours["recall"], ref.eval["recall"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours["scores"], ref.eval["scores"], rtol=0, atol=0)
    for name, v in zip(STAT_NAMES, ref.stats):
        assert ours[name] == pytest.approx(v, abs=1e-12)
    # the data really exercise what they are meant to
    assert ours["per_category_ap"][7] == -1  # category without GT
    assert any(a["iscrowd"] for a in gt["annotations"])
    assert (ours["precision"][:, :, :, 1:] > -1).any(axis=(0, 1, 2, 4)).all()  # GTs in every area range
    assert sum(d["image_id"] == gt["images"][2]["id"] for d in dets) > 100


@pytest.mark.parametrize("variant", ["ignore_key", "box_results_segm", "mask_results_bbox", "max_dets"])
def test_loadres_and_params_variants_equal_pycocotools(pycocotools, variant):
    iou_type = "bbox" if variant in ("ignore_key", "mask_results_bbox") else "segm"
    gt, dets = random_dataset(20, "segm" if variant == "mask_results_bbox" else iou_type)
    max_dets = (1, 10, 100)
    if variant == "ignore_key":  # COCOeval overwrites 'ignore' with 'iscrowd': the key has no effect
        for a in gt["annotations"][::2]:
            a["ignore"] = 1
    elif variant == "box_results_segm":  # box-only results are rasterised as 4-corner polygons
        dets = [{k: v for k, v in d.items() if k != "segmentation"} for d in dets]
    elif variant == "mask_results_bbox":  # mask-only results: box and area from the mask
        dets = [{k: v for k, v in d.items() if k != "bbox"} for d in dets]
    else:
        max_dets = (1, 5, 100)
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        ref = COCOeval(coco, coco.loadRes(copy.deepcopy(dets)), iou_type)
        ref.params.maxDets = list(max_dets)
        ref.evaluate()
        ref.accumulate()
        ref.summarize()
    ours = coco_evaluate(gt, dets, iou_type, max_dets=max_dets)
    np.testing.assert_allclose(ours["stats"], ref.stats, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours["precision"], ref.eval["precision"], rtol=0, atol=1e-12)
    if variant == "ignore_key":
        for a in gt["annotations"]:
            a.pop("ignore", None)
        np.testing.assert_array_equal(coco_evaluate(gt, dets, iou_type)["stats"], ours["stats"])


def test_missing_iscrowd_means_zero():
    gt, dets = random_dataset(4, "bbox")
    for a in gt["annotations"]:
        a["iscrowd"] = 0
    with_flag = coco_evaluate(gt, dets, "bbox")
    for a in gt["annotations"]:
        del a["iscrowd"]
    np.testing.assert_array_equal(coco_evaluate(gt, dets, "bbox")["stats"], with_flag["stats"])


def test_inputs_not_modified(pycocotools):
    gt, dets = random_dataset(3, "segm")
    gt0, dets0 = copy.deepcopy(gt), copy.deepcopy(dets)
    coco_evaluate(gt, dets, "segm")
    assert gt == gt0 and dets == dets0


def test_empty_detections_give_zero():
    gt, _ = random_dataset(1, "bbox")
    out = coco_evaluate(gt, [], "bbox")
    # every category with a GT has precision 0 at every recall level; category 7 has no GT (-1)
    assert out["AP"] == 0.0 and out["AR100"] == 0.0
    assert out["per_category_ap"][7] == -1.0


# ----------------------------------------------------------------------------------------------------
# Golden case worked by hand
# ----------------------------------------------------------------------------------------------------
def test_golden_two_boxes():
    # One 100x100 image, two GT boxes of category 1 with area 400 (small).
    # det A (score .9) = GT 1 exactly -> IoU 1: a TP at every threshold.
    # det B (score .8) overlaps GT 2 with IoU 0.6: TP for t in {.5, .55, .6}, FP for the 7 others.
    # det C (score .7) lies far from both: always FP.
    gt = {"images": [{"id": 1, "height": 100, "width": 100}], "categories": [{"id": 1}],
          "annotations": [
              {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
              {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 20, 20], "area": 400,
               "iscrowd": 0}]}
    # B = [50, 50, 20, 12]: intersection 240, union 400 + 240 - 240 = 400 -> IoU 0.6
    dets = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [50, 50, 20, 12], "score": 0.8},
            {"image_id": 1, "category_id": 1, "bbox": [80, 0, 10, 10], "score": 0.7}]
    out = coco_evaluate(gt, dets, "bbox")
    # t <= .6: ranks TP, TP -> recall 1 at precision 1 for all 101 recall points: AP_t = 1.
    # t > .6 : TP, FP, FP -> recall 0.5 at precision 1; recall points 0..0.5 (51 of 101) get 1: 51/101.
    ap_hi = 51 / 101
    assert out["AP50"] == pytest.approx(1.0, abs=1e-15)
    assert out["AP75"] == pytest.approx(ap_hi, abs=1e-15)
    assert out["AP"] == pytest.approx((3 * 1.0 + 7 * ap_hi) / 10, abs=1e-15)
    # AR: recall 1 for 3 thresholds, 0.5 for 7 -> 0.65; with one detection per image: recall 0.5
    assert out["AR100"] == pytest.approx(0.65, abs=1e-15)
    assert out["AR1"] == pytest.approx(0.5, abs=1e-15)
    assert out["APs"] == out["AP"] and out["APm"] == -1.0 and out["APl"] == -1.0


def test_crowd_region_absorbs_detections():
    # A crowd GT covering [0, 0, 50, 50]: two detections inside it are ignored (neither TP nor FP),
    # and with no other GT the category has no positives: every number is -1.
    gt = {"images": [{"id": 1, "height": 60, "width": 60}], "categories": [{"id": 1}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 50], "area": 2500,
                           "iscrowd": 1}]}
    dets = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [20, 20, 10, 10], "score": 0.8}]
    out = coco_evaluate(gt, dets, "bbox")
    assert np.all(out["stats"] == -1)


# ----------------------------------------------------------------------------------------------------
# VOC AP: the three interpolations differ (worked example of the docstring)
# ----------------------------------------------------------------------------------------------------
def test_voc_ap_worked_example():
    # 3 GTs, detections ranked TP, FP, TP, FP
    rec = np.array([1, 1, 2, 2]) / 3
    prec = np.array([1, 1 / 2, 2 / 3, 1 / 2])
    assert voc_ap(rec, prec, "11point") == pytest.approx(6 / 11, abs=1e-15)  # 4 points at 1, 3 at 2/3
    assert voc_ap(rec, prec, "all") == pytest.approx(5 / 9, abs=1e-15)  # 1/3*1 + 1/3*2/3
    assert voc_ap(rec, prec, "101point") == pytest.approx(56 / 101, abs=1e-15)  # 34 at 1, 33 at 2/3


def test_voc_ap_101point_equals_coco_ap50():
    # The same ranking as a tiny COCO data set: 3 GTs, detections TP, FP, TP, FP at IoU 1 or 0
    boxes = [[0, 0, 10, 10], [20, 0, 10, 10], [40, 0, 10, 10]]
    gt = {"images": [{"id": 1}], "categories": [{"id": 1}],
          "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": b, "area": 100}
                          for i, b in enumerate(boxes)]}
    dets = [{"image_id": 1, "category_id": 1, "bbox": b, "score": s}
            for b, s in [(boxes[0], 0.9), ([70, 70, 5, 5], 0.8), (boxes[1], 0.7), ([80, 80, 5, 5], 0.6)]]
    out = coco_evaluate(gt, dets, "bbox")
    assert out["AP50"] == pytest.approx(voc_ap(np.array([1, 1, 2, 2]) / 3, np.array([1, 1 / 2, 2 / 3, 1 / 2]),
                                               "101point"), abs=1e-12)


def test_voc_ap_bad_input():
    with pytest.raises(ValueError, match="method"):
        voc_ap([0.5], [1.0], "13point")
    with pytest.raises(ValueError, match="non-decreasing"):
        voc_ap([0.5, 0.2], [1.0, 1.0])
    with pytest.raises(ValueError, match="equal length"):
        voc_ap([0.5, 0.6], [1.0])


# ----------------------------------------------------------------------------------------------------
# Malformed input: errors name the annotation and the field
# ----------------------------------------------------------------------------------------------------
def _small_gt():
    return {"images": [{"id": 1, "height": 10, "width": 12}], "categories": [{"id": 3, "name": "x"}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 3, "bbox": [1, 1, 4, 4], "area": 16,
                             "iscrowd": 0, "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]]}]}


@pytest.mark.parametrize("mutate, iou_type, match", [
    (lambda g: g["annotations"][0].pop("area"), "bbox", r"annotation id 7: missing field 'area'"),
    (lambda g: g["annotations"][0].pop("bbox"), "bbox", r"annotation id 7: missing field 'bbox'"),
    (lambda g: g["annotations"][0].pop("segmentation"), "segm", r"annotation id 7: missing field 'segm"),
    (lambda g: g["annotations"][0].update(bbox=[1, 1, -4, 4]), "bbox",
     r"annotation id 7: .*'bbox'.*negative"),
    (lambda g: g["annotations"][0].update(area=-1), "bbox", r"annotation id 7: field 'area'"),
    (lambda g: g["annotations"][0].update(category_id=4), "bbox", r"annotation id 7: field 'category_id'"),
    (lambda g: g["annotations"][0].update(image_id=2), "bbox", r"annotation id 7: field 'image_id'"),
    (lambda g: g["annotations"][0].update(iscrowd=2), "bbox", r"annotation id 7: field 'iscrowd'"),
    (lambda g: g["annotations"][0].update(segmentation=mask_to_rle(np.zeros((10, 11), bool))), "segm",
     r"annotation id 7: field 'segmentation' has size \[10, 11\]"),
    (lambda g: g["annotations"][0].update(segmentation={"size": [10, 12], "counts": [5, 5]}), "segm",
     r"annotation id 7: field 'segmentation'.*120"),
    (lambda g: g["annotations"][0].update(segmentation=[[1, 2, 3]]), "segm",
     r"annotation id 7: field 'segmentation'.*even number"),
    (lambda g: g["annotations"][0].update(id=0), "bbox", r"'id' must be a non-zero integer"),
    (lambda g: g["annotations"].append(dict(g["annotations"][0])), "bbox",
     r"annotation id 7: field 'id' is dup"),
    (lambda g: g["images"][0].update(height=-10), "segm", r"image id 1: field 'height'"),
    (lambda g: g["images"][0].pop("width"), "segm", r"image id 1: field 'width'"),
    (lambda g: g.pop("categories"), "bbox", r"'categories'"),
])
def test_malformed_ground_truth(mutate, iou_type, match):
    gt = _small_gt()
    mutate(gt)
    with pytest.raises(ValueError, match=match):
        coco_evaluate(gt, [{"image_id": 1, "category_id": 3, "bbox": [1, 1, 4, 4], "score": 0.5}], iou_type)


def _d(**changes):
    """A valid detection of the small data set, with some fields changed (None removes a field)."""
    det = {"image_id": 1, "category_id": 3, "bbox": [1, 1, 4, 4], "score": 0.5}
    det.update(changes)
    return {k: v for k, v in det.items() if v is not None}


@pytest.mark.parametrize("det, iou_type, match", [
    (_d(image_id=9), "bbox", r"detection 1: .*'image_id'"),
    (_d(category_id=1), "bbox", r"detection 1: .*'category_id'"),
    (_d(score=None), "bbox", r"detection 1: missing field 'score'"),
    (_d(bbox=[1, 1, 4]), "bbox", r"detection 1: field 'bbox'"),
    (_d(bbox=[1, 1, 4, -1]), "bbox", r"detection 1: field 'bbox' has a negative"),
    (_d(score=float("nan")), "bbox", r"detection 1: field 'score'"),
    (_d(segmentation=mask_to_rle(np.ones((12, 10), bool))), "segm",
     r"detection 1: field 'segmentation' has size"),
])
def test_malformed_detections(det, iou_type, match):
    ok = {"image_id": 1, "category_id": 3, "bbox": [1, 1, 4, 4], "score": 0.9}
    with pytest.raises(ValueError, match=match):
        coco_evaluate(_small_gt(), [ok, det], iou_type)


def test_bad_arguments():
    with pytest.raises(ValueError, match="iou_type"):
        coco_evaluate(_small_gt(), [], "keypoints")
    with pytest.raises(ValueError, match="max_dets"):
        coco_evaluate(_small_gt(), [], "bbox", max_dets=(10, 1, 100))
    with pytest.raises(ValueError, match="either every detection"):
        coco_evaluate(_small_gt(), [{"image_id": 1, "category_id": 3, "bbox": [1, 1, 4, 4], "score": 0.9},
                                    {"image_id": 1, "category_id": 3, "score": 0.9,
                                     "segmentation": mask_to_rle(np.ones((10, 12), bool))}], "segm")


# ----------------------------------------------------------------------------------------------------
# Size check: 500 images of 480x640 with 3 objects each (run with -s to see the time)
# ----------------------------------------------------------------------------------------------------
def _octagon(x, y, bw, bh):
    cx, cy = x + bw / 2, y + bh / 2
    t = np.arange(8) * np.pi / 4
    return np.stack([cx + bw / 2 * np.cos(t), cy + bh / 2 * np.sin(t)], axis=1).ravel().tolist()


def segm_benchmark_data(n_images=500, h=480, w=640, seed=0):
    """3 GT polygons per image, one shifted mask detection each plus 3 false positives."""
    from minimaskrcnn.datasets.rle import polygons_to_rle

    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "height": h, "width": w})
        for j in range(6):
            bw, bh = (float(v) for v in rng.integers(8, 220, 2))
            x, y = float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh))
            cat = int(rng.integers(1, 4))
            if j < 3:
                rect = [x, y, x + bw, y, x + bw, y + bh, x, y + bh]
                anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": [x, y, bw, bh],
                             "area": bw * bh, "iscrowd": 0, "segmentation": [rect]})
                x, y = x + float(rng.normal(0, 6)), y + float(rng.normal(0, 6))
            dets.append({"image_id": i, "category_id": cat, "score": float(rng.random()),
                         "segmentation": polygons_to_rle([_octagon(x, y, bw, bh)], h, w)})
    return {"images": images, "annotations": anns, "categories": [{"id": c} for c in (1, 2, 3)]}, dets


@pytest.mark.slow
def test_500_images_segm(pycocotools):
    import time

    gt, dets = segm_benchmark_data()
    coco_evaluate(gt, dets[:30], "segm")  # compile / load the Numba kernels first
    t0 = time.perf_counter()
    ours = coco_evaluate(gt, dets, "segm")
    elapsed = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = pycoco_eval(pycocotools, gt, dets, "segm")
    ref_elapsed = time.perf_counter() - t0
    print(f"\n500 images, 1500 GTs, 3000 detections, segm: coco_evaluate {elapsed:.2f} s, "
          f"pycocotools {ref_elapsed:.2f} s")
    np.testing.assert_allclose(ours["stats"], ref.stats, rtol=0, atol=1e-12)


def test_voc_ap_edge_cases():
    for method in ("11point", "all", "101point"):
        assert voc_ap([], [], method) == 0.0  # no detection: AP 0
        assert voc_ap([1.0], [1.0], method) == pytest.approx(1.0, abs=1e-15)  # one GT, found first
