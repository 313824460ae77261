"""First-frame mask propagation: given the objects' masks in frame 0, segment every later frame.

Every method has the same signature,

    masks = method(frames, first_mask, **options)

    frames:     (T, H, W, 3) uint8 RGB video, T ≥ 1.
    first_mask: (H, W) mask of frame 0 — bool (one object) or an integer ID map (0 = background,
                1..K the objects, every one of them present).
    masks:      (T, H, W) uint8 ID map, masks[0] equal to first_mask.

The methods that need the trained detector live in their own modules and are listed here too
(``DETECTOR_METHODS``; they take ``model=`` or ``checkpoint=``):

    redetect  tracking by re-detection (``video.redetect``): Mask R-CNN detections in every frame,
              associated to the objects by mask IoU with the flow prediction and by colour; identities
              kept through occlusion and re-entry.
    osvos     OSVOS-style (``video.osvos``): the detector's RoI heads fine-tuned on augmented copies of
              the first frame, then every frame segmented on its own.

The others need no learned model:

    copy   the first mask repeated — the floor any method must beat.
    flow   optical-flow warping of the previous frame's mask (backward warping with the flow from frame
           t to frame t−1, forward–backward consistency, re-thresholding by argmax), optionally refined
           by per-object colour models where the flow is not trusted.
    embed  nearest-neighbour matching of simple per-pixel features (colour, local colour statistics and
           position) to labelled pixels of the first frame and of the previous prediction.

``METHODS`` maps each name to its function; ``propagate(name, frames, first_mask, **options)`` calls it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from minimaskrcnn.video.flow import forward_backward_consistency, lucas_kanade, to_float_image, warp

__all__ = ["METHODS", "propagate", "propagate_copy", "propagate_flow", "propagate_embed", "check_inputs",
           "ColourModel", "FlowTracker", "dilate", "mask_iou",
           "propagate_redetect", "propagate_osvos", "DETECTOR_METHODS"]


def check_inputs(frames, first_mask) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate (frames, first_mask); return (frames, first_mask as uint8 ID map, K).

    Raises TypeError / ValueError naming the argument: frames must be a (T, H, W, 3) uint8 array with
    T ≥ 1; first_mask an (H, W) bool or integer array of the frames' size with IDs 0..255, at least one
    object, and every ID 1..K present (an object with an empty first mask cannot be propagated).
    """
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"frames must be a numpy.ndarray, got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must have shape (T, H, W, 3) with T >= 1, got {frames.shape}")
    if frames.dtype != np.uint8:
        raise TypeError(f"frames must be uint8 RGB, got dtype {frames.dtype}")
    if not isinstance(first_mask, np.ndarray):
        raise TypeError(f"first_mask must be a numpy.ndarray, got {type(first_mask).__name__}")
    if first_mask.shape != frames.shape[1:3]:
        raise ValueError(f"first_mask must have the frames' size {frames.shape[1:3]} (H, W), got shape "
                         f"{first_mask.shape}")
    if first_mask.dtype == bool:
        ids = first_mask.astype(np.uint8)
    elif np.issubdtype(first_mask.dtype, np.integer):
        if first_mask.min() < 0 or first_mask.max() > 255:
            raise ValueError("first_mask IDs must lie in 0..255 (0 = background)")
        ids = first_mask.astype(np.uint8)
    else:
        raise TypeError(f"first_mask must be bool or an integer ID map, got dtype {first_mask.dtype}")
    k = int(ids.max())
    if k == 0:
        raise ValueError("first_mask is empty: there is no object to propagate")
    present = np.bincount(ids.ravel(), minlength=k + 1)[1:] > 0
    if not present.all():
        missing = [int(i) + 1 for i in np.flatnonzero(~present)]
        raise ValueError(f"first_mask has no pixel for object(s) {missing}; IDs must be 1..K, all present")
    return frames, ids, k


def _one_hot(ids: np.ndarray, k: int) -> np.ndarray:
    """(H, W) ID map → (H, W, K+1) float32 one-hot, channel 0 = background."""
    return (ids[..., None] == np.arange(k + 1)[None, None, :]).astype(np.float32)


