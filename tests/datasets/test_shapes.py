"""Synthetic shapes: exact masks, tight boxes, determinism, occlusion."""

from __future__ import annotations

import numpy as np
import pytest

from minimaskrcnn.datasets.shapes import (
    SHAPE_NAMES,
    TEXTURE_NAMES,
    ShapesDataset,
    masks_to_boxes,
    shape_mask,
    shape_window,
    texture_pattern,
)

VARIANTS = {
    "default": {},
    "all_classes": {"classes": "all"},
    "textures": {"textures": True},
    "occlusion": {"occlusion": True},
    "everything": {"classes": "all", "textures": True, "occlusion": True, "rotate": True,
                   "num_instances": (2, 6)},
    "small_image": {"image_size": (40, 72), "min_size": 6, "max_size": 20},
}


def _naive_box(mask):
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


# --- rasterisation: golden cases worked out by hand ------------------------------------------------

def test_circle_golden():
    # Diameter 4 centred at (2, 2) in a 4x4 image. Pixel centres are at 0.5, 1.5, 2.5, 3.5; a corner
    # pixel's centre is 1.5·√2 ≈ 2.12 > 2 from the centre (out), an edge pixel's (1.5, 0.5) is
    # √2.5 ≈ 1.58 ≤ 2 (in). So everything but the four corners.
    expected = np.ones((4, 4), dtype=bool)
    expected[[0, 0, 3, 3], [0, 3, 0, 3]] = False
    np.testing.assert_array_equal(shape_mask("circle", 2, 2, 4, 0.0, (4, 4)), expected)


def test_square_golden():
    # Side 4 centred at (4, 4): covers [2, 6] × [2, 6], i.e. pixel centres 2.5..5.5 → rows/cols 2..5.
    mask = shape_mask("square", 4, 4, 4, 0.0, (8, 8))
    expected = np.zeros((8, 8), dtype=bool)
    expected[2:6, 2:6] = True
    np.testing.assert_array_equal(mask, expected)
    # A quarter turn maps the square onto itself.
    np.testing.assert_array_equal(shape_mask("square", 4, 4, 4, np.pi / 2, (8, 8)), expected)


