"""The checkers of minimaskrcnn.testing: our own implementations pass, typical student bugs fail.

Each "student" implementation below is a plain-loop version written independently of the package,
with flags that switch on one typical bug at a time. The checker must return True for the correct
version and False for every buggy one, and must never raise, whatever the student function does.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from minimaskrcnn import testing
from minimaskrcnn.nn.functional import conv2d_backward, conv2d_forward
from minimaskrcnn.ops import BoxCoder, nms, roi_align, roi_align_backward, roi_pool

# --------------------------------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------------------------------


def student_conv(bug=None):
    def forward(x, w, b, stride, padding, dilation):
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        n, c, h, wd = x.shape
        o, _, kh, kw = w.shape
        if bug == "ceil_output":
            ho = -(-(h + 2 * ph - dh * (kh - 1) - 1) // sh) + 1
            wo = -(-(wd + 2 * pw - dw * (kw - 1) - 1) // sw) + 1
        else:
            ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
            wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        if bug == "one_side_padding":  # all the padding at the bottom/right
            xp = np.pad(x, ((0, 0), (0, 0), (0, 2 * ph), (0, 2 * pw)))
        else:
            xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        if bug == "stride_dilation_swapped":
            (sh, sw), (dh, dw) = (dh, dw), (sh, sw)
            ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
            wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        wk = w[:, :, ::-1, ::-1] if bug == "flipped_forward" else w
        out = np.zeros((n, o, ho, wo))
        for i in range(kh):
            for j in range(kw):
                ys = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
                patch = xp[:, :, ys, j * dw : j * dw + sw * (wo - 1) + 1 : sw]
                if patch.shape[2:] != (ho, wo):  # ceil_output reads past the end
                    raise IndexError("window outside the input")
                out += np.einsum("nchw,oc->nohw", patch, wk[:, :, i, j])
        if b is not None:
            out += b[None, :, None, None]
        return out, (x, w, b, stride, padding, dilation)

    def backward(dout, cache):
        x, w, b, (sh, sw), (ph, pw), (dh, dw) = cache
        ho, wo = dout.shape[2:]
        kh, kw = w.shape[2:]
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        dxp = np.zeros_like(xp)
        dwt = np.zeros_like(w)
        wk = w
        if bug == "flipped_backward":
            wk = w[:, :, ::-1, ::-1]
        elif bug == "transposed_backward":
            wk = np.swapaxes(w, 2, 3)
        for i in range(kh):
            for j in range(kw):
                ys = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
                xs = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
                dwt[:, :, i, j] = np.einsum("nohw,nchw->oc", dout, xp[:, :, ys, xs])
                dxp[:, :, ys, xs] += np.einsum("nohw,oc->nchw", dout, wk[:, :, i, j])
        dx = dxp[:, :, ph : ph + x.shape[2], pw : pw + x.shape[3]]
        if (
            bug == "dw_transposed_gemm"
        ):  # cols @ dout_mat.T, (C·kH·kW, O), reshaped as if it were (O, C·kH·kW)
            dwt = np.ascontiguousarray(dwt.reshape(dwt.shape[0], -1).T).reshape(dwt.shape)
        if b is None:
            db = None
        elif bug == "db_first_image":
            db = dout[0].sum(axis=(1, 2))
        elif bug == "db_no_sum":
            db = dout.sum(axis=0)
        else:
            db = dout.sum(axis=(0, 2, 3))
        return dx, dwt, db

    return forward, backward


def test_conv_reference_passes(capsys):
    assert testing.check_conv2d(conv2d_forward, conv2d_backward)
    assert testing.check_conv2d(lambda *a: conv2d_forward(*a, method="naive"), conv2d_backward)
    assert "cases passed -> OK" in capsys.readouterr().out


def test_conv_student_correct_passes():
    assert testing.check_conv2d(*student_conv(), verbose=False)


@pytest.mark.parametrize("bug", ["ceil_output", "flipped_forward"])
def test_conv_forward_bugs_caught(bug):
    assert not testing.check_conv2d(student_conv(bug)[0], verbose=False)


@pytest.mark.parametrize("bug", ["flipped_backward", "transposed_backward", "db_first_image", "db_no_sum"])
def test_conv_backward_bugs_caught(bug):
    forward, backward = student_conv(bug)
    assert testing.check_conv2d(forward, verbose=False)  # the forward is right...
    assert not testing.check_conv2d(forward, backward, verbose=False)  # ...the backward is not


def test_conv_forward_must_return_out_and_cache(capsys):
    forward, _ = student_conv()
    assert not testing.check_conv2d(lambda *a: forward(*a)[0])
    assert "forward must return a tuple (out, cache)" in capsys.readouterr().out


def test_conv_forward_only_checks_no_backward():
    forward, _ = student_conv()
    assert testing.check_conv2d(forward, None, verbose=False)


# --------------------------------------------------------------------------------------------------
# RoIAlign
# --------------------------------------------------------------------------------------------------


def _student_align_samples(roi, scale, PH, PW, sr, aligned, H, W, bug):
    """Yield (k-bin, list of (weight, y, x) reads, count) per bin: the student's geometry."""
    off = 0.5 if aligned else 0.0
    if bug == "offset_plus":
        off = -off
    if bug == "offset_before_scale":
        x1, y1, x2, y2 = ((v - off) * scale for v in roi[1:])
    else:
        x1, y1, x2, y2 = (v * scale - off for v in roi[1:])
    rw, rh = x2 - x1, y2 - y1
    if not aligned and bug != "no_min_size":
        rw, rh = max(rw, 1.0), max(rh, 1.0)
    bh, bw = rh / PH, rw / PW
    rnd = math.floor if bug == "floor_grid" else math.ceil
    gh = sr if sr > 0 else int(rnd(rh / PH))
    gw = sr if sr > 0 else int(rnd(rw / PW))
    if bug == "grid_plus1":
        gh, gw = gh + 1, gw + 1
    for ph in range(PH):
        for pw in range(PW):
            reads, n_valid = [], 0
            for iy in range(gh):
                y = y1 + ph * bh + (iy + 0.5) * bh / gh
                for ix in range(gw):
                    x = x1 + pw * bw + (ix + 0.5) * bw / gw
                    if y < -1 or y > H or x < -1 or x > W:
                        continue
                    n_valid += 1
                    if bug != "int_no_clamp":
                        y, x = max(y, 0.0), max(x, 0.0)
                    yl, xl = int(y), int(x)
                    if yl >= H - 1:
                        yl = yh = H - 1
                        y = float(yl)
                    else:
                        yh = yl + 1
                    if xl >= W - 1:
                        xl = xh = W - 1
                        x = float(xl)
                    else:
                        xh = xl + 1
                    ly, lx = y - yl, x - xl
                    reads += [
                        ((1 - ly) * (1 - lx), yl, xl),
                        ((1 - ly) * lx, yl, xh),
                        (ly * (1 - lx), yh, xl),
                        (ly * lx, yh, xh),
                    ]
            count = max(gh * gw, 1)
            if bug == "count_valid_only":
                count = max(n_valid, 1)
            yield ph, pw, reads, count


