"""Datasets: synthetic shapes and COCO-format folders.

Every data set yields dicts with ``image`` (H, W, 3) uint8, ``boxes`` (K, 4) float32 (x1, y1, x2, y2),
``labels`` (K,) int64 in 1..C, ``masks`` (K, H, W) bool and ``image_id``; ``class_names[0]`` is
"background".
"""

from minimaskrcnn.datasets.coco import (
    CocoFolderDataset,
    CocoFormatError,
    dataset_to_coco,
    detections_to_coco,
    export_coco,
    load_coco_json,
    save_coco_json,
    validate_coco,
)
from minimaskrcnn.datasets.shapes import ShapesDataset

__all__ = [
    "ShapesDataset",
    "CocoFolderDataset",
    "CocoFormatError",
    "dataset_to_coco",
    "detections_to_coco",
    "export_coco",
    "load_coco_json",
    "save_coco_json",
    "validate_coco",
]
