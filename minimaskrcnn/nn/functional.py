"""Forward/backward pairs of the layer kit, every derivative written out by hand.

Protocol: ``out, cache = X_forward(...)`` and ``grads = X_backward(dout, cache)``; ``dout`` has the
shape of ``out``, and each returned gradient has the shape of the input it belongs to. Every
function keeps the input dtype (float32 for training, float64 for gradient checks) and refuses
integer arrays and mixed dtypes with a TypeError naming the argument.

Conventions: feature maps are NCHW. For a window of size K, stride s, padding p and dilation d
along one axis of length H, the number of output positions is

    H' = 1 + (H + 2·p − d·(K − 1) − 1) // s

(the last window that fits entirely inside the padded input; PyTorch's floor mode).

Convolutions (``conv2d_*``, ``conv_transpose2d_*``) live in ``_conv.py`` and are re-exported here;
they come in interchangeable methods (``method="auto"`` default: Winograd F(4×4, 3×3) or F(2×2, 3×3)
where one pays off, im2col + GEMM elsewhere; ``"im2col"``, ``"col2im"``, ``"naive"``, ``"winograd"``,
``"winograd4"``), see that module's docstring.
"""

from __future__ import annotations

import numpy as np

from minimaskrcnn._checks import float_array, pair
from minimaskrcnn.nn import _conv_kernels as _k
from minimaskrcnn.nn import _norm_kernels as _nk
from minimaskrcnn.nn import _relu_kernels as _rk
from minimaskrcnn.nn._args import _out_size, _param, _same_dtype
from minimaskrcnn.nn._conv import (  # noqa: F401 (re-exported)
    CONV_METHODS,
    clear_workspace,
    conv2d_backward,
    conv2d_forward,
    conv_transpose2d_backward,
    conv_transpose2d_forward,
)
from minimaskrcnn.nn._launch import sized

__all__ = [
    "CONV_METHODS", "GROUP_NORM_METHODS", "clear_workspace",
    "conv2d_forward", "conv2d_backward", "conv_transpose2d_forward", "conv_transpose2d_backward",
    "linear_forward", "linear_backward", "relu_forward", "relu_backward",
    "flatten_forward", "flatten_backward", "max_pool2d_forward", "max_pool2d_backward",
    "group_norm_forward", "group_norm_backward", "frozen_batch_norm_forward", "frozen_batch_norm_backward",
    "nearest_source_index", "upsample_nearest2d_forward", "upsample_nearest2d_backward",
]

# --------------------------------------------------------------------------------------------------
# linear, relu, flatten
# --------------------------------------------------------------------------------------------------


def linear_forward(x, w, b):
    """Fully connected layer, as ``torch.nn.functional.linear``.

    Inputs: x (N, in_features); w (out_features, in_features) (torch layout); b (out_features,) or None.
    Output: out (N, out_features) = x · wᵀ + b, and the cache.
    """
    x = float_array(x, "x", ndim=2)
    w = float_array(w, "w", ndim=2)
    _same_dtype(w, "w", x)
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"w has {w.shape[1]} input features (w.shape[1]) "
                         f"but x has {x.shape[1]} (x.shape[1])")
    b = _param(b, "b", (w.shape[0],), x, allow_none=True)
    out = x @ w.T
    if b is not None:
        out += b
    return out, (x, w, b is not None)


def linear_backward(dout, cache, *, need_dw: bool = True):
    """Inputs: dout (N, out_features), cache. Returns (dx, dw, db): dx = dout·w (N, in),
    dw = doutᵀ·x (out, in), db = Σ_n dout (out,) or None. ``need_dw=False`` (a frozen weight)
    skips the dW product and returns dw = None."""
    x, w, has_bias = cache
    dout = float_array(dout, "dout", ndim=2)
    _same_dtype(dout, "dout", x)
    if dout.shape != (x.shape[0], w.shape[0]):
        raise ValueError(f"dout must have shape {(x.shape[0], w.shape[0])}, got {dout.shape}")
    return dout @ w, (dout.T @ x if need_dw else None), (dout.sum(axis=0) if has_bias else None)


