"""THE acceptance test of the model: in float64, with samplers that take every candidate (so nothing is
random), our losses and every parameter gradient equal torchvision's MaskRCNN built from the same
architecture with the same weights; plus centred-difference checks of sampled parameters."""

import numpy as np
import pytest

from minimaskrcnn.config import shapes, single_level, with_overrides
from minimaskrcnn.datasets import ShapesDataset
from minimaskrcnn.model import MaskRCNN
from minimaskrcnn.model.mask_rcnn import LOSS_NAMES
from minimaskrcnn.model.torch_reference import build_torch_maskrcnn, copy_weights, torch_inputs
from minimaskrcnn.nn.gradcheck import rel_error

SIZE = 64
TAKE_ALL = 10**6  # sampler budgets larger than any candidate count: every anchor / RoI is taken


def tiny_config(**overrides):
    base = {
        "backbone.stem_channels": 8, "backbone.stage_channels": (8, 8, 16, 16), "backbone.num_groups": 4,
        "backbone.fpn_channels": 8, "rpn.batch_size_per_image": TAKE_ALL, "rpn.pre_nms_top_n_train": 60,
        "rpn.post_nms_top_n_train": 30, "roi_heads.batch_size_per_image": TAKE_ALL,
        "roi_heads.representation_size": 16, "mask.layers": (8, 8),
        # torchvision's pixel conventions for the mask targets and the paste (the shapes preset's own
        # may differ): the equality tests compare against torchvision's Mask R-CNN
        "mask.targets_aligned": False, "mask.paste": "torchvision",
    }
    base.update(overrides)
    return with_overrides(shapes(), **base)


def tiny_batch(seed=3, n=2, empty_last=False):
    ds = ShapesDataset(n, image_size=SIZE, seed=seed, min_size=10, max_size=24, num_instances=(1, 3))
    images, targets = [], []
    for i in range(n):
        item = ds[i]
        images.append(item["image"].astype(np.float64) / 255.0)
        t = {"boxes": item["boxes"].astype(np.float64), "labels": item["labels"], "masks": item["masks"]}
        if empty_last and i == n - 1:
            t = {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, np.int64),
                 "masks": np.zeros((0, SIZE, SIZE), bool)}
        targets.append(t)
    return images, targets


def ours_and_torch(cfg, images, targets, seed=0):
    model = MaskRCNN(cfg, np.random.default_rng(seed)).astype(np.float64)
    losses = model.forward_train(images, targets)
    model.zero_grad()
    model.backward()
    tmodel = build_torch_maskrcnn(cfg, SIZE)
    copy_weights(model, tmodel)
    tmodel.train()
    timgs, ttgts = torch_inputs(images, targets)
    tlosses = tmodel(timgs, ttgts)
    sum(tlosses.values()).backward()
    tgrads = {k: (p.grad.numpy() if p.grad is not None else np.zeros(p.shape))
              for k, p in tmodel.named_parameters()}
    tl = {k: float(v.detach()) for k, v in tlosses.items()}
    return model, losses, tl, tgrads


