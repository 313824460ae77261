"""Run-length encoded (RLE) masks with exactly the semantics of pycocotools' mask API.

The COCO format stores an instance mask of an image of height ``h`` and width ``w`` as a dict
``{"size": [h, w], "counts": ...}``:

- The mask is read in **column-major** (Fortran) order: pixel ``(y, x)`` is number ``x * h + y``.
- ``counts`` lists the lengths of alternating runs, **starting with a run of zeros** (which has
  length 0 when pixel (0, 0) is set). Worked example, the 2x3 mask

      [[0, 1, 1],        column-major pixels: 0 0 | 1 1 | 1 0   (column 0, 1, 2)
       [0, 1, 0]]        runs: two 0s, three 1s, one 0  ->  counts [2, 3, 1]

- The *compressed* counts string (what COCO JSON files hold): for run ``i > 2`` the difference
  ``counts[i] - counts[i - 2]`` is written instead of the run itself (neighbouring runs of the same
  value have similar lengths, so the differences are small); each number is cut into 5-bit groups,
  least significant first, a group gets bit 0x20 when more groups follow (the last group's bit 0x10
  carries the sign), and each group + 48 is one ASCII character. ``[2, 3, 1]`` becomes ``"231"``.

The *canonical* RLE of a mask has no zero-length run except possibly the first; every function here
returns canonical RLEs (pycocotools does too), so RLE strings can be compared with ``==``.

Public API (all ``rle`` arguments accept compressed ``str``/``bytes`` counts or uncompressed ``list``
counts): :func:`mask_to_rle`, :func:`rle_to_mask`, :func:`rle_area`, :func:`rle_to_bbox`,
:func:`rle_iou`, :func:`bbox_iou_coco`, :func:`polygons_to_rle`, :func:`merge`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "mask_to_rle", "rle_to_mask", "rle_area", "rle_to_bbox", "rle_iou", "bbox_iou_coco",
    "polygons_to_rle", "merge",
]

# Polygon vertices are snapped to a grid 5x finer than the pixel grid before the boundary is traced
# (pycocotools' rleFrPoly); the y-crossings of the boundary are then read back on pixel centres.
_POLY_UPSAMPLE = 5.0
# Coordinates beyond this are refused: the C rasteriser works in 32-bit ints on 5x the coordinates.
_MAX_POLY_COORD = 1e8
# The boundary is traced one point per 1/5 pixel; refuse polygons whose trace would exhaust memory.
_MAX_POLY_TRACE = 50_000_000


# ----------------------------------------------------------------------------------------------------
# Compressed counts string <-> run lengths (pycocotools rleToString / rleFrString)
# ----------------------------------------------------------------------------------------------------
@njit(cache=True)
def _counts_to_bytes(counts):
    """Run lengths (int64) -> compressed counts as uint8 ASCII codes."""
    out = np.empty(counts.shape[0] * 7 + 1, dtype=np.uint8)  # int64 deltas of uint32 runs need <= 7 groups
    p = 0
    for i in range(counts.shape[0]):
        x = counts[i]
        if i > 2:  # 1. from the fourth run on, store the change against the run of the same value
            x -= counts[i - 2]
        more = True
        while more:  # 2. 5 bits per character, least significant first; 0x20 = "more follow"
            c = x & 0x1F
            x >>= 5  # arithmetic shift: negative deltas end at x == -1
            if c & 0x10:
                more = x != -1
            else:
                more = x != 0
            if more:
                c |= 0x20
            out[p] = c + 48
            p += 1
    return out[:p]


@njit(cache=True)
def _bytes_to_counts(s):
    """Compressed counts (uint8 ASCII codes) -> int64 run lengths; returns (counts, error_position).

    error_position is -1 on success, else the index of the first byte that is not a valid code.
    """
    counts = np.empty(s.shape[0], dtype=np.int64)
    m = 0
    p = 0
    n = s.shape[0]
    while p < n:
        x = np.int64(0)
        k = 0
        more = True
        while more:
            if p >= n:  # the string ended inside a number (last character had 0x20 set)
                return counts[:0], p
            c = np.int64(s[p]) - 48
            if c < 0 or c > 63:
                return counts[:0], p
            x |= (c & 0x1F) << (5 * k)
            more = (c & 0x20) != 0
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= np.int64(-1) << (5 * k)  # sign-extend a negative delta
        if m > 2:
            x += counts[m - 2]
        counts[m] = x
        m += 1
    return counts[:m], -1


def _encode_counts(counts: np.ndarray) -> str:
    return _counts_to_bytes(np.ascontiguousarray(counts, dtype=np.int64)).tobytes().decode("ascii")


def _decode_counts(s) -> np.ndarray:
    raw = s.encode("ascii") if isinstance(s, str) else bytes(s)
    counts, err = _bytes_to_counts(np.frombuffer(raw, dtype=np.uint8))
    if err >= 0:
        raise ValueError(f"rle counts: invalid compressed counts string at character {err}")
    return counts


def _parse_rle(rle, name: str = "rle") -> tuple[int, int, np.ndarray]:
    """Validate an RLE dict and return ``(h, w, counts)`` with counts as int64 run lengths."""
    if not isinstance(rle, dict):
        raise TypeError(f"{name} must be a dict with keys 'size' and 'counts', got {type(rle).__name__}")
    for key in ("size", "counts"):
        if key not in rle:
            raise ValueError(f"{name} is missing the key {key!r}")
    size = rle["size"]
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"{name}['size'] must be [height, width], got {size!r}") from None
    if h < 0 or w < 0:
        raise ValueError(f"{name}['size'] must be non-negative, got {list(size)}")
    raw = rle["counts"]
    if isinstance(raw, (str, bytes, bytearray)):
        counts = _decode_counts(raw)
    else:
        counts = np.asarray(raw)
        if counts.ndim != 1 or (counts.size and counts.dtype.kind not in "iu"):
            raise ValueError(f"{name}['counts'] must be a string or a 1-D list of ints, got {raw!r:.80}")
        counts = counts.astype(np.int64)
    if counts.size and counts.min() < 0:
        raise ValueError(f"{name}['counts'] holds a negative run length")
    if int(counts.sum()) != h * w:
        raise ValueError(f"{name}['counts'] runs add up to {int(counts.sum())} pixels but size {h}x{w} "
                         f"has {h * w}")
    return h, w, counts


def _canonical(counts: np.ndarray) -> np.ndarray:
    """Drop zero-length runs after the first, merging their neighbours (same mask, unique encoding)."""
    if counts.size <= 1 or np.all(counts[1:] > 0):
        return counts
    values = (np.arange(counts.size) % 2).astype(bool)
    keep = counts > 0
    keep[0] = True
    counts, values = counts[keep], values[keep]
    # after dropping empty runs, neighbours with the same value are one run
    start = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    merged = np.add.reduceat(counts, start)
    if values[0]:  # the first surviving run is a ones run: restore the leading zeros run of length 0
        merged = np.r_[0, merged]
    return merged.astype(np.int64)


def _runs_from_flat(flat: np.ndarray) -> np.ndarray:
    """Canonical run lengths of a 1-D bool array (zeros run first)."""
    n = flat.size
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [n]))
    runs = np.diff(bounds).astype(np.int64)
    if flat[0]:
        runs = np.concatenate(([0], runs))
    return runs


def _make_rle(h: int, w: int, counts: np.ndarray) -> dict:
    return {"size": [int(h), int(w)], "counts": _encode_counts(counts)}


# ----------------------------------------------------------------------------------------------------
# Mask <-> RLE, area, bounding box
# ----------------------------------------------------------------------------------------------------
def mask_to_rle(mask: np.ndarray) -> dict:
    """Encode a binary mask as a COCO RLE with compressed counts (pycocotools ``mask.encode``).

    mask: (H, W) bool (or 0/1 integers). Returns ``{"size": [H, W], "counts": str}``; the string is
    byte-identical to ``pycocotools.mask.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"]``.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    if mask.dtype != bool:
        if mask.dtype.kind not in "iu" or (mask.size and (mask.min() < 0 or mask.max() > 1)):
            raise TypeError(f"mask must be bool or hold only 0/1 integers, got dtype {mask.dtype}")
        mask = mask.astype(bool)
    h, w = mask.shape
    return _make_rle(h, w, _runs_from_flat(mask.ravel(order="F")))


