"""Fine-tuning from torchvision's weights: new predictors for K classes, torchvision's frozen layers.

torchvision's ``maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)`` at random initialisation
(its norms given random statistics, so the frozen norms are not the identity) is saved by
``torch.save`` and loaded with ``num_classes=K``. The reference is torchvision's model as it is built
for pretrained weights (FrozenBatchNorm2d, ``trainable_backbone_layers``) with the same file loaded
and its predictors replaced as torchvision's tutorial does, holding our fresh predictor weights.
In float64, with samplers that take every candidate (nothing random), the losses and the gradient of
every trainable parameter must be equal, the frozen ones must get none, and one SGD step must move
the trainable parameters as torch's SGD does and leave the frozen ones bit for bit.
"""

import numpy as np
import pytest

from minimaskrcnn.datasets import ShapesDataset
from minimaskrcnn.model.backbone import TRAINABLE_LAYERS_TOP_DOWN
from minimaskrcnn.model.mask_rcnn import LOSS_NAMES
from minimaskrcnn.model.torch_reference import (
    replace_predictors,
    rpn_labels_in_model_dtype,
    torch_inputs,
    torchvision_resnet50_fpn,
)
from minimaskrcnn.nn import functional as F
from minimaskrcnn.nn.gradcheck import rel_error
from minimaskrcnn.nn.optim import SGD
from minimaskrcnn.weights import PREDICTOR_PREFIXES, load_torchvision_weights
from tests.model.test_equivalence import TAKE_ALL

SIZE = 128  # the transform's resize is then the identity on both sides
K = 4  # background + 3 shapes
# Both sides: no random sampling, and few proposals so the box head stays cheap in float64.
KWARGS = {"min_size": SIZE, "max_size": SIZE, "rpn_batch_size_per_image": TAKE_ALL,
          "box_batch_size_per_image": TAKE_ALL, "rpn_pre_nms_top_n_train": 150,
          "rpn_post_nms_top_n_train": 60}


@pytest.fixture(scope="module")
def saved(torch, torchvision, tmp_path_factory):
    torch.manual_seed(0)
    tv = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) * 0.6 + 0.4)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
    path = tmp_path_factory.mktemp("tv") / "maskrcnn_random.pth"
    torch.save(tv.state_dict(), path)
    return path


def batch(n=1, seed=3):
    ds = ShapesDataset(n, image_size=SIZE, seed=seed, min_size=16, max_size=48, num_instances=(1, 3))
    images, targets = [], []
    for i in range(n):
        item = ds[i]
        images.append(item["image"].astype(np.float64) / 255.0)
        targets.append({"boxes": item["boxes"].astype(np.float64), "labels": item["labels"],
                        "masks": item["masks"]})
    return images, targets


def torchvision_twin(torch, path, ours, trainable_layers):
    tv = torchvision_resnet50_fpn(91, trainable_layers, **KWARGS)
    tv.load_state_dict(torch.load(path, weights_only=True), strict=True)  # FrozenBN drops num_batches_tracked
    tv = tv.double()
    replace_predictors(tv, ours)
    rpn_labels_in_model_dtype(tv)
    return tv


def test_loads_with_new_predictors_and_frozen_stem(saved, torch):
    model = load_torchvision_weights(saved, num_classes=K, class_names=("bg", "a", "b", "c"))
    assert model.config.num_classes == K and model.config.class_names == ("bg", "a", "b", "c")
    assert model.roi_heads.box_predictor.cls_score.weight.shape == (K, 1024)
    assert model.roi_heads.mask_predictor.mask_fcn_logits.weight.shape == (K, 256, 1, 1)
    file = {k: v.numpy() for k, v in torch.load(saved, weights_only=True).items()}
    for k, v in model.state_dict().items():
        if k.startswith(PREDICTOR_PREFIXES):
            assert k not in file or file[k].shape != v.shape or not np.array_equal(file[k], v), k
        else:
            np.testing.assert_array_equal(v, file[k].astype(np.float32), err_msg=k)
    # fresh predictors drawn as torchvision's: the mask predictor's biases are not zero
    bias = model.roi_heads.mask_predictor.conv5_mask.bias.data
    assert np.abs(bias).max() > 0 and np.abs(bias).max() <= 1 / np.sqrt(256 * 4)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert "backbone.body.conv1.weight" in frozen and "backbone.body.layer1.2.conv3.weight" in frozen
    assert all(n.startswith(("backbone.body.conv1.", "backbone.body.layer1.")) for n in frozen)
    with pytest.raises(ValueError, match="trainable_backbone_layers must be an int in 0..5"):
        load_torchvision_weights(saved, num_classes=K, trainable_backbone_layers=6)
    with pytest.raises(ValueError, match="class_names has 2 names but the model has 4"):
        load_torchvision_weights(saved, num_classes=K, class_names=("bg", "a"))


