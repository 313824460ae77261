"""Losses: hand-worked golden values, gradient checks, and equality with torch (value and gradient)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minimaskrcnn.nn.gradcheck import check_backward
from minimaskrcnn.nn.losses import (
    sigmoid_binary_cross_entropy_with_logits,
    smooth_l1,
    softmax_cross_entropy,
)


def _torch_loss_and_grad(torch, fn, x, *args, **kwargs):
    """Value of a torch loss and its gradient with respect to ``x`` (a NumPy array)."""
    tx = torch.tensor(x, requires_grad=True)
    targs = [torch.from_numpy(np.asarray(a)) if isinstance(a, np.ndarray) else a for a in args]
    tkw = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    loss = fn(tx, *targs, **tkw)
    loss.backward()
    return loss.item(), tx.grad.numpy()


def _close(a, b, tol):
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


# ----------------------------------------------------------------------------- softmax cross-entropy


def test_cross_entropy_golden():
    # Two equal logits: p = (1/2, 1/2), so loss = −log(1/2) = log 2 and dlogits = p − onehot(0)
    # = (−1/2, +1/2). Second item: logits (log 3, 0) give p = (3/4, 1/4); with label 1 the loss is
    # −log(1/4) = log 4 and the gradient (3/4, 1/4 − 1) = (3/4, −3/4). Mean over 2 items halves both.
    logits = np.array([[0.0, 0.0], [math.log(3.0), 0.0]])
    loss, grad = softmax_cross_entropy(logits, np.array([0, 1]))
    assert loss == pytest.approx((math.log(2) + math.log(4)) / 2, abs=1e-15)
    np.testing.assert_allclose(grad, [[-0.25, 0.25], [0.375, -0.375]], atol=1e-15)
    loss_sum, grad_sum = softmax_cross_entropy(logits, np.array([0, 1]), reduction="sum")
    assert loss_sum == pytest.approx(math.log(2) + math.log(4), abs=1e-15)
    np.testing.assert_allclose(grad_sum, 2 * grad, atol=1e-15)


def test_cross_entropy_weighted_mean_golden():
    # Torch's weighted mean divides by the total weight of the items, not by N: with class weights
    # (1, 3) and labels (0, 1) on zero logits, each item has loss log 2, so the mean is
    # (1·log 2 + 3·log 2) / (1 + 3) = log 2, while a plain mean of weighted losses would be 2·log 2.
    logits = np.zeros((2, 2))
    loss, grad = softmax_cross_entropy(logits, np.array([0, 1]), weight=np.array([1.0, 3.0]))
    assert loss == pytest.approx(math.log(2), abs=1e-15)
    # Gradient row i: w[y_i] / 4 · (p − onehot): row 0 = 1/4·(−1/2, 1/2), row 1 = 3/4·(1/2, −1/2).
    np.testing.assert_allclose(grad, [[-0.125, 0.125], [0.375, -0.375]], atol=1e-15)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("use_weight", [False, True])
def test_cross_entropy_matches_torch(torch, rng, reduction, use_weight):
    F = torch.nn.functional
    n, c = 13, 5
    logits = rng.standard_normal((n, c)) * 3
    labels = rng.integers(0, c, n)
    labels[[2, 7]] = -1  # ignored, as the samplers mark them
    weight = rng.uniform(0.5, 2.0, c) if use_weight else None
    loss, grad = softmax_cross_entropy(logits, labels, weight=weight, ignore_index=-1, reduction=reduction)
    kw = {"weight": torch.from_numpy(weight)} if use_weight else {}
    t_loss, t_grad = _torch_loss_and_grad(
        torch, lambda x: F.cross_entropy(x, torch.from_numpy(labels), ignore_index=-1, reduction=reduction,
                                         **kw), logits)
    _close(loss, t_loss, 1e-10)
    _close(grad, t_grad, 1e-10)
    assert grad.dtype == np.float64
    assert np.all(grad[[2, 7]] == 0)

    # float32 in, float32 out, within float32 precision of torch.
    l32, g32 = softmax_cross_entropy(logits.astype(np.float32), labels,
                                     weight=None if weight is None else weight.astype(np.float32),
                                     ignore_index=-1, reduction=reduction)
    assert g32.dtype == np.float32
    _close(l32, t_loss, 1e-5)
    _close(g32, t_grad, 1e-5)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 6), c=st.integers(1, 6), seed=st.integers(0, 2**31 - 1),
       reduction=st.sampled_from(["mean", "sum"]))
def test_cross_entropy_gradient_check(n, c, seed, reduction):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, c))
    labels = rng.integers(0, c, n)
    labels[0] = -100 if n > 1 else labels[0]
    weight = rng.uniform(0.1, 2.0, c)

    def forward(x):
        return softmax_cross_entropy(x, labels, weight=weight, reduction=reduction)[0]

    def backward(dout):
        return dout * softmax_cross_entropy(logits, labels, weight=weight, reduction=reduction)[1]

    (err,) = check_backward(forward, backward, logits, verbose=False)
    assert err < 1e-7


def test_cross_entropy_extreme_logits_are_finite():
    # A margin of 1e4 would overflow exp() without the max subtraction.
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is harmless
        loss, grad = softmax_cross_entropy(logits, np.array([1, 2]))
    # Item 0: loss ≈ 1e4 − (−1e4) = 2e4; item 1: two equal maxima, loss = log 2. Mean of the two.
    assert loss == pytest.approx((2e4 + math.log(2)) / 2, rel=1e-12)
    assert np.all(np.isfinite(grad))


def test_cross_entropy_all_ignored_is_nan_like_torch(torch):
    # Decided behaviour: a "mean" over zero counted items is 0/0 = NaN, exactly as torch, with a zero
    # gradient; "sum" gives 0 and a zero gradient — the safe choice for a detection model, divided
    # by max(1, count).
    F = torch.nn.functional
    logits = np.random.default_rng(1).standard_normal((3, 4))
    labels = np.array([-1, -1, -1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from 0/0 may leak to the user
        loss, grad = softmax_cross_entropy(logits, labels, ignore_index=-1)
        loss_sum, grad_sum = softmax_cross_entropy(logits, labels, ignore_index=-1, reduction="sum")
        loss_empty, grad_empty = softmax_cross_entropy(np.zeros((0, 4)), np.zeros(0, dtype=np.int64))
    assert math.isnan(loss) and np.all(grad == 0)
    assert loss_sum == 0.0 and np.all(grad_sum == 0)
    assert math.isnan(loss_empty) and grad_empty.shape == (0, 4)
    t_loss, t_grad = _torch_loss_and_grad(
        torch, lambda x: F.cross_entropy(x, torch.from_numpy(labels), ignore_index=-1), logits)
    assert math.isnan(t_loss)
    np.testing.assert_array_equal(grad, t_grad)


def test_cross_entropy_zero_total_weight_matches_torch(torch):
    # Counted items whose class weights are all 0: torch gives NaN loss and NaN gradient rows for
    # the counted items, 0 for ignored ones. We reproduce that rather than hide it.
    F = torch.nn.functional
    logits = np.random.default_rng(2).standard_normal((3, 2))
    labels = np.array([0, -100, 0])
    weight = np.array([0.0, 1.0])
    loss, grad = softmax_cross_entropy(logits, labels, weight=weight)
    t_loss, t_grad = _torch_loss_and_grad(
        torch, lambda x: F.cross_entropy(x, torch.from_numpy(labels), weight=torch.from_numpy(weight)),
        logits)
    assert math.isnan(loss) and math.isnan(t_loss)
    np.testing.assert_array_equal(np.isnan(grad), np.isnan(t_grad))
    assert np.all(grad[1] == 0)


def test_cross_entropy_bad_input():
    logits = np.zeros((3, 4))
    with pytest.raises(ValueError, match="labels"):
        softmax_cross_entropy(logits, np.array([0, 1, 4]))
    with pytest.raises(ValueError, match="labels"):
        softmax_cross_entropy(logits, np.array([0, -2, 1]))
    with pytest.raises(TypeError, match="labels"):
        softmax_cross_entropy(logits, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="labels"):
        softmax_cross_entropy(logits, np.array([0, 1]))
    with pytest.raises(ValueError, match="logits"):
        softmax_cross_entropy(np.zeros(3), np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="logits"):
        softmax_cross_entropy(np.zeros((3, 4), dtype=np.int64), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="weight"):
        softmax_cross_entropy(logits, np.array([0, 1, 2]), weight=np.ones(3))
    with pytest.raises(ValueError, match="reduction"):
        softmax_cross_entropy(logits, np.array([0, 1, 2]), reduction="none")


# ----------------------------------------------------------------------------- sigmoid BCE


def test_bce_golden():
    # x = 0: σ = 1/2, loss = log 2 for any target; gradient σ − t = 1/2 − t.
    # x = log 3: σ = 3/4; with t = 1 the loss is −log(3/4) and the gradient 3/4 − 1 = −1/4.
    x = np.array([0.0, 0.0, math.log(3.0)])
    t = np.array([0.0, 1.0, 1.0])
    loss, grad = sigmoid_binary_cross_entropy_with_logits(x, t, reduction="sum")
    assert loss == pytest.approx(2 * math.log(2) - math.log(0.75), abs=1e-15)
    np.testing.assert_allclose(grad, [0.5, -0.5, -0.25], atol=1e-15)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_bce_matches_torch(torch, rng, reduction):
    F = torch.nn.functional
    x = rng.standard_normal((4, 7, 7)) * 5
    t = rng.uniform(0, 1, x.shape)
    t[0] = (t[0] > 0.5).astype(np.float64)  # hard and soft targets
    loss, grad = sigmoid_binary_cross_entropy_with_logits(x, t, reduction=reduction)
    t_loss, t_grad = _torch_loss_and_grad(
        torch, lambda a: F.binary_cross_entropy_with_logits(a, torch.from_numpy(t), reduction=reduction), x)
    _close(loss, t_loss, 1e-10)
    _close(grad, t_grad, 1e-10)
    l32, g32 = sigmoid_binary_cross_entropy_with_logits(x.astype(np.float32), t.astype(np.float32),
                                                        reduction=reduction)
    assert g32.dtype == np.float32
    _close(l32, t_loss, 1e-5)
    _close(g32, t_grad, 1e-5)


def test_bce_extreme_logits_no_overflow(torch):
    F = torch.nn.functional
    x = np.array([1e4, -1e4, 1e4, -1e4, 800.0, -800.0, 40.0, -40.0])
    t = np.array([0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        loss, grad = sigmoid_binary_cross_entropy_with_logits(x, t, reduction="sum")
        l32, g32 = sigmoid_binary_cross_entropy_with_logits(x.astype(np.float32), t.astype(np.float32),
                                                            reduction="sum")
    # Confidently wrong: loss = |x| (1e4 twice, 800 twice); confidently right: ~e^{-|x|} ≈ 0
    # (e^{-40} ≈ 4e-18 twice).
    assert loss == pytest.approx(2e4 + 1600 + 2 * math.exp(-40), rel=1e-15)
    np.testing.assert_array_equal(grad[:6], [1.0, 0.0, 0.0, -1.0, 1.0, -1.0])
    assert np.isfinite(l32) and np.all(np.isfinite(g32))
    t_loss, t_grad = _torch_loss_and_grad(
        torch, lambda a: F.binary_cross_entropy_with_logits(a, torch.from_numpy(t), reduction="sum"), x)
    _close(loss, t_loss, 1e-10)
    _close(grad, t_grad, 1e-10)


def test_bce_gradient_check(rng):
    x = rng.standard_normal((3, 5)) * 2
    t = rng.uniform(0, 1, (3, 5))

    def backward(dout):
        return dout * sigmoid_binary_cross_entropy_with_logits(x, t)[1]

    (err,) = check_backward(lambda a: sigmoid_binary_cross_entropy_with_logits(a, t)[0], backward, x,
                            verbose=False)
    assert err < 1e-7


def test_bce_empty_and_bad_input():
    loss, grad = sigmoid_binary_cross_entropy_with_logits(np.zeros((0, 28, 28)), np.zeros((0, 28, 28)))
    assert math.isnan(loss) and grad.shape == (0, 28, 28)  # mean of nothing, as torch
    loss, grad = sigmoid_binary_cross_entropy_with_logits(np.zeros((0, 28, 28)), np.zeros((0, 28, 28)),
                                                          reduction="sum")
    assert loss == 0.0
    with pytest.raises(ValueError, match="targets"):
        sigmoid_binary_cross_entropy_with_logits(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(TypeError, match="targets"):
        sigmoid_binary_cross_entropy_with_logits(np.zeros((2, 3)), np.zeros((2, 3), dtype=bool))


# ----------------------------------------------------------------------------- smooth L1


def test_smooth_l1_golden():
    # beta = 1, d = input − target = (0, 0.5, −1, 3):
    #   |0|   < 1 → 0.5·0²/1 = 0,       grad 0
    #   |0.5| < 1 → 0.5·0.25 = 0.125,   grad 0.5
    #   |−1| = beta → linear branch: 1 − 0.5 = 0.5, grad −1 (branches meet here)
    #   |3|  ≥ 1 → 3 − 0.5 = 2.5,       grad 1
    loss, grad = smooth_l1(np.array([0.0, 0.5, -1.0, 3.0]), np.zeros(4), beta=1.0, reduction="sum")
    assert loss == pytest.approx(3.125, abs=1e-15)
    np.testing.assert_array_equal(grad, [0.0, 0.5, -1.0, 1.0])
    # beta = 0 is L1: loss = 0 + 0.5 + 1 + 3 = 4.5, grad sign(d) with sign(0) = 0.
    loss, grad = smooth_l1(np.array([0.0, 0.5, -1.0, 3.0]), np.zeros(4), beta=0.0, reduction="sum")
    assert loss == pytest.approx(4.5, abs=1e-15)
    np.testing.assert_array_equal(grad, [0.0, 1.0, -1.0, 1.0])


@pytest.mark.parametrize("beta", [0.0, 1 / 9, 1.0, 2.5])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_smooth_l1_matches_torch(torch, rng, beta, reduction):
    F = torch.nn.functional
    x = rng.standard_normal((17, 4))
    y = rng.standard_normal((17, 4))
    y[0] = x[0]  # d = 0 exactly
    y[1, :2] = x[1, :2] - beta  # |d| = beta exactly (the branch boundary)
    loss, grad = smooth_l1(x, y, beta=beta, reduction=reduction)
    t_loss, t_grad = _torch_loss_and_grad(
        torch, lambda a: F.smooth_l1_loss(a, torch.from_numpy(y), beta=beta, reduction=reduction), x)
    _close(loss, t_loss, 1e-10)
    _close(grad, t_grad, 1e-10)
    l32, g32 = smooth_l1(x.astype(np.float32), y.astype(np.float32), beta=beta, reduction=reduction)
    assert g32.dtype == np.float32
    _close(l32, t_loss, 1e-5)


@pytest.mark.parametrize("beta", [0.0, 1 / 9, 1.0])
def test_smooth_l1_gradient_check(rng, beta):
    x = rng.standard_normal((5, 4))
    y = x + rng.choice([-1, 1], x.shape) * rng.uniform(0.01, 2.0, x.shape)  # keep away from kinks
    y[np.abs(np.abs(x - y) - beta) < 1e-3] += 0.01

    def backward(dout):
        return dout * smooth_l1(x, y, beta=beta)[1]

    (err,) = check_backward(lambda a: smooth_l1(a, y, beta=beta)[0], backward, x, verbose=False)
    assert err < 1e-7


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3),
       scale=st.sampled_from([1e-3, 1.0, 30.0, 1e4]), beta=st.sampled_from([0.0, 1 / 9, 1.0]),
       seed=st.integers(0, 2**31 - 1))
def test_bce_and_smooth_l1_match_torch_property(torch, shape, scale, beta, seed):
    F = torch.nn.functional
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * scale
    t = rng.uniform(0, 1, shape)
    loss, grad = sigmoid_binary_cross_entropy_with_logits(x, t)
    t_loss, t_grad = _torch_loss_and_grad(
        torch, lambda a: F.binary_cross_entropy_with_logits(a, torch.from_numpy(t)), x)
    _close(loss, t_loss, 1e-10 * max(1.0, abs(t_loss)))
    _close(grad, t_grad, 1e-10)
    y = rng.standard_normal(shape) * scale
    loss, grad = smooth_l1(x, y, beta=beta, reduction="sum")
    t_loss, t_grad = _torch_loss_and_grad(
        torch, lambda a: F.smooth_l1_loss(a, torch.from_numpy(y), beta=beta, reduction="sum"), x)
    _close(loss, t_loss, 1e-10 * max(1.0, abs(t_loss)))
    _close(grad, t_grad, 1e-10)


def test_smooth_l1_normaliser_pattern_gives_zero_for_no_items():
    # The documented detection-model pattern: sum, then divide by max(1, count).
    pred, target = np.zeros((0, 4)), np.zeros((0, 4))
    loss, grad = smooth_l1(pred, target, beta=1 / 9, reduction="sum")
    n = max(1, pred.shape[0])
    assert loss / n == 0.0 and grad.shape == (0, 4)
    assert math.isnan(smooth_l1(pred, target)[0])  # the mean is NaN, as torch


def test_smooth_l1_bad_input():
    with pytest.raises(ValueError, match="beta"):
        smooth_l1(np.zeros(3), np.zeros(3), beta=-1.0)
    with pytest.raises(ValueError, match="target"):
        smooth_l1(np.zeros(3), np.zeros(4))
    with pytest.raises(TypeError, match="input"):
        smooth_l1([0.0, 1.0], np.zeros(2))
