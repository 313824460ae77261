"""OSVOS-style propagation: fine-tune the trained Mask R-CNN's heads on the first frame, then segment.

One-Shot Video Object Segmentation (Caelles et al. 2017) takes a network trained offline and
fine-tunes it on the single annotated frame of the test video, then segments every frame on its own.
Here the offline network is the shapes Mask R-CNN and the fine-tuning is done on its RoI heads:

    propagate_osvos(frames, first_mask, model=None, checkpoint=None, steps=40, ...) -> (T, H, W) ID map

1. Re-label: a copy of the model with C = K + 1 classes, class k being target object k (whatever
   its shape). The class-specific rows of ``cls_score``, ``bbox_pred`` and ``mask_fcn_logits`` of
   object k are initialised from the pretrained class the detector gives that object in frame 0
   (the detection with the best mask IoU), the background row from the background row.
2. Augment: ``num_augment`` (16) copies of frame 0 and its ID map under random similarity transforms
   — scale 0.8–1.25, any rotation (the benchmark's objects turn by up to a few radians over a clip),
   shifts up to 20 % of the size, horizontal flips — and brightness/contrast gains of ±10 %: the only
   training data there is. The first copy is frame 0 itself.
3. Cache: the backbone stays frozen, so its FPN features — and the frozen RPN's 100 proposals per
   copy — are computed once, without caches.
4. Fine-tune ``steps`` (40) SGD steps (momentum 0.9, weight decay 1e-4, constant ``lr`` 0.01), with
   mini-batches of ``batch_size`` (2) copies and ``rois_per_image`` (32) sampled RoIs, on the
   ``train_layers``: by default the RoI heads — the box head's MLP, the class/box predictor, the mask
   head and predictor — with the ordinary Mask R-CNN losses (classifier, box regression, mask) of
   ``RoIHeads``. "rpn" adds the RPN's head and losses (on the 7 clips 0–6 of the benchmark it did
   not help: J&F 0.619 against 0.623 without, measured before the re-acquisition rule of step 5
   was added, and it costs more).
5. Segment every frame t ≥ 1 with the fine-tuned model (detections of every class). Object k takes
   a class-k detection with score ≥ ``score_thresh``; while the object was present in frame t−1, only
   detections whose box overlaps the previous mask's box grown by ``gate`` (a fraction of its size)
   may be taken — a look-alike far away is not the object — and the best by score +
   ``overlap_weight`` · box IoU with the previous mask's box wins. An absent object comes back with a
   detection of score ≥ ``reacquire_thresh`` anywhere, or ≥ ``score_thresh`` near where it was last
   seen. No detection: the object is absent in frame t (occluded or out of view — what its ground
   truth says then). Pixels claimed by two objects go to the higher mask probability.

Each frame is segmented from its own detections alone: the masks are the mask head's 28 × 28
predictions pasted into the frame, coarser than what the flow methods carry from frame to frame.
Costs (128 × 128, the shapes model, 2 cores): the fine-tuning is a few seconds per clip, the
segmentation one inference per frame (frames are batched by ``chunk``).
"""

from __future__ import annotations

import numpy as np

from minimaskrcnn.video.common import check_inputs, mask_iou
from minimaskrcnn.video.flow import warp
from minimaskrcnn.weights import resolve_model

__all__ = ["propagate_osvos", "finetune_first_frame", "augment_first_frame"]


# --------------------------------------------------------------------------------------------- augment
def _similarity(h: int, w: int, scale: float, angle: float, shift, flip: bool) -> np.ndarray:
    """(2, 3) map from output pixel (x, y) to source pixel of a similarity transform about the centre."""
    c, s = np.cos(angle), np.sin(angle)
    a = np.array([[c, -s], [s, c]]) / scale
    if flip:
        a = a @ np.diag([-1.0, 1.0])
    centre = np.array([w / 2.0, h / 2.0])
    # source = A (x − centre − shift) + centre
    return np.concatenate([a, (centre - a @ (centre + np.asarray(shift, float)))[:, None]], 1)


