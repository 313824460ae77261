"""Direct alignment of each object's first-frame appearance ("align"): no mask is carried from frame to
frame, so no error compounds; occlusion from the alignment's residuals; re-acquisition by template search.

    masks = propagate_align(frames, first_mask, **options)

The flow method carries a mask from frame to frame, and every frame's small error — a lag behind the
motion, a pixel eroded at the boundary — is kept and compounds: on the photo clips its J falls steadily
while nothing happens (0.95 → 0.37 over 25 frames on one tuning clip). Here object j keeps its
frame-0 *template* — colours T(u) and mask M(u) at frame-0 pixels u — and a warp from frame 0 to
frame t,

    W_t(u) = A_t (u − ū) + c_t          (ū the centroid of M; A_t 2 × 2, c_t the object's centre),

found anew in every frame by aligning the template to the frame (Lucas & Kanade 1981; Baker &
Matthews, "Lucas-Kanade 20 years on", 2004). An object is the same set of coloured pixels in every
frame, moved, turned and scaled: its frame-0 appearance is evidence in frame 40 as much as in frame 1.
The method needs no training and no classes. For each frame t:

1. Predict (visible objects): the centre at constant velocity (its move from t−2 to t−1 once more),
   A as in frame t−1.
2. Align, coarse to fine on a pyramid of 2 × 2 block means (Gauss–Newton, iteratively reweighted):
       minimise over A, c and a photometric gain g and bias b    Σ_u ρ(‖I_t(W(u)) − g·T(u) − b‖)
   over the template's pixels u (RGB residual), with Huber's ρ (scale 1.4826 × the median residual):
   pixels hidden by another object, or where the object deformed, get small weights instead of
   pulling the warp. A ridge term keeps A near its prediction (``ridge``: as if the template's
   evidence on A came from points ``ridge`` pixels from the centre at most — a small object pins its
   translation far better than its rotation or scale). g, b absorb slow lighting change.
   Two templates (the drift-free template update of Matthews, Ishikawa & Baker 2004): first the
   *running* template T^run — the object as it looked in frame t−1, mapped back to frame-0
   coordinates (pixels hidden then keep older values) — which tolerates appearance change; then
   frame 0's T^0 from that answer. T^0 cannot drift, so its answer is kept when it fits at least
   ``agree_fraction`` as many pixels as T^run's does (residual under 3 × T^run's scale); else the
   object's looks have changed and T^run's answer stands.
3. Segment: pixels x whose source W⁻¹(x) lies in M (bilinear mask > ½) are the object's *amodal*
   mask; of those, pixels whose residual ‖I_t(x) − g·T(W⁻¹x) − b‖ (mean over a 5 × 5 window) exceeds
   ``occlusion_k`` × the object's residual scale are *occluded* — something is in front — and are
   removed (the scale: a running mean of the object's well-fitting frames, so that a fit that has
   lost the object, whose own scale is large, cannot pass everything). Where two objects claim a
   pixel, the smaller residual wins.
4. Absence: when the visible part is under ``min_visible`` of the amodal part inside the frame and of
   the frame-0 area × det A (or under ``min_area`` pixels), the object is covered up or gone: it is
   *absent* and gets no pixels. So is an object whose warp changed its scale by more than 0.7–1.4×
   or its aspect beyond 3:1 in one frame: the fit has locked onto something else (the object moved
   beyond the pyramid's reach; it is then searched for at once, step 5).
5. Re-acquire (absent objects): T^0 (not T^run: it may hold what the object was lost to), warped
   by the A of the last frame in which the object lay wholly inside the frame and was at least half
   seen (at the border the points left outside no longer pin A, and the fit shrinks towards the
   visible part) × each of ``scales``, is searched over the whole frame by masked normalised
   cross-correlation (Padfield 2012; FFTs, on a copy of at most ``search_size`` pixels a side, both
   sides smoothed with a Gaussian of one pixel; placements partly outside the frame allowed). A
   rescaled template must beat the unscaled one by 0.05 (a shrunk template fits the visible part of
   an entering object about as well). The best placement with NCC ≥ ``ncc_min`` is aligned (step 2,
   from that placement) and segmented (step 3); it is taken when it is visible by at least
   ``reacquire_visible`` and does not lie on a visible object. Found within 3 frames of being lost,
   it keeps its velocity from where it was last seen; found after a longer absence, its velocity is
   unknown, and it is searched for once more in the next frame (a fast object is beyond the
   alignment's reach from a standing start) — tracked as usual if that search fails.

Costs per frame: a Gauss–Newton solve per object on the template's pixels (its bounding box at full
resolution, fewer on the coarse levels); the search, only while an object is absent. The loops are
NumPy on the template's pixels; ``_align_reference`` is one Gauss–Newton step written per pixel.
"""

