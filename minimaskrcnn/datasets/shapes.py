"""Synthetic shapes: the toy data set on which Mask R-CNN is trained from scratch in minutes.

Every image is drawn fresh from ``(seed, index)``: no files, no download, and exactly the same sample
whatever order the items are read in (each item gets its own ``np.random.Generator`` from
``np.random.SeedSequence([seed, index])``).

Defaults are the well-known toy: squares, circles and triangles in solid colours on a plain
background, 1–4 per image, 128×128, no two objects touching. Options make it harder: more classes
(ellipse, star, ring with a hole, cross, hexagon), procedural textures (noise, blobs, stripes,
gradients, checkers) on objects and background, rotation, and occlusion.

Conventions (shared with the whole package):

- Pixel ``(row i, column j)`` covers the square ``[j, j+1) × [i, i+1)`` of the continuous image
  frame; a shape covers a pixel when it contains the pixel's centre ``(j + 0.5, i + 0.5)``. Masks are
  exact: the colour of every pixel in a mask is the colour of that object, nothing is anti-aliased.
- ``boxes`` are ``(x1, y1, x2, y2)`` in that frame, the tight box of the *visible* mask: ``x1`` is
  the first column that holds a mask pixel, ``x2`` the last such column + 1 (so ``x2 − x1`` is the
  width in pixels), the same for rows.
- ``labels`` run 1..C (0 is background), in the order of ``class_names``.
- ``masks`` hold the visible pixels only: they never overlap and none is empty.
"""

from __future__ import annotations

import math

import numpy as np

from minimaskrcnn._checks import pair

__all__ = [
    "SHAPE_NAMES",
    "DEFAULT_CLASSES",
    "TEXTURE_NAMES",
    "ShapesDataset",
    "shape_extent",
    "shape_window",
    "shape_mask",
    "texture_pattern",
    "masks_to_boxes",
]

#: Every shape the generator can draw, in the order used by ``classes="all"``.
SHAPE_NAMES = ("square", "circle", "triangle", "ellipse", "star", "ring", "cross", "hexagon")
#: The classic toy.
DEFAULT_CLASSES = ("square", "circle", "triangle")
#: Procedural textures (``texture_pattern``); "solid" is a plain colour.
TEXTURE_NAMES = ("solid", "noise", "blobs", "stripes", "gradient", "checker")

# Geometry in the shape's own unit frame (u to the right, v downwards, the shape spans [-1, 1] in u).
# A shape of size s is this unit shape scaled by r = s / 2, rotated by `angle` and moved to (cx, cy).
_ELLIPSE_ASPECT = 0.55  # minor / major axis: clearly not a circle
_RING_INNER = 0.55  # hole radius / outer radius: a hole wide enough to see through
_STAR_INNER = 0.45  # inner / outer radius (a regular pentagram has 0.38; fatter arms read better)
_CROSS_ARM = 0.34  # half-width of an arm / half-length


def _regular_polygon(n: int, radius_fn=None, start: float = -math.pi / 2) -> np.ndarray:
    """Vertices (n, 2) of a polygon with vertex k at angle start + 2πk/n (radius 1 or radius_fn(k))."""
    k = np.arange(n)
    radius = np.ones(n) if radius_fn is None else np.array([radius_fn(i) for i in k], dtype=float)
    theta = start + 2 * np.pi * k / n
    return np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1)


_POLYGONS = {
    # An equilateral triangle of width 2 pointing up, centred in its bounding box.
    "triangle": np.array([[0.0, -math.sqrt(3) / 2], [1.0, math.sqrt(3) / 2], [-1.0, math.sqrt(3) / 2]]),
    # Ten vertices alternating between the outer radius 1 and the inner radius; first tip points up.
    "star": _regular_polygon(10, lambda k: 1.0 if k % 2 == 0 else _STAR_INNER),
    # Flat top and bottom: width 2, height √3.
    "hexagon": _regular_polygon(6, start=0.0),
}

