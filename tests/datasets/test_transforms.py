"""Augmentation: image, boxes and masks move together; the no-jitter resize is the model's own."""

import numpy as np
import pytest

from minimaskrcnn.config import TransformConfig
from minimaskrcnn.datasets.shapes import ShapesDataset, masks_to_boxes
from minimaskrcnn.datasets.transforms import (
    Augment,
    Subset,
    hflip,
    resize_shortest_edge,
    shortest_edge_size,
    split_indices,
)
from minimaskrcnn.model.transform import GeneralizedRCNNTransform


def _item(seed=0, h=60, w=90):
    rng = np.random.default_rng(seed)
    masks = np.zeros((2, h, w), dtype=bool)
    masks[0, 5:20, 7:31] = True
    masks[1, 30:55, 60:88] = True
    masks[1, 40:45, 50:60] = True
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return image, {"boxes": masks_to_boxes(masks), "labels": np.array([1, 2]), "masks": masks}


def test_hflip_moves_boxes_with_masks_and_is_an_involution():
    image, target = _item()
    fimage, ft = hflip(image, target)
    np.testing.assert_array_equal(fimage, image[:, ::-1])
    np.testing.assert_array_equal(ft["masks"], target["masks"][:, :, ::-1])
    np.testing.assert_array_equal(ft["boxes"], masks_to_boxes(ft["masks"]))  # x1' = W - x2, x2' = W - x1
    np.testing.assert_array_equal(ft["labels"], target["labels"])
    back_image, back = hflip(fimage, ft)
    np.testing.assert_array_equal(back_image, image)
    np.testing.assert_array_equal(back["boxes"], target["boxes"])


def test_hflip_of_continuous_box_by_hand():
    image = np.zeros((10, 40, 3), np.uint8)
    _, t = hflip(image, {"boxes": np.array([[2.5, 1.0, 10.25, 4.0]], np.float32), "labels": np.array([1])})
    np.testing.assert_allclose(t["boxes"], [[29.75, 1.0, 37.5, 4.0]])


@pytest.mark.parametrize("hw", [(60, 90), (90, 60), (128, 128), (37, 200)])
def test_resize_to_min_size_equals_the_models_resize(hw):
    image, target = _item(1, *hw) if hw[0] >= 60 and hw[1] >= 90 else (None, None)
    if image is None:  # small or portrait: a generic target
        rng = np.random.default_rng(2)
        image = rng.integers(0, 256, hw + (3,), dtype=np.uint8)
        masks = np.zeros((1,) + hw, dtype=bool)
        masks[0, 3:hw[0] - 3, 4:hw[1] - 5] = True
        target = {"boxes": masks_to_boxes(masks), "labels": np.array([1]), "masks": masks}
    cfg = TransformConfig(resize=True, min_size=100, max_size=160)
    tr = GeneralizedRCNNTransform(cfg)
    theirs_img, theirs = tr.resize(tr.to_chw(image), {**target, "boxes": target["boxes"].astype(np.float32)})
    mine_img, mine = resize_shortest_edge(image, target, cfg.min_size, cfg.max_size)
    assert mine_img.shape[:2] == theirs_img.shape[1:] == shortest_edge_size(*hw, 100, 160)
    np.testing.assert_allclose(tr.to_chw(mine_img), theirs_img, atol=2e-5)  # resize and normalise commute
    np.testing.assert_array_equal(mine["masks"], theirs["masks"])
    np.testing.assert_allclose(mine["boxes"], theirs["boxes"], rtol=1e-6)
    # and a no-resize pass of the model leaves the pre-resized image alone
    assert shortest_edge_size(*mine_img.shape[:2], 100, 160) == mine_img.shape[:2]


def test_scale_jitter_draws_short_sides_in_range_and_keeps_boxes_on_masks():
    image, target = _item(3, 60, 90)
    aug = Augment((50, 80), max_size=1000, flip_prob=0.5)
    rng = np.random.default_rng(0)
    shorts, flips = set(), 0
    for _ in range(40):
        im, t = aug(image, target, rng)
        h, w = im.shape[:2]
        shorts.add(min(h, w))
        assert 50 <= min(h, w) <= 80 and t["masks"].shape == (2, h, w) and im.dtype == np.float32
        # the scaled boxes and the nearest-resized masks agree to within one resized pixel
        np.testing.assert_allclose(t["boxes"], masks_to_boxes(t["masks"]), atol=1.0 * 80 / 60 + 1e-6)
        flips += bool(np.argmax(t["masks"][0].any(axis=0)) > w / 2)
    assert len(shorts) > 10 and 8 < flips < 32  # both ways, many sizes


def test_augment_is_a_function_of_the_rng_and_validates():
    image, target = _item()
    aug = Augment((40, 70), max_size=100)
    a = aug(image, target, np.random.default_rng([0, 3, 5]))
    b = aug(image, target, np.random.default_rng([0, 3, 5]))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1]["boxes"], b[1]["boxes"])
    assert max(a[0].shape[:2]) <= 100  # the long side cap
    with pytest.raises(ValueError, match="short_sides"):
        Augment((80, 40))
    with pytest.raises(ValueError, match="flip_prob"):
        Augment(None, flip_prob=2)
    im, t = Augment(None, flip_prob=0.0)(image, target, np.random.default_rng(0))
    assert im is image and t is target


def test_split_indices_seeded_disjoint_and_complete():
    tr, va = split_indices(50, 0.1, seed=3)
    assert len(va) == 5 and len(tr) == 45 and sorted(tr + va) == list(range(50))
    assert split_indices(50, 0.1, seed=3) == (tr, va) and split_indices(50, 0.1, seed=4) != (tr, va)
    assert split_indices(3, 0.01, 0)[1] and split_indices(3, 0.99, 0)[0]  # at least one each side
    with pytest.raises(ValueError, match="at least 2"):
        split_indices(1, 0.5, 0)
    with pytest.raises(ValueError, match="val_fraction"):
        split_indices(10, 1.0, 0)
    ds = ShapesDataset(6, image_size=64, seed=0)
    sub = Subset(ds, [4, 1])
    assert len(sub) == 2 and sub.class_names == ds.class_names and sub.num_classes == ds.num_classes
    np.testing.assert_array_equal(sub[0]["image"], ds[4]["image"])