# From this many elements ReLU runs as one parallel Numba pass (``_relu_kernels``), below it as the
# same pass on one thread (starting a parallel kernel costs 50–140 µs with Numba's "workqueue"
# layer, about 2 µs on TBB, and one pass over 2 M values about 1 ms).
RELU_KERNEL_SIZE = 1 << 21


def relu_forward(x):
    """out = max(x, 0), any shape. The cache is out itself: the gradient passes where out > 0, i.e.
    where x > 0 (the next layer holds out anyway, so the cache costs no memory; a NaN stays NaN and
    passes its gradient, as in torch)."""
    x = float_array(x, "x")
    out = np.empty(x.shape, x.dtype)  # np.maximum(x, 0) (x · (x > 0) would make −inf · 0 = NaN)
    kernel = _rk.relu_forward if x.size >= RELU_KERNEL_SIZE else _rk.relu_forward_serial
    kernel(np.ascontiguousarray(x).reshape(-1), out.reshape(-1))
    return out, out


def relu_backward(dout, cache):
    """dx = dout where x > 0, else 0 (the derivative at exactly 0 is taken as 0, as torch does):
    dout · not(out <= 0), so that a NaN passes its gradient, as in torch."""
    out = cache
    dout = float_array(dout, "dout")
    if dout.shape != out.shape:
        raise ValueError(f"dout must have shape {out.shape}, got {dout.shape}")
    _same_dtype(dout, "dout", out)
    dx = np.empty(out.shape, out.dtype)  # dout · not(out <= 0)
    kernel = _rk.relu_backward if out.size >= RELU_KERNEL_SIZE else _rk.relu_backward_serial
    kernel(np.ascontiguousarray(dout).reshape(-1), out.reshape(-1), dx.reshape(-1))
    return dx


