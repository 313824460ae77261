"""RoI heads: the box branch (Fast R-CNN) and the mask branch (Mask R-CNN), torchvision's ``RoIHeads``.

Training, per image:
  1. ``roi_targets``: GT boxes join the proposals; the Matcher (0.5 / 0.5) gives each proposal a GT
     (label = its class) or background; a balanced sample of ``batch_size_per_image`` RoIs with at
     most ``positive_fraction`` positives is kept; regression targets encode the matched GT
     (weights 10, 10, 5, 5).
  2. Box branch: MultiScaleRoIAlign 7x7 → TwoMLPHead (fc6, fc7 + ReLU) → ``cls_score`` (C logits)
     and ``bbox_pred`` (4C deltas, one box per class).
       loss_classifier = mean cross-entropy over the sampled RoIs
       loss_box_reg    = sum over positives of smooth_l1(deltas of the GT class − target, β) / #sampled
  3. Mask branch on the positive RoIs: MultiScaleRoIAlign 14x14 → 4 x (conv3x3 + ReLU) →
     ConvTranspose 2x2/2 + ReLU → 1x1 conv to C channels of 28x28 logits; targets are the GT masks
     resampled into each RoI by RoIAlign (``project_masks_on_boxes``); loss ``mask.loss`` (config).
Backward: each loss's gradient runs back through its head and the pooler's backward scatters it into
the feature maps; the result is the gradient of every pooled level. Proposals and targets are
constants.

Inference: softmax scores, per-class decoded boxes clipped to the image, score threshold, removal of
tiny boxes, per-class NMS, the ``detections_per_img`` best; the mask branch runs on those boxes and
the detected class's channel gives the mask probabilities (pasted into the image by the caller).
"""

from __future__ import annotations

import numpy as np

from minimaskrcnn.config import MaskConfig, RoIHeadsConfig
from minimaskrcnn.model.backbone import kaiming_normal_fan_out
from minimaskrcnn.model.matcher import BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, Matcher
from minimaskrcnn.model.sampler import BalancedPositiveNegativeSampler
from minimaskrcnn.nn.layers import Conv2d, ConvTranspose2d, Linear, Module, ReLU, Sequential
from minimaskrcnn.nn.losses import sigmoid_binary_cross_entropy_with_logits, smooth_l1, softmax_cross_entropy
from minimaskrcnn.ops.box_coder import BoxCoder
from minimaskrcnn.ops.boxes import box_iou, clip_boxes_to_image, remove_small_boxes
from minimaskrcnn.ops.masks import project_masks_on_boxes
from minimaskrcnn.ops.nms import batched_nms
from minimaskrcnn.ops.poolers import multiscale_roi_align, multiscale_roi_align_backward


class TwoMLPHead(Module):
    """flatten → fc6 → ReLU → fc7 → ReLU: (R, C, 7, 7) → (R, representation_size)."""

    def __init__(self, in_features: int, representation_size: int, rng: np.random.Generator):
        super().__init__()
        self.fc6 = Linear(in_features, representation_size, rng=rng)
        self.relu6 = ReLU()
        self.fc7 = Linear(representation_size, representation_size, rng=rng)
        self.relu7 = ReLU()

    def forward(self, x):
        self._push(x.shape)
        flat = x.reshape(x.shape[0], int(np.prod(x.shape[1:])))  # (R, C·7·7); R may be 0
        return self.relu7(self.fc7(self.relu6(self.fc6(flat))))

    def backward(self, dout):
        shape = self._pop()
        d = self.fc7.backward(self.relu7.backward(dout))
        return self.fc6.backward(self.relu6.backward(d)).reshape(shape)


class FastRCNNPredictor(Module):
    """``cls_score`` (R, C) and ``bbox_pred`` (R, 4C) from the box features."""

    def __init__(self, in_channels: int, num_classes: int, rng: np.random.Generator):
        super().__init__()
        self.cls_score = Linear(in_channels, num_classes, rng=rng)
        self.bbox_pred = Linear(in_channels, num_classes * 4, rng=rng)

    def forward(self, x):
        return self.cls_score(x), self.bbox_pred(x)

    def backward(self, dout):
        return self.cls_score.backward(dout[0]) + self.bbox_pred.backward(dout[1])


