"""Numba kernels behind ``relu``: one pass over the array, split between the threads.

NumPy writes ``max(x, 0)`` and its gradient as single-threaded passes (the gradient with a mask, a
third array); these do each in one parallel pass, for arrays large enough to pay for starting one
(``functional.RELU_KERNEL_SIZE``). The loop references are the NumPy lines in the docstrings, which
``functional.relu_*`` run below that size.
"""

from __future__ import annotations

from numba import njit, prange


@njit(cache=True, parallel=True)
def relu_forward(x, out):
    """out = max(x, 0) for flat x, out (``np.maximum(x, 0)``: NaN kept as NaN, as torch.relu)."""
    zero = x.dtype.type(0.0)
    for i in prange(x.shape[0]):
        v = x[i]
        out[i] = zero if v <= zero else v


@njit(cache=True, parallel=True)
def relu_backward(dout, y, dx):
    """dx = 0 where the forward's output y <= 0, else dout, for flat arrays
    (``dout * np.logical_not(y <= 0)``: a NaN passes its gradient, as in torch's threshold_backward)."""
    zero = dout.dtype.type(0.0)
    for i in prange(dout.shape[0]):
        dx[i] = zero if y[i] <= zero else dout[i]
