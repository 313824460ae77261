"""minimaskrcnn: Mask R-CNN from scratch in readable NumPy, every backward pass written by hand."""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# Numba's threading layer, chosen before any parallel kernel runs: Intel TBB when it is installed
# (the ``tbb`` extra, part of ``test``), else Numba's own "workqueue"; never OpenMP.
#
# - OpenMP's idle workers busy-wait; our convolutions alternate Numba kernels with OpenBLAS matrix
#   products whose threads busy-wait too, and on 2 cores the pools fight (a 2×64×64×64 conv
#   forward+backward took 120–420 ms instead of 13.5 ms). Cutting OpenMP's spin (GOMP_SPINCOUNT)
#   made the shapes training step 10 % faster, but GNU OpenMP is one runtime per process: torch,
#   imported later, binds to the same libgomp and inherited the short spin, which slowed its own
#   2×64×64×64 convolution from 9.3 to 12–19 ms.
# - "workqueue" has no spinning workers, but every parallel kernel wakes both of its sleeping
#   workers twice (once to set their thread count, once for the work) while the calling thread
#   sleeps, and on 2 cores a kernel's two halves often ran one after the other: the shapes training
#   step (trained weights, 2 threads) took 168–304 ms, median 214–228 ms, for a constant CPU time.
# - TBB's calling thread takes part in the work and its workers yield while they wait briefly:
#   the same step took 150–218 ms, median 163–165 ms (runs of ``minimaskrcnn bench train`` within
#   half an hour on one machine), with bit-identical weights after three SGD steps; torch's step
#   alongside was unchanged (250 ms).
#
# pip's tbb wheel puts libtbb in the environment's lib folder, which the dynamic loader does not
# search: loading it here by path lets Numba's TBB layer find it (by its soname) later, also when
# the user asked for TBB themselves. A layer the user chose (NUMBA_THREADING_LAYER) is left alone;
# "workqueue" does not support launching parallel kernels from several Python threads at once, TBB
# does.
_TBB_SONAME = "libtbb.so.12"


def _preload_pip_tbb() -> None:
    """Load libtbb from this environment's lib folder (where pip's tbb wheel puts it), if it is there,
    so that Numba's TBB layer can be loaded; nothing otherwise (Numba then falls back)."""
    import ctypes
    import site

    if not _sys.platform.startswith("linux"):
        return
    for prefix in (_sys.prefix, getattr(site, "USER_BASE", None) or ""):
        path = _os.path.join(prefix, "lib", _TBB_SONAME)
        if prefix and _os.path.exists(path):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                continue
            return


_user_layer = _os.environ.get("NUMBA_THREADING_LAYER", "").lower()
if _user_layer in ("", "tbb", "default", "safe", "threadsafe", "forksafe"):  # settings that may pick TBB
    _preload_pip_tbb()
if "NUMBA_THREADING_LAYER" not in _os.environ:
    # "default": the first of this priority list that loads (Numba's own order tries OpenMP second)
    _os.environ["NUMBA_THREADING_LAYER"] = "default"  # read when numba is first imported
    _os.environ.setdefault("NUMBA_THREADING_LAYER_PRIORITY", "tbb workqueue omp")
    if "numba" in _sys.modules:  # imported before us: set its live config too
        _sys.modules["numba"].config.THREADING_LAYER = "default"
        _sys.modules["numba"].config.THREADING_LAYER_PRIORITY = \
            _os.environ["NUMBA_THREADING_LAYER_PRIORITY"].split()

# OpenBLAS's idle worker threads keep polling for new work for 2^28 cycles (about 0.1 s) after each
# matrix product before they sleep. Our layers run a Numba kernel right after most products (the
# Winograd transforms, im2col, the next layer), and on 2 cores the polling workers take the cores
# from Numba's threads: a transform right after a product ran 2x slower than alone, and the shapes
# training step spent 560 ms of CPU time for 290 ms of wall time. With the workers sleeping after
# 2^16 cycles (tens of microseconds: still awake between the back-to-back products of one layer)
# the same step took 230-258 ms (CPU 380-390 ms) on the same machine. OpenBLAS reads this when it
# loads, i.e. when numpy is first imported: it only takes effect when minimaskrcnn is imported
# before numpy (the command line always is), and a value the user set is left alone.
if "OPENBLAS_THREAD_TIMEOUT" not in _os.environ and "numpy" not in _sys.modules:
    _os.environ["OPENBLAS_THREAD_TIMEOUT"] = "16"

# glibc hands every allocation above 128 KiB (raised up to 32 MiB after frees) out as a fresh mmap and
# unmaps it when freed, so a training step's activations, gradients and transformed operands, all
# allocated anew each step, arrive as untouched pages: the shapes training step took 7,000 page
# faults (28 MB zeroed by the kernel) every step. Served from the heap and kept there when freed,
# the next step reuses the same memory: no faults, and the step took 227-245 ms instead of 270-313
# (best of 6 steps, same machine, alternated runs). The price: freed memory is kept for reuse (up to
# 1 GiB) rather than returned to the system. Set only on glibc, only when the process has not set
# glibc's own MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_; torch, when loaded in the same
# process, uses the same malloc.
_MALLOC_KEEP = 1 << 30


def _keep_freed_memory() -> None:
    if _sys.platform != "linux" or any(k in _os.environ for k in ("MALLOC_MMAP_THRESHOLD_",
                                                                   "MALLOC_TRIM_THRESHOLD_")):
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    mallopt(m_mmap_threshold, _MALLOC_KEEP)
    mallopt(m_trim_threshold, _MALLOC_KEEP)


_keep_freed_memory()

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
