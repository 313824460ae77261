"""minimaskrcnn: Mask R-CNN from scratch in readable NumPy, every backward pass written by hand."""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# Numba's threading layer, chosen before any parallel kernel runs. Without TBB, Numba picks OpenMP,
# whose idle workers busy-wait; our convolutions alternate Numba kernels with OpenBLAS matrix
# products whose threads busy-wait too, and on 2 cores the pools fight (a 2×64×64×64 conv
# forward+backward took 120–420 ms instead of 13.5 ms). "workqueue" has no spinning workers. It
# does not support launching parallel kernels from several Python threads at once; a user who needs
# that sets NUMBA_THREADING_LAYER themselves, which we then leave alone.
if "NUMBA_THREADING_LAYER" not in _os.environ:
    _os.environ["NUMBA_THREADING_LAYER"] = "workqueue"  # read when numba is first imported
    if "numba" in _sys.modules:  # imported before us: set its live config too
        _sys.modules["numba"].config.THREADING_LAYER = "workqueue"

# The public API, imported on first use (PEP 562) so that ``import minimaskrcnn`` stays light and the
# threading layer above is set before Numba loads:
#   model = minimaskrcnn.load_model("data/shapes_model.npz")           # our trained checkpoint
#   model = minimaskrcnn.load_torchvision_weights("maskrcnn.pth")      # torchvision's COCO weights
#   detections = model.predict([image_uint8_hxwx3])
_LAZY = {
    "MaskRCNN": "minimaskrcnn.model.mask_rcnn",
    "MaskRCNNConfig": "minimaskrcnn.config",
    "get_preset": "minimaskrcnn.config",
    "TrainConfig": "minimaskrcnn.train",
    "train": "minimaskrcnn.train",
    "load_model": "minimaskrcnn.weights",
    "save_model": "minimaskrcnn.weights",
    "evaluate_model": "minimaskrcnn.evaluation.evaluate",
    "load_torchvision_weights": "minimaskrcnn.weights",
    "COCO_CATEGORY_NAMES": "minimaskrcnn.weights",
    "ShapesDataset": "minimaskrcnn.datasets.shapes",
    "coco_evaluate": "minimaskrcnn.evaluation.coco",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'minimaskrcnn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