def student_roi_align(bug=None):
    def fn(inp, boxes, output_size, spatial_scale, sampling_ratio, aligned):
        N, C, H, W = inp.shape
        PH, PW = output_size
        out = np.zeros((len(boxes), C, PH, PW))
        for k, roi in enumerate(boxes):
            b = int(roi[0])
            for ph, pw, reads, count in _student_align_samples(
                roi, spatial_scale, PH, PW, sampling_ratio, aligned, H, W, bug
            ):
                out[k, :, ph, pw] = sum(wt * inp[b, :, y, x] for wt, y, x in reads) / count if reads else 0
        return out

    def backward(grad, boxes, input_shape, output_size, spatial_scale, sampling_ratio, aligned):
        N, C, H, W = input_shape
        PH, PW = output_size
        dx = np.zeros(input_shape)
        for k, roi in enumerate(boxes):
            b = int(roi[0])
            for ph, pw, reads, count in _student_align_samples(
                roi, spatial_scale, PH, PW, sampling_ratio, aligned, H, W, None
            ):
                for wt, y, x in reads:
                    g = grad[k, :, ph, pw] * wt
                    if bug == "backward_no_count":
                        dx[b, :, y, x] += g
                    elif bug == "backward_assign":
                        dx[b, :, y, x] = g / count
                    else:
                        dx[b, :, y, x] += g / count
        return dx

    return fn, backward


def test_roi_align_reference_passes():
    assert testing.check_roi_align(roi_align, roi_align_backward, verbose=False)
    assert testing.check_roi_align(lambda *a: roi_align(*a, backend="reference"), verbose=False)


def test_roi_align_student_correct_passes():
    assert testing.check_roi_align(*student_roi_align(), verbose=False)


@pytest.mark.parametrize(
    "bug", ["offset_plus", "offset_before_scale", "no_min_size", "floor_grid", "count_valid_only"]
)
def test_roi_align_forward_bugs_caught(bug):
    assert not testing.check_roi_align(student_roi_align(bug)[0], verbose=False)


@pytest.mark.parametrize("bug", ["backward_no_count", "backward_assign"])
def test_roi_align_backward_bugs_caught(bug):
    assert not testing.check_roi_align(*student_roi_align(bug), verbose=False)


def test_roi_align_wrong_offset_is_named(capsys):
    assert not testing.check_roi_align(student_roi_align("offset_plus")[0])
    out = capsys.readouterr().out
    assert "FAIL  forward:  same box, aligned=True" in out
    assert "Likely bug: half-pixel offset the wrong way" in out
    assert "PASS  forward:  ramp 6x7" in out  # the aligned=False golden case is unaffected


# --------------------------------------------------------------------------------------------------
# RoIPool
# --------------------------------------------------------------------------------------------------


def student_roi_pool(bug=None):
    def c_round(v):
        if bug == "numpy_round":
            return int(np.round(v))
        if bug == "truncate":
            return int(v)
        return int(math.floor(v + 0.5)) if v >= 0 else -int(math.floor(-v + 0.5))

    def fn(inp, boxes, output_size, spatial_scale):
        N, C, H, W = inp.shape
        PH, PW = output_size
        out = np.zeros((len(boxes), C, PH, PW))
        for k, roi in enumerate(boxes):
            b = int(roi[0])
            x1, y1, x2, y2 = (c_round(v * spatial_scale) for v in roi[1:])
            extra = 0 if bug == "exclusive" else 1
            rw, rh = max(x2 - x1 + extra, 1), max(y2 - y1 + extra, 1)
            bh, bw = rh / PH, rw / PW
            for ph in range(PH):
                hs = min(max(math.floor(ph * bh) + y1, 0), H)
                he = min(max(math.ceil((ph + 1) * bh) + y1, 0), H)
                for pw in range(PW):
                    ws = min(max(math.floor(pw * bw) + x1, 0), W)
                    we = min(max(math.ceil((pw + 1) * bw) + x1, 0), W)
                    if he <= hs or we <= ws:
                        out[k, :, ph, pw] = -np.inf if bug == "empty_minus_inf" else 0.0
                        continue
                    m = inp[b, :, hs:he, ws:we].max(axis=(1, 2))
                    out[k, :, ph, pw] = np.maximum(m, 0.0) if bug == "max_from_zero" else m
        return out

    return fn


def test_roi_pool_reference_passes():
    assert testing.check_roi_pool(roi_pool, verbose=False)
    assert testing.check_roi_pool(lambda *a: roi_pool(*a, backend="reference"), verbose=False)


def test_roi_pool_student_correct_passes():
    assert testing.check_roi_pool(student_roi_pool(), verbose=False)


@pytest.mark.parametrize("bug", ["numpy_round", "truncate", "exclusive", "empty_minus_inf", "max_from_zero"])
def test_roi_pool_bugs_caught(bug):
    assert not testing.check_roi_pool(student_roi_pool(bug), verbose=False)


