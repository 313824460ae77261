"""Mask R-CNN (He et al. 2017): backbone (+FPN) → RPN → RoI heads, trained with hand-written backprop.

    model = MaskRCNN(shapes(), np.random.default_rng(0))
    losses = model.forward_train(images, targets)     # dict of five scalar losses
    model.zero_grad(); model.backward()                # d(sum of losses) into every Parameter.grad
    detections = model.predict(images)                 # per image: boxes, labels, scores, masks, mask_probs

Images are (H, W, 3) uint8 RGB (or float in [0, 1]); a target is a dict with ``boxes`` (K, 4)
(x1, y1, x2, y2) image pixels, ``labels`` (K,) in 1..C−1 and ``masks`` (K, H, W) bool.

Data flow of ``forward_train`` (shapes for the shapes preset, batch N of 128 x 128 images):
  transform → x (N, 3, 128, 128) → backbone → P2..P5 (N, 64, 32/16/8/4, ...) → RPN → losses
  (objectness, rpn box) and proposals (≤ 250 per image, constants) → RoI heads → losses (classifier,
  box, mask). ``backward`` returns along the same path: the RoI heads' and the RPN's gradients of
  every feature level are summed, then run back through the FPN and the body.

Parameter names equal torchvision's ``maskrcnn`` state_dict keys (``backbone.fpn.inner_blocks.0.0.weight``,
``rpn.head.conv.0.0.weight``, ``roi_heads.box_head.fc6.weight``, ``roi_heads.mask_head.0.0.weight``,
``roi_heads.mask_predictor.conv5_mask.weight`` ...).
"""

from __future__ import annotations

import numpy as np

from minimaskrcnn.config import MaskRCNNConfig
from minimaskrcnn.model.backbone import Backbone
from minimaskrcnn.model.roi_heads import RoIHeads
from minimaskrcnn.model.rpn import RegionProposalNetwork
from minimaskrcnn.model.transform import GeneralizedRCNNTransform
from minimaskrcnn.nn.layers import Module
from minimaskrcnn.ops.masks import paste_masks_in_image

LOSS_NAMES = ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask")


class MaskRCNN(Module):
    """``MaskRCNN(config, rng)``: parameters initialised from ``rng`` (float32); ``astype(np.float64)``
    for gradient checks. ``rng`` is kept and, unless another Generator is passed to
    ``forward_train``, draws the RPN and RoI samples."""

    def __init__(self, config: MaskRCNNConfig, rng: np.random.Generator | None = None):
        super().__init__()
        self.config = config.validate()
        self.rng = rng if rng is not None else np.random.default_rng(0)
        if not isinstance(self.rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        self.backbone = Backbone(config.backbone, self.rng)
        c = self.backbone.out_channels
        self.rpn = RegionProposalNetwork(config.rpn, config.anchors, c, self.rng)
        self.roi_heads = RoIHeads(config.roi_heads, config.mask, c, config.num_classes, self.rng)
        self._train_state = None

    @property
    def dtype(self) -> np.dtype:
        return self.roi_heads.box_predictor.cls_score.weight.data.dtype

    def _transform(self):
        return GeneralizedRCNNTransform(self.config.transform, self.dtype)

    def _check_labels(self, targets):
        for i, t in enumerate(targets):
            if "labels" not in t:  # the transform takes box-only targets (as torchvision's); training cannot
                raise ValueError(f"targets[{i}] has no 'labels': training needs a class per box")
            lab = t["labels"]
            if lab.size and lab.max() >= self.config.num_classes:
                raise ValueError(f"targets[{i}]['labels'] must be < num_classes ({self.config.num_classes}), "
                                 f"got {lab.tolist()}")
            if "masks" not in t:
                raise ValueError(f"targets[{i}] has no 'masks': Mask R-CNN trains on instance masks")

    # -- training ------------------------------------------------------------------------------
    def forward_train(self, images: list, targets: list, rng: np.random.Generator | None = None) -> dict:
        """One forward pass in training mode. Returns the five losses (floats); their gradients are
        kept for ``backward``. Images without objects train (every anchor and RoI is background,
        the mask loss is 0); degenerate GT boxes are dropped with a warning."""
        if targets is None:
            raise ValueError("forward_train needs targets (one dict per image)")
        rng = self.rng if rng is None else rng
        self.train()
        self.clear_cache()
        x, sizes, _, targets = self._transform()(images, targets)
        self._check_labels(targets)
        features = self.backbone(x)
        for i, f in enumerate(features):
            if not np.all(np.isfinite(f)):
                self.clear_cache()
                raise FloatingPointError(f"feature map {i} holds NaN or inf (the parameters have diverged): "
                                         "every loss would be non-finite")
        proposals, rpn_losses = self.rpn(features, x.shape[-2:], sizes, targets, rng)
        pooled = features[: self.backbone.pooled_levels]
        _, roi_losses = self.roi_heads(pooled, proposals, sizes, targets, rng)
        self._train_state = len(features)
        losses = {**rpn_losses, **roi_losses}
        return {k: float(losses[k]) for k in LOSS_NAMES}

    def backward(self, loss_weights: dict | None = None) -> None:
        """Accumulate d(sum_k w_k · loss_k)/dθ into every ``Parameter.grad`` (w_k = 1 by default)."""
        if self._train_state is None:
            raise RuntimeError("backward() needs a forward_train() first")
        w = {k: 1.0 for k in LOSS_NAMES}
        w.update(loss_weights or {})
        d_roi = self.roi_heads.backward((w["loss_classifier"], w["loss_box_reg"], w["loss_mask"]))
        dfeat = self.rpn.backward((w["loss_objectness"], w["loss_rpn_box_reg"]))
        for i, g in enumerate(d_roi):
            dfeat[i] = dfeat[i] + g
        self.backbone.backward(dfeat, input_grad=False)  # the images need no gradient
        self._train_state = None

    # -- inference -----------------------------------------------------------------------------
    def predict(self, images: list) -> list[dict]:
        """Detect and segment. ``images``: list of (H, W, 3) uint8 (or float in [0, 1]).

        Returns per image a dict: ``boxes`` (D, 4) float32 (x1, y1, x2, y2) in that image's pixels,
        ``labels`` (D,) int64 in 1..C−1, ``scores`` (D,) float32 (best first), ``mask_probs`` (D, H, W)
        float32 (the 28 x 28 mask probabilities pasted into the image) and ``masks`` (D, H, W) bool
        (``mask_probs > config.mask.threshold``)."""
        was_training = self.training
        self.eval()
        self.clear_cache()
        try:
            with self.no_grad():  # inference stores no caches
                x, sizes, originals, _ = self._transform()(images)
                features = self.backbone(x)
                proposals, _ = self.rpn(features, x.shape[-2:], sizes)
                dets, _ = self.roi_heads(features[: self.backbone.pooled_levels], proposals, sizes)
        finally:
            if was_training:
                self.train()
        results = []
        for det, size, orig in zip(dets, sizes, originals):
            boxes = self._transform().postprocess_boxes(det["boxes"], size, orig)
            probs = paste_masks_in_image(det["mask_probs"], boxes, orig, convention=self.config.mask.paste) \
                if boxes.shape[0] else np.zeros((0,) + orig, dtype=self.dtype)
            results.append({"boxes": boxes.astype(np.float32), "labels": det["labels"],
                            "scores": det["scores"].astype(np.float32),
                            "masks": probs > self.config.mask.threshold,
                            "mask_probs": probs.astype(np.float32)})
        return results

    def clear_cache(self):
        super().clear_cache()
        self._train_state = None