def augment_first_frame(frame: np.ndarray, ids: np.ndarray, num: int, rng: np.random.Generator, *,
                        scale=(0.8, 1.25), max_angle: float = np.pi, max_shift: float = 0.2,
                        flip: bool = True, colour: float = 0.1):
    """``num`` augmented copies of (frame (H, W, 3) uint8, ids (H, W) uint8); copy 0 is the original.

    Each copy: a similarity transform about the image centre (scale uniform in ``scale``, rotation
    uniform in ±max_angle radians, shift uniform in ±max_shift of the size, a horizontal flip with
    probability ½), bilinear for the image (borders replicated), nearest for the IDs (0 outside), then
    brightness/contrast gains uniform in 1 ± ``colour``. Returns (images (num, H, W, 3) uint8,
    ids (num, H, W) uint8).
    """
    h, w = ids.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    grid = np.stack([xx, yy], -1)
    images = np.empty((num, h, w, 3), np.uint8)
    out_ids = np.empty((num, h, w), np.uint8)
    images[0], out_ids[0] = frame, ids
    for i in range(1, num):
        m = _similarity(h, w, rng.uniform(*scale), rng.uniform(-max_angle, max_angle),
                        rng.uniform(-max_shift, max_shift, 2) * (w, h), flip and rng.random() < 0.5)
        # Pixel centres map to pixel centres: work on (x + ½, y + ½).
        src = (grid + 0.5) @ m[:, :2].T + m[:, 2] - 0.5
        img, _ = warp(frame.astype(np.float32), (src - grid).astype(np.float32))
        gain, offset = rng.uniform(1 - colour, 1 + colour), rng.uniform(-colour, colour) * 128
        images[i] = np.clip(np.rint((img - 128) * gain + 128 + offset), 0, 255).astype(np.uint8)
        sx, sy = np.rint(src[..., 0]).astype(np.int64), np.rint(src[..., 1]).astype(np.int64)
        inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
        out_ids[i] = np.where(inside, ids[np.clip(sy, 0, h - 1), np.clip(sx, 0, w - 1)], 0)
    return images, out_ids


def _targets(ids: np.ndarray, k: int, min_pixels: int = 4) -> dict:
    """Mask R-CNN target of one ID map: object j (1..k) as class j, when it keeps ≥ min_pixels."""
    from minimaskrcnn.datasets.shapes import masks_to_boxes

    masks = np.stack([ids == j for j in range(1, k + 1)])
    keep = masks.sum((1, 2)) >= min_pixels
    masks = masks[keep]
    return {"boxes": masks_to_boxes(masks), "labels": np.arange(1, k + 1)[keep].astype(np.int64),
            "masks": masks}


# --------------------------------------------------------------------------------------------- model
def _source_classes(model, frame: np.ndarray, ids: np.ndarray, k: int) -> list[int]:
    """Per object, the pretrained class of the detection with the best mask IoU in frame 0 (or, with
    no overlapping detection, the most frequent detected class; class 1 if nothing is detected)."""
    det = model.predict([frame])[0]
    out = []
    for j in range(1, k + 1):
        g = ids == j
        if det["masks"].shape[0]:
            iou = mask_iou(det["masks"], g)
            if iou.max() > 0:
                out.append(int(det["labels"][iou.argmax()]))
                continue
            out.append(int(np.bincount(det["labels"]).argmax()))
        else:
            out.append(1)
    return out


def _relabelled_copy(model, source: list[int], rois_per_image: int | None = None):
    """A copy of ``model`` with classes (background, object 1, ..., object K); object j's predictor
    rows come from pretrained class source[j − 1]; ``rois_per_image`` (optional) the RoI heads'
    training sample per image."""
    from minimaskrcnn.config import with_overrides
    from minimaskrcnn.model import MaskRCNN

    k = len(source)
    overrides = {"num_classes": k + 1,
                 "class_names": ("background",) + tuple(f"object {j}" for j in range(1, k + 1))}
    if rois_per_image is not None:
        overrides["roi_heads.batch_size_per_image"] = int(rois_per_image)
    cfg = with_overrides(model.config, **overrides)
    new = MaskRCNN(cfg, np.random.default_rng(0))
    rows = np.array([0] + list(source))
    state = {}
    for name, value in model.state_dict().items():
        if name.startswith("roi_heads.box_predictor.bbox_pred."):
            value = value.reshape((-1, 4) + value.shape[1:])[rows].reshape((-1,) + value.shape[1:])
        elif name.startswith(("roi_heads.box_predictor.cls_score.",
                              "roi_heads.mask_predictor.mask_fcn_logits.")):
            value = value[rows]
        state[name] = np.array(value, copy=True)
    new.load_state_dict(state)
    new.astype(model.dtype)
    return new


