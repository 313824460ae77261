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
