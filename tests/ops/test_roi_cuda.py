"""The CUDA tier of RoIAlign, RoIPool and multi-scale RoIAlign.

Without a GPU the kernels run on Numba's CUDA simulator, which must be switched on before numba is
imported: ``test_cuda_kernels_under_simulator`` runs this file again in a fresh process with
``NUMBA_ENABLE_CUDASIM=1``, where the kernel tests below are collected (they are skipped otherwise).
With a real GPU (and the variable unset) set ``MINIMASKRCNN_TEST_GPU=1`` to run them on the device.

The backward kernels add with ``cuda.atomic.add`` in an unspecified order, so their results are
compared with a tolerance (1e-10 / 1e-5) rather than bit for bit; forwards are compared the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minimaskrcnn.ops.poolers import multiscale_roi_align, multiscale_roi_align_backward
from minimaskrcnn.ops.roi_align import roi_align, roi_align_backward
from minimaskrcnn.ops.roi_pool import roi_pool, roi_pool_backward

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
ON_DEVICE = SIM or os.environ.get("MINIMASKRCNN_TEST_GPU") == "1"
device = pytest.mark.skipif(not ON_DEVICE, reason="CUDA kernels: run under NUMBA_ENABLE_CUDASIM=1 "
                            "(test_cuda_kernels_under_simulator does) or with MINIMASKRCNN_TEST_GPU=1")
TOL = {np.float64: 1e-10, np.float32: 1e-5}


@pytest.mark.skipif(SIM, reason="this is the runner; it is not run inside the simulator itself")
def test_cuda_kernels_under_simulator():
    try:
        import numba.cuda  # noqa: F401  (the numba-cuda package provides the simulator)
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"numba-cuda is required in CI to simulate the CUDA kernels: {exc}")
        pytest.skip("numba-cuda not installed")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", __file__],
                         env=env, capture_output=True, text=True, cwd=Path(__file__).parent, timeout=900)
    tail = res.stdout[-3000:] + res.stderr[-2000:]
    assert res.returncode == 0, tail
    assert " passed" in res.stdout and " failed" not in res.stdout, tail
    assert "CUDA kernels: run under" not in res.stdout, "simulator tests were skipped:\n" + tail


@pytest.mark.skipif(ON_DEVICE, reason="only meaningful without a simulator or GPU")
def test_clear_error_without_gpu():
    try:
        from numba import cuda
    except ImportError:
        with pytest.raises(RuntimeError, match="numba-cuda"):
            roi_align(np.ones((1, 1, 3, 3)), np.array([[0, 0, 0, 2, 2.0]]), 2, backend="cuda")
        return
    if cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    for call in (lambda: roi_align(np.ones((1, 1, 3, 3)), np.array([[0, 0, 0, 2, 2.0]]), 2, backend="cuda"),
                 lambda: roi_pool(np.ones((1, 1, 3, 3)), np.array([[0, 0, 0, 2, 2.0]]), 2, backend="cuda")):
        with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
            call()


# --------------------------------------------------------------------------------------------------
# Kernel tests (simulator or GPU): the same cases as the CPU tiers, against torchvision and the
# reference tier.
# --------------------------------------------------------------------------------------------------

def _align_cases():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 7))
    xy = rng.uniform(-3, 8, (6, 2))
    random = np.c_[rng.integers(0, 2, 6), xy, xy + rng.uniform(0, 5, (6, 2))]
    two = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    return {
        "random": (x, random),
        "at_minus_one_and_H": (two, np.array([[0, 0, -1.5, 1, -0.5], [0, 0, 1.5, 1, 2.5],
                                              [0, -1.5, 0, -0.5, 1], [0, 1.5, 0, 2.5, 1],
                                              [0, 0, -1.75, 1, -0.75]])),
        "outside": (x, np.array([[0, -4, -3, 3, 2], [1, 3, 4, 10, 12], [0, 20, 20, 30, 30]])),
        "zero_size": (x, np.array([[0, 2, 2, 2, 2], [1, 2, 1, 2, 5], [0, 1, 3, 5, 3]])),
        "reversed_small": (x, np.array([[0, 5, 5, 4, 4.2], [1, 3, 3, 2.5, 6]])),
        "batch_index": (x, np.array([[1, 1, 1, 5, 4], [1, 0, 0, 3, 3]])),
    }


@device
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
@pytest.mark.parametrize("case", sorted(_align_cases()))
def test_roi_align_cuda(torch, torchvision, dtype, aligned, sampling_ratio, case):
    x, rois = _align_cases()[case]
    x, rois = x.astype(dtype), rois.astype(dtype)
    scale = 0.8 if case == "random" else 1.0
    args = ((2, 3), scale, sampling_ratio, aligned)
    dout = np.random.default_rng(1).standard_normal((len(rois), x.shape[1], 2, 3)).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    want = torchvision.ops.roi_align(xt, torch.tensor(rois), *args)
    want.backward(torch.tensor(dout))
    out = roi_align(x, rois, *args, backend="cuda")
    dx = roi_align_backward(dout, rois, x.shape, *args, backend="cuda")
    assert out.dtype == dtype and dx.dtype == dtype
    np.testing.assert_allclose(out, want.detach().numpy(), rtol=0, atol=TOL[dtype])
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=0, atol=TOL[dtype])
    np.testing.assert_allclose(out, roi_align(x, rois, *args, backend="reference"), rtol=0, atol=TOL[dtype])


@device
def test_roi_align_cuda_negative_grid_and_empty():
    x = np.ones((1, 1, 8, 8))
    out = roi_align(x, np.array([[0, 1, 6, 2, 3.0]]), 1, 1.0, -1, True, backend="cuda")
    np.testing.assert_array_equal(out, 0.0)
    assert roi_align(x, np.zeros((0, 5)), 2, backend="cuda").shape == (0, 1, 2, 2)
    assert not roi_align_backward(np.zeros((0, 1, 2, 2)), np.zeros((0, 5)), x.shape, 2, backend="cuda").any()


@device
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_roi_pool_cuda(torch, torchvision, dtype, scale):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 4, (2, 2, 7, 6)).astype(dtype)  # few levels: many ties
    x[0, 0] = -np.inf  # a plane of −inf: bins keep −FLT_MAX with argmax −1
    rois = np.array([[0, 0.5, 0.5, 2.5, 2.5], [1, -0.5, -1.5, 4.5, 5.5], [0, 3, 3, 10, 12],
                     [1, 20, 20, 30, 30], [0, 5, 5, 1, 2], [1, 2, 2, 2, 2], [0, 1, 1, 5, 6]], dtype=dtype)
    dout = rng.standard_normal((len(rois), 2, 2, 3)).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    rt = torch.tensor(rois)
    want, want_arg = torch.ops.torchvision.roi_pool(xt.detach(), rt, scale, 2, 3)
    out_t = torchvision.ops.roi_pool(xt, rt, (2, 3), scale)
    out_t.backward(torch.tensor(dout))
    out, arg = roi_pool(x, rois, (2, 3), scale, return_argmax=True, backend="cuda")
    np.testing.assert_array_equal(out, want.numpy())
    np.testing.assert_array_equal(arg, want_arg.numpy())
    dx = roi_pool_backward(dout, rois, arg, x.shape, backend="cuda")
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=0, atol=TOL[dtype])


@device
@pytest.mark.parametrize("pooler", ["align", "pool"])
def test_multiscale_cuda_equals_numba(pooler):
    rng = np.random.default_rng(3)
    feats = [rng.standard_normal((1, 2, 16 // 2**i, 16 // 2**i)) for i in range(3)]
    boxes = [np.array([[0, 0, 5, 7], [1, 2, 40, 30], [0, 0, 70, 66.0]])]
    kw = dict(canonical_scale=32, canonical_level=3, pooler=pooler)
    a, ca = multiscale_roi_align(feats, boxes, [(64, 64)], 2, 2, backend="cuda", **kw)
    b, cb = multiscale_roi_align(feats, boxes, [(64, 64)], 2, 2, backend="numba", **kw)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)
    dout = rng.standard_normal(a.shape)
    for ga, gb in zip(multiscale_roi_align_backward(dout, ca), multiscale_roi_align_backward(dout, cb)):
        np.testing.assert_allclose(ga, gb, rtol=0, atol=1e-10)
