"""torchvision's MaskRCNN assembled with the same architecture as a minimaskrcnn config.

The reference our model is tested against (tests/model/test_equivalence.py) and timed against
(``minimaskrcnn bench train``). torch and torchvision are imported inside the functions: they are
test-time dependencies only, never needed to train or run our model."""

from __future__ import annotations

from collections import OrderedDict


def build_torch_maskrcnn(cfg, image_size: int, dtype: str = "float64"):
    """A ``torchvision.models.detection.MaskRCNN`` whose state_dict keys equal ``MaskRCNN(cfg)``'s,
    in ``dtype`` ("float64" or "float32"). ``image_size``: the (square) image side, so the transform's
    resize is the identity."""
    import torch
    from torch import nn
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.models.detection.rpn import RPNHead
    from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    b = cfg.backbone

    def norm(c):
        return nn.GroupNorm(b.num_groups, c)

    class Block(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, 2, 1, bias=False)
            self.bn1 = norm(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = norm(cout)
            self.relu = nn.ReLU()
            if b.residual:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), norm(cout))

        def forward(self, x):
            out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            if b.residual:
                out = out + self.downsample(x)
            return self.relu(out)

    names = ["layer1", "layer2", "layer3", "layer4"] if b.fpn else \
        ["layer3" if b.single_level_stride == 16 else "layer4"]
    last = max(int(n[-1]) for n in names)

    class Body(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, b.stem_channels, 3, 2, 1, bias=False)
            self.bn1 = norm(b.stem_channels)
            self.relu = nn.ReLU()
            c = b.stem_channels
            for i, co in enumerate(b.stage_channels[:last]):
                setattr(self, f"layer{i + 1}", nn.Sequential(Block(c, co)))
                c = co

        def forward(self, x):
            x = self.relu(self.bn1(self.conv1(x)))
            outs = []
            for i in range(1, last + 1):
                x = getattr(self, f"layer{i}")(x)
                if f"layer{i}" in names:
                    outs.append(x)
            return outs

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = Body()
            if b.fpn:
                self.fpn = FeaturePyramidNetwork(list(b.stage_channels), b.fpn_channels,
                                                 LastLevelMaxPool() if b.extra_max_pool else None)
                self.out_channels = b.fpn_channels
            else:
                self.out_channels = b.stage_channels[last - 1]

        def forward(self, x):
            feats = self.body(x)
            od = OrderedDict((str(i), f) for i, f in enumerate(feats))
            return self.fpn(od) if b.fpn else od

    c_out = b.fpn_channels if b.fpn else b.stage_channels[last - 1]
    n_levels = len(cfg.anchors.sizes)
    featmaps = [str(i) for i in range(4)] if b.fpn else ["0"]
    r, m, rh = cfg.rpn, cfg.mask, cfg.roi_heads
    model = MaskRCNN(
        Backbone(), num_classes=None, min_size=image_size, max_size=image_size,
        image_mean=list(cfg.transform.image_mean), image_std=list(cfg.transform.image_std),
        rpn_anchor_generator=AnchorGenerator(cfg.anchors.sizes,
                                             (tuple(cfg.anchors.aspect_ratios),) * n_levels),
        rpn_head=RPNHead(c_out, len(cfg.anchors.sizes[0]) * len(cfg.anchors.aspect_ratios)),
        rpn_pre_nms_top_n_train=r.pre_nms_top_n_train, rpn_pre_nms_top_n_test=r.pre_nms_top_n_test,
        rpn_post_nms_top_n_train=r.post_nms_top_n_train, rpn_post_nms_top_n_test=r.post_nms_top_n_test,
        rpn_nms_thresh=r.nms_thresh, rpn_fg_iou_thresh=r.fg_iou_thresh, rpn_bg_iou_thresh=r.bg_iou_thresh,
        rpn_batch_size_per_image=r.batch_size_per_image, rpn_positive_fraction=r.positive_fraction,
        rpn_score_thresh=r.score_thresh,
        box_roi_pool=MultiScaleRoIAlign(featmaps, rh.box_output_size, rh.sampling_ratio),
        box_head=TwoMLPHead(c_out * rh.box_output_size ** 2, rh.representation_size),
        box_predictor=FastRCNNPredictor(rh.representation_size, cfg.num_classes),
        box_score_thresh=rh.score_thresh, box_nms_thresh=rh.nms_thresh,
        box_detections_per_img=rh.detections_per_img, box_fg_iou_thresh=rh.fg_iou_thresh,
        box_bg_iou_thresh=rh.bg_iou_thresh, box_batch_size_per_image=rh.batch_size_per_image,
        box_positive_fraction=rh.positive_fraction, bbox_reg_weights=rh.box_coder_weights,
        mask_roi_pool=MultiScaleRoIAlign(featmaps, m.output_size, rh.sampling_ratio),
        mask_head=MaskRCNNHeads(c_out, list(m.layers), m.dilation),
        mask_predictor=MaskRCNNPredictor(m.layers[-1], m.layers[-1], cfg.num_classes),
    )
    model = model.to(getattr(torch, dtype))
    rpn_labels_in_model_dtype(model)
    return model