# What may be fine-tuned: the RPN's head and the RoI heads' parts (names of ``RoIHeads`` attributes).
TRAIN_LAYERS = ("rpn", "box_head", "box_predictor", "mask_head", "mask_predictor")
DEFAULT_TRAIN_LAYERS = ("box_head", "box_predictor", "mask_head", "mask_predictor")


def finetune_first_frame(model, frame: np.ndarray, ids: np.ndarray, *, steps: int = 40, batch_size: int = 2,
                         num_augment: int = 16, lr: float = 0.01, rois_per_image: int = 32,
                         train_layers=DEFAULT_TRAIN_LAYERS, augment_options: dict | None = None,
                         seed: int = 0, log=None):
    """Steps 1–4 of the module docstring. Returns (the fine-tuned copy, list of per-step losses).

    frame (H, W, 3) uint8, ids (H, W) ID map with objects 1..K all present. ``model`` is not changed.
    """
    from minimaskrcnn.model import MaskRCNN
    from minimaskrcnn.model.transform import GeneralizedRCNNTransform
    from minimaskrcnn.nn.optim import SGD

    if not isinstance(model, MaskRCNN):
        raise TypeError(f"model must be a minimaskrcnn MaskRCNN to fine-tune, got {type(model).__name__}")
    k = int(ids.max())
    if int(steps) < 0 or int(batch_size) < 1 or int(num_augment) < 1:
        raise ValueError(f"steps must be >= 0 and batch_size, num_augment >= 1, got {steps}, {batch_size}, "
                         f"{num_augment}")
    unknown = [n for n in train_layers if n not in TRAIN_LAYERS]
    if unknown or not train_layers:
        raise ValueError(f"train_layers must be a non-empty subset of {TRAIN_LAYERS}, got {train_layers}")
    rng = np.random.default_rng(seed)
    # One or two objects per image: a small RoI sample (the mask head's cost grows with the number of
    # positive RoIs), set in the copy's config.
    net = _relabelled_copy(model, _source_classes(model, frame, ids, k), rois_per_image=rois_per_image)
    # 2. augmented copies and their targets
    images, aug_ids = augment_first_frame(frame, ids, int(num_augment), rng, **(augment_options or {}))
    targets = [_targets(a, k) for a in aug_ids]
    # 3. frozen backbone and RPN: features and proposals once
    net.eval()
    with net.no_grad():
        transform = GeneralizedRCNNTransform(net.config.transform, net.dtype)
        x, sizes, _, targets = transform(list(images), targets)
        levels = net.backbone(x)
        proposals, _ = net.rpn(levels, x.shape[-2:], sizes)
        features = levels[: net.backbone.pooled_levels]
    # 4. SGD on the RoI heads
    heads = net.roi_heads
    modules = [net.rpn.head if name == "rpn" else getattr(heads, name) for name in train_layers]
    params = [p for mod in modules for p in mod.parameters()]
    opt = SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    history = []
    order = np.arange(len(images))
    for step in range(int(steps)):
        if step * batch_size % len(images) < batch_size:
            rng.shuffle(order)
        pick = np.take(order, np.arange(step * batch_size, (step + 1) * batch_size), mode="wrap")
        batch_sizes, batch_targets = [sizes[i] for i in pick], [targets[i] for i in pick]
        opt.zero_grad()
        losses = {}
        if "rpn" in train_layers:  # the RPN's objectness and box losses on the cached features
            net.rpn.train()
            net.rpn.clear_cache()
            _, losses = net.rpn([f[pick] for f in levels], x.shape[-2:], batch_sizes, batch_targets, rng)
            net.rpn.backward()
        heads.train()
        heads.clear_cache()
        _, roi_losses = heads([f[pick] for f in features], [proposals[i] for i in pick], batch_sizes,
                              batch_targets, rng)
        losses.update(roi_losses)
        # The backbone is frozen: the pooled features' gradients (RoIAlign's backward) are not needed.
        heads.backward(features_grad=False)
        opt.step()
        history.append({name: float(v) for name, v in losses.items()})
        if log is not None:
            log(f"step {step + 1}/{steps}: " + " ".join(f"{n[5:]} {v:.3f}" for n, v in losses.items()))
    heads.clear_cache()
    net.rpn.clear_cache()
    net.eval()
    return net, history


