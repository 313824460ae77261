"""From a list of images to one padded batch, and from batch coordinates back to the images
(torchvision ``GeneralizedRCNNTransform``).

Frames: an input image is (H, W, 3) RGB, uint8 in [0, 255] or float in [0, 1]; after ``resize`` it is
(H', W') with H' = floor(H·s), W' = floor(W·s), s = min(min_size / min(H, W), max_size / max(H, W));
boxes are scaled by (W'/W, H'/H) so they stay in the resized image's pixel frame. The batch is
(N, 3, Hp, Wp) with Hp, Wp the largest H', W' rounded up to a multiple of ``size_divisible``; each
image sits in the top-left corner and the rest is zero (after normalisation). ``image_sizes`` keeps
every (H', W'): boxes are clipped to them, not to the padded size.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from minimaskrcnn.config import TransformConfig


def _source_index(out_size: int, in_size: int):
    """Bilinear source coordinates for align_corners=False: src = (dst + 0.5)·(in/out) − 0.5, clamped
    at 0 (torch ``area_pixel_compute_source_index``). Returns (i0, i1, lambda) for every output index."""
    scale = in_size / out_size
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, src - i0


def resize_bilinear(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """(C, H, W) float image → (C, out_h, out_w), bilinear, align_corners=False (torch semantics)."""
    _, H, W = image.shape
    if (out_h, out_w) == (H, W):
        return image.copy()
    y0, y1, ly = _source_index(out_h, H)
    x0, x1, lx = _source_index(out_w, W)
    ly = ly.astype(image.dtype)[None, :, None]
    lx = lx.astype(image.dtype)[None, None, :]
    top = image[:, y0, :]
    bot = image[:, y1, :]
    rows = top * (1 - ly) + bot * ly
    return rows[:, :, x0] * (1 - lx) + rows[:, :, x1] * lx


def resize_nearest(masks: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """(K, H, W) masks → (K, out_h, out_w), nearest: src = min(floor(dst·in/out), in − 1) (torch)."""
    _, H, W = masks.shape
    yi = np.minimum(np.floor(np.arange(out_h) * (H / out_h)).astype(np.int64), H - 1)
    xi = np.minimum(np.floor(np.arange(out_w) * (W / out_w)).astype(np.int64), W - 1)
    return masks[:, yi][:, :, xi]


def resize_boxes(boxes: np.ndarray, original_size, new_size) -> np.ndarray:
    """Scale (K, 4) boxes from an image of ``original_size`` (h, w) to ``new_size`` (h, w); the ratios
    are computed in float32 as torchvision does."""
    rh = np.float32(new_size[0]) / np.float32(original_size[0])
    rw = np.float32(new_size[1]) / np.float32(original_size[1])
    scale = np.array([rw, rh, rw, rh], dtype=boxes.dtype)
    return boxes * scale


class GeneralizedRCNNTransform:
    """Normalise, resize, batch. ``dtype`` is the dtype of the batch (the model's parameter dtype)."""

    def __init__(self, cfg: TransformConfig, dtype=np.float32):
        self.cfg = cfg
        self.dtype = np.dtype(dtype)

    # -- checks --------------------------------------------------------------------------------
    @staticmethod
    def check_image(image, i: int) -> None:
        if not isinstance(image, np.ndarray):
            raise TypeError(f"images[{i}] must be a numpy.ndarray, got {type(image).__name__}")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"images[{i}] must have shape (H, W, 3) (RGB, channels last), got {image.shape}")
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"images[{i}] is empty: shape {image.shape}")
        if image.dtype != np.uint8 and image.dtype not in (np.float32, np.float64):
            raise TypeError(f"images[{i}] must be uint8 in [0, 255] or float32/float64 in [0, 1], "
                            f"got {image.dtype}")
        if image.dtype != np.uint8:
            # torchvision's convention: float images are in [0, 1] (uint8 ones are divided by 255
            # here). A float image in [0, 255] would be normalised 255 times too bright and give
            # no detections without a word, so it is refused.
            if not np.all(np.isfinite(image)):
                raise ValueError(f"images[{i}] holds NaN or inf; a float image must lie in [0, 1]")
            lo, hi = float(image.min()), float(image.max())
            if lo < 0.0 or hi > 1.0:
                hint = " (it looks like [0, 255]: divide by 255 or pass uint8)" if 1.0 < hi <= 255.0 else ""
                raise ValueError(f"images[{i}] is {image.dtype} with values in [{lo:g}, {hi:g}]; a float "
                                 f"image must lie in [0, 1]{hint}")

    @staticmethod
    def check_target(target, i: int, image_shape) -> dict:
        """Validate one target dict and drop degenerate GT (zero-area or entirely outside the image)
        with a warning. Returns a new dict with boxes (K,4) float, labels (K,) int64, masks (K,H,W)
        bool (labels and masks optional: like torchvision's transform, this one only needs the
        boxes; the model's training step asks for labels and masks)."""
        if not isinstance(target, dict):
            raise TypeError(f"targets[{i}] must be a dict with boxes, labels (and masks), got "
                            f"{type(target).__name__}")
        if "boxes" not in target:
            raise ValueError(f"targets[{i}] has no 'boxes'")
        boxes = np.asarray(target["boxes"], dtype=np.float64).reshape(-1, 4) if np.size(target["boxes"]) \
            else np.zeros((0, 4))
        if not np.all(np.isfinite(boxes)):
            raise ValueError(f"targets[{i}]['boxes'] holds NaN or inf")
        out = {"boxes": boxes}
        if "labels" in target:
            labels = np.asarray(target["labels"]).reshape(-1)
            if not np.issubdtype(labels.dtype, np.integer) and labels.size:
                raise TypeError(f"targets[{i}]['labels'] must be integers, got {labels.dtype}")
            labels = labels.astype(np.int64)
            if labels.shape[0] != boxes.shape[0]:
                raise ValueError(f"targets[{i}]: {boxes.shape[0]} boxes but {labels.shape[0]} labels")
            if np.any(labels < 1):
                raise ValueError(f"targets[{i}]['labels'] must be >= 1 (0 is background), "
                                 f"got {labels.tolist()}")
            out["labels"] = labels
        if "masks" in target:
            masks = np.asarray(target["masks"])
            if masks.shape != (boxes.shape[0],) + tuple(image_shape[:2]):
                raise ValueError(f"targets[{i}]['masks'] must have shape (K, H, W) = "
                                 f"{(boxes.shape[0],) + tuple(image_shape[:2])}, got {masks.shape}")
            out["masks"] = masks.astype(bool)
        # Degenerate GT boxes would give infinite regression targets (log of 0): drop them.
        h, w = image_shape[:2]
        bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]) | (boxes[:, 2] <= 0) | \
            (boxes[:, 3] <= 0) | (boxes[:, 0] >= w) | (boxes[:, 1] >= h)
        if np.any(bad):
            warnings.warn(f"targets[{i}]: dropped {int(bad.sum())} ground-truth box(es) with zero area or "
                          f"outside the image: {boxes[bad].tolist()}", stacklevel=3)
            out = {k: v[~bad] for k, v in out.items()}
        return out

    # -- forward -------------------------------------------------------------------------------
    def to_chw(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 or [0,1] float → normalised (3, H, W) in ``self.dtype``."""
        x = image.astype(self.dtype)
        if image.dtype == np.uint8:
            x = x / self.dtype.type(255)
        mean = np.asarray(self.cfg.image_mean, dtype=self.dtype)
        std = np.asarray(self.cfg.image_std, dtype=self.dtype)
        return np.ascontiguousarray(((x - mean) / std).transpose(2, 0, 1))

    def resize(self, image: np.ndarray, target: dict | None):
        """(3, H, W) → (3, H', W') and the target's boxes/masks with it."""
        h, w = image.shape[-2:]
        if not self.cfg.resize:
            return image, target
        scale = min(self.cfg.min_size / min(h, w), self.cfg.max_size / max(h, w))
        nh, nw = int(math.floor(h * scale)), int(math.floor(w * scale))
        image = resize_bilinear(image, nh, nw)
        if target is not None:
            target = dict(target)
            target["boxes"] = resize_boxes(target["boxes"], (h, w), (nh, nw))
            if "masks" in target:
                target["masks"] = resize_nearest(target["masks"], nh, nw)
        return image, target

    def batch(self, images: list[np.ndarray]) -> np.ndarray:
        """Zero-pad to a common size, a multiple of ``size_divisible``: (N, 3, Hp, Wp)."""
        d = self.cfg.size_divisible
        hp = int(math.ceil(max(im.shape[1] for im in images) / d) * d)
        wp = int(math.ceil(max(im.shape[2] for im in images) / d) * d)
        out = np.zeros((len(images), 3, hp, wp), dtype=self.dtype)
        for i, im in enumerate(images):
            out[i, :, : im.shape[1], : im.shape[2]] = im
        return out

    def __call__(self, images: list, targets: list | None = None):
        """Returns ``(batch (N,3,Hp,Wp), image_sizes [(H', W')], original_sizes [(H, W)], targets)``,
        targets with boxes in the resized frame and cast to the batch dtype."""
        if not isinstance(images, (list, tuple)) or len(images) == 0:
            raise TypeError("images must be a non-empty list of (H, W, 3) arrays")
        if targets is not None and len(targets) != len(images):
            raise ValueError(f"got {len(images)} images but {len(targets)} targets")
        chw, sizes, originals, new_targets = [], [], [], []
        for i, image in enumerate(images):
            self.check_image(image, i)
            t = self.check_target(targets[i], i, image.shape) if targets is not None else None
            originals.append((int(image.shape[0]), int(image.shape[1])))
            x, t = self.resize(self.to_chw(image), t)
            chw.append(x)
            sizes.append((int(x.shape[1]), int(x.shape[2])))
            if t is not None:
                t["boxes"] = t["boxes"].astype(self.dtype)
                new_targets.append(t)
        return self.batch(chw), sizes, originals, (new_targets if targets is not None else None)

    @staticmethod
    def postprocess_boxes(boxes: np.ndarray, image_size, original_size) -> np.ndarray:
        """Boxes from the resized frame (H', W') back to the original image's pixels (H, W)."""
        return resize_boxes(boxes, image_size, original_size)
