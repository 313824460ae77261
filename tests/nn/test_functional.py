"""minimaskrcnn.nn.functional (all but the convolutions, see test_conv.py) against torch autograd,
finite differences and hand-worked cases.

Tolerances: float64 agrees with torch to 1e-10 (norm-wise relative error, see ``rel_error``) and
float32 to 1e-5; gradient checks reach 1e-7 in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minimaskrcnn.nn import functional as F
from minimaskrcnn.nn.gradcheck import check_backward, rel_error

TOL = {np.float64: 1e-10, np.float32: 1e-5}
DTYPES = st.sampled_from([np.float64, np.float32])


def torch_forward_backward(torch, fn, arrays, dout):
    """Run ``fn`` on tensors made from ``arrays`` (None passes through), back-propagate ``dout``;
    return the output and the gradient of every array (None for None)."""
    tensors = [None if a is None else torch.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    out.backward(torch.tensor(dout))
    grads = [None if t is None else t.grad.numpy() for t in tensors]
    return out.detach().numpy(), grads


def assert_close(ours, theirs, dtype, what=""):
    assert ours.dtype == dtype, f"{what}: dtype {ours.dtype}, expected {dtype}"
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs {theirs.shape}"
    err = rel_error(ours, theirs)
    assert err <= TOL[dtype], f"{what}: relative error {err:.3e} > {TOL[dtype]:.0e}"


def check_pair_against_torch(torch, forward, backward, torch_fn, arrays, dtype, seed=0):
    """Our forward/backward pair against torch autograd on the same inputs and upstream gradient."""
    out, cache = forward(*arrays)
    dout = np.random.default_rng(seed).standard_normal(out.shape).astype(dtype)
    t_out, t_grads = torch_forward_backward(torch, torch_fn, arrays, dout)
    assert_close(out, t_out, dtype, "out")
    grads = backward(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    for k, (g, tg) in enumerate(zip(grads, t_grads)):
        if tg is None:
            assert g is None
        else:
            assert_close(g, tg, dtype, f"grad {k}")


# --------------------------------------------------------------------------------------------------
# linear
# --------------------------------------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 4), d_in=st.integers(1, 5), d_out=st.integers(1, 5), bias=st.booleans(), dtype=DTYPES)
def test_linear_matches_torch(torch, n, d_in, d_out, bias, dtype):
    rng = np.random.default_rng(n * 100 + d_in * 10 + d_out)
    x = rng.standard_normal((n, d_in)).astype(dtype)
    w = rng.standard_normal((d_out, d_in)).astype(dtype)
    b = rng.standard_normal(d_out).astype(dtype) if bias else None
    check_pair_against_torch(torch, F.linear_forward, F.linear_backward, torch.nn.functional.linear,
                             [x, w, b], dtype)


def test_linear_gradcheck_and_golden():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((3, 4)), rng.standard_normal((2, 4)), rng.standard_normal(2)
    assert max(check_backward(F.linear_forward, F.linear_backward, x, w, b, verbose=False)) <= 1e-7
    # x = [1, 2], w rows [1, 0] and [3, 4], b = [0.5, -1]: out = [1 + 0.5, 3 + 8 − 1] = [1.5, 10].
    out, _ = F.linear_forward(np.array([[1.0, 2.0]]), np.array([[1.0, 0.0], [3.0, 4.0]]),
                              np.array([0.5, -1.0]))
    np.testing.assert_array_equal(out, [[1.5, 10.0]])


def test_linear_bad_input():
    x, w = np.zeros((2, 3)), np.zeros((4, 3))
    with pytest.raises(ValueError, match="input features"):
        F.linear_forward(x, np.zeros((4, 2)), None)
    with pytest.raises(ValueError, match="x must be 2-D"):
        F.linear_forward(np.zeros((2, 3, 1)), w, None)
    with pytest.raises(TypeError, match="x must have dtype"):
        F.linear_forward(np.zeros((2, 3), dtype=np.int64), w, None)
    with pytest.raises(ValueError, match="b must have shape"):
        F.linear_forward(x, w, np.zeros(3))
    with pytest.raises(TypeError, match="b must have the same dtype"):
        F.linear_forward(x, w, np.zeros(4, dtype=np.float32))


# --------------------------------------------------------------------------------------------------
# relu, flatten
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_relu_matches_torch(torch, dtype):
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 5)).astype(dtype)
    x[0, 0, 0, :3] = 0.0  # exactly zero: torch's gradient there is 0, and so is ours
    check_pair_against_torch(torch, F.relu_forward, F.relu_backward, torch.relu, [x], dtype)


def test_relu_gradcheck_and_golden():
    x = np.random.default_rng(2).standard_normal((3, 7))
    x[np.abs(x) < 0.05] = 0.5  # keep finite differences away from the kink
    assert max(check_backward(F.relu_forward, F.relu_backward, x, verbose=False)) <= 1e-7
    out, cache = F.relu_forward(np.array([-1.0, 0.0, 2.0]))
    np.testing.assert_array_equal(out, [0.0, 0.0, 2.0])
    np.testing.assert_array_equal(F.relu_backward(np.array([5.0, 5.0, 5.0]), cache), [0.0, 0.0, 5.0])
    with pytest.raises(TypeError, match="x must have dtype"):
        F.relu_forward(np.array([1, 2]))


@pytest.mark.parametrize("kernel_size", [0, 1 << 40])  # the parallel pass, its serial twin
def test_relu_kernel_on_views_nan_and_the_cache(torch, monkeypatch, kernel_size):
    # Both kernels: strided views, NaN (torch keeps it, and passes its gradient), -0.0, infinities;
    # the cache is the output, which equals torch's relu.
    monkeypatch.setattr(F, "RELU_KERNEL_SIZE", kernel_size)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6, 5)).transpose(2, 0, 1)[:, ::2]  # non-contiguous
    x[0, 0, :4] = [np.nan, -0.0, np.inf, -np.inf]
    out, cache = F.relu_forward(x)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.relu(tx)
    np.testing.assert_array_equal(out, ty.detach().numpy())
    dout = rng.standard_normal(out.shape)
    ty.backward(torch.tensor(dout))
    np.testing.assert_array_equal(F.relu_backward(dout[..., ::-1].copy()[..., ::-1], cache), tx.grad.numpy())
    with pytest.raises(TypeError, match="dout"):
        F.relu_backward(dout.astype(np.float32), cache)


@pytest.mark.parametrize("shape", [(2, 3), (1, 3, 4, 5), (2, 1, 1, 1)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_flatten_matches_torch(torch, shape, dtype):
    x = np.random.default_rng(3).standard_normal(shape).astype(dtype)
    check_pair_against_torch(torch, F.flatten_forward, F.flatten_backward, lambda t: torch.flatten(t, 1),
                             [x], dtype)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        F.flatten_forward(np.zeros(3))


# --------------------------------------------------------------------------------------------------
# max_pool2d
# --------------------------------------------------------------------------------------------------

@st.composite
def pool_cases(draw):
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = draw(st.one_of(st.none(), st.integers(1, 4)))
    padding = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    h = draw(st.integers(max(1, k[0] - 2 * padding[0]), 7))
    w = draw(st.integers(max(1, k[1] - 2 * padding[1]), 7))
    return (draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w), k, stride, padding


@settings(max_examples=40, deadline=None)
@given(case=pool_cases(), dtype=DTYPES, ties=st.booleans())
def test_max_pool2d_matches_torch(torch, case, dtype, ties):
    shape, k, stride, padding = case
    rng = np.random.default_rng(4)
    # with ties: small integers, so windows often hold several equal maxima; torch's gradient
    # goes to the first one in row-major window order, and so must ours.
    x = (rng.integers(-2, 3, shape) if ties else rng.standard_normal(shape)).astype(dtype)

    def ours(x_):
        return F.max_pool2d_forward(x_, k, stride, padding)

    check_pair_against_torch(torch, ours, F.max_pool2d_backward,
                             lambda t: torch.nn.functional.max_pool2d(t, k, stride, padding), [x], dtype)


def test_max_pool2d_golden():
    # All values negative and padding 1: the padding must act as −inf, not 0, so every output is
    # a real input value. 2×2 input, kernel 2, stride 1, padding 1 → 3×3 outputs; each window
    # holds the pixels it overlaps, e.g. the corner window only x[0, 0] = −4.
    x = np.array([[[[-4.0, -3.0], [-2.0, -1.0]]]])
    out, cache = F.max_pool2d_forward(x, 2, 1, 1)
    np.testing.assert_array_equal(out, [[[[-4, -3, -3], [-2, -1, -1], [-2, -1, -1]]]])
    # x[1, 1] = −1 wins four windows, so it collects four gradients of 1; −3 and −2 two each.
    dx = F.max_pool2d_backward(np.ones((1, 1, 3, 3)), cache)
    np.testing.assert_array_equal(dx, [[[[1, 2], [2, 4]]]])
    # ties: a window of four equal values sends its gradient to the first (top-left) one
    out, cache = F.max_pool2d_forward(np.ones((1, 1, 2, 2)), 2)
    np.testing.assert_array_equal(F.max_pool2d_backward(np.full((1, 1, 1, 1), 7.0), cache),
                                  [[[[7, 0], [0, 0]]]])


def test_max_pool2d_gradcheck():
    x = np.random.default_rng(5).standard_normal((2, 2, 5, 6))
    errors = check_backward(lambda x_: F.max_pool2d_forward(x_, 3, 2, 1), F.max_pool2d_backward, x,
                            verbose=False)
    assert errors[0] <= 1e-7


def test_max_pool2d_bad_input():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match="at most half of kernel_size"):
        F.max_pool2d_forward(x, 2, 1, 2)
    with pytest.raises(ValueError, match="larger than the padded input"):
        F.max_pool2d_forward(x, 5)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        F.max_pool2d_forward(x, 2, 1, -1)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        F.max_pool2d_forward(x, 2, 0)
    with pytest.raises(ValueError, match="x must be 4-D"):
        F.max_pool2d_forward(np.zeros((4, 4)), 2)
    with pytest.raises(TypeError, match="x must have dtype"):
        F.max_pool2d_forward(x.astype(np.uint8), 2)


# --------------------------------------------------------------------------------------------------
# group_norm, frozen_batch_norm
# --------------------------------------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 3), groups=st.integers(1, 3), per_group=st.integers(1, 3),
       spatial=st.sampled_from([(), (1,), (1, 1), (3, 2), (2, 3, 2)]), affine=st.booleans(), dtype=DTYPES,
       method=st.sampled_from(F.GROUP_NORM_METHODS))
def test_group_norm_matches_torch(torch, n, groups, per_group, spatial, affine, dtype, method):
    c = groups * per_group
    if np.prod(spatial) * per_group < 3:
        # A group of 1 element has zero variance; in a group of 2 the normalised values are ±1
        # whatever x is, so the true dx is ~eps-sized cancellation noise: both ill-posed comparisons.
        spatial = spatial + (3,)
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((n, c) + spatial) * 3 + 1).astype(dtype)
    gamma = rng.standard_normal(c).astype(dtype) if affine else None
    beta = rng.standard_normal(c).astype(dtype) if affine else None

    def ours(x_, g_, b_):
        return F.group_norm_forward(x_, groups, g_, b_, eps=1e-5, method=method)

    check_pair_against_torch(torch, ours, F.group_norm_backward,
                             lambda x_, g_, b_: torch.nn.functional.group_norm(x_, groups, g_, b_, 1e-5),
                             [x, gamma, beta], dtype)


@pytest.mark.parametrize("method", F.GROUP_NORM_METHODS)
def test_group_norm_gradcheck(method):
    rng = np.random.default_rng(7)
    x, gamma, beta = rng.standard_normal((2, 6, 3, 4)), rng.standard_normal(6), rng.standard_normal(6)
    errors = check_backward(lambda *a: F.group_norm_forward(a[0], 3, a[1], a[2], method=method),
                            F.group_norm_backward, x, gamma, beta, verbose=False)
    assert len(errors) == 3 and max(errors) <= 1e-7


def test_group_norm_golden():
    # One group of the four values 1, 2, 3, 4: mean 2.5, biased variance (2.25 + .25 + .25 + 2.25)/4
    # = 1.25; with eps = 0 the normalised values are (v − 2.5)/sqrt(1.25); gamma 2 and beta 1 then
    # give 1 + 2·(v − 2.5)/sqrt(1.25).
    x = np.array([[[1.0, 2.0], [3.0, 4.0]]])  # (N=1, C=2, L=2)
    for method in F.GROUP_NORM_METHODS:
        out, _ = F.group_norm_forward(x, 1, np.full(2, 2.0), np.ones(2), eps=0.0, method=method)
        np.testing.assert_allclose(out, 1 + 2 * (x - 2.5) / np.sqrt(1.25), rtol=0, atol=1e-15)


def test_group_norm_bad_input():
    x = np.zeros((2, 6, 3))
    with pytest.raises(ValueError, match="num_groups must be a positive int dividing the 6 channels"):
        F.group_norm_forward(x, 4, None, None)
    with pytest.raises(ValueError, match="gamma must have shape"):
        F.group_norm_forward(x, 3, np.ones(3), None)
    with pytest.raises(TypeError, match="beta must have the same dtype"):
        F.group_norm_forward(x, 3, np.ones(6), np.zeros(6, np.float32))
    with pytest.raises(TypeError, match="x must have dtype"):
        F.group_norm_forward(x.astype(np.int32), 3, None, None)
    with pytest.raises(ValueError, match="method must be one of"):
        F.group_norm_forward(x, 3, None, None, method="torch")
    out, cache = F.group_norm_forward(x, 3, None, None)
    with pytest.raises(ValueError, match="dout must have shape"):
        F.group_norm_backward(out[:1], cache)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_frozen_batch_norm_matches_torchvision(torch, torchvision, dtype):
    rng = np.random.default_rng(8)
    c = 5
    x = rng.standard_normal((2, c, 3, 4)).astype(dtype)
    weight, bias, mean = (rng.standard_normal(c).astype(dtype) for _ in range(3))
    var = rng.uniform(0.1, 2.0, c).astype(dtype)
    module = torchvision.ops.misc.FrozenBatchNorm2d(c, eps=1e-5).to(torch.float64 if dtype == np.float64
                                                                     else torch.float32)
    for name, value in (("weight", weight), ("bias", bias), ("running_mean", mean), ("running_var", var)):
        getattr(module, name).copy_(torch.tensor(value))

    def ours(x_):
        return F.frozen_batch_norm_forward(x_, weight, bias, mean, var, eps=1e-5)

    check_pair_against_torch(torch, ours, F.frozen_batch_norm_backward, module, [x], dtype)
    errors = check_backward(lambda x_: F.frozen_batch_norm_forward(x_, *(a.astype(np.float64) for a in
                                                                         (weight, bias, mean, var))),
                            F.frozen_batch_norm_backward, x.astype(np.float64), verbose=False)
    assert errors[0] <= 1e-7


def test_frozen_batch_norm_golden_and_bad_input():
    # weight 2, running var 3 (eps 1 to keep the numbers round): scale = 2/sqrt(4) = 1;
    # running mean 5, bias 0.5: shift = 0.5 − 5·1 = −4.5, so x = 10 maps to 5.5.
    one = np.ones(1)
    out, cache = F.frozen_batch_norm_forward(np.full((1, 1, 1, 1), 10.0), 2 * one, 0.5 * one, 5 * one,
                                             3 * one, eps=1.0)
    np.testing.assert_array_equal(out, [[[[5.5]]]])
    dx = F.frozen_batch_norm_backward(np.full((1, 1, 1, 1), 3.0), cache)
    np.testing.assert_array_equal(dx, [[[[3.0]]]])
    with pytest.raises(ValueError, match="running_var must have shape"):
        F.frozen_batch_norm_forward(np.zeros((1, 2, 1, 1)), np.ones(2), np.ones(2), np.ones(2), np.ones(3))
    with pytest.raises(ValueError, match="x must be 4-D"):
        F.frozen_batch_norm_forward(np.zeros((2, 1, 1)), one, one, one, one)


# --------------------------------------------------------------------------------------------------
# upsample_nearest2d
# --------------------------------------------------------------------------------------------------

def test_nearest_source_index_golden():
    # 3 → 7: scale 3/7 = 0.42857; dst·scale = 0, .43, .86, 1.29, 1.71, 2.14, 2.57 → floor.
    np.testing.assert_array_equal(F.nearest_source_index(3, 7), [0, 0, 0, 1, 1, 2, 2])
    # 4 → 2 (downsampling): scale 2, every other row.
    np.testing.assert_array_equal(F.nearest_source_index(4, 2), [0, 2])
    # 5 → 10 (exactly twice): dst // 2.
    np.testing.assert_array_equal(F.nearest_source_index(5, 10), np.arange(10) // 2)


def test_nearest_source_index_matches_torch_exhaustively(torch):
    # Every (in, out) pair up to 64 plus FPN-like sizes: torch's float32 index arithmetic included.
    sizes = [(i, o) for i in range(1, 65) for o in range(1, 65)]
    sizes += [(25, 50), (13, 25), (100, 199), (199, 100), (17, 67), (63, 250), (334, 667), (1000, 1333)]
    for in_size, out_size in sizes:
        probe = torch.arange(in_size, dtype=torch.float64).reshape(1, 1, 1, in_size)
        want = torch.nn.functional.interpolate(probe, size=(1, out_size), mode="nearest")
        np.testing.assert_array_equal(F.nearest_source_index(in_size, out_size), want.numpy().ravel(),
                                      err_msg=f"{in_size} -> {out_size}")


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 7), w=st.integers(1, 7), out_h=st.integers(1, 15), out_w=st.integers(1, 15),
       dtype=DTYPES)
def test_upsample_nearest2d_matches_torch(torch, h, w, out_h, out_w, dtype):
    x = np.random.default_rng(9).standard_normal((2, 3, h, w)).astype(dtype)

    def ours(x_):
        return F.upsample_nearest2d_forward(x_, (out_h, out_w))

    check_pair_against_torch(
        torch, ours, F.upsample_nearest2d_backward,
        lambda t: torch.nn.functional.interpolate(t, size=(out_h, out_w), mode="nearest"), [x], dtype)


def test_upsample_nearest2d_kernels_equal_the_numpy_scatter():
    # The Numba scatter-add against the NumPy segment sums, up and down (outputs that copy no input
    # pixel leave it at 0), on a non-contiguous dout.
    rng = np.random.default_rng(11)
    for (h, w), (out_h, out_w) in (((4, 5), (8, 10)), ((3, 7), (7, 3)), ((6, 6), (2, 9))):
        x = rng.standard_normal((2, 3, h, w))
        out, cache = F.upsample_nearest2d_forward(x, (out_h, out_w))
        np.testing.assert_array_equal(out, x[:, :, cache[2][:, None], cache[3][None, :]])
        dout = rng.standard_normal((2, out_w, out_h, 3)).transpose(0, 3, 2, 1)
        want = F._upsample_nearest2d_backward_numpy(dout, cache[2], cache[3], x.shape)
        np.testing.assert_allclose(F.upsample_nearest2d_backward(dout, cache), want, rtol=1e-14, atol=1e-14)


def test_upsample_nearest2d_gradcheck_and_bad_input():
    x = np.random.default_rng(10).standard_normal((1, 2, 3, 5))
    errors = check_backward(lambda x_: F.upsample_nearest2d_forward(x_, (7, 4)),
                            F.upsample_nearest2d_backward, x, verbose=False)
    assert errors[0] <= 1e-7
    with pytest.raises(ValueError, match="size must be >= 1"):
        F.upsample_nearest2d_forward(x, (0, 4))
    with pytest.raises(TypeError, match="size must be an int or a pair"):
        F.upsample_nearest2d_forward(x, None)
    with pytest.raises(ValueError, match="x must be 4-D"):
        F.upsample_nearest2d_forward(x[0], (2, 2))


def test_empty_batch():
    # N = 0 (an image without positive RoIs reaching the mask head) flows through every op.
    x = np.zeros((0, 4, 6, 6))
    one = np.ones(4)
    pairs = [
        (lambda: F.linear_forward(np.zeros((0, 4)), np.ones((3, 4)), np.ones(3)), F.linear_backward, (0, 3)),
        (lambda: F.relu_forward(x), F.relu_backward, x.shape),
        (lambda: F.flatten_forward(x), F.flatten_backward, (0, 144)),
        (lambda: F.max_pool2d_forward(x, 3, 2, 1), F.max_pool2d_backward, (0, 4, 3, 3)),
        (lambda: F.frozen_batch_norm_forward(x, one, one, one, one), F.frozen_batch_norm_backward, x.shape),
        (lambda: F.upsample_nearest2d_forward(x, (9, 9)), F.upsample_nearest2d_backward, (0, 4, 9, 9)),
    ] + [(lambda m=m: F.group_norm_forward(x, 2, one, one, method=m), F.group_norm_backward, x.shape)
         for m in F.GROUP_NORM_METHODS]
    for forward, backward, out_shape in pairs:
        out, cache = forward()
        assert out.shape == out_shape
        grads = backward(out, cache)
        dx = grads[0] if isinstance(grads, tuple) else grads
        assert dx.shape == (x.shape if out_shape != (0, 3) else (0, 4))

