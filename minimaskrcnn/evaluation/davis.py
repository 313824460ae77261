"""The DAVIS semi-supervised measures: region similarity J, boundary accuracy F, and their statistics.

Definitions follow the official DAVIS 2017 evaluation (``davis2017-evaluation``), written out plainly:

* **J** (region similarity) of a predicted mask S against the ground truth G is the Jaccard index
  |S ∩ G| / |S ∪ G|, and 1 when both are empty (nothing to find, nothing found).
* **F** (boundary accuracy) compares the one-pixel boundaries of S and G (``seg2bmap``) with a tolerance:
  a boundary pixel of S counts as correct when a boundary pixel of G lies within the disk of radius
  r = ceil(bound_th · sqrt(H² + W²)) around it (precision), and vice versa (recall);
  F = 2PR / (P + R).
* Per object, the per-frame values over all frames **except the first and the last** give three
  statistics (``db_statistics``): the mean, the recall (fraction of frames above 0.5) and the decay
  (mean of the first quarter of the frames minus the mean of the last quarter).
* The benchmark J&F is (mean J + mean F) / 2 where both means run over every object of every clip.

Two deliberate differences from the official code: the quarter-bin edges are kept as int64 (the
official code casts them to uint8, which wraps past 256 frames), and there is no "void" label (the
synthetic benchmark has none).

Masks are (H, W) arrays (bool or 0/1); ID maps are (T, H, W) integer arrays with 0 = background and
1..K the objects, as in the DAVIS ``Annotations/`` PNGs.
"""

from __future__ import annotations

import math
import os
import tempfile

import numpy as np

__all__ = [
    "jaccard",
    "seg2bmap",
    "disk",
    "binary_dilation",
    "boundary_radius",
    "f_measure",
    "db_statistics",
    "evaluate_clip",
    "evaluate_benchmark",
    "GLOBAL_COLUMNS",
    "SEQUENCE_COLUMNS",
    "official_tables",
    "write_official_csv",
]


def _as_mask(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) mask, got shape {x.shape}")
    if x.dtype != bool:
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
            raise TypeError(f"{name} must be a bool or numeric mask, got dtype {x.dtype}")
        x = x != 0
    return x


def _check_pair(gt, pred) -> tuple[np.ndarray, np.ndarray]:
    gt = _as_mask(gt, "gt")
    pred = _as_mask(pred, "pred")
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred must have the same shape, got {gt.shape} and {pred.shape}")
    return gt, pred


def jaccard(gt, pred) -> float:
    """Region similarity J = |pred ∩ gt| / |pred ∪ gt| of two (H, W) masks; 1.0 when the union is empty."""
    gt, pred = _check_pair(gt, pred)
    union = np.count_nonzero(gt | pred)
    if union == 0:
        return 1.0
    return np.count_nonzero(gt & pred) / union


def seg2bmap(mask) -> np.ndarray:
    """One-pixel boundary map of an (H, W) mask, as the DAVIS ``seg2bmap``.

    A pixel is a boundary pixel when it differs from its east, south or south-east neighbour (a
    neighbour outside the image counts as 0). The last row compares with the east neighbour only, the
    last column with the south neighbour only, and the bottom-right pixel is never a boundary. The
    boundary therefore sits half a pixel towards the origin: a filled square occupying rows and
    columns a..b has the ring of the square a−1..b as its boundary (worked out in the tests).
    """
    s = _as_mask(mask, "mask")
    e = np.zeros_like(s)
    so = np.zeros_like(s)
    se = np.zeros_like(s)
    e[:, :-1] = s[:, 1:]
    so[:-1, :] = s[1:, :]
    se[:-1, :-1] = s[1:, 1:]
    b = (s ^ e) | (s ^ so) | (s ^ se)
    b[-1, :] = s[-1, :] ^ e[-1, :]
    b[:, -1] = s[:, -1] ^ so[:, -1]
    b[-1, -1] = False
    return b


def disk(radius: int) -> np.ndarray:
    """The (2r+1, 2r+1) structuring element {(dy, dx): dy² + dx² ≤ r²}."""
    radius = int(radius)
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    d = np.arange(-radius, radius + 1)
    return (d[:, None] ** 2 + d[None, :] ** 2) <= radius * radius


def binary_dilation(bmap: np.ndarray, radius: int) -> np.ndarray:
    """Dilate an (H, W) bool map with ``disk(radius)``; pixels outside the image are ignored.

    out[y, x] is True when some True pixel of ``bmap`` lies at (y + dy, x + dx) with dy² + dx² ≤ r²
    (the disk is symmetric, so dilation and "is there a neighbour" coincide).
    """
    bmap = np.asarray(bmap, dtype=bool)
    h, w = bmap.shape
    out = bmap.copy()
    r = int(radius)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy * dy + dx * dx > r * r or (dy == 0 and dx == 0):
                continue
            # out[y, x] |= bmap[y + dy, x + dx] wherever both are inside the image.
            ys, ye = max(0, -dy), min(h, h - dy)
            xs, xe = max(0, -dx), min(w, w - dx)
            if ys < ye and xs < xe:
                out[ys:ye, xs:xe] |= bmap[ys + dy : ye + dy, xs + dx : xe + dx]
    return out


