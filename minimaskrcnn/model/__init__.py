"""The Mask R-CNN network, one concept per file."""
