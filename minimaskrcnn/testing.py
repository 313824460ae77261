"""Checkers for your own implementation of the core ops of Mask R-CNN.

Write RoIAlign (or a convolution's backward, or NMS ...) yourself, then hand your function to the
matching checker::

    from minimaskrcnn.testing import check_roi_align
    assert check_roi_align(my_roi_align)

Each checker runs your function on small golden cases, chosen so that one typical bug breaks one
case, and on random cases; it prints one line per case (the case, the worst difference from the
expected result, and a hint when it fails) and returns True only if every case passes. A function
that raises, returns the wrong shape or returns None fails its case; the checker never raises.

The expected values come from this package's own implementations, which the test suite holds equal
to ``torchvision.ops`` / torch autograd, so the checkers need neither torch nor torchvision.

All inputs are float64 numpy arrays. Passing means: the same shape, and every element within
``1e-8 · max(1, max|expected|)`` of the expected value (NMS: exactly the same indices in the same
order). The functions you write take these arguments, called positionally:

==================  ================================================================================
checker             your function(s)
==================  ================================================================================
check_conv2d        ``forward(x, w, b, stride, padding, dilation) -> (out, cache)`` with x (N,C,H,W),
                    w (C_out,C,kH,kW), b (C_out,) or None, stride/padding/dilation (h, w) int pairs;
                    ``backward(dout, cache) -> (dx, dw, db)`` (db None when b was None).
check_roi_align     ``fn(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)`` with input
                    (N,C,H,W), boxes (K,5) rows (batch_index, x1, y1, x2, y2), output_size (PH, PW)
                    -> (K,C,PH,PW); optional ``backward(grad_output, boxes, input_shape, output_size,
                    spatial_scale, sampling_ratio, aligned) -> (N,C,H,W)``.
check_roi_pool      ``fn(input, boxes, output_size, spatial_scale) -> (K,C,PH,PW)``.
check_nms           ``fn(boxes (N,4), scores (N,), iou_threshold) -> kept indices`` by decreasing score.
check_box_coder     ``encode(reference_boxes (N,4), proposals (N,4), weights) -> (N,4)`` deltas and
                    ``decode(deltas (N,4), boxes (N,4), weights) -> (N,4)`` boxes; weights (wx,wy,ww,wh),
                    decode clamps dw/ww and dh/wh at log(1000/16) before exp.
check_mask_loss     ``fn(mask_logits (R,C,M,M), labels (R,), mask_targets (R,M,M)) -> (loss, dlogits)``,
                    see :func:`mask_loss_reference` for the two definitions ("sigmoid", "softmax").
==================  ================================================================================
"""

from __future__ import annotations

import math
import traceback

import numpy as np

__all__ = [
    "check_conv2d", "check_roi_align", "check_roi_pool", "check_nms", "check_box_coder",
    "check_mask_loss", "mask_loss_reference",
]

RTOL = 1e-8  # tolerance relative to max(1, max|expected|)
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


# --------------------------------------------------------------------------------------------------
# Running cases and reporting
# --------------------------------------------------------------------------------------------------

class _Report:
    """Collects one row per case and prints them as the checker goes."""

    def __init__(self, title: str, verbose: bool):
        self.title, self.verbose, self.rows = title, verbose, []
        if verbose:
            print(f"{title}")

    def add(self, case: str, ok: bool, detail: str, hint: str) -> None:
        self.rows.append((case, ok))
        if self.verbose:
            line = f"  {'PASS' if ok else 'FAIL'}  {case:<58s} {detail}"
            if not ok and hint:
                line += f"\n        hint: {hint}"
            print(line)

    def result(self) -> bool:
        passed = sum(ok for _, ok in self.rows)
        ok = passed == len(self.rows) and len(self.rows) > 0
        if self.verbose:
            print(f"  {passed}/{len(self.rows)} cases passed -> {'OK' if ok else 'FAILED'}")
        return ok


