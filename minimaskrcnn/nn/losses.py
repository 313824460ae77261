"""Losses of Mask R-CNN, each returning ``(loss, dinput)``: the scalar loss and its gradient.

A loss is the first step of backpropagation, so instead of a forward/backward pair each function
hands back the gradient of the loss with respect to its first argument at once:

    loss, dlogits = softmax_cross_entropy(logits, labels)
    dx = head.backward(dlogits)

Reductions follow torch exactly. ``reduction="sum"`` adds the per-item losses; ``"mean"`` (the
default, as in torch) divides that sum by the number of items — for the cross-entropy, by the total
class weight of the items that are not ignored.

Empty batches. A mean over zero items is 0 / 0: torch returns NaN there (and a zero gradient when
every label is ignored), and so do we, silently, to stay a drop-in reference. A detection model can
legitimately see zero items (an image without positive anchors has no box-regression targets), so it
must not use ``"mean"`` for those losses; it uses ``reduction="sum"`` and divides by a normaliser that
is at least 1, exactly what torchvision's Mask R-CNN does:

    loss, dpred = smooth_l1(pred, target, beta=1 / 9, reduction="sum")
    n = max(1, num_sampled)
    loss, dpred = loss / n, dpred / n      # 0 loss and 0 gradient when there is nothing to regress

Values are computed in the input's dtype (float32 or float64); the gradient has the input's dtype
and shape, the loss is a Python float.
"""

from __future__ import annotations

import numpy as np

from minimaskrcnn._checks import check_shape, float_array

_REDUCTIONS = ("mean", "sum")


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def softmax_cross_entropy(logits, labels, weight=None, ignore_index: int = -100, reduction: str = "mean"):
    """Softmax cross-entropy over C classes (torch's ``F.cross_entropy`` with class indices).

    Parameters
    ----------
    logits : (N, C) float array, unnormalised class scores.
    labels : (N,) integer array, each in ``[0, C)`` or equal to ``ignore_index``.
    weight : optional (C,) float array, a rescaling weight per class.
    ignore_index : label value whose items contribute neither loss nor gradient (torch's default −100;
        the samplers in this package mark ignored items with −1 and pass ``ignore_index=-1``).
    reduction : "mean" — sum of ``w[y_i] · loss_i`` divided by ``sum_i w[y_i]`` over the items not
        ignored (torch's weighted mean; with no weight, the number of such items); "sum" — the sum.

    Returns ``(loss, dlogits)``, ``dlogits`` of shape (N, C).

    Per item, with p = softmax(x_i):  loss_i = −log p[y_i] = logsumexp(x_i) − x_i[y_i]  and
    d loss_i / d x_i = p − onehot(y_i).
    """
    logits = float_array(logits, "logits", ndim=2)
    _check_reduction(reduction)
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be an integer array, got dtype {labels.dtype}")
    n, c = logits.shape
    if c == 0:
        raise ValueError("logits must have at least one class column, got shape (N, 0)")
    check_shape(labels, "labels", (n,))
    kept = labels != ignore_index
    bad = kept & ((labels < 0) | (labels >= c))
    if np.any(bad):
        raise ValueError(
            f"labels must lie in [0, {c}) or equal ignore_index={ignore_index}; "
            f"got {labels[bad][:5].tolist()}"
        )
    dtype = logits.dtype
    if weight is None:
        w = np.ones(c, dtype=dtype)
    else:
        w = float_array(weight, "weight", ndim=1)
        check_shape(w, "weight", (c,))
        w = w.astype(dtype, copy=False)

    # 1. Log-softmax, stabilised by subtracting each row's maximum (exp never overflows).
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    sum_exp = exp.sum(axis=1, keepdims=True)
    log_p = shifted - np.log(sum_exp)
    p = exp / sum_exp

    # 2. Per-item weight w[y_i], 0 for ignored items (their safe stand-in label 0 is never used).
    safe = np.where(kept, labels, 0)
    rows = np.arange(n)
    item_w = np.where(kept, w[safe], 0).astype(dtype, copy=False)

    # 3. Reduce. A "mean" divides by the total weight, which is 0 when every item is ignored:
    #    0 / 0 = NaN as in torch (see the module docstring for the safe alternative).
    total = item_w.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = 1 / total if reduction == "mean" else dtype.type(1)
        loss = -(item_w * log_p[rows, safe]).sum() * scale
        # Ignored rows get exactly 0 (not 0 · inf); kept rows with zero total weight get NaN, as torch.
        coef = np.where(kept, item_w * scale, 0).astype(dtype, copy=False)

    # 4. Gradient: coef_i · (p − onehot(y_i)) per row.
    grad = p
    grad[rows, safe] -= 1
    grad *= coef[:, None]
    return float(loss), grad