def test_roi_pool_half_to_even_named(capsys):
    assert not testing.check_roi_pool(student_roi_pool("numpy_round"))
    out = capsys.readouterr().out
    assert "FAIL  box coordinates at .5 after scaling" in out and "Likely bug: NumPy's half-to-even" in out


# --------------------------------------------------------------------------------------------------
# NMS
# --------------------------------------------------------------------------------------------------


def student_nms(bug=None):
    def iou(a, b):
        e = 1.0 if bug == "plus_one" else 0.0
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + e)
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + e)
        inter = iw * ih
        area = lambda r: (r[2] - r[0] + e) * (r[3] - r[1] + e)  # noqa: E731
        return inter / (area(a) + area(b) - inter)

    def fn(boxes, scores, thr):
        order = np.argsort(scores)[::-1] if bug == "reversed_ties" else np.argsort(-scores, kind="stable")
        suppressed = np.zeros(len(boxes), bool)
        keep = []
        for pos, i in enumerate(order):
            if suppressed[i]:
                if bug != "suppressed_suppress":
                    continue
            else:
                keep.append(i)
            for j in order[pos + 1 :]:
                o = iou(boxes[i], boxes[j])
                if (o >= thr) if bug == "ge" else (o > thr):
                    suppressed[j] = True
        keep = np.array(keep, dtype=np.int64)
        return np.sort(keep) if bug == "index_order" else keep

    return fn


def test_nms_reference_passes():
    assert testing.check_nms(nms, verbose=False)
    assert testing.check_nms(lambda *a: nms(*a, backend="reference"), verbose=False)


def test_nms_student_correct_passes():
    assert testing.check_nms(student_nms(), verbose=False)


@pytest.mark.parametrize("bug", ["plus_one", "ge", "index_order", "reversed_ties", "suppressed_suppress"])
def test_nms_bugs_caught(bug):
    assert not testing.check_nms(student_nms(bug), verbose=False)


# --------------------------------------------------------------------------------------------------
# Box coder
# --------------------------------------------------------------------------------------------------


def student_box_coder(bug=None):
    e = 1.0 if bug == "plus_one" else 0.0

    def centre_size(b):
        w, h = b[:, 2] - b[:, 0] + e, b[:, 3] - b[:, 1] + e
        return b[:, 0] + 0.5 * w, b[:, 1] + 0.5 * h, w, h

    def encode(ref, prop, weights):
        wx, wy, ww, wh = weights
        if bug == "weights_divide_encode":
            wx, wy, ww, wh = 1 / wx, 1 / wy, 1 / ww, 1 / wh
        if bug == "swapped_args":
            ref, prop = prop, ref
        gx, gy, gw, gh = centre_size(ref)
        ax, ay, aw, ah = centre_size(prop)
        return np.stack(
            [wx * (gx - ax) / aw, wy * (gy - ay) / ah, ww * np.log(gw / aw), wh * np.log(gh / ah)], 1
        )

    def decode(d, boxes, weights):
        wx, wy, ww, wh = weights
        ax, ay, aw, ah = centre_size(boxes)
        dw, dh = d[:, 2] / ww, d[:, 3] / wh
        if bug != "no_clamp":
            dw, dh = np.minimum(dw, math.log(1000 / 16)), np.minimum(dh, math.log(1000 / 16))
        cx, cy = d[:, 0] / wx * aw + ax, d[:, 1] / wy * ah + ay
        if bug == "weights_multiply_decode":
            dw = np.minimum(d[:, 2] * ww, math.log(1000 / 16))
            dh = np.minimum(d[:, 3] * wh, math.log(1000 / 16))
            cx, cy = d[:, 0] * wx * aw + ax, d[:, 1] * wy * ah + ay
        w, h = np.exp(dw) * aw, np.exp(dh) * ah
        return np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], 1)

    return encode, decode


def test_box_coder_reference_passes():
    enc = lambda r, p, w: BoxCoder(w).encode(r, p)  # noqa: E731
    dec = lambda d, b, w: BoxCoder(w).decode(d, b)  # noqa: E731
    assert testing.check_box_coder(enc, dec, verbose=False)


def test_box_coder_student_correct_passes():
    assert testing.check_box_coder(*student_box_coder(), verbose=False)


@pytest.mark.parametrize("bug", ["plus_one", "weights_divide_encode", "swapped_args", "no_clamp"])
def test_box_coder_bugs_caught(bug):
    assert not testing.check_box_coder(*student_box_coder(bug), verbose=False)


# --------------------------------------------------------------------------------------------------
# Mask loss
# --------------------------------------------------------------------------------------------------


def student_mask_loss(kind, bug=None):
    def fn(z, labels, t):
        R, C, M, _ = z.shape
        n = R * M * M
        r = np.arange(R)
        lab = labels - 1 if bug == "label_minus_one" else labels
        if kind == "sigmoid":
            if bug == "all_channels":
                tt = np.zeros_like(z)
                tt[r, lab] = t
                s = 1 / (1 + np.exp(-z))
                with np.errstate(divide="ignore", invalid="ignore"):  # log(0) on the large-logit case
                    loss = -(tt * np.log(s) + (1 - tt) * np.log(1 - s)).mean()
                return loss, (s - tt) / z.size
            zk = z[r, lab]
            s = 1 / (1 + np.exp(-zk))
            loss = (np.maximum(zk, 0) - zk * t + np.log1p(np.exp(-np.abs(zk)))).sum()
            d = np.zeros_like(z)
            d[r, lab] = s - t
        else:
            zz = z - z.max(axis=1, keepdims=True)
            logp = zz - np.log(np.exp(zz).sum(axis=1, keepdims=True))
            q = np.zeros_like(z)
            q[r, lab] = t
            if bug != "softmax_no_background":
                q[:, 0] += 1 - t
            loss = -(q * logp).sum()
            d = np.exp(logp) * q.sum(axis=1, keepdims=True) - q
        if bug == "sum_not_mean":
            return loss, d
        if bug == "grad_not_divided":
            return loss / n, d
        return loss / n, d / n

    return fn