from __future__ import annotations

import numpy as np

from minimaskrcnn.video.common import box_sum, check_inputs, dilate, near_boundary
from minimaskrcnn.video.flow import downsample, gaussian_blur, to_float_image

__all__ = ["propagate_align", "AlignTracker", "masked_ncc", "align_template"]

# How much NCC a rescaled template must gain over the unscaled one to be preferred in the search (step 5).
SCALE_MARGIN = 0.05


# --------------------------------------------------------------------------------------- sampling
def _sample(img: np.ndarray, x: np.ndarray, y: np.ndarray):
    """Bilinear samples of img (H, W, C) at (N,) float coordinates; returns ((N, C), valid (N,)):
    valid where the point lies inside [0, W−1] × [0, H−1] (outside: the clamped border value)."""
    h, w = img.shape[:2]
    valid = (x >= 0) & (y >= 0) & (x <= w - 1) & (y <= h - 1)
    xc = np.clip(x, 0, w - 1)
    yc = np.clip(y, 0, h - 1)
    x0 = np.minimum(np.floor(xc).astype(np.int64), max(w - 2, 0))
    y0 = np.minimum(np.floor(yc).astype(np.int64), max(h - 2, 0))
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (xc - x0)[:, None], (yc - y0)[:, None]
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bot = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bot * fy, valid


def _pyramid(img: np.ndarray, levels: int) -> list:
    """[img, 2 × 2 block means of it, ...]: ``levels`` images; level l's pixel i covers full-resolution
    pixels 2^l·i ... 2^l·(i+1) − 1, its centre at full-resolution coordinate 2^l·i + (2^l − 1)/2."""
    out = [img]
    for _ in range(levels - 1):
        out.append(downsample(out[-1], 2))
    return out


def _to_level(v: np.ndarray, level: int) -> np.ndarray:
    """Full-resolution coordinates → level-l pixel coordinates (inverse of the centre rule above)."""
    s = 2.0**level
    return (v - (s - 1) / 2) / s


def _gradients(img: np.ndarray) -> np.ndarray:
    """(H, W, C, 2) central-difference image gradients (d/dx, d/dy), one-sided at the borders."""
    gy, gx = np.gradient(img, axis=(0, 1))
    return np.stack([gx, gy], -1).astype(np.float32)


# --------------------------------------------------------------------------------------- alignment
class _Warp:
    """x = A (u − ū) + c, with the photometric model I ≈ g·T + b."""

    def __init__(self, a, c, g=1.0, b=0.0):
        self.a = np.asarray(a, np.float64).reshape(2, 2)
        self.c = np.asarray(c, np.float64).reshape(2)
        self.g, self.b = float(g), float(b)

    def copy(self):
        return _Warp(self.a.copy(), self.c.copy(), self.g, self.b)

    def apply(self, du: np.ndarray) -> np.ndarray:
        """(N, 2) template offsets u − ū → (N, 2) frame coordinates."""
        return du @ self.a.T + self.c


def _huber_weights(e: np.ndarray, scale: float) -> np.ndarray:
    k = 1.345 * scale
    return np.where(e <= k, 1.0, k / np.maximum(e, 1e-12))


def _robust_scale(e: np.ndarray) -> float:
    """1.4826 × the median of residual norms e, floored at 0.01 (JPEG noise never vanishes)."""
    return max(1.4826 * float(np.median(e)), 0.01) if e.size else 0.01


