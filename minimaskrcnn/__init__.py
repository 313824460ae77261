"""minimaskrcnn: Mask R-CNN from scratch in readable NumPy, every backward pass written by hand."""

__version__ = "0.1.0"
