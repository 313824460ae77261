"""Multi-scale RoIAlign (minimaskrcnn.ops.poolers) against torchvision.ops.MultiScaleRoIAlign (forward
and autograd backward into every level), its LevelMapper and scale inference, and hand-worked
level assignments."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

from minimaskrcnn.nn.gradcheck import numerical_gradient, rel_error
from minimaskrcnn.ops.poolers import (
    infer_scales,
    level_mapper,
    multiscale_roi_align,
    multiscale_roi_align_backward,
)

TOL = {np.float64: 1e-10, np.float32: 1e-5}


def pyramid(rng, dtype, N=2, C=3, size=(64, 60), levels=4):
    """FPN-like maps at strides 4, 8, 16, 32 of a ~256×240 image (finest first)."""
    return [rng.standard_normal((N, C, size[0] // 2**i, size[1] // 2**i)).astype(dtype)
            for i in range(levels)]


def boxes_over_all_levels(rng, dtype, counts=(9, 7)):
    """Per-image boxes whose sqrt(area) spans 16..600 pixels, so that every level gets some."""
    out = []
    for n in counts:
        side = np.exp(np.linspace(np.log(16), np.log(600), n))[rng.permutation(n)]
        xy = rng.uniform(-20, 200, (n, 2))
        wh = side[:, None] * np.exp(rng.uniform(-0.3, 0.3, (n, 2)))
        out.append(np.concatenate([xy, xy + wh], 1).astype(dtype))
    return out


def torchvision_multiscale(torch, torchvision, feats, boxes, image_sizes, output_size, sampling_ratio, dout):
    m = torchvision.ops.MultiScaleRoIAlign([str(i) for i in range(len(feats))], output_size, sampling_ratio)
    xt = OrderedDict((str(i), torch.tensor(f, requires_grad=True)) for i, f in enumerate(feats))
    out = m(xt, [torch.tensor(b) for b in boxes], image_sizes)
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), [t.grad.numpy() for t in xt.values()]


# --------------------------------------------------------------------------------------------------
# Level mapper and scales
# --------------------------------------------------------------------------------------------------

def test_level_mapper_golden():
    # k = floor(4 + log2(sqrt(area) / 224) + 1e-6), clamped to [2, 5], returned as k − 2.
    boxes = np.array([
        [0, 0, 224, 224],    # log2(1) = 0            → k = 4 → index 2
        [0, 0, 112, 112],    # log2(1/2) = −1 exactly → k = 3 (eps keeps it off 2.999…) → index 1
        [0, 0, 111, 111],    # log2(111/224) ≈ −1.013 → k = 2 → index 0
        [0, 0, 448, 448],    # +1                     → k = 5 → index 3
        [0, 0, 10, 10],      # ≈ −4.49 → k = −1, clamped to k_min = 2 → index 0
        [0, 0, 5000, 5000],  # ≈ +4.48 → k = 8, clamped to k_max = 5 → index 3
        [0, 0, 56, 896],     # sqrt(56·896) = 224: the area decides, not the shape → index 2
        [3, 3, 3, 9],        # zero area: log2(0) = −inf → k_min → index 0
    ], dtype=np.float64)
    np.testing.assert_array_equal(level_mapper(boxes, 2, 5), [2, 1, 0, 3, 0, 3, 2, 0])
    assert level_mapper(boxes, 2, 5).dtype == np.int64
    # canonical level/scale are parameters: with k0 = 3 and s0 = 112, a 112×112 box is on level 3.
    assert level_mapper(np.array([[0, 0, 112, 112.0]]), 2, 5, canonical_scale=112, canonical_level=3)[0] == 1


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_level_mapper_against_torchvision(torchvision, torch, dtype):
    from torchvision.ops.poolers import LevelMapper

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 500, (300, 2))
    boxes = np.concatenate([xy, xy + np.exp(rng.uniform(0, 7, (300, 2)))], 1).astype(dtype)
    boxes[:4, 2:] = boxes[:4, :2] + np.array([[112, 112], [224, 224], [448, 448], [56, 56]])  # boundaries
    want = LevelMapper(2, 5)([torch.tensor(boxes)]).numpy()
    np.testing.assert_array_equal(level_mapper(boxes, 2, 5), want)
    np.testing.assert_array_equal(level_mapper([boxes[:100], boxes[100:]], 2, 5), want)


def test_infer_scales_against_torchvision(torch, torchvision):
    from torchvision.ops.poolers import _setup_scales

    for sizes, image_sizes in [((200, 304), [(800, 1216), (790, 1200)]), ((32, 32), [(128, 128)]),
                               ((25, 38), [(800, 1216)]), ((33, 47), [(131, 190), (130, 188)])]:
        shapes = [(1, 2, -(-sizes[0] // 2**i), -(-sizes[1] // 2**i)) for i in range(4)]
        feats = [torch.zeros(s) for s in shapes]
        want_scales, mapper = _setup_scales(feats, image_sizes, 224, 4)
        scales, k_min, k_max = infer_scales(shapes, image_sizes)
        assert scales == want_scales and (k_min, k_max) == (mapper.k_min, mapper.k_max)


# --------------------------------------------------------------------------------------------------
# Forward and backward against torchvision
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("output_size, sampling_ratio", [((7, 7), 2), (4, -1), ((3, 5), 1)])
def test_against_torchvision(torch, torchvision, dtype, output_size, sampling_ratio):
    rng = np.random.default_rng(2)
    feats = pyramid(rng, dtype)
    boxes = boxes_over_all_levels(rng, dtype)
    image_sizes = [(250, 230), (256, 240)]
    out, cache = multiscale_roi_align(feats, boxes, image_sizes, output_size, sampling_ratio)
    assert all(len(lvl[0]) > 0 for lvl in cache["per_level"]), "every level should receive RoIs"
    dout = rng.standard_normal(out.shape).astype(dtype)
    want, want_grads = torchvision_multiscale(torch, torchvision, feats, boxes, image_sizes, output_size,
                                              sampling_ratio, dout)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, want, rtol=0, atol=TOL[dtype])
    grads = multiscale_roi_align_backward(dout, cache)
    assert len(grads) == len(feats)
    for g, w, f in zip(grads, want_grads, feats):
        assert g.shape == f.shape and g.dtype == dtype
        np.testing.assert_allclose(g, w, rtol=0, atol=TOL[dtype])


def test_single_level_takes_every_roi(torch, torchvision):
    rng = np.random.default_rng(3)
    feats = [rng.standard_normal((1, 2, 16, 16))]
    boxes = [np.array([[0, 0, 8, 8], [0, 0, 120, 120], [10, 10, 60, 30.0]])]
    out, cache = multiscale_roi_align(feats, boxes, [(64, 64)], 3, 2)
    dout = rng.standard_normal(out.shape)
    want, want_grads = torchvision_multiscale(torch, torchvision, feats, boxes, [(64, 64)], 3, 2, dout)
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-10)
    grads = multiscale_roi_align_backward(dout, cache)
    np.testing.assert_allclose(grads[0], want_grads[0], rtol=0, atol=1e-10)


def test_level_without_rois_gets_zero_gradient():
    rng = np.random.default_rng(4)
    feats = pyramid(rng, np.float64)
    boxes = [np.array([[0, 0, 20, 20], [5, 5, 30, 25.0]]), np.zeros((0, 4))]  # all small → level 0
    out, cache = multiscale_roi_align(feats, boxes, [(256, 240), (256, 240)], 2, 2)
    grads = multiscale_roi_align_backward(np.ones_like(out), cache)
    assert grads[0].any() and not any(g.any() for g in grads[1:])


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("pooler", ["align", "pool"])
def test_pooler_switch_and_aligned_against_torchvision_per_level(torch, torchvision, aligned, pooler):
    # torchvision's MultiScaleRoIAlign has neither switch: build the expectation from its LevelMapper
    # and its per-level roi_align / roi_pool, with autograd for the gradient.
    from torchvision.ops.poolers import LevelMapper

    rng = np.random.default_rng(5)
    feats = pyramid(rng, np.float64)
    boxes = boxes_over_all_levels(rng, np.float64)
    image_sizes = [(256, 240)] * 2
    out, cache = multiscale_roi_align(feats, boxes, image_sizes, (3, 4), 2, aligned=aligned, pooler=pooler)
    dout = rng.standard_normal(out.shape)

    rois = torch.tensor(np.concatenate([np.c_[np.full(len(b), i), b] for i, b in enumerate(boxes)]))
    levels = LevelMapper(2, 5)([torch.tensor(b) for b in boxes])
    xt = [torch.tensor(f, requires_grad=True) for f in feats]
    want = torch.zeros(out.shape, dtype=torch.float64)
    for lvl, f in enumerate(xt):
        idx = torch.where(levels == lvl)[0]
        scale = 2.0 ** -(lvl + 2)
        if pooler == "align":
            want[idx] = torchvision.ops.roi_align(f, rois[idx], (3, 4), scale, 2, aligned)
        else:
            want[idx] = torchvision.ops.roi_pool(f, rois[idx], (3, 4), scale)
    want.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, want.detach().numpy(), rtol=0, atol=1e-10)
    for g, t in zip(multiscale_roi_align_backward(dout, cache), xt):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=0, atol=1e-10)


@pytest.mark.parametrize("pooler", ["align", "pool"])
def test_gradient_check_every_level(pooler):
    rng = np.random.default_rng(6)
    feats = pyramid(rng, np.float64, N=1, C=1, size=(16, 16), levels=3)
    # sqrt(area) 5.9, 33 and 68 → levels floor(3 + log2(s/32)) = 0 (clamped to 2), 3, 4: one per map
    boxes = [np.array([[0, 0, 5, 7], [1, 2, 40, 30], [0, 0, 70, 66.0]])]
    out, cache = multiscale_roi_align(feats, boxes, [(64, 64)], 2, 2, canonical_scale=32, canonical_level=3,
                                      pooler=pooler)
    assert [len(lvl[0]) for lvl in cache["per_level"]] == [1, 1, 1]
    dout = rng.standard_normal(out.shape)
    grads = multiscale_roi_align_backward(dout, cache)
    for lvl, f in enumerate(feats):
        def fwd():
            return multiscale_roi_align(feats, boxes, [(64, 64)], 2, 2, canonical_scale=32, canonical_level=3,
                                        pooler=pooler)[0]

        assert rel_error(grads[lvl], numerical_gradient(fwd, f, dout)) < 1e-7


def test_reference_backend_equals_numba():
    rng = np.random.default_rng(7)
    feats = pyramid(rng, np.float32, N=2, C=2, size=(32, 32))
    boxes = boxes_over_all_levels(rng, np.float32, counts=(4, 3))
    a, ca = multiscale_roi_align(feats, boxes, [(128, 128)] * 2, 2, 2, backend="reference")
    b, cb = multiscale_roi_align(feats, boxes, [(128, 128)] * 2, 2, 2, backend="numba")
    np.testing.assert_array_equal(a, b)
    dout = rng.standard_normal(a.shape).astype(np.float32)
    for ga, gb in zip(multiscale_roi_align_backward(dout, ca), multiscale_roi_align_backward(dout, cb)):
        np.testing.assert_array_equal(ga, gb)


def test_empty_boxes():
    feats = pyramid(np.random.default_rng(8), np.float32)
    out, cache = multiscale_roi_align(feats, [np.zeros((0, 4)), np.zeros((0, 4))], [(256, 240)] * 2, 7, 2)
    assert out.shape == (0, 3, 7, 7)
    grads = multiscale_roi_align_backward(np.zeros((0, 3, 7, 7), np.float32), cache)
    assert [g.shape for g in grads] == [f.shape for f in feats] and not any(g.any() for g in grads)


def test_bad_input():
    rng = np.random.default_rng(9)
    feats = pyramid(rng, np.float64)
    boxes = [np.array([[0, 0, 10, 10.0]]), np.zeros((0, 4))]
    sizes = [(256, 240)] * 2
    with pytest.raises(ValueError, match="pooler"):
        multiscale_roi_align(feats, boxes, sizes, 2, 2, pooler="warp")
    with pytest.raises(ValueError, match="features"):
        multiscale_roi_align([], boxes, sizes, 2, 2)
    with pytest.raises(ValueError, match=r"features\[1\]"):
        multiscale_roi_align([feats[0], feats[1][:, :2]], boxes, sizes, 2, 2)
    with pytest.raises(ValueError, match=r"features\[2\] must be 4-D"):
        multiscale_roi_align([feats[0], feats[1], feats[2][0]], boxes, sizes, 2, 2)
    with pytest.raises(ValueError, match="boxes must be finite"):
        multiscale_roi_align(feats, [np.array([[0, 0, np.nan, 10.0]])], sizes, 2, 2)
    with pytest.raises(ValueError, match="boxes is a list of 3"):
        multiscale_roi_align(feats, boxes + [np.zeros((0, 4))], sizes, 2, 2)
    with pytest.raises(ValueError, match="image_sizes"):
        multiscale_roi_align(feats, boxes, [], 2, 2)
    with pytest.raises(ValueError, match="output_size"):
        multiscale_roi_align(feats, boxes, sizes, 0, 2)
    out, cache = multiscale_roi_align(feats, boxes, sizes, 2, 2)
    with pytest.raises(ValueError, match="dout must have shape"):
        multiscale_roi_align_backward(np.zeros((2, 3, 2, 2)), cache)
