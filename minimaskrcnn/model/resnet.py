"""ResNet-50 (He et al. 2016) exactly as torchvision's ``resnet50``: the body of ``maskrcnn_resnet50_fpn``.

For an input of H x W (padded to a multiple of 32), with torchvision's names::

    conv1   7x7/2, 3 -> 64, no bias; bn1; relu              H/2
    maxpool 3x3/2, padding 1                                  H/4
    layer1  3 Bottlenecks, width  64, out  256, stride 1      H/4    C2 ("0" for the FPN)
    layer2  4 Bottlenecks, width 128, out  512, stride 2      H/8    C3 ("1")
    layer3  6 Bottlenecks, width 256, out 1024, stride 2      H/16   C4 ("2")
    layer4  3 Bottlenecks, width 512, out 2048, stride 2      H/32   C5 ("3")

A Bottleneck (torchvision's "ResNet v1.5": the stride sits on the 3x3 conv, not on the first 1x1)::

    x ─ conv1 1x1 ─ bn1 ─ relu ─ conv2 3x3/s ─ bn2 ─ relu ─ conv3 1x1 ─ bn3 ─(+)─ relu ─ out
    └──────────────── identity, or downsample = [1x1/s conv, bn] ────────────┘

The first block of every layer has a ``downsample`` (``downsample.0`` conv, ``downsample.1`` norm)
because its channel count (and, from layer2 on, its resolution) changes. Every norm is a
FrozenBatchNorm2d: with detection batches of 1-2 images the ImageNet statistics are kept frozen,
and each norm is a fixed per-channel affine map y = x·scale + shift.

Parameter and buffer names equal torchvision's ``backbone.body.*`` keys (``layer1.0.conv1.weight``,
``layer1.0.downsample.1.running_var`` ...), so a torchvision state_dict loads by name.
Output size of a conv: H' = 1 + (H + 2·pad − k) // stride, so 7x7/2 pad 3 and 3x3/2 pad 1 give
ceil(H / 2), and the max pool 3x3/2 pad 1 also gives ceil(H / 2).

Backward is written too (every layer has one), so the network can be fine-tuned; with frozen norms
only the convolutions receive gradients.
"""

from __future__ import annotations

import contextlib

import numpy as np

from minimaskrcnn.config import BackboneConfig
from minimaskrcnn.nn.layers import Conv2d, FrozenBatchNorm2d, GroupNorm, MaxPool2d, Module, ReLU, Sequential

# Blocks per layer of ResNet-50 (ResNet-101 would be (3, 4, 23, 3)).
RESNET50_BLOCKS = (3, 4, 6, 3)
# A Bottleneck's output has 4x the channels of its 3x3 conv ("width").
EXPANSION = 4


def kaiming_normal_fan_out(param, rng: np.random.Generator) -> None:
    """torch ``kaiming_normal_(w, mode="fan_out", nonlinearity="relu")``: N(0, 2 / (C_out·kH·kW)),
    torchvision's initialisation of every ResNet convolution."""
    w = param.data
    fan_out = w.shape[0] * int(np.prod(w.shape[2:]))
    param.data[...] = rng.normal(0.0, np.sqrt(2.0 / fan_out), size=w.shape).astype(w.dtype)


def _norm(cfg: BackboneConfig, channels: int) -> Module:
    if cfg.norm == "group":
        return GroupNorm(cfg.num_groups, channels)
    return FrozenBatchNorm2d(channels)


