"""COCO instance annotations: read, validate, write, and load COCO-format folders for training.

A COCO instance file is one JSON object with three lists:

- ``images``: ``{"id", "file_name", "height", "width"}``;
- ``categories``: ``{"id", "name"}`` (ids need not be contiguous: COCO's own run 1..90 with gaps);
- ``annotations``: ``{"id", "image_id", "category_id", "segmentation", "bbox", "iscrowd", "area"}``
  where ``bbox`` is ``[x, y, width, height]`` in pixels and ``segmentation`` is either a list of
  polygons ``[[x0, y0, x1, y1, ...], ...]`` or an RLE ``{"size": [h, w], "counts": ...}`` with
  compressed (str) or uncompressed (list of ints) counts — see :mod:`minimaskrcnn.datasets.rle`.

Everything read is validated first (:func:`validate_coco`): a problem raises :class:`CocoFormatError`
(a ``ValueError``) naming the annotation (or image, or category) id and the field, and nothing is
dropped or repaired silently. ``iscrowd`` defaults to 0 and ``area`` to the mask area when absent,
as pycocotools' evaluator assumes; every other key listed above is required.

:class:`CocoFolderDataset` turns a folder (as CVAT or labelme export it) into items of the same
form as :class:`~minimaskrcnn.datasets.shapes.ShapesDataset`, so a model trains on either;
:func:`export_coco` writes any such data set as a folder that pycocotools and annotation tools read.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from minimaskrcnn.datasets.rle import (  # re-exported: the COCO mask API lives in rle.py
    bbox_iou_coco,
    mask_to_rle,
    polygons_to_rle,
    rle_area,
    rle_iou,
    rle_to_bbox,
    rle_to_mask,
)

__all__ = [
    "CocoFormatError",
    "load_coco_json",
    "validate_coco",
    "save_coco_json",
    "dataset_to_coco",
    "detections_to_coco",
    "export_coco",
    "CocoFolderDataset",
    "segmentation_to_mask",
    "mask_to_rle",
    "rle_to_mask",
    "rle_area",
    "rle_to_bbox",
    "rle_iou",
    "bbox_iou_coco",
    "polygons_to_rle",
]


# A bbox may overshoot the image by this much (pixels): annotation tools let vertices land a little
# past the border, and pycocotools does not mind; anything further out is an error.
_BBOX_SLACK = 1.0


class CocoFormatError(ValueError):
    """A COCO JSON file or dict that does not follow the format; the message says where and what."""


# ----------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------
def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _where(kind: str, record, index: int) -> str:
    """'annotation id=7' when the record has an id, else 'annotations[3]'."""
    if isinstance(record, dict) and "id" in record:
        return f"{kind} id={record['id']!r}"
    return f"{kind}s[{index}]"


def _fail(source: str, where: str, field: str, problem: str):
    raise CocoFormatError(f"{source}: {where}: field {field!r}: {problem}")


def _check_list_of_dicts(data: dict, key: str, source: str) -> list:
    if key not in data:
        raise CocoFormatError(f"{source}: missing top-level key {key!r}")
    items = data[key]
    if not isinstance(items, list):
        raise CocoFormatError(f"{source}: {key!r} must be a list, got {type(items).__name__}")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise CocoFormatError(f"{source}: {key}[{i}] must be an object, got {type(item).__name__}")
    return items


def _check_ids(items: list, kind: str, source: str) -> dict:
    """Every record has a unique integer id; returns {id: record}."""
    by_id = {}
    for i, rec in enumerate(items):
        where = _where(kind, rec, i)
        if "id" not in rec:
            raise CocoFormatError(f"{source}: {where}: missing key 'id'")
        if not _is_int(rec["id"]):
            _fail(source, where, "id", f"must be an integer, got {rec['id']!r}")
        if rec["id"] in by_id:
            _fail(source, where, "id", "duplicate id")
        by_id[int(rec["id"])] = rec
    return by_id


def _check_segmentation(seg, image: dict, where: str, source: str) -> None:
    h, w = image["height"], image["width"]
    if isinstance(seg, dict):
        if "size" not in seg or "counts" not in seg:
            _fail(source, where, "segmentation", "an RLE needs the keys 'size' and 'counts'")
        size = seg["size"]
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)):
            _fail(source, where, "segmentation", f"RLE size must be [height, width], got {size!r}")
        if size[0] < 0 or size[1] < 0:
            _fail(source, where, "segmentation", f"RLE size must be non-negative, got {size}")
        if list(size) != [h, w]:
            _fail(source, where, "segmentation",
                  f"RLE size {list(size)} differs from the image size [{h}, {w}] (image id={image['id']})")
        try:
            rle_area(seg)  # parses the counts: valid characters, non-negative runs adding up to h·w
        except (TypeError, ValueError) as exc:
            _fail(source, where, "segmentation", f"bad RLE counts: {exc}")
    elif isinstance(seg, list):
        if not seg:
            _fail(source, where, "segmentation", "empty polygon list")
        for j, poly in enumerate(seg):
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                _fail(source, where, "segmentation",
                      f"polygon {j} must be a flat list [x0, y0, x1, y1, ...] of at least 3 points")
            if not all(_is_number(v) and math.isfinite(v) for v in poly):
                _fail(source, where, "segmentation", f"polygon {j} must hold finite numbers only")
    else:
        _fail(source, where, "segmentation",
              f"must be a list of polygons or an RLE dict, got {type(seg).__name__}")


def validate_coco(data, source: str = "COCO data") -> None:
    """Check a COCO instance dict; raise :class:`CocoFormatError` at the first problem.

    Checks, in order: the three top-level lists; images (unique integer ``id``, ``file_name``
    string, positive integer ``height``/``width``); categories (unique integer ``id``, ``name``);
    annotations: unique integer ``id``; ``image_id`` and ``category_id`` that exist; ``bbox`` of
    four finite numbers with non-negative width/height inside the image (1 px slack);
    ``segmentation`` polygons (≥ 3 finite points) or an RLE whose size equals the image size and
    whose runs add up; ``iscrowd`` 0/1 and ``area`` finite ≥ 0 when present. ``source`` (e.g. the
    file name) starts every message.
    """
    if not isinstance(data, dict):
        raise CocoFormatError(f"{source}: must be a JSON object with images, annotations, categories")
    images = _check_list_of_dicts(data, "images", source)
    categories = _check_list_of_dicts(data, "categories", source)
    annotations = _check_list_of_dicts(data, "annotations", source)

    image_by_id = _check_ids(images, "image", source)
    for i, img in enumerate(images):
        where = _where("image", img, i)
        for key in ("file_name", "height", "width"):
            if key not in img:
                raise CocoFormatError(f"{source}: {where}: missing key {key!r}")
        if not isinstance(img["file_name"], str) or not img["file_name"]:
            _fail(source, where, "file_name", f"must be a non-empty string, got {img['file_name']!r}")
        for key in ("height", "width"):
            if not _is_int(img[key]) or img[key] <= 0:
                _fail(source, where, key, f"must be a positive integer, got {img[key]!r}")

    category_by_id = _check_ids(categories, "category", source)
    for i, cat in enumerate(categories):
        if not isinstance(cat.get("name"), str):
            _fail(source, _where("category", cat, i), "name", f"must be a string, got {cat.get('name')!r}")

    _check_ids(annotations, "annotation", source)
    for i, ann in enumerate(annotations):
        where = _where("annotation", ann, i)
        for key in ("image_id", "category_id", "segmentation", "bbox"):
            if key not in ann:
                raise CocoFormatError(f"{source}: {where}: missing key {key!r}")
        if not _is_int(ann["image_id"]) or int(ann["image_id"]) not in image_by_id:
            _fail(source, where, "image_id", f"unknown image {ann['image_id']!r}")
        if not _is_int(ann["category_id"]) or int(ann["category_id"]) not in category_by_id:
            _fail(source, where, "category_id",
                  f"unknown category {ann['category_id']!r} (known: {sorted(category_by_id)})")
        image = image_by_id[int(ann["image_id"])]
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)
                and all(math.isfinite(v) for v in bbox)):
            _fail(source, where, "bbox", f"must be [x, y, width, height] of finite numbers, got {bbox!r}")
        x, y, bw, bh = bbox
        if bw < 0 or bh < 0:
            _fail(source, where, "bbox", f"width and height must be >= 0, got {bbox}")
        slack = _BBOX_SLACK
        if x < -slack or y < -slack or x + bw > image["width"] + slack or y + bh > image["height"] + slack:
            _fail(source, where, "bbox",
                  f"{bbox} reaches outside the {image['width']}x{image['height']} image id={image['id']}")
        _check_segmentation(ann["segmentation"], image, where, source)
        if "iscrowd" in ann and not (_is_int(ann["iscrowd"]) and ann["iscrowd"] in (0, 1)):
            _fail(source, where, "iscrowd", f"must be 0 or 1, got {ann['iscrowd']!r}")
        area = ann.get("area", 0)
        if not (_is_number(area) and math.isfinite(area) and area >= 0):
            _fail(source, where, "area", f"must be a finite number >= 0, got {ann['area']!r}")


# ----------------------------------------------------------------------------------------------------
# Reading and writing JSON
# ----------------------------------------------------------------------------------------------------
def load_coco_json(path) -> dict:
    """Read and validate a COCO instance JSON file; errors name the file, and the line for bad JSON."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CocoFormatError(f"{path}: not UTF-8 text ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CocoFormatError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") \
            from None
    validate_coco(data, source=str(path))
    return data


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, bytes):
        return obj.decode("ascii")
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_coco_json(data, path, validate: bool = True) -> Path:
    """Write a COCO dict (or a detection results list) as JSON, atomically. Returns the path.

    NumPy scalars and arrays are converted; a dict is validated first unless ``validate=False``.
    """
    path = Path(path)
    if validate and isinstance(data, dict):
        validate_coco(data, source=str(path))
    _atomic_write_bytes(path, json.dumps(data, default=_json_default).encode("utf-8"))
    return path


