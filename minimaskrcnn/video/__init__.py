"""Semi-supervised video object segmentation: a synthetic benchmark, optical flow, propagation."""