# --------------------------------------------------------------------------------------------- copy
def propagate_copy(frames, first_mask) -> np.ndarray:
    """The first mask in every frame: right only while nothing moves."""
    frames, ids, _ = check_inputs(frames, first_mask)
    return np.repeat(ids[None], frames.shape[0], axis=0)


# --------------------------------------------------------------------------------------------- colour
class ColourModel:
    """Per-label colour histograms → posterior p(label | colour).

    Colours are quantised to ``bins``³ cells; a small floor keeps unseen colours uninformative rather
    than impossible. ``update`` blends in new counts with weight ``momentum`` so
    the model can follow a slowly changing appearance.
    """

    def __init__(self, image: np.ndarray, ids: np.ndarray, num_labels: int, bins: int = 8):
        self.bins = bins
        self.num_labels = num_labels
        self.hist = self._histograms(image, ids)

    def _cells(self, image):
        q = (image.astype(np.int64) * self.bins) // 256
        return (q[..., 0] * self.bins + q[..., 1]) * self.bins + q[..., 2]

    def _histograms(self, image, ids):
        """(L, bins³) colour histograms, each normalised to sum 1 (all zero for an absent label)."""
        cells = self._cells(image).ravel()
        flat = ids.ravel().astype(np.int64) * self.bins**3 + cells
        c = np.bincount(flat, minlength=self.num_labels * self.bins**3).astype(np.float64)
        c = c.reshape(self.num_labels, self.bins**3)
        return c / np.maximum(c.sum(1, keepdims=True), 1.0)

    def update(self, image, ids, momentum: float = 0.1) -> None:
        """Blend in the histograms of (image, ids) — any matching shapes, e.g. (N, 3) and (N,)."""
        new = self._histograms(image, ids)
        seen = new.sum(1) > 0  # a label absent from the new pixels keeps its histogram
        self.hist[seen] = (1 - momentum) * self.hist[seen] + momentum * new[seen]

    def posterior(self, image) -> np.ndarray:
        """(H, W, L) p(label | colour) under equal label priors; a 1e-4 floor per cell (Laplace-like)."""
        lik = (self.hist + 1e-4) / (1.0 + 1e-4 * self.hist.shape[1])
        p = lik[:, self._cells(image)]  # (L, H, W)
        p = p / p.sum(0, keepdims=True)
        return np.moveaxis(p, 0, -1).astype(np.float32)


