"""Evaluation: COCO AP/AR (equal to pycocotools) and the DAVIS J and F measures."""
