"""The Mask R-CNN network, one concept per file: backbone, fpn, matcher, sampler, rpn, roi_heads,
transform, and mask_rcnn (the whole model)."""

from minimaskrcnn.model.mask_rcnn import LOSS_NAMES, MaskRCNN

__all__ = ["MaskRCNN", "LOSS_NAMES"]