# --------------------------------------------------------------------------------------------- flow
def propagate_flow(frames, first_mask, *, motion: str = "affine", refine: bool = True,
                   refine_weight: float = 1.0, band: int = 2, fill: bool = True, sharpen: float = 1.0,
                   levels: int | None = None, window_sigma: float = 2.0, iterations: int = 4) -> np.ndarray:
    """Propagate by warping the previous frame's labels with dense optical flow.

    For each frame t = 1..T−1:
      1. Flows both ways with pyramidal Lucas–Kanade: bw from frame t to frame t−1 (defined on frame
         t's grid, what backward warping needs) and fw from t−1 to t (only for the consistency check).
      2. Backward-warp the previous label probabilities P_{t−1} (one channel per label, bilinear;
         frame 0's one-hot labels to start):
         motion="dense": P_t(x) = P_{t−1}(x + bw(x)) with the per-pixel flow;
         motion="affine" (default): per object, an affine motion x_t = A·x_{t−1} + c is fitted (least
         squares, trimmed, A regularised towards the identity — see ``_fit_affine``) to the forward
         flow of the object's *interior* pixels (2 pixels from its boundary, forward–backward
         consistent), and the object's channel is warped by that motion; background = 1 − objects.
         Window-based flow is least reliable exactly at the object boundary, where the window mixes
         object and background motion; a dense warp erodes or dilates the mask a little every frame
         and the error accumulates, while the interior fit is immune to it.
      3. Forward–backward check: in "affine" mode only consistent interior pixels enter the fit (see
         2); in "dense" mode (with ``fill``), where the round trip of bw against fw fails (pixels
         hidden in frame t−1, or bad flow) or the flow points outside frame t−1, the warped labels
         are no evidence and P_t is replaced by the average vote of the trusted pixels nearby (a
         disoccluded pixel most likely belongs to whatever surrounds it).
      4. Optional colour refinement: within ``band`` pixels of a label boundary, where the warp is
         least sure, P_t ← normalise(box3×3(P_t) · p(label | colour)^w), with one colour histogram
         per label learnt on frame 0 and slowly updated with the confident predictions. The weight
         w = refine_weight · clip((a − 0.9) / 0.1, 0, 1), where a is the colour model's accuracy on
         frame 0's own boundary band: where object and background share colours, colour stays silent.
      5. Re-threshold: labels_t = argmax P_t is frame t's answer. The next frame starts from the soft
         P_t (optionally sharpened, P ← P^sharpen renormalised; 1 = off), not from labels_t: warping
         the thresholded labels would round every frame's motion to whole pixels — a 0.7 px/frame
         motion would become 1 px/frame, an error that grows with every frame. (Sharpening towards a
         hard step brings that rounding back, which is why it is off by default.)
    Options: motion, refine, refine_weight, band, fill, sharpen as above; levels / window_sigma /
    iterations are passed to ``lucas_kanade``.
    """
    frames, ids, k = check_inputs(frames, first_mask)
    tracker = FlowTracker(frames[0], ids, motion=motion, refine=refine, refine_weight=refine_weight,
                          band=band, fill=fill, sharpen=sharpen, levels=levels, window_sigma=window_sigma,
                          iterations=iterations)
    out = np.zeros(frames.shape[:3], np.uint8)
    out[0] = ids
    for t in range(1, frames.shape[0]):
        out[t] = tracker.commit(frames[t], tracker.predict(frames[t]))
    return out