def rle_to_mask(rle: dict) -> np.ndarray:
    """Decode a COCO RLE (compressed or uncompressed counts) into an (H, W) bool mask."""
    h, w, counts = _parse_rle(rle)
    values = (np.arange(counts.size) % 2).astype(bool)  # runs alternate 0, 1, 0, ...
    flat = np.repeat(values, counts)
    return flat.reshape((w, h)).T.copy()  # column-major pixels -> (H, W), C-contiguous


def rle_area(rle):
    """Number of foreground pixels: the sum of the odd-numbered runs (pycocotools ``mask.area``).

    rle: one RLE dict -> int, or a list of them -> (N,) int64 array.
    """
    if isinstance(rle, (list, tuple)):
        return np.array([rle_area(r) for r in rle], dtype=np.int64)
    _, _, counts = _parse_rle(rle)
    return int(counts[1::2].sum())


def _bbox_from_counts(h: int, w: int, counts: np.ndarray) -> np.ndarray:
    """Tight [x, y, width, height] of the foreground (pycocotools rleToBbox); zeros when empty."""
    ends = np.cumsum(counts)
    starts = ends - counts
    fg = (np.arange(counts.size) % 2 == 1) & (counts > 0)
    if not fg.any() or h == 0:
        return np.zeros(4)
    s, e = starts[fg], ends[fg] - 1  # first and last pixel index of every foreground run
    xs, xe = s // h, e // h
    x0, x1 = xs.min(), xe.max()
    if np.any(xs < xe):  # a run that wraps into the next column covers the bottom and top rows
        y0, y1 = 0, h - 1
    else:
        y0, y1 = (s % h).min(), (e % h).max()
    return np.array([x0, y0, x1 - x0 + 1, y1 - y0 + 1], dtype=np.float64)