def _gauss_newton_step(du, tmpl, r, gi, wt, da, ridge: float):
    """The 8-vector step (ΔA row-major, Δc, Δg, Δb) of one reweighted Gauss–Newton iteration, or None.

    du (N, 2) template offsets, tmpl (N, C) template colours, r (N, C) residuals I(W(u)) − g·T − b,
    gi (N, C, 2) image gradients at W(u), wt (N,) robust weights (0 for points outside the frame),
    da (2, 2) = A − the A the ridge pulls towards, ridge in pixels (0: none).
    """
    # Jacobian of r per channel w.r.t. (a11, a12, a21, a22, c1, c2, g, b): (N, C, 8).
    jac = np.empty(r.shape + (8,))
    gx, gy = gi[..., 0], gi[..., 1]
    jac[..., 0], jac[..., 1] = gx * du[:, :1], gx * du[:, 1:]
    jac[..., 2], jac[..., 3] = gy * du[:, :1], gy * du[:, 1:]
    jac[..., 4], jac[..., 5] = gx, gy
    jac[..., 6], jac[..., 7] = -tmpl, -1.0
    jw = jac * wt[:, None, None]
    hess = np.einsum("ncp,ncq->pq", jw, jac)
    grad = np.einsum("ncp,nc->p", jw, r)
    # Ridge on A: the curvature of the translation block times ridge² per entry, towards the prior.
    lam = (hess[4, 4] + hess[5, 5]) / 2 * ridge**2
    hess[:4, :4] += lam * np.eye(4)
    grad[:4] += lam * np.asarray(da).ravel()
    hess += 1e-9 * np.trace(hess) * np.eye(8)  # keeps a template without texture solvable
    try:
        return -np.linalg.solve(hess, grad)
    except np.linalg.LinAlgError:
        return None


def _tukey_weights(e: np.ndarray, scale: float) -> np.ndarray:
    c = 4.685 * scale
    return np.where(e < c, (1 - (e / c) ** 2) ** 2, 0.0)


def align_template(pyr, grads, du_levels, t_levels, warp: _Warp, *, iterations: int = 10,
                   ridge: float = 8.0, a_prior=None, ref_scale: float | None = None):
    """Gauss–Newton alignment of a template to one frame, coarse to fine (step 2 of the module docstring).

    pyr / grads: the frame's pyramid (list of (H_l, W_l, C)) and its gradients ((H_l, W_l, C, 2),
    per level-l pixel); du_levels[l]: (N_l, 2) template points u − ū (full-resolution units) of level
    l, t_levels[l]: (N_l, C) their template colours. warp: the start (not modified). ridge: pixels (see
    the module docstring); a_prior: (2, 2) the A that the ridge pulls towards (default the start's).
    ref_scale: the residual scale of the object's good fits, when known: the weights are then Tukey's
    biweight at that scale (pixels of an occluder get weight 0, however many there are); without it,
    Huber's at the fit's own median scale (which grows with the share of outliers).
    Returns (warp, e (N_0,) residual norms at level 0 (inf where the point fell outside the frame),
    scale (robust residual scale at level 0)).
    """
    w = warp.copy()
    a_prior = w.a.copy() if a_prior is None else np.asarray(a_prior, np.float64)
    for level in range(len(pyr) - 1, -1, -1):
        du, tmpl = du_levels[level], t_levels[level]
        if du.shape[0] < 6:
            continue
        s = 2.0**level
        for _ in range(iterations):
            x = w.apply(du)
            xl, yl = _to_level(x[:, 0], level), _to_level(x[:, 1], level)
            i, valid = _sample(pyr[level], xl, yl)
            gi, _ = _sample(grads[level].reshape(grads[level].shape[:2] + (-1,)), xl, yl)
            gi = gi.reshape(-1, tmpl.shape[1], 2) / s  # d I / d x in full-resolution units
            r = i - w.g * tmpl - w.b  # (N, C)
            e = np.sqrt((r**2).sum(1))
            if valid.sum() < 6:
                break
            if ref_scale is None:
                wt = _huber_weights(e, _robust_scale(e[valid])) * valid
            else:
                # (on coarse levels the block means' residuals are no smaller than the full level's)
                wt = _tukey_weights(e, ref_scale) * valid
            step = _gauss_newton_step(du, tmpl, r, gi, wt, w.a - a_prior, ridge)
            if step is None:
                break
            w.a += step[:4].reshape(2, 2)
            w.c += step[4:6]
            w.g = float(np.clip(w.g + step[6], 0.3, 3.0))
            w.b += step[7]
            if np.abs(step[4:6]).max() < 0.01 * s and np.abs(step[:4]).max() < 1e-4:
                break
    # The final fit at full resolution: residual norms, inf where a point fell outside the frame.
    x = w.apply(du_levels[0])
    i, valid = _sample(pyr[0], x[:, 0], x[:, 1])
    e = np.where(valid, np.sqrt(((i - w.g * t_levels[0] - w.b) ** 2).sum(1)), np.inf)
    return w, e, _robust_scale(e[valid])