def test_triangle_golden():
    # Width 4 centred at (2, 2): apex (2, 2 − √3) ≈ (2, 0.268), base y = 2 + √3 ≈ 3.732 from x=0 to 4.
    # The half-width at height y is (y − 0.268) / (2√3) · 2:
    #   row 0 (y=0.5): 0.134 → [1.87, 2.13] holds no pixel centre;
    #   row 1 (y=1.5): 0.711 → [1.29, 2.71] holds 1.5, 2.5 → columns 1, 2;
    #   row 2 (y=2.5): 1.289 → [0.71, 3.29] holds 1.5, 2.5 → columns 1, 2;
    #   row 3 (y=3.5): 1.866 → [0.13, 3.87] holds all four.
    expected = np.array([[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [1, 1, 1, 1]], dtype=bool)
    np.testing.assert_array_equal(shape_mask("triangle", 2, 2, 4, 0.0, (4, 4)), expected)


def test_ring_has_a_hole_and_cross_has_no_corners():
    ring = shape_mask("ring", 10, 10, 16, 0.0, (20, 20))
    assert not ring[9:11, 9:11].any() and ring[9, 2] and ring[2, 9]
    cross = shape_mask("cross", 10, 10, 16, 0.0, (20, 20))
    assert cross[10, 10] and cross[10, 2] and cross[2, 10] and not cross[3, 3]


@pytest.mark.parametrize("name", SHAPE_NAMES)
def test_window_matches_brute_force(name):
    # The window rasteriser against a direct full-image evaluation of the same unit-frame test.
    from minimaskrcnn.datasets import shapes as S

    rng = np.random.default_rng(1)
    for _ in range(5):
        cx, cy, size, angle = rng.uniform(15, 25), rng.uniform(15, 25), rng.uniform(4, 20), rng.uniform(0, 7)
        yy, xx = np.mgrid[0:40, 0:40] + 0.5
        dx, dy = xx - cx, yy - cy
        c, s = np.cos(angle), np.sin(angle)
        full = S._inside_unit_shape(name, (c * dx - s * dy) / (size / 2), (s * dx + c * dy) / (size / 2))
        np.testing.assert_array_equal(shape_mask(name, cx, cy, size, angle, (40, 40)), full)
        assert full.any()


def test_window_clipped_at_border():
    y0, y1, x0, x1, local = shape_window("circle", 1.0, 1.0, 10, 0.0, (8, 8))
    assert (y0, x0) == (0, 0) and local.shape == (y1, x1)
    assert np.array_equal(shape_mask("circle", 1.0, 1.0, 10, 0.0, (8, 8))[:y1, :x1], local)


@pytest.mark.parametrize("kind", TEXTURE_NAMES)
def test_textures_in_unit_range(kind):
    t = texture_pattern(kind, (17, 23), np.random.default_rng(0))
    assert t.shape == (17, 23) and t.min() >= 0 and t.max() <= 1
    if kind != "solid":
        assert t.max() > t.min()


def test_masks_to_boxes_golden():
    m = np.zeros((2, 5, 6), dtype=bool)
    m[0, 1:3, 2:5] = True  # rows 1-2, columns 2-4 → (2, 1, 5, 3)
    m[1, 4, 0] = True  # one pixel at the corner → (0, 4, 1, 5)
    np.testing.assert_array_equal(masks_to_boxes(m), [[2, 1, 5, 3], [0, 4, 1, 5]])
    with pytest.raises(ValueError, match="non-empty"):
        masks_to_boxes(np.zeros((1, 3, 3), dtype=bool))


# --- the data set ----------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_items_are_well_formed(variant):
    ds = ShapesDataset(30, seed=3, **VARIANTS[variant])
    h, w = ds.image_size
    lo, hi = ds.num_instances
    for i, item in enumerate(ds):
        image, boxes, labels, masks = item["image"], item["boxes"], item["labels"], item["masks"]
        k = len(labels)
        assert item["image_id"] == i
        assert image.shape == (h, w, 3) and image.dtype == np.uint8
        assert boxes.shape == (k, 4) and boxes.dtype == np.float32
        assert labels.dtype == np.int64 and masks.shape == (k, h, w) and masks.dtype == bool
        assert 1 <= k <= hi
        assert labels.min() >= 1 and labels.max() <= ds.num_classes
        # Masks: none empty, never overlapping; boxes are their tight boxes.
        assert masks.reshape(k, -1).any(axis=1).all()
        assert masks.sum(axis=0).max() <= 1
        np.testing.assert_array_equal(boxes, np.array([_naive_box(m) for m in masks], dtype=np.float32))


@pytest.mark.parametrize("variant", ["default", "all_classes", "occlusion", "small_image"])
def test_solid_colours_match_masks(variant):
    # Without textures every mask is one colour and everything outside the masks is the background.
    ds = ShapesDataset(30, seed=5, **VARIANTS[variant])
    for item in ds:
        image, masks = item["image"].reshape(-1, 3), item["masks"].reshape(len(item["labels"]), -1)
        background = ~masks.any(axis=0)
        bg = np.unique(image[background], axis=0)
        assert len(bg) == 1
        for m in masks:
            colours = np.unique(image[m], axis=0)
            assert len(colours) == 1 and not np.array_equal(colours[0], bg[0])


def test_default_objects_do_not_touch():
    ds = ShapesDataset(40, seed=0)
    assert ds.class_names == ["background", "square", "circle", "triangle"] and ds.num_classes == 3
    counts = []
    for item in ds:
        b = item["boxes"]
        counts.append(len(b))
        for i in range(len(b)):
            for j in range(i + 1, len(b)):
                gap_x = max(b[i, 0], b[j, 0]) - min(b[i, 2], b[j, 2])
                gap_y = max(b[i, 1], b[j, 1]) - min(b[i, 3], b[j, 3])
                assert max(gap_x, gap_y) >= 1  # at least one background pixel between them
    assert set(counts) == {1, 2, 3, 4}


def test_deterministic_whatever_the_order():
    opts = {"classes": "all", "textures": True, "occlusion": True, "rotate": True}
    forward = [ShapesDataset(12, seed=7, **opts)[i] for i in range(12)]
    ds = ShapesDataset(12, seed=7, **opts)
    for i in [11, 3, 3, 0, 7, -1]:
        a, b = ds[i], forward[i % 12]
        for key in ("image", "boxes", "labels", "masks"):
            np.testing.assert_array_equal(a[key], b[key])
    # A bigger data set with the same seed starts with the same items; another seed differs.
    np.testing.assert_array_equal(ShapesDataset(100, seed=7, **opts)[5]["image"], forward[5]["image"])
    assert not np.array_equal(ShapesDataset(12, seed=8, **opts)[5]["image"], forward[5]["image"])


def test_occlusion_removes_hidden_pixels():
    ds = ShapesDataset(40, seed=2, occlusion=True, classes="all", rotate=True, num_instances=(3, 6))
    h, w = ds.image_size
    occluded = 0
    for i in range(len(ds)):
        item, objects = ds[i], ds.layout(i)
        assert [o["label"] for o in objects] == list(item["labels"])
        full = np.stack([shape_mask(o["name"], *o["center"], o["size"], o["angle"], (h, w)) for o in objects])
        for k in range(len(objects)):
            on_top = full[k + 1:].any(axis=0)
            # The visible mask is the full shape minus whatever lies on top of it ...
            np.testing.assert_array_equal(item["masks"][k], full[k] & ~on_top)
            # ... and a partly hidden instance keeps at least min_visible_area pixels.
            visible, total = item["masks"][k].sum(), full[k].sum()
            assert visible >= min(ds.min_visible_area, total)
            occluded += visible < total
    assert occluded >= 10  # occlusion really happens


def test_small_visible_parts_are_dropped():
    # With a huge minimum visible area every partly hidden instance goes, from the picture too.
    ds = ShapesDataset(30, seed=4, occlusion=True, min_visible_area=10**6)
    for i in range(len(ds)):
        item = ds[i]
        objects = ds.layout(i)
        full = [shape_mask(o["name"], *o["center"], o["size"], o["angle"], ds.image_size) for o in objects]
        for k, m in enumerate(item["masks"]):
            np.testing.assert_array_equal(m, full[k])  # nobody kept is hidden at all


def test_batch_equals_items():
    ds = ShapesDataset(10, seed=1, textures=True)
    batch = ds.batch([4, 0, 9])
    assert batch["images"].shape == (3, 128, 128, 3) and batch["image_ids"] == [4, 0, 9]
    for b, i in enumerate([4, 0, 9]):
        item = ds[i]
        np.testing.assert_array_equal(batch["images"][b], item["image"])
        np.testing.assert_array_equal(batch["masks"][b], item["masks"])
        np.testing.assert_array_equal(batch["boxes"][b], item["boxes"])
        np.testing.assert_array_equal(batch["labels"][b], item["labels"])


def test_textures_vary_pixels_inside_objects():
    ds = ShapesDataset(20, seed=0, textures=True)
    varied = sum(len(np.unique(item["image"][m], axis=0)) > 1 for item in ds for m in item["masks"])
    assert varied >= 5
    # The background is textured too: more than one colour outside the masks (nearly always; two
    # blended colours can coincide after clipping).
    textured_bg = [len(np.unique(it["image"][~it["masks"].any(axis=0)], axis=0)) > 1 for it in ds]
    assert sum(textured_bg) >= 18


def test_len_index_and_options_errors():
    ds = ShapesDataset(3)
    assert len(ds) == 3 and len(list(ds)) == 3
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(TypeError):
        ds[1.5]
    with pytest.raises(ValueError, match="classes"):
        ShapesDataset(3, classes=["square", "blob"])
    with pytest.raises(ValueError, match="num_instances"):
        ShapesDataset(3, num_instances=(4, 2))
    with pytest.raises(ValueError, match="max_size"):
        ShapesDataset(3, image_size=32, max_size=40)
    with pytest.raises(ValueError, match="min_size"):
        ShapesDataset(3, min_size=30, max_size=20)
    with pytest.raises(TypeError):
        ShapesDataset(3, colour="red")
    assert ShapesDataset(2, classes=["star", "ring"]).class_names == ["background", "star", "ring"]


def test_random_configurations_keep_the_invariants():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=30, deadline=None)
    @hypothesis.given(seed=st.integers(0, 10**6), index=st.integers(0, 10**6), h=st.integers(24, 96),
                      w=st.integers(24, 96), hi=st.integers(1, 8), textures=st.booleans(),
                      occlusion=st.booleans(), rotate=st.booleans(),
                      classes=st.lists(st.sampled_from(SHAPE_NAMES), min_size=1, max_size=4, unique=True))
    def check(seed, index, h, w, hi, textures, occlusion, rotate, classes):
        ds = ShapesDataset(index + 1, image_size=(h, w), seed=seed, classes=classes, textures=textures,
                           occlusion=occlusion, rotate=rotate, num_instances=(1, hi), min_size=4, max_size=16)
        item = ds[index]
        k = len(item["labels"])
        assert 1 <= k <= hi and item["masks"].shape == (k, h, w)
        assert item["masks"].reshape(k, -1).any(axis=1).all() and item["masks"].sum(axis=0).max() <= 1
        np.testing.assert_array_equal(item["boxes"], np.array([_naive_box(m) for m in item["masks"]]))
        assert set(item["labels"].tolist()) <= set(range(1, len(classes) + 1))

    check()