@pytest.mark.parametrize("kind", ["sigmoid", "softmax"])
def test_mask_loss_reference_and_model_pass(kind):
    from minimaskrcnn.model.roi_heads import mask_loss

    assert not hasattr(testing, "mask_loss_reference")  # the public API hands out no reference solution
    # The model's loss is the checker's definition (config.MaskConfig documents it).
    assert testing.check_mask_loss(lambda z, lb, t: mask_loss(z, lb, t, kind), kind, verbose=False)
    assert testing.check_mask_loss(student_mask_loss(kind), kind, verbose=False)


@pytest.mark.parametrize("bug", ["label_minus_one", "sum_not_mean", "grad_not_divided"])
@pytest.mark.parametrize("kind", ["sigmoid", "softmax"])
def test_mask_loss_bugs_caught(kind, bug):
    assert not testing.check_mask_loss(student_mask_loss(kind, bug), kind, verbose=False)


def test_mask_loss_kind_specific_bugs_caught():
    assert not testing.check_mask_loss(student_mask_loss("sigmoid", "all_channels"), "sigmoid", verbose=False)
    assert not testing.check_mask_loss(
        student_mask_loss("softmax", "softmax_no_background"), "softmax", verbose=False
    )
    # Each loss is not the other one.
    assert not testing.check_mask_loss(student_mask_loss("softmax"), "sigmoid", verbose=False)
    assert not testing.check_mask_loss(student_mask_loss("sigmoid"), "softmax", verbose=False)


def test_mask_loss_model_gradient_is_numerical_gradient():
    from minimaskrcnn.model.roi_heads import mask_loss
    from minimaskrcnn.nn.gradcheck import numerical_gradient, rel_error

    rng = np.random.default_rng(0)
    z = rng.normal(size=(2, 3, 3, 3))
    labels = np.array([1, 2])
    t = rng.uniform(size=(2, 3, 3))
    for kind in ("sigmoid", "softmax"):
        _, d = mask_loss(z, labels, t, kind)
        num = numerical_gradient(lambda k=kind: mask_loss(z, labels, t, k)[0], z, np.float64(1.0))
        assert rel_error(d, num) < 1e-7


def test_mask_loss_model_golden_values():
    from minimaskrcnn.model.roi_heads import mask_loss

    # One pixel, logits z = (0, 0) over (background, class 1), target t = 1.
    z = np.zeros((1, 2, 1, 1))
    t = np.ones((1, 1, 1))
    loss, d = mask_loss(z, np.array([1]), t, "sigmoid")
    assert loss == pytest.approx(math.log(2))  # −log σ(0) = log 2
    assert d[0, :, 0, 0].tolist() == [0.0, -0.5]  # σ(0) − 1 on channel 1, nothing on channel 0
    loss, d = mask_loss(z, np.array([1]), t, "softmax")
    assert loss == pytest.approx(math.log(2))  # p = (½, ½), −log p_1 = log 2
    assert d[0, :, 0, 0].tolist() == [0.5, -0.5]  # p − q with q = (0, 1)


def test_mask_loss_kind_must_be_known():
    with pytest.raises(ValueError, match="kind"):
        testing.check_mask_loss(student_mask_loss("sigmoid"), "logistic")


# --------------------------------------------------------------------------------------------------
# The checkers never crash on a broken function
# --------------------------------------------------------------------------------------------------


def _raises(*args):
    raise NotImplementedError


BROKEN = [
    lambda *a: None,
    lambda *a: "nonsense",
    lambda *a: np.zeros(3),
    _raises,
    lambda *a: (np.zeros(1),) * 5,
]


@pytest.mark.parametrize("broken", BROKEN)
def test_checkers_report_broken_functions_as_failures(broken, capsys):
    assert testing.check_conv2d(broken, broken) is False
    assert testing.check_conv2d(student_conv()[0], broken) is False
    assert testing.check_roi_align(broken) is False
    assert testing.check_roi_align(student_roi_align()[0], broken) is False
    assert testing.check_roi_pool(broken) is False
    assert testing.check_nms(broken) is False
    assert testing.check_box_coder(broken, broken) is False
    assert testing.check_mask_loss(broken, "sigmoid") is False
    out = capsys.readouterr().out
    assert "FAIL" in out and "-> FAILED" in out


def test_exception_is_reported_with_its_location(capsys):
    assert not testing.check_nms(_raises)
    out = capsys.readouterr().out
    assert "raised NotImplementedError" in out and "_raises" in out


def test_student_arrays_are_copies():
    """A function that scribbles over its inputs cannot corrupt later cases or the expected values."""
    correct = student_nms()

    def scribbling(boxes, scores, thr):
        keep = correct(boxes, scores, thr)
        boxes[...] = 0
        scores[...] = 0
        return keep

    assert testing.check_nms(scribbling, verbose=False)


# --------------------------------------------------------------------------------------------------
# The golden cases mean what their hints say (numbers worked out by hand)
# --------------------------------------------------------------------------------------------------


def test_ramp_golden_values_by_hand():
    cases = {c[0]: c for c in testing._roi_align_cases("golden", None)}
    # Channel 0 of the ramp is v(i, j) = i + j/10, linear, so bilinear sampling is exact and a bin's value is
    # v at the mean sample position. Box (1, 1, 4, 4), 2x2 bins of 1.5 px, 2x2 samples per bin: bin (0, 0)
    # samples y, x at 1 + 0.375 and 1 + 1.125, mean 1.75 -> 1.75 + 0.175 = 1.925.
    name, x, boxes, out_size, scale, sr, aligned, _ = cases[
        "ramp 6x7, box (1,1,4,4), 2x2 bins, 2 samples, aligned=False"
    ]
    assert roi_align(x, boxes, out_size, scale, sr, aligned)[0, 0, 0, 0] == pytest.approx(1.925)
    # aligned=True shifts every sample by -0.5: 1.25 + 0.125 = 1.375.
    name, x, boxes, out_size, scale, sr, aligned, _ = cases["same box, aligned=True (half-pixel shift)"]
    assert roi_align(x, boxes, out_size, scale, sr, aligned)[0, 0, 0, 0] == pytest.approx(1.375)