def flatten_forward(x):
    """(N, d1, d2, ...) → (N, d1·d2·...), a C-order reshape (``torch.flatten(x, 1)``)."""
    x = float_array(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must have at least 2 dimensions (N, ...), got shape {x.shape}")
    return x.reshape(x.shape[0], int(np.prod(x.shape[1:]))), x.shape


def flatten_backward(dout, cache):
    """dx = dout reshaped back to the input shape."""
    shape = cache
    dout = float_array(dout, "dout", ndim=2)
    if dout.shape != (shape[0], int(np.prod(shape[1:]))):
        raise ValueError(f"dout must have shape {(shape[0], int(np.prod(shape[1:])))}, got {dout.shape}")
    return dout.reshape(shape)


# --------------------------------------------------------------------------------------------------
# max_pool2d
# --------------------------------------------------------------------------------------------------


def max_pool2d_forward(x, kernel_size, stride=None, padding=0):
    """Max pooling, as ``torch.nn.functional.max_pool2d`` (dilation 1, floor mode).

    Inputs
    - x: (N, C, H, W).
    - kernel_size: int or (kH, kW); stride: int, pair or None (= kernel_size); padding: int or pair,
      at most half the kernel (torch's rule). Padding counts as −inf: it is never the maximum.

    Output: out (N, C, H', W') with H' = 1 + (H + 2·pad_h − kH) // stride_h, and the cache (the
    argmax of every window). Ties go to the first maximum in row-major window order, as torch.
    """
    x = float_array(x, "x", ndim=4)
    kh, kw = pair(kernel_size, "kernel_size", minimum=1)
    sh, sw = pair(kernel_size if stride is None else stride, "stride", minimum=1)
    ph, pw = pair(padding, "padding", minimum=0)
    if 2 * ph > kh or 2 * pw > kw:
        raise ValueError(f"padding {(ph, pw)} must be at most half of kernel_size {(kh, kw)}")
    n_batch, channels, height, width = x.shape
    if kh > height + 2 * ph or kw > width + 2 * pw:
        raise ValueError(f"kernel_size {(kh, kw)} is larger than the padded input "
                         f"({height} + 2·{ph}, {width} + 2·{pw})")
    hout, wout = _out_size(height, kh, sh, ph, 1), _out_size(width, kw, sw, pw, 1)
    out, argmax = sized(_k.max_pool2d_forward, x.size)(np.ascontiguousarray(x), kh, kw, sh, sw, ph, pw,
                                                       hout, wout)
    return out, (argmax, x.shape, x.dtype)


def max_pool2d_backward(dout, cache):
    """dx (N, C, H, W): each output gradient goes to its window's (first) maximum; overlapping
    windows that share a maximum add up."""
    argmax, shape, dtype = cache
    dout = float_array(dout, "dout", ndim=4)
    if dout.dtype != dtype:
        raise TypeError(f"dout must have the same dtype as x ({dtype}), got {dout.dtype}")
    if dout.shape != argmax.shape:
        raise ValueError(f"dout must have shape {argmax.shape}, got {dout.shape}")
    return sized(_k.max_pool2d_backward, int(np.prod(shape)))(np.ascontiguousarray(dout), argmax, shape[2],
                                                             shape[3])


# --------------------------------------------------------------------------------------------------
# normalisation: group_norm, frozen_batch_norm
# --------------------------------------------------------------------------------------------------


GROUP_NORM_METHODS = ("numba", "numpy")


def group_norm_forward(x, num_groups, gamma, beta, eps=1e-5, *, method: str = "numba"):
    """Group normalisation (Wu & He 2018), as ``torch.nn.functional.group_norm``.

    Inputs
    - x: (N, C, *spatial) — any number (>= 0) of spatial axes.
    - num_groups: G, dividing C; the C/G channels of a group share one mean and variance per image.
    - gamma, beta: (C,) per-channel scale and shift, or None (no affine transform).
    - eps: added to the variance.
    - method: "numba" (default: one parallel kernel, sums in float64) or "numpy" (the same
      formulas as array expressions; easier to read, several passes over memory).

    Output: out (same shape as x) = gamma[c] · (x − μ_{n,g}) / sqrt(σ²_{n,g} + eps) + beta[c], with
    μ and σ² (biased) taken over the group's channels and all spatial positions; and the cache.
    """
    if method not in GROUP_NORM_METHODS:
        raise ValueError(f"method must be one of {GROUP_NORM_METHODS}, got {method!r}")
    x = float_array(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must have shape (N, C, ...), got {x.shape}")
    n_batch, channels = x.shape[:2]
    if channels < 1:
        raise ValueError(f"x must have at least one channel, got shape {x.shape}")
    if not isinstance(num_groups, (int, np.integer)) or num_groups < 1 or channels % num_groups:
        raise ValueError(f"num_groups must be a positive int dividing the {channels} channels, "
                         f"got {num_groups!r}")
    if int(np.prod(x.shape[2:])) == 0:
        raise ValueError(f"x must have non-empty spatial axes, got shape {x.shape}")
    gamma = _param(gamma, "gamma", (channels,), x, allow_none=True)
    beta = _param(beta, "beta", (channels,), x, allow_none=True)
    if method == "numba":
        x3 = np.ascontiguousarray(x).reshape(n_batch, channels, int(np.prod(x.shape[2:])))
        out = np.empty_like(x3)
        none = np.empty(0, x.dtype)
        mean, rstd = sized(_nk.group_norm_forward, x3.size)(
            x3, int(num_groups), none if gamma is None else gamma, none if beta is None else beta, float(eps),
            out)
        return out.reshape(x.shape), ("numba", x3, mean, rstd, gamma, beta is not None, x.shape)
    # 1. Statistics per (image, group) over the group's C/G channels × spatial positions.
    per_group = channels // num_groups * int(np.prod(x.shape[2:]))  # elements of one group
    xg = x.reshape(n_batch, num_groups, per_group)
    mean = xg.mean(axis=2, keepdims=True)
    centred = xg - mean
    var = np.mean(centred * centred, axis=2, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    # 2. Normalise, then the per-channel affine transform.
    xhat = (centred * rstd).reshape(x.shape)
    per_channel = (1, channels) + (1,) * (x.ndim - 2)
    out = xhat * gamma.reshape(per_channel) if gamma is not None else xhat.copy()
    if beta is not None:
        out += beta.reshape(per_channel)
    return out, ("numpy", xhat, rstd, gamma, beta is not None, num_groups)


def group_norm_backward(dout, cache):
    """Gradients of group_norm.

    Returns (dx, dgamma, dbeta): dx like x; dgamma = Σ dout·x̂ and dbeta = Σ dout over N and spatial
    axes, (C,) each (None without affine). With g = dout·gamma and means over a group's M elements,
    dx = rstd · (g − mean(g) − x̂ · mean(g · x̂)) — the mean and variance depend on every element,
    which is where the two subtracted terms come from.
    """
    dout = float_array(dout, "dout")
    if cache[0] == "numba":
        _, x3, mean, rstd, gamma, has_beta, shape = cache
        _same_dtype(dout, "dout", x3)
        if dout.shape != shape:
            raise ValueError(f"dout must have shape {shape}, got {dout.shape}")
        dx = np.empty_like(x3)
        gm = gamma if gamma is not None else np.empty(0, x3.dtype)
        sum_dy_xhat, sum_dy = sized(_nk.group_norm_backward, x3.size)(
            np.ascontiguousarray(dout).reshape(x3.shape), x3, mean, rstd, gm, dx)
        dgamma = sum_dy_xhat.sum(axis=0).astype(x3.dtype) if gamma is not None else None
        dbeta = sum_dy.sum(axis=0).astype(x3.dtype) if has_beta else None
        return dx.reshape(shape), dgamma, dbeta
    _, xhat, rstd, gamma, has_beta, num_groups = cache
    _same_dtype(dout, "dout", xhat)
    if dout.shape != xhat.shape:
        raise ValueError(f"dout must have shape {xhat.shape}, got {dout.shape}")
    n_batch, channels = xhat.shape[:2]
    per_channel = (1, channels) + (1,) * (xhat.ndim - 2)
    reduce_axes = (0,) + tuple(range(2, xhat.ndim))
    dgamma = (dout * xhat).sum(axis=reduce_axes) if gamma is not None else None
    dbeta = dout.sum(axis=reduce_axes) if has_beta else None
    group_shape = (n_batch, num_groups, channels // num_groups * int(np.prod(xhat.shape[2:])))
    g = (dout * gamma.reshape(per_channel) if gamma is not None else dout).reshape(group_shape)
    xg = xhat.reshape(group_shape)
    dx = rstd * (g - g.mean(axis=2, keepdims=True) - xg * (g * xg).mean(axis=2, keepdims=True))
    return dx.reshape(xhat.shape), dgamma, dbeta


def frozen_batch_norm_forward(x, weight, bias, running_mean, running_var, eps=1e-5):
    """Batch norm with frozen statistics, as torchvision's ``FrozenBatchNorm2d``: an affine map.

    Inputs: x (N, C, H, W); weight, bias, running_mean, running_var: (C,) each; eps (torchvision's
    default 1e-5). Computed in torchvision's order of operations:
    scale = weight · 1/sqrt(running_var + eps), shift = bias − running_mean · scale,
    out = x · scale[c] + shift[c] (same shape as x).
    """
    x = float_array(x, "x", ndim=4)
    channels = x.shape[1]
    weight = _param(weight, "weight", (channels,), x)
    bias = _param(bias, "bias", (channels,), x)
    running_mean = _param(running_mean, "running_mean", (channels,), x)
    running_var = _param(running_var, "running_var", (channels,), x)
    scale = weight * (1.0 / np.sqrt(running_var + eps)).astype(x.dtype)
    shift = bias - running_mean * scale
    out = x * scale[:, None, None] + shift[:, None, None]
    return out, scale


def frozen_batch_norm_backward(dout, cache):
    """dx = dout · scale[c]; the statistics and affine parameters are frozen (no gradient)."""
    scale = cache
    dout = float_array(dout, "dout", ndim=4)
    _same_dtype(dout, "dout", scale)
    if dout.shape[1] != scale.shape[0]:
        raise ValueError(f"dout must have {scale.shape[0]} channels, got shape {dout.shape}")
    return dout * scale[:, None, None]


# --------------------------------------------------------------------------------------------------
# upsample_nearest2d
# --------------------------------------------------------------------------------------------------


def nearest_source_index(in_size: int, out_size: int) -> np.ndarray:
    """Input index read by each of ``out_size`` outputs, torch's "nearest" rule (not "nearest-exact"):

        src = min(floor(dst · scale), in_size − 1),   scale = in_size / out_size

    with scale and the product in float32, as torch computes them; e.g. in 3 → out 7:
    scale = 0.42857143, dst 0..6 → 0, 0, 0, 1, 1, 2, 2.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    src = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(src, in_size - 1)


def upsample_nearest2d_forward(x, size):
    """Nearest-neighbour resize to an explicit size, as ``F.interpolate(x, size, mode="nearest")``.

    Inputs: x (N, C, H, W); size (H_out, W_out), each >= 1 (smaller than H, W also works: that
    subsamples). Output: out (N, C, H_out, W_out), out[..., y, x] = x[..., src_h[y], src_w[x]]
    (see ``nearest_source_index``), and the cache.
    """
    x = float_array(x, "x", ndim=4)
    out_h, out_w = pair(size, "size", minimum=1)
    height, width = x.shape[2:]
    if min(x.shape[1:]) < 1:
        raise ValueError(f"x must have non-empty channel/spatial axes, got {x.shape}")
    src_h, src_w = nearest_source_index(height, out_h), nearest_source_index(width, out_w)
    out = np.empty(x.shape[:2] + (out_h, out_w), x.dtype)
    sized(_k.upsample_nearest_forward, out.size)(np.ascontiguousarray(x), src_h, src_w, out)  # a gather
    return out, (x.shape, x.dtype, src_h, src_w)


def upsample_nearest2d_backward(dout, cache):
    """dx (N, C, H, W): every input pixel receives the sum of the gradients of the outputs that
    copied it (0 if none did): a scatter-add, one Numba task per (n, c) plane (the NumPy version,
    ``_upsample_nearest2d_backward_numpy``, is the reference in the tests)."""
    shape, dtype, src_h, src_w = cache
    dout = float_array(dout, "dout", ndim=4)
    if dout.dtype != dtype:
        raise TypeError(f"dout must have the same dtype as x ({dtype}), got {dout.dtype}")
    want = shape[:2] + (len(src_h), len(src_w))
    if dout.shape != want:
        raise ValueError(f"dout must have shape {want}, got {dout.shape}")
    dx = np.empty(shape, dtype=dtype)
    sized(_k.upsample_nearest_backward, dout.size)(np.ascontiguousarray(dout), src_h, src_w, dx)
    return dx


def _upsample_nearest2d_backward_numpy(dout, src_h, src_w, shape):
    """The scatter in NumPy: the source indices never decrease, so each input row/column owns a
    contiguous run of output rows/columns, and two segment sums (``np.add.reduceat``) do it."""
    rows = np.flatnonzero(np.diff(src_h, prepend=-1))  # first output row of every run
    cols = np.flatnonzero(np.diff(src_w, prepend=-1))
    summed = np.add.reduceat(np.add.reduceat(dout, rows, axis=2), cols, axis=3)
    dx = np.zeros(shape, dtype=dout.dtype)
    dx[:, :, src_h[rows][:, None], src_w[cols][None, :]] = summed
    return dx