# Half-extents (hu, hv) of the unrotated unit shape, and the radius of its circumscribed circle
# (the half-extent once it may be rotated by any angle).
_HALF_EXTENT = {
    "square": (1.0, 1.0), "circle": (1.0, 1.0), "triangle": (1.0, math.sqrt(3) / 2),
    "ellipse": (1.0, _ELLIPSE_ASPECT), "star": (1.0, 1.0), "ring": (1.0, 1.0), "cross": (1.0, 1.0),
    "hexagon": (1.0, math.sqrt(3) / 2),
}
_BOUND = {
    "square": math.sqrt(2), "circle": 1.0, "triangle": math.sqrt(1 + 3 / 4), "ellipse": 1.0,
    "star": 1.0, "ring": 1.0, "cross": math.hypot(1.0, _CROSS_ARM), "hexagon": 1.0,
}


def _inside_polygon(u: np.ndarray, v: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd rule: a point is inside when a ray towards +u crosses the boundary an odd number of times."""
    inside = np.zeros(np.broadcast_shapes(u.shape, v.shape), dtype=bool)
    n = len(vertices)
    for i in range(n):
        (ua, va), (ub, vb) = vertices[i], vertices[(i + 1) % n]
        if va == vb:  # a horizontal edge is never crossed by a horizontal ray
            continue
        straddles = (va > v) != (vb > v)
        u_cross = ua + (v - va) * (ub - ua) / (vb - va)
        inside ^= straddles & (u < u_cross)
    return inside


def _inside_unit_shape(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean membership of points (u, v) of the unit frame in the unit shape ``name``."""
    if name == "square":
        return (np.abs(u) <= 1) & (np.abs(v) <= 1)
    if name == "circle":
        return u * u + v * v <= 1
    if name == "ellipse":
        return u * u + (v / _ELLIPSE_ASPECT) ** 2 <= 1
    if name == "ring":
        d2 = u * u + v * v
        return (d2 <= 1) & (d2 >= _RING_INNER**2)
    if name == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= _CROSS_ARM) & (av <= 1)) | ((av <= _CROSS_ARM) & (au <= 1))
    if name in _POLYGONS:
        return _inside_polygon(u, v, _POLYGONS[name])
    raise ValueError(f"name must be one of {SHAPE_NAMES}, got {name!r}")


def shape_extent(name: str, size: float, angle: float = 0.0) -> tuple[float, float]:
    """Half-extents (ex, ey) in pixels of the region that holds shape ``name`` of ``size``.

    Exact for ``angle == 0``; for any other angle the circumscribed circle (the same for every angle,
    so a placement does not depend on it).
    """
    if name not in _HALF_EXTENT:
        raise ValueError(f"name must be one of {SHAPE_NAMES}, got {name!r}")
    r = size / 2
    if angle == 0.0:
        hu, hv = _HALF_EXTENT[name]
        return r * hu, r * hv
    return r * _BOUND[name], r * _BOUND[name]


def shape_window(name: str, cx: float, cy: float, size: float, angle: float, image_shape):
    """Rasterise one shape inside its bounding window.

    Inputs: ``name`` one of SHAPE_NAMES; ``(cx, cy)`` the centre in continuous pixel coordinates;
    ``size`` the width in pixels of the unrotated shape (diameter of a circle, side of a square);
    ``angle`` radians, counter-clockwise as seen on screen; ``image_shape`` (H, W).

    Returns ``(y0, y1, x0, x1, local)``: ``local`` is a (y1 − y0, x1 − x0) bool mask such that the
    full-image mask is ``local`` placed at rows y0:y1 and columns x0:x1 (window clipped to the image).
    Pixel (i, j) is in the shape when its centre (j + 0.5, i + 0.5) is.
    """
    h, w = image_shape
    ex, ey = shape_extent(name, size, angle)
    x0, x1 = max(int(math.floor(cx - ex)), 0), min(int(math.ceil(cx + ex)), w)
    y0, y1 = max(int(math.floor(cy - ey)), 0), min(int(math.ceil(cy + ey)), h)
    if x1 <= x0 or y1 <= y0:
        return y0, y0, x0, x0, np.zeros((0, 0), dtype=bool)
    # 1. Pixel centres relative to the shape centre, as a row and a column (broadcast, no meshgrid).
    dx = (np.arange(x0, x1) + 0.5 - cx)[None, :]
    dy = (np.arange(y0, y1) + 0.5 - cy)[:, None]
    # 2. Into the unit frame: rotate by -angle (screen y points down, hence the signs) and scale by 1/r.
    r = size / 2
    if angle == 0.0:
        u, v = dx / r, dy / r
    else:
        c, s = math.cos(angle), math.sin(angle)
        u = (c * dx - s * dy) / r
        v = (s * dx + c * dy) / r
    # 3. Membership test of the unit shape.
    local = np.broadcast_to(_inside_unit_shape(name, u, v), (y1 - y0, x1 - x0))
    return y0, y1, x0, x1, np.ascontiguousarray(local)