def test_roi_pool_half_rounding_golden_by_hand():
    cases = {c[0]: c for c in testing._roi_pool_cases("golden", None)}
    name, x, boxes, out_size, scale, _ = cases["box coordinates at .5 after scaling (2.5 -> 3)"]
    # C round of (2.5, 0.5, 5.5, 4.5) = (3, 1, 6, 5): 4 columns x 5 rows; bin (0, 0) covers rows
    # floor(0)+1 .. ceil(2.5)+1 = 1..3 and columns 3..4, max of i + j/10 = 3 + 0.4 = 3.4.
    assert roi_pool(x, boxes, out_size, scale)[0, 0, 0, 0] == pytest.approx(3.4)
    # NumPy's half-to-even gives (2, 0, 6, 4): 5 columns x 5 rows; bin (0, 0) covers rows 0..2 and
    # columns 2..4, max 2 + 0.4 = 2.4 - the student bug the case is there to catch.
    assert student_roi_pool("numpy_round")(x, boxes, out_size, scale)[0, 0, 0, 0] == pytest.approx(2.4)


# --------------------------------------------------------------------------------------------------
# Feedback: one line, naming the classic bug when the output is that bug's
# --------------------------------------------------------------------------------------------------


def _feedback(run, capsys):
    """Run a checker; return (result, its printed lines that carry feedback)."""
    ok = run()
    lines = capsys.readouterr().out.splitlines()
    return ok, [ln.strip() for ln in lines if ln.strip().startswith(("Likely bug:", "hint", "Not allowed:"))]


CLASSIC_BUGS = [
    # (checker call, the start of the label it must print)
    (
        "conv flipped kernel",
        lambda: testing.check_conv2d(student_conv("flipped_forward")[0]),
        "Likely bug: flipped kernel",
    ),
    (
        "conv one-side padding",
        lambda: testing.check_conv2d(student_conv("one_side_padding")[0]),
        "Likely bug: padding on one side only",
    ),
    (
        "conv stride/dilation",
        lambda: testing.check_conv2d(student_conv("stride_dilation_swapped")[0]),
        "Likely bug: stride and dilation mixed up",
    ),
    (
        "conv transposed dw",
        lambda: testing.check_conv2d(*student_conv("dw_transposed_gemm"), part="backward"),
        "Likely bug: transposed dw",
    ),
    (
        "conv flipped dx",
        lambda: testing.check_conv2d(*student_conv("flipped_backward"), part="backward"),
        "Likely bug: flipped kernel in dx",
    ),
    (
        "roi_align offset",
        lambda: testing.check_roi_align(student_roi_align("offset_plus")[0]),
        "Likely bug: half-pixel offset the wrong way",
    ),
    (
        "roi_align min size",
        lambda: testing.check_roi_align(student_roi_align("no_min_size")[0]),
        "Likely bug: missing max(…, 1) of aligned=False",
    ),
    (
        "roi_align grid",
        lambda: testing.check_roi_align(student_roi_align("grid_plus1")[0]),
        "Likely bug: sampling count off by one",
    ),
    (
        "roi_align int",
        lambda: testing.check_roi_align(student_roi_align("int_no_clamp")[0]),
        "Likely bug: floor vs int at negatives",
    ),
    (
        "roi_pool half-to-even",
        lambda: testing.check_roi_pool(student_roi_pool("numpy_round")),
        "Likely bug: NumPy's half-to-even rounding",
    ),
    (
        "roi_pool +1",
        lambda: testing.check_roi_pool(student_roi_pool("exclusive")),
        "Likely bug: missing inclusive +1",
    ),
    ("nms >=", lambda: testing.check_nms(student_nms("ge")), "Likely bug: '>=' instead of '>'"),
    ("nms +1", lambda: testing.check_nms(student_nms("plus_one")), "Likely bug: IoU with +1"),
    ("nms ties", lambda: testing.check_nms(student_nms("reversed_ties")), "Likely bug: unstable tie order"),
    ("coder +1", lambda: testing.check_box_coder(*student_box_coder("plus_one")), "Likely bug: +1 widths"),
    (
        "coder decode weights",
        lambda: testing.check_box_coder(*student_box_coder("weights_multiply_decode")),
        "Likely bug: weights multiplied on decode",
    ),
    (
        "coder clamp",
        lambda: testing.check_box_coder(*student_box_coder("no_clamp")),
        "Likely bug: missing clamp",
    ),
    (
        "mask count",
        lambda: testing.check_mask_loss(student_mask_loss("sigmoid", "sum_not_mean"), "sigmoid"),
        "Likely bug: mean over the wrong count",
    ),
    (
        "mask all channels",
        lambda: testing.check_mask_loss(student_mask_loss("sigmoid", "all_channels"), "sigmoid"),
        "Likely bug: all channels in the sigmoid loss",
    ),
    (
        "mask no background",
        lambda: testing.check_mask_loss(student_mask_loss("softmax", "softmax_no_background"), "softmax"),
        "Likely bug: softmax without the background target",
    ),
]


@pytest.mark.parametrize("run, label", [c[1:] for c in CLASSIC_BUGS], ids=[c[0] for c in CLASSIC_BUGS])
def test_classic_bug_is_named_in_one_line(run, label, capsys):
    ok, feedback = _feedback(run, capsys)
    assert not ok
    assert len(feedback) == 1 and feedback[0].startswith(label), feedback


def test_unknown_bug_gets_the_simplest_failing_case_hint_only(capsys):
    # Ceil instead of floor in the output size matches no known bug: the hint of the first failing case.
    ok, feedback = _feedback(lambda: testing.check_conv2d(student_conv("ceil_output")[0]), capsys)
    assert not ok and len(feedback) == 1 and feedback[0].startswith("hint (simplest failing case"), feedback


