"""Region Proposal Network (Ren et al. 2015) as torchvision's ``RegionProposalNetwork``.

One small head slides over every feature level (the same weights on each: its layers keep a cache
*stack*, so backward pops the levels in reverse order). At each location it scores A anchors
(objectness logit) and regresses 4 deltas per anchor.

Training: ``anchor_targets`` labels anchors with the Matcher (IoU >= 0.7 positive, < 0.3 negative,
each GT's best anchors positive), a balanced sample of ``batch_size_per_image`` anchors is drawn, and

    loss_objectness  = mean over sampled anchors of BCE-with-logits(objectness, label)
    loss_rpn_box_reg = sum over sampled positives of smooth_l1(deltas − encode(gt, anchor), β) / #sampled

``proposal_layer`` (no gradient: proposals are treated as constants, as in the paper) decodes every
anchor, keeps the ``pre_nms_top_n`` best per level, clips to the image, removes tiny and low-score
boxes, runs NMS per level and keeps the ``post_nms_top_n`` best per image.

Orderings (torchvision's): the head's (N, A, h, w) objectness and (N, 4A, h, w) deltas are flattened
to rows ``(y·w + x)·A + a`` per level — the anchor order of ``AnchorGenerator.grid_anchors`` — and
levels are concatenated in order.
"""

from __future__ import annotations

import numpy as np

from minimaskrcnn.config import AnchorConfig, RPNConfig
from minimaskrcnn.model.matcher import BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, Matcher
from minimaskrcnn.model.sampler import BalancedPositiveNegativeSampler
from minimaskrcnn.nn.layers import Conv2d, Module, ReLU, Sequential
from minimaskrcnn.nn.losses import sigmoid_binary_cross_entropy_with_logits, smooth_l1
from minimaskrcnn.ops.anchors import AnchorGenerator
from minimaskrcnn.ops.box_coder import BoxCoder
from minimaskrcnn.ops.boxes import box_iou, clip_boxes_to_image, remove_small_boxes
from minimaskrcnn.ops.nms import batched_nms


class RPNHead(Module):
    """conv 3x3 + ReLU (``conv.0.0``), then 1x1 ``cls_logits`` (A channels) and 1x1 ``bbox_pred``
    (4A channels). All weights N(0, 0.01²), biases 0 (torchvision's init)."""

    def __init__(self, in_channels: int, num_anchors: int, rng: np.random.Generator):
        super().__init__()
        self.conv = Sequential(Sequential(Conv2d(in_channels, in_channels, 3, padding=1, rng=rng), ReLU()))
        self.cls_logits = Conv2d(in_channels, num_anchors, 1, rng=rng)
        self.bbox_pred = Conv2d(in_channels, 4 * num_anchors, 1, rng=rng)
        for conv in (self.conv[0][0], self.cls_logits, self.bbox_pred):
            conv.weight.data[...] = rng.normal(0.0, 0.01, size=conv.weight.data.shape)
            conv.bias.data[...] = 0

    def forward(self, x):
        t = self.conv(x)
        return self.cls_logits(t), self.bbox_pred(t)

    def backward(self, dout):
        dlogits, ddeltas = dout
        dt = self.cls_logits.backward(dlogits) + self.bbox_pred.backward(ddeltas)
        return self.conv.backward(dt)


