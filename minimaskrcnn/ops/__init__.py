"""Detection ops: boxes, anchors, box coding, NMS, RoIPool, RoIAlign, mask targets and pasting.

Every op equals its ``torchvision.ops`` counterpart (see each module's docstring for the exact
convention). Boxes are ``(x1, y1, x2, y2)`` in continuous pixel coordinates, no "+1".
"""

from .anchors import AnchorGenerator, cell_anchors, legacy_anchors
from .box_coder import BBOX_XFORM_CLIP, BoxCoder
from .boxes import box_area, box_convert, box_iou, clip_boxes_to_image, remove_small_boxes
from .masks import paste_masks_in_image, project_masks_on_boxes
from .nms import batched_nms, nms
from .poolers import infer_scales, level_mapper, multiscale_roi_align, multiscale_roi_align_backward
from .roi_align import roi_align, roi_align_backward
from .roi_pool import roi_pool, roi_pool_backward

__all__ = [
    "AnchorGenerator", "cell_anchors", "legacy_anchors",
    "BBOX_XFORM_CLIP", "BoxCoder",
    "box_area", "box_convert", "box_iou", "clip_boxes_to_image", "remove_small_boxes",
    "paste_masks_in_image", "project_masks_on_boxes",
    "batched_nms", "nms",
    "infer_scales", "level_mapper", "multiscale_roi_align", "multiscale_roi_align_backward",
    "roi_align", "roi_align_backward",
    "roi_pool", "roi_pool_backward",
]