def test_indices_and_positions_print_as_plain_ints(capsys):
    assert not testing.check_nms(student_nms("ge"))
    assert not testing.check_roi_pool(student_roi_pool("exclusive"))
    out = capsys.readouterr().out
    assert "np.int" not in out and "kept [0]" in out and "in output[0, 0, " in out


# --------------------------------------------------------------------------------------------------
# Parts and seeds (partial credit, hidden cases)
# --------------------------------------------------------------------------------------------------


def _case_names(run, capsys):
    run()
    return [
        ln.split("  ", 2)[2].strip()[:40]
        for ln in capsys.readouterr().out.splitlines()
        if ln.startswith(("  PASS", "  FAIL"))
    ]


def test_parts_select_their_cases(capsys):
    fwd, bwd = student_conv()
    golden = _case_names(lambda: testing.check_conv2d(fwd, part="golden"), capsys)
    random = _case_names(lambda: testing.check_conv2d(fwd, part="random"), capsys)
    backward = _case_names(lambda: testing.check_conv2d(fwd, bwd, part="backward"), capsys)
    assert golden and all(not n.startswith("forward:  random") for n in golden)
    assert random and all(n.startswith("forward:  random") for n in random)
    assert backward and all(n.startswith("backward:") for n in backward)
    with pytest.raises(ValueError, match="part"):
        testing.check_nms(student_nms(), part="backward")
    with pytest.raises(ValueError, match="backward"):
        testing.check_conv2d(fwd, part="backward")


def test_seed_changes_the_random_cases_and_passes_a_correct_function(capsys):
    default = _case_names(lambda: testing.check_roi_pool(student_roi_pool(), part="random"), capsys)
    hidden = _case_names(
        lambda: testing.check_roi_pool(student_roi_pool(), part="random", seed=91733), capsys
    )
    assert default != hidden
    for seed in (123, 4567):
        assert testing.check_conv2d(*student_conv(), seed=seed, verbose=False)
        assert testing.check_roi_align(*student_roi_align(), seed=seed, verbose=False)
        assert testing.check_roi_pool(student_roi_pool(), seed=seed, verbose=False)
        assert testing.check_nms(student_nms(), seed=seed, verbose=False)
        assert testing.check_box_coder(*student_box_coder(), seed=seed, verbose=False)
        assert testing.check_mask_loss(student_mask_loss("softmax"), "softmax", seed=seed, verbose=False)
        assert not testing.check_nms(student_nms("ge"), part="golden", seed=seed, verbose=False)


def test_backward_points_survive_a_forward_bug():
    # RoIAlign's backward is graded without the student's forward...
    fwd, bwd = student_roi_align("offset_plus")
    assert not testing.check_roi_align(fwd, verbose=False)
    assert testing.check_roi_align(fwd, bwd, part="backward", verbose=False)
    assert testing.check_roi_align(None, student_roi_align()[1], part="backward", verbose=False)
    # ...and conv's backward calls the forward only for its cache: a wrong `out` costs nothing there.
    fwd, bwd = student_conv("flipped_forward")
    assert not testing.check_conv2d(fwd, part="golden", verbose=False)
    assert testing.check_conv2d(fwd, bwd, part="backward", verbose=False)
    # The mask loss: a wrong gradient costs the backward part only.
    grad_bug = student_mask_loss("sigmoid", "grad_not_divided")
    assert testing.check_mask_loss(grad_bug, "sigmoid", part="golden", verbose=False)
    assert testing.check_mask_loss(grad_bug, "sigmoid", part="random", verbose=False)
    assert not testing.check_mask_loss(grad_bug, "sigmoid", part="backward", verbose=False)


# --------------------------------------------------------------------------------------------------
# Sub-function checkers
# --------------------------------------------------------------------------------------------------


def student_im2col(bug=None):
    def im2col(x, kh, kw, stride, padding, dilation):
        n, c, h, w = x.shape
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        cols = np.zeros((c * kh * kw, n * ho * wo))
        for ci in range(c):
            for i in range(kh):
                for j in range(kw):
                    row = (i * kw + j) * c + ci if bug == "rows_ijc" else (ci * kh + i) * kw + j
                    for b in range(n):
                        for y in range(ho):
                            for xo in range(wo):
                                col = (y * wo + xo) * n + b if bug == "cols_yxn" else (b * ho + y) * wo + xo
                                cols[row, col] = xp[b, ci, y * sh + i * dh, xo * sw + j * dw]
        return cols

    def col2im(dcols, x_shape, kh, kw, stride, padding, dilation):
        n, c, h, w = x_shape
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
        for ci in range(c):
            for i in range(kh):
                for j in range(kw):
                    for b in range(n):
                        for y in range(ho):
                            for xo in range(wo):
                                v = dcols[(ci * kh + i) * kw + j, (b * ho + y) * wo + xo]
                                if bug == "assign":
                                    dxp[b, ci, y * sh + i * dh, xo * sw + j * dw] = v
                                else:
                                    dxp[b, ci, y * sh + i * dh, xo * sw + j * dw] += v
        return dxp[:, :, ph : ph + h, pw : pw + w]

    return im2col, col2im


def student_bilinear(bug=None):
    def fn(y, x, H, W):
        if y < -1 or y > H or x < -1 or x > W:
            return []
        if bug != "int_no_clamp":
            y, x = max(y, 0.0), max(x, 0.0)
        y0, x0 = int(y), int(x)
        y1, x1 = min(y0 + 1, H - 1), min(x0 + 1, W - 1)
        if y0 >= H - 1:
            y0, y = H - 1, float(H - 1)
        if x0 >= W - 1:
            x0, x = W - 1, float(W - 1)
        ly, lx = y - y0, x - x0
        return [
            (y0, x0, (1 - ly) * (1 - lx)),
            (y0, x1, (1 - ly) * lx),
            (y1, x0, ly * (1 - lx)),
            (y1, x1, ly * lx),
        ]

    return fn


