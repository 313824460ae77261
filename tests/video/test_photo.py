"""The photo split: real-photo backgrounds, JPEG frames, DAVIS sizes, events, seeds kept apart."""

from __future__ import annotations

import numpy as np
import pytest

from minimaskrcnn.video.photo import (
    PHOTO_ATTRIBUTES,
    REPORT_SEED,
    TUNE_SEED,
    UNSEEN_SEEDS,
    load_photo,
    make_photo_clip,
    photo_names,
)


def test_clips_are_deterministic_and_well_formed():
    a = make_photo_clip(4, seed=TUNE_SEED, num_frames=10, size=(96, 160))
    b = make_photo_clip(4, seed=TUNE_SEED, num_frames=10, size=(96, 160))
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.ids, b.ids)
    assert a.frames.shape == (10, 96, 160, 3) and a.frames.dtype == np.uint8 and a.ids.shape == (10, 96, 160)
    assert 1 <= a.num_objects <= 3 and int(a.ids.max()) <= a.num_objects
    assert (a.visible_area[:, 0] > 0).all()  # every target is visible in frame 0
    assert set(a.attributes) <= set(PHOTO_ATTRIBUTES)
    assert a.background in photo_names()
    c = make_photo_clip(4, seed=REPORT_SEED, num_frames=10, size=(96, 160))
    assert not np.array_equal(a.frames, c.frames)
    assert len({TUNE_SEED, REPORT_SEED, *UNSEEN_SEEDS}) == 2 + len(UNSEEN_SEEDS)


def test_default_sizes_are_davis_like():
    assert make_photo_clip(0, num_frames=8).frames.shape[1:3] == (480, 854)
    assert make_photo_clip(1, num_frames=8).frames.shape[1:3] == (240, 432)


def test_frames_are_photographs_and_jpeg():
    clip = make_photo_clip(2, seed=TUNE_SEED, num_frames=8, size=(120, 216))
    f = clip.frames[0].astype(np.float64)
    # A photograph, not flat colour: many distinct colours and texture everywhere.
    assert len(np.unique(clip.frames[0].reshape(-1, 3), axis=0)) > 2000
    assert np.abs(np.diff(f, axis=1)).mean() > 2
    # JPEG's 8×8 blocks: differences across block borders exceed those inside blocks.
    d = np.abs(np.diff(f.mean(-1), axis=1))
    assert d[:, 7::8].mean() > d[:, 3::8].mean()
    assert load_photo(clip.background).ndim == 3


def test_events_happen():
    """Over a few clips, each event of the split occurs: objects entering and leaving, occlusion,
    a target out of view."""
    seen = set()
    for i in range(12):
        seen |= set(make_photo_clip(i, seed=TUNE_SEED, num_frames=20, size=(96, 172)).attributes)
    assert {"enter_leave", "occlusion", "out_of_view", "multi_object"} <= seen


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_frames"):
        make_photo_clip(0, num_frames=3)
    with pytest.raises(ValueError, match="index"):
        make_photo_clip(-1)
