"""Propagation methods: the copy floor, flow warping on known motion, multi-object IDs, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from minimaskrcnn.evaluation.davis import evaluate_benchmark, evaluate_clip, jaccard
from minimaskrcnn.video.common import ColourModel
from minimaskrcnn.video.embed import propagate_embed
from minimaskrcnn.video.methods import METHODS, propagate
from minimaskrcnn.video.propagate import propagate_copy, propagate_flow
from minimaskrcnn.video.synthetic import make_clip

H = W = 96


def texture(seed):
    rng = np.random.default_rng(seed)
    freqs = rng.uniform(0.02, 0.09, (10, 2)) * rng.choice([-1, 1], (10, 2))
    phases = rng.uniform(0, 2 * np.pi, (10, 3))
    base = rng.uniform(60, 190, 3)

    def render(x, y):
        out = np.zeros(x.shape + (3,))
        for i in range(10):
            out += np.sin(2 * np.pi * (freqs[i, 0] * x + freqs[i, 1] * y)[..., None] + phases[i])
        return base + 60 * out / 10 * 3

    return render


def translating_scene(num_frames, objects, pan=(0.0, 0.0)):
    """Frames and ID maps of textured squares translating over a textured background.

    objects: list of (x0, y0, half_size, vx, vy) in pixels; the background moves by ``pan`` per frame.
    Each object's texture moves with it (pure translation), so the true flow is known exactly.
    """
    bg = texture(0)
    textures = [texture(i + 1) for i in range(len(objects))]
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    frames = np.zeros((num_frames, H, W, 3), np.uint8)
    ids = np.zeros((num_frames, H, W), np.uint8)
    for t in range(num_frames):
        img = bg(xx - pan[0] * t, yy - pan[1] * t)
        for k, (x0, y0, half, vx, vy) in enumerate(objects):
            cx, cy = x0 + vx * t, y0 + vy * t
            inside = (np.abs(xx - cx) < half) & (np.abs(yy - cy) < half)
            img[inside] = textures[k](xx - cx, yy - cy)[inside]
            ids[t][inside] = k + 1
        frames[t] = np.clip(np.rint(img), 0, 255)
    return frames, ids


def test_copy_is_the_first_mask_everywhere():
    frames, ids = translating_scene(5, [(30, 40, 10, 2.0, 0.0)])
    out = propagate_copy(frames, ids[0])
    assert out.shape == ids.shape and out.dtype == np.uint8
    assert all(np.array_equal(out[t], ids[0]) for t in range(5))
    assert jaccard(ids[4], out[4]) < 0.7  # the object moved 8 px: copy falls behind


@pytest.mark.parametrize("refine", [True, False])
def test_flow_keeps_j_on_pure_translation(refine):
    # The acceptance test: a textured 34-pixel square translating 1.5 px right and 0.7 px down per
    # frame for 20 frames (30 px in all) over a static textured background: J ≥ 0.95 in every frame.
    frames, ids = translating_scene(21, [(34, 36, 17, 1.5, 0.7)])
    out = propagate_flow(frames, ids[0], refine=refine)
    js = [jaccard(ids[t], out[t]) for t in range(21)]
    assert min(js) >= 0.95, js
    assert jaccard(ids[20], propagate_copy(frames, ids[0])[20]) < 0.3  # while copy has lost it


def test_flow_follows_camera_pan_and_two_objects():
    # Two objects moving apart while the background pans: both tracked, IDs kept.
    frames, ids = translating_scene(12, [(25, 30, 9, 1.2, 0.5), (70, 65, 9, -1.0, -0.8)], pan=(0.6, -0.4))
    out = propagate("flow", frames, ids[0])
    for t in range(12):
        assert jaccard(ids[t] == 1, out[t] == 1) >= 0.9
        assert jaccard(ids[t] == 2, out[t] == 2) >= 0.9
    np.testing.assert_array_equal(out[0], ids[0])


def test_embed_tracks_and_redetects_after_full_occlusion():
    # Occlusion clip (seed 4, 40 frames): the target is fully hidden in frames 11..21. Matching to
    # the first frame finds it again once it re-appears; the flow method, which can only carry a
    # mask forward, has nothing left to carry.
    clip = make_clip(1, seed=4, num_frames=40)
    hidden = np.flatnonzero(clip.visible_area[0] == 0)
    assert hidden.size >= 5 and hidden[-1] < 30
    out = propagate_embed(clip.frames, clip.ids[0])
    later = [jaccard(clip.ids[t] == 1, out[t] == 1) for t in range(35, 40)]
    assert min(later) >= 0.7, later
    control = make_clip(0, seed=0, num_frames=20)
    res = evaluate_clip(control.ids, propagate_embed(control.frames, control.ids[0]))
    assert evaluate_benchmark([res])["J&F"] >= 0.85


def test_bool_first_mask_is_object_one():
    frames, ids = translating_scene(3, [(40, 40, 8, 1.0, 0.0)])
    out = propagate("copy", frames, ids[0] > 0)
    assert set(np.unique(out)) == {0, 1}


def _blue_and_red():
    """A 4 × 4 image: left half blue (background), right half red (object 1); and its ID map."""
    img = np.zeros((4, 4, 3), np.uint8)
    img[:, 2:] = [200, 30, 30]
    img[:, :2] = [20, 20, 220]
    ids = np.zeros((4, 4), np.uint8)
    ids[:, 2:] = 1
    return img, ids


def test_colour_model_posterior():
    img, ids = _blue_and_red()
    post = ColourModel(img, ids, 2).posterior(img)
    assert post.shape == (4, 4, 2)
    np.testing.assert_allclose(post.sum(-1), 1.0, rtol=1e-6)
    assert (post[:, 2:, 1] > 0.99).all() and (post[:, :2, 0] > 0.99).all()


def test_colour_model_support():
    # A mask over the 8 red pixels and 4 blue ones: 8 of its 12 pixels are likelier under the object's
    # histogram — support 2/3; a purple colour neither has seen is likelier under neither (both
    # histograms 0 there) and does not count.
    img, ids = _blue_and_red()
    model = ColourModel(img, ids, 2)
    mask = np.zeros((4, 4), bool)
    mask[:, 1:] = True
    assert model.support(img, mask, 1) == pytest.approx(8 / 12)
    assert model.support(img, np.zeros((4, 4), bool), 1) == 0.0
    img[0, 3] = [150, 20, 150]
    assert model.support(img, mask, 1) == pytest.approx(7 / 12)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_bad_input(method):
    frames, ids = translating_scene(3, [(40, 40, 8, 1.0, 0.0)])
    with pytest.raises(ValueError, match="first_mask must have the frames' size"):
        propagate(method, frames, ids[0][:, :-1])
    with pytest.raises(ValueError, match="empty"):
        propagate(method, frames, np.zeros((H, W), bool))
    with pytest.raises(ValueError, match=r"object\(s\) \[1\]"):
        propagate(method, frames, ids[0] * 2)
    with pytest.raises(ValueError, match="frames must have shape"):
        propagate(method, frames[..., 0], ids[0])
    with pytest.raises(TypeError, match="uint8"):
        propagate(method, frames.astype(np.float32), ids[0])
    with pytest.raises(TypeError, match="first_mask"):
        propagate(method, frames, ids[0].astype(float))
    with pytest.raises(ValueError, match="unknown method"):
        propagate("nope", frames, ids[0])