# ----------------------------------------------------------------------------------------------------
# Data set -> COCO
# ----------------------------------------------------------------------------------------------------
def _mask_bbox_xywh(mask: np.ndarray) -> list[float]:
    """[x, y, width, height] of the tight box of a mask (columns x .. x + width − 1 hold it)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0])]


def _category_ids(dataset, num_classes: int) -> list[int]:
    """COCO category id of labels 1..C: kept from a COCO-born data set, else the label itself."""
    ids = getattr(dataset, "category_ids", None)
    return list(ids) if ids is not None else list(range(1, num_classes + 1))


def dataset_to_coco(dataset, indices=None, *, file_name_format: str = "{image_id:06d}.png",
                    supercategory: str = "object") -> dict:
    """The ground truth of a data set as a COCO instance dict (what pycocotools' ``COCO`` loads).

    dataset: items with ``image`` (H, W, 3), ``labels`` (K,), ``masks`` (K, H, W) bool, optional
    ``image_id`` (default: the index) and ``iscrowd`` (K,); ``dataset.class_names`` names labels
    (index 0 background). indices: which items (default all). Each annotation gets an RLE
    segmentation (compressed), ``area`` = mask pixel count, ``bbox`` = [x, y, w, h] of the mask's
    tight box, and ids 1, 2, ... (pycocotools treats annotation id 0 as "no match").
    """
    class_names = list(dataset.class_names)
    cat_ids = _category_ids(dataset, len(class_names) - 1)
    data = {
        "images": [],
        "annotations": [],
        "categories": [{"id": cid, "name": class_names[label], "supercategory": supercategory}
                       for label, cid in enumerate(cat_ids, start=1)],
    }
    indices = range(len(dataset)) if indices is None else indices
    for index in indices:
        item = dataset[index]
        h, w = item["image"].shape[:2]
        image_id = int(item.get("image_id", index))
        data["images"].append({"id": image_id, "file_name": file_name_format.format(image_id=image_id),
                               "height": int(h), "width": int(w)})
        masks = np.asarray(item["masks"], dtype=bool)
        crowd = item.get("iscrowd", np.zeros(len(masks), dtype=bool))
        for k, (mask, label) in enumerate(zip(masks, item["labels"])):
            data["annotations"].append({
                "id": len(data["annotations"]) + 1,
                "image_id": image_id,
                "category_id": cat_ids[int(label) - 1],
                "segmentation": mask_to_rle(mask),
                "area": int(mask.sum()),
                "bbox": _mask_bbox_xywh(mask),
                "iscrowd": int(bool(crowd[k])),
            })
    return data


def detections_to_coco(image_id: int, boxes, labels, scores, masks=None, category_ids=None) -> list[dict]:
    """Detections of one image as COCO results (the list pycocotools' ``loadRes`` reads).

    boxes (N, 4) (x1, y1, x2, y2) pixels → ``bbox`` [x, y, w, h]; labels (N,) 1..C mapped through
    ``category_ids[label − 1]`` (default: label itself); scores (N,); masks (N, H, W) bool or None →
    ``segmentation`` RLE.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels, scores = np.asarray(labels).reshape(-1), np.asarray(scores, dtype=np.float64).reshape(-1)
    if not len(boxes) == len(labels) == len(scores) or (masks is not None and len(masks) != len(boxes)):
        raise ValueError("boxes, labels, scores (and masks) must have the same length")
    results = []
    for n in range(len(boxes)):
        x1, y1, x2, y2 = boxes[n]
        label = int(labels[n])
        det = {"image_id": int(image_id),
               "category_id": int(category_ids[label - 1]) if category_ids is not None else label,
               "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)], "score": float(scores[n])}
        if masks is not None:
            det["segmentation"] = mask_to_rle(np.asarray(masks[n], dtype=bool))
        results.append(det)
    return results


def _save_png(path: Path, image: np.ndarray) -> None:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="PNG")
    _atomic_write_bytes(path, buf.getvalue())


def export_coco(dataset, folder, indices=None, *, split: str = "default") -> Path:
    """Write a data set as a COCO folder: ``images/<id>.png`` and ``annotations/instances_<split>.json``.

    The layout CVAT exports, readable by pycocotools and by :class:`CocoFolderDataset`. Every file is
    written atomically. Returns the path of the annotation file.
    """
    folder = Path(folder)
    data = dataset_to_coco(dataset, indices)
    by_id = {img["id"]: img for img in data["images"]}
    for index in (range(len(dataset)) if indices is None else indices):
        item = dataset[index]
        img = by_id[int(item.get("image_id", index))]
        _save_png(folder / "images" / img["file_name"], item["image"])
    return save_coco_json(data, folder / "annotations" / f"instances_{split}.json")


# ----------------------------------------------------------------------------------------------------
# COCO folder -> data set
# ----------------------------------------------------------------------------------------------------
def segmentation_to_mask(segmentation, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of a COCO segmentation: polygons (rasterised as pycocotools does) or RLE."""
    if isinstance(segmentation, dict):
        return rle_to_mask(segmentation)
    return rle_to_mask(polygons_to_rle(segmentation, height, width))


def _find_annotation_file(folder: Path) -> Path:
    """annotations/instances_*.json, else annotations/*.json, else *.json — exactly one must match."""
    for pattern in ("annotations/instances_*.json", "annotations/*.json", "*.json"):
        found = sorted(folder.glob(pattern))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(str(p.relative_to(folder)) for p in found)
            raise ValueError(f"{folder} holds several annotation files ({names}); "
                             "pass annotation_file= to choose one")
    raise FileNotFoundError(f"no COCO annotation file in {folder} (looked for annotations/instances_*.json, "
                            "annotations/*.json and *.json)")


class CocoFolderDataset:
    """A COCO-format folder as a data set of dicts like :class:`ShapesDataset`'s.

    folder: the export's root. annotation_file: a path (absolute, or relative to ``folder``); by
    default the single ``annotations/instances_*.json`` (CVAT), else ``annotations/*.json``, else
    ``*.json`` (labelme-to-COCO) found there. Images are looked up by ``file_name`` relative to the
    folder, then to ``folder/images/``, then to the annotation file's folder; a missing image is an
    error at construction. ``skip_crowd=True`` leaves ``iscrowd`` annotations out (as training
    usually does); by default they are kept and flagged. ``box_source``: "bbox" (default) takes the
    boxes from the annotations' ``bbox``; "mask" uses the tight box of the decoded mask instead
    (x2 = last column + 1, as ShapesDataset does; annotation tools often store polygon extents).

    ``ds[i]`` (images in file order): ``image`` (H, W, 3) uint8 RGB, ``boxes`` (K, 4) float32
    (x1, y1, x2, y2), ``labels`` (K,) int64 1..C, ``masks`` (K, H, W) bool,
    ``image_id`` (the COCO id), ``iscrowd`` (K,) bool, ``annotation_ids`` (K,) int64.
    Labels are the categories sorted by id, renumbered 1..C: ``category_ids[label − 1]`` is the COCO
    id, ``category_id_to_label`` the inverse; ``class_names[label]`` the category name.
    """

    def __init__(self, folder, annotation_file=None, *, skip_crowd: bool = False, box_source: str = "bbox"):
        if box_source not in ("bbox", "mask"):
            raise ValueError(f"box_source must be 'bbox' or 'mask', got {box_source!r}")
        self.box_source = box_source
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"folder {self.folder} does not exist")
        if annotation_file is None:
            path = _find_annotation_file(self.folder)
        else:
            path = Path(annotation_file)
            path = path if path.is_absolute() else self.folder / path
        self.annotation_file = path
        self.coco = load_coco_json(path)
        self.skip_crowd = bool(skip_crowd)

        # 1. Categories sorted by id → contiguous labels 1..C.
        cats = sorted(self.coco["categories"], key=lambda c: c["id"])
        self.category_ids = [int(c["id"]) for c in cats]
        self.category_id_to_label = {cid: label for label, cid in enumerate(self.category_ids, start=1)}
        self.class_names = ["background", *(c["name"] for c in cats)]

        # 2. Annotations grouped by image, in file order.
        self.images = list(self.coco["images"])
        self._image_by_id = {int(img["id"]): img for img in self.images}
        self._anns = {int(img["id"]): [] for img in self.images}
        for ann in self.coco["annotations"]:
            if self.skip_crowd and ann.get("iscrowd", 0):
                continue
            self._anns[int(ann["image_id"])].append(ann)

        # 3. Every image file must be there.
        self._paths, missing = [], []
        for img in self.images:
            candidates = [self.folder / img["file_name"], self.folder / "images" / img["file_name"],
                          path.parent / img["file_name"]]
            found = next((p for p in candidates if p.is_file()), None)
            self._paths.append(found)
            if found is None:
                missing.append(f"image id={img['id']} file_name={img['file_name']!r}")
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise FileNotFoundError(f"{path}: image files not found in {self.folder} or its images/ folder: "
                                    + "; ".join(missing[:5]) + more)

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, index) -> dict:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        from PIL import Image

        img = self.images[index]
        h, w = img["height"], img["width"]
        with Image.open(self._paths[index]) as pil:
            image = np.asarray(pil.convert("RGB"), dtype=np.uint8)
        if image.shape[:2] != (h, w):
            raise CocoFormatError(f"{self.annotation_file}: image id={img['id']}: file {self._paths[index]} "
                                  f"is {image.shape[1]}x{image.shape[0]} but height/width say {w}x{h}")
        anns = self._anns[int(img["id"])]
        masks = np.zeros((len(anns), h, w), dtype=bool)
        boxes = np.zeros((len(anns), 4), dtype=np.float32)
        for k, ann in enumerate(anns):
            masks[k] = segmentation_to_mask(ann["segmentation"], h, w)
            x, y, bw, bh = ann["bbox"] if self.box_source == "bbox" else _mask_bbox_xywh(masks[k])
            boxes[k] = (x, y, x + bw, y + bh)
        labels = [self.category_id_to_label[int(a["category_id"])] for a in anns]
        return {
            "image": image,
            "boxes": boxes,
            "labels": np.array(labels, dtype=np.int64),
            "masks": masks,
            "image_id": int(img["id"]),
            "iscrowd": np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool),
            "annotation_ids": np.array([int(a["id"]) for a in anns], dtype=np.int64),
        }

    def check_trainable(self) -> None:
        """Refuse a folder a model cannot be trained on, before any training step runs.

        On top of :func:`validate_coco` (run when the folder is read) and the image files being
        there: at least one category; every category has at least one annotation that is not a
        crowd (a class never seen cannot be learned, and its AP would be undefined); every image
        file opens and is ``width x height`` as its record says; every polygon vertex lies inside
        its image (1 px slack, as for ``bbox``); every non-crowd segmentation covers at least one
        pixel. Raises :class:`CocoFormatError` naming the file, the id and the field.
        """
        from PIL import Image

        src = str(self.annotation_file)
        if not self.category_ids:
            raise CocoFormatError(f"{src}: field 'categories' is empty: training needs at least one category")
        seen = {cid: 0 for cid in self.category_ids}
        for img, file in zip(self.images, self._paths):
            try:
                with Image.open(file) as pil:
                    size = pil.size
            except (OSError, SyntaxError) as exc:
                raise CocoFormatError(f"{src}: image id={img['id']}: field 'file_name': {file} is not an "
                                      f"image that can be read ({exc})") from None
            if size != (img["width"], img["height"]):
                raise CocoFormatError(f"{src}: image id={img['id']}: fields 'width'/'height': {file} is "
                                      f"{size[0]}x{size[1]} but the record says "
                                      f"{img['width']}x{img['height']}")
        for ann in self.coco["annotations"]:
            img = self._image_by_id[int(ann["image_id"])]
            h, w = img["height"], img["width"]
            where = f"{src}: annotation id={ann['id']}"
            seg = ann["segmentation"]
            if isinstance(seg, list):
                for j, poly in enumerate(seg):
                    xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
                    out = (xy[:, 0] < -_BBOX_SLACK) | (xy[:, 0] > w + _BBOX_SLACK) | \
                        (xy[:, 1] < -_BBOX_SLACK) | (xy[:, 1] > h + _BBOX_SLACK)
                    if out.any():
                        x, y = xy[np.argmax(out)]
                        raise CocoFormatError(f"{where}: field 'segmentation': polygon {j} has the vertex "
                                              f"({x:g}, {y:g}) outside the {w}x{h} image id={img['id']}")
            if ann.get("iscrowd", 0):
                continue
            if rle_area(seg if isinstance(seg, dict) else polygons_to_rle(seg, h, w)) == 0:
                raise CocoFormatError(f"{where}: field 'segmentation': the mask is empty (no pixel of the "
                                      f"{w}x{h} image id={img['id']})")
            seen[int(ann["category_id"])] += 1
        names = dict(zip(self.category_ids, self.class_names[1:]))
        unused = [f"id={cid} name={names[cid]!r}" for cid, n in seen.items() if n == 0]
        if unused:
            raise CocoFormatError(f"{src}: field 'categories': no (non-crowd) annotation of category "
                                  + ", ".join(unused) + ": remove it or annotate it")

    def __repr__(self) -> str:
        return f"CocoFolderDataset({str(self.folder)!r}, {len(self)} images, {self.num_classes} classes)"
