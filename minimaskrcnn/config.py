"""Every hyper-parameter of the model, in one commented dataclass per part, and the two presets.

``MaskRCNNConfig`` is a tree of small dataclasses (``transform``, ``backbone``, ``anchors``, ``rpn``,
``roi_heads``, ``mask``). Each field's *default is torchvision's* ``maskrcnn_resnet50_fpn`` value, so
``resnet50_fpn()`` is mostly the defaults and ``shapes()`` lists exactly where the from-scratch recipe
deviates, each deviation with a comment saying why.

Switches a learner can flip (the paper's ablations):

- ``mask.loss = "sigmoid" | "softmax"`` (see :class:`MaskConfig` for the exact definitions);
- ``roi_heads.pooler = "align" | "pool"`` and ``roi_heads.aligned`` (both RoI heads use them);
- ``mask.softmax_rule = "p_k" | "argmax" | "k_vs_bg"``: which pixels a softmax mask keeps;
- ``mask.targets_aligned`` and ``mask.paste = "torchvision" | "continuous"``: the pixel conventions of the
  mask targets (image -> box) and of pasting (box -> image), see :class:`MaskConfig`;
- ``backbone.fpn = False`` with ``backbone.single_level_stride = 16 | 32``: a C4/C5-style single
  feature map instead of the feature pyramid.

Build one with ``shapes()`` or ``resnet50_fpn()`` and change fields with ``dataclasses.replace`` or
:func:`with_overrides` (dotted names: ``with_overrides(cfg, **{"rpn.nms_thresh": 0.6})``).
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field

import numpy as np

SOFTMAX_RULES = ("p_k", "argmax", "k_vs_bg")
PASTE_CONVENTIONS = ("torchvision", "continuous")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class TransformConfig:
    """Image preprocessing (torchvision ``GeneralizedRCNNTransform``)."""

    # Images are resized (bilinear) so that the short side is ``min_size`` unless that makes the long
    # side exceed ``max_size``; then boxes and masks are scaled by the same factor.
    resize: bool = True
    min_size: int = 800
    max_size: int = 1333
    # Normalisation applied to images scaled to [0, 1]: (x - mean) / std, per RGB channel.
    image_mean: tuple = IMAGENET_MEAN
    image_std: tuple = IMAGENET_STD
    # The batch is zero-padded (bottom/right) to a multiple of this, so every stride-32 map is whole.
    size_divisible: int = 32


@dataclass
class BackboneConfig:
    """Feature extractor: a ResNet-style body, then an FPN or one single feature map."""

    # "resnet50": torchvision's ResNet-50 (Bottleneck blocks, FrozenBatchNorm, 7x7 stem + max pool).
    # "small": the from-scratch body of the shapes recipe: stem conv3x3 stride 2, then four stages,
    # each one block of two conv3x3 + norm + ReLU, the first conv of a stage with stride 2.
    arch: str = "resnet50"
    stem_channels: int = 64
    stage_channels: tuple = (256, 512, 1024, 2048)  # output channels of layer1..layer4
    norm: str = "frozen_bn"  # "frozen_bn" | "group"
    num_groups: int = 8  # GroupNorm groups (norm="group")
    # small body: add a residual connection around each stage (1x1 stride-2 projection + norm)
    residual: bool = False
    # FPN over layer1..layer4 (strides 4, 8, 16, 32) with ``fpn_channels`` channels on every level.
    fpn: bool = True
    fpn_channels: int = 256
    # LastLevelMaxPool: an extra level P6 = max_pool(P5, kernel 1, stride 2), used by the RPN only.
    extra_max_pool: bool = True
    # fpn=False: the heads read one map, layer3's output (stride 16, "C4") or layer4's (stride 32, "C5").
    single_level_stride: int = 16
    # torchvision's ``trainable_backbone_layers``: how many of the body's layer4, layer3, layer2,
    # layer1, conv1 (counted from the top) train; the body's other parameters are frozen. 5 trains
    # all (training from scratch); fine-tuning pretrained weights uses 3, torchvision's default: the
    # stem and layer1 learn generic edges and colours, and freezing them saves their backward pass.
    trainable_layers: int = 5


@dataclass
class AnchorConfig:
    """Anchor boxes (torchvision ``AnchorGenerator``): one tuple of sizes per feature level."""

    sizes: tuple = ((32,), (64,), (128,), (256,), (512,))  # P2..P6, square-root of the area in pixels
    aspect_ratios: tuple = (0.5, 1.0, 2.0)  # h / w, the same on every level


@dataclass
class RPNConfig:
    """Region proposal network: head, anchor targets, losses and the proposal layer."""

    fg_iou_thresh: float = 0.7  # anchor IoU >= 0.7 with some GT: positive
    bg_iou_thresh: float = 0.3  # best IoU < 0.3: negative; in between: ignored
    allow_low_quality_matches: bool = True  # each GT's best anchor(s) is positive even if IoU < 0.7
    batch_size_per_image: int = 256  # anchors sampled per image for the losses
    positive_fraction: float = 0.5  # at most half of them positive
    pre_nms_top_n_train: int = 2000  # per level, by objectness, before NMS
    pre_nms_top_n_test: int = 1000
    post_nms_top_n_train: int = 2000  # per image, after NMS
    post_nms_top_n_test: int = 1000
    nms_thresh: float = 0.7
    score_thresh: float = 0.0  # on sigmoid(objectness)
    min_size: float = 1e-3  # proposals narrower or lower than this (pixels) are removed
    box_coder_weights: tuple = (1.0, 1.0, 1.0, 1.0)
    # Box loss: smooth L1 with this beta, summed and divided by the number of sampled anchors
    # (positives and negatives); objectness loss: BCE-with-logits averaged over the sampled anchors.
    smooth_l1_beta: float = 1.0 / 9


@dataclass
class RoIHeadsConfig:
    """Box branch: RoI targets, pooling, the two-layer MLP head, predictor, losses, postprocess."""

    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.5
    add_gt_as_proposals: bool = True  # GT boxes join the proposals, so every GT has a positive RoI
    batch_size_per_image: int = 512
    positive_fraction: float = 0.25
    box_coder_weights: tuple = (10.0, 10.0, 5.0, 5.0)
    # "align": RoIAlign (the paper's); "pool": Fast R-CNN's quantised RoIPool. Used by both heads.
    pooler: str = "align"
    aligned: bool = False  # RoIAlign's half-pixel offset; torchvision's Mask R-CNN uses False
    sampling_ratio: int = 2
    box_output_size: int = 7
    representation_size: int = 1024  # TwoMLPHead width (fc6, fc7)
    # Box loss: smooth L1 on the deltas of the GT class, summed and divided by the number of sampled
    # RoIs (torchvision's normalisation); class loss: cross-entropy averaged over sampled RoIs.
    smooth_l1_beta: float = 1.0 / 9
    # Postprocess
    score_thresh: float = 0.05
    nms_thresh: float = 0.5  # per class
    detections_per_img: int = 100
    min_box_size: float = 1e-2  # detections smaller than this (pixels) are removed


@dataclass
class MaskConfig:
    """Mask branch, run on positive RoIs (training) or on the final detections (inference).

    ``loss = "sigmoid"`` (the paper's): the head predicts one 28x28 logit map per class; only the
    channel of the RoI's GT class k is used, with per-pixel binary cross-entropy against the target
    t (the GT mask resampled into the RoI by RoIAlign, values in [0, 1]), averaged over every pixel
    of every positive RoI: ``mean(-t log s(z_k) - (1 - t) log(1 - s(z_k)))``, s the logistic sigmoid.
    At inference the mask is s(z_k) for the detected class k.

    ``loss = "softmax"`` (the paper's ablation, Table 2b): per pixel, a softmax over all C channels
    (channel 0 = background), p = softmax(z). The target distribution puts mass t on the GT class
    channel k and 1 - t on channel 0 (a hard mask pixel is simply "class k" or "background"), and
    the loss is the cross-entropy ``-(t log p_k + (1 - t) log p_0)`` averaged over every pixel of
    every positive RoI. Classes compete, so the mask head must also classify. At inference the mask
    is p_k for the detected class k.
    """

    output_size: int = 14  # RoI pooling size; the predictor upsamples x2 to 28x28
    layers: tuple = (256, 256, 256, 256)  # channels of the 3x3 conv + ReLU layers
    dilation: int = 1
    loss: str = "sigmoid"  # "sigmoid" | "softmax"
    threshold: float = 0.5  # pasted mask probabilities > threshold are the instance's pixels
    # Softmax path only: the per-pixel score that is pasted and thresholded (> 0.5). "p_k": p_k itself
    # (a pixel where class k wins with p_k < 0.5 among C channels is dropped); "argmax": k wins the
    # pixel, scored p_k / (p_k + max_{j != k} p_j); "k_vs_bg": p_k / (p_k + p_0), class k against
    # background only. All three are 1 - 1 / (1 + e^(z_k - z_x)) with z_x the rival's logit.
    softmax_rule: str = "p_k"
    # Training targets: the GT mask cut out of each RoI by RoIAlign with aligned=False (torchvision's
    # project_masks_on_boxes, which samples the mask half a pixel down-right of the box) or aligned=True
    # (the sampling grid in continuous pixel coordinates, the same frame as the boxes).
    targets_aligned: bool = False
    # Inference: how the 28x28 map goes into its box (ops.masks.paste_masks_in_image). "torchvision":
    # box enlarged for a 1-cell zero border, truncated to integers, inclusive (+1) pixel indices - masks
    # come out about one pixel wider and higher; "continuous": the box in continuous coordinates, every
    # pixel centre sampled where it falls in the map (detectron2's paste_masks_in_image).
    paste: str = "torchvision"


@dataclass
class MaskRCNNConfig:
    """A whole Mask R-CNN. ``num_classes`` counts the background (COCO: 91 = 90 ids + background)."""

    num_classes: int = 91
    transform: TransformConfig = field(default_factory=TransformConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi_heads: RoIHeadsConfig = field(default_factory=RoIHeadsConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    class_names: tuple | None = None  # index 0 is "background"

    def validate(self) -> MaskRCNNConfig:
        """Raise ValueError naming the first inconsistent field; return self."""
        b = self.backbone
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background + classes), got {self.num_classes}")
        if b.arch not in ("resnet50", "small"):
            raise ValueError(f"backbone.arch must be 'resnet50' or 'small', got {b.arch!r}")
        if b.norm not in ("frozen_bn", "group"):
            raise ValueError(f"backbone.norm must be 'frozen_bn' or 'group', got {b.norm!r}")
        if isinstance(b.trainable_layers, bool) or b.trainable_layers not in range(6):
            raise ValueError(f"backbone.trainable_layers must be an int in 0..5, got {b.trainable_layers!r}")
        if len(b.stage_channels) != 4:
            raise ValueError(f"backbone.stage_channels must have 4 entries, got {b.stage_channels}")
        if not b.fpn and b.single_level_stride not in (16, 32):
            raise ValueError(f"backbone.single_level_stride must be 16 or 32, got {b.single_level_stride}")
        n_levels = (4 + int(b.extra_max_pool)) if b.fpn else 1
        if len(self.anchors.sizes) != n_levels:
            raise ValueError(f"anchors.sizes needs one tuple per feature level ({n_levels}), "
                             f"got {len(self.anchors.sizes)}")
        if len({len(s) for s in self.anchors.sizes}) != 1:
            raise ValueError("anchors.sizes: every level must have the same number of sizes")
        if self.roi_heads.pooler not in ("align", "pool"):
            raise ValueError(f"roi_heads.pooler must be 'align' or 'pool', got {self.roi_heads.pooler!r}")
        if self.mask.loss not in ("sigmoid", "softmax"):
            raise ValueError(f"mask.loss must be 'sigmoid' or 'softmax', got {self.mask.loss!r}")
        if self.mask.softmax_rule not in SOFTMAX_RULES:
            raise ValueError(f"mask.softmax_rule must be one of {SOFTMAX_RULES}, "
                             f"got {self.mask.softmax_rule!r}")
        if self.mask.paste not in PASTE_CONVENTIONS:
            raise ValueError(f"mask.paste must be one of {PASTE_CONVENTIONS}, got {self.mask.paste!r}")
        if not isinstance(self.mask.targets_aligned, bool):
            raise ValueError(f"mask.targets_aligned must be True or False, got {self.mask.targets_aligned!r}")
        for name, part in (("rpn", self.rpn), ("roi_heads", self.roi_heads)):
            if part.bg_iou_thresh > part.fg_iou_thresh:
                raise ValueError(f"{name}.bg_iou_thresh must be <= {name}.fg_iou_thresh")
            if not 0.0 <= part.positive_fraction <= 1.0:
                raise ValueError(f"{name}.positive_fraction must be in [0, 1]")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} entries, num_classes is "
                             f"{self.num_classes}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MaskRCNNConfig:
        """Inverse of ``to_dict`` (lists, e.g. from JSON, become tuples again)."""

        def tup(v):
            return tuple(tup(x) for x in v) if isinstance(v, (list, tuple)) else v

        parts = {"transform": TransformConfig, "backbone": BackboneConfig, "anchors": AnchorConfig,
                 "rpn": RPNConfig, "roi_heads": RoIHeadsConfig, "mask": MaskConfig}
        kw = {}
        for k, v in d.items():
            if k in parts:
                kw[k] = parts[k](**{a: tup(b) for a, b in v.items()})
            else:
                kw[k] = tup(v)
        return cls(**kw).validate()


# What a field of each annotation accepts: an int is a valid float, a bool is neither.
_FIELD_TYPES = {"int": numbers.Integral, "float": numbers.Real, "bool": (bool, np.bool_), "str": str,
                "tuple": (tuple, list), "None": type(None)}


def _check_field_type(key: str, annotation: str, value) -> None:
    """Raise ValueError unless ``value`` fits the field's annotation ("int", "tuple | None", ...)."""
    names = [a.strip() for a in str(annotation).split("|")]
    is_bool = isinstance(value, (bool, np.bool_))
    if not any(n in _FIELD_TYPES and isinstance(value, _FIELD_TYPES[n]) and (n == "bool") == is_bool
               for n in names):
        raise ValueError(f"config field {key!r} expects {' or '.join(names)}, got {value!r} "
                         f"({type(value).__name__})")


def with_overrides(cfg: MaskRCNNConfig, **overrides) -> MaskRCNNConfig:
    """A copy of ``cfg`` with dotted fields replaced: ``with_overrides(cfg, **{"rpn.nms_thresh": .6})``.

    Raises ValueError naming the field for an unknown field, a whole part ("rpn" rather than
    "rpn.nms_thresh") or a value of the wrong type (e.g. a string for a float field)."""
    cfg = MaskRCNNConfig.from_dict(cfg.to_dict())
    for key, value in overrides.items():
        obj = cfg
        *path, last = key.split(".")
        for depth, p in enumerate(path):
            known = {f.name for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else set()
            if p not in known or not dataclasses.is_dataclass(getattr(obj, p)):
                where = ".".join(path[:depth]) or "the config"
                parts = sorted(f.name for f in dataclasses.fields(obj) if dataclasses.is_dataclass(
                    getattr(obj, f.name))) if dataclasses.is_dataclass(obj) else []
                raise ValueError(f"unknown config field {key!r}: {where} has no part {p!r}"
                                 + (f" (parts: {', '.join(parts)})" if parts else ""))
            obj = getattr(obj, p)
        fields = {f.name: f for f in dataclasses.fields(obj)}
        if last not in fields:
            raise ValueError(f"unknown config field {key!r} (known: {', '.join(sorted(fields))})")
        if dataclasses.is_dataclass(getattr(obj, last)):
            raise ValueError(f"config field {key!r} is a group of fields: set one of them, e.g. "
                             f"{key}.{dataclasses.fields(getattr(obj, last))[0].name}=...")
        _check_field_type(key, fields[last].type, value)
        setattr(obj, last, value)
    return cfg.validate()


def resnet50_fpn(num_classes: int = 91) -> MaskRCNNConfig:
    """torchvision's ``maskrcnn_resnet50_fpn``: every value is the dataclass default."""
    return MaskRCNNConfig(num_classes=num_classes).validate()


SHAPES_CLASSES = ("background", "square", "circle", "triangle")


def shapes() -> MaskRCNNConfig:
    """The from-scratch recipe for 128x128 synthetic shapes images (trains on 2 CPU cores in minutes).

    Every field set here deviates from torchvision's default; the comment beside it says why.
    """
    return MaskRCNNConfig(
        num_classes=len(SHAPES_CLASSES),  # background + square, circle, triangle
        class_names=SHAPES_CLASSES,
        transform=TransformConfig(
            # Images are generated at 128x128 already: resizing them to 800 px would cost 40x the
            # compute for no information. Padding still rounds the batch up to a multiple of 32.
            resize=False,
            min_size=128,
            max_size=128,
        ),
        backbone=BackboneConfig(
            # A ResNet-50 cannot be trained from scratch on 2 cores in minutes; the small body has
            # ~0.5 M parameters and the same strides (4/8/16/32) so the FPN is unchanged.
            arch="small",
            stem_channels=32,
            stage_channels=(32, 64, 128, 128),
            # Batches of 8 are too small for BatchNorm statistics; GroupNorm does not depend on the
            # batch and trains from scratch (FrozenBatchNorm only makes sense with pretrained weights).
            norm="group",
            num_groups=8,
            fpn_channels=64,  # solid-colour shapes need far fewer channels than COCO
            # Objects are 10-60 px on a 128 px image: a stride-64 level would be 2x2 and useless.
            extra_max_pool=False,
        ),
        # Shapes are 10-60 px wide: torchvision's 32..512 would put every object on the first
        # level and leave P4/P5 with no positive anchor.
        anchors=AnchorConfig(sizes=((8,), (16,), (32,), (64,))),
        rpn=RPNConfig(
            # At most four objects per image: 128 sampled anchors give enough positives, and a
            # 4x smaller pool of candidates (about 5k anchors per image) needs fewer proposals.
            batch_size_per_image=128,
            pre_nms_top_n_train=500,
            post_nms_top_n_train=250,
            pre_nms_top_n_test=500,
            post_nms_top_n_test=100,
        ),
        roi_heads=RoIHeadsConfig(
            # 1-4 objects per image: 32 RoIs (up to 8 positives) per image suffice. Every positive also
            # runs the mask head, the costliest part of a step: 64 RoIs made a step 1.4x slower.
            batch_size_per_image=32,
            representation_size=256,  # a 1024-wide MLP is most of the cost and overfits nothing here
            # 1-4 objects per image: 20 detections leave a 5x margin, and the mask head (the costliest
            # part of inference) then runs on at most 20 boxes per image instead of 100.
            detections_per_img=20,
        ),
        mask=MaskConfig(
            layers=(64, 64, 64, 64),  # solid shapes: 64 channels are plenty
            # torchvision's conventions made masks ~35 px too large per object (the paste's +1) and
            # shifted them 1/3 px up-left (targets cut half a pixel off): with these two, mask AP on 500
            # fresh images rose from 0.884 to 0.989 (README, "Training from scratch").
            targets_aligned=True,
            paste="continuous",
        ),
    ).validate()


def single_level(cfg: MaskRCNNConfig, stride: int = 16) -> MaskRCNNConfig:
    """The C4/C5-style variant of ``cfg``: no FPN, the heads read layer3 (stride 16) or layer4 (stride
    32) directly, and every anchor size moves onto that one map (as in the paper's C4 models)."""
    sizes = tuple(s for level in cfg.anchors.sizes for s in level)
    return with_overrides(cfg, **{"backbone.fpn": False, "backbone.single_level_stride": stride,
                                  "backbone.extra_max_pool": False, "anchors.sizes": (sizes,)})


def folder(num_classes: int = 2, class_names: tuple | None = None) -> MaskRCNNConfig:
    """The from-scratch recipe for a COCO folder of small photos (``minimaskrcnn train --dataset``).

    The shapes recipe (every choice commented in :func:`shapes`) with two things a folder of photos
    needs that generated images do not: images come in any size, so the model resizes them, and the
    RoI heads sample 64 RoIs per image. A user's
    folder sets ``num_classes`` / ``class_names`` from its categories (the training loop does).
    """
    cfg = shapes()
    return dataclasses.replace(
        cfg,
        num_classes=num_classes,
        class_names=class_names,
        # 64 RoIs per image (up to 16 positives) instead of 32: textured photos make the class head's
        # job (telling four outlines apart) the hard part, and it learns from the sampled RoIs. On the
        # tuning pair (seed-1 folder, validated on seed 4) in 6-minute runs: mask AP 0.273 / 0.296
        # (training seeds 0 / 1) with 32, 0.309 / 0.356 with 64, 0.295 with 128 (slower steps).
        roi_heads=dataclasses.replace(cfg.roi_heads, batch_size_per_image=64),
        transform=TransformConfig(
            # Photos of any size are resized so the short side is 128 px (long side at most 224):
            # the small GroupNorm ResNet trains from scratch on 2 cores only at about the shapes
            # images' 128 px, and the anchors (8-64 px) then fit objects of about 10-60 px after
            # the resize, i.e. 14-56 px objects on 120-180 px photos. For larger photos with larger
            # objects the same holds after the resize; small objects on large photos need a larger
            # min_size (``--set transform.min_size=256``: about 4x the compute).
            resize=True,
            min_size=128,
            max_size=224,
        ),
    ).validate()


PRESETS = {"shapes": shapes, "folder": folder, "resnet50_fpn": resnet50_fpn}


def get_preset(name: str) -> MaskRCNNConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()
