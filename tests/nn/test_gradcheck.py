"""The gradient checker itself: it must pass correct backwards and catch wrong ones."""

from __future__ import annotations

import numpy as np
import pytest

from minimaskrcnn.nn.gradcheck import check_backward, numerical_gradient, rel_error


def test_rel_error_golden():
    # max|a − b| = 0.5, scale = max(max|a|, max|b|) = 4 → 0.125.
    assert rel_error(np.array([1.0, 4.0]), np.array([1.5, 4.0])) == pytest.approx(0.125)
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0
    assert rel_error(np.zeros((0, 2)), np.zeros((0, 2))) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        rel_error(np.zeros(2), np.zeros(3))


def test_numerical_gradient_of_a_quadratic_and_restores_input():
    # f(x) = x² elementwise, dout = 1: the gradient is 2x, and centred differences are exact for a
    # quadratic up to rounding.
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    before = x.copy()
    g = numerical_gradient(lambda: x**2, x, np.ones_like(x))
    np.testing.assert_allclose(g, 2 * before, rtol=1e-9)
    np.testing.assert_array_equal(x, before)


def _matmul_forward(a, b):
    return a @ b, (a, b)


def _matmul_backward(dout, cache):
    a, b = cache
    return dout @ b.T, a.T @ dout


def test_correct_backward_passes(rng, capsys):
    a = rng.standard_normal((3, 4))
    b = rng.standard_normal((4, 2))
    errors = check_backward(_matmul_forward, _matmul_backward, a, b)
    assert len(errors) == 2 and max(errors) < 1e-8
    out = capsys.readouterr().out
    assert "input 0 shape (3, 4)" in out and "input 1 shape (4, 2)" in out


def test_correct_backward_without_cache_and_scalar_output(rng):
    x = rng.standard_normal((2, 5))
    (err,) = check_backward(np.tanh, lambda dout: dout * (1 - np.tanh(x) ** 2), x, verbose=False)
    assert err < 1e-8
    # A scalar loss: the upstream gradient is a 0-d array.
    (err,) = check_backward(lambda v: float(np.sum(v**3)), lambda dout: dout * 3 * x**2, x, verbose=False)
    assert err < 1e-8


@pytest.mark.parametrize("bug", ["transposed", "missing_factor", "wrong_sign", "wrong_index"])
def test_wrong_backward_is_caught(rng, bug):
    a = rng.standard_normal((3, 3))
    b = rng.standard_normal((3, 3))

    def bad_backward(dout, cache):
        da, db = _matmul_backward(dout, cache)
        if bug == "transposed":
            da = dout @ cache[1]  # forgot the transpose of b
        elif bug == "missing_factor":
            db = 0.5 * db
        elif bug == "wrong_sign":
            da = -da
        else:
            da = np.roll(da, 1, axis=0)
        return da, db

    errors = check_backward(_matmul_forward, bad_backward, a, b, verbose=False)
    assert max(errors) > 1e-2


def test_backward_may_return_a_list(rng):
    a = rng.standard_normal((2, 3))
    b = rng.standard_normal((3, 2))
    errors = check_backward(_matmul_forward, lambda d, c: list(_matmul_backward(d, c)), a, b, verbose=False)
    assert len(errors) == 2 and max(errors) < 1e-8


def test_skips_none_gradients_and_non_float_inputs(rng):
    x = rng.standard_normal(4)
    idx = np.array([2, 0])  # an integer input is passed through, not differentiated

    def forward(x, idx):
        return x[idx] * 2

    def backward(dout):
        dx = np.zeros_like(x)
        np.add.at(dx, idx, 2 * dout)
        return dx, None

    errors = check_backward(forward, backward, x, idx, verbose=False)
    assert len(errors) == 1 and errors[0] < 1e-8


def test_refuses_float32_inputs():
    x = np.ones(3, dtype=np.float32)
    with pytest.raises(TypeError, match="float64"):
        check_backward(lambda v: v * 2, lambda d: 2 * d, x, verbose=False)


def test_wrong_gradient_shape_is_reported(rng):
    x = rng.standard_normal((2, 3))
    with pytest.raises(ValueError, match=r"input 0"):
        check_backward(lambda v: v * 2, lambda d: (2 * d).ravel(), x, verbose=False)
