"""The synthetic VOS benchmark: determinism, ground truth, the scenarios' promised events, DAVIS files."""

from __future__ import annotations

import numpy as np
import pytest

from minimaskrcnn.video.synthetic import (
    ATTRIBUTES,
    SCENARIOS,
    make_benchmark,
    make_clip,
)


@pytest.fixture(scope="module")
def clips():
    """One clip of every scenario (index i has scenario SCENARIOS[i])."""
    return {SCENARIOS[i]: make_clip(i, seed=3) for i in range(len(SCENARIOS))}


def centroid_speed(clip, obj=1):
    c = []
    for t in range(clip.ids.shape[0]):
        ys, xs = np.nonzero(clip.ids[t] == obj)
        c.append((xs.mean(), ys.mean()) if xs.size else (np.nan, np.nan))
    return np.nanmean(np.linalg.norm(np.diff(np.array(c), axis=0), axis=1))


def test_deterministic_per_seed_and_index():
    a, b = make_clip(5, seed=7), make_clip(5, seed=7)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.ids, b.ids)
    assert a.attributes == b.attributes
    c = make_clip(5, seed=8)
    assert c.frames.shape != a.frames.shape or not np.array_equal(c.frames, a.frames)


def test_layout_and_ground_truth(clips):
    for name, clip in clips.items():
        t, h, w, three = clip.frames.shape
        assert 40 <= t <= 80 and (h, w, three) == (128, 128, 3)
        assert clip.frames.dtype == np.uint8 and clip.ids.dtype == np.uint8
        assert clip.ids.shape == (t, h, w)
        assert clip.name.endswith(name)
        # IDs are 0..K and every object is visible in the first frame (it defines the objects).
        assert clip.ids.max() <= clip.num_objects
        assert all((clip.ids[0] == k).any() for k in range(1, clip.num_objects + 1))
        # visible_area counts exactly the ID map's pixels; nothing hidden is ever counted visible.
        counts = np.stack([(clip.ids == k).sum((1, 2)) for k in range(1, clip.num_objects + 1)])
        np.testing.assert_array_equal(clip.visible_area, counts)
        assert np.all(clip.visible_area <= clip.amodal_area)
        assert clip.masks().shape == (clip.num_objects, t, h, w)


def test_control_split_has_no_challenge(clips):
    c = clips["control"]
    assert c.attributes == () and c.split == "control"
    assert (c.visible_area > 0).all()  # never hidden, never out of view
    assert np.array_equal(c.visible_area, c.amodal_area)  # nothing in front of the targets
    area = c.amodal_area[0]
    assert area.max() / area.min() < 1.6  # only the gentle ±8 % scale wobble plus deformation
    assert centroid_speed(c) < 2.0
    for name in ATTRIBUTES:
        assert name in clips[name].attributes and clips[name].split == "challenge"


def test_occlusion_is_full_then_reentry(clips):
    c = clips["occlusion"]
    vis, am = c.visible_area[0], c.amodal_area[0]
    hidden = np.flatnonzero((vis == 0) & (am > 0))  # fully covered while inside the frame
    assert hidden.size >= 3
    assert (vis[hidden[-1] + 1 :] > 0).any()  # comes back afterwards


def test_out_of_view_leaves_and_returns(clips):
    c = clips["out_of_view"]
    am = c.amodal_area[0]
    gone = np.flatnonzero(am == 0)
    assert gone.size >= 3 and gone[0] > 0
    assert (am[gone[-1] + 1 :] > 0).any()


def test_fast_motion_and_scale_variation(clips):
    assert centroid_speed(clips["fast_motion"]) > 3.5
    area = clips["scale_variation"].amodal_area[0].astype(float)
    assert area.max() / area.min() > 3.0  # a linear factor ≥ 1.8 is an area factor ≥ 3.2


def test_appearance_change_changes_colour(clips):
    c = clips["appearance_change"]
    first = c.frames[0][c.ids[0] == 1].mean(0)
    last = c.frames[-1][c.ids[-1] == 1].mean(0)
    assert np.abs(first - last).max() > 20


def test_distractors_look_like_the_target(clips):
    # Non-target pixels whose colour is close to the target's mean colour: many in a distractor clip
    # (two copies of the target), compared with the target's own area.
    c = clips["distractors"]
    target = c.frames[0][c.ids[0] == 1].astype(float)
    mean, spread = target.mean(0), target.std(0).max() + 10
    bg = c.frames[0][c.ids[0] == 0].astype(float)
    alike = (np.abs(bg - mean).max(1) < spread).sum()
    assert alike > 0.5 * target.shape[0]


def test_benchmark_generator_and_bad_input():
    names = [c.name for c in make_benchmark(2, seed=1, image_size=64)]
    assert names == ["clip000_control", "clip001_occlusion"]
    with pytest.raises(ValueError, match="index"):
        make_clip(-1)
    with pytest.raises(ValueError, match="image_size"):
        make_clip(0, image_size=32)
    with pytest.raises(ValueError, match="num_frames"):
        make_clip(0, num_frames=3)
    with pytest.raises(ValueError, match="num_clips"):
        next(make_benchmark(0))
