"""Numerical gradient checks: is a hand-written backward the derivative of its forward?

For a function ``f`` with array output, checking the full Jacobian costs one forward per input
element *per output element*. Instead we contract with a fixed random upstream gradient ``g``:
the scalar ``L(x) = sum(g * f(x))`` has gradient ``J^T g`` — exactly what ``backward(g)`` returns —
and centred differences on ``L`` need two forwards per input element:

    dL/dx_i ≈ (L(x + h e_i) − L(x − h e_i)) / (2h)        error O(h²)

In float64 with h = 1e-6 the relative error of a correct smooth backward is ~1e-9 or smaller; a
wrong index or a missing term gives errors near 1.
"""

from __future__ import annotations

import numpy as np


def rel_error(a, b, eps: float = 1e-300) -> float:
    """Relative error of ``a`` against ``b`` in the max norm: ``max|a − b| / max(max|a|, max|b|)``.

    A norm-wise error rather than an elementwise one: an element whose true gradient is exactly 0
    (a dead ReLU, an unsampled pixel) picks up ~1e-10 of finite-difference noise, which would be an
    "infinite" elementwise relative error but is harmless next to the gradient's scale.
    Returns 0.0 for empty arrays and for two all-zero arrays.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(b))), eps)
    return float(np.max(np.abs(a - b))) / scale if scale > eps else 0.0


def numerical_gradient(f, x: np.ndarray, dout: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Centred-difference gradient of ``sum(dout * f(x))`` with respect to ``x`` (modified in place,
    then restored). ``f`` takes no arguments and reads ``x``; it must return an array shaped like
    ``dout`` (or a scalar when ``dout`` is a scalar)."""
    grad = np.zeros_like(x, dtype=np.float64)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    while not it.finished:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        fp = np.sum(np.asarray(f(), dtype=np.float64) * dout)
        x[i] = old - h
        fm = np.sum(np.asarray(f(), dtype=np.float64) * dout)
        x[i] = old
        grad[i] = (fp - fm) / (2 * h)
        it.iternext()
    return grad


def check_backward(forward_fn, backward_fn, *inputs, h: float = 1e-6, seed: int = 0,
                   verbose: bool = True) -> list[float]:
    """Compare ``backward_fn`` with centred differences of ``forward_fn``.

    Parameters
    ----------
    forward_fn : callable ``forward_fn(*inputs) -> out`` (an array, or a tuple whose first item is
        the output — so ``conv2d_forward`` with its ``(out, cache)`` works as is).
    backward_fn : callable ``backward_fn(dout, cache) -> grads`` when forward returned a cache, else
        ``backward_fn(dout) -> grads``; ``grads`` is one array or a tuple, one per checked input
        (``None`` entries are skipped).
    inputs : float64 arrays; every floating array is checked, others are passed through.

    Returns the worst relative error per checked input and, when ``verbose``, prints them.
    """
    rng = np.random.default_rng(seed)
    inputs = list(inputs)

    def run():
        res = forward_fn(*inputs)
        return res if isinstance(res, tuple) else (res, None)

    out, cache = run()
    dout = rng.standard_normal(np.shape(out))
    grads = backward_fn(dout, cache) if cache is not None else backward_fn(dout)
    grads = tuple(grads) if isinstance(grads, (tuple, list)) else (grads,)
    errors = []
    for k, x in enumerate(inputs):
        if not (isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating)):
            continue
        if k >= len(grads) or grads[k] is None:
            continue
        if x.dtype != np.float64:
            raise TypeError(f"inputs[{k}] must be float64 for a gradient check, got {x.dtype}")
        if np.shape(grads[k]) != x.shape:
            raise ValueError(f"backward returned a gradient of shape {np.shape(grads[k])} for input {k} "
                             f"of shape {x.shape}")
        num = numerical_gradient(lambda: run()[0], x, dout, h)
        err = rel_error(grads[k], num)
        errors.append(err)
        if verbose:
            print(f"input {k} shape {x.shape}: max relative error {err:.3e}")
    return errors