def student_iou(bug=None):
    def fn(box, boxes):
        e = 1.0 if bug == "plus1" else 0.0
        iw = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]) + e
        ih = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]) + e
        if bug != "no_clamp":
            iw, ih = np.maximum(iw, 0), np.maximum(ih, 0)
        area = (box[2] - box[0] + e) * (box[3] - box[1] + e)
        areas = (boxes[:, 2] - boxes[:, 0] + e) * (boxes[:, 3] - boxes[:, 1] + e)
        return iw * ih / (area + areas - iw * ih)

    return fn


def test_sub_function_checkers_pass_correct_code():
    im2col, col2im = student_im2col()
    assert testing.check_im2col(im2col, graded=True, verbose=False)
    assert testing.check_col2im(col2im, graded=True, verbose=False)
    assert testing.check_bilinear(student_bilinear(), graded=True, verbose=False)
    assert testing.check_iou(student_iou(), graded=True, verbose=False)
    assert testing.check_iou(student_iou(), seed=5, verbose=False)


@pytest.mark.parametrize(
    "run, label",
    [
        (
            lambda: testing.check_im2col(student_im2col("cols_yxn")[0]),
            "Likely bug: columns ordered (y, x, n)",
        ),
        (lambda: testing.check_im2col(student_im2col("rows_ijc")[0]), "Likely bug: rows ordered (i, j, c)"),
        (
            lambda: testing.check_col2im(student_im2col("assign")[1]),
            "Likely bug: assigning instead of adding",
        ),
        (
            lambda: testing.check_bilinear(student_bilinear("int_no_clamp")),
            "Likely bug: floor vs int at negatives",
        ),
        (lambda: testing.check_iou(student_iou("plus1")), "Likely bug: IoU with +1"),
        (lambda: testing.check_iou(student_iou("no_clamp")), "Likely bug: overlap not clamped at 0"),
    ],
    ids=["im2col cols", "im2col rows", "col2im assign", "bilinear int", "iou +1", "iou clamp"],
)
def test_sub_function_bugs_are_named(run, label, capsys):
    ok, feedback = _feedback(run, capsys)
    assert not ok and len(feedback) == 1 and feedback[0].startswith(label), feedback


# --------------------------------------------------------------------------------------------------
# Graded mode: this package, torch and torchvision are out of reach while the student's code runs
# --------------------------------------------------------------------------------------------------

# Captured at import time, as a notebook's first cell would: the guard must catch calls through them.
from minimaskrcnn.ops import nms as captured_nms  # noqa: E402
from minimaskrcnn.ops import roi_align as captured_roi_align  # noqa: E402


def _not_allowed(run, capsys, what):
    ok, feedback = _feedback(run, capsys)
    assert ok is False
    assert (
        feedback
        and feedback[0].startswith("Not allowed: graded mode: your code called ")
        and what in feedback[0]
    ), feedback


def _stable_order(scores):
    return np.argsort(-scores, kind="stable")


def test_honest_numpy_solutions_pass_in_graded_mode():
    assert testing.check_conv2d(*student_conv(), graded=True, verbose=False)
    assert testing.check_roi_align(*student_roi_align(), graded=True, verbose=False)
    assert testing.check_roi_pool(student_roi_pool(), graded=True, verbose=False)
    assert testing.check_nms(student_nms(), graded=True, verbose=False)
    assert testing.check_box_coder(*student_box_coder(), graded=True, verbose=False)
    for kind in ("sigmoid", "softmax"):
        assert testing.check_mask_loss(student_mask_loss(kind), kind, graded=True, verbose=False)


def test_package_wrappers_pass_for_the_op_author_and_fail_when_graded(capsys):
    from minimaskrcnn.model.roi_heads import mask_loss

    enc = lambda r, p, w: BoxCoder(w).encode(r, p)  # noqa: E731
    dec = lambda d, b, w: BoxCoder(w).decode(d, b)  # noqa: E731
    wrappers = [
        (lambda g: testing.check_conv2d(conv2d_forward, conv2d_backward, graded=g), "conv2d_forward"),
        (lambda g: testing.check_roi_align(roi_align, roi_align_backward, graded=g), "roi_align"),
        (lambda g: testing.check_roi_pool(roi_pool, graded=g), "roi_pool"),
        (lambda g: testing.check_nms(nms, graded=g), "minimaskrcnn.ops.nms.nms"),
        (lambda g: testing.check_box_coder(enc, dec, graded=g), "BoxCoder"),
        (
            lambda g: testing.check_mask_loss(
                lambda z, lb, t: mask_loss(z, lb, t, "softmax"), "softmax", graded=g
            ),
            "mask_loss",
        ),
    ]
    for run, what in wrappers:
        assert run(False)
        capsys.readouterr()
        _not_allowed(lambda r=run: r(True), capsys, what)


def test_torchvision_wrappers_pass_for_the_op_author_and_fail_when_graded(torch, torchvision, capsys):
    t = torch.from_numpy
    tv_nms = lambda b, s, thr: torchvision.ops.nms(t(b), t(s), thr).numpy()  # noqa: E731
    tv_align = lambda x, b, o, s, r, a: torchvision.ops.roi_align(t(x), t(b), o, s, r, a).numpy()  # noqa: E731
    tv_pool = lambda x, b, o, s: torchvision.ops.roi_pool(t(x), t(b), o, s).numpy()  # noqa: E731

    def torch_conv(x, w, b, s, p, d):  # a torch C function, no torch Python code on the way
        return torch.conv2d(t(x), t(w), None if b is None else t(b), s, p, d).numpy(), None

    for check, fn, what in (
        (testing.check_nms, tv_nms, "torchvision.ops"),
        (testing.check_roi_align, tv_align, "torchvision.ops"),
        (testing.check_roi_pool, tv_pool, "torchvision.ops"),
        (testing.check_conv2d, torch_conv, "torch ("),
    ):
        assert check(fn, part="golden", verbose=False)
        _not_allowed(lambda c=check, f=fn: c(f, part="golden", graded=True), capsys, what)


