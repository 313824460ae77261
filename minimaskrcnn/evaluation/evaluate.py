"""COCO box and mask AP of a model on a data set (what ``train``, ``evaluate`` and ``demo`` print)."""

from __future__ import annotations


def predict_dataset(model, dataset, indices=None, batch_size: int = 8, progress: bool = False) -> list:
    """``model.predict`` on ``dataset[i]["image"]`` for i in ``indices``, in batches: one dict per image."""
    indices = list(range(len(dataset))) if indices is None else list(indices)
    chunks = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc="evaluating", unit="batch")
    preds = []
    for chunk in chunks:
        preds += model.predict([dataset[i]["image"] for i in chunk])
    return preds


def evaluate_model(model, dataset, indices=None, batch_size: int = 8, progress: bool = False,
                   predictions: list | None = None):
    """COCO box and mask AP of ``model`` on ``dataset`` (items with image/labels/masks).

    ``predictions``: ``predict_dataset``'s output for the same indices, to score them without running
    the model again (then ``model`` is not used).

    Returns ``(results, coco_gt, detections)``: results = {"bbox": coco_evaluate(...), "segm": ...};
    coco_gt the COCO ground-truth dict and detections the COCO results list (with RLE masks), so both
    can be written out and scored with pycocotools."""
    from minimaskrcnn.datasets.coco import dataset_to_coco, detections_to_coco
    from minimaskrcnn.evaluation import coco_evaluate

    category_ids = getattr(dataset, "category_ids", None)
    model_classes = getattr(getattr(model, "config", None), "num_classes", None)
    if category_ids is not None and model_classes is not None and model_classes != len(category_ids) + 1:
        raise ValueError(f"the model predicts {model_classes - 1} classes but the data set has "
                         f"{len(category_ids)} categories ({dataset!r}): its labels cannot be mapped to "
                         "the data set's category ids")
    indices = list(range(len(dataset))) if indices is None else list(indices)
    if predictions is None:
        predictions = predict_dataset(model, dataset, indices, batch_size, progress)
    if len(predictions) != len(indices):
        raise ValueError(f"predictions must hold one entry per index ({len(indices)}), "
                         f"got {len(predictions)}")
    coco_gt = dataset_to_coco(dataset, indices)
    detections = []
    for idx, p in zip(indices, predictions):
        image_id = int(dataset[idx].get("image_id", idx))
        detections += detections_to_coco(image_id, p["boxes"], p["labels"], p["scores"], p["masks"],
                                         category_ids=category_ids)
    results = {t: coco_evaluate(coco_gt, detections, t) for t in ("bbox", "segm")}
    return results, coco_gt, detections


def summary(results: dict) -> str:
    lines = []
    for t, name in (("bbox", "box "), ("segm", "mask")):
        r = results[t]
        lines.append(f"{name} AP {r['AP']:.3f}  AP50 {r['AP50']:.3f}  AP75 {r['AP75']:.3f}  "
                     f"APs {r['APs']:.3f}  APm {r['APm']:.3f}  APl {r['APl']:.3f}")
    return "\n".join(lines)