class MaskRCNNHeads(Sequential):
    """``i.0`` conv3x3 (dilation d, padding d) + ``i.1`` ReLU per layer; kaiming_normal(fan_out), bias 0."""

    def __init__(self, in_channels: int, layers: tuple, dilation: int, rng: np.random.Generator):
        blocks, c = [], in_channels
        for c_out in layers:
            conv = Conv2d(c, c_out, 3, padding=dilation, dilation=dilation, rng=rng)
            kaiming_normal_fan_out(conv.weight, rng)
            conv.bias.data[...] = 0
            blocks.append(Sequential(conv, ReLU()))
            c = c_out
        super().__init__(*blocks)


class MaskRCNNPredictor(Module):
    """``conv5_mask`` ConvTranspose 2x2 stride 2 (14 → 28) + ReLU, ``mask_fcn_logits`` 1x1 to C."""

    def __init__(self, in_channels: int, dim_reduced: int, num_classes: int, rng: np.random.Generator):
        super().__init__()
        self.conv5_mask = ConvTranspose2d(in_channels, dim_reduced, 2, stride=2, rng=rng)
        self.relu5 = ReLU()
        self.mask_fcn_logits = Conv2d(dim_reduced, num_classes, 1, rng=rng)
        for layer in (self.conv5_mask, self.mask_fcn_logits):
            kaiming_normal_fan_out(layer.weight, rng)
            layer.bias.data[...] = 0

    def forward(self, x):
        return self.mask_fcn_logits(self.relu5(self.conv5_mask(x)))

    def backward(self, dout):
        return self.conv5_mask.backward(self.relu5.backward(self.mask_fcn_logits.backward(dout)))


def _log_softmax(z: np.ndarray, axis: int) -> np.ndarray:
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(-z) = inf for z << 0 gives 1 / inf = 0, as it should
        return 1.0 / (1.0 + np.exp(-z))


def softmax_mask_scores(logits: np.ndarray, labels: np.ndarray, rule: str) -> np.ndarray:
    """Per-pixel mask scores of a softmax mask head; the mask is ``score > 0.5`` (after pasting).

    logits (D, C, M, M), labels (D,) the detected class k of each box, p = softmax over the C channels.
    rule ``"p_k"``: p_k (k must hold the majority of the probability); ``"argmax"``:
    p_k / (p_k + max_{j != k} p_j) = sigmoid(z_k - max_{j != k} z_j), above 0.5 exactly where k wins
    the argmax over all channels; ``"k_vs_bg"``: p_k / (p_k + p_0) = sigmoid(z_k - z_0), class k against
    background alone (the other classes' channels ignored). Returns (D, M, M)."""
    rows = np.arange(labels.size)
    if rule == "p_k":
        return np.exp(_log_softmax(logits, axis=1))[rows, labels]
    z_k = logits[rows, labels]
    if rule == "k_vs_bg":
        return _sigmoid(z_k - logits[:, 0])
    if rule == "argmax":
        rivals = logits.copy()
        rivals[rows, labels] = -np.inf
        return _sigmoid(z_k - rivals.max(axis=1))
    raise ValueError(f"rule must be 'p_k', 'argmax' or 'k_vs_bg', got {rule!r}")