def boundary_radius(shape: tuple[int, int], bound_th: float = 0.008) -> int:
    """Tolerance radius in pixels: bound_th itself when ≥ 1, else ceil(bound_th · sqrt(H² + W²)).

    Example: a 128×128 frame gives ceil(0.008 · 181.02) = ceil(1.448) = 2 pixels; 480×854 (DAVIS 480p)
    gives ceil(0.008 · 979.6) = 8.
    """
    if not (isinstance(bound_th, (int, float, np.integer, np.floating)) and bound_th > 0):
        raise ValueError(f"bound_th must be a positive number, got {bound_th!r}")
    if bound_th >= 1:
        if float(bound_th) != int(bound_th):
            raise ValueError(f"bound_th >= 1 is a radius in pixels and must be whole, got {bound_th}")
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def f_measure(gt, pred, bound_th: float = 0.008) -> float:
    """Boundary F-measure of the (H, W) prediction ``pred`` against the ground truth ``gt``.

    1. Boundaries B_S = seg2bmap(pred), B_G = seg2bmap(gt).
    2. Tolerance r = ``boundary_radius((H, W), bound_th)``; dilate both with ``disk(r)``.
    3. precision P = |B_S ∩ dil(B_G)| / |B_S|, recall R = |B_G ∩ dil(B_S)| / |B_G|; with the DAVIS
       conventions for empty boundaries: both empty → P = R = 1; only B_S empty → P = 1, R = 0; only
       B_G empty → P = 0, R = 1.
    4. F = 2PR / (P + R), and 0 when P + R = 0.
    """
    gt, pred = _check_pair(gt, pred)
    r = boundary_radius(gt.shape, bound_th)
    b_pred = seg2bmap(pred)
    b_gt = seg2bmap(gt)
    n_pred = np.count_nonzero(b_pred)
    n_gt = np.count_nonzero(b_gt)
    if n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    elif n_pred == 0:
        precision, recall = 1.0, 0.0
    elif n_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        precision = np.count_nonzero(b_pred & binary_dilation(b_gt, r)) / n_pred
        recall = np.count_nonzero(b_gt & binary_dilation(b_pred, r)) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def db_statistics(values) -> tuple[float, float, float]:
    """(mean, recall, decay) of one object's per-frame J or F values (1-D, any length ≥ 1).

    * mean: NaN-ignoring mean of the values.
    * recall: fraction of the values strictly above 0.5.
    * decay: four overlapping quarter bins with edges ids = round(linspace(1, n, 5) + 1e-10) − 1 (the
      1e-10 makes halves round up, as the official code does), bin i = values[ids[i] : ids[i+1] + 1]
      (both edges included); decay = mean(bin 0) − mean(bin 3). Example, n = 9: linspace gives
      1, 3, 5, 7, 9 → ids 0, 2, 4, 6, 8 → bins [0..2], [2..4], [4..6], [6..8]. The edges stay int64,
      so clips longer than 256 frames are binned correctly.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"values must be a non-empty 1-D array, got shape {v.shape}")
    mean = float(np.nanmean(v)) if not np.all(np.isnan(v)) else float("nan")
    recall = float(np.mean(v > 0.5))
    ids = (np.round(np.linspace(1, v.size, 5) + 1e-10) - 1).astype(np.int64)
    first = v[ids[0] : ids[1] + 1]
    last = v[ids[3] : ids[4] + 1]
    with np.errstate(invalid="ignore"):
        if np.all(np.isnan(first)) or np.all(np.isnan(last)):
            decay = float("nan")
        else:
            decay = float(np.nanmean(first) - np.nanmean(last))
    return mean, recall, decay


def _check_id_maps(gt_ids, pred_ids) -> tuple[np.ndarray, np.ndarray]:
    gt_ids = np.asarray(gt_ids)
    pred_ids = np.asarray(pred_ids)
    for name, a in (("gt_ids", gt_ids), ("pred_ids", pred_ids)):
        if a.ndim != 3:
            raise ValueError(f"{name} must be a (T, H, W) ID map, got shape {a.shape}")
        if not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"{name} must hold integer object IDs, got dtype {a.dtype}")
        if a.size and a.min() < 0:
            raise ValueError(f"{name} must hold IDs >= 0 (0 = background)")
    if gt_ids.shape != pred_ids.shape:
        raise ValueError(f"gt_ids and pred_ids must have the same shape, got {gt_ids.shape} and "
                         f"{pred_ids.shape}")
    if gt_ids.shape[0] < 3:
        raise ValueError(f"a clip needs at least 3 frames (the first and last are not evaluated), "
                         f"got {gt_ids.shape[0]}")
    return gt_ids, pred_ids


def evaluate_clip(gt_ids, pred_ids, bound_th: float = 0.008) -> dict:
    """J and F of every object of one clip.

    Inputs:
        gt_ids: (T, H, W) int ground-truth ID map; the objects are 1..K with K = max ID of frame 0
            (as DAVIS, where the first frame's annotation defines the objects).
        pred_ids: (T, H, W) int predicted ID map; an ID above K is an error (the official evaluation
            refuses it too).
    Returns a dict:
        "num_objects": K,
        "J", "F": (K, T − 2) float64 per-frame values over frames 1..T−2,
        "objects": list of K dicts {"J": {"mean", "recall", "decay"}, "F": {...}}.
    """
    gt_ids, pred_ids = _check_id_maps(gt_ids, pred_ids)
    k = int(gt_ids[0].max())
    if k == 0:
        raise ValueError("gt_ids has no object in its first frame")
    if int(pred_ids.max()) > k:
        raise ValueError(f"pred_ids holds ID {int(pred_ids.max())} but the clip has only {k} objects")
    frames = range(1, gt_ids.shape[0] - 1)
    j = np.zeros((k, len(frames)))
    f = np.zeros((k, len(frames)))
    for obj in range(1, k + 1):
        for col, t in enumerate(frames):
            g = gt_ids[t] == obj
            p = pred_ids[t] == obj
            j[obj - 1, col] = jaccard(g, p)
            f[obj - 1, col] = f_measure(g, p, bound_th)
    objects = []
    for obj in range(k):
        entry = {}
        for key, vals in (("J", j[obj]), ("F", f[obj])):
            m, r, d = db_statistics(vals)
            entry[key] = {"mean": m, "recall": r, "decay": d}
        objects.append(entry)
    return {"num_objects": k, "J": j, "F": f, "objects": objects}


def evaluate_benchmark(clip_results: list[dict]) -> dict:
    """Average ``evaluate_clip`` results over every object of every clip (the DAVIS convention).

    Returns {"J&F": float, "J": {"mean", "recall", "decay"}, "F": {...}, "num_objects": int}, where
    each statistic is the mean over objects and J&F = (J mean + F mean) / 2.
    """
    objects = [o for res in clip_results for o in res["objects"]]
    if not objects:
        raise ValueError("clip_results holds no object")
    out: dict = {"num_objects": len(objects)}
    for key in ("J", "F"):
        out[key] = {s: float(np.mean([o[key][s] for o in objects])) for s in ("mean", "recall", "decay")}
    out["J&F"] = (out["J"]["mean"] + out["F"]["mean"]) / 2.0
    return out


# The CSV files of the official evaluation (davis2017-evaluation's evaluation_method.py): one row of
# global means, and one row per object named "<sequence>_<k>" (k = 1..K), numbers as "%.3f".
GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
SEQUENCE_COLUMNS = ("Sequence", "J-Mean", "F-Mean")


def official_tables(sequence_results: dict) -> tuple[dict, list]:
    """The two tables of the official evaluation from {sequence name: ``evaluate_clip`` result}.

    Returns (global row {column: value} over ``GLOBAL_COLUMNS``, per-object rows
    [(f"{sequence}_{k}", J mean, F mean)] in the order of the dict and of the objects).
    """
    overall = evaluate_benchmark(list(sequence_results.values()))
    row = {"J&F-Mean": overall["J&F"]}
    for key in ("J", "F"):
        for stat, name in (("mean", "Mean"), ("recall", "Recall"), ("decay", "Decay")):
            row[f"{key}-{name}"] = overall[key][stat]
    per_object = []
    for seq, res in sequence_results.items():
        for k, obj in enumerate(res["objects"], start=1):
            per_object.append((f"{seq}_{k}", obj["J"]["mean"], obj["F"]["mean"]))
    return row, per_object


def _fmt(v: float) -> str:
    return "" if v != v else f"{v:.3f}"  # pandas writes NaN as an empty field


def write_official_csv(folder: str, sequence_results: dict, image_set: str = "val") -> tuple[str, str]:
    """Write folder/global_results-<image_set>.csv and folder/per-sequence_results-<image_set>.csv in
    the official evaluation's layout (``GLOBAL_COLUMNS`` / ``SEQUENCE_COLUMNS``, "%.3f"), atomically.
    Returns the two paths. (The official script, run on a folder holding these files, reads them back
    as precomputed results instead of scoring the masks: remove them to have it score again.)"""
    row, per_object = official_tables(sequence_results)
    g_lines = [",".join(GLOBAL_COLUMNS), ",".join(_fmt(row[c]) for c in GLOBAL_COLUMNS)]
    s_lines = [",".join(SEQUENCE_COLUMNS)] + [f"{n},{_fmt(j)},{_fmt(f)}" for n, j, f in per_object]
    paths = []
    os.makedirs(folder, exist_ok=True)
    for name, lines in ((f"global_results-{image_set}.csv", g_lines),
                        (f"per-sequence_results-{image_set}.csv", s_lines)):
        path = os.path.join(folder, name)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".csv")
        try:
            with os.fdopen(fd, "w") as f:
                f.write("\n".join(lines) + "\n")
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        paths.append(path)
    return paths[0], paths[1]