def shape_mask(name: str, cx: float, cy: float, size: float, angle: float, image_shape) -> np.ndarray:
    """Full-image (H, W) bool mask of one shape; arguments as in :func:`shape_window`."""
    y0, y1, x0, x1, local = shape_window(name, cx, cy, size, angle, image_shape)
    mask = np.zeros(tuple(image_shape), dtype=bool)
    mask[y0:y1, x0:x1] = local
    return mask


def _bilinear_upsample(grid: np.ndarray, h: int, w: int, cell: float) -> np.ndarray:
    """Sample a coarse grid (gh, gw), whose node k sits at k·cell pixels, at every pixel centre."""

    def weights(n: int, g: int) -> np.ndarray:
        pos = np.minimum((np.arange(n) + 0.5) / cell, g - 1.0)
        lo = np.minimum(pos.astype(int), g - 2)
        frac = pos - lo
        mat = np.zeros((n, g))
        mat[np.arange(n), lo] = 1 - frac
        mat[np.arange(n), lo + 1] = frac
        return mat

    return weights(h, grid.shape[0]) @ grid @ weights(w, grid.shape[1]).T


def texture_pattern(kind: str, shape, rng: np.random.Generator) -> np.ndarray:
    """A procedural texture: (H, W) float64 values in [0, 1] used to blend between two colours.

    ``kind``: "solid" (zeros), "noise" (independent per pixel), "blobs" (smooth value noise, cells of
    6–16 px), "stripes" (period 4–12 px, any direction), "gradient" (a linear ramp in any direction),
    "checker" (cells of 3–10 px). ``shape`` is (H, W); all randomness comes from ``rng``.
    """
    h, w = shape
    if kind == "solid":
        return np.zeros((h, w))
    if kind == "noise":
        return rng.random((h, w))
    if kind == "blobs":
        cell = rng.uniform(6, 16)
        grid = rng.random((int(h / cell) + 2, int(w / cell) + 2))
        return _bilinear_upsample(grid, h, w, cell)
    yy = np.arange(h)[:, None] + 0.5
    xx = np.arange(w)[None, :] + 0.5
    if kind == "stripes":
        period, theta = rng.uniform(4, 12), rng.uniform(0, np.pi)
        phase = (xx * math.cos(theta) + yy * math.sin(theta)) / period
        return np.broadcast_to((phase - np.floor(phase) < 0.5).astype(float), (h, w))
    if kind == "gradient":
        theta = rng.uniform(0, 2 * np.pi)
        ramp = xx * math.cos(theta) + yy * math.sin(theta)
        ramp = ramp - ramp.min()
        return np.broadcast_to(ramp / max(ramp.max(), 1e-12), (h, w))
    if kind == "checker":
        cell = int(rng.integers(3, 11))
        return np.broadcast_to((((yy // cell) + (xx // cell)) % 2).astype(float), (h, w))
    raise ValueError(f"kind must be one of {TEXTURE_NAMES}, got {kind!r}")


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight boxes (K, 4) float32 (x1, y1, x2, y2) of non-empty (K, H, W) bool masks; x2 = last column + 1."""
    k, h, w = masks.shape
    if k == 0:
        return np.zeros((0, 4), dtype=np.float32)
    rows = masks.any(axis=2)
    cols = masks.any(axis=1)
    if not rows.any(axis=1).all():
        raise ValueError("masks must all be non-empty to have a box")
    y1 = rows.argmax(axis=1)
    y2 = h - rows[:, ::-1].argmax(axis=1)
    x1 = cols.argmax(axis=1)
    x2 = w - cols[:, ::-1].argmax(axis=1)
    return np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)


def _colour_far_from(rng: np.random.Generator, avoid: list, min_dist: float) -> np.ndarray:
    """A random RGB colour at Euclidean distance ≥ min_dist from every colour in ``avoid``."""
    candidates = rng.integers(0, 256, size=(32, 3)).astype(float)
    if not avoid:
        return candidates[0]
    dist = np.min(np.linalg.norm(candidates[:, None, :] - np.asarray(avoid)[None], axis=2), axis=1)
    ok = np.flatnonzero(dist >= min_dist)
    return candidates[ok[0]] if ok.size else candidates[int(np.argmax(dist))]


class ShapesDataset:
    """Synthetic instance-segmentation images, generated on the fly from ``(seed, index)``.

    ``ShapesDataset(num_images, image_size=128, seed=0, **options)``; ``ds[i]`` is a dict:

    - ``image``: (H, W, 3) uint8 RGB;
    - ``boxes``: (K, 4) float32 (x1, y1, x2, y2), tight box of the visible mask, x2 = last column + 1;
    - ``labels``: (K,) int64 in 1..C, indices into ``class_names``;
    - ``masks``: (K, H, W) bool, visible pixels only, disjoint, none empty;
    - ``image_id``: int, the index ``i``.

    Options (keyword only):

    - ``classes``: shape names (a subset of SHAPE_NAMES, in label order) or "all";
      default square, circle, triangle.
    - ``textures``: procedural textures on objects and background instead of solid colours.
    - ``occlusion``: objects may overlap (about half of them are placed on top of an earlier one);
      hidden pixels leave the masks of the objects below, and an instance whose visible area falls
      below ``min_visible_area`` pixels is dropped (removed from the picture as well, so every pixel
      of the image belongs to exactly one annotated instance or to the background).
      Without occlusion, object windows never touch (at least one background pixel between them).
    - ``rotate``: rotate each object by a random angle (default False: the classic upright shapes).
    - ``num_instances``: (lo, hi) inclusive range of the number of objects attempted per image.
      Without occlusion a crowded image may hold fewer than drawn when no free place is found after
      ``max_tries`` positions; there is always at least one.
    - ``min_size``, ``max_size``: object width in pixels (diameter, side) drawn uniformly. The
      defaults 16–48 give areas from ~100 to ~2300 px², so both COCO's "small" (< 32²) and "medium"
      ranges are populated at 128×128, and they sit inside the shapes preset's anchors (8–64 px).
    - ``min_visible_area``: see occlusion (pixels).
    """

    def __init__(
        self,
        num_images: int,
        image_size=128,
        seed: int = 0,
        *,
        classes=DEFAULT_CLASSES,
        textures: bool = False,
        occlusion: bool = False,
        rotate: bool = False,
        num_instances=(1, 4),
        min_size: float = 16.0,
        max_size: float = 48.0,
        min_visible_area: int = 40,
        max_tries: int = 30,
    ):
        if not isinstance(num_images, (int, np.integer)) or num_images < 0:
            raise ValueError(f"num_images must be a non-negative int, got {num_images!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.num_images = int(num_images)
        self.seed = int(seed)
        self.image_size = pair(image_size, "image_size", minimum=8)
        if isinstance(classes, str):
            if classes != "all":
                raise ValueError(f"classes must be 'all' or a sequence of names from {SHAPE_NAMES}")
            classes = SHAPE_NAMES
        classes = tuple(classes)
        unknown = [c for c in classes if c not in SHAPE_NAMES]
        if not classes or unknown or len(set(classes)) != len(classes):
            raise ValueError(f"classes must be distinct names from {SHAPE_NAMES}, got {classes!r}")
        self.classes = classes
        lo, hi = pair(num_instances, "num_instances", minimum=1)
        if lo > hi:
            raise ValueError(f"num_instances must be (lo, hi) with lo <= hi, got {(lo, hi)}")
        self.num_instances = (lo, hi)
        # From 4 px up every shape covers at least one pixel centre wherever it is placed.
        if not (4 <= min_size <= max_size):
            raise ValueError(f"min_size and max_size must satisfy 4 <= min_size <= max_size, "
                             f"got {min_size}, {max_size}")
        # The largest object (rotated: its circumscribed circle) must fit inside the image.
        reach = max(max(_BOUND[c] if rotate else max(_HALF_EXTENT[c]) for c in classes), 1.0)
        if max_size * reach > min(self.image_size):
            raise ValueError(f"max_size={max_size} does not fit in image_size={self.image_size}"
                             + (" once rotated" if rotate else ""))
        if min_visible_area < 1:
            raise ValueError(f"min_visible_area must be >= 1, got {min_visible_area}")
        self.min_size, self.max_size = float(min_size), float(max_size)
        self.textures, self.occlusion, self.rotate = bool(textures), bool(occlusion), bool(rotate)
        self.min_visible_area = int(min_visible_area)
        self.max_tries = int(max_tries)

    # --- the dataset protocol -------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return ["background", *self.classes]

    @property
    def num_classes(self) -> int:
        """Number of object classes C (background not counted)."""
        return len(self.classes)

    def __len__(self) -> int:
        return self.num_images

    def _index(self, index) -> int:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        i = int(index) + (self.num_images if index < 0 else 0)
        if not 0 <= i < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        return i

    def __getitem__(self, index):
        return self._generate(self._index(index))

    def __iter__(self):
        for i in range(self.num_images):
            yield self._generate(i)

    def batch(self, indices) -> dict:
        """Several items at once: ``images`` (B, H, W, 3) uint8 stacked, and lists ``boxes``,
        ``labels``, ``masks`` (one array per image) and ``image_ids``."""
        items = [self[i] for i in indices]
        h, w = self.image_size
        images = np.empty((len(items), h, w, 3), dtype=np.uint8)
        for b, item in enumerate(items):
            images[b] = item["image"]
        return {
            "images": images,
            "boxes": [it["boxes"] for it in items],
            "labels": [it["labels"] for it in items],
            "masks": [it["masks"] for it in items],
            "image_ids": [it["image_id"] for it in items],
        }

    def __repr__(self) -> str:
        return (f"ShapesDataset(num_images={self.num_images}, image_size={self.image_size}, "
                f"seed={self.seed}, classes={self.classes}, textures={self.textures}, "
                f"occlusion={self.occlusion}, rotate={self.rotate})")

    # --- generation ---------------------------------------------------------------------------
    def _place(self, rng, name, angle, placed):
        """Draw (size, cx, cy) for one object; None when no free place is found (no occlusion)."""
        h, w = self.image_size
        for _ in range(self.max_tries):
            size = rng.uniform(self.min_size, self.max_size)
            ex, ey = shape_extent(name, size, angle)
            if self.occlusion and placed and rng.random() < 0.5:
                # Put it partly over an earlier object so that occlusion actually happens.
                px, py, pex, pey = placed[int(rng.integers(len(placed)))]
                dist = rng.uniform(0.3, 0.9) * (max(pex, pey) + max(ex, ey))
                theta = rng.uniform(0, 2 * np.pi)
                cx = min(max(px + dist * math.cos(theta), ex), w - ex)
                cy = min(max(py + dist * math.sin(theta), ey), h - ey)
            else:
                cx, cy = rng.uniform(ex, w - ex), rng.uniform(ey, h - ey)
            # Windows (with a one-pixel gap) must be disjoint unless occlusion is wanted.
            if self.occlusion or all(abs(cx - px) >= ex + pex + 1 or abs(cy - py) >= ey + pey + 1
                                     for px, py, pex, pey in placed):
                placed.append((cx, cy, ex, ey))
                return size, cx, cy
        return None

    def layout(self, index: int) -> list[dict]:
        """The objects of item ``index`` in painting order (later ones on top), dropped ones left out.

        Each dict: ``label``, ``name``, ``center`` (cx, cy), ``size``, ``angle`` (radians) and
        ``colour`` (RGB, the base colour). ``shape_mask(name, cx, cy, size, angle, (H, W))`` gives an
        object's full (amodal) mask; its visible mask is that minus the full masks of later objects.
        """
        objects = self._generate(self._index(index), return_layout=True)
        keys = ("label", "name", "center", "size", "angle", "colour")
        return [{k: o[k] for k in keys} for o in objects]

    def _generate(self, index: int, return_layout: bool = False):
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, index]))
        h, w = self.image_size

        # 1. Background: one colour, or a texture blending two colours close to each other.
        bg = rng.integers(0, 256, size=3).astype(float)
        if self.textures:
            bg2 = np.clip(bg + rng.integers(-70, 71, size=3), 0, 255)
            kind = TEXTURE_NAMES[1 + int(rng.integers(len(TEXTURE_NAMES) - 1))]
            t = texture_pattern(kind, (h, w), rng)
            image = (bg + t[..., None] * (bg2 - bg)).astype(np.uint8)
            avoid_bg = [bg, bg2]
        else:
            image = np.empty((h, w, 3), dtype=np.uint8)
            image[...] = bg.astype(np.uint8)
            avoid_bg = [bg]

        # 2. Layout: class, angle, size, position and colour of every object, in painting order
        #    (later objects lie on top).
        n = int(rng.integers(self.num_instances[0], self.num_instances[1] + 1))
        objects, placed = [], []
        for _ in range(n):
            label = 1 + int(rng.integers(len(self.classes)))
            name = self.classes[label - 1]
            angle = float(rng.uniform(0, 2 * np.pi)) if self.rotate else 0.0
            where = self._place(rng, name, angle, placed)
            if where is None:
                continue
            size, cx, cy = where
            # Far from the background; with occlusion also from the objects it may touch.
            avoid = avoid_bg + ([o["colour"] for o in objects] if self.occlusion else [])
            colour = _colour_far_from(rng, avoid, 100.0 if not self.occlusion else 80.0)
            window = shape_window(name, cx, cy, size, angle, (h, w))
            if not window[4].any():  # cannot happen for size >= 4, but an empty mask is never annotated
                placed.pop()
                continue
            obj = {"label": label, "name": name, "center": (cx, cy), "size": size, "angle": angle,
                   "window": window, "colour": colour, "kind": "solid"}
            if self.textures:
                obj["kind"] = TEXTURE_NAMES[int(rng.integers(len(TEXTURE_NAMES)))]
                obj["colour2"] = np.clip(colour + rng.integers(-50, 51, size=3), 0, 255)
                y0, y1, x0, x1, _ = window
                obj["pattern"] = texture_pattern(obj["kind"], (y1 - y0, x1 - x0), rng)
            objects.append(obj)

        # 3. Visibility: who owns each pixel (0 = background, k + 1 = object k, later wins).
        #    Drop objects whose visible area is too small, then recompute (the objects below a
        #    dropped one can only gain pixels, so one pass suffices).
        owner = self._owner_map(objects)
        if self.occlusion:
            full = [int(o["window"][4].sum()) for o in objects]
            visible = np.bincount(owner.ravel(), minlength=len(objects) + 1)[1:]
            keep = [k for k in range(len(objects))
                    if visible[k] > 0 and visible[k] >= min(self.min_visible_area, full[k])]
            if len(keep) < len(objects):
                objects = [objects[k] for k in keep]
                owner = self._owner_map(objects)

        if return_layout:
            return objects

        # 4. Paint the visible pixels of each object (colours match the masks exactly).
        for k, obj in enumerate(objects):
            y0, y1, x0, x1, _ = obj["window"]
            vis = owner[y0:y1, x0:x1] == k + 1
            if obj["kind"] == "solid":
                image[y0:y1, x0:x1][vis] = obj["colour"].astype(np.uint8)
            else:
                t = obj["pattern"][vis][:, None]
                image[y0:y1, x0:x1][vis] = (obj["colour"] + t * (obj["colour2"] - obj["colour"])).astype(
                    np.uint8)

        masks = owner[None, :, :] == np.arange(1, len(objects) + 1, dtype=owner.dtype)[:, None, None]
        return {
            "image": image,
            "boxes": masks_to_boxes(masks),
            "labels": np.array([o["label"] for o in objects], dtype=np.int64),
            "masks": masks,
            "image_id": index,
        }

    def _owner_map(self, objects) -> np.ndarray:
        owner = np.zeros(self.image_size, dtype=np.int16)
        for k, obj in enumerate(objects):
            y0, y1, x0, x1, local = obj["window"]
            owner[y0:y1, x0:x1][local] = k + 1
        return owner


def shapes_dataset(num_images: int, seed: int, image_size: int = 128, options: dict | None = None):
    """``ShapesDataset(num_images, image_size, seed, **options)``: the training loop's and the commands'
    way to name a shapes data set by its seed and keyword options."""
    return ShapesDataset(num_images, image_size=image_size, seed=seed, **(options or {}))