def _error_text(exc: BaseException) -> str:
    """``ValueError: message (at file:line)`` naming the innermost frame of the caller's code."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].name}, line {frames[-1].lineno})" if frames else ""
    msg = str(exc).splitlines()[0] if str(exc) else ""
    return f"raised {type(exc).__name__}: {msg[:120]}{where}"


def _diff(got, expected, name: str = "output"):
    """(ok, text): same shape and every element within RTOL·max(1, max|expected|)."""
    expected = np.asarray(expected, dtype=np.float64)
    if got is None:
        return False, f"{name} is None"
    try:
        got = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        return False, f"{name} is not a numeric array ({type(exc).__name__}: {exc})"
    if got.shape != expected.shape:
        return False, f"{name} has shape {got.shape}, expected {expected.shape}"
    if got.size == 0:
        return True, "worst |diff| 0 (empty)"
    err = np.abs(got - expected)
    err = np.where(np.isnan(got) != np.isnan(expected), np.inf, np.nan_to_num(err, nan=0.0))
    worst = float(err.max())
    tol = RTOL * max(1.0, float(np.abs(expected).max()))
    if worst <= tol:
        return True, f"worst |diff| {worst:.1e}"
    at = np.unravel_index(int(np.argmax(err)), err.shape)
    return False, (f"worst |diff| {worst:.1e} in {name}{list(at)}: got {got[at]:.6g}, "
                   f"expected {expected[at]:.6g}")


def _run(report: _Report, case: str, hint: str, call, check) -> None:
    """Run ``call()`` (the student's code) then ``check(result) -> (ok, detail)``; never raise."""
    try:
        result = call()
    except Exception as exc:  # a broken implementation must fail its case, not crash the checker
        report.add(case, False, _error_text(exc), hint)
        return
    try:
        ok, detail = check(result)
    except Exception as exc:  # e.g. the function returned something that cannot be unpacked
        ok, detail = False, f"unexpected return value ({type(exc).__name__}: {exc})"
    report.add(case, ok, detail, hint)


def _diffs(pairs):
    """Combine several (got, expected, name) comparisons into one (ok, detail)."""
    details = []
    for got, expected, name in pairs:
        ok, detail = _diff(got, expected, name)
        if not ok:
            return False, detail
        details.append(detail.replace("worst |diff|", f"{name}"))
    return True, "worst |diff| " + ", ".join(details)


# --------------------------------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------------------------------

def _conv_cases(rng):
    """(name, x shape, w shape, with bias, stride, padding, dilation, hint)."""
    return [
        ("1x1x4x4 input, 2x2 kernel, no padding", (1, 1, 4, 4), (1, 1, 2, 2), True, (1, 1), (0, 0), (1, 1),
         "out[y, x] = b + sum_ij w[i, j]·x[y + i, x + j] (cross-correlation: the kernel is not flipped)"),
        ("non-square kernel 2x3 on a 4x5 input", (1, 1, 4, 5), (1, 1, 2, 3), True, (1, 1), (0, 0), (1, 1),
         "rows go with kH and H, columns with kW and W; H' = H − kH + 1, W' = W − kW + 1"),
        ("several channels and images, 3x3 kernel", (2, 3, 5, 5), (4, 3, 3, 3), True, (1, 1), (0, 0), (1, 1),
         "sum over every input channel c; one output channel per filter; loop over the batch"),
        ("padding 1 (zeros around the input)", (1, 2, 4, 4), (2, 2, 3, 3), True, (1, 1), (1, 1), (1, 1),
         "pad with zeros on all four sides; H' = 1 + (H + 2p − kH) // s"),
        ("stride 2", (1, 2, 7, 7), (2, 2, 3, 3), True, (2, 2), (0, 0), (1, 1),
         "output (y, x) reads input rows y·s + i; H' = 1 + (H − kH) // s (floor)"),
        ("stride (2, 1), padding (1, 2)", (2, 2, 6, 5), (3, 2, 3, 3), True, (2, 1), (1, 2), (1, 1),
         "stride and padding are (h, w) pairs: use the h value for rows, the w value for columns"),
        ("dilation 2", (1, 2, 7, 7), (2, 2, 3, 3), True, (1, 1), (0, 0), (2, 2),
         "dilation d reads x[y·s + i·d]; H' = 1 + (H + 2p − d·(kH − 1) − 1) // s"),
        ("no bias (b = None)", (1, 2, 5, 5), (3, 2, 3, 3), False, (1, 1), (1, 1), (1, 1),
         "b may be None: add nothing, and return db = None"),
        ("random: stride 2, padding 1, dilation (1, 2)", (2, 3, 9, 8), (4, 3, 3, 2), True, (2, 2), (1, 1),
         (1, 2), "compare with the seven-loop definition on this case"),
    ]


def check_conv2d(forward, backward=None, *, verbose: bool = True) -> bool:
    """Check a 2-D convolution (cross-correlation, torch's ``conv2d`` with groups = 1).

    forward(x, w, b, stride, padding, dilation) -> (out, cache): x (N, C_in, H, W), w (C_out, C_in,
    kH, kW), b (C_out,) or None, stride/padding/dilation ``(h, w)`` pairs; out (N, C_out, H', W') with
    H' = 1 + (H + 2·pad_h − dil_h·(kH − 1) − 1) // stride_h.
    backward(dout, cache) -> (dx, dw, db), the gradients of sum(out · dout); db is None when b was
    None. Leave ``backward`` out to check the forward only.
    """
    from minimaskrcnn.nn.functional import conv2d_backward, conv2d_forward

    report = _Report("check_conv2d" + (" (forward and backward)" if backward else " (forward only)"),
                     verbose)
    rng = np.random.default_rng(0)
    for name, xs, ws, has_b, s, p, d, hint in _conv_cases(rng):
        x = rng.standard_normal(xs)
        w = rng.standard_normal(ws)
        b = rng.standard_normal(ws[0]) if has_b else None
        out, cache = conv2d_forward(x, w, b, s, p, d)
        _run(report, "forward:  " + name, hint,
             lambda x=x, w=w, b=b, s=s, p=p, d=d: forward(x.copy(), w.copy(), None if b is None else b.copy(),
                                                          s, p, d),
             lambda r, out=out: _diff(r[0], out, "out") if isinstance(r, tuple) and len(r) == 2
             else (False, "forward must return a tuple (out, cache)"))
        if backward is None:
            continue
        dout = rng.standard_normal(out.shape)
        dx, dw, db = conv2d_backward(dout, cache)

        def call(x=x, w=w, b=b, s=s, p=p, d=d, dout=dout):
            _, student_cache = forward(x.copy(), w.copy(), None if b is None else b.copy(), s, p, d)
            return backward(dout.copy(), student_cache)

        def check(r, dx=dx, dw=dw, db=db):
            if not isinstance(r, (tuple, list)) or len(r) != 3:
                return False, "backward must return a tuple (dx, dw, db)"
            if db is None and r[2] is not None:
                return False, "db must be None when the forward had no bias"
            pairs = [(r[0], dx, "dx"), (r[1], dw, "dw")] + ([(r[2], db, "db")] if db is not None else [])
            return _diffs(pairs)

        bhint = ("dx[n,c,y·s+i·d−p, x·s+j·d−p] += dout[n,o,y,x]·w[o,c,i,j] (the same w[i,j], not "
                 "flipped or transposed); dw[o,c,i,j] += dout·x at that pixel; db[o] = sum of dout "
                 "over n, y, x")
        _run(report, "backward: " + name, bhint, call, check)
    return report.result()


# --------------------------------------------------------------------------------------------------
# RoIAlign and RoIPool
# --------------------------------------------------------------------------------------------------

def _ramp(n, c, h, w):
    """A feature map whose value at (row i, column j) of channel c is 10·c + i + j/10: bilinear
    interpolation of it is exact, so a wrong sample position shows up as a wrong value."""
    i = np.arange(h, dtype=np.float64)[:, None]
    j = np.arange(w, dtype=np.float64)[None, :]
    base = i + j / 10.0
    return np.stack([np.stack([base + 10.0 * ch + 100.0 * b for ch in range(c)]) for b in range(n)])


def _roi_align_cases(rng):
    """(name, input, boxes (K,5), output_size, spatial_scale, sampling_ratio, aligned, hint)."""
    ramp = _ramp(1, 2, 6, 7)
    cases = [
        ("ramp 6x7, box (1,1,4,4), 2x2 bins, 2 samples, aligned=False", ramp,
         [[0, 1, 1, 4, 4]], (2, 2), 1.0, 2, False,
         "sample y = y1·s + ph·bin_h + (iy + 0.5)·bin_h/grid_h, bin value = mean of its samples"),
        ("same box, aligned=True (half-pixel shift)", ramp,
         [[0, 1, 1, 4, 4]], (2, 2), 1.0, 2, True,
         "aligned=True SUBTRACTS 0.5 after scaling: start = x1·s − 0.5 (not + 0.5, not before scaling)"),
        ("output 3x2 (PH != PW), fractional box", ramp,
         [[0, 0.7, 1.3, 5.2, 4.9]], (3, 2), 1.0, 2, False,
         "output_size is (PH, PW): bins along y use PH and roi height, along x PW and roi width"),
        ("adaptive sampling (sampling_ratio=-1)", ramp,
         [[0, 0.5, 0.2, 6.1, 5.3]], (2, 2), 1.0, -1, False,
         "sampling_ratio <= 0: grid_h = ceil(roi_h / PH), grid_w = ceil(roi_w / PW) (ceil, per axis)"),
        ("spatial_scale 0.5 (stride-2 map)", ramp,
         [[0, 2.0, 3.0, 9.0, 10.0]], (2, 2), 0.5, 2, False,
         "multiply the box coordinates by spatial_scale first"),
        ("tiny box, aligned=False (size forced to >= 1)", ramp,
         [[0, 2.2, 2.3, 2.4, 2.5]], (2, 2), 1.0, 2, False,
         "aligned=False: roi_w = max(x2·s − x1·s, 1) (same for h); aligned=True keeps the raw size"),
        ("box over the bottom-right border", ramp,
         [[0, 4.0, 3.0, 7.8, 6.9]], (2, 2), 1.0, 2, False,
         "a sample at y >= H−1 reads row H−1 (y_low = y_high = H−1); only y > H is dropped"),
        ("box partly outside the map (samples dropped)", ramp,
         [[0, -3.0, -2.5, 2.0, 1.5]], (2, 2), 1.0, 2, True,
         "a sample with y < −1 or x < −1 adds 0 but still counts in the average; −1 <= y < 0 reads row 0"),
        ("two images, batch index from column 0", np.concatenate([ramp, -ramp]),
         [[1, 1, 1, 4, 4], [0, 2, 0, 5, 3]], (2, 2), 1.0, 2, False,
         "boxes[k, 0] is the batch index of RoI k; the box is boxes[k, 1:5]"),
    ]
    for i in range(4):
        n, c, h, w = 2, 3, int(rng.integers(4, 12)), int(rng.integers(4, 12))
        x = rng.standard_normal((n, c, h, w))
        scale = [1.0, 0.5, 0.25, 0.125][i]
        k = 5
        xy = rng.uniform(-2, max(h, w) + 2, size=(k, 2)) / scale
        wh = rng.uniform(0.2, max(h, w), size=(k, 2)) / scale
        boxes = np.column_stack([rng.integers(0, n, k), xy, xy + wh])
        sr = [2, -1, 1, 3][i]
        aligned = bool(i % 2)
        out = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        cases.append((f"random {i}: {h}x{w} map, scale {scale}, sampling {sr}, aligned={aligned}", x,
                      boxes, out, scale, sr, aligned, "compare with the numbered steps on a single bin"))
    return [(nm, np.asarray(x, np.float64), np.asarray(b, np.float64), o, s, sr, al, hint)
            for nm, x, b, o, s, sr, al, hint in cases]


def check_roi_align(fn, backward=None, *, verbose: bool = True) -> bool:
    """Check a RoIAlign: ``fn(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)``.

    input (N, C, H, W); boxes (K, 5) rows (batch_index, x1, y1, x2, y2) in image pixels; output_size
    (PH, PW); returns (K, C, PH, PW), equal to ``torchvision.ops.roi_align``. With ``backward``
    (``backward(grad_output, boxes, input_shape, output_size, spatial_scale, sampling_ratio, aligned)
    -> (N, C, H, W)``) the gradient is checked on the same cases.
    """
    from minimaskrcnn.ops.roi_align import roi_align, roi_align_backward

    report = _Report("check_roi_align" + (" (forward and backward)" if backward else ""), verbose)
    rng = np.random.default_rng(1)
    for name, x, boxes, out_size, scale, sr, aligned, hint in _roi_align_cases(rng):
        expected = roi_align(x, boxes, out_size, scale, sr, aligned)
        _run(report, "forward:  " + name, hint,
             lambda x=x, b=boxes, o=out_size, s=scale, r=sr, a=aligned: fn(x.copy(), b.copy(), o, s, r, a),
             lambda got, e=expected: _diff(got, e))
        if backward is None:
            continue
        g = rng.standard_normal(expected.shape)
        dx = roi_align_backward(g, boxes, x.shape, out_size, scale, sr, aligned)
        _run(report, "backward: " + name,
             "scatter each bin's gradient / count into the 4 pixels of every sample, with the same "
             "bilinear weights as the forward (dropped samples add nothing; accumulate with +=)",
             lambda g=g, b=boxes, x=x, o=out_size, s=scale, r=sr, a=aligned:
                 backward(g.copy(), b.copy(), x.shape, o, s, r, a),
             lambda got, e=dx: _diff(got, e, "dx"))
    return report.result()


def _roi_pool_cases(rng):
    """(name, input, boxes (K,5), output_size, spatial_scale, hint)."""
    ramp = _ramp(1, 2, 8, 8)
    neg = -1.0 - ramp  # all values negative
    cases = [
        ("ramp 8x8, integer box (1,1,4,4), 2x2 bins", ramp, [[0, 1, 1, 4, 4]], (2, 2), 1.0,
         "the rounded box covers x1r..x2r INCLUSIVE: roi_w = x2r − x1r + 1"),
        ("box coordinates at .5 after scaling (2.5 -> 3)", ramp, [[0, 2.5, 0.5, 5.5, 4.5]], (2, 2), 1.0,
         "round halves AWAY from zero like C's round (2.5 -> 3, 0.5 -> 1); np.round rounds to even "
         "(2.5 -> 2): use floor(v + 0.5) for v >= 0"),
        ("negative halves (-0.5 -> -1, -1.5 -> -2)", ramp, [[0, -1.5, -0.5, 3.5, 4.5]], (2, 2), 1.0,
         "C's round(-0.5) = -1 and round(-1.5) = -2 (away from zero); then clip bins to [0, W]"),
        ("3x3 bins on a 7-pixel box: overlapping bins", ramp, [[0, 0, 0, 6, 6]], (3, 3), 1.0,
         "bin edges: hstart = floor(ph·bin_h) + y1r, hend = ceil((ph + 1)·bin_h) + y1r (bins may overlap)"),
        ("output 2x3 (PH != PW), spatial_scale 0.5", ramp, [[0, 2, 4, 13, 11]], (2, 3), 0.5,
         "scale the box by spatial_scale, then round; PH bins along y, PW along x"),
        ("all values negative", neg, [[0, 1, 2, 5, 6]], (2, 2), 1.0,
         "start the max at -inf (not 0): every value in a bin may be negative"),
        ("box outside the map: empty bins give 0", ramp, [[0, 9.6, 9.6, 12, 12]], (2, 2), 1.0,
         "clip bin edges to [0, H] and [0, W]; a bin with hend <= hstart or wend <= wstart outputs 0"),
        ("reversed box becomes 1x1", ramp, [[0, 5, 5, 3, 3]], (2, 2), 1.0,
         "roi_w = max(x2r − x1r + 1, 1): a reversed box is one pixel wide"),
        ("two images, batch index from column 0", np.concatenate([ramp, neg]),
         [[1, 1, 1, 4, 6], [0, 0, 2, 3, 5]], (2, 2), 1.0,
         "boxes[k, 0] is the batch index of RoI k"),
    ]
    for i in range(4):
        n, c, h, w = 2, 3, int(rng.integers(4, 12)), int(rng.integers(4, 12))
        x = rng.standard_normal((n, c, h, w))
        scale = [1.0, 0.5, 0.25, 1.0 / 16][i]
        k = 6
        # Coordinates on a grid of quarter feature pixels, so that halves (rounding ties) occur.
        xy = np.round(rng.uniform(-2, max(h, w), size=(k, 2)) * 4) / 4 / scale
        wh = np.round(rng.uniform(0, max(h, w), size=(k, 2)) * 4) / 4 / scale
        boxes = np.column_stack([rng.integers(0, n, k), xy, xy + wh])
        out = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        cases.append((f"random {i}: {h}x{w} map, scale {scale}", x, boxes, out, scale,
                      "compare with the numbered steps on a single bin"))
    return [(nm, np.asarray(x, np.float64), np.asarray(b, np.float64), o, s, hint)
            for nm, x, b, o, s, hint in cases]


def check_roi_pool(fn, *, verbose: bool = True) -> bool:
    """Check a RoIPool: ``fn(input, boxes, output_size, spatial_scale) -> (K, C, PH, PW)``.

    input (N, C, H, W); boxes (K, 5) rows (batch_index, x1, y1, x2, y2) in image pixels; output_size
    (PH, PW). Must equal ``torchvision.ops.roi_pool`` (C rounding, inclusive size, floor/ceil bin
    edges clipped to the map, empty bins 0).
    """
    from minimaskrcnn.ops.roi_pool import roi_pool

    report = _Report("check_roi_pool", verbose)
    rng = np.random.default_rng(2)
    for name, x, boxes, out_size, scale, hint in _roi_pool_cases(rng):
        expected = roi_pool(x, boxes, out_size, scale)
        _run(report, name, hint, lambda x=x, b=boxes, o=out_size, s=scale: fn(x.copy(), b.copy(), o, s),
             lambda got, e=expected: _diff(got, e))
    return report.result()


# --------------------------------------------------------------------------------------------------
# NMS
# --------------------------------------------------------------------------------------------------

def _nms_cases(rng):
    """(name, boxes, scores, iou_threshold, hint)."""
    cases = [
        # IoU(a, b) = 2 / (4 + 4 − 2) = 1/3; c is far away.
        ("3 boxes, IoU(a, b) = 1/3 > 0.3: b suppressed", [[0, 0, 2, 2], [1, 0, 3, 2], [4, 4, 5, 5]],
         [0.9, 0.8, 0.7], 0.3, "keep a box, drop every later box whose IoU with it is > threshold"),
        # IoU = 2 / 4 = 0.5 exactly (b lies inside a, half its area).
        ("IoU exactly equal to the threshold 0.5 survives", [[0, 0, 2, 2], [0, 0, 2, 1]],
         [0.9, 0.8], 0.5, "suppress only when IoU > threshold (strictly), not >="),
        # Without +1: inter 0.5, union 1.5, IoU 1/3 -> kept at 0.5. With +1: 3 / 5 = 0.6 -> dropped.
        ("small boxes: IoU without '+1'", [[0, 0, 1, 1], [0.5, 0, 1.5, 1]], [0.9, 0.8], 0.5,
         "area = (x2 − x1)·(y2 − y1) and inter = max(0, min(x2) − max(x1))·(...), no +1 anywhere"),
        ("scores not sorted: output by decreasing score", [[0, 0, 1, 1], [5, 5, 6, 6], [10, 10, 11, 11]],
         [0.2, 0.9, 0.5], 0.5, "return the kept indices in decreasing score order (here [1, 2, 0])"),
        ("a suppressed box suppresses nothing", [[0, 0, 10, 10], [5, 0, 15, 10], [10, 0, 20, 10]],
         [0.9, 0.8, 0.7], 0.3, "only KEPT boxes suppress: c overlaps b (dropped by a) but not a"),
        ("boxes that only touch (IoU 0)", [[0, 0, 1, 1], [1, 0, 2, 1], [0, 1, 1, 2]],
         [0.9, 0.8, 0.7], 0.0, "boxes sharing an edge have intersection 0 (clamp each side at 0)"),
        ("equal scores: lower index first", [[0, 0, 4, 4], [0, 0, 4, 4.5], [20, 20, 24, 24]],
         [0.5, 0.5, 0.5], 0.5, "sort stably by decreasing score: np.argsort(-scores, kind='stable')"),
        ("empty input", np.zeros((0, 4)), np.zeros(0), 0.5, "no boxes in, empty int64 array out"),
    ]
    for i, thr in enumerate((0.3, 0.5, 0.7)):
        n = 60
        xy = rng.uniform(0, 40, size=(n, 2))
        wh = rng.uniform(2, 20, size=(n, 2))
        cases.append((f"random {i}: {n} boxes, threshold {thr}", np.column_stack([xy, xy + wh]),
                      rng.uniform(size=n), thr, "compare your IoU matrix with a hand computation"))
    return [(nm, np.asarray(b, np.float64).reshape(-1, 4), np.asarray(s, np.float64), t, hint)
            for nm, b, s, t, hint in cases]


def _same_indices(got, expected):
    try:
        got = np.asarray(got)
    except Exception as exc:
        return False, f"not an array ({exc})"
    if got.ndim != 1:
        return False, f"kept indices must be 1-D, got shape {got.shape}"
    if got.size and not np.issubdtype(got.dtype, np.integer):
        return False, f"kept indices must be integers, got dtype {got.dtype}"
    if got.tolist() != expected.tolist():
        return False, f"kept {got.tolist()[:12]}, expected {expected.tolist()[:12]}"
    return True, f"kept {len(expected)} of the boxes, same order"


def check_nms(fn, *, verbose: bool = True) -> bool:
    """Check greedy NMS: ``fn(boxes (N, 4), scores (N,), iou_threshold) -> kept indices``.

    Semantics of ``torchvision.ops.nms``: visit boxes by decreasing score (equal scores: lower index
    first); keep a box unless a kept box has IoU > iou_threshold with it; IoU without "+1". The
    indices must come out in decreasing score order.
    """
    from minimaskrcnn.ops.nms import nms

    report = _Report("check_nms", verbose)
    rng = np.random.default_rng(3)
    for name, boxes, scores, thr, hint in _nms_cases(rng):
        expected = nms(boxes, scores, thr)
        _run(report, name, hint, lambda b=boxes, s=scores, t=thr: fn(b.copy(), s.copy(), t),
             lambda got, e=expected: _same_indices(got, e))
    return report.result()


# --------------------------------------------------------------------------------------------------
# Box coding
# --------------------------------------------------------------------------------------------------

def check_box_coder(encode, decode, *, verbose: bool = True) -> bool:
    """Check box encoding and decoding (torchvision's ``BoxCoder`` arithmetic).

    encode(reference_boxes (N, 4), proposals (N, 4), weights) -> (N, 4) deltas (dx, dy, dw, dh) that
    move each proposal onto its reference box; decode(deltas (N, 4), boxes (N, 4), weights) -> (N, 4)
    boxes (x1, y1, x2, y2). weights = (wx, wy, ww, wh). w = x2 − x1 (no +1), cx = x1 + 0.5·w; decode
    clamps dw/ww and dh/wh at log(1000/16) before exp.
    """
    from minimaskrcnn.ops.box_coder import BoxCoder

    report = _Report("check_box_coder", verbose)
    rng = np.random.default_rng(4)
    # Worked example: reference (0,0,10,10): centre (5,5), size 10x10; target (2,2,22,12): centre (12,7),
    # size 20x10 -> deltas (0.7, 0.2, log 2, 0) with weights 1.
    worked_ref = np.array([[2.0, 2.0, 22.0, 12.0]])
    worked_prop = np.array([[0.0, 0.0, 10.0, 10.0]])
    xy = rng.uniform(0, 100, size=(20, 2))
    rand_ref = np.column_stack([xy, xy + rng.uniform(1, 50, size=(20, 2))])
    xy = rng.uniform(0, 100, size=(20, 2))
    rand_prop = np.column_stack([xy, xy + rng.uniform(1, 50, size=(20, 2))])
    enc_cases = [
        ("encode: worked example, weights (1,1,1,1)", worked_ref, worked_prop, (1.0, 1.0, 1.0, 1.0),
         "dx = wx·(gx − ax)/aw with centres cx = x1 + 0.5·w and w = x2 − x1 (no +1); dw = ww·log(gw/aw)"),
        ("encode: box-head weights (10,10,5,5)", worked_ref, worked_prop, (10.0, 10.0, 5.0, 5.0),
         "MULTIPLY the deltas by the weights when encoding (divide when decoding)"),
        ("encode: order of arguments (reference_boxes, proposals)", worked_prop, worked_ref,
         (1.0, 1.0, 1.0, 1.0), "encode(reference_boxes, proposals): deltas move the PROPOSAL onto the "
         "reference (ground-truth) box, in units of the proposal's size"),
        ("encode: 20 random boxes, weights (10,10,5,5)", rand_ref, rand_prop, (10.0, 10.0, 5.0, 5.0),
         "check one row by hand"),
    ]
    for name, ref, prop, weights, hint in enc_cases:
        expected = BoxCoder(weights).encode(ref, prop)
        _run(report, name, hint, lambda r=ref, p=prop, w=weights: encode(r.copy(), p.copy(), w),
             lambda got, e=expected: _diff(got, e, "deltas"))
    big = np.array([[0.5, -0.3, 8.0, 6.0], [0.0, 0.0, -9.0, 10.0]])  # dw, dh beyond log(1000/16) = 4.135
    dec_cases = [
        ("decode: worked example back to (2,2,22,12)", np.array([[0.7, 0.2, math.log(2.0), 0.0]]),
         worked_prop, (1.0, 1.0, 1.0, 1.0), "centre = dx·aw + ax, size = exp(dw)·aw, box = centre ∓ size/2"),
        ("decode: weights (10,10,5,5)", np.array([[7.0, 2.0, 5 * math.log(2.0), 0.0]]), worked_prop,
         (10.0, 10.0, 5.0, 5.0), "DIVIDE the deltas by the weights before decoding"),
        ("decode: huge dw, dh are clamped at log(1000/16)", big, np.array([[0, 0, 10, 10], [5, 5, 9, 7.0]]),
         (1.0, 1.0, 1.0, 1.0), "dw = min(dw / ww, log(1000/16)) before exp (only from above)"),
        ("decode: 20 random deltas, weights (10,10,5,5)", rng.normal(0, 2, size=(20, 4)), rand_prop,
         (10.0, 10.0, 5.0, 5.0), "check one row by hand"),
    ]
    for name, deltas, boxes, weights, hint in dec_cases:
        expected = BoxCoder(weights).decode(deltas, boxes)
        _run(report, name, hint, lambda d=deltas, b=boxes, w=weights: decode(d.copy(), b.copy(), w),
             lambda got, e=expected: _diff(got, e, "boxes"))
    # Round trip: decode(encode(g, p), p) == g.
    _run(report, "round trip: decode(encode(g, p), p) == g", "decode must invert encode exactly",
         lambda: decode(encode(rand_ref.copy(), rand_prop.copy(), (10.0, 10.0, 5.0, 5.0)), rand_prop.copy(),
                        (10.0, 10.0, 5.0, 5.0)),
         lambda got: _diff(got, rand_ref, "boxes"))
    return report.result()


# --------------------------------------------------------------------------------------------------
# Mask loss
# --------------------------------------------------------------------------------------------------

def _log_softmax(z, axis):
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def mask_loss_reference(mask_logits, labels, mask_targets, kind: str):
    """The mask loss of Mask R-CNN, and its gradient: returns ``(loss, dlogits)``.

    mask_logits (R, C, M, M): one M×M logit map per class for each of R positive RoIs (channel 0 is
    the background); labels (R,) the GT class k_r in 1..C−1 of each RoI; mask_targets (R, M, M) the
    GT mask resampled into the RoI, values t in [0, 1]. Both losses are means over the R·M·M pixels.

    - ``"sigmoid"`` (the paper's): binary cross-entropy on the GT class channel only,
      loss = mean over r, i, j of −[t·log σ(z_k) + (1 − t)·log(1 − σ(z_k))], z_k = mask_logits[r, k_r];
      d loss / d z_k = (σ(z_k) − t) / (R·M·M); every other channel gets gradient 0.
    - ``"softmax"`` (the paper's ablation, Table 2b): per pixel a softmax p over the C channels; the
      target puts t on channel k_r and 1 − t on the background channel 0,
      loss = mean over r, i, j of −[t·log p_k + (1 − t)·log p_0];
      d loss / d z = (p − q) / (R·M·M), with q = t on channel k_r, 1 − t on channel 0, 0 elsewhere.
    """
    z = np.asarray(mask_logits, dtype=np.float64)
    t = np.asarray(mask_targets, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    r = np.arange(z.shape[0])
    n = t.size
    d = np.zeros_like(z)
    if kind == "sigmoid":
        zk = z[r, labels]
        # log σ(z) = −log(1 + e^−z), log(1 − σ(z)) = −z − log(1 + e^−z), written stably.
        loss = (np.maximum(zk, 0) - zk * t + np.log1p(np.exp(-np.abs(zk)))).sum() / n
        d[r, labels] = (1.0 / (1.0 + np.exp(-zk)) - t) / n
    elif kind == "softmax":
        logp = _log_softmax(z, axis=1)
        loss = -(t * logp[r, labels] + (1 - t) * logp[:, 0]).sum() / n
        d = np.exp(logp)
        d[r, labels] -= t
        d[:, 0] -= 1 - t
        d /= n
    else:
        raise ValueError(f"kind must be 'sigmoid' or 'softmax', got {kind!r}")
    return float(loss), d


def check_mask_loss(fn, kind: str, *, verbose: bool = True) -> bool:
    """Check a mask loss: ``fn(mask_logits (R, C, M, M), labels (R,), mask_targets (R, M, M))
    -> (loss, dlogits)``; ``kind`` "sigmoid" or "softmax", defined in :func:`mask_loss_reference`."""
    if kind not in ("sigmoid", "softmax"):
        raise ValueError(f"kind must be 'sigmoid' or 'softmax', got {kind!r}")
    report = _Report(f"check_mask_loss ({kind})", verbose)
    rng = np.random.default_rng(5)
    hints = {
        "sigmoid": "per-pixel BCE on channel labels[r] only (other channels: no loss, zero gradient); "
                   "mean over R·M·M pixels; d/dz = (σ(z) − t) / (R·M·M)",
        "softmax": "softmax across the C channels at each pixel; target t on channel labels[r] and 1 − t "
                   "on channel 0; mean over R·M·M pixels; d/dz = (p − q) / (R·M·M)",
    }
    # One RoI, 3 channels (background + 2 classes), 2x2 mask, hard target.
    golden_z = np.array([[[[0.0, 1.0], [-1.0, 2.0]], [[0.5, -0.5], [1.5, 0.0]], [[2.0, 0.0], [0.0, -2.0]]]])
    cases = [
        ("1 RoI, 3 channels, 2x2, hard mask, class 1", golden_z, np.array([1]),
         np.array([[[1.0, 0.0], [1.0, 1.0]]])),
        ("same logits, class 2 (channel = label)", golden_z, np.array([2]),
         np.array([[[1.0, 0.0], [1.0, 1.0]]])),
    ]
    for i, (r, c, m) in enumerate(((4, 3, 5), (6, 5, 7), (3, 8, 4))):
        z = rng.normal(0, 3, size=(r, c, m, m))
        labels = rng.integers(1, c, size=r)
        t = rng.uniform(size=(r, m, m)) if i % 2 else (rng.uniform(size=(r, m, m)) > 0.5).astype(np.float64)
        kind_t = "soft" if i % 2 else "hard"
        cases.append((f"random {i}: R={r}, C={c}, M={m}, {kind_t} targets", z, labels, t))
    cases.append(("large logits (|z| ~ 50): stable log", golden_z * 25, np.array([2]),
                  np.array([[[1.0, 0.0], [0.5, 1.0]]])))
    for name, z, labels, t in cases:
        loss, d = mask_loss_reference(z, labels, t, kind)

        def check(got, loss=loss, d=d):
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                return False, "must return a tuple (loss, dlogits)"
            return _diffs([(np.asarray(got[0], dtype=np.float64).reshape(()), loss, "loss"),
                           (got[1], d, "dlogits")])

        _run(report, name, hints[kind], lambda z=z, lb=labels, t=t: fn(z.copy(), lb.copy(), t.copy()), check)
    return report.result()