def _flatten(x: np.ndarray, c: int) -> np.ndarray:
    """(N, A·c, h, w) → (N, h·w·A, c), rows (y·w + x)·A + a (torchvision ``permute_and_flatten``)."""
    n, ac, h, w = x.shape
    return x.reshape(n, ac // c, c, h, w).transpose(0, 3, 4, 1, 2).reshape(n, -1, c)


def _unflatten(d: np.ndarray, c: int, shape) -> np.ndarray:
    """Inverse of ``_flatten`` for the gradient: (N, h·w·A, c) → (N, A·c, h, w)."""
    n, ac, h, w = shape
    return np.ascontiguousarray(d.reshape(n, h, w, ac // c, c).transpose(0, 3, 4, 1, 2).reshape(shape))


class RegionProposalNetwork(Module):
    def __init__(self, cfg: RPNConfig, anchor_cfg: AnchorConfig, in_channels: int, rng: np.random.Generator):
        super().__init__()
        self.cfg = cfg
        n_levels = len(anchor_cfg.sizes)
        ratios = (tuple(anchor_cfg.aspect_ratios),) * n_levels
        self.anchor_generator = AnchorGenerator(anchor_cfg.sizes, ratios)
        num_anchors = self.anchor_generator.num_anchors_per_location()[0]
        self.head = RPNHead(in_channels, num_anchors, rng)
        self.box_coder = BoxCoder(cfg.box_coder_weights)
        self.matcher = Matcher(cfg.fg_iou_thresh, cfg.bg_iou_thresh, cfg.allow_low_quality_matches)
        self.sampler = BalancedPositiveNegativeSampler(cfg.batch_size_per_image, cfg.positive_fraction)

    # -- training targets ----------------------------------------------------------------------
    def anchor_targets(self, anchors: np.ndarray, targets: list[dict]):
        """Per image: labels (A_total,) float 1 / 0 / −1 (ignored) and the matched GT box (A_total, 4).

        1. IoU between every GT box and every anchor (anchors outside the image are kept, as torchvision).
        2. Matcher: best GT per anchor, thresholds 0.7 / 0.3, low-quality matches.
        3. Label 1 for matched, 0 below the low threshold, −1 in between.
        An image without GT has every anchor negative."""
        labels, matched_boxes = [], []
        for t in targets:
            gt = t["boxes"]
            if gt.shape[0] == 0:
                labels.append(np.zeros(anchors.shape[0], dtype=anchors.dtype))
                matched_boxes.append(np.zeros_like(anchors))
                continue
            matches = self.matcher(box_iou(gt, anchors))
            matched_boxes.append(gt[np.maximum(matches, 0)])
            lab = (matches >= 0).astype(anchors.dtype)
            lab[matches == BELOW_LOW_THRESHOLD] = 0.0
            lab[matches == BETWEEN_THRESHOLDS] = -1.0
            labels.append(lab)
        return labels, matched_boxes

    # -- proposals -----------------------------------------------------------------------------
    def proposal_layer(self, objectness: np.ndarray, proposals: np.ndarray, level_sizes: list[int],
                       image_sizes: list) -> list[np.ndarray]:
        """objectness (N, A_total) logits, proposals (N, A_total, 4) decoded boxes (batch frame).
        Returns one (P_i, 4) array of proposals per image, best objectness first."""
        pre_n = self.cfg.pre_nms_top_n_train if self.training else self.cfg.pre_nms_top_n_test
        post_n = self.cfg.post_nms_top_n_train if self.training else self.cfg.post_nms_top_n_test
        level_ids = np.concatenate([np.full(n, i, dtype=np.int64) for i, n in enumerate(level_sizes)])
        starts = np.cumsum([0] + list(level_sizes))
        out = []
        for i, (h, w) in enumerate(image_sizes):
            # 1. top-n anchors of every level by objectness (stable descending sort)
            keep_idx = []
            for lvl in range(len(level_sizes)):
                o = objectness[i, starts[lvl]:starts[lvl + 1]]
                k = min(pre_n, o.shape[0])
                keep_idx.append(starts[lvl] + np.argsort(-o, kind="stable")[:k])
            idx = np.concatenate(keep_idx)
            boxes, scores, lvl = proposals[i, idx], objectness[i, idx], level_ids[idx]
            with np.errstate(over="ignore"):  # exp(-z) = inf for z << 0: the sigmoid is 0, correctly
                scores = 1.0 / (1.0 + np.exp(-scores))  # sigmoid: NMS and score_thresh work on probabilities
            # 2. clip to this image (not the padding), drop tiny and low-score boxes
            boxes = clip_boxes_to_image(boxes, (h, w))
            keep = remove_small_boxes(boxes, self.cfg.min_size)
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            keep = np.flatnonzero(scores >= self.cfg.score_thresh)
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            # 3. NMS independently per level, then the post_n best overall
            keep = batched_nms(boxes, scores, lvl, self.cfg.nms_thresh)[:post_n]
            out.append(boxes[keep])
        return out

    # -- forward / backward ----------------------------------------------------------------------
    def forward(self, features: list, batch_shape, image_sizes: list, targets: list | None = None,
                rng: np.random.Generator | None = None):
        """features: the maps (N, C, h_l, w_l); batch_shape (Hp, Wp) of the padded batch; image_sizes
        [(H_i, W_i)]. Returns ``(proposals list of (P_i, 4), losses dict)`` (losses empty unless
        training with targets, then ``rng`` draws the anchor sample)."""
        n = features[0].shape[0]
        logits, deltas, shapes = [], [], []
        for f in features:
            o, d = self.head(f)
            shapes.append((o.shape, d.shape))
            logits.append(_flatten(o, 1))
            deltas.append(_flatten(d, 4))
        objectness = np.concatenate(logits, axis=1)[:, :, 0]  # (N, A_total)
        pred_deltas = np.concatenate(deltas, axis=1)  # (N, A_total, 4)
        level_sizes = [x.shape[1] for x in logits]
        anchors = np.concatenate(self.anchor_generator.grid_anchors(
            batch_shape, [f.shape[-2:] for f in features], dtype=features[0].dtype))
        decoded = self.box_coder.decode(pred_deltas.reshape(-1, 4), np.tile(anchors, (n, 1)))
        proposals = self.proposal_layer(objectness, decoded.reshape(n, -1, 4), level_sizes, image_sizes)

        losses, grads = {}, None
        if self.training and targets is not None:
            labels, matched = self.anchor_targets(anchors, targets)
            pos, neg = self.sampler([lab.astype(np.int64) for lab in labels], rng)
            pos, neg = np.stack(pos), np.stack(neg)  # (N, A_total)
            sampled = pos | neg
            n_sampled = max(int(sampled.sum()), 1)
            labels = np.stack(labels)
            loss_obj, d_obj_s = sigmoid_binary_cross_entropy_with_logits(objectness[sampled], labels[sampled])
            targets_reg = np.stack([self.box_coder.encode(m, anchors) for m in matched])  # (N, A, 4)
            loss_box, d_box_p = smooth_l1(pred_deltas[pos], targets_reg[pos], beta=self.cfg.smooth_l1_beta,
                                          reduction="sum")
            d_obj = np.zeros_like(objectness)
            d_obj[sampled] = d_obj_s
            d_box = np.zeros_like(pred_deltas)
            d_box[pos] = d_box_p / n_sampled
            losses = {"loss_objectness": loss_obj, "loss_rpn_box_reg": loss_box / n_sampled}
            grads = (d_obj, d_box)
        self._push((grads, level_sizes, shapes))
        return proposals, losses

    def backward(self, dout=(1.0, 1.0)):
        """dout = (d loss_objectness, d loss_rpn_box_reg), the upstream weights of the two losses.
        Returns the gradient of every feature map."""
        grads, level_sizes, shapes = self._pop()
        if grads is None:
            raise RuntimeError("RPN backward needs a training forward with targets")
        d_obj = grads[0] * dout[0]
        d_box = grads[1] * dout[1]
        starts = np.cumsum([0] + level_sizes)
        per_level = []
        for lvl, (o_shape, d_shape) in enumerate(shapes):
            s, e = starts[lvl], starts[lvl + 1]
            per_level.append((_unflatten(d_obj[:, s:e, None], 1, o_shape),
                              _unflatten(d_box[:, s:e], 4, d_shape)))
        # the head was applied level by level: pop its caches in reverse order
        dfeatures = [None] * len(per_level)
        for lvl in range(len(per_level) - 1, -1, -1):
            dfeatures[lvl] = self.head.backward(per_level[lvl])
        return dfeatures