def _align_reference(frame, grad, du, tmpl, a, c, g, b):
    """``_gauss_newton_step`` with unit weights and no ridge, at full resolution, written per pixel
    and channel from the residual's derivatives (for tests); returns the 8-vector step."""
    hess = np.zeros((8, 8))
    rhs = np.zeros(8)
    for n in range(du.shape[0]):
        x = a @ du[n] + c
        i, _ = _sample(frame, np.array([x[0]]), np.array([x[1]]))
        gi, _ = _sample(grad.reshape(grad.shape[:2] + (-1,)), np.array([x[0]]), np.array([x[1]]))
        gi = gi.reshape(-1, 2)
        for ch in range(frame.shape[2]):
            r = i[0, ch] - g * tmpl[n, ch] - b
            gx, gy = gi[ch]
            ux, uy = du[n]
            j = np.array([gx * ux, gx * uy, gy * ux, gy * uy, gx, gy, -tmpl[n, ch], -1.0])
            hess += np.outer(j, j)
            rhs += j * r
    hess += 1e-9 * np.trace(hess) * np.eye(8)  # the same tiny damping as the fast step
    return -np.linalg.solve(hess, rhs)


# --------------------------------------------------------------------------------------- search
def masked_ncc(image: np.ndarray, template: np.ndarray, tmask: np.ndarray, min_overlap: float = 0.5):
    """Masked normalised cross-correlation of a template over an image, every placement (Padfield 2012).

    image (H, W, C), template (h, w, C) with its mask tmask (h, w) bool. Placement (dy, dx) puts the
    template's top-left pixel at image pixel (dy, dx), for dy in −(h−1) .. H−1 and dx likewise; only
    template pixels that land inside the image count. Per channel,
        NCC = Σ (f − f̄)(t − t̄) / √(Σ (f − f̄)² · Σ (t − t̄)²)   over the overlapping mask pixels,
    averaged over channels. Returns (ncc (H+h−1, W+w−1), offset (h−1, w−1)): ncc[i, j] is placement
    (i − (h−1), j − (w−1)); placements overlapping fewer than ``min_overlap`` of the mask's pixels
    get −1. Computed with FFTs: each sum over the overlap is a correlation of two zero-padded arrays.
    """
    hh, ww, ch = image.shape
    th, tw = tmask.shape
    fh, fw = hh + th - 1, ww + tw - 1
    shape = (int(2 ** np.ceil(np.log2(fh))), int(2 ** np.ceil(np.log2(fw))))

    def spec(a):
        return np.fft.rfft2(a, shape)

    def corr(fa, fb):
        # c[dy, dx] = Σ_y,x a[y + dy, x + dx] b[y, x]; negative offsets wrap to the end of the array.
        full = np.fft.irfft2(fa * np.conj(fb), shape)
        full = np.roll(full, (th - 1, tw - 1), axis=(0, 1))
        return full[:fh, :fw]

    mf = np.ones((hh, ww))
    mt = tmask.astype(np.float64)
    f_mf, f_mt = spec(mf), spec(mt)
    n = np.rint(corr(f_mf, f_mt))
    total = np.zeros((fh, fw))
    for c in range(ch):
        f = image[..., c].astype(np.float64)
        t = template[..., c].astype(np.float64) * mt
        ff, ff2 = spec(f), spec(f * f)
        ft, ft2 = spec(t), spec(t * t)
        s_f, s_f2 = corr(ff, f_mt), corr(ff2, f_mt)
        s_t, s_t2 = corr(f_mf, ft), corr(f_mf, ft2)
        s_ft = corr(ff, ft)
        nn = np.maximum(n, 1)
        num = s_ft - s_f * s_t / nn
        den = np.sqrt(np.maximum(s_f2 - s_f**2 / nn, 0) * np.maximum(s_t2 - s_t**2 / nn, 0))
        total += np.where(den > 1e-6, num / np.maximum(den, 1e-12), 0.0)
    ncc = total / ch
    ncc[n < min_overlap * mt.sum()] = -1.0
    return ncc, (th - 1, tw - 1)


def _masked_ncc_reference(image, template, tmask, dy, dx):
    """NCC of one placement (dy, dx) of ``masked_ncc``, by direct sums (for tests)."""
    vals = []
    for c in range(image.shape[2]):
        f, t = [], []
        for y in range(tmask.shape[0]):
            for x in range(tmask.shape[1]):
                yy, xx = y + dy, x + dx
                if tmask[y, x] and 0 <= yy < image.shape[0] and 0 <= xx < image.shape[1]:
                    f.append(float(image[yy, xx, c]))
                    t.append(float(template[y, x, c]))
        f, t = np.array(f), np.array(t)
        fd, td = f - f.mean(), t - t.mean()
        den = np.sqrt((fd**2).sum() * (td**2).sum())
        vals.append((fd * td).sum() / den if den > 1e-6 else 0.0)
    return float(np.mean(vals))


