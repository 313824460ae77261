"""ResNet-50 body against torchvision's: names, C2..C5 (float64, float32), backward, body + FPN."""

import copy

import numpy as np
import pytest

from minimaskrcnn.config import BackboneConfig
from minimaskrcnn.model.fpn import FeaturePyramidNetwork
from minimaskrcnn.model.resnet import ResNet, resnet50
from minimaskrcnn.nn.gradcheck import rel_error
from minimaskrcnn.nn.layers import Module

RETURN = ["layer1", "layer2", "layer3", "layer4"]


@pytest.fixture(scope="module")
def ours():
    return resnet50(RETURN, np.random.default_rng(0))


def torch_body(torch, torchvision, seed=0):
    """torchvision's resnet50 with FrozenBatchNorm2d (as maskrcnn_resnet50_fpn builds it for pretrained
    weights) whose frozen statistics and affine parameters are random, not the trivial 1/0/0/1."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(seed)
    body = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    g = torch.Generator().manual_seed(seed)
    for m in body.modules():
        if isinstance(m, FrozenBatchNorm2d):
            c = m.weight.shape[0]
            m.weight.copy_(torch.rand(c, generator=g) * 0.6 + 0.4)
            m.bias.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
    return body.eval()


@pytest.fixture(scope="module")
def tbody(torch, torchvision):
    return torch_body(torch, torchvision)


def torch_features(body, x):
    """C2..C5 of torchvision's body (the forward of IntermediateLayerGetter over layer1..4)."""
    x = body.maxpool(body.relu(body.bn1(body.conv1(x))))
    outs = []
    for name in RETURN:
        x = getattr(body, name)(x)
        outs.append(x)
    return outs


def copy_into(model, body, dtype):
    sd = {k: v.detach().numpy() for k, v in body.state_dict().items() if not k.startswith("fc.")}
    model.astype(dtype)
    model.load_state_dict(sd, strict=True)


def test_names_equal_torchvision_maskrcnn_body(ours, torchvision):
    tv = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    theirs = {k[len("backbone.body."):]: tuple(v.shape) for k, v in tv.state_dict().items()
              if k.startswith("backbone.body.") and not k.endswith("num_batches_tracked")}
    mine = {k: v.shape for k, v in ours.state_dict().items()}
    assert list(mine) == list(theirs)  # same keys, same (torch) order
    assert mine == theirs
    # Only convolutions are trainable (the norms are frozen buffers), as with pretrained weights.
    assert all(k.split(".")[-2].startswith(("conv", "0")) for k, _ in ours.named_parameters())


def test_shapes_and_strides(ours):
    x = np.zeros((1, 3, 67, 45), np.float32)  # odd sizes: every stride-2 step rounds up
    with ours.no_grad():
        outs = ours(x)
    assert [o.shape for o in outs] == [(1, 256, 17, 12), (1, 512, 9, 6), (1, 1024, 5, 3), (1, 2048, 3, 2)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_features_equal_torchvision(ours, tbody, torch, dtype):
    body = copy.deepcopy(tbody)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 3, 96, 128))
    if dtype == np.float64:
        body = body.double()
    copy_into(ours, body, dtype)
    with torch.no_grad():
        expected = [t.numpy() for t in torch_features(body, torch.from_numpy(x.astype(dtype)))]
    with ours.no_grad():
        got = ours(x.astype(dtype))
    tol = 1e-10 if dtype == np.float64 else 1e-4
    for name, g, e in zip(RETURN, got, expected):
        assert g.dtype == dtype and g.shape == e.shape, name
        assert np.abs(e).max() > 1e-3, name  # the maps are not trivially zero
        assert rel_error(g, e) <= tol, (name, rel_error(g, e))


