"""Modules against torch.nn with copied weights: forward, backward, parameter gradients, names and
state dicts; plus the cache stack, initialisation, dtype casting and error messages."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

from minimaskrcnn.nn.gradcheck import check_backward, numerical_gradient, rel_error
from minimaskrcnn.nn.layers import (
    Conv2d,
    ConvTranspose2d,
    Flatten,
    FrozenBatchNorm2d,
    GroupNorm,
    Linear,
    MaxPool2d,
    Module,
    ModuleList,
    Parameter,
    ReLU,
    Sequential,
)


def _randomise(module, rng):
    """Give every parameter and buffer random values (variances positive), so identity-initialised
    norms are tested too."""
    sd = module.state_dict()
    for k, v in sd.items():
        sd[k] = rng.uniform(0.5, 2.0, v.shape) if k.endswith("running_var") else rng.standard_normal(v.shape)
    module.load_state_dict(sd)


def _to_torch(torch, ours, theirs):
    """Copy our (float64) state into the torch module, by name, strictly."""
    theirs.double()
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()}, strict=True)


def _compare(torch, ours, theirs, x, rng, tol=1e-10):
    """Forward, backward, input gradient and every parameter gradient, ours vs torch."""
    _to_torch(torch, ours, theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    out = ours(x)
    tx = torch.tensor(x, requires_grad=True)
    tout = theirs(tx)
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=tol, atol=tol)
    dout = rng.standard_normal(out.shape)
    tout.backward(torch.from_numpy(dout))
    dx = ours.backward(dout)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=tol, atol=tol)
    tgrads = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, tgrads[name].grad.numpy(), rtol=tol, atol=tol, err_msg=name)


# Each case: (our module, a function building the torch module, input shape).
def _cases(torch, torchvision):
    nn = torch.nn
    frozen = torchvision.ops.misc.FrozenBatchNorm2d
    return {
        "conv3x3": (Conv2d(3, 4, 3, padding=1), lambda: nn.Conv2d(3, 4, 3, padding=1), (2, 3, 7, 6)),
        "conv_rect_dilated": (Conv2d(3, 5, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(2, 1)),
                              lambda: nn.Conv2d(3, 5, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(2, 1)),
                              (1, 3, 9, 5)),
        "conv_1x1_nobias_stride3": (Conv2d(2, 3, 1, stride=3, bias=False),
                                    lambda: nn.Conv2d(2, 3, 1, stride=3, bias=False), (2, 2, 7, 7)),
        "conv_1x1_spatial": (Conv2d(4, 2, 3, padding=1), lambda: nn.Conv2d(4, 2, 3, padding=1), (1, 4, 1, 1)),
        "deconv_2x2_s2": (ConvTranspose2d(4, 3, 2, stride=2), lambda: nn.ConvTranspose2d(4, 3, 2, stride=2),
                          (2, 4, 5, 3)),
        "deconv_3x3_s2_p1": (ConvTranspose2d(3, 2, 3, stride=2, padding=1, bias=False),
                             lambda: nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, bias=False),
                             (1, 3, 4, 4)),
        "linear": (Linear(6, 4), lambda: nn.Linear(6, 4), (5, 6)),
        "linear_nobias": (Linear(6, 4, bias=False), lambda: nn.Linear(6, 4, bias=False), (1, 6)),
        "relu": (ReLU(), lambda: nn.ReLU(), (2, 3, 4, 4)),
        "maxpool_3_2_1": (MaxPool2d(3, 2, 1), lambda: nn.MaxPool2d(3, 2, 1), (2, 3, 7, 8)),
        "maxpool_2": (MaxPool2d(2), lambda: nn.MaxPool2d(2), (1, 2, 5, 5)),
        "groupnorm": (GroupNorm(2, 6), lambda: nn.GroupNorm(2, 6), (2, 6, 3, 5)),
        "frozen_bn": (FrozenBatchNorm2d(4), lambda: frozen(4), (2, 4, 3, 3)),
        "flatten": (Flatten(), lambda: nn.Flatten(), (3, 2, 2, 5)),
    }


_CASE_NAMES = ["conv3x3", "conv_rect_dilated", "conv_1x1_nobias_stride3", "conv_1x1_spatial", "deconv_2x2_s2",
               "deconv_3x3_s2_p1", "linear", "linear_nobias", "relu", "maxpool_3_2_1", "maxpool_2",
               "groupnorm", "frozen_bn", "flatten"]


@pytest.mark.parametrize("case", _CASE_NAMES)
def test_layer_matches_torch_float64(torch, torchvision, case):
    rng = np.random.default_rng(11)
    ours, make_theirs, shape = _cases(torch, torchvision)[case]
    ours.astype(np.float64)
    _randomise(ours, rng)
    _compare(torch, ours, make_theirs(), rng.standard_normal(shape), rng)


@pytest.mark.parametrize("case", ["conv3x3", "deconv_2x2_s2", "linear", "groupnorm", "frozen_bn"])
def test_layer_matches_torch_float32(torch, torchvision, case):
    rng = np.random.default_rng(12)
    ours, make_theirs, shape = _cases(torch, torchvision)[case]
    _randomise(ours, rng)  # stays float32
    theirs = make_theirs()
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()})
    x = rng.standard_normal(shape).astype(np.float32)
    out = ours(x)
    assert out.dtype == np.float32
    tx = torch.tensor(x, requires_grad=True)
    tout = theirs(tx)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    tout.backward(torch.from_numpy(dout))
    dx = ours.backward(dout)
    assert dx.dtype == np.float32
    assert rel_error(out, tout.detach().numpy()) < 1e-5
    assert rel_error(dx, tx.grad.numpy()) < 1e-5
    for name, p in dict(theirs.named_parameters()).items():
        assert rel_error(dict(ours.named_parameters())[name].grad, p.grad.numpy()) < 1e-5


def _nested(rng):
    """A small nested model with named children, as a torchvision head would be built."""
    return Sequential(OrderedDict([
        ("stem", Sequential(Conv2d(3, 8, 3, padding=1, rng=rng), GroupNorm(2, 8), ReLU())),
        ("pool", MaxPool2d(2)),
        ("body", Sequential(Conv2d(8, 8, 3, padding=1, bias=False, rng=rng), FrozenBatchNorm2d(8), ReLU())),
        ("up", ConvTranspose2d(8, 4, 2, stride=2, rng=rng)),
        ("flat", Flatten()),
        ("fc", Linear(4 * 6 * 6, 5, rng=rng)),
    ]))


def _nested_torch(torch, torchvision):
    nn = torch.nn
    return nn.Sequential(OrderedDict([
        ("stem", nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU())),
        ("pool", nn.MaxPool2d(2)),
        ("body", nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False),
                               torchvision.ops.misc.FrozenBatchNorm2d(8), nn.ReLU())),
        ("up", nn.ConvTranspose2d(8, 4, 2, stride=2)),
        ("flat", nn.Flatten()),
        ("fc", nn.Linear(4 * 6 * 6, 5)),
    ]))


def test_nested_model_names_and_gradients_match_torch(torch, torchvision):
    rng = np.random.default_rng(13)
    ours = _nested(rng).astype(np.float64)
    theirs = _nested_torch(torch, torchvision)
    # Names, in order, exactly as torch's — parameters and buffers.
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert "body.1.running_var" in ours.state_dict() and "stem.0.weight" in ours.state_dict()
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    _randomise(ours, rng)
    _compare(torch, ours, theirs, rng.standard_normal((2, 3, 6, 6)), rng)


class _Tower(Module):
    """A shared head: ``conv`` and ``act`` are applied twice in one forward, and the whole tower is
    applied to several feature maps (like the RPN head on every FPN level)."""

    def __init__(self, rng):
        super().__init__()
        self.conv = Conv2d(3, 3, 3, padding=1, rng=rng)
        self.act = ReLU()
        self.logits = Conv2d(3, 2, 1, rng=rng)

    def forward(self, x):
        return self.logits(self.act(self.conv(self.act(self.conv(x)))))

    def backward(self, dout):
        d = self.logits.backward(dout)
        d = self.conv.backward(self.act.backward(d))
        return self.conv.backward(self.act.backward(d))


def test_shared_module_applied_several_times_matches_torch(torch):
    nn = torch.nn

    class TorchTower(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.act = nn.ReLU()
            self.logits = nn.Conv2d(3, 2, 1)

        def forward(self, x):
            return self.logits(self.act(self.conv(self.act(self.conv(x)))))

    rng = np.random.default_rng(14)
    ours = _Tower(rng).astype(np.float64)
    theirs = TorchTower()
    _to_torch(torch, ours, theirs)
    levels = [rng.standard_normal((2, 3, s, s)) for s in (8, 4, 1)]
    outs = [ours(x) for x in levels]  # three applications, six conv calls: six caches on conv's stack
    assert len(ours.conv._caches) == 6
    douts = [rng.standard_normal(o.shape) for o in outs]
    dxs = [ours.backward(d) for d in reversed(douts)][::-1]  # backward in reverse order of forward
    assert ours.conv._caches == []
    txs = [torch.tensor(x, requires_grad=True) for x in levels]
    sum(((theirs(tx) * torch.from_numpy(d)).sum() for tx, d in zip(txs, douts))).backward()
    for o, tx in zip(outs, txs):
        np.testing.assert_allclose(o, theirs(tx).detach().numpy(), rtol=1e-10, atol=1e-10)
    for dx, tx in zip(dxs, txs):
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-10)
    tgrads = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():  # gradients summed over all applications
        np.testing.assert_allclose(p.grad, tgrads[name].grad.numpy(), rtol=1e-10, atol=1e-10)


def test_gradient_check_through_a_composite_model():
    rng = np.random.default_rng(15)
    # One group, so the conv bias is not cancelled by the normalisation (its gradient is not 0).
    model = Sequential(Conv2d(2, 3, 3, padding=1, rng=rng), GroupNorm(1, 3), ReLU(),
                       ConvTranspose2d(3, 2, 2, stride=2, rng=rng)).astype(np.float64)
    _randomise(model, rng)
    x = rng.standard_normal((2, 2, 3, 3))

    def forward(x):
        out = model(x)
        model.clear_cache()
        return out

    def backward(dout):
        model(x)
        model.zero_grad()
        return model.backward(dout)

    (err,) = check_backward(forward, backward, x, verbose=False)
    assert err < 1e-7
    # Parameter gradients against centred differences of the same contracted loss.
    dout = rng.standard_normal(model(x).shape)
    model.zero_grad()
    model.backward(dout)
    for name, p in model.named_parameters():
        num = numerical_gradient(lambda: forward(x), p.data, dout)
        assert rel_error(p.grad, num) < 1e-7, name


# ------------------------------------------------------------------------------------ state dicts


def test_state_dict_is_a_snapshot_and_round_trips():
    a, b = _nested(np.random.default_rng(1)), _nested(np.random.default_rng(2))
    sd = a.state_dict()
    sd_before = {k: v.copy() for k, v in sd.items()}
    a.stem[0].weight.data += 1  # later changes do not leak into an earlier state dict
    np.testing.assert_array_equal(sd["stem.0.weight"], sd_before["stem.0.weight"])
    weight_object = b.stem[0].weight.data
    result = b.load_state_dict(sd)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert b.stem[0].weight.data is weight_object  # copied in place: optimisers keep their arrays
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(v, sd[k])


def test_load_state_dict_names_every_bad_key():
    model = _nested(np.random.default_rng(1))
    sd = model.state_dict()
    original = model.state_dict()
    del sd["fc.bias"], sd["body.1.running_mean"]
    sd["head.weight"] = np.zeros(3)
    sd["stem.0.weight"] = np.zeros((8, 3, 5, 5))
    with pytest.raises(ValueError) as exc:
        model.load_state_dict(sd)
    msg = str(exc.value)
    for key in ("fc.bias", "body.1.running_mean", "head.weight", "stem.0.weight"):
        assert key in msg
    for k, v in model.state_dict().items():  # nothing was modified
        np.testing.assert_array_equal(v, original[k])
    # Non-strict: missing/unexpected are reported, not raised — but a wrong shape still raises.
    with pytest.raises(ValueError, match="stem.0.weight"):
        model.load_state_dict(sd, strict=False)
    sd["stem.0.weight"] = original["stem.0.weight"] + 1
    result = model.load_state_dict(sd, strict=False)
    assert sorted(result.missing_keys) == ["body.1.running_mean", "fc.bias"]
    assert result.unexpected_keys == ["head.weight"]
    np.testing.assert_array_equal(model.stem[0].weight.data, original["stem.0.weight"] + 1)
    with pytest.raises(ValueError, match="non-numeric"):
        model.load_state_dict({**original, "fc.bias": np.array(["a"] * 5)})


def test_frozen_bn_loads_a_torch_batchnorm_state_dict(torch, torchvision):
    # A trained BatchNorm2d has a num_batches_tracked entry; FrozenBatchNorm2d skips it (torchvision).
    bn = torch.nn.BatchNorm2d(4).double()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    bn.eval()
    ours = FrozenBatchNorm2d(4).astype(np.float64)
    ours.load_state_dict({k: v.numpy() for k, v in bn.state_dict().items()})
    assert list(ours.state_dict()) == ["weight", "bias", "running_mean", "running_var"]
    assert ours.parameters() == []  # all frozen: buffers, not parameters
    x = np.random.default_rng(3).standard_normal((2, 4, 3, 3))
    np.testing.assert_allclose(ours(x), bn(torch.from_numpy(x)).detach().numpy(), rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------------ initialisation


@pytest.mark.parametrize("which", ["conv", "deconv", "linear"])
def test_default_init_bounds_match_torch(torch, which):
    # torch draws U(±1/√fan_in) for weights and biases; fan_in of ConvTranspose2d comes from weight
    # dim 1 (C_out·kH·kW), not from C_in. With thousands of draws the largest |w| is within a few
    # per cent of the bound for both libraries, and a wrong fan_in would be off by a factor ≥ 2.
    nn = torch.nn
    torch.manual_seed(0)
    if which == "conv":
        ours, theirs, fan_in = Conv2d(64, 300, 3), nn.Conv2d(64, 300, 3), 64 * 9
    elif which == "deconv":
        ours, theirs = ConvTranspose2d(16, 300, 2, stride=2), nn.ConvTranspose2d(16, 300, 2, stride=2)
        fan_in = 300 * 4
    else:
        ours, theirs, fan_in = Linear(400, 300), nn.Linear(400, 300), 400
    bound = 1 / np.sqrt(fan_in)
    for name in ("weight", "bias"):
        mine = getattr(ours, name).data
        ref = getattr(theirs, name).detach().numpy()
        assert mine.dtype == np.float32 and mine.shape == ref.shape
        assert np.abs(mine).max() <= bound and np.abs(ref).max() <= bound * (1 + 1e-6)
        assert np.abs(mine).max() > 0.95 * bound and np.abs(ref).max() > 0.95 * bound
        # Uniform: standard deviation bound/√3.
        assert abs(mine.std() - bound / np.sqrt(3)) < 0.1 * bound


def test_init_is_reproducible_from_the_generator():
    a = Conv2d(3, 4, 3, rng=np.random.default_rng(5))
    b = Conv2d(3, 4, 3, rng=np.random.default_rng(5))
    c = Conv2d(3, 4, 3, rng=np.random.default_rng(6))
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    assert not np.array_equal(a.weight.data, c.weight.data)
    np.testing.assert_array_equal(Conv2d(3, 4, 3).weight.data, Conv2d(3, 4, 3).weight.data)  # rng=None
    gn = GroupNorm(2, 4)
    np.testing.assert_array_equal(gn.weight.data, np.ones(4, np.float32))
    np.testing.assert_array_equal(gn.bias.data, np.zeros(4, np.float32))
    with pytest.raises(TypeError, match="rng"):
        Conv2d(3, 4, 3, rng=5)


# ------------------------------------------------------------------------------------ module protocol


def test_astype_train_eval_zero_grad():
    model = _nested(np.random.default_rng(1))
    assert all(p.data.dtype == np.float32 for p in model.parameters())
    model.astype(np.float64)
    assert all(p.data.dtype == np.float64 and p.grad.dtype == np.float64 for p in model.parameters())
    assert all(b.dtype == np.float64 for _, b in model.named_buffers())
    assert model.body[1].running_var.dtype == np.float64  # the attribute and the state agree
    assert model.training and all(m.training for m in model.modules())
    assert model.eval() is model and not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    out = model(np.random.default_rng(2).standard_normal((1, 3, 6, 6)))
    model.backward(np.ones_like(out))
    assert any(np.any(p.grad != 0) for p in model.parameters())
    model.zero_grad()
    assert all(np.all(p.grad == 0) for p in model.parameters())
    with pytest.raises(TypeError, match="dtype"):
        model.astype(np.int32)


def test_cache_stack_errors_no_grad_and_clear_cache():
    conv = Conv2d(2, 2, 3, padding=1)
    x = np.zeros((1, 2, 4, 4), np.float32)
    with pytest.raises(RuntimeError, match="no stored forward cache"):
        conv.backward(np.zeros((1, 2, 4, 4), np.float32))
    with conv.no_grad():
        conv(x)
    assert conv._caches == [] and conv._record
    conv(x)
    conv(x)
    assert len(conv._caches) == 2
    conv.clear_cache()
    assert conv._caches == []


def test_named_parameters_shared_parameter_once_and_module_list():
    shared = Conv2d(2, 2, 1)
    levels = ModuleList([shared, Conv2d(2, 3, 1), shared])
    assert [n for n, _ in levels.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert len(levels) == 3 and levels[2] is shared and list(levels)[1] is levels[1]
    with pytest.raises(NotImplementedError):
        levels(np.zeros((1, 2, 1, 1), np.float32))
    with pytest.raises(TypeError, match="Module"):
        levels.append(np.zeros(3))


def test_attribute_registration_rules():
    class NoSuper(Module):
        def __init__(self):
            self.conv = Conv2d(1, 1, 1)

    with pytest.raises(AttributeError, match="super"):
        NoSuper()
    conv = Conv2d(1, 1, 1)
    with pytest.raises(TypeError, match="weight"):
        conv.weight = np.zeros((1, 1, 1, 1))
    conv.bias = None  # removing a parameter is allowed, as torch
    assert [n for n, _ in conv.named_parameters()] == ["weight"]
    conv.extra = Parameter(np.zeros(2))
    assert [n for n, _ in conv.named_parameters()] == ["weight", "extra"]
    with pytest.raises(TypeError, match="float"):
        Parameter(np.zeros(2, dtype=np.int64))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="padding"):
        Conv2d(1, 1, 3, padding=-1)
    with pytest.raises(ValueError, match="kernel_size"):
        Conv2d(1, 1, 0)
    with pytest.raises(ValueError, match="in_channels"):
        Conv2d(0, 1, 3)
    with pytest.raises(ValueError, match="divisible"):
        GroupNorm(3, 8)
    with pytest.raises(TypeError, match="Module"):
        Sequential(Conv2d(1, 1, 1), "relu")


def test_repr_reads_like_torch():
    text = repr(_nested(np.random.default_rng(0)))
    assert "(stem): Sequential(" in text
    assert "(0): Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))" in text
    assert "(fc): Linear(in_features=144, out_features=5, bias=True)" in text


def test_package_exports():
    import minimaskrcnn.nn as nn
    from minimaskrcnn.nn import functional, layers, losses, optim

    assert nn.Conv2d is layers.Conv2d and nn.SGD is optim.SGD and nn.smooth_l1 is losses.smooth_l1
    assert callable(functional.conv2d_forward)
    for name in nn.__all__:
        assert getattr(nn, name) is not None
    with pytest.raises(AttributeError, match="no attribute"):
        nn.NotALayer  # noqa: B018