def rle_to_bbox(rle):
    """Tight box ``[x, y, width, height]`` (float64) of the mask (pycocotools ``mask.toBbox``).

    The box covers whole pixels: a single set pixel at (y=2, x=3) gives [3, 2, 1, 1]. An empty mask
    gives [0, 0, 0, 0]. rle: one RLE dict -> (4,), or a list -> (N, 4).
    """
    if isinstance(rle, (list, tuple)):
        return np.stack([rle_to_bbox(r) for r in rle]) if len(rle) else np.zeros((0, 4))
    return _bbox_from_counts(*_parse_rle(rle))


# ----------------------------------------------------------------------------------------------------
# IoU between RLEs and between boxes
# ----------------------------------------------------------------------------------------------------
@njit(cache=True)
def _rle_iou_kernel(dt_counts, dt_offsets, gt_counts, gt_offsets, iscrowd):
    """IoU of every (detection, ground truth) pair, walking both run lists at once.

    dt_counts / gt_counts: all run lengths concatenated; RLE i owns counts[offsets[i]:offsets[i + 1]].
    A crowd GT region is "don't care": IoU = intersection / area(detection).
    """
    D = dt_offsets.shape[0] - 1
    G = gt_offsets.shape[0] - 1
    out = np.zeros((D, G))
    for d in range(D):
        a0, a1 = dt_offsets[d], dt_offsets[d + 1]
        area_d = 0
        for j in range(a0 + 1, a1, 2):
            area_d += dt_counts[j]
        for g in range(G):
            b0, b1 = gt_offsets[g], gt_offsets[g + 1]
            # 1. walk the runs of both masks; ca / cb = pixels left in the current runs
            a, b = a0, b0
            ca, cb = dt_counts[a], gt_counts[b]
            va, vb = False, False
            inter, union = 0, 0
            while True:
                c = min(ca, cb)
                if va or vb:
                    union += c
                    if va and vb:
                        inter += c
                ca -= c
                cb -= c
                # 2. a run is used up: move to the next one, which holds the other value
                while ca == 0 and a + 1 < a1:
                    a += 1
                    ca = dt_counts[a]
                    va = not va
                while cb == 0 and b + 1 < b1:
                    b += 1
                    cb = gt_counts[b]
                    vb = not vb
                if ca == 0 and cb == 0:
                    break
            # 3. pycocotools: no overlap -> 0; crowd -> intersection over the detection's area
            if inter > 0:
                out[d, g] = inter / (area_d if iscrowd[g] else union)
    return out