def test_backward_equals_autograd(ours, tbody, torch):
    """Gradients of the input and of a few conv weights, float64, on a small image; the upstream
    gradients reach the body through C3 and C5 only (C2/C4 get None), like a partial loss."""
    model = ours
    body = copy.deepcopy(tbody).double()
    copy_into(model, body, np.float64)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 3, 64, 64))
    outs = model(x)
    douts = [None, rng.standard_normal(outs[1].shape), None, rng.standard_normal(outs[3].shape)]
    model.zero_grad()
    dx = model.backward(douts)

    tx = torch.from_numpy(x).requires_grad_()
    touts = torch_features(body, tx)
    loss = (touts[1] * torch.from_numpy(douts[1])).sum() + (touts[3] * torch.from_numpy(douts[3])).sum()
    loss.backward()
    assert rel_error(dx, tx.grad.numpy()) <= 1e-10
    tparams = dict(body.named_parameters())
    for name in ["conv1.weight", "layer1.0.conv1.weight", "layer1.0.downsample.0.weight",
                 "layer2.3.conv3.weight", "layer4.2.conv2.weight", "layer3.0.downsample.0.weight"]:
        ours_g = dict(model.named_parameters())[name].grad
        assert rel_error(ours_g, tparams[name].grad.numpy()) <= 1e-10, name
    assert not any(m._caches for m in model.modules())  # every cache was consumed


def test_return_layers_and_errors():
    cfg = BackboneConfig(stem_channels=8, stage_channels=(16, 32, 64, 128))
    small = ResNet(cfg, ["layer3"], np.random.default_rng(0), blocks=(1, 1, 1, 1))
    assert not hasattr(small, "layer4")  # layers after the last returned one are not built
    with small.no_grad():
        (c4,) = small(np.zeros((2, 3, 32, 32), np.float32))
    assert c4.shape == (2, 64, 2, 2)
    with pytest.raises(ValueError, match="return_layers"):
        ResNet(cfg, ["layer5"], np.random.default_rng(0))
    with pytest.raises(ValueError, match="multiples of 4"):
        ResNet(BackboneConfig(stage_channels=(10, 20, 40, 80)), ["layer1"], np.random.default_rng(0))
    with pytest.raises(ValueError, match="one per returned map"):
        small.backward([None, None])


class _BodyWithFPN(Module):
    """body + fpn under torchvision's BackboneWithFPN names (``body.*``, ``fpn.*``)."""

    def __init__(self, body, fpn):
        super().__init__()
        self.body = body
        self.fpn = fpn

    def forward(self, x):
        return self.fpn(self.body(x))


def test_body_with_fpn_equals_torchvision_backbone(ours, tbody, torch):
    """ResNet-50 + FPN (LastLevelMaxPool) against torchvision's BackboneWithFPN built over the same
    body, as maskrcnn_resnet50_fpn does: outputs '0', '1', '2', '3', 'pool' in float64."""
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor

    tbackbone = _resnet_fpn_extractor(copy.deepcopy(tbody), 5).double().eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in tbackbone.fpn.named_parameters():
            if name.endswith("bias"):  # torchvision initialises them to 0: make them count
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.1)
    model = _BodyWithFPN(ours, FeaturePyramidNetwork([256, 512, 1024, 2048], 256, True,
                                                     np.random.default_rng(0))).astype(np.float64)
    sd = {k: v.numpy() for k, v in tbackbone.state_dict().items()}
    model.load_state_dict(sd, strict=True)
    x = np.random.default_rng(4).standard_normal((1, 3, 96, 128))
    with torch.no_grad():
        expected = tbackbone(torch.from_numpy(x))
    assert list(expected) == ["0", "1", "2", "3", "pool"]
    with model.no_grad():
        got = model(x)
    assert len(got) == 5
    for g_, (name, e) in zip(got, expected.items()):
        assert g_.shape == tuple(e.shape), name
        assert rel_error(g_, e.numpy()) <= 1e-10, name


def test_backward_without_the_image_gradient():
    # input_grad=False (what Mask R-CNN's backward asks for): None instead of d(image), and every
    # parameter gradient as with it. Both bodies: the small from-scratch one and the ResNet.
    from minimaskrcnn.model.backbone import SmallResNet

    cfg = BackboneConfig(stem_channels=8, stage_channels=(8, 16, 16, 16))
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    for body in (SmallResNet(cfg, RETURN, np.random.default_rng(0)),
                 ResNet(cfg, RETURN, np.random.default_rng(0), blocks=(1, 1, 1, 1))):
        grads = []
        for input_grad in (True, False):
            outs = body(x)
            body.zero_grad()
            dx = body.backward([np.ones_like(o) for o in outs], input_grad=input_grad)
            assert (dx is None) is (not input_grad)
            grads.append({n: p.grad.copy() for n, p in body.named_parameters()})
        assert grads[0].keys() == grads[1].keys()
        for name in grads[0]:
            np.testing.assert_array_equal(grads[0][name], grads[1][name], err_msg=name)
