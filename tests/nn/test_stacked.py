"""stacked_matmul: the same products as np.matmul, split between threads, BLAS's thread count restored."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from minimaskrcnn.nn import _stacked
from minimaskrcnn.nn._stacked import stacked_matmul


@pytest.fixture
def always_split(monkeypatch):
    """Split every stack, however small; with BLAS at 2 threads while the test runs."""
    blas = _stacked.openblas_threads()
    if blas is None:
        pytest.skip("numpy's BLAS is not OpenBLAS with a settable thread count")
    monkeypatch.setattr(_stacked, "MIN_SPLIT_FLOPS", 0)
    before = blas.get()
    blas.set(2)
    yield blas
    blas.set(before)


def _operands(rng, shape_a, shape_b, dtype, transpose_b=False):
    a = rng.standard_normal(shape_a).astype(dtype)
    b = rng.standard_normal(shape_b).astype(dtype)
    if transpose_b:
        b = b.transpose(0, 2, 1)  # a strided view, as the filter gradient's Vᵀ
    return a, b


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape_a, shape_b, transpose_b", [
    ((16, 8, 5), (16, 5, 7), False),
    ((36, 3, 4), (36, 6, 4), True),
    ((3, 4, 5), (3, 5, 2), False),   # an odd count: runs of 1 and 2 products
    ((1, 4, 5), (1, 5, 2), False),   # one product: not split
    ((4, 5), (7, 5, 3), False),      # a shared left factor (the 1×1 convolution's stack)
    ((7, 4, 5), (5, 3), False),      # a shared right factor
    ((16, 0, 5), (16, 5, 3), False),  # empty products
])
def test_equals_numpy_matmul(always_split, dtype, shape_a, shape_b, transpose_b):
    rng = np.random.default_rng(0)
    a, b = _operands(rng, shape_a, shape_b, dtype, transpose_b)
    expected = np.matmul(a, b)
    got = stacked_matmul(a, b)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5 if dtype == np.float32 else 1e-10, atol=1e-5)
    out = np.full_like(expected, np.nan)
    assert stacked_matmul(a, b, out=out) is out
    np.testing.assert_allclose(out, expected, rtol=1e-5 if dtype == np.float32 else 1e-10, atol=1e-5)
    assert always_split.get() == 2  # restored


def test_two_dimensional_operands_are_a_plain_product(always_split):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((4, 5)), rng.standard_normal((5, 3))
    np.testing.assert_array_equal(stacked_matmul(a, b), a @ b)


def test_split_runs_on_several_threads_with_one_blas_thread(always_split, monkeypatch):
    seen = []
    real = np.matmul

    def spy(a, b, out=None):
        seen.append((threading.get_ident(), always_split.get(), a.shape[0]))
        return real(a, b, out=out)

    monkeypatch.setattr(_stacked.np, "matmul", spy)
    rng = np.random.default_rng(2)
    a, b = _operands(rng, (16, 8, 8), (16, 8, 8), np.float64)
    got = stacked_matmul(a, b)
    monkeypatch.undo()
    np.testing.assert_allclose(got, np.matmul(a, b), rtol=1e-12)
    assert len(seen) == 2 and len({ident for ident, _, _ in seen}) == 2  # two runs, two threads
    assert all(threads == 1 for _, threads, _ in seen)  # BLAS single-threaded inside the runs
    assert sorted(n for _, _, n in seen) == [8, 8]
    assert always_split.get() == 2


def test_small_stacks_and_single_thread_blas_are_not_split(monkeypatch):
    blas = _stacked.openblas_threads()
    if blas is None:
        pytest.skip("numpy's BLAS is not OpenBLAS with a settable thread count")
    calls = []
    real = np.matmul
    monkeypatch.setattr(_stacked.np, "matmul",
                        lambda a, b, out=None: calls.append(a.shape) or real(a, b, out=out))
    rng = np.random.default_rng(3)
    a, b = _operands(rng, (16, 8, 8), (16, 8, 8), np.float64)
    stacked_matmul(a, b)  # 16·8·8·8·2 FLOPs, far below MIN_SPLIT_FLOPS
    assert calls == [(16, 8, 8)]
    before = blas.get()
    try:
        blas.set(1)
        monkeypatch.setattr(_stacked, "MIN_SPLIT_FLOPS", 0)
        calls.clear()
        stacked_matmul(a, b)
        assert calls == [(16, 8, 8)]
    finally:
        blas.set(before)


def test_a_failing_run_restores_blas_threads_and_releases_the_lock(always_split):
    a = np.ones((4, 3, 5))
    b = np.ones((4, 4, 2))  # inner sizes differ
    with pytest.raises(ValueError):
        stacked_matmul(a, b, out=np.empty((4, 3, 2)))
    assert always_split.get() == 2
    assert _stacked._split_lock.acquire(blocking=False)
    _stacked._split_lock.release()


def test_a_failing_run_waits_for_the_other_threads_runs(always_split, monkeypatch):
    """When this thread's run fails, the call still waits for the helper's run before it raises: a
    run left going would call np.matmul after the call returned (BLAS restored, the lock free)."""
    main, finished = threading.get_ident(), []
    real = np.matmul

    def spy(a, b, out=None):
        if threading.get_ident() == main:
            raise ValueError("this thread's run fails")
        time.sleep(0.05)  # the helper's run ends well after this thread's failed
        finished.append(a.shape[0])
        return real(a, b, out=out)

    monkeypatch.setattr(_stacked.np, "matmul", spy)
    rng = np.random.default_rng(6)
    a, b = _operands(rng, (16, 8, 8), (16, 8, 8), np.float64)
    with pytest.raises(ValueError, match="this thread's run fails"):
        stacked_matmul(a, b)
    assert finished == [8]  # the helper's half had finished when the call raised
    assert always_split.get() == 2


def test_a_second_caller_meanwhile_runs_a_plain_product(always_split, monkeypatch):
    """While one thread splits a stack, another thread's stack runs as one np.matmul (not split)."""
    rng = np.random.default_rng(4)
    a, b = _operands(rng, (8, 6, 6), (8, 6, 6), np.float64)
    assert _stacked._split_lock.acquire(blocking=False)  # as if another thread were splitting
    try:
        calls = []
        real = np.matmul
        monkeypatch.setattr(_stacked.np, "matmul", lambda x, y, out=None: calls.append(x.shape) or
                            real(x, y, out=out))
        got = stacked_matmul(a, b)
    finally:
        _stacked._split_lock.release()
    assert calls == [(8, 6, 6)]
    np.testing.assert_allclose(got, np.matmul(a, b), rtol=1e-12)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_splits_with_its_own_threads(always_split):
    """The child of a fork has none of the parent's pool threads: it starts its own."""
    rng = np.random.default_rng(5)
    a, b = _operands(rng, (16, 8, 8), (16, 8, 8), np.float64)
    stacked_matmul(a, b)  # the parent's pool exists
    code = (
        "import os, sys, numpy as np\n"
        "from minimaskrcnn.nn import _stacked\n"
        "_stacked.MIN_SPLIT_FLOPS = 0\n"
        "_stacked.openblas_threads().set(2)\n"
        "a = np.ones((16, 8, 8)); _stacked.stacked_matmul(a, a)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    ok = np.allclose(_stacked.stacked_matmul(a, a), a @ a)\n"
        "    os._exit(0 if ok else 1)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "sys.exit(os.waitstatus_to_exitcode(status))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], timeout=120)
    assert done.returncode == 0