def rpn_labels_in_model_dtype(model) -> None:
    """Patch ``model.rpn`` so its objectness labels take the model's dtype.

    torchvision makes the RPN's objectness labels float32 whatever the model's dtype, and
    BCE-with-logits of a float64 input against a float32 target returns a float32 loss: its
    objectness loss and every gradient upstream of it would carry float32 rounding (~1e-7).
    Cast the labels so a float64 reference is float64 throughout (values 0/1 are exact)."""
    assign = model.rpn.assign_targets_to_anchors

    def assign_in_dtype(anchors, targets):
        labels, matched = assign(anchors, targets)
        return [lab.to(model.rpn.head.cls_logits.weight.dtype) for lab in labels], matched

    model.rpn.assign_targets_to_anchors = assign_in_dtype


def torchvision_resnet50_fpn(num_classes: int = 91, trainable_layers: int = 3, **kwargs):
    """torchvision's ``maskrcnn_resnet50_fpn`` exactly as it is built for pretrained weights
    (FrozenBatchNorm2d in the body, ``trainable_backbone_layers`` applied), without downloading
    anything: ``MaskRCNN(_resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), t), ...)``.
    ``kwargs``: MaskRCNN's keyword arguments (``min_size``, ``rpn_batch_size_per_image`` ...)."""
    import torchvision
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.misc import FrozenBatchNorm2d

    body = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    return MaskRCNN(_resnet_fpn_extractor(body, trainable_layers), num_classes=num_classes, **kwargs)


def replace_predictors(tv_model, ours) -> None:
    """torchvision's fine-tuning tutorial on ``tv_model``: new ``FastRCNNPredictor`` and
    ``MaskRCNNPredictor`` for ``ours``' class count, holding ``ours``' predictor weights."""
    import torch
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

    k = ours.config.num_classes
    rh = tv_model.roi_heads
    dtype = rh.box_predictor.cls_score.weight.dtype
    rh.box_predictor = FastRCNNPredictor(rh.box_predictor.cls_score.in_features, k).to(dtype)
    rh.mask_predictor = MaskRCNNPredictor(rh.mask_predictor.conv5_mask.in_channels,
                                          rh.mask_predictor.conv5_mask.out_channels, k).to(dtype)
    for name in ("box_predictor", "mask_predictor"):
        prefix = f"roi_heads.{name}."
        sd = {key[len(prefix):]: torch.from_numpy(v.copy()).to(dtype)
              for key, v in ours.state_dict().items() if key.startswith(prefix)}
        getattr(rh, name).load_state_dict(sd, strict=True)


def copy_weights(ours, theirs) -> None:
    """Load our state_dict into the torch model by name (strict: the key sets must be equal)."""
    import torch

    sd = {k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()}
    theirs.load_state_dict(sd, strict=True)


def torch_inputs(images, targets, dtype=None):
    """Our (H, W, 3) float images in [0, 1] and target dicts as torchvision's inputs (boxes in
    ``dtype``, default the images' dtype)."""
    import numpy as np
    import torch

    timgs = [torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))) for im in images]
    dtype = dtype or images[0].dtype
    ttgts = [{"boxes": torch.from_numpy(np.asarray(t["boxes"], dtype=dtype)),
              "labels": torch.from_numpy(np.asarray(t["labels"], dtype=np.int64)),
              "masks": torch.from_numpy(t["masks"].astype(np.uint8))} for t in targets]
    return timgs, ttgts