def test_bypasses_are_caught(capsys):
    import importlib
    import threading

    from minimaskrcnn.ops import _roi_common

    nms_module = importlib.import_module("minimaskrcnn.ops.nms")  # (the package's `ops.nms` is the function)
    order = _stable_order
    bypasses = {
        "reference captured at import": (
            lambda b, s, thr: captured_nms(b, s, thr),
            "minimaskrcnn.ops.nms.nms",
        ),
        "private reference tier": (
            lambda b, s, thr: order(s)[nms_module._nms_reference(b[order(s)], thr)],
            "_nms_reference",
        ),
        "numba kernel called directly": (
            lambda b, s, thr: order(s)[
                np.flatnonzero(
                    nms_module._nms_sorted_numba(
                        *(np.ascontiguousarray(b[order(s)][:, k]) for k in range(4)), thr, 0.0
                    )
                )
            ],
            "Numba kernel",
        ),
        "numba kernel through map()": (
            lambda b, s, thr: list(map(nms_module._nms_sorted_numba, [b])),
            "Numba kernel",
        ),
        "numba py_func": (
            lambda b, s, thr: nms_module._nms_sorted_numba.py_func(
                *(np.ascontiguousarray(b[order(s)][:, k]) for k in range(4)), thr, 0.0
            ),
            "_nms_sorted_numba",
        ),
        "numba re-jit of py_func": (
            lambda b, s, thr: __import__("numba").njit(nms_module._nms_sorted_numba.py_func)(
                *(np.ascontiguousarray(b[order(s)][:, k]) for k in range(4)), thr, 0.0
            ),
            "numba compiling",
        ),
        "importlib.reload": (
            lambda b, s, thr: importlib.reload(nms_module).nms(b, s, thr),
            "(import or reload)",
        ),
        "fresh module from the package's file": (
            lambda b, s, thr: _load_fresh(nms_module.__file__).nms(b, s, thr),
            "import or reload",
        ),
        "a helper of the package": (
            lambda b, s, thr: _roi_common.check_backend("numba") and captured_nms(b, s, thr),
            "check_backend",
        ),
        "a thread started inside": (
            lambda b, s, thr: _in_thread(lambda: captured_nms(b, s, thr), threading),
            "minimaskrcnn.ops.nms.nms",
        ),
        "switching the guard off": (
            lambda b, s, thr: (__import__("sys").setprofile(None), captured_nms(b, s, thr))[1],
            "sys.setprofile",
        ),
        "catching the violation": (lambda b, s, thr: _swallow(lambda: captured_nms(b, s, thr)), "nms"),
        "the checker's own reference": (
            lambda b, s, thr: testing._nms_ref(b, s, thr),
            "minimaskrcnn.testing",
        ),
    }
    for fn, what in bypasses.values():
        _not_allowed(lambda f=fn: testing.check_nms(f, part="golden", graded=True), capsys, what)
    # RoIAlign through a reference captured at import, and nothing is left switched off afterwards.
    _not_allowed(
        lambda: testing.check_roi_align(lambda *a: captured_roi_align(*a), part="golden", graded=True),
        capsys,
        "roi_align",
    )
    assert type(nms_module._nms_sorted_numba).__name__ == "CPUDispatcher"
    assert __import__("sys").getprofile() is None
    assert testing.check_nms(captured_nms, verbose=False)


def _load_fresh(path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("fresh_nms_copy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _in_thread(work, threading):
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", _swallow(work)))
    t.start()
    t.join()
    return out["r"]


def _swallow(work):
    try:
        return work()
    except Exception:  # noqa: BLE001 - the student hides the violation; the case must still fail
        return np.zeros(0, dtype=np.int64)


def test_rebinding_the_checker_does_not_survive_a_reload():
    import importlib

    import minimaskrcnn.testing as module

    original = module.check_nms
    module.check_nms = lambda *a, **k: True  # what a solution cell could do
    try:
        fresh = importlib.reload(module)  # what every graded cell does first
        assert fresh.check_nms(student_nms("ge"), verbose=False) is False
    finally:
        module.check_nms = original


def test_compiled_student_code_calling_a_package_kernel_is_caught(capsys):
    """Numba-compiled code runs no Python: its calls into the package's kernels are found by reference."""
    import importlib

    import numba

    nms_module = importlib.import_module("minimaskrcnn.ops.nms")
    kernel = nms_module._nms_sorted_numba

    @numba.njit
    def compiled_wrapper(x1, y1, x2, y2, thr):
        return kernel(x1, y1, x2, y2, thr, 0.0)

    @numba.njit
    def through_module(x1, y1, x2, y2, thr):
        return numba_module_alias._nms_sorted_numba(x1, y1, x2, y2, thr, 0.0)  # noqa: F821 (set below)

    def make(compiled):
        def fn(boxes, scores, thr):
            order = np.argsort(-scores, kind="stable")
            cols = [np.ascontiguousarray(boxes[order][:, k]) for k in range(4)]
            return order[np.asarray(compiled(*cols, thr), dtype=np.int64)]

        return fn

    globals()["numba_module_alias"] = nms_module
    boxes = np.array([[0.0, 0, 2, 2], [1, 0, 3, 2]])
    cols = [np.ascontiguousarray(boxes[:, k]) for k in range(4)]
    for compiled in (compiled_wrapper, through_module):
        compiled(*cols, 0.5)  # compiled before the graded call, as a notebook cell would
        _not_allowed(lambda c=compiled: testing.check_nms(make(c), part="golden", graded=True), capsys,
                     "_nms_sorted_numba (from compiled code)")

    @numba.njit
    def own_compiled(x1, thr):  # the student's own compiled code is fine
        return x1 * thr

    assert testing._GUARD.scan_compiled(make(own_compiled)) is None