def test_trainable_backbone_layers_equal_torchvision(torch, torchvision):
    """For every value 0..5, the body parameters that train are torchvision's (its
    ``_resnet_fpn_extractor`` rule applied to its own ResNet-50), and they are the first
    ``trainable`` of layer4, layer3, layer2, layer1, conv1."""
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.misc import FrozenBatchNorm2d

    from minimaskrcnn.config import BackboneConfig
    from minimaskrcnn.model.backbone import freeze_body
    from minimaskrcnn.model.resnet import ResNet

    ours = ResNet(BackboneConfig(), ["layer1", "layer2", "layer3", "layer4"], np.random.default_rng(0))
    tv = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    del tv.fc  # the detection body has no classifier
    assert {n for n, _ in ours.named_parameters()} == {n for n, _ in tv.named_parameters()}
    for trainable in range(6):
        tv.requires_grad_(True)
        _resnet_fpn_extractor(tv, trainable)
        freeze_body(ours, trainable)
        expected = {n for n, p in tv.named_parameters() if p.requires_grad}
        assert {n for n, p in ours.named_parameters() if p.requires_grad} == expected, trainable
        assert {n.split(".")[0] for n in expected} == set(TRAINABLE_LAYERS_TOP_DOWN[:trainable])
    with pytest.raises(ValueError, match="trainable_layers must be an int in 0..5"):
        freeze_body(ours, -1)


def test_losses_gradients_and_sgd_step_equal_torchvision(saved, torch, torchvision):
    """trainable_backbone_layers=3 (the default): conv1 and layer1 frozen. As torch's autograd, the
    stem and layer1 keep no caches and the backward stops at layer2, which computes no dx."""
    trainable = 3
    model = load_torchvision_weights(saved, num_classes=K, **KWARGS).astype(np.float64)
    images, targets = batch()
    losses = model.forward_train(images, targets)
    body = model.backbone.body
    assert body.frozen_prefix() == 1
    assert not body.conv1._caches and not any(m._caches for m in body.layer1.modules())
    assert body.layer2[0].conv1._caches
    model.zero_grad()
    model.backward()

    tv = torchvision_twin(torch, saved, model, trainable)
    tv.train()
    timgs, ttgts = torch_inputs(images, targets)
    tlosses = tv(timgs, ttgts)
    sum(tlosses.values()).backward()
    for k in LOSS_NAMES:
        assert losses[k] > 0
        t = float(tlosses[k].detach())
        assert abs(losses[k] - t) <= 1e-8 * abs(t), (k, losses[k], t)
    tparams = dict(tv.named_parameters())
    ours = dict(model.named_parameters())
    assert set(ours) == set(tparams)
    for k, p in ours.items():
        t = tparams[k]
        assert p.requires_grad == t.requires_grad, k
        if not p.requires_grad:
            assert t.grad is None and not np.any(p.grad), k
            continue
        assert rel_error(p.grad, t.grad.numpy()) <= 1e-8, (k, rel_error(p.grad, t.grad.numpy()))

    # One SGD step (momentum, weight decay): torch's on the trainable parameters, ours on all of them.
    before = {k: p.data.copy() for k, p in ours.items()}
    SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4).step()
    torch.optim.SGD([p for p in tv.parameters() if p.requires_grad], lr=0.01, momentum=0.9,
                    weight_decay=1e-4).step()
    for k, p in ours.items():
        if p.requires_grad:
            assert not np.array_equal(p.data, before[k]), k
            assert rel_error(p.data, tparams[k].detach().numpy()) <= 1e-12, k
        else:
            np.testing.assert_array_equal(p.data, before[k], err_msg=k)


@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (3, 2, 1), (1, 1, 0), (1, 2, 0), (7, 2, 3)])
def test_conv_backward_skips_only_what_is_not_needed(kernel, stride, padding):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 11, 9))
    w = rng.standard_normal((4, 3, kernel, kernel))
    out, cache = F.conv2d_forward(x, w, None, stride, padding)
    dout = rng.standard_normal(out.shape)
    dx, dw, _ = F.conv2d_backward(dout, cache)
    only_dx = F.conv2d_backward(dout, cache, need_dw=False)
    only_dw = F.conv2d_backward(dout, cache, need_dx=False)
    assert only_dx[1] is None and only_dw[0] is None
    np.testing.assert_allclose(only_dx[0], dx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(only_dw[1], dw, rtol=1e-12, atol=1e-12)
    assert F.conv2d_backward(dout, cache, need_dx=False, need_dw=False)[:2] == (None, None)


def test_train_command_with_init_torchvision(saved, tmp_path, capsys):
    """``minimaskrcnn train --init-torchvision FILE``: one step on shapes images; the saved model
    keeps the frozen layers (its config says 3 trainable layers), which did not move, and a resumed
    run rebuilds them frozen."""
    from minimaskrcnn.cli import main
    from minimaskrcnn.weights import load_model

    out = tmp_path / "run"
    argv = ["train", "--init-torchvision", str(saved), "--steps", "1", "--batch-size", "1", "--set",
            "min_size=128", "--set", "max_size=128", "--eval-images", "0", "--out", str(out)]
    assert main(argv) == 0
    model = load_model(out / "model.npz")
    assert model.config.backbone.trainable_layers == 3 and model.config.num_classes == K
    start = load_torchvision_weights(saved, num_classes=K)
    moved = {k for k, v in model.state_dict().items() if not np.array_equal(v, start.state_dict()[k])}
    frozen = {k for k, p in model.named_parameters() if not p.requires_grad}
    assert frozen and not moved & frozen
    assert "backbone.body.layer4.2.conv3.weight" in moved
    assert main(argv + ["--resume"]) == 2  # one error: line (the resumed run rebuilds from its checkpoint)
    assert "not with --resume" in capsys.readouterr().err
