import dataclasses

import pytest

from minimaskrcnn.config import (
    MaskRCNNConfig,
    get_preset,
    resnet50_fpn,
    shapes,
    single_level,
    with_overrides,
)


def test_resnet50_fpn_is_torchvision_defaults(torchvision):
    """Every value the MaskRCNN constructor exposes equals torchvision's default."""
    import inspect

    from torchvision.models.detection.mask_rcnn import MaskRCNN

    tv = {k: v.default for k, v in inspect.signature(MaskRCNN.__init__).parameters.items()}
    c = resnet50_fpn()
    ours = {
        "min_size": c.transform.min_size, "max_size": c.transform.max_size,
        "rpn_pre_nms_top_n_train": c.rpn.pre_nms_top_n_train,
        "rpn_pre_nms_top_n_test": c.rpn.pre_nms_top_n_test,
        "rpn_post_nms_top_n_train": c.rpn.post_nms_top_n_train,
        "rpn_post_nms_top_n_test": c.rpn.post_nms_top_n_test, "rpn_nms_thresh": c.rpn.nms_thresh,
        "rpn_fg_iou_thresh": c.rpn.fg_iou_thresh, "rpn_bg_iou_thresh": c.rpn.bg_iou_thresh,
        "rpn_batch_size_per_image": c.rpn.batch_size_per_image,
        "rpn_positive_fraction": c.rpn.positive_fraction, "rpn_score_thresh": c.rpn.score_thresh,
        "box_score_thresh": c.roi_heads.score_thresh, "box_nms_thresh": c.roi_heads.nms_thresh,
        "box_detections_per_img": c.roi_heads.detections_per_img,
        "box_fg_iou_thresh": c.roi_heads.fg_iou_thresh, "box_bg_iou_thresh": c.roi_heads.bg_iou_thresh,
        "box_batch_size_per_image": c.roi_heads.batch_size_per_image,
        "box_positive_fraction": c.roi_heads.positive_fraction,
    }
    for k, v in ours.items():
        assert tv[k] == v, k
    assert c.num_classes == 91 and c.roi_heads.box_coder_weights == (10.0, 10.0, 5.0, 5.0)
    assert c.anchors.sizes == ((32,), (64,), (128,), (256,), (512,))


def test_roundtrip_and_overrides():
    c = shapes()
    assert MaskRCNNConfig.from_dict(c.to_dict()) == c
    c2 = with_overrides(c, **{"rpn.nms_thresh": 0.6, "mask.loss": "softmax"})
    assert c2.rpn.nms_thresh == 0.6 and c2.mask.loss == "softmax" and c.mask.loss == "sigmoid"
    with pytest.raises(ValueError, match="unknown config field"):
        with_overrides(c, **{"rpn.nope": 1})
    with pytest.raises(ValueError, match="mask.loss"):
        with_overrides(c, **{"mask.loss": "l2"})
    with pytest.raises(ValueError, match="preset"):
        get_preset("nope")


def test_single_level_variant():
    c = single_level(shapes(), 32)
    assert not c.backbone.fpn and c.backbone.single_level_stride == 32
    assert c.anchors.sizes == ((8, 16, 32, 64),)
    with pytest.raises(ValueError, match="single_level_stride"):
        single_level(shapes(), 8)
    with pytest.raises(ValueError, match="anchors.sizes"):
        dataclasses.replace(shapes(), anchors=dataclasses.replace(shapes().anchors, sizes=((8,),))).validate()
