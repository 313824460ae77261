"""Optical flow: endpoint error on known translations and rotations, warping, consistency check."""

from __future__ import annotations

import numpy as np
import pytest

from minimaskrcnn.video.flow import forward_backward_consistency, lucas_kanade, warp

H = W = 96


def smooth_texture(seed=0, size=192):
    """A smooth, richly textured (size, size, 3) float image: sums of random sinusoids (analytic, so any
    sub-pixel shift or rotation of it can be rendered exactly)."""
    rng = np.random.default_rng(seed)
    freqs = rng.uniform(0.01, 0.07, (12, 2)) * rng.choice([-1, 1], (12, 2))
    phases = rng.uniform(0, 2 * np.pi, (12, 3))

    def render(x, y):
        out = np.zeros(x.shape + (3,))
        for i in range(12):
            out += np.sin(2 * np.pi * (freqs[i, 0] * x + freqs[i, 1] * y)[..., None] + phases[i])
        return (0.5 + out / 12).astype(np.float32)

    return render


def epe(flow, true, margin):
    e = np.linalg.norm(flow - true, axis=-1)
    return e[margin:-margin, margin:-margin].mean()


@pytest.mark.parametrize("d", [(0.0, 0.0), (2.3, -1.7), (7.5, 4.2)])
def test_translation_endpoint_error(d):
    render = smooth_texture(1)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    i0 = render(xx, yy)
    i1 = render(xx - d[0], yy - d[1])  # content moves by +d: i1(x + d) = i0(x)
    flow = lucas_kanade(i0, i1)
    assert flow.shape == (H, W, 2) and flow.dtype == np.float32
    assert epe(flow, np.array(d), margin=12) < 0.05


def test_rotation_endpoint_error():
    # i1 is i0 turned by 3° about the centre c: i1(R(x − c) + c) = i0(x), so flow(x) = R(x − c) + c − x.
    render = smooth_texture(2)
    c, th = (W - 1) / 2, np.deg2rad(3.0)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    i0 = render(xx, yy)
    inv = rot.T
    i1 = render(inv[0, 0] * (xx - c) + inv[0, 1] * (yy - c) + c,
                inv[1, 0] * (xx - c) + inv[1, 1] * (yy - c) + c)
    true = np.stack([rot[0, 0] * (xx - c) + rot[0, 1] * (yy - c) + c - xx,
                     rot[1, 0] * (xx - c) + rot[1, 1] * (yy - c) + c - yy], -1)
    assert np.abs(true).max() > 2.0  # up to ~2.5 px at the corners
    assert epe(lucas_kanade(i0, i1), true, margin=8) < 0.1


def test_uint8_input_and_init_flow():
    render = smooth_texture(3)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    i0 = np.rint(render(xx, yy) * 255).astype(np.uint8)
    i1 = np.rint(render(xx - 3, yy - 1) * 255).astype(np.uint8)
    f = lucas_kanade(i0, i1, init_flow=np.full((H, W, 2), [2.5, 1.0], np.float32))
    assert epe(f, np.array([3.0, 1.0]), margin=10) < 0.1


def test_warp_integer_and_half_pixel_shifts():
    rng = np.random.default_rng(0)
    img = rng.random((6, 7, 2))
    flow = np.zeros((6, 7, 2), np.float32)
    out, valid = warp(img, flow)
    np.testing.assert_allclose(out, img, atol=1e-12)
    assert valid.all()
    flow[..., 0] = 1.0  # out(x, y) = img(x + 1, y)
    out, valid = warp(img, flow)
    np.testing.assert_allclose(out[:, :-1], img[:, 1:], atol=1e-12)
    assert valid[:, :-1].all() and not valid[:, -1].any()  # the last column samples x = 7: outside
    np.testing.assert_allclose(out[:, -1], img[:, -1])  # ... and takes the border value
    flow[..., 0], flow[..., 1] = 0.0, 0.5  # half a pixel down: the mean of two rows
    out, _ = warp(img[..., 0], flow)
    np.testing.assert_allclose(out[:-1], 0.5 * (img[:-1, :, 0] + img[1:, :, 0]), atol=1e-12)


def test_warp_bool_mask_and_bad_input():
    m = np.zeros((5, 5), bool)
    m[2, 2] = True
    f = np.zeros((5, 5, 2), np.float32)
    f[..., 0] = -1.0  # out(x, y) = m(x − 1, y): the pixel appears one to the right
    out, _ = warp(m, f)
    assert out.dtype == np.float32 and out[2, 3] == 1.0 and out.sum() == 1.0
    with pytest.raises(ValueError, match="flow"):
        warp(m, np.zeros((5, 4, 2), np.float32))
    with pytest.raises(ValueError, match="finite"):
        warp(m, np.full((5, 5, 2), np.nan, np.float32))
    with pytest.raises(ValueError, match="same shape"):
        lucas_kanade(np.zeros((8, 8)), np.zeros((8, 9)))
    with pytest.raises(TypeError, match="image0"):
        lucas_kanade(np.zeros((8, 8), np.int32), np.zeros((8, 8), np.int32))
    with pytest.raises(ValueError, match="levels"):
        lucas_kanade(np.zeros((8, 8)), np.zeros((8, 8)), levels=0)