# --------------------------------------------------------------------------------------- the method
class _Object:
    """One target: its frame-0 template (mask, colours, the running template), warp and state."""

    def __init__(self, frame0_pyr, mask: np.ndarray, levels: int):
        self.mask0 = mask
        ys, xs = np.nonzero(mask)
        self.centre0 = np.array([xs.mean(), ys.mean()])
        self.area0 = int(mask.sum())
        self.levels = levels
        self.mask_pyr = _pyramid(mask[..., None].astype(np.float32), levels)
        self.t0 = frame0_pyr[0]
        self.trun = frame0_pyr[0].copy()
        self.box = (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)
        self._points0 = self._points(frame0_pyr)
        self._points_run = self._points0
        self.warp = _Warp(np.eye(2), self.centre0)
        self.prev_warp = self.warp.copy()
        self.visible = True
        self.relocate = False  # found by the search after a long absence: search again next frame
        self.ref_scale = None  # the residual scale of a good fit (set by the first frame's)
        self.good_a = np.eye(2)  # A of the last frame the object was inside the frame and half seen
        self.seen_at = (0, self.centre0.copy())  # (frame, centre) where it was last seen

    def _points(self, pyr):
        """(du_levels, t_levels) of the template pyramid pyr: points of each level inside the mask."""
        du_levels, t_levels = [], []
        for level in range(self.levels):
            iy, ix = np.nonzero(self.mask_pyr[level][..., 0] > 0.5)
            s = 2.0**level
            u = np.stack([ix * s + (s - 1) / 2, iy * s + (s - 1) / 2], 1)
            du_levels.append(u - self.centre0)
            t_levels.append(pyr[level][iy, ix].astype(np.float64))
        return du_levels, t_levels

    def update_running(self, frame_img: np.ndarray, seen: np.ndarray):
        """T^run ← (I_t(W(u)) − b) / g at the template's pixels u whose image is visible (``seen``:
        (N_0,) bool over the full-resolution template points)."""
        y0, y1, x0, x1 = self.box
        iy, ix = np.nonzero(self.mask0[y0:y1, x0:x1])
        iy, ix = iy + y0, ix + x0
        du = np.stack([ix, iy], 1) - self.centre0
        vals, valid = _sample(frame_img, *self.warp.apply(du).T)
        keep = valid & seen
        self.trun[iy[keep], ix[keep]] = (vals[keep] - self.warp.b) / self.warp.g
        self._points_run = self._points(_pyramid(self.trun, self.levels))


def _amodal_and_residual(obj: _Object, img: np.ndarray, warp: _Warp, tmpl_img: np.ndarray):
    """(mask (H, W) bool: pixels whose source lies in the template mask, residual (H, W) float32: the
    5 × 5 mean of ‖I − g·T(W⁻¹x) − b‖ there (inf elsewhere)), over the warped template's box only."""
    h, w = img.shape[:2]
    y0, y1, x0, x1 = obj.box
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float64) - obj.centre0
    xy = warp.apply(corners)
    bx0, by0 = np.floor(xy.min(0)).astype(int) - 3
    bx1, by1 = np.ceil(xy.max(0)).astype(int) + 4
    bx0, by0, bx1, by1 = max(bx0, 0), max(by0, 0), min(bx1, w), min(by1, h)
    mask = np.zeros((h, w), bool)
    resid = np.full((h, w), np.inf, np.float32)
    if bx1 <= bx0 or by1 <= by0:
        return mask, resid
    yy, xx = np.mgrid[by0:by1, bx0:bx1].astype(np.float64)
    try:
        a_inv = np.linalg.inv(warp.a)
    except np.linalg.LinAlgError:
        return mask, resid
    src = (np.stack([xx.ravel(), yy.ravel()], 1) - warp.c) @ a_inv.T + obj.centre0
    m, valid = _sample(obj.mask0[..., None].astype(np.float32), src[:, 0], src[:, 1])
    inside = (m[:, 0] > 0.5) & valid
    t, _ = _sample(tmpl_img, src[:, 0], src[:, 1])
    r = np.sqrt(((img[by0:by1, bx0:bx1].reshape(-1, img.shape[2]) - warp.g * t - warp.b) ** 2).sum(1))
    r = r.reshape(by1 - by0, bx1 - bx0)
    ins = inside.reshape(r.shape)
    num = box_sum((r * ins)[..., None], 2)[..., 0]
    den = box_sum(ins[..., None].astype(np.float32), 2)[..., 0]
    mask[by0:by1, bx0:bx1] = ins
    resid[by0:by1, bx0:bx1] = np.where(ins, num / np.maximum(den, 1), np.inf)
    return mask, resid