# --------------------------------------------------------------------------------------------- segment
def _overlaps(boxes: np.ndarray, box: np.ndarray, grow: float) -> np.ndarray:
    """(D,) bool: does each of boxes (D, 4) intersect ``box`` grown by ``grow`` × its size per side?"""
    w, h = box[2] - box[0], box[3] - box[1]
    g = box + np.array([-w, -h, w, h]) * grow
    return (boxes[:, 0] < g[2]) & (boxes[:, 2] > g[0]) & (boxes[:, 1] < g[3]) & (boxes[:, 3] > g[1])


def propagate_osvos(frames, first_mask, *, model=None, checkpoint=None, steps: int = 40, batch_size: int = 2,
                    num_augment: int = 16, lr: float = 0.01, rois_per_image: int = 32,
                    train_layers=DEFAULT_TRAIN_LAYERS, augment_options: dict | None = None,
                    score_thresh: float = 0.5, reacquire_thresh: float = 0.9, gate: float = 0.5,
                    overlap_weight: float = 1.0, chunk: int = 8, seed: int = 0) -> np.ndarray:
    """OSVOS-style segmentation (module docstring). frames (T, H, W, 3) uint8, first_mask (H, W) bool or
    ID map; returns (T, H, W) uint8 ID map, frame 0 = first_mask. model / checkpoint: see
    ``weights.resolve_model``; the rest are the fine-tuning and segmentation settings of the docstring (a
    visible object takes the candidate with the best score + overlap_weight · IoU(box, previous box))."""
    from minimaskrcnn.datasets.shapes import masks_to_boxes
    from minimaskrcnn.ops.boxes import box_iou

    frames, ids, k = check_inputs(frames, first_mask)
    model = resolve_model(model, checkpoint)
    net, _ = finetune_first_frame(model, frames[0], ids, steps=steps, batch_size=batch_size,
                                  num_augment=num_augment, lr=lr, rois_per_image=rois_per_image,
                                  train_layers=train_layers, augment_options=augment_options, seed=seed)
    t_len, h, w = frames.shape[:3]
    out = np.zeros((t_len, h, w), np.uint8)
    out[0] = ids
    prev = [None] + [ids == j for j in range(1, k + 1)]
    last = list(prev)  # the last non-empty mask of each object
    for start in range(1, t_len, int(chunk)):
        dets = net.predict(list(frames[start:start + int(chunk)]))
        for t, det in zip(range(start, start + len(dets)), dets):
            best = np.zeros((h, w), np.float32)
            nonempty = det["masks"].any((1, 2))
            for j in range(1, k + 1):
                cand = (det["labels"] == j) & nonempty
                if prev[j].any():
                    box = masks_to_boxes(prev[j][None])[0].astype(np.float64)
                    cand &= (det["scores"] >= score_thresh) & _overlaps(det["boxes"], box, gate)
                    rank = det["scores"] + overlap_weight * box_iou(det["boxes"].astype(np.float64),
                                                                     box[None])[:, 0]
                else:  # absent: a confident detection anywhere, or a likely one where it was last seen
                    box = masks_to_boxes(last[j][None])[0].astype(np.float64)
                    near = _overlaps(det["boxes"], box, gate)
                    cand &= (det["scores"] >= reacquire_thresh) | ((det["scores"] >= score_thresh) & near)
                    rank = det["scores"] + overlap_weight * near
                if not cand.any():
                    continue
                d = np.flatnonzero(cand)[rank[cand].argmax()]
                p = det["mask_probs"][d]
                win = det["masks"][d] & (p > best)
                out[t][win] = j
                best[win] = p[win]
            for j in range(1, k + 1):
                prev[j] = out[t] == j
                if prev[j].any():
                    last[j] = prev[j]
    return out