def _conv(c_in, c_out, k, stride, rng):
    conv = Conv2d(c_in, c_out, k, stride=stride, padding=(k - 1) // 2, bias=False, rng=rng)
    kaiming_normal_fan_out(conv.weight, rng)
    return conv


class Bottleneck(Module):
    """conv1 1x1 → bn1 → relu → conv2 3x3/stride → bn2 → relu → conv3 1x1 → bn3, plus the shortcut
    (identity, or ``downsample`` = 1x1/stride conv + norm), then relu.

    x (N, c_in, H, W) → (N, width·4, ceil(H/stride), ceil(W/stride))."""

    def __init__(self, cfg: BackboneConfig, c_in: int, width: int, stride: int, rng: np.random.Generator):
        super().__init__()
        c_out = width * EXPANSION
        self.conv1 = _conv(c_in, width, 1, 1, rng)
        self.bn1 = _norm(cfg, width)
        self.relu1 = ReLU()
        self.conv2 = _conv(width, width, 3, stride, rng)
        self.bn2 = _norm(cfg, width)
        self.relu2 = ReLU()
        self.conv3 = _conv(width, c_out, 1, 1, rng)
        self.bn3 = _norm(cfg, c_out)
        self.relu3 = ReLU()
        # torchvision uses one ReLU module three times; three modules give the same names (a ReLU
        # has no state) and keep each cache on its own stack.
        self.has_downsample = stride != 1 or c_in != c_out
        if self.has_downsample:
            self.downsample = Sequential(_conv(c_in, c_out, 1, stride, rng), _norm(cfg, c_out))

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = self.downsample(x) if self.has_downsample else x
        return self.relu3(out + identity)

    def backward(self, dout, input_grad: bool = True):
        """d(x), or None with ``input_grad=False`` (the block's input comes from a frozen layer: only
        the parameter gradients are wanted, so conv1 and the downsample conv skip their dx)."""
        d = self.relu3.backward(dout)  # flows into both branches of the sum
        if self.has_downsample:
            dx_short = self.downsample[0].backward(self.downsample[1].backward(d), input_grad=input_grad)
        else:
            dx_short = d
        d = self.conv3.backward(self.bn3.backward(d))
        d = self.conv2.backward(self.bn2.backward(self.relu2.backward(d)))
        dx = self.conv1.backward(self.bn1.backward(self.relu1.backward(d)), input_grad=input_grad)
        return dx + dx_short if input_grad else None


class ResNet(Module):
    """torchvision's ResNet body with Bottleneck blocks, returning the outputs of ``return_layers``.

    ``ResNet(cfg, return_layers, rng, blocks=RESNET50_BLOCKS)``: ``cfg.stem_channels`` (64) and
    ``cfg.stage_channels`` (256, 512, 1024, 2048; each the output of a layer, width = channels / 4)
    give the sizes, ``cfg.norm`` the norm ("frozen_bn" for ResNet-50). Layers after the last one in
    ``return_layers`` are not built (as torchvision's IntermediateLayerGetter drops them), and there
    is no avgpool/fc: a detection backbone never uses them.

    ``forward(x (N, 3, H, W))`` → list of the feature maps named in ``return_layers`` (in
    layer1..layer4 order): C2 (N, 256, H/4, W/4), C3 (N, 512, H/8), C4 (N, 1024, H/16), C5 (N, 2048,
    H/32) — each size rounded up as explained in the module docstring.
    ``backward(douts)``: one gradient per returned map (None for none); returns d(x).

    Frozen parameters (``requires_grad=False``, see ``backbone.freeze_body``): when the stem and the
    first k layers are entirely frozen (torchvision's trainable_backbone_layers = 4 − k), nothing below
    layer k+1 needs a gradient. As torch's autograd, the forward then runs that prefix without storing
    caches (less memory), and the backward stops at layer k+1, whose first block computes only its
    weight gradients (no dx); ``backward`` then returns None instead of d(x).
    """

    def __init__(self, cfg: BackboneConfig, return_layers: list[str], rng: np.random.Generator,
                 blocks: tuple = RESNET50_BLOCKS):
        super().__init__()
        known = [f"layer{i}" for i in range(1, 5)]
        if not return_layers or any(n not in known for n in return_layers):
            raise ValueError(f"return_layers must be a non-empty list from {known}, got {return_layers}")
        if len(blocks) != 4 or any(int(b) < 1 for b in blocks):
            raise ValueError(f"blocks must be 4 positive block counts, got {blocks}")
        for c in cfg.stage_channels:
            if c % EXPANSION:
                raise ValueError(f"backbone.stage_channels must be multiples of {EXPANSION} (Bottleneck "
                                 f"expansion), got {cfg.stage_channels}")
        # 1. Stem: 7x7/2 conv, norm, ReLU, 3x3/2 max pool (stride 4 in all).
        self.conv1 = _conv(3, cfg.stem_channels, 7, 2, rng)
        self.bn1 = _norm(cfg, cfg.stem_channels)
        self.relu = ReLU()
        self.maxpool = MaxPool2d(3, stride=2, padding=1)
        # 2. Four layers of Bottlenecks; the first block of layer2..4 halves the resolution.
        last = max(int(n[-1]) for n in return_layers)
        c_in = cfg.stem_channels
        for i in range(last):
            c_out, stride = cfg.stage_channels[i], (1 if i == 0 else 2)
            layer = Sequential(*[Bottleneck(cfg, c_in if j == 0 else c_out, c_out // EXPANSION,
                                            stride if j == 0 else 1, rng) for j in range(int(blocks[i]))])
            setattr(self, f"layer{i + 1}", layer)
            c_in = c_out
        self.num_stages = last
        self.return_layers = [n for n in known if n in return_layers]

    def frozen_prefix(self) -> int:
        """k: the stem and layer1..layer_k have no trainable parameter (−1 when the stem trains)."""
        stages = [(self.conv1, self.bn1)] + [(getattr(self, f"layer{i}"),) for i in
                                             range(1, self.num_stages + 1)]
        k = -1
        for mods in stages:
            if any(p.requires_grad for m in mods for p in m.parameters()):
                break
            k += 1
        return k

    def forward(self, x):
        k = self.frozen_prefix()
        self._push(k)
        with contextlib.ExitStack() as frozen:
            if k >= 0:  # a frozen stem: its output needs no gradient, so it keeps no caches
                for m in (self.conv1, self.bn1, self.relu, self.maxpool):
                    frozen.enter_context(m.no_grad())
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for i in range(1, self.num_stages + 1):
            layer = getattr(self, f"layer{i}")
            with layer.no_grad() if i <= k else contextlib.nullcontext():
                x = layer(x)
            if f"layer{i}" in self.return_layers:
                outs.append(x)
        return outs

    def backward(self, douts, input_grad: bool = True):
        """douts: one gradient per returned map, in ``return_layers`` order (None = no gradient).
        Returns d(x), or None with ``input_grad=False`` (the stem then computes no gradient of the
        image, which nothing upstream needs in detection)."""
        if len(douts) != len(self.return_layers):
            raise ValueError(f"backward needs {len(self.return_layers)} gradients (one per returned map), "
                             f"got {len(douts)}")
        k = self._pop()
        grads = dict(zip(self.return_layers, douts))
        d = None
        for i in range(self.num_stages, max(k, 0), -1):
            g = grads.get(f"layer{i}")
            if g is not None:
                d = g if d is None else d + g
            if d is None:
                continue
            layer = getattr(self, f"layer{i}")
            if i > k + 1:
                d = layer.backward(d)
                continue
            # layer k+1 sits on the frozen prefix: its input needs no gradient
            blocks = list(layer)
            for j in range(len(blocks) - 1, -1, -1):
                d = blocks[j].backward(d, input_grad=j > 0)
            return None
        if k >= 0:  # everything trainable is above the frozen prefix (or nothing trains at all)
            return None
        if d is None:
            raise ValueError("backward got no gradient at all (every entry of douts is None)")
        return self.conv1.backward(self.bn1.backward(self.relu.backward(self.maxpool.backward(d))),
                                   input_grad=input_grad)


def resnet50(return_layers=("layer1", "layer2", "layer3", "layer4"), rng: np.random.Generator | None = None,
             cfg: BackboneConfig | None = None) -> ResNet:
    """torchvision's ResNet-50 body (FrozenBatchNorm, 64 stem channels, outputs 256/512/1024/2048)."""
    cfg = BackboneConfig() if cfg is None else cfg
    rng = np.random.default_rng(0) if rng is None else rng
    return ResNet(cfg, list(return_layers), rng, RESNET50_BLOCKS)