def propagate_align(frames, first_mask, **options) -> np.ndarray:
    """Direct alignment of every object's first-frame template (module docstring). frames (T, H, W, 3)
    uint8, first_mask (H, W) bool or ID map; returns the (T, H, W) uint8 ID map, frame 0 = first_mask.
    Options: those of ``AlignTracker``."""
    frames, ids, _ = check_inputs(frames, first_mask)
    tracker = AlignTracker(frames[0], ids, **options)
    out = np.zeros(frames.shape[:3], np.uint8)
    out[0] = ids
    for t in range(1, frames.shape[0]):
        out[t] = tracker.step(frames[t])
    return out


class AlignTracker:
    """The "align" method one frame at a time, so that other methods can use its verdicts.

        tracker = AlignTracker(frame0, ids0, **options)
        labels = tracker.step(frame_t)     # steps 1–5 of the module docstring: (H, W) uint8 ID map
        tracker.visible[j], tracker.found[j]   # object j+1 present; re-acquired by the search this frame

    levels: pyramid levels (None: until the shorter side is under 32 pixels, at most 5); the other
    options as named in the module docstring.
    """

    def __init__(self, frame0: np.ndarray, ids: np.ndarray, *, levels: int | None = None,
                 iterations: int = 10, ridge: float = 8.0, agree_fraction: float = 0.8,
                 occlusion_k: float = 3.0, min_visible: float = 0.15, min_area: int = 12,
                 scales=(0.8, 1.0, 1.25), ncc_min: float = 0.6, search_size: int = 220,
                 reacquire_visible: float = 0.4):
        for name, v in (("min_visible", min_visible), ("agree_fraction", agree_fraction),
                        ("reacquire_visible", reacquire_visible)):
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {v}")
        if not -1.0 <= float(ncc_min) <= 1.0:
            raise ValueError(f"ncc_min must lie in [-1, 1], got {ncc_min}")
        h, w = ids.shape
        if levels is None:
            levels = 1
            while levels < 5 and min(h, w) / 2**levels >= 32:
                levels += 1
        self.levels, self.h, self.w, self.t = levels, h, w, 0
        self.objects = [_Object(_pyramid(to_float_image(frame0), levels), ids == j, levels)
                        for j in range(1, int(ids.max()) + 1)]
        self.search_f = max(1, int(np.ceil(max(h, w) / int(search_size))))
        self.track_options = (iterations, ridge, agree_fraction, occlusion_k, min_visible, min_area, h, w)
        self.search_options = (scales, ncc_min, self.search_f, iterations, ridge, occlusion_k, min_area,
                               reacquire_visible)
        self.found = [False] * len(self.objects)

    @property
    def visible(self) -> list:
        return [obj.visible for obj in self.objects]

    def step(self, frame: np.ndarray) -> np.ndarray:
        self.t += 1
        t, h, w, objects = self.t, self.h, self.w, self.objects
        img = to_float_image(frame)
        pyr = _pyramid(img, self.levels)
        grads = [_gradients(p) for p in pyr]
        masks, resids = [], []
        for obj in objects:
            mask, resid = np.zeros((h, w), bool), np.full((h, w), np.inf, np.float32)
            if obj.visible and not obj.relocate:
                mask, resid = _follow(obj, img, pyr, grads, *self.track_options)
            masks.append(mask)
            resids.append(resid)
        # 5. re-acquisition of absent objects, and a search for the objects found in the previous frame
        # after a long absence (their velocity is unknown: a fast one is beyond the alignment's reach)
        self.found = [False] * len(objects)
        for j, obj in enumerate(objects):
            if obj.visible and not obj.relocate:
                continue
            taken = np.zeros((h, w), bool)
            for i, o in enumerate(objects):
                if o.visible:
                    taken |= masks[i]
            was_absent = not obj.visible
            found = _search(obj, t, img, pyr, grads, *self.search_options, taken, h, w)
            if found is not None:
                masks[j], resids[j] = found
                self.found[j] = was_absent
            elif obj.relocate:  # not found by the search: follow it from where it was, as usual
                obj.relocate = False
                masks[j], resids[j] = _follow(obj, img, pyr, grads, *self.track_options)
        # 3 (overlaps) and commit: each pixel to the claiming object with the smallest residual
        labels = np.zeros((h, w), np.uint8)
        best = np.full((h, w), np.inf, np.float32)
        for j, (mask, resid) in enumerate(zip(masks, resids)):
            win = mask & (resid < best)
            labels[win] = j + 1
            best[win] = resid[win]
        for j, obj in enumerate(objects):
            if obj.visible:
                seen = _seen_points(obj, labels == j + 1)
                obj.update_running(img, seen)
                obj.seen_at = (t, obj.warp.c.copy())
        return labels


