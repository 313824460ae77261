"""Flow's masks with align's verdicts ("flowalign"): precise masks while an object is in sight, and the
object found again when it comes back.

    masks = propagate_flowalign(frames, first_mask, **options)

The two methods fail in opposite places. ``flow`` (``propagate.FlowTracker``) carries each object's mask
from frame to frame: its masks follow deformation and stay sharp, but it cannot tell that an object has
been covered up or has left the frame — the mask stays on the occluder or fades at the border — and an
object it has lost is never found again. ``align`` (``align.AlignTracker``) fits each object's frame-0
template to every frame: it knows when the template is no longer explained by the frame (the object is
*absent*) and searches the whole frame for it until it is back, with no classes and no training; but an
affine warp of the first frame's mask cannot follow a shape that deforms, and on small, flat objects
its occlusion test eats into the mask. Here flow draws the masks and align is consulted only where
flow's mask no longer looks like the object. For each frame t:

1. Flow predicts the label probabilities P_t (``FlowTracker.predict``: steps 1–4 of ``propagate_flow``);
   M_j is where object j wins the argmax.
2. Align steps on its own (``AlignTracker.step``): for each object j, present or absent, re-acquired
   by its search this frame or not, and its visible mask A_j.
3. Trust: when M_j has at least ``min_area`` pixels and at least ``support_min`` of them have colours
   likelier under the object's colour histogram than under the background's (``ColourModel.support``),
   flow's mask looks like the object and stands, whatever align says (align's verdicts fail on small
   objects that deform or change their looks, where flow's mask is right).
4. Otherwise, absent for align: P_t[j] ← 0 — the object is covered up or gone, and flow's mask lies
   on what covers it or on the background it left.
5. Otherwise, present for align, and either re-acquired by its search this frame, or M_j covers less
   than ``reseed_fraction`` of A_j (flow has lost it): P_t[j] ← A_j, flow restarts from align's mask
   (the other objects' probabilities are cleared there).
6. Background P_t[0] = 1 − Σ_j P_t[j] clipped to [0, 1]; the argmax is frame t's answer and P_t the
   flow's next state (``FlowTracker.commit``). The colour histograms follow slow changes of looks:
   h ← (1 − ``colour_momentum``) h + ``colour_momentum`` · h(frame t), from the background and the
   trusted masks only (a mask lying on an occluder would teach the object the occluder's colours).

Costs per frame: the flow method's two optical flows plus align's Gauss–Newton fits (and its search while
an object is absent).
"""

from __future__ import annotations

import numpy as np

from minimaskrcnn.video.align import AlignTracker
from minimaskrcnn.video.common import ColourModel, check_inputs
from minimaskrcnn.video.propagate import FlowTracker

__all__ = ["propagate_flowalign"]


def propagate_flowalign(frames, first_mask, *, reseed_fraction: float = 0.3, support_min: float = 0.5,
                        min_area: int = 12, colour_momentum: float = 0.1, flow_options: dict | None = None,
                        align_options: dict | None = None) -> np.ndarray:
    """Flow's masks, align's presence verdicts and re-acquisitions (module docstring). frames (T, H, W, 3)
    uint8, first_mask (H, W) bool or ID map; returns the (T, H, W) uint8 ID map, frame 0 = first_mask.
    flow_options go to ``FlowTracker``, align_options to ``AlignTracker``."""
    frames, ids, k = check_inputs(frames, first_mask)
    for name, v in (("reseed_fraction", reseed_fraction), ("support_min", support_min)):
        if not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {v}")
    flow = FlowTracker(frames[0], ids, **(flow_options or {}))
    align = AlignTracker(frames[0], ids, **(align_options or {}))
    colour = ColourModel(frames[0], ids, k + 1)
    out = np.zeros(frames.shape[:3], np.uint8)
    out[0] = ids
    for t in range(1, frames.shape[0]):
        probs = flow.predict(frames[t])  # 1.
        labels = probs.argmax(-1)
        verdict = align.step(frames[t])  # 2.
        trusted = np.zeros(k + 1, bool)
        trusted[0] = True
        for j in range(1, k + 1):
            m_j = labels == j
            if m_j.sum() >= min_area and colour.support(frames[t], m_j, j) >= support_min:
                trusted[j] = True
                continue  # 3. flow's mask looks like the object: it stands
            if not align.visible[j - 1]:  # 4.
                probs[..., j] = 0.0
                continue
            a_j = verdict == j
            lost = (m_j & a_j).sum() < reseed_fraction * a_j.sum()
            if align.found[j - 1] or lost:  # 5.
                probs[a_j, 1:] = 0.0
                probs[..., j] = a_j
        probs[..., 0] = np.clip(1.0 - probs[..., 1:].sum(-1), 0.0, 1.0)  # 6.
        out[t] = flow.commit(frames[t], probs)
        keep = trusted[out[t]]  # the colour models follow slow changes, from the trusted masks only
        colour.update(frames[t][keep], out[t][keep], colour_momentum)
    return out
