"""The FLOP counter against closed-form counts of tiny layers."""

import numpy as np

from minimaskrcnn.nn import functional as F
from minimaskrcnn.nn.flops import count_flops
from minimaskrcnn.nn.layers import Conv2d, ConvTranspose2d, Linear


def test_conv2d_golden_count():
    # x (2, 3, 5, 5), w (4, 3, 3, 3), stride 2, pad 1 → H' = W' = 1 + (5 + 2 − 2 − 1) // 2 = 3.
    # MACs = N·C_out·H'·W'·C_in·kH·kW = 2·4·3·3·3·3·3 = 1944; FLOPs = 2·1944 = 3888 per product,
    # and the backward does two products (dx, dW): 7776.
    conv = Conv2d(3, 4, 3, stride=2, padding=1, rng=np.random.default_rng(0))
    x = np.ones((2, 3, 5, 5), np.float32)
    with count_flops() as counted:
        out = conv.forward(x)
        conv.backward(np.ones_like(out))
    assert out.shape == (2, 4, 3, 3)
    assert counted.flops() == {"forward": 3888, "dx": 3888, "dw": 3888, "total": 11664}
    # a frozen layer whose input needs no gradient: only the forward is work
    skip = {id(conv.weight.data)}
    assert counted.flops(no_dw=skip, no_dx=skip) == {"forward": 3888, "dx": 0, "dw": 0, "total": 3888}


def test_linear_and_conv_transpose_golden_count():
    # linear: x (5, 7) · wᵀ (7, 3): MACs 5·7·3 = 105, FLOPs 210 per product.
    # conv_transpose2d 2×2 stride 2: x (1, 2, 4, 4), w (2, 6, 2, 2): every one of the 1·2·4·4 = 32 input
    # values stamps 6·2·2 = 24 products: MACs 768, FLOPs 1536 per product.
    lin = Linear(7, 3, rng=np.random.default_rng(0))
    up = ConvTranspose2d(2, 6, 2, stride=2, rng=np.random.default_rng(1))
    with count_flops() as counted:
        y = lin.forward(np.ones((5, 7), np.float32))
        z = up.forward(np.ones((1, 2, 4, 4), np.float32))
        up.backward(np.ones_like(z))
    lin.backward(np.ones_like(y))  # outside the block: not counted
    assert z.shape == (1, 6, 8, 8)
    assert counted.flops() == {"forward": 210 + 1536, "dx": 1536, "dw": 1536, "total": 210 + 3 * 1536}


def test_count_flops_restores_the_functions():
    before = F.conv2d_forward
    try:
        with count_flops():
            assert F.conv2d_forward is not before
            raise KeyError("inside")
    except KeyError:
        pass
    assert F.conv2d_forward is before