def _follow(obj, img, pyr, grads, iterations, ridge, agree_fraction, occlusion_k, min_visible, min_area,
            h, w):
    """Steps 1–4 for a visible object: (mask, resid), or an empty mask with obj made absent."""
    # 1. constant-velocity prediction of the centre; A as it was (extrapolating A too would turn one
    # frame's error in scale into a trend that the ridge then pulls towards)
    pred = obj.warp.copy()
    pred.c = 2 * obj.warp.c - obj.prev_warp.c
    mask, resid, ok = _track(obj, img, pyr, grads, pred, iterations, ridge, agree_fraction, occlusion_k,
                             min_visible, min_area, h, w)
    if ok:
        return mask, resid
    obj.visible = False
    return np.zeros((h, w), bool), np.full((h, w), np.inf, np.float32)


def _seen_points(obj: _Object, mask: np.ndarray) -> np.ndarray:
    """(N_0,) bool: the full-resolution template points whose warped position lies in mask."""
    y0, y1, x0, x1 = obj.box
    iy, ix = np.nonzero(obj.mask0[y0:y1, x0:x1])
    du = np.stack([ix + x0, iy + y0], 1) - obj.centre0
    x = np.rint(obj.warp.apply(du)).astype(np.int64)
    h, w = mask.shape
    ok = (x[:, 0] >= 0) & (x[:, 0] < w) & (x[:, 1] >= 0) & (x[:, 1] < h)
    seen = np.zeros(len(x), bool)
    seen[ok] = mask[x[ok, 1], x[ok, 0]]
    return seen


def _track(obj, img, pyr, grads, start, iterations, ridge, agree_fraction, occlusion_k,
           min_visible, min_area, h, w, tukey=True):
    """Steps 2–4 for one object from the warp ``start``; updates obj's warp. Returns (mask, resid, ok)."""
    # 2. align: the running template first, then frame 0's from that answer (Tukey's weights at the
    # object's reference scale while tracking; Huber's for a placement found by the search, which may
    # be a few pixels off: there every pixel would start as an outlier)
    weights_scale = obj.ref_scale if tukey else None
    w_run, e_run, s_run = align_template(pyr, grads, *obj._points_run, start, iterations=iterations,
                                         ridge=ridge, a_prior=start.a, ref_scale=weights_scale)
    w0, e0, _ = align_template(pyr, grads, *obj._points0, w_run, iterations=iterations, ridge=ridge,
                               a_prior=w_run.a, ref_scale=weights_scale)
    fit_run = np.mean(e_run <= 3 * s_run)
    fit0 = np.mean(e0 <= 3 * s_run)
    use0 = fit0 >= agree_fraction * fit_run
    warp, tmpl = (w0, obj.t0) if use0 else (w_run, obj.trun)
    # 3. segment with the occlusion test, against the residual scale of the object's good fits (a
    # misaligned fit has a large scale of its own, under which everything would pass)
    ref = s_run if obj.ref_scale is None else obj.ref_scale
    amodal, resid = _amodal_and_residual(obj, img, warp, tmpl)
    # decided on the interior (a boundary pixel's residual mixes in the background behind it in both
    # frames), then grown back over the boundary band only (not into an occluded interior)
    interior = amodal & ~near_boundary(amodal.astype(np.uint8), 2)
    core = interior & (resid <= occlusion_k * ref)
    visible = core | (amodal & ~interior & dilate(core, 3))
    # 4. absence test: against the amodal part inside the frame and the frame-0 area scaled by det A
    expected = min(amodal.sum(), obj.area0 * abs(np.linalg.det(warp.a)))
    ok = visible.sum() >= max(min_area, min_visible * expected) and amodal.sum() >= min_area
    # a warp that shrank, grew or sheared far more than an object does between two frames has locked
    # onto something else (e.g. the object moved beyond the pyramid's reach)
    ratio = np.sqrt(abs(np.linalg.det(warp.a)) / max(abs(np.linalg.det(start.a)), 1e-12))
    sv = np.linalg.svd(warp.a, compute_uv=False)
    ok = ok and 0.7 <= ratio <= 1.4 and sv[1] > 0 and sv[0] / sv[1] <= 3.0
    # the shape the search will look for: only from a frame where the whole template lay inside the
    # frame (at the border, the points left outside no longer pin A: an entering or leaving object's
    # fit shrinks towards its visible part) and at least half of it was seen
    w_final = e0 if use0 else e_run
    if ok and np.isfinite(w_final).all() and visible.sum() >= 0.5 * obj.area0 * abs(np.linalg.det(warp.a)):
        obj.good_a = warp.a.copy()
    if ok:
        obj.ref_scale = ref if obj.ref_scale is None else 0.9 * ref + 0.1 * min(s_run, 1.5 * ref)
    obj.prev_warp, obj.warp = obj.warp, warp
    return visible, np.where(visible, resid, np.inf).astype(np.float32), ok


