"""``minimaskrcnn demo``: the shipped shapes model on fresh images.

Loads ``data/shapes_model.npz`` (made by ``minimaskrcnn train --preset shapes``; see the README),
generates ``num_images`` shapes images from a seed training never used, prints box and mask COCO AP
and writes a figure of the predictions on the first six images.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def run_demo(out: str = "demo.png", num_images: int = 50, seed: int = 12345, checkpoint=None,
             score_thresh: float = 0.5) -> int:
    from minimaskrcnn.weights import SHIPPED_MODEL

    checkpoint = Path(checkpoint) if checkpoint is not None else SHIPPED_MODEL
    if not checkpoint.exists():
        print("No trained model is available yet: the shapes checkpoint "
              f"({checkpoint.name}) has not been trained and shipped in data/. "
              "Nothing was run. Train one with `minimaskrcnn train --preset shapes` and pass "
              "runs/shapes/model.npz to `minimaskrcnn evaluate` / `predict`.")
        return 1
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from minimaskrcnn import viz
    from minimaskrcnn.datasets.shapes import shapes_dataset
    from minimaskrcnn.evaluation import evaluate_model, summary
    from minimaskrcnn.weights import load_model

    t0 = time.perf_counter()
    model = load_model(checkpoint)
    dataset = shapes_dataset(num_images, seed)
    # 1. COCO AP on every image
    results, _, _ = evaluate_model(model, dataset)
    print(f"{num_images} fresh shapes images (seed {seed}), model {checkpoint.name}:")
    print(summary(results))
    # 2. a figure of the first images (detections scoring at least score_thresh)
    shown = list(range(min(6, num_images)))
    items = [dataset[i] for i in shown]
    preds = model.predict([it["image"] for it in items])
    cols = min(3, len(items))
    rows = (len(items) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, it, p in zip(axes.ravel(), items, preds):
        keep = p["scores"] >= score_thresh
        viz.draw_instances(it["image"], p["boxes"][keep], p["labels"][keep], p["scores"][keep],
                           p["masks"][keep], class_names=model.config.class_names, ax=ax)
    fig.suptitle(f"mask AP {results['segm']['AP']:.3f}, box AP {results['bbox']['AP']:.3f} "
                 f"on {num_images} fresh images")
    fig.tight_layout()
    out = os.fspath(out)
    root, ext = os.path.splitext(out)
    tmp = f"{root}.tmp{ext or '.png'}"  # keep the extension: matplotlib picks the format from it
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    print(f"figure written to {out} ({time.perf_counter() - t0:.1f} s)")
    return 0