CASES = {
    "fpn": {},
    "fpn_residual_maxpool": {"backbone.residual": True, "backbone.extra_max_pool": True,
                             "anchors.sizes": ((8,), (16,), (32,), (64,), (128,))},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_losses_and_gradients_equal_torchvision(torch, torchvision, case):
    cfg = tiny_config(**CASES[case])
    images, targets = tiny_batch()
    model, losses, tl, tgrads = ours_and_torch(cfg, images, targets)
    assert set(tl) == set(LOSS_NAMES)
    for k in LOSS_NAMES:
        assert losses[k] > 0
        assert abs(losses[k] - tl[k]) <= 1e-8 * abs(tl[k]), (k, losses[k], tl[k])
    names = dict(model.named_parameters())
    assert set(names) == set(tgrads)
    for k, p in names.items():
        assert rel_error(p.grad, tgrads[k]) <= 1e-8, (k, rel_error(p.grad, tgrads[k]))


@pytest.mark.parametrize("stride", [16, 32])
def test_single_level_equals_torchvision(torch, torchvision, stride):
    cfg = single_level(tiny_config(), stride)
    images, targets = tiny_batch(seed=5)
    model, losses, tl, tgrads = ours_and_torch(cfg, images, targets)
    for k in LOSS_NAMES:
        assert abs(losses[k] - tl[k]) <= 1e-8 * abs(tl[k]), (k, losses[k], tl[k])
    for k, p in model.named_parameters():
        assert rel_error(p.grad, tgrads[k]) <= 1e-8, k


def test_image_without_objects_equals_torchvision(torch, torchvision):
    """An image with no GT: all its anchors negative, all its RoIs background, no mask loss from it."""
    cfg = tiny_config()
    images, targets = tiny_batch(seed=7, empty_last=True)
    model, losses, tl, tgrads = ours_and_torch(cfg, images, targets)
    for k in LOSS_NAMES:
        assert abs(losses[k] - tl[k]) <= 1e-8 * abs(tl[k]), (k, losses[k], tl[k])
    for k, p in model.named_parameters():
        assert rel_error(p.grad, tgrads[k]) <= 1e-8, k


def test_state_dict_keys_are_torchvisions_names():
    model = MaskRCNN(shapes(), np.random.default_rng(0))
    keys = set(model.state_dict())
    for k in ("backbone.body.conv1.weight", "backbone.body.layer1.0.bn1.weight",
              "backbone.fpn.inner_blocks.0.0.weight", "backbone.fpn.layer_blocks.3.0.bias",
              "rpn.head.conv.0.0.weight", "rpn.head.cls_logits.weight", "rpn.head.bbox_pred.bias",
              "roi_heads.box_head.fc6.weight", "roi_heads.box_head.fc7.bias",
              "roi_heads.box_predictor.cls_score.weight", "roi_heads.box_predictor.bbox_pred.weight",
              "roi_heads.mask_head.0.0.weight", "roi_heads.mask_head.3.0.bias",
              "roi_heads.mask_predictor.conv5_mask.weight",
              "roi_heads.mask_predictor.mask_fcn_logits.weight"):
        assert k in keys, k


MODULES = ("backbone.body", "backbone.fpn", "rpn.head", "roi_heads.box_head", "roi_heads.box_predictor",
           "roi_heads.mask_head", "roi_heads.mask_predictor")


@pytest.mark.parametrize("mask_loss,pooler,aligned", [("sigmoid", "align", False),
                                                      ("softmax", "align", False),
                                                      ("sigmoid", "align", True),
                                                      ("sigmoid", "pool", False)])
def test_numerical_gradient_of_sampled_parameters(mask_loss, pooler, aligned):
    """Centred differences of the total loss for a few entries of every module's parameters, with the
    proposals held fixed (they are constants of the backward, as in the paper). Covers the switches
    torchvision has no equivalent for: softmax mask loss, RoIPool, aligned RoIAlign."""
    cfg = tiny_config(**{"mask.loss": mask_loss, "roi_heads.pooler": pooler, "roi_heads.aligned": aligned})
    images, targets = tiny_batch(seed=11)
    # Noise breaks the exact ties of flat image regions: RoIPool's max over equal values would switch
    # its argmax under a perturbation of 1e-6 and the centred difference would see a jump.
    nrng = np.random.default_rng(4)
    images = [np.clip(im + 0.05 * nrng.standard_normal(im.shape), 0, 1) for im in images]
    model = MaskRCNN(cfg, np.random.default_rng(1)).astype(np.float64)
    # torchvision's init zeroes the mask head's biases; where RoIPool leaves a whole 3x3 window of
    # empty (zero) bins, a pre-activation is then exactly 0, on ReLU's kink, and a centred difference
    # of that bias sees half a slope. Small random biases keep every unit off the kink.
    brng = np.random.default_rng(5)
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            p.data += 0.01 * brng.standard_normal(p.data.shape)
    model.forward_train(images, targets)
    model.zero_grad()
    model.backward()
    # freeze the proposals: record them once, then replay
    frozen = {}
    original = model.rpn.proposal_layer

    def replay(*args, **kwargs):
        if "p" not in frozen:
            frozen["p"] = original(*args, **kwargs)
        return [p.copy() for p in frozen["p"]]

    model.rpn.proposal_layer = replay

    def total():
        return sum(model.forward_train(images, targets).values())

    total()
    rng = np.random.default_rng(0)
    params = dict(model.named_parameters())
    h = 1e-6
    for prefix in MODULES:
        names = [k for k in params if k.startswith(prefix + ".")]
        assert names, prefix
        analytic, numeric = [], []
        for k in rng.choice(names, size=min(4, len(names)), replace=False):
            p = params[k]
            for _ in range(2):
                idx = tuple(int(rng.integers(s)) for s in p.data.shape)
                old = p.data[idx]
                p.data[idx] = old + h
                fp = total()
                p.data[idx] = old - h
                fm = total()
                p.data[idx] = old
                analytic.append(p.grad[idx])
                numeric.append((fp - fm) / (2 * h))
        assert rel_error(np.array(analytic), np.array(numeric)) < 1e-6, (prefix, analytic, numeric)
    model.clear_cache()