def _search(obj, t, img, pyr, grads, scales, ncc_min, f, iterations, ridge, occlusion_k, min_area,
            reacquire_visible, taken, h, w):
    """Step 5 for one absent object in frame t: (mask, resid), the object made visible; or None."""
    # Both sides smoothed (σ = 1 pixel of the search grid): the warped template is a bilinear
    # resampling, a fraction of a pixel off the frame's grid and shrunk or turned a little; on fine
    # texture that alone halves an exact match's NCC, on smoothed images it costs almost nothing.
    small = gaussian_blur(downsample(img, f), 1.0)
    best = (-np.inf, None, -1.0)
    for s in scales:
        a = obj.good_a * s
        # the template warped by A, sampled on the reduced grid: patch pixel v ↔ source ū + A⁻¹(f·v − off)
        y0, y1, x0, x1 = obj.box
        corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float64) - obj.centre0
        xy = corners @ a.T / f
        lo, hi = np.floor(xy.min(0)).astype(int) - 1, np.ceil(xy.max(0)).astype(int) + 1
        if np.any(hi - lo < 3) or np.any(hi - lo > 4 * max(small.shape[:2])):
            continue
        vy, vx = np.mgrid[lo[1]:hi[1] + 1, lo[0]:hi[0] + 1].astype(np.float64)
        try:
            src = (np.stack([vx.ravel(), vy.ravel()], 1) * f) @ np.linalg.inv(a).T + obj.centre0
        except np.linalg.LinAlgError:
            continue
        m, valid = _sample(obj.mask0[..., None].astype(np.float32), src[:, 0], src[:, 1])
        tm = ((m[:, 0] > 0.5) & valid).reshape(vy.shape)
        if tm.sum() < 6:
            continue
        tv, _ = _sample(obj.t0, src[:, 0], src[:, 1])
        patch = gaussian_blur(tv.reshape(vy.shape + (-1,)), 1.0)
        ncc, (oy, ox) = masked_ncc(small, patch, tm)
        iy, ix = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
        # a rescaled template must beat the last good shape clearly: on a partly visible object
        # (entering at the border) a shrunk template fits the visible part about as well
        score = float(ncc[iy, ix]) - (0.0 if s == 1 else SCALE_MARGIN)
        if score > best[0]:
            # placement's top-left at reduced pixel (iy − oy, ix − ox) holds patch v = lo: the centre
            # (v = 0) sits at reduced (iy − oy − lo_y, ix − ox − lo_x), in full resolution × f
            centre = (np.array([ix - ox - lo[0], iy - oy - lo[1]], np.float64)) * f + (f - 1) / 2
            best = (score, _Warp(a, centre, obj.warp.g, obj.warp.b), float(ncc[iy, ix]))
    _, start, ncc_best = best
    if start is None or ncc_best < ncc_min:
        return None
    saved = (obj.warp.copy(), obj.prev_warp.copy())
    obj.warp = obj.prev_warp = start
    mask, resid, ok = _track(obj, img, pyr, grads, start, iterations, 8.0 * ridge, 0.0, occlusion_k,
                             reacquire_visible, min_area, h, w, tukey=False)
    if not ok or (mask & taken).sum() > 0.5 * mask.sum():
        obj.warp, obj.prev_warp = saved
        return None
    obj.visible = True
    # velocity across a short gap (an object too fast for the alignment is lost and found frame after
    # frame: it keeps its speed); none across a long one
    t_seen, c_seen = obj.seen_at
    obj.prev_warp = obj.warp.copy()
    obj.relocate = t - t_seen > 3
    if not obj.relocate:
        obj.prev_warp.c = obj.warp.c - (obj.warp.c - c_seen) / (t - t_seen)
    return mask, resid
