"""Serial twins of the parallel kernels: every parallel kernel of the layer kit has one, and both give
the same numbers (bit for bit: each task runs the same loop in the same order either way)."""

from __future__ import annotations

import numpy as np
import pytest
from numba.core.registry import CPUDispatcher

from minimaskrcnn.nn import _conv_kernels, _launch, _norm_kernels, _relu_kernels, _winograd, _winograd43
from minimaskrcnn.nn import functional as F


@pytest.mark.parametrize("module", [_conv_kernels, _norm_kernels, _relu_kernels, _winograd, _winograd43])
def test_every_parallel_kernel_has_a_serial_twin(module):
    kernels = [(name, obj) for name, obj in vars(module).items()
               if isinstance(obj, CPUDispatcher) and obj.targetoptions.get("parallel")]
    assert kernels
    for name, kernel in kernels:
        twin = _launch._TWINS.get(kernel)
        assert twin is not None, f"{module.__name__}.{name} has no serial twin"
        assert not twin.targetoptions.get("parallel")
        assert getattr(module, f"{name}_serial") is twin  # a module global: the graded-mode guard sees it
        assert twin.py_func.__code__ is kernel.py_func.__code__


def test_parallel_start_cost_is_a_median_of_real_calls():
    cost = _launch.parallel_start_cost(calls=20)
    assert np.isfinite(cost) and cost > 0


def test_sized_picks_by_work(monkeypatch):
    kernel = _conv_kernels.im2col
    monkeypatch.setattr(_launch, "SERIAL_BELOW", 100)
    assert _launch.sized(kernel, 99) is _conv_kernels.im2col_serial
    assert _launch.sized(kernel, 100) is kernel
    assert _launch.sized(kernel, 0) is _conv_kernels.im2col_serial


def _cases(rng):
    """Calls of the public functions that reach every twinned kernel, float32 and float64."""
    def conv(method, shape, k, stride=1, padding=1):
        def run(dtype):
            x = rng.standard_normal(shape).astype(dtype)
            w = rng.standard_normal((k, shape[1], 3, 3)).astype(dtype)
            b = rng.standard_normal(k).astype(dtype)
            out, cache = F.conv2d_forward(x, w, b, stride, padding, method=method)
            dout = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
            return (out,) + tuple(F.conv2d_backward(dout, cache))
        return run

    def transposed(method, stride, kernel):
        def run(dtype):
            x = rng.standard_normal((2, 3, 5, 6)).astype(dtype)
            w = rng.standard_normal((3, 4, kernel, kernel)).astype(dtype)
            b = rng.standard_normal(4).astype(dtype)
            out, cache = F.conv_transpose2d_forward(x, w, b, stride, 0, method=method)
            return (out,) + tuple(F.conv_transpose2d_backward(np.ones_like(out), cache))
        return run

    def pool(dtype):
        x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
        out, cache = F.max_pool2d_forward(x, 3, 2, 1)
        return out, F.max_pool2d_backward(np.ones_like(out), cache)

    def upsample(dtype):
        x = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
        out, cache = F.upsample_nearest2d_forward(x, (8, 11))
        return out, F.upsample_nearest2d_backward(np.ones_like(out), cache)

    def group_norm(dtype):
        x = rng.standard_normal((3, 8, 5, 4)).astype(dtype)
        out, cache = F.group_norm_forward(x, 4, np.linspace(0.5, 2, 8).astype(dtype), np.ones(8, dtype))
        return (out,) + tuple(F.group_norm_backward(np.cos(out), cache))

    return {
        "im2col chunks": conv("im2col", (3, 4, 6, 7), 5),
        "im2col stride 2": conv("im2col", (2, 4, 9, 8), 3, stride=2),
        "winograd rows": conv("winograd", (2, 3, 9, 10), 4),
        "winograd maps inner": conv("winograd", (9, 3, 6, 6), 4),
        "winograd4": conv("winograd4", (2, 3, 11, 9), 4),
        "winograd4 maps inner": conv("winograd4", (9, 3, 6, 6), 4),
        "transposed stamps": transposed("im2col", 2, 2),
        "transposed col2im": transposed("col2im", 2, 3),
        "max pool": pool,
        "upsample": upsample,
        "group norm": group_norm,
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", sorted(_cases(np.random.default_rng(0))))
def test_serial_and_parallel_give_the_same_numbers(monkeypatch, case, dtype):
    results = {}
    for label, threshold in (("parallel", 0), ("serial", 1 << 62)):
        monkeypatch.setattr(_launch, "SERIAL_BELOW", threshold)
        results[label] = _cases(np.random.default_rng(0))[case](dtype)
    for par, ser in zip(results["parallel"], results["serial"], strict=True):
        if par is None:
            assert ser is None
            continue
        np.testing.assert_array_equal(par, ser)