def mask_loss(logits: np.ndarray, labels: np.ndarray, targets: np.ndarray, kind: str):
    """Mask loss and its gradient w.r.t. all logits.

    logits (K, C, M, M); labels (K,) GT class of each positive RoI; targets (K, M, M) in [0, 1].
    kind "sigmoid": mean BCE of channel labels[k] against t; "softmax": mean over pixels of
    −(t·log p_k + (1 − t)·log p_0), p = softmax over the C channels (see ``MaskConfig``).
    Returns ``(loss, dlogits)``; with K = 0 the loss is 0 (torchvision: ``logits.sum() * 0``)."""
    dlogits = np.zeros_like(logits)
    K = logits.shape[0]
    if K == 0:
        return 0.0, dlogits
    rows = np.arange(K)
    t = targets.astype(logits.dtype)
    if kind == "sigmoid":
        loss, d = sigmoid_binary_cross_entropy_with_logits(logits[rows, labels], t)
        dlogits[rows, labels] = d
        return loss, dlogits
    # softmax: q puts t on channel k and 1 − t on channel 0; d/dz of the cross-entropy is p − q.
    logp = _log_softmax(logits, axis=1)
    n = t.size
    loss = -(t * logp[rows, labels] + (1 - t) * logp[:, 0]).sum() / n
    dlogits = np.exp(logp)
    dlogits[rows, labels] -= t
    dlogits[:, 0] -= 1 - t
    return float(loss), dlogits / logits.dtype.type(n)


