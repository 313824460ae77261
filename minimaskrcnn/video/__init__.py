"""Semi-supervised video object segmentation: a synthetic benchmark, optical flow, propagation.

    synthetic   seeded clips with attribute tags and visible-mask ground truth; DAVIS-layout files
    flow        pyramidal Lucas–Kanade optical flow, backward warping, forward–backward consistency
    propagate   first-frame mask propagation methods, each ``method(frames, first_mask, **options)``
    benchmark   run methods over the clips, DAVIS J/F per method and per attribute, JSON, frame strips

The evaluation measures themselves live in ``minimaskrcnn.evaluation.davis``.
"""
