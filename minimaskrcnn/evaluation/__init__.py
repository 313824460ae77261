"""Evaluation: COCO AP/AR (equal to pycocotools) and the DAVIS J and F measures."""

from .coco import coco_evaluate, voc_ap

__all__ = ["coco_evaluate", "voc_ap"]
