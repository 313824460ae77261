"""Detection ops: boxes, anchors, box coding, NMS, RoIPool, RoIAlign, mask targets and pasting."""
