"""The layer kit: every forward and backward pass written by hand in NumPy.

- ``functional`` — forward/backward pairs (conv2d, conv_transpose2d, linear, relu, max_pool2d,
  group_norm, frozen_batch_norm, upsample_nearest2d, flatten);
- ``layers`` — ``Parameter``, ``Module`` and the layers built on the pairs (Conv2d, ..., Sequential);
- ``losses`` — softmax cross-entropy, sigmoid BCE with logits, smooth L1, each ``(loss, dinput)``;
- ``optim`` — SGD as torch, the warm-up + step/cosine schedule, global-norm clipping;
- ``gradcheck`` — centred-difference gradient checks for your own layers.

The common names are importable from here (``from minimaskrcnn.nn import Conv2d, SGD``); they are
loaded on first use, so importing a light submodule (``gradcheck``, ``losses``) does not compile the
Numba kernels of the convolution.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "layers": ["Parameter", "Module", "Conv2d", "ConvTranspose2d", "Linear", "ReLU", "MaxPool2d", "GroupNorm",
               "FrozenBatchNorm2d", "Flatten", "Sequential", "ModuleList"],
    "losses": ["softmax_cross_entropy", "sigmoid_binary_cross_entropy_with_logits", "smooth_l1"],
    "optim": ["SGD", "LRSchedule", "clip_grad_norm"],
    "gradcheck": ["check_backward", "numerical_gradient", "rel_error"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