def sigmoid_binary_cross_entropy_with_logits(logits, targets, reduction: str = "mean"):
    """Binary cross-entropy on sigmoid probabilities, from logits (torch's
    ``F.binary_cross_entropy_with_logits``).

    Parameters
    ----------
    logits : float array of any shape (the mask head's (K, M, M) logits of the GT class).
    targets : float array of the same shape, values in [0, 1] (soft mask targets are allowed).
    reduction : "mean" over all elements (NaN for zero elements, as torch) or "sum".

    Returns ``(loss, dlogits)``.

    Per element, with σ the sigmoid: loss = −t·log σ(x) − (1 − t)·log(1 − σ(x)). Written directly it
    overflows (σ(x) rounds to exactly 1 for x > 37 in float64 and log(0) = −inf), so we use the
    identity  loss = max(x, 0) − x·t + log(1 + exp(−|x|)), whose exp never sees a positive argument:
    stable for |x| up to 1e4 and beyond, without overflow warnings. The gradient is σ(x) − t, with σ
    evaluated from the same e = exp(−|x|): σ(x) = 1 / (1 + e) for x ≥ 0 and e / (1 + e) for x < 0.
    """
    logits = float_array(logits, "logits")
    targets = float_array(targets, "targets")
    check_shape(targets, "targets", logits.shape)
    _check_reduction(reduction)
    x = logits
    t = targets.astype(x.dtype, copy=False)

    e = np.exp(-np.abs(x))  # in (0, 1]; underflows quietly to 0 for |x| large
    per_elem = np.maximum(x, 0) - x * t + np.log1p(e)
    sig = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    grad = (sig - t).astype(x.dtype, copy=False)
    return _reduce(per_elem, grad, reduction)


def smooth_l1(input, target, beta: float = 1.0, reduction: str = "mean"):
    """Smooth L1 (Huber-like) loss, torch's ``F.smooth_l1_loss`` (used for box regression).

    Parameters
    ----------
    input, target : float arrays of the same shape (predicted and target box deltas).
    beta : ≥ 0, where the quadratic part ends. ``beta = 0`` is exactly the L1 loss |d| (torch's
        convention; the quadratic branch is never taken). torchvision's RPN and box head use 1/9.
    reduction : "mean" over all elements (NaN for zero elements, as torch) or "sum".

    Returns ``(loss, dinput)`` (the gradient with respect to ``target`` is ``−dinput``).

    With d = input − target, per element:
        loss = 0.5·d²/beta   if |d| < beta        d loss / d d = d / beta
               |d| − 0.5·beta otherwise           d loss / d d = sign(d)   (0 at d = 0, as torch)
    Both branches meet at |d| = beta with value beta/2 and slope ±1.
    """
    input = float_array(input, "input")
    target = float_array(target, "target")
    check_shape(target, "target", input.shape)
    _check_reduction(reduction)
    beta = float(beta)
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    d = input - target.astype(input.dtype, copy=False)
    a = np.abs(d)
    if beta == 0:
        per_elem = a
        grad = np.sign(d)
    else:
        quad = a < beta
        per_elem = np.where(quad, 0.5 * d * d / beta, a - 0.5 * beta)
        grad = np.where(quad, d / beta, np.sign(d))
    return _reduce(per_elem, grad.astype(input.dtype, copy=False), reduction)


def _reduce(per_elem: np.ndarray, grad: np.ndarray, reduction: str):
    """Sum or average an elementwise loss and scale its elementwise gradient to match."""
    total = per_elem.sum()
    if reduction == "sum":
        return float(total), grad
    n = per_elem.size
    if n == 0:
        return float("nan"), grad  # torch: the mean of nothing is NaN
    return float(total / n), (grad / grad.dtype.type(n)).astype(grad.dtype, copy=False)