def match_objects(items, preds, score_thresh: float = 0.5, iou_thresh: float = 0.5) -> dict:
    """Each ground-truth object's detection, and the pixel errors of its mask (notebook 05, section 6).

    For every GT object of every image, among the detections with score >= ``score_thresh``: the one of
    the same class with the best mask IoU if that IoU reaches ``iou_thresh`` (the object is *found*),
    otherwise the best of any class (*misclassified* if its IoU reaches ``iou_thresh``, else *missed*).

    Args:
        items: list of dataset items (``masks`` (G, H, W) bool, ``labels`` (G,)).
        preds: ``model.predict``'s output for the same images (``masks``, ``labels``, ``scores``).

    Returns a dict of per-object (R,) arrays, R the number of GT objects: ``image``, ``gt``, ``label``,
    ``area`` (GT mask pixels), ``detection`` (index into that image's predictions, -1 if none),
    ``det_label``, ``score``, ``iou`` (mask IoU, 0 if no detection), ``found`` / ``misclassified`` /
    ``missed`` (bool), and for the found objects (NaN elsewhere) ``extra`` (predicted pixels outside
    the GT mask), ``missed_px`` (GT pixels the mask misses) and ``shift_x`` / ``shift_y`` (mask centroid
    minus GT centroid, pixels; positive = right / down). ``false_positives``: (image, detection) pairs of
    confident detections that overlap no object of their class at ``iou_thresh``.
    """
    import numpy as np

    cols = {k: [] for k in ("image", "gt", "label", "area", "detection", "det_label", "score", "iou",
                            "extra", "missed_px", "shift_x", "shift_y")}
    false_positives = []
    for i, (it, p) in enumerate(zip(items, preds)):
        conf = np.flatnonzero(p["scores"] >= score_thresh)
        gm, dm = it["masks"], p["masks"][conf]
        inter = (gm[:, None] & dm[None]).sum(axis=(2, 3))
        union = (gm[:, None] | dm[None]).sum(axis=(2, 3))
        iou = inter / np.maximum(union, 1)  # (G, D)
        same = it["labels"][:, None] == p["labels"][conf][None, :]
        rows, columns = np.indices(gm.shape[1:])
        for g in range(len(gm)):
            j = -1
            if len(conf):
                iou_same = np.where(same[g], iou[g], -1.0)
                j = int(np.argmax(iou_same)) if iou_same.max() >= iou_thresh else int(np.argmax(iou[g]))
            d = int(conf[j]) if j >= 0 else -1
            values = (i, g, int(it["labels"][g]), int(gm[g].sum()), d,
                      int(p["labels"][d]) if d >= 0 else 0, float(p["scores"][d]) if d >= 0 else 0.0,
                      float(iou[g, j]) if d >= 0 else 0.0)
            for k, v in zip(("image", "gt", "label", "area", "detection", "det_label", "score", "iou"),
                            values):
                cols[k].append(v)
            ok = d >= 0 and iou[g, j] >= iou_thresh and same[g, j]
            pm = p["masks"][d] if ok else None
            cols["extra"].append(float(np.sum(pm & ~gm[g])) if ok else np.nan)
            cols["missed_px"].append(float(np.sum(gm[g] & ~pm)) if ok else np.nan)
            cols["shift_x"].append(columns[pm].mean() - columns[gm[g]].mean() if ok else np.nan)
            cols["shift_y"].append(rows[pm].mean() - rows[gm[g]].mean() if ok else np.nan)
        for j in np.flatnonzero(~((iou >= iou_thresh) & same).any(axis=0)):
            false_positives.append((i, int(conf[j])))
    out = {k: np.array(v, dtype=float if k in ("score", "iou", "extra", "missed_px", "shift_x", "shift_y")
                       else np.int64) for k, v in cols.items()}
    out["missed"] = out["iou"] < iou_thresh
    out["found"] = ~out["missed"] & (out["label"] == out["det_label"])
    out["misclassified"] = ~out["missed"] & ~out["found"]
    out["false_positives"] = false_positives
    return out


def pixel_error_summary(matched: dict, select=None) -> dict:
    """Means over the found objects (or ``select``, a boolean mask over them) of ``match_objects``:
    ``objects``, ``iou``, ``extra``, ``missed_px``, ``shift_x``, ``shift_y``."""
    import numpy as np

    sel = matched["found"] if select is None else (matched["found"] & select)
    return {"objects": int(sel.sum()), **{k: float(np.mean(matched[k][sel])) if sel.any() else float("nan")
                                          for k in ("iou", "extra", "missed_px", "shift_x", "shift_y")}}


def paste_comparison(model_paths, num_images: int = 500, seed: int = 1_000_003) -> list:
    """Mask AP and pixel errors of saved models with each paste convention (the README's table).

    Every model in ``model_paths`` predicts ``num_images`` fresh shapes images from ``seed`` (training's
    evaluation seed by default) twice, pasting its 28x28 maps with ``mask.paste = "torchvision"`` and
    ``"continuous"``. Prints one line per (model, paste) and returns them as dicts: ``model``,
    ``targets_aligned``, ``paste``, ``box_AP``, ``mask_AP``, ``mask_APm`` and ``pixel_error_summary``'s
    keys. Example::

        python -c "from minimaskrcnn.evaluation.evaluate import paste_comparison as c; \
                   c(['runs/shapes/model.npz'])"
    """
    from minimaskrcnn.datasets.shapes import shapes_dataset
    from minimaskrcnn.weights import load_model

    data = shapes_dataset(num_images, seed)
    items = [data[i] for i in range(num_images)]
    rows = []
    for path in model_paths:
        model = load_model(path)
        own = model.config.mask.paste
        for paste in ("torchvision", "continuous"):
            model.config.mask.paste = paste
            preds = predict_dataset(model, data)
            res, _, _ = evaluate_model(model, data, predictions=preds)
            row = {"model": str(path), "targets_aligned": model.config.mask.targets_aligned, "paste": paste,
                   "box_AP": res["bbox"]["AP"], "mask_AP": res["segm"]["AP"], "mask_APm": res["segm"]["APm"],
                   **pixel_error_summary(match_objects(items, preds))}
            rows.append(row)
            print(f"{row['model']}  targets aligned={row['targets_aligned']!s:5s}  paste {paste:11s}  "
                  f"box AP {row['box_AP']:.3f}  mask AP {row['mask_AP']:.3f}  APm {row['mask_APm']:.3f}  |  "
                  f"{row['objects']} found: extra {row['extra']:.1f} px, missed {row['missed_px']:.1f} px, "
                  f"shift x {row['shift_x']:+.3f} y {row['shift_y']:+.3f}", flush=True)
        model.config.mask.paste = own
    return rows
