"""First-frame mask propagation without a learned model: "copy" and "flow".

Every propagation method (here, in ``video.embed``, ``video.redetect``, ``video.osvos``; the registry
of all of them is ``video.methods``) has the same signature,

    masks = method(frames, first_mask, **options)

    frames:     (T, H, W, 3) uint8 RGB video, T ≥ 1.
    first_mask: (H, W) mask of frame 0 — bool (one object) or an integer ID map (0 = background,
                1..K the objects, every one of them present).
    masks:      (T, H, W) uint8 ID map, masks[0] equal to first_mask.

    copy   the first mask repeated — the floor any method must beat.
    flow   optical-flow warping of the previous frame's mask (backward warping with the flow from frame
           t to frame t−1, forward–backward consistency, re-thresholding by argmax), optionally refined
           by per-object colour models where the flow is not trusted. ``FlowTracker`` is the same one
           frame at a time, the motion model of ``redetect``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from minimaskrcnn.video.common import ColourModel, box_sum, check_inputs, near_boundary, one_hot
from minimaskrcnn.video.flow import (
    downsample,
    forward_backward_consistency,
    lucas_kanade,
    to_float_image,
    upsample_flow,
    warp,
    working_factor,
)

__all__ = ["propagate_copy", "propagate_flow", "FlowTracker"]


# --------------------------------------------------------------------------------------------- copy
def propagate_copy(frames, first_mask) -> np.ndarray:
    """The first mask in every frame: right only while nothing moves."""
    frames, ids, _ = check_inputs(frames, first_mask)
    return np.repeat(ids[None], frames.shape[0], axis=0)


# --------------------------------------------------------------------------------------------- flow
def propagate_flow(frames, first_mask, *, motion: str = "affine", refine: bool = True,
                   refine_weight: float = 1.0, band: int = 2, fill: bool = True, sharpen: float = 1.0,
                   levels: int | None = None, window_sigma: float = 2.0, iterations: int = 4,
                   flow_size: int | None = 320) -> np.ndarray:
    """Propagate by warping the previous frame's labels with dense optical flow.

    For each frame t = 1..T−1:
      1. Flows both ways with pyramidal Lucas–Kanade: bw from frame t to frame t−1 (defined on frame
         t's grid, what backward warping needs) and fw from t−1 to t (only for the consistency check).
         Frames whose longer side exceeds ``flow_size`` pixels get their flow on copies reduced by an
         integer factor f (f × f block means; 854 × 480 → 285 × 160 at the default 320), upsampled
         back bilinearly (vectors × f): the affine fit of step 2 needs the motion of the objects'
         interiors, not per-pixel detail, and the flow's cost falls by f². 128 × 128 frames are not
         reduced. None: always full resolution.
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
    Options: motion, refine, refine_weight, band, fill, sharpen, flow_size as above; levels /
    window_sigma / iterations are passed to ``lucas_kanade``.
    """
    frames, ids, k = check_inputs(frames, first_mask)
    tracker = FlowTracker(frames[0], ids, motion=motion, refine=refine, refine_weight=refine_weight,
                          band=band, fill=fill, sharpen=sharpen, levels=levels, window_sigma=window_sigma,
                          iterations=iterations, flow_size=flow_size)
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
                 levels: int | None = None, window_sigma: float = 2.0, iterations: int = 4,
                 flow_size: int | None = 320):
        if motion not in ("affine", "dense"):
            raise ValueError(f"motion must be 'affine' or 'dense', got {motion!r}")
        k = int(ids.max())
        self.k, self.motion, self.band, self.fill, self.sharpen = k, motion, band, fill, sharpen
        self.colour = ColourModel(frame0, ids, k + 1) if refine else None
        if refine:
            # How much to trust colour: its accuracy a on frame 0's own boundary band. Below 90 % it would
            # flip more boundary pixels wrongly than rightly, so it gets no say; the weight then grows
            # linearly to the full refine_weight at 100 %.
            band0 = near_boundary(ids, band)
            accuracy = np.mean(self.colour.posterior(frame0)[band0].argmax(-1) == ids[band0])
            refine_weight = refine_weight * float(np.clip((accuracy - 0.9) / 0.1, 0.0, 1.0))
            refine = refine_weight > 0
        self.refine, self.refine_weight = refine, refine_weight
        self.lk = dict(levels=levels, window_sigma=window_sigma, iterations=iterations)
        self.factor = working_factor(ids.shape, flow_size)
        self.prev_img = downsample(to_float_image(frame0), self.factor)
        self.prev_probs = one_hot(ids, k)
        self.prev_labels = ids.astype(np.uint8)
        self._pending = None

    def predict(self, frame: np.ndarray) -> np.ndarray:
        """Steps 1–4 for the next frame: the (H, W, K+1) label probabilities warped from the state."""
        img = downsample(to_float_image(frame), self.factor)
        shape = frame.shape[:2]
        # Flows and their consistency on the working grid (full size unless reduced by ``factor``);
        # flows upsampled bilinearly, consistency masks by nearest neighbour.
        bw_s = lucas_kanade(img, self.prev_img, **self.lk)
        fw_s = lucas_kanade(self.prev_img, img, **self.lk)
        trusted = _upsample_mask(forward_backward_consistency(bw_s, fw_s), self.factor, shape)
        bw, fw = upsample_flow(bw_s, self.factor, shape), upsample_flow(fw_s, self.factor, shape)
        if self.motion == "affine":
            fw_ok = _upsample_mask(forward_backward_consistency(fw_s, bw_s), self.factor, shape)
            probs, inside = _warp_affine(self.prev_probs, self.prev_labels, fw, fw_ok, bw)
        else:
            probs, inside = warp(self.prev_probs, bw)
        trusted &= inside
        if self.motion == "dense" and self.fill:
            probs = _fill_untrusted(probs, trusted)
        if self.refine:
            # Product of experts near the boundary: a 3×3-softened spatial prior times the colour
            # posterior to the power refine_weight (an uninformative colour changes nothing).
            # Computed on the band's pixels only (the rest of the frame keeps its warped votes).
            near = near_boundary(probs.argmax(-1), self.band)
            fused = _box3_mean_at(probs, near) * self.colour.posterior(frame[near]) ** self.refine_weight
            fused /= fused.sum(-1, keepdims=True)
            probs[near] = fused
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
        probs = np.maximum(probs, 0.0)
        if self.sharpen != 1.0:  # p ** 1.0 is p exactly: skip a full-frame power
            probs **= self.sharpen
        probs /= np.maximum(probs.sum(-1, keepdims=True), 1e-12)
        self.prev_probs = probs.astype(np.float32)
        labels = probs.argmax(-1).astype(np.uint8)
        if self.refine:
            confident = trusted & ~near_boundary(labels, self.band)
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
    sx, sy = xx + bw[..., 0], yy + bw[..., 1]
    inside = (sx >= 0) & (sx <= w - 1) & (sy >= 0) & (sy <= h - 1)  # as ``warp``'s valid flag
    dense = None
    for obj in range(1, k + 1):
        mask = prev == obj
        interior = mask & ~near_boundary(mask.astype(np.uint8), 2) & fw_ok
        m = None
        if interior.sum() >= 12:
            src = grid[interior]
            m = _fit_affine(src, src + fw[interior])
        if m is None or abs(np.linalg.det(m[:, :2])) < 1e-3:
            if dense is None:
                dense = warp(prev_probs, bw)[0]
            probs[..., obj] = dense[..., obj]
            continue
        # Backward warp: the source of pixel x of frame t is A⁻¹(x − c) in frame t−1 (bilinear,
        # border replicated: ``_affine_warp_reference`` is the same in NumPy).
        a_inv = np.linalg.inv(m[:, :2])
        channel = np.ascontiguousarray(prev_probs[..., obj])
        probs[..., obj] = _affine_warp_kernel(channel, a_inv, m[:, 2].copy())
    probs[..., 0] = np.clip(1.0 - probs[..., 1:].sum(-1), 0.0, 1.0)
    return probs, inside


def _affine_warp_reference(channel: np.ndarray, a_inv: np.ndarray, c: np.ndarray) -> np.ndarray:
    """out(x) = channel(A⁻¹(x − c)), bilinear with the border replicated; (H, W) float32 → (H, W)."""
    h, w = channel.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    grid = np.stack([xx, yy], -1)
    source = (grid - c) @ a_inv.T
    return warp(channel, (source - grid).astype(np.float32))[0]


@njit(cache=True, parallel=True)
def _affine_warp_kernel(channel, a_inv, c):
    """``_affine_warp_reference`` as a loop over the pixels (no (H, W, 2) coordinate arrays)."""
    h, w = channel.shape
    out = np.empty((h, w), np.float32)
    for y in prange(h):
        for x in range(w):
            dx, dy = x - c[0], y - c[1]
            sx = min(max(a_inv[0, 0] * dx + a_inv[0, 1] * dy, 0.0), w - 1.0)
            sy = min(max(a_inv[1, 0] * dx + a_inv[1, 1] * dy, 0.0), h - 1.0)
            x0 = min(int(np.floor(sx)), w - 2) if w > 1 else 0
            y0 = min(int(np.floor(sy)), h - 2) if h > 1 else 0
            fx, fy = np.float32(sx - x0), np.float32(sy - y0)
            x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
            top = channel[y0, x0] * (1 - fx) + channel[y0, x1] * fx
            bot = channel[y1, x0] * (1 - fx) + channel[y1, x1] * fx
            out[y, x] = top * (1 - fy) + bot * fy
    return out


def _upsample_mask(mask: np.ndarray, f: int, shape) -> np.ndarray:
    """Nearest-neighbour upsampling of a working-grid (ceil(H/f), ceil(W/f)) bool mask to (H, W)."""
    if f == 1:
        return mask
    return np.repeat(np.repeat(mask, f, 0), f, 1)[: shape[0], : shape[1]]


def _box3_mean_at(probs: np.ndarray, where: np.ndarray) -> np.ndarray:
    """(N, L) mean of probs (H, W, L) over the 3×3 window (clipped at the borders) around each of the
    N pixels where ``where`` (H, W) is True — ``box_sum(probs, 1) / box_sum(1, 1)`` at those pixels."""
    h, w = where.shape
    ys, xs = np.nonzero(where)
    acc = np.zeros((ys.size, probs.shape[-1]), np.float64)
    count = np.zeros(ys.size, np.float64)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            y, x = ys + dy, xs + dx
            ok = (y >= 0) & (y < h) & (x >= 0) & (x < w)
            acc[ok] += probs[y[ok], x[ok]]
            count += ok
    return (acc / count[:, None]).astype(np.float32)


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
        den = box_sum(weight, r)
        num = box_sum(probs * weight[..., None], r)
        fill = todo & (den > 0)
        probs[fill] = num[fill] / den[fill][:, None]
        todo &= ~fill
        r *= 2
    return probs
