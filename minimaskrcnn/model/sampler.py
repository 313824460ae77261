"""Balanced sampling of positive and negative training examples (torchvision
``BalancedPositiveNegativeSampler``), with an explicit random generator.

Given per-image labels (1 or more = positive, 0 = negative, -1 = ignored) it picks at most
``batch_size_per_image * positive_fraction`` positives at random, fills the rest of the batch with
random negatives, and returns two boolean masks per image. When there are fewer candidates than the
budget, every candidate is taken and no random number is drawn (the tests rely on this to compare
with torchvision deterministically).
"""

from __future__ import annotations

import numpy as np


class BalancedPositiveNegativeSampler:
    def __init__(self, batch_size_per_image: int, positive_fraction: float):
        if batch_size_per_image < 1:
            raise ValueError(f"batch_size_per_image must be >= 1, got {batch_size_per_image}")
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)

    def __call__(self, labels: list[np.ndarray], rng: np.random.Generator):
        """labels: list (one per image) of (N_i,) int arrays. Returns ``(pos_masks, neg_masks)``,
        two lists of (N_i,) bool arrays marking the sampled positives and negatives."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        pos_masks, neg_masks = [], []
        for lab in labels:
            lab = np.asarray(lab)
            positive = np.flatnonzero(lab >= 1)
            negative = np.flatnonzero(lab == 0)
            # 1. Positives take up to their fraction of the budget; negatives fill the rest.
            num_pos = min(positive.size, int(self.batch_size_per_image * self.positive_fraction))
            num_neg = min(negative.size, self.batch_size_per_image - num_pos)
            # 2. Random subsets (no draw at all when everything is taken).
            pos = positive if num_pos == positive.size else rng.choice(positive, num_pos, replace=False)
            neg = negative if num_neg == negative.size else rng.choice(negative, num_neg, replace=False)
            pm = np.zeros(lab.shape, dtype=bool)
            nm = np.zeros(lab.shape, dtype=bool)
            pm[pos] = True
            nm[neg] = True
            pos_masks.append(pm)
            neg_masks.append(nm)
        return pos_masks, neg_masks
