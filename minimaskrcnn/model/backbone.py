"""The backbone: a ResNet-style body, then a feature pyramid (or one single feature map, "C4/C5").

Parameter names are torchvision's (``backbone.body.conv1.weight``, ``backbone.body.layer1.0.bn1.weight``,
``backbone.fpn.inner_blocks.0.0.weight`` ...), so weights move between the two by name.

The "small" body of the shapes recipe, for an input of H x W (padded to a multiple of 32)::

    stem   conv1 3x3/2 (3 -> stem) + bn1 + ReLU                      H/2
    layer1 conv1 3x3/2 + bn1 + ReLU, conv2 3x3/1 + bn2 + ReLU          H/4   ("0" for the FPN)
    layer2 ... same, channels stage_channels[1]                        H/8   ("1")
    layer3 ...                                                         H/16  ("2", or C4)
    layer4 ...                                                         H/32  ("3", or C5)

(``arch="resnet50"`` builds torchvision's ResNet-50 instead, ``minimaskrcnn.model.resnet.ResNet``:
7x7 stem + max pool, Bottleneck stages of 3, 4, 6, 3 blocks, FrozenBatchNorm — the body of
``maskrcnn_resnet50_fpn``.)

Each stage of the small body is one torchvision-style BasicBlock (names conv1/bn1/conv2/bn2 even though
the norm is a GroupNorm, exactly as torchvision's ResNet built with ``norm_layer=GroupNorm``). With
``residual=True`` the block adds ``downsample(x)`` (1x1 stride-2 conv + norm) before the last ReLU.
Conv output size: H' = 1 + (H + 2·1 − 3) // 2 = ceil(H / 2) for a stride-2 3x3 conv with padding 1.
"""

from __future__ import annotations

import numpy as np

from minimaskrcnn.config import BackboneConfig
from minimaskrcnn.model.fpn import FeaturePyramidNetwork
from minimaskrcnn.model.resnet import ResNet, _norm, kaiming_normal_fan_out
from minimaskrcnn.nn.layers import Conv2d, Module, ReLU, Sequential

__all__ = ["Backbone", "BasicBlock", "SmallResNet", "ResNet", "freeze_body", "kaiming_normal_fan_out"]


class BasicBlock(Module):
    """conv1 (3x3, stride) → bn1 → ReLU → conv2 (3x3) → bn2 [+ downsample(x)] → ReLU."""

    def __init__(self, cfg: BackboneConfig, c_in: int, c_out: int, stride: int, rng: np.random.Generator):
        super().__init__()
        self.conv1 = Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False, rng=rng)
        self.bn1 = _norm(cfg, c_out)
        self.relu1 = ReLU()
        self.conv2 = Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False, rng=rng)
        self.bn2 = _norm(cfg, c_out)
        self.relu2 = ReLU()
        self.residual = cfg.residual
        if cfg.residual:
            self.downsample = Sequential(Conv2d(c_in, c_out, 1, stride=stride, bias=False, rng=rng),
                                         _norm(cfg, c_out))
        for conv in (self.conv1, self.conv2) + ((self.downsample[0],) if cfg.residual else ()):
            kaiming_normal_fan_out(conv.weight, rng)

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        if self.residual:
            out = out + self.downsample(x)
        return self.relu2(out)

    def backward(self, dout):
        d = self.relu2.backward(dout)
        dx_skip = self.downsample.backward(d) if self.residual else None
        d = self.conv2.backward(self.bn2.backward(d))
        dx = self.conv1.backward(self.bn1.backward(self.relu1.backward(d)))
        return dx if dx_skip is None else dx + dx_skip


