"""Datasets: synthetic shapes and COCO-format folders."""