class FlowTracker:
    """The "flow" method one frame at a time, so that other methods can use it as their motion model.

        tracker = FlowTracker(frame0, ids0, **flow options)
        probs = tracker.predict(frame_t)        # steps 1–4 of ``propagate_flow``: (H, W, K+1) float32
        ... (a caller may change probs here, e.g. zero an occluded object's channel)
        labels = tracker.commit(frame_t, probs)  # step 5: argmax, and probs become frame t's state

    ``propagate_flow`` is exactly ``commit(frame, predict(frame))`` for every frame.
    """

    def __init__(self, frame0: np.ndarray, ids: np.ndarray, *, motion: str = "affine", refine: bool = True,
                 refine_weight: float = 1.0, band: int = 2, fill: bool = True, sharpen: float = 1.0,
                 levels: int | None = None, window_sigma: float = 2.0, iterations: int = 4):
        if motion not in ("affine", "dense"):
            raise ValueError(f"motion must be 'affine' or 'dense', got {motion!r}")
        k = int(ids.max())
        self.k, self.motion, self.band, self.fill, self.sharpen = k, motion, band, fill, sharpen
        self.colour = ColourModel(frame0, ids, k + 1) if refine else None
        if refine:
            # How much to trust colour: its accuracy a on frame 0's own boundary band. Below 90 % it would
            # flip more boundary pixels wrongly than rightly, so it gets no say; the weight then grows
            # linearly to the full refine_weight at 100 %.
            band0 = _near_boundary(ids, band)
            accuracy = np.mean(self.colour.posterior(frame0)[band0].argmax(-1) == ids[band0])
            refine_weight = refine_weight * float(np.clip((accuracy - 0.9) / 0.1, 0.0, 1.0))
            refine = refine_weight > 0
        self.refine, self.refine_weight = refine, refine_weight
        self.lk = dict(levels=levels, window_sigma=window_sigma, iterations=iterations)
        self.prev_img = to_float_image(frame0)
        self.prev_probs = _one_hot(ids, k)
        self.prev_labels = ids.astype(np.uint8)
        self._pending = None

    def predict(self, frame: np.ndarray) -> np.ndarray:
        """Steps 1–4 for the next frame: the (H, W, K+1) label probabilities warped from the state."""
        img = to_float_image(frame)
        bw = lucas_kanade(img, self.prev_img, **self.lk)
        fw = lucas_kanade(self.prev_img, img, **self.lk)
        trusted = forward_backward_consistency(bw, fw)
        if self.motion == "affine":
            probs, inside = _warp_affine(self.prev_probs, self.prev_labels, fw,
                                         forward_backward_consistency(fw, bw), bw)
        else:
            probs, inside = warp(self.prev_probs, bw)
        trusted &= inside
        if self.motion == "dense" and self.fill:
            probs = _fill_untrusted(probs, trusted)
        if self.refine:
            # Product of experts near the boundary: a 3×3-softened spatial prior times the colour
            # posterior to the power refine_weight (an uninformative colour changes nothing).
            near = _near_boundary(probs.argmax(-1), self.band)
            soft = _box_sum(probs, 1) / _box_sum(np.ones(probs.shape[:2], np.float32), 1)[..., None]
            fused = soft * self.colour.posterior(frame) ** self.refine_weight
            fused /= fused.sum(-1, keepdims=True)
            probs[near] = fused[near]
        self._pending = (img, trusted)
        return probs

    def commit(self, frame: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """Step 5: sharpen, re-threshold by argmax, keep probs as the state; returns (H, W) uint8 labels."""
        if self._pending is None:
            raise RuntimeError("commit() needs a predict() of the same frame first")
        img, trusted = self._pending
        self._pending = None
        # Optional sharpening (p^γ, renormalised; γ = 1 is off): narrows label edges against the blur
        # of repeated bilinear warps without moving the 0.5 crossing of a smooth edge.
        probs = np.maximum(probs, 0.0) ** self.sharpen
        probs /= np.maximum(probs.sum(-1, keepdims=True), 1e-12)
        self.prev_probs = probs.astype(np.float32)
        labels = probs.argmax(-1).astype(np.uint8)
        if self.refine:
            confident = trusted & ~_near_boundary(labels, self.band)
            self.colour.update(frame[confident], labels[confident], momentum=0.05)
        self.prev_img = img
        self.prev_labels = labels
        return labels


def _fit_affine(src: np.ndarray, dst: np.ndarray, prior: float = 3.0) -> np.ndarray | None:
    """Robust, regularised affine map dst ≈ A·src + c from (N, 2) point pairs. Returns (2, 3) or None.

    Least squares in coordinates centred on the points, plus a ridge prior pulling A towards the
    identity with the weight of N points at distance ``prior`` pixels: the flow of a small object's
    interior determines its translation well but its rotation / scale / shear poorly, and an
    unregularised fit turns flow noise into a spurious shrink or stretch that compounds frame after
    frame. Refitted twice on the 80 % of pairs with the smallest residuals (occluders, bad flow).
    """
    keep = np.ones(len(src), bool)
    m = None
    for _ in range(3):
        n = int(keep.sum())
        if n < 6:
            return m
        mu_s, mu_d = src[keep].mean(0), dst[keep].mean(0)
        u, d = src[keep] - mu_s, dst[keep] - mu_d
        lam = n * prior**2
        # Row r of A solves (UᵀU + λI) a_r = Uᵀ d_r + λ e_r.
        a = np.linalg.solve(u.T @ u + lam * np.eye(2), u.T @ d + lam * np.eye(2)).T
        m = np.concatenate([a, (mu_d - a @ mu_s)[:, None]], 1)
        res = np.linalg.norm(src @ a.T + m[:, 2] - dst, axis=1)
        keep = res <= max(np.quantile(res, 0.8), 0.25)
    return m


def _warp_affine(prev_probs: np.ndarray, prev: np.ndarray, fw: np.ndarray, fw_ok: np.ndarray,
                 bw: np.ndarray):
    """Warp each object's previous label probability by an affine motion fitted to its interior flow.

    prev_probs: (H, W, K+1) label probabilities of frame t−1 and prev (H, W) their argmax; fw: (H, W, 2)
    flow t−1 → t and fw_ok its consistency; bw: flow t → t−1, used (dense) for an object whose
    interior is too small to fit. Returns (probs (H, W, K+1), inside (H, W) bool: where the dense
    warp's source lies inside frame t−1).
    """
    h, w = prev.shape
    k = prev_probs.shape[-1] - 1
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    grid = np.stack([xx, yy], -1)
    probs = np.zeros((h, w, k + 1), np.float32)
    dense, inside = warp(prev_probs, bw)
    for obj in range(1, k + 1):
        mask = prev == obj
        interior = mask & ~_near_boundary(mask.astype(np.uint8), 2) & fw_ok
        m = None
        if interior.sum() >= 12:
            src = grid[interior]
            m = _fit_affine(src, src + fw[interior])
        if m is None or abs(np.linalg.det(m[:, :2])) < 1e-3:
            probs[..., obj] = dense[..., obj]
            continue
        # Backward warp: the source of pixel x of frame t is A⁻¹(x − c) in frame t−1.
        a_inv = np.linalg.inv(m[:, :2])
        source = (grid - m[:, 2]) @ a_inv.T
        probs[..., obj] = warp(prev_probs[..., obj], (source - grid).astype(np.float32))[0]
    probs[..., 0] = np.clip(1.0 - probs[..., 1:].sum(-1), 0.0, 1.0)
    return probs, inside


def _box_sum(a: np.ndarray, r: int) -> np.ndarray:
    """Sum of a (H, W, ...) over the (2r+1)² window around each pixel (window clipped at borders)."""
    h, w = a.shape[:2]
    c = np.zeros((h + 1, w + 1) + a.shape[2:], np.float64)
    c[1:, 1:] = a.cumsum(0).cumsum(1)
    y0 = np.clip(np.arange(h) - r, 0, h)
    y1 = np.clip(np.arange(h) + r + 1, 0, h)
    x0 = np.clip(np.arange(w) - r, 0, w)
    x1 = np.clip(np.arange(w) + r + 1, 0, w)
    return (c[y1][:, x1] - c[y0][:, x1] - c[y1][:, x0] + c[y0][:, x0]).astype(np.float32)


def _fill_untrusted(probs: np.ndarray, trusted: np.ndarray, radius: int = 3, rounds: int = 4) -> np.ndarray:
    """Replace the label votes of untrusted pixels by the mean vote of trusted pixels around them.

    The window grows (radius, 2·radius, ...) for pixels with no trusted neighbour yet; any still
    unreached after ``rounds`` keep their warped votes.
    """
    probs = probs.copy()
    todo = ~trusted
    weight = trusted.astype(np.float32)
    r = radius
    for _ in range(rounds):
        if not todo.any():
            break
        den = _box_sum(weight, r)
        num = _box_sum(probs * weight[..., None], r)
        fill = todo & (den > 0)
        probs[fill] = num[fill] / den[fill][:, None]
        todo &= ~fill
        r *= 2
    return probs


def mask_iou(masks: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(D,) IoU of each of masks (D, H, W) bool with mask (H, W) bool; 0 where both are empty."""
    inter = (masks & mask).sum((1, 2))
    union = (masks | mask).sum((1, 2))
    return inter / np.maximum(union, 1)


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """(H, W) bool mask grown by ``r`` pixels (chessboard distance)."""
    out = mask.copy()
    h, w = mask.shape
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            ys, ye = max(0, -dy), min(h, h - dy)
            xs, xe = max(0, -dx), min(w, w - dx)
            out[ys:ye, xs:xe] |= mask[ys + dy : ye + dy, xs + dx : xe + dx]
    return out


def _near_boundary(labels: np.ndarray, band: int) -> np.ndarray:
    """(H, W) bool: pixels within ``band`` pixels (chessboard distance) of a label change."""
    edge = np.zeros(labels.shape, bool)
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[:, :-1] |= labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    edge[:-1, :] |= labels[1:, :] != labels[:-1, :]
    return dilate(edge, band)


# --------------------------------------------------------------------------------------------- embed
@njit(cache=True)
def _global_distances(query, ref, ref_label, num_labels):
    """(N, L) smallest squared feature distance from each query row to a reference row of each label
    (inf for a label without references). query (N, D), ref (M, D), ref_label (M,) in 0..L−1."""
    n, d = query.shape
    out = np.full((n, num_labels), np.inf)
    for i in range(n):
        for j in range(ref.shape[0]):
            acc = 0.0
            for c in range(d):
                diff = query[i, c] - ref[j, c]
                acc += diff * diff
            lab = ref_label[j]
            if acc < out[i, lab]:
                out[i, lab] = acc
    return out


@njit(cache=True)
def _local_distances(query, prev, prev_label, num_labels, radius, pos_weight):
    """(h, w, L) smallest feature + position distance to the previous frame's pixels of each label
    within a (2·radius+1)² window: |f_q − f_p|² + pos_weight·(dy² + dx²). query, prev (h, w, D)."""
    h, w, d = query.shape
    out = np.full((h, w, num_labels), np.inf)
    for y in range(h):
        for x in range(w):
            for yy in range(max(y - radius, 0), min(y + radius + 1, h)):
                for xx in range(max(x - radius, 0), min(x + radius + 1, w)):
                    acc = pos_weight * ((yy - y) ** 2 + (xx - x) ** 2)
                    for c in range(d):
                        diff = query[y, x, c] - prev[yy, xx, c]
                        acc += diff * diff
                    lab = prev_label[yy, xx]
                    if acc < out[y, x, lab]:
                        out[y, x, lab] = acc
    return out


def _pixel_features(frame: np.ndarray, stride: int) -> np.ndarray:
    """(h, w, 7) features of an (H, W, 3) uint8 frame averaged over stride×stride cells: colour (0..1)
    and the 5×5-neighbourhood mean colour and intensity spread (a crude texture descriptor)."""
    img = frame.astype(np.float32) / 255.0
    h, w = img.shape[0] // stride, img.shape[1] // stride
    img = img[: h * stride, : w * stride].reshape(h, stride, w, stride, 3).mean((1, 3))
    ones = _box_sum(np.ones((h, w), np.float32), 2)[..., None]
    mean = _box_sum(img, 2) / ones
    grey = img.mean(-1)
    spread = np.sqrt(np.maximum(_box_sum(grey**2, 2) / ones[..., 0] - (_box_sum(grey, 2) / ones[..., 0]) ** 2,
                                0.0))
    return np.concatenate([img, 0.5 * mean, 2.0 * spread[..., None]], -1).astype(np.float64)


def _upsample_labels(scores: np.ndarray, shape: tuple[int, int], stride: int) -> np.ndarray:
    """Nearest-cell upsampling of (h, w, L) scores to (H, W, L); pixels past the last cell repeat it."""
    h, w = scores.shape[:2]
    ys = np.minimum(np.arange(shape[0]) // stride, h - 1)
    xs = np.minimum(np.arange(shape[1]) // stride, w - 1)
    return scores[ys][:, xs]


def propagate_embed(frames, first_mask, *, stride: int = 2, refs_per_label: int = 1500,
                    radius: int = 6, pos_weight: float = 0.002, global_penalty: float = 0.01,
                    temperature: float = 0.01, local_background: bool = True, seed: int = 0) -> np.ndarray:
    """Nearest-neighbour matching of pixel features to the first frame and the previous prediction.

    No learned network: a pixel's "embedding" is its colour, its neighbourhood's mean colour and its
    intensity spread (``_pixel_features``), on a grid of stride×stride cells. For each frame t and each
    label (background and every object), in the spirit of FEELVOS's global and local matching:
      1. global distance: to the nearest first-frame pixel of that label (up to ``refs_per_label``
         pixels per label, drawn with ``seed``) — finds the object anywhere, e.g. after re-entry;
      2. local distance: to the nearest pixel of that label in the previous prediction within
         ``radius`` cells, plus pos_weight·(cell distance)² — follows the object and keeps look-alike
         distractors, which were background a frame ago, in the background;
      3. d_label = min(global + global_penalty, local) (the background's local term can be switched
         off with local_background=False: re-entering objects are then less easily absorbed into the
         background, but look-alike distractors are no longer held there); scores
         exp(−d / temperature); each cell takes the best label, and pixels take their cell's label.
    Limits: an object that re-appears next to background of a similar colour is taken for that
    background and, once labelled so, the local term keeps it there; appearance changes drift away
    from the first frame's references.
    """
    frames, ids, k = check_inputs(frames, first_mask)
    if int(stride) < 1 or int(radius) < 1:
        raise ValueError(f"stride and radius must be >= 1, got {stride} and {radius}")
    t_len, height, width = frames.shape[:3]
    stride = int(stride)
    if height // stride < 2 or width // stride < 2:
        raise ValueError(f"frames of {height}×{width} are too small for stride {stride}")
    rng = np.random.default_rng(seed)
    out = np.zeros(frames.shape[:3], np.uint8)
    out[0] = ids

    feat0 = _pixel_features(frames[0], stride)
    h, w = feat0.shape[:2]
    lab0 = _cell_labels(ids, stride, k)  # majority label of each cell
    ref_f, ref_l = [], []
    for label in range(k + 1):
        where = np.flatnonzero(lab0.ravel() == label)
        if where.size > refs_per_label:
            where = rng.choice(where, refs_per_label, replace=False)
        ref_f.append(feat0.reshape(-1, feat0.shape[-1])[where])
        ref_l.append(np.full(where.size, label, np.int64))
    ref_f, ref_l = np.concatenate(ref_f), np.concatenate(ref_l)

    prev_f, prev_l = feat0, lab0
    for t in range(1, t_len):
        f = _pixel_features(frames[t], stride)
        d_global = _global_distances(f.reshape(-1, f.shape[-1]), ref_f, ref_l, k + 1).reshape(h, w, k + 1)
        d_local = _local_distances(f, prev_f, prev_l, k + 1, int(radius), float(pos_weight))
        d = np.minimum(d_global + global_penalty, d_local)
        if not local_background:
            d[..., 0] = d_global[..., 0]
        scores = np.exp(-(d - d.min(-1, keepdims=True)) / temperature)
        lab = scores.argmax(-1).astype(np.int64)
        out[t] = _upsample_labels(scores, (height, width), stride).argmax(-1)
        prev_f, prev_l = f, lab
    return out


def _cell_labels(ids: np.ndarray, stride: int, k: int) -> np.ndarray:
    """(h, w) majority label of each stride×stride cell of an (H, W) ID map."""
    h, w = ids.shape[0] // stride, ids.shape[1] // stride
    cells = ids[: h * stride, : w * stride].reshape(h, stride, w, stride)
    votes = np.stack([(cells == label).sum((1, 3)) for label in range(k + 1)], -1)
    return votes.argmax(-1).astype(np.int64)


def propagate_redetect(frames, first_mask, **options) -> np.ndarray:
    """Tracking by re-detection with the trained Mask R-CNN: see ``minimaskrcnn.video.redetect``."""
    from minimaskrcnn.video.redetect import propagate_redetect as method

    return method(frames, first_mask, **options)


def propagate_osvos(frames, first_mask, **options) -> np.ndarray:
    """OSVOS-style first-frame fine-tuning of the Mask R-CNN heads: see ``minimaskrcnn.video.osvos``."""
    from minimaskrcnn.video.osvos import propagate_osvos as method

    return method(frames, first_mask, **options)


METHODS = {"copy": propagate_copy, "flow": propagate_flow, "embed": propagate_embed,
           "redetect": propagate_redetect, "osvos": propagate_osvos}
# Methods that need the trained detector (``model=`` or ``checkpoint=``).
DETECTOR_METHODS = ("redetect", "osvos")


def propagate(method: str, frames, first_mask, **options) -> np.ndarray:
    """Run the propagation method named ``method`` (a key of ``METHODS``)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[method](frames, first_mask, **options)