class SmallResNet(Module):
    """The from-scratch body: stem + four one-block stages. ``forward(x)`` returns the outputs of the
    stages in ``return_layers`` (a list of names among layer1..layer4), in that order."""

    def __init__(self, cfg: BackboneConfig, return_layers: list[str], rng: np.random.Generator):
        super().__init__()
        self.conv1 = Conv2d(3, cfg.stem_channels, 3, stride=2, padding=1, bias=False, rng=rng)
        kaiming_normal_fan_out(self.conv1.weight, rng)
        self.bn1 = _norm(cfg, cfg.stem_channels)
        self.relu = ReLU()
        last = max(int(n[-1]) for n in return_layers)  # stages after the last one used are not built
        c_in = cfg.stem_channels
        for i, c_out in enumerate(cfg.stage_channels[:last]):
            setattr(self, f"layer{i + 1}", Sequential(BasicBlock(cfg, c_in, c_out, 2, rng)))
            c_in = c_out
        self.num_stages = last
        self.return_layers = list(return_layers)

    def frozen_prefix(self) -> int:
        """Always −1: this body trains from scratch and its forward keeps every stage's caches, so its
        backward takes a gradient for every returned map (``ResNet.frozen_prefix`` is the counterpart
        that freezing changes)."""
        return -1

    def stem(self, x):
        return self.relu(self.bn1(self.conv1(x)))

    def forward(self, x):
        x = self.stem(x)
        outs = []
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
            if f"layer{i}" in self.return_layers:
                outs.append(x)
        return outs

    def backward(self, douts, input_grad: bool = True):
        """douts: one gradient per returned map (None = no gradient). Returns d(input image), or None
        with ``input_grad=False`` (the stem's convolution then skips its input gradient)."""
        grads = dict(zip(self.return_layers, douts))
        d = None
        for i in range(self.num_stages, 0, -1):
            g = grads.get(f"layer{i}")
            if g is not None:
                d = g if d is None else d + g
            if d is not None:
                d = getattr(self, f"layer{i}").backward(d)
        return self.conv1.backward(self.bn1.backward(self.relu.backward(d)), input_grad=input_grad)


# The body's parts that ``trainable_layers`` counts, from the top (torchvision's _resnet_fpn_extractor).
TRAINABLE_LAYERS_TOP_DOWN = ("layer4", "layer3", "layer2", "layer1", "conv1")


def freeze_body(body: Module, trainable_layers: int) -> None:
    """torchvision's ``trainable_backbone_layers`` rule: a body parameter trains iff its name starts
    with one of the first ``trainable_layers`` of (layer4, layer3, layer2, layer1, conv1), plus bn1
    when all 5 train; every other body parameter gets ``requires_grad=False``. With FrozenBatchNorm the
    norms hold buffers only, so only convolutions are concerned. Example, trainable_layers=3:
    ``layer2.0.conv1.weight`` trains, ``layer1.2.conv3.weight`` and ``conv1.weight`` are frozen."""
    if isinstance(trainable_layers, bool) or trainable_layers not in range(6):
        raise ValueError(f"trainable_layers must be an int in 0..5, got {trainable_layers!r}")
    train = list(TRAINABLE_LAYERS_TOP_DOWN[:trainable_layers]) + (["bn1"] if trainable_layers == 5 else [])
    for name, p in body.named_parameters():
        p.requires_grad_(any(name.startswith(t) for t in train))


class Backbone(Module):
    """``body`` (+ ``fpn``). ``forward(x (N,3,H,W)) -> list of feature maps``:

    - FPN: [P2, P3, P4, P5] (strides 4..32), plus P6 (stride 64) when ``extra_max_pool``;
      every map has ``fpn_channels`` channels. The RoI heads pool from P2..P5 only.
    - single level: [C4] (stride 16, layer3) or [C5] (stride 32, layer4).
    ``out_channels`` is the channel count of every returned map; ``pooled_levels`` how many of the
    maps (from the first) the RoI heads pool from.
    """

    def __init__(self, cfg: BackboneConfig, rng: np.random.Generator):
        super().__init__()
        if cfg.fpn:
            names = ["layer1", "layer2", "layer3", "layer4"]
        else:
            names = ["layer3" if cfg.single_level_stride == 16 else "layer4"]
        self.body = SmallResNet(cfg, names, rng) if cfg.arch == "small" else ResNet(cfg, names, rng)
        freeze_body(self.body, cfg.trainable_layers)
        self.use_fpn = cfg.fpn
        if cfg.fpn:
            self.fpn = FeaturePyramidNetwork(list(cfg.stage_channels), cfg.fpn_channels,
                                             cfg.extra_max_pool, rng)
            self.out_channels = cfg.fpn_channels
            self.pooled_levels = 4
        else:
            self.out_channels = cfg.stage_channels[int(names[0][-1]) - 1]
            self.pooled_levels = 1

    def forward(self, x):
        feats = self.body(x)
        return self.fpn(feats) if self.use_fpn else feats

    def backward(self, douts, input_grad: bool = True):
        """Gradients of the returned maps → d(input image), or None with ``input_grad=False``."""
        if self.use_fpn:
            # A returned map of a frozen stage (layer_i with i <= the body's frozen prefix k) takes no
            # gradient back: the FPN skips its lateral conv's dx (about 1/8 of a fine-tuning step's
            # FLOPs at 800 px, for C2 with trainable_backbone_layers=3).
            k = self.body.frozen_prefix()
            needed = [int(name[-1]) > k for name in self.body.return_layers]
            douts = self.fpn.backward(douts, input_grads=needed)
        return self.body.backward(douts, input_grad=input_grad)
