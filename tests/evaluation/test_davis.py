"""DAVIS J / F / statistics: hand-worked cases and a slow, obviously-correct boundary F."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minimaskrcnn.evaluation.davis import (
    binary_dilation,
    boundary_radius,
    db_statistics,
    disk,
    evaluate_benchmark,
    evaluate_clip,
    f_measure,
    jaccard,
    seg2bmap,
)


def square(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


# ---------------------------------------------------------------- slow reference, written from the text
def slow_bmap(m):
    """Boundary by the definition, one pixel at a time (neighbours outside the image are 0)."""
    h, w = m.shape

    def at(y, x):
        return bool(m[y, x]) if (0 <= y < h and 0 <= x < w) else False

    b = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            if y == h - 1 and x == w - 1:
                continue
            if y == h - 1:
                neigh = [at(y, x + 1)]
            elif x == w - 1:
                neigh = [at(y + 1, x)]
            else:
                neigh = [at(y, x + 1), at(y + 1, x), at(y + 1, x + 1)]
            b[y, x] = any(at(y, x) != n for n in neigh)
    return b


def slow_f(gt, pred, r):
    """F from point sets: a boundary pixel matches when the other boundary has a pixel within r."""
    bs = np.argwhere(slow_bmap(pred))
    bg = np.argwhere(slow_bmap(gt))
    if len(bs) == 0 and len(bg) == 0:
        return 1.0
    if len(bs) == 0 or len(bg) == 0:
        return 0.0  # P = 1, R = 0 (or P = 0, R = 1) → F = 0

    def matched(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.count_nonzero(d2.min(1) <= r * r)

    p = matched(bs, bg) / len(bs)
    rc = matched(bg, bs) / len(bg)
    return 0.0 if p + rc == 0 else 2 * p * rc / (p + rc)


# ---------------------------------------------------------------- J
def test_jaccard_empty_is_one():
    z = np.zeros((5, 6), bool)
    assert jaccard(z, z) == 1.0
    assert jaccard(z, square(5, 6, 1, 2, 1, 2)) == 0.0


def test_jaccard_one_pixel_shift():
    # 2x2 square shifted right by one pixel: overlap 2 pixels, union 4 + 4 − 2 = 6 → J = 1/3.
    g = square(6, 6, 1, 3, 1, 3)
    p = square(6, 6, 1, 3, 2, 4)
    assert jaccard(g, p) == pytest.approx(1 / 3)


def test_jaccard_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        jaccard(np.zeros((4, 4), bool), np.zeros((4, 5), bool))


# ---------------------------------------------------------------- seg2bmap and F
def test_seg2bmap_square_is_ring_half_a_pixel_up_left():
    # A filled square on rows/cols 3..5 has as boundary the ring of the square 2..5: 4·4 − 4 = 12 pixels.
    m = square(9, 9, 3, 6, 3, 6)
    b = seg2bmap(m)
    ring = square(9, 9, 2, 6, 2, 6) & ~square(9, 9, 3, 5, 3, 5)
    np.testing.assert_array_equal(b, ring)
    assert b.sum() == 12


def test_seg2bmap_border_rules():
    # Full image: nothing differs from its neighbours inside; the last row/column compare with
    # neighbours inside the image only, so there is no boundary at all.
    assert not seg2bmap(np.ones((4, 5), bool)).any()
    # A single pixel at the bottom-right corner: its west, north and north-west neighbours see it; the
    # pixel itself (bottom-right) is never a boundary.
    m = np.zeros((3, 3), bool)
    m[2, 2] = True
    np.testing.assert_array_equal(np.argwhere(seg2bmap(m)), [[1, 1], [1, 2], [2, 1]])


def test_disk_radius_two():
    # 13 offsets with dy² + dx² ≤ 4: the centre, 4 at distance 1, 4 diagonals (2), 4 at distance 2.
    d = disk(2)
    assert d.shape == (5, 5) and d.sum() == 13
    assert not d[0, 0] and d[0, 2] and d[1, 1]


def test_boundary_radius():
    assert boundary_radius((128, 128)) == 2  # ceil(0.008 · 181.02) = ceil(1.448)
    assert boundary_radius((480, 854)) == 8  # ceil(0.008 · 979.6)
    assert boundary_radius((10, 10), 3) == 3
    with pytest.raises(ValueError):
        boundary_radius((10, 10), 1.5)


def test_f_empty_cases():
    z = np.zeros((8, 8), bool)
    s = square(8, 8, 2, 5, 2, 5)
    assert f_measure(z, z) == 1.0  # both empty: P = R = 1
    assert f_measure(s, z) == 0.0  # prediction empty: P = 1, R = 0 → F = 0
    assert f_measure(z, s) == 0.0  # ground truth empty: P = 0, R = 1 → F = 0


def test_f_one_pixel_shift_within_tolerance():
    # Any tolerance r ≥ 1 forgives a one-pixel shift entirely.
    g = square(20, 20, 5, 12, 5, 12)
    p = square(20, 20, 5, 12, 6, 13)
    assert f_measure(g, p) == 1.0  # r = ceil(0.008 · 28.3) = 1


def test_f_three_pixel_shift_hand_worked():
    # 128×128 → r = 2. GT: 20×20 square rows/cols 40..59 → boundary ring rows/cols 39..59 (80 px).
    # Prediction shifted right by 3 → ring rows 39..59, cols 42..62.
    # Prediction pixels within 2 of the GT ring: top row cols 42..61 (20; col 62 is 3 away),
    # bottom row likewise 20, left column col 42 only rows 40, 41, 57, 58 (within 2 of the GT's top
    # and bottom rows), right column col 62 none: 44 of 80 → P = 0.55. By symmetry R = 0.55, F = 0.55.
    g = square(128, 128, 40, 60, 40, 60)
    p = square(128, 128, 40, 60, 43, 63)
    assert f_measure(g, p) == pytest.approx(0.55)
    assert jaccard(g, p) == pytest.approx(340 / 460)  # overlap 20·17, union 400 + 400 − 340
    assert slow_f(g, p, 2) == pytest.approx(0.55)


def test_dilation_matches_definition():
    rng = np.random.default_rng(0)
    b = rng.random((11, 13)) < 0.05
    for r in (0, 1, 2, 3):
        pts = np.argwhere(b)
        yy, xx = np.mgrid[0:11, 0:13]
        want = np.zeros_like(b)
        for y, x in pts:
            want |= (yy - y) ** 2 + (xx - x) ** 2 <= r * r
        np.testing.assert_array_equal(binary_dilation(b, r), want)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), h=st.integers(3, 24), w=st.integers(3, 24),
       density=st.floats(0.05, 0.95), th=st.sampled_from([0.008, 0.05, 0.1, 2.0]))
def test_f_matches_slow_reference_on_random_masks(seed, h, w, density, th):
    rng = np.random.default_rng(seed)
    gt = rng.random((h, w)) < density
    pred = gt ^ (rng.random((h, w)) < 0.15)
    np.testing.assert_array_equal(seg2bmap(gt), slow_bmap(gt))
    r = boundary_radius((h, w), th)
    assert f_measure(gt, pred, th) == pytest.approx(slow_f(gt, pred, r), abs=1e-12)


# ---------------------------------------------------------------- statistics
def test_db_statistics_hand_worked():
    # n = 9: linspace(1, 9, 5) = 1, 3, 5, 7, 9 → ids 0, 2, 4, 6, 8; bin 0 = v[0..2], bin 3 = v[6..8].
    v = np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    m, r, d = db_statistics(v)
    assert m == pytest.approx(0.6)
    assert r == pytest.approx(5 / 9)  # 1, .9, .8, .7, .6 are > 0.5 (0.5 itself is not)
    assert d == pytest.approx(0.9 - 0.3)  # mean(1, .9, .8) − mean(.4, .3, .2)


def test_db_statistics_halves_round_up():
    # n = 3: linspace(1, 3, 5) = 1, 1.5, 2, 2.5, 3; +1e-10 makes 1.5 → 2 and 2.5 → 3, so ids 0, 1, 1,
    # 2, 2: bin 0 = v[0..1], bin 3 = v[2..2]. (Plain banker's rounding would give ids 0, 1, 1, 1, 2.)
    v = np.array([1.0, 0.0, 0.4])
    assert db_statistics(v)[2] == pytest.approx(0.5 - 0.4)


def test_db_statistics_long_clip_past_256_frames():
    # n = 301: edges round(1, 76, 151, 226, 301) − 1 = 0, 75, 150, 225, 300. With v[i] = i the first
    # bin (0..75) has mean 37.5 and the last (225..300) mean 262.5: decay −225. A uint8 cast would
    # wrap 300 to 44 and break this.
    v = np.arange(301, dtype=float)
    m, r, d = db_statistics(v)
    assert m == pytest.approx(150.0)
    assert d == pytest.approx(37.5 - 262.5)
    v = np.ones(1000)
    v[750:] = 0.0
    m, r, d = db_statistics(v)
    # linspace(1, 1000, 5) = 1, 250.75, 500.5, 750.25, 1000 → ids 0, 250, 500, 749, 999: the last bin
    # v[749..999] holds 251 values, one of them (v[749]) still 1 → decay = 1 − 1/251.
    assert m == pytest.approx(0.75) and r == pytest.approx(0.75)
    assert d == pytest.approx(1.0 - 1 / 251)


def test_db_statistics_single_value_and_bad_input():
    assert db_statistics([0.7]) == (0.7, 1.0, 0.0)
    with pytest.raises(ValueError):
        db_statistics([])


# ---------------------------------------------------------------- clips
def test_evaluate_clip_several_objects_first_and_last_frames_ignored():
    t, h, w = 6, 16, 16
    gt = np.zeros((t, h, w), np.uint8)
    gt[:, 2:6, 2:6] = 1
    gt[:, 9:14, 9:14] = 2
    pred = gt.copy()
    pred[0] = 0  # the first and the last frames are not evaluated
    pred[-1] = 0
    pred[3][pred[3] == 2] = 0  # object 2 lost in frame 3 (evaluated column 2)
    res = evaluate_clip(gt, pred)
    assert res["num_objects"] == 2
    assert res["J"].shape == (2, 4)
    np.testing.assert_allclose(res["J"][0], 1.0)
    np.testing.assert_allclose(res["J"][1], [1, 1, 0, 1])
    o2 = res["objects"][1]
    assert o2["J"]["mean"] == pytest.approx(0.75) and o2["J"]["recall"] == pytest.approx(0.75)
    # n = 4: linspace(1, 4, 5) = 1, 1.75, 2.5, 3.25, 4 → ids 0, 1, 2, 2, 3 → bins v[0..1] ... v[2..3];
    # decay = mean(1, 1) − mean(0, 1) = 0.5.
    assert o2["J"]["decay"] == pytest.approx(0.5)
    bench = evaluate_benchmark([res])
    assert bench["J"]["mean"] == pytest.approx((1.0 + 0.75) / 2)
    assert bench["J&F"] == pytest.approx((bench["J"]["mean"] + bench["F"]["mean"]) / 2)
    assert bench["num_objects"] == 2


def test_evaluate_clip_long_clip():
    t = 300
    gt = np.zeros((t, 8, 8), np.uint8)
    gt[:, 2:5, 2:5] = 1
    pred = gt.copy()
    pred[200:] = 0  # lost from frame 200: evaluated frames 1..298, columns 199.. are zero
    res = evaluate_clip(gt, pred)
    n = t - 2
    assert res["objects"][0]["J"]["mean"] == pytest.approx(199 / n)
    assert res["objects"][0]["J"]["decay"] == pytest.approx(1.0)


def test_evaluate_clip_bad_input():
    gt = np.zeros((4, 8, 8), np.uint8)
    gt[:, 2:4, 2:4] = 1
    with pytest.raises(ValueError, match="same shape"):
        evaluate_clip(gt, gt[:, :, :7])
    with pytest.raises(ValueError, match="only 1 objects"):
        evaluate_clip(gt, gt * 2)
    with pytest.raises(ValueError, match="no object"):
        evaluate_clip(np.zeros_like(gt), gt)
    with pytest.raises(TypeError):
        evaluate_clip(gt, gt.astype(float))
    assert math.isclose(evaluate_clip(gt, gt)["objects"][0]["F"]["mean"], 1.0)