def test_forward_backward_consistency():
    fw = np.zeros((10, 12, 2), np.float32)
    fw[..., 0] = 2.0
    bw = -fw
    ok = forward_backward_consistency(fw, bw)
    # Consistent wherever x + 2 stays inside the image (columns 0..9 of 12).
    assert ok[:, :10].all() and not ok[:, 10:].any()
    # A backward flow that does not return: inconsistent everywhere (|2 + 2|² = 16 > 0.01·8 + 0.5).
    assert not forward_backward_consistency(fw, fw).any()
    # Occlusion pattern: the backward flow disagrees on a block → only that block is flagged.
    bw2 = bw.copy()
    bw2[3:6, 4:8] = 0.0  # fw lands there from columns 2..5
    ok2 = forward_backward_consistency(fw, bw2)
    assert not ok2[3:6, 2:6].any() and ok2[:3, :10].all()


def test_working_factor_downsample_and_upsample():
    from minimaskrcnn.video.flow import downsample, upsample_flow, working_factor

    assert working_factor((480, 854), 320) == 3 and working_factor((128, 128), 320) == 1
    assert working_factor((240, 432), 320) == 2 and working_factor((480, 854), None) == 1
    with pytest.raises(ValueError, match="flow_size"):
        working_factor((10, 10), 4)
    img = np.arange(5 * 7 * 2, dtype=np.float32).reshape(5, 7, 2)
    small = downsample(img, 3)
    assert small.shape == (2, 3, 2)
    assert small[0, 0, 0] == pytest.approx(img[:3, :3, 0].mean())
    padded = np.pad(img, ((0, 1), (0, 2), (0, 0)), mode="edge")
    assert small[1, 2, 1] == pytest.approx(padded[3:, 6:, 1].mean())
    # A constant flow stays constant, times f; a linear flow field stays linear in the interior.
    const = np.full((4, 6, 2), (0.5, -0.25), np.float32)
    want = np.full((12, 18, 2), (1.5, -0.75))
    np.testing.assert_allclose(upsample_flow(const, 3, (12, 18)), want, atol=1e-6)
    yy, xx = np.mgrid[0:4, 0:6].astype(np.float32)
    lin = np.stack([xx, yy], -1)
    up = upsample_flow(lin, 2, (8, 12))
    fy, fx = np.mgrid[0:8, 0:12].astype(np.float32)
    inner = (slice(1, 7), slice(1, 11))
    np.testing.assert_allclose(up[inner][..., 0], 2 * ((fx + 0.5) / 2 - 0.5)[inner], atol=1e-5)
    # The Numba kernel equals its NumPy reference on a random field, and the affine warp kernel too.
    from minimaskrcnn.video.flow import _upsample_flow_reference
    from minimaskrcnn.video.propagate import _affine_warp_kernel, _affine_warp_reference

    rnd = np.random.default_rng(0).normal(size=(7, 9, 2)).astype(np.float32)
    np.testing.assert_allclose(upsample_flow(rnd, 3, (20, 26)), _upsample_flow_reference(rnd, 3, (20, 26)),
                               atol=1e-5)
    ch = np.random.default_rng(1).random((37, 53)).astype(np.float32)
    a_inv = np.linalg.inv(np.array([[1.05, 0.1], [-0.08, 0.97]]))
    c = np.array([3.2, -1.7])
    np.testing.assert_allclose(_affine_warp_kernel(ch, a_inv, c), _affine_warp_reference(ch, a_inv, c),
                               atol=1e-5)


def test_flow_on_a_reduced_copy_recovers_a_large_translation():
    """At 4× reduction a 6.4 px translation of a 192 × 256 frame is 1.6 px on the working grid."""
    from minimaskrcnn.video.flow import downsample, upsample_flow

    render = smooth_texture(3, 256)
    yy, xx = np.mgrid[0:192, 0:256].astype(np.float64) + 0.5
    i0, i1 = render(xx, yy), render(xx - 6.4, yy + 3.2)
    flow = upsample_flow(lucas_kanade(downsample(i0, 4), downsample(i1, 4)), 4, (192, 256))
    assert epe(flow, np.array([6.4, -3.2]), 24) < 0.3


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (4, 4), (7, 11), (23, 17)])
def test_median5_selection_equals_the_sorting_reference(shape):
    from minimaskrcnn.video.flow import _median5, _median5_reference

    rng = np.random.default_rng(sum(shape))
    flow = rng.normal(size=(*shape, 2)).astype(np.float32)
    flow[..., 1] = np.round(flow[..., 1] * 2) / 2  # many ties in the second component
    np.testing.assert_array_equal(_median5(flow), _median5_reference(flow))
    # and the median itself, from NumPy's sort (upper middle of a clipped window's values)
    y, x = shape[0] // 2, shape[1] // 2
    win = flow[max(y - 2, 0): y + 3, max(x - 2, 0): x + 3, 0].ravel()
    assert _median5(flow)[y, x, 0] == np.sort(win)[win.size // 2]