class RoIHeads(Module):
    def __init__(self, cfg: RoIHeadsConfig, mask_cfg: MaskConfig, in_channels: int, num_classes: int,
                 rng: np.random.Generator):
        super().__init__()
        self.cfg, self.mask_cfg, self.num_classes = cfg, mask_cfg, num_classes
        r = cfg.box_output_size
        self.box_head = TwoMLPHead(in_channels * r * r, cfg.representation_size, rng)
        self.box_predictor = FastRCNNPredictor(cfg.representation_size, num_classes, rng)
        self.mask_head = MaskRCNNHeads(in_channels, tuple(mask_cfg.layers), mask_cfg.dilation, rng)
        self.mask_predictor = MaskRCNNPredictor(mask_cfg.layers[-1], mask_cfg.layers[-1], num_classes, rng)
        self.box_coder = BoxCoder(cfg.box_coder_weights)
        self.matcher = Matcher(cfg.fg_iou_thresh, cfg.bg_iou_thresh, False)
        self.sampler = BalancedPositiveNegativeSampler(cfg.batch_size_per_image, cfg.positive_fraction)

    def _pool(self, features, boxes, image_sizes, size):
        return multiscale_roi_align(features, boxes, image_sizes, size, self.cfg.sampling_ratio,
                                    aligned=self.cfg.aligned, pooler=self.cfg.pooler)

    # -- training targets ----------------------------------------------------------------------
    def roi_targets(self, proposals: list, targets: list, rng: np.random.Generator):
        """Per image: the sampled RoIs (R_i, 4), their labels (R_i,), the matched GT index (R_i,)
        and regression targets (R_i, 4)."""
        out = []
        for props, t in zip(proposals, targets):
            gt, gt_labels = t["boxes"], t["labels"]
            # 1. GT boxes are proposals too: every GT then has at least one perfect positive RoI.
            if self.cfg.add_gt_as_proposals:
                props = np.concatenate([props, gt.astype(props.dtype)])
            # 2. Match; background below 0.5; ignored in between (none with 0.5 / 0.5).
            if gt.shape[0] == 0:
                matched = np.zeros(props.shape[0], dtype=np.int64)
                labels = np.zeros(props.shape[0], dtype=np.int64)
            else:
                m = self.matcher(box_iou(gt, props))
                matched = np.maximum(m, 0)
                labels = gt_labels[matched].astype(np.int64)
                labels[m == BELOW_LOW_THRESHOLD] = 0
                labels[m == BETWEEN_THRESHOLDS] = -1
            out.append((props, labels, matched))
        # 3. Balanced sample (in index order, as torchvision's torch.where).
        pos, neg = self.sampler([lab for _, lab, _ in out], rng)
        sampled = []
        for (props, labels, matched), p, n, t in zip(out, pos, neg, targets):
            keep = np.flatnonzero(p | n)
            props, labels, matched = props[keep], labels[keep], matched[keep]
            gt = t["boxes"].astype(props.dtype)
            matched_gt = gt[matched] if gt.shape[0] else np.zeros_like(props)
            sampled.append((props, labels, matched, self.box_coder.encode(matched_gt, props)))
        return sampled

    # -- forward -------------------------------------------------------------------------------
    def forward(self, features: list, proposals: list, image_sizes: list, targets: list | None = None,
                rng: np.random.Generator | None = None):
        """features: the pooled levels; proposals: list of (P_i, 4). Training (with targets) returns
        ``({}, losses)``; inference returns ``(detections, {})`` with per image ``boxes`` (D, 4),
        ``labels`` (D,), ``scores`` (D,) and ``mask_probs`` (D, M, M) in the batch frame."""
        if self.training and targets is not None:
            return {}, self._forward_train(features, proposals, image_sizes, targets, rng)
        return self._forward_inference(features, proposals, image_sizes), {}

    def _forward_train(self, features, proposals, image_sizes, targets, rng):
        sampled = self.roi_targets(proposals, targets, rng)
        rois = [s[0] for s in sampled]
        labels = np.concatenate([s[1] for s in sampled])
        reg_targets = np.concatenate([s[3] for s in sampled])
        # Box branch
        pooled, pool_cache = self._pool(features, rois, image_sizes, self.cfg.box_output_size)
        class_logits, box_regression = self.box_predictor(self.box_head(pooled))
        if labels.size:
            loss_cls, d_cls = softmax_cross_entropy(class_logits, labels)
        else:  # no RoI at all (no proposal survived and no GT): nothing to classify, not NaN
            loss_cls, d_cls = 0.0, np.zeros_like(class_logits)
        pos = np.flatnonzero(labels > 0)
        n_sampled = max(labels.size, 1)
        reg = box_regression.reshape(labels.size, self.num_classes, 4)
        loss_box, d_pos = smooth_l1(reg[pos, labels[pos]], reg_targets[pos], beta=self.cfg.smooth_l1_beta,
                                    reduction="sum")
        d_reg = np.zeros_like(reg)
        d_reg[pos, labels[pos]] = d_pos / n_sampled
        losses = {"loss_classifier": loss_cls, "loss_box_reg": loss_box / n_sampled}
        # Mask branch on the positives of every image
        mask_rois, mask_labels, positives = [], [], []
        for (props, lab, matched, _), t in zip(sampled, targets):
            p = np.flatnonzero(lab > 0)
            mask_rois.append(props[p])
            mask_labels.append(lab[p])
            if p.size:
                positives.append((t["masks"], props[p], matched[p]))
        mask_targets = self._mask_targets(positives)
        mask_labels = np.concatenate(mask_labels)
        mask_cache = None
        if mask_labels.size:
            mpooled, mpool_cache = self._pool(features, mask_rois, image_sizes, self.mask_cfg.output_size)
            mask_logits = self.mask_predictor(self.mask_head(mpooled))
            loss_mask, d_mask = mask_loss(mask_logits, mask_labels, np.concatenate(mask_targets),
                                          self.mask_cfg.loss)
            mask_cache = (d_mask, mpool_cache)
        else:
            loss_mask = 0.0  # no positive RoI in the batch: the mask branch is not run
        losses["loss_mask"] = loss_mask
        self._push(((d_cls, d_reg.reshape(box_regression.shape)), pool_cache, mask_cache,
                            [f.shape for f in features]))
        return losses

    def _mask_targets(self, positives: list) -> list:
        """The M×M mask targets of every positive RoI, in order: ``positives`` holds, per image with
        positives, (gt_masks (K, H, W), boxes (P, 4), matched GT index (P,)). Consecutive images whose
        masks have the same size share one RoIAlign call (their masks stacked, the indices shifted):
        the same targets as one call per image, at the cost of one."""
        M = 2 * self.mask_cfg.output_size
        out, run = [], []

        def flush():
            if run:
                masks = np.concatenate([m for m, _, _ in run])
                offsets = np.cumsum([0] + [m.shape[0] for m, _, _ in run[:-1]])
                boxes = np.concatenate([b for _, b, _ in run])
                matched = np.concatenate([idx + off for (_, _, idx), off in zip(run, offsets)])
                out.append(project_masks_on_boxes(masks, boxes, M, matched_idxs=matched,
                                                  aligned=self.mask_cfg.targets_aligned))
                run.clear()

        for item in positives:
            if run and item[0].shape[1:] != run[0][0].shape[1:]:
                flush()
            run.append(item)
        flush()
        return out

    def backward(self, dout=(1.0, 1.0, 1.0), features_grad: bool = True):
        """dout = upstream weights of (loss_classifier, loss_box_reg, loss_mask). Returns the
        gradient of every pooled feature level; with ``features_grad=False`` (a frozen backbone, as
        when fine-tuning the heads alone) the RoIAlign backward is skipped and None is returned."""
        (d_cls, d_reg), pool_cache, mask_cache, shapes = self._pop()
        dfeat = [np.zeros(s, dtype=d_cls.dtype) for s in shapes] if features_grad else None
        if mask_cache is not None:
            d_mask, mpool_cache = mask_cache
            d_pooled = self.mask_head.backward(self.mask_predictor.backward(d_mask * dout[2]))
            if features_grad:
                for acc, g in zip(dfeat, multiscale_roi_align_backward(d_pooled, mpool_cache)):
                    acc += g
        d_pooled = self.box_head.backward(self.box_predictor.backward((d_cls * dout[0], d_reg * dout[1])))
        if features_grad:
            for acc, g in zip(dfeat, multiscale_roi_align_backward(d_pooled, pool_cache)):
                acc += g
        return dfeat

    def _forward_inference(self, features, proposals, image_sizes):
        C = self.num_classes
        pooled, _ = self._pool(features, proposals, image_sizes, self.cfg.box_output_size)
        class_logits, box_regression = self.box_predictor(self.box_head(pooled))
        scores_all = np.exp(_log_softmax(class_logits, axis=1))
        boxes_all = self.box_coder.decode(box_regression, np.concatenate(proposals)) if pooled.shape[0] \
            else np.zeros((0, 4 * C), dtype=pooled.dtype)
        detections, start = [], 0
        for props, (h, w) in zip(proposals, image_sizes):
            n = props.shape[0]
            boxes = clip_boxes_to_image(boxes_all[start:start + n].reshape(-1, 4), (h, w)).reshape(n, C, 4)
            scores = scores_all[start:start + n]
            start += n
            labels = np.broadcast_to(np.arange(C), (n, C))
            # 1. one candidate per (RoI, foreground class)
            boxes, scores, labels = boxes[:, 1:].reshape(-1, 4), scores[:, 1:].ravel(), labels[:, 1:].ravel()
            # 2. score threshold, tiny boxes out, per-class NMS, the best detections_per_img
            keep = np.flatnonzero(scores > self.cfg.score_thresh)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = remove_small_boxes(boxes, self.cfg.min_box_size)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = batched_nms(boxes, scores, labels, self.cfg.nms_thresh)[: self.cfg.detections_per_img]
            detections.append({"boxes": boxes[keep], "labels": labels[keep].astype(np.int64),
                                "scores": scores[keep]})
        # 3. masks of the detections: the detected class's channel
        M = 2 * self.mask_cfg.output_size
        if sum(d["boxes"].shape[0] for d in detections) == 0:
            for d in detections:
                d["mask_probs"] = np.zeros((0, M, M), dtype=pooled.dtype)
            return detections
        mpooled, _ = self._pool(features, [d["boxes"] for d in detections], image_sizes,
                                self.mask_cfg.output_size)
        logits = self.mask_predictor(self.mask_head(mpooled))
        labels = np.concatenate([d["labels"] for d in detections])
        rows = np.arange(labels.size)
        if self.mask_cfg.loss == "sigmoid":
            probs = _sigmoid(logits[rows, labels])
        else:
            probs = softmax_mask_scores(logits, labels, self.mask_cfg.softmax_rule)
        start = 0
        for d in detections:
            n = d["boxes"].shape[0]
            d["mask_probs"] = probs[start:start + n]
            start += n
        return detections

