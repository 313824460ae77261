"""Feature Pyramid Network (Lin et al. 2017), torchvision's ``FeaturePyramidNetwork``.

Inputs C2..C5 (strides 4..32, any channel counts). For each level a 1x1 "lateral" conv brings the map
to ``out_channels``; going top-down, the coarser merged map is upsampled (nearest) to the finer
level's size and added to its lateral; a 3x3 conv on each merged map gives P2..P5::

    inner5 = lateral5(C5)                       P5 = layer5(inner5)
    inner4 = lateral4(C4) + up(inner5)          P4 = layer4(inner4)     (up = nearest, to C4's size)
    ...                                         P2 = layer2(inner2)

With ``extra_max_pool`` (torchvision's LastLevelMaxPool) P6 = max_pool(P5, kernel 1, stride 2), i.e.
every other pixel of P5: size ceil(h/2) x ceil(w/2).

Names as torchvision: ``inner_blocks.i.0`` (lateral 1x1) and ``layer_blocks.i.0`` (output 3x3), both
initialised with kaiming_uniform(a=1) and zero bias.

Backward runs the same graph in reverse: the gradient of inner_l is d(P_l) through layer_l plus the
gradient coming down from level l-1's upsampling (the nearest-upsample backward sums each coarse
pixel's copies); it then flows into lateral_l (to C_l) and, through up's backward, to inner_{l+1}.
"""

from __future__ import annotations

import numpy as np

from minimaskrcnn.nn import functional as F
from minimaskrcnn.nn.layers import Conv2d, MaxPool2d, Module, ModuleList, Sequential


def kaiming_uniform_a1(param, rng: np.random.Generator) -> None:
    """torch ``kaiming_uniform_(w, a=1)``: U(−b, b) with b = sqrt(3 / fan_in)."""
    w = param.data
    fan_in = int(np.prod(w.shape[1:]))
    bound = np.sqrt(3.0 / fan_in)
    param.data[...] = rng.uniform(-bound, bound, size=w.shape).astype(w.dtype)


class FeaturePyramidNetwork(Module):
    def __init__(self, in_channels_list: list[int], out_channels: int, extra_max_pool: bool,
                 rng: np.random.Generator):
        super().__init__()
        self.inner_blocks = ModuleList([Sequential(Conv2d(c, out_channels, 1, rng=rng))
                                        for c in in_channels_list])
        self.layer_blocks = ModuleList([Sequential(Conv2d(out_channels, out_channels, 3, padding=1, rng=rng))
                                        for _ in in_channels_list])
        for blocks in (self.inner_blocks, self.layer_blocks):
            for block in blocks:
                kaiming_uniform_a1(block[0].weight, rng)
                block[0].bias.data[...] = 0
        self.extra_max_pool = extra_max_pool
        if extra_max_pool:
            self.pool = MaxPool2d(1, stride=2)

    def forward(self, xs: list):
        """xs: [C2, ..., C5] (N, C_l, H_l, W_l). Returns [P2, ..., P5(, P6)], each (N, out, H_l, W_l)."""
        n = len(xs)
        last_inner = self.inner_blocks[n - 1](xs[n - 1])
        results = [self.layer_blocks[n - 1](last_inner)]
        up_caches = []
        for idx in range(n - 2, -1, -1):
            lateral = self.inner_blocks[idx](xs[idx])
            top_down, cache = F.upsample_nearest2d_forward(last_inner, lateral.shape[-2:])
            up_caches.append(cache)
            last_inner = lateral + top_down
            results.insert(0, self.layer_blocks[idx](last_inner))
        if self.extra_max_pool:
            results.append(self.pool(results[-1]))
        self._push(up_caches)
        return results

    def backward(self, douts: list, input_grads: list | None = None):
        """douts: one gradient per output map (arrays shaped like the outputs). Returns [dC2, ..., dC5];
        ``input_grads[i] = False``: level i's input needs no gradient (a frozen stage), dC_i is None."""
        input_grads = [True] * len(self.inner_blocks) if input_grads is None else list(input_grads)
        up_caches = self._pop()
        n = len(self.inner_blocks)
        douts = list(douts)
        if self.extra_max_pool:
            d_pool = self.pool.backward(douts.pop())  # P6 = pool(P5): its gradient lands on P5
            douts[-1] = douts[-1] + d_pool
        dxs = [None] * n
        # Walk bottom-up (reverse of the forward's top-down loop): level 0 was computed last.
        d_inner_from_below = None
        for idx in range(n):
            d_inner = self.layer_blocks[idx].backward(douts[idx])
            if d_inner_from_below is not None:
                d_inner = d_inner + d_inner_from_below
            dxs[idx] = self.inner_blocks[idx][0].backward(d_inner, input_grad=input_grads[idx])  # 1x1 conv
            if idx < n - 1:
                # inner_idx = lateral_idx + up(inner_{idx+1}): route d_inner to the coarser level.
                d_inner_from_below = F.upsample_nearest2d_backward(d_inner, up_caches[n - 2 - idx])
        return dxs
