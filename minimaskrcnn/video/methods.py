"""The registry of first-frame mask propagation methods: one name → one function.

    masks = propagate(name, frames, first_mask, **options)

Every method takes (frames (T, H, W, 3) uint8, first_mask (H, W) bool or ID map) and returns the
(T, H, W) uint8 ID map (see ``video.propagate``). This module sits above the methods' own modules and
imports them; none of them imports it.

    copy      the first mask repeated (``video.propagate``) — the floor any method must beat.
    flow      optical-flow warping of the previous labels (``video.propagate``).
    align     each object's first-frame appearance aligned to every frame, with occlusion reasoning and
              re-acquisition by template search, class-agnostic (``video.align``).
    flowalign flow's masks, align's verdicts: cleared while align finds the object absent, restarted
              from align's mask when it is found again (``video.flowalign``).
    embed     nearest-neighbour matching of pixel features (``video.embed``).
    redetect  tracking by re-detection with the trained Mask R-CNN (``video.redetect``).
    osvos     the Mask R-CNN's heads fine-tuned on the first frame, OSVOS-style (``video.osvos``).

``DETECTOR_METHODS`` need the trained detector (``model=`` or ``checkpoint=``); their modules are
imported on first use, so the others run without loading the model code.
"""

from __future__ import annotations

import numpy as np

from minimaskrcnn.video.align import propagate_align
from minimaskrcnn.video.embed import propagate_embed
from minimaskrcnn.video.flowalign import propagate_flowalign
from minimaskrcnn.video.propagate import propagate_copy, propagate_flow

__all__ = ["METHODS", "DETECTOR_METHODS", "propagate", "propagate_redetect", "propagate_osvos"]


def propagate_redetect(frames, first_mask, **options) -> np.ndarray:
    """Tracking by re-detection with the trained Mask R-CNN: see ``minimaskrcnn.video.redetect``."""
    from minimaskrcnn.video.redetect import propagate_redetect as method

    return method(frames, first_mask, **options)


def propagate_osvos(frames, first_mask, **options) -> np.ndarray:
    """OSVOS-style first-frame fine-tuning of the Mask R-CNN heads: see ``minimaskrcnn.video.osvos``."""
    from minimaskrcnn.video.osvos import propagate_osvos as method

    return method(frames, first_mask, **options)


METHODS = {"copy": propagate_copy, "flow": propagate_flow, "align": propagate_align,
           "flowalign": propagate_flowalign, "embed": propagate_embed, "redetect": propagate_redetect,
           "osvos": propagate_osvos}
# Methods that need the trained detector (``model=`` or ``checkpoint=``).
DETECTOR_METHODS = ("redetect", "osvos")


def propagate(method: str, frames, first_mask, **options) -> np.ndarray:
    """Run the propagation method named ``method`` (a key of ``METHODS``)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[method](frames, first_mask, **options)
