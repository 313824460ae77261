"""COCO box and mask AP of a model on a data set (what ``train``, ``evaluate`` and ``demo`` print)."""

from __future__ import annotations


def evaluate_model(model, dataset, indices=None, batch_size: int = 8, progress: bool = False):
    """COCO box and mask AP of ``model`` on ``dataset`` (items with image/labels/masks).

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
    coco_gt = dataset_to_coco(dataset, indices)
    detections = []
    chunks = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc="evaluating", unit="batch")
    for chunk in chunks:
        items = [dataset[i] for i in chunk]
        preds = model.predict([it["image"] for it in items])
        for idx, it, p in zip(chunk, items, preds):
            image_id = int(it.get("image_id", idx))
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