def _stack_counts(rles, name):
    if isinstance(rles, dict) or not isinstance(rles, (list, tuple)):
        raise TypeError(f"{name} must be a list of RLE dicts, got {type(rles).__name__}")
    parsed = [_parse_rle(r, f"{name}[{i}]") for i, r in enumerate(rles)]
    sizes = [(h, w) for h, w, _ in parsed]
    offsets = np.zeros(len(parsed) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([c.size for _, _, c in parsed])
    flat = np.concatenate([c for _, _, c in parsed]) if parsed else np.zeros(0, np.int64)
    return sizes, flat, offsets


def _check_iscrowd(iscrowd, n: int) -> np.ndarray:
    if iscrowd is None:
        return np.zeros(n, dtype=bool)
    arr = np.asarray(iscrowd)
    if arr.shape != (n,):
        raise ValueError(f"iscrowd must have one flag per ground truth ({n}), got shape {arr.shape}")
    return arr.astype(bool)


def rle_iou(dt, gt, iscrowd=None) -> np.ndarray:
    """Mask IoU of every detection against every ground truth (pycocotools ``mask.iou`` on RLEs).

    dt: list of D RLE dicts; gt: list of G RLE dicts, all of the same size; iscrowd: (G,) flags
    (None = no crowd). Returns (D, G) float64 with IoU = |d ∩ g| / |d ∪ g|, or |d ∩ g| / |d| for a
    crowd g (a crowd region may cover many objects, so a detection inside it is not penalised for
    the rest of the region). Disjoint pairs (and empty masks) give 0.
    """
    dt_sizes, dt_flat, dt_off = _stack_counts(dt, "dt")
    gt_sizes, gt_flat, gt_off = _stack_counts(gt, "gt")
    crowd = _check_iscrowd(iscrowd, len(gt_sizes))
    all_sizes = set(dt_sizes) | set(gt_sizes)
    if len(all_sizes) > 1:
        raise ValueError(f"rle_iou: all RLEs must have the same size, got {sorted(all_sizes)}")
    if not dt_sizes or not gt_sizes:
        return np.zeros((len(dt_sizes), len(gt_sizes)))
    return _rle_iou_kernel(dt_flat, dt_off, gt_flat, gt_off, crowd)


def bbox_iou_coco(dt_xywh, gt_xywh, iscrowd=None) -> np.ndarray:
    """Box IoU as COCO computes it (pycocotools ``mask.iou`` on boxes), boxes as [x, y, width, height].

    dt_xywh: (D, 4); gt_xywh: (G, 4); iscrowd: (G,) flags. Returns (D, G) float64. The arithmetic
    follows pycocotools operation by operation (overlap width = min(x+w) - max(x), union =
    area_d + area_g - inter; crowd: union = area_d) so that values equal it bit for bit, which
    matters when an IoU lands exactly on a threshold.
    """
    d = np.asarray(dt_xywh, dtype=np.float64).reshape(-1, 4)
    g = np.asarray(gt_xywh, dtype=np.float64).reshape(-1, 4)
    crowd = _check_iscrowd(iscrowd, g.shape[0])
    for name, b in (("dt_xywh", d), ("gt_xywh", g)):
        if not np.all(np.isfinite(b)):
            raise ValueError(f"{name} must be finite, found NaN or inf")
    D, G = d.shape[0], g.shape[0]
    if D == 0 or G == 0:
        return np.zeros((D, G))
    dx, dy, dw, dh = (d[:, i : i + 1] for i in range(4))
    gx, gy, gw, gh = (g[None, :, i] for i in range(4))
    w = np.minimum(dw + dx, gw + gx) - np.maximum(dx, gx)
    h = np.minimum(dh + dy, gh + gy) - np.maximum(dy, gy)
    inter = w * h
    area_d, area_g = dw * dh, gw * gh
    union = np.where(crowd[None, :], area_d, (area_d + area_g) - inter)
    out = np.zeros((D, G))
    ok = (w > 0) & (h > 0)
    np.divide(inter, union, out=out, where=ok)
    return out


# ----------------------------------------------------------------------------------------------------
# Polygons -> RLE (pycocotools frPoly), merging
# ----------------------------------------------------------------------------------------------------
@njit(cache=True)
def _poly_counts(xy, h, w):
    """Rasterise one closed polygon exactly as pycocotools' rleFrPoly; returns run lengths.

    xy: (2k,) float64 interleaved x0, y0, x1, y1, ... in pixel units: pixel (x, y) covers
    [x, x + 1) x [y, y + 1), its centre is (x + 0.5, y + 0.5).
    """
    scale = 5.0
    k = xy.shape[0] // 2
    # 1. snap the vertices to a 5x finer integer grid (C casts truncate toward zero)
    x = np.empty(k + 1, dtype=np.int64)
    y = np.empty(k + 1, dtype=np.int64)
    for j in range(k):
        x[j] = int(scale * xy[2 * j] + 0.5)
        y[j] = int(scale * xy[2 * j + 1] + 0.5)
    x[k] = x[0]
    y[k] = y[0]
    # 2. trace every edge densely: one point per step along its major axis (a DDA line)
    n = 0
    for j in range(k):
        n += max(abs(x[j] - x[j + 1]), abs(y[j] - y[j + 1])) + 1
    u = np.empty(n, dtype=np.int64)
    v = np.empty(n, dtype=np.int64)
    m = 0
    for j in range(k):
        xs, xe, ys, ye = x[j], x[j + 1], y[j], y[j + 1]
        dx, dy = abs(xe - xs), abs(ys - ye)
        # walk each edge from its lower end on the major axis so that rounding is symmetric,
        # but store the points in the polygon's own order
        flip = (dx >= dy and xs > xe) or (dx < dy and ys > ye)
        if flip:
            xs, xe = xe, xs
            ys, ye = ye, ys
        if dx >= dy:
            s = (ye - ys) / dx if dx > 0 else 0.0  # dx == dy == 0: a repeated vertex, one point
            for d in range(dx + 1):
                t = dx - d if flip else d
                u[m] = t + xs
                v[m] = int(ys + s * t + 0.5)
                m += 1
        else:
            s = (xe - xs) / dy
            for d in range(dy + 1):
                t = dy - d if flip else d
                v[m] = t + ys
                u[m] = int(xs + s * t + 0.5)
                m += 1
    # 3. where the boundary crosses a pixel-centre column, record the first pixel below it
    px = np.empty(m, dtype=np.int64)
    py = np.empty(m, dtype=np.int64)
    q = 0
    for j in range(1, m):
        if u[j] == u[j - 1]:
            continue
        xd = float(u[j] if u[j] < u[j - 1] else u[j] - 1)
        xd = (xd + 0.5) / scale - 0.5
        if np.floor(xd) != xd or xd < 0 or xd > w - 1:
            continue
        yd = float(v[j] if v[j] < v[j - 1] else v[j - 1])
        yd = (yd + 0.5) / scale - 0.5
        if yd < 0:
            yd = 0.0
        elif yd > h:
            yd = float(h)
        yd = np.ceil(yd)
        px[q] = int(xd)
        py[q] = int(yd)
        q += 1
    # 4. each crossing toggles inside/outside: sorted column-major positions are the run boundaries
    a = np.empty(q + 1, dtype=np.int64)
    for j in range(q):
        a[j] = px[j] * h + py[j]
    a[q] = h * w
    a = np.sort(a)
    prev = 0
    for j in range(q + 1):
        t = a[j]
        a[j] = t - prev
        prev = t
    # 5. two crossings at one position cancel: drop the empty run and join its neighbours
    b = np.empty(q + 1, dtype=np.int64)
    mb = 0
    b[mb] = a[0]
    mb += 1
    j = 1
    while j < q + 1:
        if a[j] > 0:
            b[mb] = a[j]
            mb += 1
            j += 1
        else:
            j += 1
            if j < q + 1:
                b[mb - 1] += a[j]
                j += 1
    return b[:mb]


def _check_polygon(p, i: int, h: int, w: int) -> np.ndarray:
    xy = np.asarray(p, dtype=np.float64)
    if xy.ndim != 1:
        raise ValueError(f"polygons[{i}] must be a flat list [x0, y0, x1, y1, ...], got shape {xy.shape}")
    if xy.size % 2 or xy.size < 6:
        raise ValueError(f"polygons[{i}] must hold an even number (>= 6) of coordinates, got {xy.size}"
                         " (pycocotools would read 4 numbers as a box [x, y, w, h])")
    if not np.all(np.isfinite(xy)) or np.abs(xy).max() > _MAX_POLY_COORD:
        raise ValueError(f"polygons[{i}] coordinates must be finite and within +-{_MAX_POLY_COORD:g}")
    snapped = np.trunc(_POLY_UPSAMPLE * xy + 0.5).reshape(-1, 2)
    steps = np.abs(snapped - np.roll(snapped, -1, axis=0)).max(axis=1) + 1
    if steps.sum() > _MAX_POLY_TRACE:
        raise ValueError(f"polygons[{i}] is too long to rasterise ({steps.sum():.0f} boundary points); "
                         f"its coordinates lie far outside the {h}x{w} image")
    return xy


def polygons_to_rle(polygons, h: int, w: int) -> dict:
    """Rasterise the union of polygons into an RLE, exactly as ``merge(frPyObjects(polygons, h, w))``.

    polygons: list of flat lists ``[x0, y0, x1, y1, ...]`` (COCO "segmentation" polygons) in
    continuous pixel coordinates: pixel (x, y) covers [x, x + 1) x [y, y + 1), centre (x + .5, y + .5);
    h, w: image size. pycocotools' rule, which this reproduces: vertices are rounded to 1/5 pixel,
    the closed boundary is traced, and a pixel is inside when the vertical line through its centre
    crosses the boundary an odd number of times above the centre (even-odd rule, so a polygon's
    self-overlaps are holes). Parts are united (not XOR-ed), as ``merge`` does. Example: the square
    [[1, 1, 3, 1, 3, 3, 1, 3]] covers exactly the 4 pixels with x, y in {1, 2}.
    """
    h, w = int(h), int(w)
    if h < 1 or w < 1:
        raise ValueError(f"polygons_to_rle: h and w must be >= 1, got h={h}, w={w}")
    if not isinstance(polygons, (list, tuple)) or len(polygons) == 0:
        raise ValueError("polygons must be a non-empty list of flat coordinate lists")
    parts = [_poly_counts(_check_polygon(p, i, h, w), h, w) for i, p in enumerate(polygons)]
    if len(parts) == 1:
        return _make_rle(h, w, parts[0])
    return _merge_counts(h, w, parts, intersect=False)


def _merge_counts(h, w, parts, intersect):
    masks = [np.repeat((np.arange(c.size) % 2).astype(bool), c) for c in parts]
    out = masks[0].copy()
    for m in masks[1:]:
        if intersect:
            out &= m
        else:
            out |= m
    return _make_rle(h, w, _runs_from_flat(out))


def merge(rles, intersect: bool = False) -> dict:
    """Union (or intersection) of RLEs of one size, as pycocotools ``mask.merge``.

    Returns a canonical RLE with compressed counts (a single input with zero-length runs in the
    middle, which pycocotools would copy as is, comes back canonical: the same mask).
    """
    rles = list(rles)
    if not rles:
        raise ValueError("merge needs at least one RLE")
    parsed = [_parse_rle(r, f"rles[{i}]") for i, r in enumerate(rles)]
    sizes = {(h, w) for h, w, _ in parsed}
    if len(sizes) > 1:
        raise ValueError(f"merge: all RLEs must have the same size, got {sorted(sizes)}")
    h, w = parsed[0][0], parsed[0][1]
    if len(parsed) == 1:
        return _make_rle(h, w, _canonical(parsed[0][2]))
    return _merge_counts(h, w, [c for _, _, c in parsed], intersect)
