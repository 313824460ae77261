"""minimaskrcnn.nn.functional convolutions (conv2d, conv_transpose2d) against torch autograd,
finite differences and hand-worked cases; the conv methods against each other.

Tolerances: float64 agrees with torch to 1e-10 (norm-wise relative error, see ``rel_error``) and
float32 to 1e-5; gradient checks reach 1e-7 in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minimaskrcnn.nn import _conv
from minimaskrcnn.nn import functional as F
from minimaskrcnn.nn.gradcheck import check_backward, rel_error

TOL = {np.float64: 1e-10, np.float32: 1e-5}


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


# --------------------------------------------------------------------------------------------------
# conv2d
# --------------------------------------------------------------------------------------------------

@st.composite
def conv_cases(draw, max_size=7):
    """A valid conv2d configuration: (x shape, w shape, stride, padding, dilation, bias?)."""
    n = draw(st.integers(1, 2))
    c_in, c_out = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    # input at least as large as the dilated kernel after padding
    h = draw(st.integers(max(1, dilation[0] * (kh - 1) + 1 - 2 * padding[0]), max_size))
    w = draw(st.integers(max(1, dilation[1] * (kw - 1) + 1 - 2 * padding[1]), max_size))
    return (n, c_in, h, w), (c_out, c_in, kh, kw), stride, padding, dilation, draw(st.booleans())


# Named edge cases the acceptance criteria ask for (hypothesis explores around them too).
CONV_EDGE_CASES = {
    "batch1_pad1": ((1, 2, 5, 5), (3, 2, 3, 3), 1, 1, 1, True),
    "1x1_spatial_1x1_kernel": ((2, 3, 1, 1), (2, 3, 1, 1), 1, 0, 1, True),
    "1x1_spatial_3x3_kernel_pad1": ((1, 2, 1, 1), (2, 2, 3, 3), 1, 1, 1, False),
    "stride_larger_than_kernel": ((2, 2, 7, 8), (3, 2, 2, 2), 3, 0, 1, True),
    "pointwise_stride2": ((2, 3, 7, 6), (4, 3, 1, 1), 2, 0, 1, True),
    "dilation2_odd_sizes": ((1, 2, 9, 7), (2, 2, 3, 3), 1, 2, 2, True),
    "rect_everything": ((2, 2, 7, 9), (3, 2, 3, 2), (2, 1), (1, 2), (2, 1), True),
    "kernel_equals_padded_input": ((1, 1, 3, 3), (1, 1, 5, 5), 1, 1, 1, True),
    # padding wider than the dilated kernel's reach: dx can't be the "full" convolution shortcut
    "1x1_kernel_padding1": ((2, 2, 3, 3), (2, 2, 1, 1), 1, 1, 1, True),
    "k2_padding2": ((1, 2, 4, 3), (2, 2, 2, 2), 1, 2, 1, False),
}


def _conv_inputs(rng, x_shape, w_shape, bias, dtype):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) if bias else None
    return x, w, b


def _assert_sum_close(ours, theirs, magnitude, dtype, what=""):
    """ours and theirs, sums of terms whose absolute values add up to ``magnitude``, agree within
    TOL of that magnitude: rounding a float sum errs by up to a few ulps of Σ|terms|, whatever the
    order, so two correct sums of one cancelling set (e.g. 15 float32 terms of |Σ| 12 summing to
    1e-2, found by hypothesis) can differ by 5e-5 of their value while agreeing to 4e-8 of Σ|terms|."""
    assert ours.dtype == dtype and ours.shape == theirs.shape, what
    err = np.max(np.abs(ours.astype(np.float64) - theirs) / np.maximum(magnitude, np.finfo(dtype).tiny))
    assert err <= TOL[dtype], f"{what}: error {err:.3e} of the sum of |terms| > {TOL[dtype]:.0e}"


def _check_conv_against_torch(torch, case, dtype, seed=0):
    x_shape, w_shape, stride, padding, dilation, bias = case
    rng = np.random.default_rng(seed)
    x, w, b = _conv_inputs(rng, x_shape, w_shape, bias, dtype)
    out, _ = F.conv2d_forward(x, w, b, stride, padding, dilation)
    dout = rng.standard_normal(out.shape).astype(dtype)
    t_out, t_grads = torch_forward_backward(
        torch, lambda x_, w_, b_: torch.nn.functional.conv2d(x_, w_, b_, stride, padding, dilation),
        [x, w, b], dout)
    results = {}
    for method in F.CONV_METHODS:
        out, cache = F.conv2d_forward(x, w, b, stride, padding, dilation, method=method)
        grads = F.conv2d_backward(dout, cache)
        assert_close(out, t_out, dtype, f"{method} out")
        for name, g, tg in zip(("dx", "dw", "db"), grads, t_grads):
            if tg is None:
                assert g is None
            elif name == "db":
                _assert_sum_close(g, tg, np.abs(dout).sum(axis=(0, 2, 3)), dtype, f"{method} db")
            else:
                assert_close(g, tg, dtype, f"{method} {name}")
        results[method] = (out,) + tuple(g for g in grads if g is not None)
    # the methods agree with each other (not only each with torch)
    for method in F.CONV_METHODS:
        for a, b_ in zip(results[method], results["naive"]):
            assert rel_error(a, b_) <= TOL[dtype]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(CONV_EDGE_CASES))
def test_conv2d_edge_cases_match_torch(torch, name, dtype):
    _check_conv_against_torch(torch, CONV_EDGE_CASES[name], dtype)


@settings(max_examples=30, deadline=None)
@given(case=conv_cases(), dtype=st.sampled_from([np.float64, np.float32]))
def test_conv2d_random_shapes_match_torch(torch, case, dtype):
    _check_conv_against_torch(torch, case, dtype)


@settings(max_examples=16, deadline=None)
@given(case=conv_cases(max_size=5), method=st.sampled_from(["im2col", "col2im"]))
def test_conv2d_gradcheck(case, method):
    x_shape, w_shape, stride, padding, dilation, bias = case
    x, w, b = _conv_inputs(np.random.default_rng(1), x_shape, w_shape, bias, np.float64)
    inputs = (x, w, b) if bias else (x, w)

    def forward(x_, w_, b_=None):
        return F.conv2d_forward(x_, w_, b_, stride, padding, dilation, method=method)

    errors = check_backward(forward, F.conv2d_backward, *inputs, verbose=False)
    assert len(errors) == len(inputs) and max(errors) <= 1e-7


@pytest.mark.parametrize("name", ["pointwise_stride2", "dilation2_odd_sizes"])
def test_conv2d_naive_gradcheck(name):
    x_shape, w_shape, stride, padding, dilation, _ = CONV_EDGE_CASES[name]
    x, w, b = _conv_inputs(np.random.default_rng(2), x_shape, w_shape, True, np.float64)

    def forward(x_, w_, b_):
        return F.conv2d_forward(x_, w_, b_, stride, padding, dilation, method="naive")

    assert max(check_backward(forward, F.conv2d_backward, x, w, b, verbose=False)) <= 1e-7


def test_conv2d_golden():
    # 3×3 image 1..9, a 2×2 kernel of ones, bias 0.5: every output is the sum of a 2×2 window + 0.5:
    # top-left 1+2+4+5 = 12, top-right 2+3+5+6 = 16, bottom-left 4+5+7+8 = 24, bottom-right 28.
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    out, cache = F.conv2d_forward(x, np.ones((1, 1, 2, 2)), np.array([0.5]))
    np.testing.assert_array_equal(out, [[[[12.5, 16.5], [24.5, 28.5]]]])
    # dout = 1 everywhere: pixel (i, j) is in as many windows as it has: corners 1, edges 2, centre 4;
    # dw = sum of each kernel tap's 4 pixels: 12, 16, 24, 28 (the forward sums again); db = 4 outputs.
    dx, dw, db = F.conv2d_backward(np.ones((1, 1, 2, 2)), cache)
    np.testing.assert_array_equal(dx, [[[[1, 2, 1], [2, 4, 2], [1, 2, 1]]]])
    np.testing.assert_array_equal(dw, [[[[12, 16], [24, 28]]]])
    np.testing.assert_array_equal(db, [4.0])
    # padding 1 with stride 2 on the same image: windows at rows/cols -1 and 1 → output 2×2;
    # the top-left window sees only pixel 1 (rest zero padding): 1; top-right sees 2+3 = 5;
    # bottom-left 4+7 = 11; bottom-right 5+6+8+9 = 28.
    out, _ = F.conv2d_forward(x, np.ones((1, 1, 2, 2)), None, stride=2, padding=1)
    np.testing.assert_array_equal(out, [[[[1, 5], [11, 28]]]])


def test_conv2d_cache_survives_other_calls():
    # The im2col path reuses scratch buffers: a layer's backward must not see another layer's data.
    rng = np.random.default_rng(3)
    x1, w1, b1 = _conv_inputs(rng, (2, 3, 6, 6), (4, 3, 3, 3), True, np.float64)
    x2, w2, b2 = _conv_inputs(rng, (1, 4, 9, 9), (2, 4, 3, 3), True, np.float64)
    out1, cache1 = F.conv2d_forward(x1, w1, b1, 1, 1)
    ref1 = F.conv2d_backward(np.ones_like(out1), F.conv2d_forward(x1, w1, b1, 1, 1, method="naive")[1])
    out2, cache2 = F.conv2d_forward(x2, w2, b2, 2, 1)
    F.conv2d_backward(np.ones_like(out2), cache2)
    for g, r in zip(F.conv2d_backward(np.ones_like(out1), cache1), ref1):
        assert rel_error(g, r) <= 1e-12
    F.clear_workspace()
    for g, r in zip(F.conv2d_backward(np.ones_like(out1), cache1), ref1):
        assert rel_error(g, r) <= 1e-12


@pytest.mark.parametrize("method", ["im2col", "col2im"])
@pytest.mark.parametrize("chunk_columns", [1, 40, 45, 10**9])
def test_conv2d_image_chunks_agree(monkeypatch, chunk_columns, method):
    # im2col processes the batch in chunks of about CHUNK_COLUMNS output positions. Here each of the
    # 5 images has 4·5 = 20 outputs, so the chunks are: 1 → one image each (the no-transpose path);
    # 40 → 2 + 2 + 1; 45 → 3 + 2 (ceil(45/20) = 3 per chunk); 1e9 → all five at once.
    monkeypatch.setattr(_conv, "CHUNK_COLUMNS", chunk_columns)
    monkeypatch.setattr(_conv, "CHUNK_BYTES", 0)  # the columns are short: no wider chunks
    rng = np.random.default_rng(6)
    x, w, b = _conv_inputs(rng, (5, 2, 4, 5), (3, 2, 3, 3), True, np.float64)
    out, cache = F.conv2d_forward(x, w, b, 1, 1, method=method)
    ref, ref_cache = F.conv2d_forward(x, w, b, 1, 1, method="naive")
    assert rel_error(out, ref) <= 1e-12
    dout = rng.standard_normal(out.shape)
    for g, r in zip(F.conv2d_backward(dout, cache), F.conv2d_backward(dout, ref_cache)):
        assert rel_error(g, r) <= 1e-12


@pytest.mark.parametrize("stride", [1, 2])
def test_forward_keeps_the_columns_only_up_to_the_budget(monkeypatch, stride):
    # The im2col forward keeps its column matrix (C·kH·kW, N, H'·W') for the backward's dW when it
    # is at most KEEP_COLS_BYTES (else the backward rebuilds it); 1×1 convolutions have none, and
    # keep_transform=False keeps nothing. The gradients do not depend on which.
    rng = np.random.default_rng(12)
    x, w, b = _conv_inputs(rng, (3, 2, 7, 6), (4, 2, 3, 3), True, np.float64)
    out_h, out_w = (7 + 2 - 3) // stride + 1, (6 + 2 - 3) // stride + 1
    cols_bytes = 2 * 9 * 3 * out_h * out_w * 8
    ref_out, ref_cache = F.conv2d_forward(x, w, b, stride, 1, method="naive")
    dout = rng.standard_normal(ref_out.shape)
    ref = F.conv2d_backward(dout, ref_cache)
    for budget, keep, kept in ((cols_bytes, True, True), (cols_bytes - 1, True, False),
                               (cols_bytes, False, False)):
        monkeypatch.setattr(_conv, "KEEP_COLS_BYTES", budget)
        monkeypatch.setattr(_conv, "CHUNK_COLUMNS", 1)  # rebuilt columns come in chunks of one image
        monkeypatch.setattr(_conv, "CHUNK_BYTES", 0)
        out, cache = F.conv2d_forward(x, w, b, stride, 1, method="im2col", keep_transform=keep)
        assert rel_error(out, ref_out) <= 1e-12
        assert (cache[4] is not None) == kept, (budget, keep)
        if kept:
            assert cache[4].shape == (2 * 9, 3, out_h * out_w)
        for g, r in zip(F.conv2d_backward(dout, cache), ref):
            assert rel_error(g, r) <= 1e-12
        assert F.conv2d_backward(dout, cache, need_dx=False)[0] is None
    _, cache = F.conv2d_forward(x, rng.standard_normal((4, 2, 1, 1)), None, stride, 0, method="im2col")
    assert cache[4] is None  # a 1×1 convolution multiplies x itself


def test_a_frozen_conv_layer_keeps_no_transform():
    from minimaskrcnn.nn.layers import Conv2d

    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 3, 6, 6))
    for frozen in (False, True):
        layer = Conv2d(3, 4, 3, stride=2, padding=1, rng=np.random.default_rng(0))
        layer.weight.data = layer.weight.data.astype(np.float64)
        layer.bias.data = layer.bias.data.astype(np.float64)
        layer.weight.requires_grad = not frozen
        layer(x)
        cache = layer._pop()
        assert (cache[4] is None) == frozen


def test_chunks_widen_for_short_columns(monkeypatch):
    monkeypatch.setattr(_conv, "CHUNK_COLUMNS", 4096)
    monkeypatch.setattr(_conv, "CHUNK_BYTES", 4 << 20)
    # 3·3·3 = 27 rows of float32: up to 38,836 columns, so eight 128×128 stride-2 maps (4096 each) in one.
    assert _conv._chunks(8, 4096, 27, 4) == [(0, 8)]
    # 32·3·3 = 288 rows: CHUNK_COLUMNS rules (4 maps of 1024 positions per chunk).
    assert _conv._chunks(8, 1024, 288, 4) == [(0, 4), (4, 8)]
    # float64 halves the columns that fit: 27 rows → 19,418 columns, 5 maps a chunk, evened to 4 + 4.
    assert _conv._chunks(8, 4096, 27, 8) == [(0, 4), (4, 8)]
    assert _conv._chunks(0, 4096, 27, 4) == []


@pytest.mark.parametrize("method", F.CONV_METHODS)
def test_empty_batch(method):
    # The mask head sees N = 0 RoIs when an image has no positive proposal: shapes as torch gives
    # them, zero weight gradients.
    x = np.zeros((0, 4, 6, 6))
    for w_shape, stride, padding in (((3, 4, 3, 3), 1, 1), ((3, 4, 3, 3), 2, 1), ((3, 4, 1, 1), 1, 0)):
        out, cache = F.conv2d_forward(x, np.ones(w_shape), np.ones(3), stride, padding, method=method)
        assert out.shape == (0, 3, 6 // stride, 6 // stride)
        dx, dw, db = F.conv2d_backward(out, cache)
        assert dx.shape == x.shape and not dw.any() and not db.any()
    out, cache = F.conv_transpose2d_forward(x, np.ones((4, 3, 2, 2)), np.ones(3), 2, method=method)
    assert out.shape == (0, 3, 12, 12)
    dx, dw, db = F.conv_transpose2d_backward(out, cache)
    assert dx.shape == x.shape and dw.shape == (4, 3, 2, 2) and not dw.any() and not db.any()


def test_conv2d_non_contiguous_input():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 5, 3, 2)).transpose(3, 2, 0, 1)  # (2, 3, 5, 5), a strided view
    w = rng.standard_normal((2, 3, 3, 3))
    out, cache = F.conv2d_forward(x, w, None, 1, 1)
    ref, ref_cache = F.conv2d_forward(np.ascontiguousarray(x), w, None, 1, 1, method="naive")
    assert rel_error(out, ref) <= 1e-12
    dout = rng.standard_normal(out.shape).transpose(0, 1, 3, 2).copy().transpose(0, 1, 3, 2)
    for g, r in zip(F.conv2d_backward(dout, cache), F.conv2d_backward(dout, ref_cache)):
        if r is not None:
            assert rel_error(g, r) <= 1e-12


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(x=np.zeros((3, 5, 5))), ValueError, "x must be 4-D"),
        (dict(w=np.zeros((2, 3, 3))), ValueError, "w must be 4-D"),
        (dict(w=np.zeros((2, 4, 3, 3))), ValueError, "input channels"),
        (dict(b=np.zeros(3)), ValueError, "b must have shape"),
        (dict(padding=-1), ValueError, "padding must be >= 0"),
        (dict(stride=0), ValueError, "stride must be >= 1"),
        (dict(dilation=(1, 0)), ValueError, "dilation must be >= 1"),
        (dict(stride=(1, 2, 3)), ValueError, "stride must be an int or a pair"),
        (dict(w=np.zeros((2, 3, 7, 3))), ValueError, "kernel height.*larger than the padded input"),
        (dict(w=np.zeros((2, 3, 3, 3)), dilation=3), ValueError, "kernel height .dilated: 7. is larger"),
        (dict(x=np.zeros((1, 3, 5, 5), dtype=np.int64)), TypeError, "x must have dtype float32 or float64"),
        (dict(w=np.zeros((2, 3, 3, 3), dtype=np.int32)), TypeError, "w must have dtype"),
        (dict(w=np.zeros((2, 3, 3, 3), dtype=np.float32)), TypeError, "w must have the same dtype as x"),
        (dict(x=[[[[1.0]]]]), TypeError, "x must be a numpy.ndarray"),
        (dict(method="fft"), ValueError, "method must be one of"),
    ],
)
def test_conv2d_bad_input(kwargs, exc, match):
    args = dict(x=np.zeros((1, 3, 5, 5)), w=np.zeros((2, 3, 3, 3)), b=np.zeros(2), stride=1, padding=0,
                dilation=1, method="im2col")
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        F.conv2d_forward(args.pop("x"), args.pop("w"), args.pop("b"), **args)


def test_conv2d_backward_bad_dout():
    out, cache = F.conv2d_forward(np.zeros((1, 3, 5, 5)), np.zeros((2, 3, 3, 3)), None)
    with pytest.raises(ValueError, match="dout must have shape"):
        F.conv2d_backward(np.zeros((1, 2, 5, 5)), cache)
    with pytest.raises(TypeError, match="dout must have the same dtype"):
        F.conv2d_backward(out.astype(np.float32), cache)


# --------------------------------------------------------------------------------------------------
# conv_transpose2d
# --------------------------------------------------------------------------------------------------

@st.composite
def conv_transpose_cases(draw):
    n = draw(st.integers(1, 2))
    c_in, c_out = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    # output (H − 1)·s − 2p + k must be >= 1
    h = draw(st.integers(max(1, -(-(2 * padding[0] + 1 - kh) // stride[0]) + 1), 5))
    w = draw(st.integers(max(1, -(-(2 * padding[1] + 1 - kw) // stride[1]) + 1), 5))
    return (n, c_in, h, w), (c_in, c_out, kh, kw), stride, padding, draw(st.booleans())


CONV_T_EDGE_CASES = {
    "mask_head_2x2_stride2": ((2, 3, 4, 5), (3, 2, 2, 2), 2, 0, True),
    "tiling_3x2_stride_3x2_no_bias": ((3, 2, 3, 4), (2, 3, 3, 2), (3, 2), 0, False),
    "general_k3_s2_pad1": ((1, 2, 5, 4), (2, 3, 3, 3), 2, 1, True),
    "stride_larger_than_kernel": ((2, 2, 3, 3), (2, 2, 2, 2), 3, 0, False),
    "1x1_spatial": ((1, 2, 1, 1), (2, 3, 3, 3), 1, 0, True),
    "rect": ((1, 2, 3, 4), (2, 2, 3, 2), (2, 1), (1, 0), True),
    "1x1_kernel_stride1": ((2, 3, 4, 4), (3, 2, 1, 1), 1, 0, True),
}


def _check_conv_t_against_torch(torch, case, dtype, seed=0):
    x_shape, w_shape, stride, padding, bias = case
    rng = np.random.default_rng(seed)
    x, w, b = _conv_inputs(rng, x_shape, (w_shape[1],) + w_shape[:1] + w_shape[2:], bias, dtype)
    w = np.ascontiguousarray(w.transpose(1, 0, 2, 3))  # (C_in, C_out, kH, kW)
    out, _ = F.conv_transpose2d_forward(x, w, b, stride, padding)
    dout = rng.standard_normal(out.shape).astype(dtype)
    t_out, t_grads = torch_forward_backward(
        torch, lambda x_, w_, b_: torch.nn.functional.conv_transpose2d(x_, w_, b_, stride, padding),
        [x, w, b], dout)
    results = {}
    for method in F.CONV_METHODS:
        out, cache = F.conv_transpose2d_forward(x, w, b, stride, padding, method=method)
        grads = F.conv_transpose2d_backward(dout, cache)
        assert_close(out, t_out, dtype, f"{method} out")
        for name, g, tg in zip(("dx", "dw", "db"), grads, t_grads):
            if tg is None:
                assert g is None
            elif name == "db":
                _assert_sum_close(g, tg, np.abs(dout).sum(axis=(0, 2, 3)), dtype, f"{method} db")
            else:
                assert_close(g, tg, dtype, f"{method} {name}")
        results[method] = (out,) + tuple(g for g in grads if g is not None)
    for method in F.CONV_METHODS:
        for a, b_ in zip(results[method], results["naive"]):
            assert rel_error(a, b_) <= TOL[dtype]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(CONV_T_EDGE_CASES))
def test_conv_transpose2d_edge_cases_match_torch(torch, name, dtype):
    _check_conv_t_against_torch(torch, CONV_T_EDGE_CASES[name], dtype)


@settings(max_examples=30, deadline=None)
@given(case=conv_transpose_cases(), dtype=st.sampled_from([np.float64, np.float32]))
def test_conv_transpose2d_random_shapes_match_torch(torch, case, dtype):
    _check_conv_t_against_torch(torch, case, dtype)


@settings(max_examples=10, deadline=None)
@given(case=conv_transpose_cases())
def test_conv_transpose2d_gradcheck(case):
    x_shape, w_shape, stride, padding, _ = case
    rng = np.random.default_rng(5)
    x, w, b = (rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[1]))

    def forward(x_, w_, b_):
        return F.conv_transpose2d_forward(x_, w_, b_, stride, padding)

    errors = check_backward(forward, F.conv_transpose2d_backward, x, w, b, verbose=False)
    assert len(errors) == 3 and max(errors) <= 1e-7


def test_conv_transpose2d_golden():
    # x = [[1, 2]] (1×2), kernel 2×2 [[1, 10], [100, 1000]], stride 2: each pixel stamps its own
    # 2×2 block: [[1, 10, 2, 20], [100, 1000, 200, 2000]]. With stride 1 the stamps overlap in
    # column 1: 10·1 + 1·2 = 12 on top, 1000·1 + 100·2 = 1200 below.
    x = np.array([[[[1.0, 2.0]]]])
    w = np.array([[[[1.0, 10.0], [100.0, 1000.0]]]])
    out, _ = F.conv_transpose2d_forward(x, w, None, stride=2)
    np.testing.assert_array_equal(out, [[[[1, 10, 2, 20], [100, 1000, 200, 2000]]]])
    out, _ = F.conv_transpose2d_forward(x, w, None, stride=1)
    np.testing.assert_array_equal(out, [[[[1, 12, 20], [100, 1200, 2000]]]])
    # padding (0, 1) crops one column on each side of the stride-2 result: the middle two remain.
    out, _ = F.conv_transpose2d_forward(x, w, None, stride=2, padding=(0, 1))
    np.testing.assert_array_equal(out, [[[[10, 2], [1000, 200]]]])


def test_conv_transpose2d_bad_input():
    x, w = np.zeros((1, 3, 4, 4)), np.zeros((3, 2, 2, 2))
    with pytest.raises(ValueError, match="input channels"):
        F.conv_transpose2d_forward(x, np.zeros((2, 3, 2, 2)), None)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        F.conv_transpose2d_forward(x, w, None, padding=-1)
    with pytest.raises(ValueError, match="crops the whole output"):
        F.conv_transpose2d_forward(np.zeros((1, 3, 1, 1)), w, None, padding=1)
    with pytest.raises(TypeError, match="x must have dtype"):
        F.conv_transpose2d_forward(x.astype(np.int16), w, None)
    with pytest.raises(ValueError, match="x must be 4-D"):
        F.conv_transpose2d_forward(np.zeros((3, 4, 4)), w, None)
    with pytest.raises(ValueError, match="b must have shape"):
        F.conv_transpose2d_forward(x, w, np.zeros(3))
