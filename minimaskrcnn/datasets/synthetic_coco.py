"""Photo-like COCO folders to train and test the "bring your own images" path without a download.

A folder made here looks like what CVAT or Label Studio export for a small project, with the
awkward parts a real export has:

- JPEG images (a few PNG, a few of them RGBA, a few grayscale JPEG) of varied sizes, 120–176 px on
  the short side, 4:3 / 3:2 / 1:1 / portrait;
- backgrounds cut from real photographs shipped with scikit-image and matplotlib (astronaut, cat,
  coffee, rocket, motorcycle, retina, Hubble field, Grace Hopper, brick, grass, gravel ...), at a
  random crop, scale and mirror, so objects sit on clutter, edges and texture;
- four object classes told apart by shape — ``disc``, ``square``, ``triangle``, ``star`` — each
  instance painted with a random texture (stripes, blobs, checkers, noise, gradient) in two random
  colours, rotated, 14–56 px across, 1–4 per image, never touching;
- segmentations as polygons (about half) and RLE (compressed and uncompressed counts), rasterised
  exactly as pycocotools does, so the painted pixels are the annotated mask;
- non-contiguous category ids (3, 8, 15, 42) and image ids, annotation ids with gaps;
- crowd regions (``iscrowd=1``, uncompressed RLE as COCO stores crowds) on about one image in ten:
  a cluster of 4–7 tiny objects of one class annotated as one region.

Layout (CVAT's "COCO 1.0" export)::

    FOLDER/images/img_001003.jpg ...
    FOLDER/annotations/instances_default.json

Image ``i`` depends only on ``(seed, i)``: folders of different seeds never share an image, so a
training folder (seed 0), a tuning folder (seed 1) and a held-out folder (seed 2) are disjoint.

    from minimaskrcnn.datasets.synthetic_coco import write_folder
    write_folder("data/train", num_images=300, seed=0)
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from minimaskrcnn.datasets.coco import _atomic_write_bytes, save_coco_json
from minimaskrcnn.datasets.rle import mask_to_rle, polygons_to_rle, rle_area, rle_to_bbox, rle_to_mask
from minimaskrcnn.datasets.shapes import texture_pattern

__all__ = ["CATEGORIES", "IMAGE_SIZES", "photo_names", "make_image", "write_folder"]

#: The four classes and their (deliberately non-contiguous) COCO category ids.
CATEGORIES = ({"id": 3, "name": "disc"}, {"id": 8, "name": "square"}, {"id": 15, "name": "triangle"},
              {"id": 42, "name": "star"})
#: (width, height) of the images: the usual aspect ratios at thumbnail resolution.
IMAGE_SIZES = ((160, 120), (192, 144), (176, 176), (144, 192), (224, 168), (128, 160), (200, 150),
               (240, 160), (120, 160))
OBJECT_SIZES = (14.0, 56.0)  # diameter of the shape's circumscribed circle, pixels
_TEXTURES = ("stripes", "blobs", "checker", "noise", "gradient")

# Photographs installed with scikit-image (skimage/data) and matplotlib (mpl-data/sample_data):
# read from the package folders, never fetched.
_SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                   "retina.jpg", "hubble_deep_field.jpg", "color.png", "ihc.png", "brick.png",
                   "grass.png", "gravel.png", "camera.png", "coins.png", "moon.png")
_MATPLOTLIB_PHOTOS = ("grace_hopper.jpg",)
_PHOTO_CACHE: dict = {}


def _photo_paths() -> list[Path]:
    import importlib.util

    import matplotlib

    found = []
    spec = importlib.util.find_spec("skimage")  # optional: the [test] and [notebooks] extras bring it
    if spec is not None and spec.submodule_search_locations:
        found += [Path(spec.submodule_search_locations[0]) / "data" / n for n in _SKIMAGE_PHOTOS]
    found += [Path(matplotlib.get_data_path()) / "sample_data" / n for n in _MATPLOTLIB_PHOTOS]
    found = [p for p in found if p.is_file()]
    if not found:
        raise FileNotFoundError("no sample photographs found in scikit-image's or matplotlib's data folder "
                                "(install scikit-image and matplotlib)")
    return found


def photo_names() -> list[str]:
    """File names of the photographs the backgrounds are cut from."""
    return [p.name for p in _photo_paths()]


def _photos() -> list[np.ndarray]:
    """The photographs as (H, W, 3) float32 in [0, 1]; grayscale ones get a random-free warm tint."""
    if "all" not in _PHOTO_CACHE:
        from PIL import Image

        out = []
        for p in _photo_paths():
            with Image.open(p) as im:
                grey = im.mode in ("L", "I", "I;16", "F")
                arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255
            if grey:  # a fixed sepia-like tint so gray textures are not all the same hue
                arr = arr * np.array([1.0, 0.92, 0.8], dtype=np.float32)
            out.append(arr)
        _PHOTO_CACHE["all"] = out
    return _PHOTO_CACHE["all"]


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random crop of a random photograph, scaled to (h, w), maybe mirrored: (h, w, 3) float32."""
    from PIL import Image

    photo = _photos()[int(rng.integers(len(_photos())))]
    ph, pw = photo.shape[:2]
    # 1. A crop of the target's aspect whose short side is 25–100% of the photo's short side.
    short = rng.uniform(0.25, 1.0) * min(ph, pw)
    ch, cw = (short, short * w / h) if w >= h else (short * h / w, short)
    shrink = min(1.0, ph / ch, pw / cw)
    ch, cw = max(8, int(ch * shrink)), max(8, int(cw * shrink))
    y0, x0 = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    crop = photo[y0:y0 + ch, x0:x0 + cw]
    # 2. Resize (bilinear) and mirror.
    img = Image.fromarray((crop * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
    out = np.asarray(img, dtype=np.float32) / 255
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def _shape_polygon(name: str, cx: float, cy: float, diameter: float, angle: float, aspect: float):
    """Vertices (N, 2) of a class's outline: circumscribed diameter ``diameter``, rotated by ``angle``."""
    if name == "disc":
        n, radii = 40, None
    elif name == "square":
        n, radii = 4, None
    elif name == "triangle":
        n, radii = 3, None
    elif name == "star":
        n, radii = 10, np.tile([1.0, 0.45], 5)
    else:
        raise ValueError(f"unknown class {name!r}")
    t = -math.pi / 2 + 2 * math.pi * np.arange(n) / n + (math.pi / 4 if name == "square" else 0.0)
    r = diameter / 2 * (radii if radii is not None else np.ones(n))
    stretch = max(aspect, 1 / aspect)  # squeezed, never wider than ``diameter``
    x, y = r * np.cos(t) * aspect / stretch, r * np.sin(t) / aspect / stretch
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _paint(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, dark_edge: bool = True) -> None:
    """Paint a textured object (two random colours blended by a random texture) into ``mask``."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    local = mask[y0:y1, x0:x1]
    kind = _TEXTURES[int(rng.integers(len(_TEXTURES)))]
    t = texture_pattern(kind, local.shape, rng)[..., None]
    a, b = rng.uniform(0.0, 1.0, 3), rng.uniform(0.0, 1.0, 3)
    tex = (1 - t) * a + t * b
    # a little shading, as light falls on a real object: brighter towards one side
    yy, xx = np.mgrid[0:local.shape[0], 0:local.shape[1]]
    theta = rng.uniform(0, 2 * math.pi)
    ramp = (xx * math.cos(theta) + yy * math.sin(theta)) / max(local.shape)
    tex = np.clip(tex * (0.85 + 0.3 * ramp[..., None]), 0, 1)
    region = image[y0:y1, x0:x1]
    region[local] = tex[local]


def _place(rng, h, w, radius, boxes, margin=2.0, tries=60):
    """A centre whose square of half-size ``radius`` is inside the image and clear of ``boxes``."""
    for _ in range(tries):
        cx, cy = rng.uniform(radius + 1, w - radius - 1), rng.uniform(radius + 1, h - radius - 1)
        box = (cx - radius - margin, cy - radius - margin, cx + radius + margin, cy + radius + margin)
        if all(box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3] for b in boxes):
            return cx, cy, box
    return None


def make_image(index: int, seed: int = 0, crowd_fraction: float = 0.1):
    """Image ``index`` of the folder of ``seed``: ``(image (H, W, 3) uint8, objects, fmt)``.

    objects: list of {"category": name, "segmentation", "iscrowd"} (segmentations in COCO form:
    polygons, compressed or uncompressed RLE); fmt: "jpeg", "png", "png-rgba" or "jpeg-gray".
    All randomness comes from ``np.random.default_rng([seed, index])``."""
    rng = np.random.default_rng([seed, index])
    w, h = IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
    image = _background(rng, h, w)
    names = [c["name"] for c in CATEGORIES]
    objects, boxes = [], []
    # 1. Maybe a crowd region first: 4–7 tiny objects of one class in a 36–52 px patch.
    if rng.random() < crowd_fraction:
        half = rng.uniform(18, 26)
        spot = _place(rng, h, w, half, boxes)
        if spot is not None:
            cx, cy, box = spot
            name = names[int(rng.integers(len(names)))]
            union = np.zeros((h, w), dtype=bool)
            inner = []
            for _ in range(int(rng.integers(4, 8))):
                d = rng.uniform(7, 12)
                c = None
                for _ in range(30):  # a spot inside the patch, clear of the other tiny objects
                    x, y = rng.uniform(cx - half + d / 2, cx + half - d / 2, size=2)
                    b = (x - d / 2 - 0.5, y - d / 2 - 0.5, x + d / 2 + 0.5, y + d / 2 + 0.5)
                    if all(b[2] < o[0] or b[0] > o[2] or b[3] < o[1] or b[1] > o[3] for o in inner):
                        c = (x, y, b)
                        break
                if c is None:
                    continue
                inner.append(c[2])
                poly = _shape_polygon(name, c[0], c[1], d, rng.uniform(0, 2 * math.pi), 1.0)
                m = rle_to_mask(polygons_to_rle([poly.ravel().tolist()], h, w))
                if m.any():
                    _paint(image, m, rng)
                    union |= m
            if union.any():
                rle = mask_to_rle(union)
                from minimaskrcnn.datasets.rle import _decode_counts

                counts = [int(v) for v in _decode_counts(rle["counts"])]  # uncompressed, as COCO crowds
                objects.append({"category": name, "iscrowd": 1,
                                "segmentation": {"size": [h, w], "counts": counts}})
                boxes.append(box)
    # 2. 1–4 objects, never touching each other or the crowd region.
    for _ in range(int(rng.integers(1, 5))):
        d = rng.uniform(*OBJECT_SIZES)
        aspect = rng.uniform(0.85, 1.18)
        spot = _place(rng, h, w, d / 2 * 1.2, boxes)
        if spot is None:
            continue
        cx, cy, box = spot
        name = names[int(rng.integers(len(names)))]
        poly = _shape_polygon(name, cx, cy, d, rng.uniform(0, 2 * math.pi), aspect)
        flat = [round(float(v), 2) for v in poly.ravel()]
        rle = polygons_to_rle([flat], h, w)
        mask = rle_to_mask(rle)
        if not mask.any():
            continue
        _paint(image, mask, rng)
        boxes.append(box)
        kind = rng.random()
        if kind < 0.5:
            seg = [flat]  # a polygon, as annotation tools draw
        elif kind < 0.75:
            seg = rle  # compressed RLE counts (a string)
        else:
            from minimaskrcnn.datasets.rle import _decode_counts

            seg = {"size": [h, w], "counts": [int(v) for v in _decode_counts(rle["counts"])]}
        objects.append({"category": name, "iscrowd": 0, "segmentation": seg})
    # 3. Camera-like noise, then the file format.
    image = np.clip(image + rng.normal(0, 0.015, image.shape), 0, 1)
    u = rng.random()
    fmt = "jpeg" if u < 0.8 else "png" if u < 0.9 else "png-rgba" if u < 0.95 else "jpeg-gray"
    return (image * 255 + 0.5).astype(np.uint8), objects, fmt


def _encode(image: np.ndarray, fmt: str, rng: np.random.Generator) -> tuple[bytes, str]:
    from PIL import Image

    pil = Image.fromarray(image)
    buf = io.BytesIO()
    if fmt == "jpeg":
        pil.save(buf, format="JPEG", quality=int(rng.integers(80, 96)))
        return buf.getvalue(), "jpg"
    if fmt == "jpeg-gray":
        pil.convert("L").save(buf, format="JPEG", quality=90)
        return buf.getvalue(), "jpg"
    if fmt == "png-rgba":
        pil.convert("RGBA").save(buf, format="PNG")  # opaque alpha: the reader drops it
        return buf.getvalue(), "png"
    pil.save(buf, format="PNG")
    return buf.getvalue(), "png"


def write_folder(folder, num_images: int, seed: int = 0, crowd_fraction: float = 0.1) -> Path:
    """Write ``num_images`` images of ``seed`` and their COCO annotations into ``folder``.

    Image ids are ``1000 + 3·index`` (not contiguous) and annotation ids ``10·image_id + k``; every
    file is written atomically. Returns the annotation file's path
    (``folder/annotations/instances_default.json``)."""
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    folder = Path(folder)
    cat_id = {c["name"]: c["id"] for c in CATEGORIES}
    data = {"info": {"description": f"synthetic photo-like shapes, seed {seed}"},
            "images": [], "annotations": [],
            "categories": [{**c, "supercategory": "shape"} for c in CATEGORIES]}
    for index in range(num_images):
        image, objects, fmt = make_image(index, seed, crowd_fraction)
        image_id = 1000 + 3 * index
        payload, ext = _encode(image, fmt, np.random.default_rng([seed, index, 1]))
        name = f"img_{image_id:06d}.{ext}"
        _atomic_write_bytes(folder / "images" / name, payload)
        h, w = image.shape[:2]
        data["images"].append({"id": image_id, "file_name": name, "height": h, "width": w})
        for k, obj in enumerate(objects):
            seg = obj["segmentation"]
            rle = polygons_to_rle(seg, h, w) if isinstance(seg, list) else seg
            x, y, bw, bh = (float(v) for v in rle_to_bbox(rle))
            data["annotations"].append({
                "id": 10 * image_id + k, "image_id": image_id, "category_id": cat_id[obj["category"]],
                "segmentation": seg, "area": float(rle_area(rle)), "bbox": [x, y, bw, bh],
                "iscrowd": obj["iscrowd"]})
    return save_coco_json(data, folder / "annotations" / "instances_default.json")
