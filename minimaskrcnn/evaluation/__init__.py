"""Evaluation: COCO AP/AR (equal to pycocotools) and the DAVIS J and F measures."""

from .coco import coco_evaluate, voc_ap
from .evaluate import evaluate_model, match_objects, pixel_error_summary, predict_dataset, summary

__all__ = ["coco_evaluate", "voc_ap", "evaluate_model", "match_objects", "pixel_error_summary",
           "predict_dataset", "summary"]
