"""Counting the floating-point work of the layer kit's matrix-product layers.

The convolutions and fully connected layers are nearly all of a Mask R-CNN's arithmetic. Each is a
matrix product, and each multiply-add is counted as 2 floating-point operations (FLOPs), as in GEMM
rate figures (an (M×K)·(K×N) product is 2·M·K·N FLOPs). Multiply-adds (MACs) per call:

    conv2d            forward  N · C_out · H' · W' · C_in · kH · kW     (one per filter tap per output)
                      backward the same for dx (Wᵀ · dout) and again for dW (dout · colsᵀ)
    conv_transpose2d  forward  N · C_in · H · W · C_out · kH · kW       (every input pixel stamps its kernel)
                      backward the same for dx and for dW
    linear            forward  N · in · out;  backward the same for dx and for dW

Biases, norms, activations, pooling and RoIAlign are not counted (a few percent of the work at most);
the count is of the layers that a BLAS rate is a fair limit for.

``count_flops()`` is a context manager: while it is open, every conv2d / conv_transpose2d / linear
call that goes through ``minimaskrcnn.nn.functional`` (all of the layer kit's modules do) is recorded
with its shapes, so the count is of the shapes the network really ran — proposals, sampled RoIs and
positives included — not of a formula that could drift from the model.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from minimaskrcnn.nn import functional as F

_PASSES = ("forward", "dx", "dw")


@dataclass
class LayerCall:
    """One recorded call. ``kind``: "conv2d" | "conv_transpose2d" | "linear"; ``stage``: "forward"
    or "backward"; ``macs``: multiply-adds of one product (the forward, or each of dx and dW);
    ``weight_id``: ``id`` of the weight array, to tell which parameter it was; ``dx`` / ``dw``
    (backward): whether the call computed that product (the layer kit skips it for a frozen weight
    or an input that needs no gradient)."""

    kind: str
    stage: str
    macs: int
    weight_id: int
    dx: bool = True
    dw: bool = True


@dataclass
class FlopCount:
    """The calls recorded inside one ``count_flops()`` block."""

    calls: list = field(default_factory=list)

    def flops(self, no_dw=frozenset(), no_dx=frozenset()) -> dict:
        """FLOPs (2 · MACs) per pass: {"forward", "dx", "dw", "total"}.

        ``no_dw`` / ``no_dx``: ids of weight arrays whose dW / dx product a framework would skip (a
        frozen layer needs no dW; a layer whose input needs no gradient needs no dx); their backward
        work is left out of the count even though the call computed it."""
        out = dict.fromkeys(_PASSES, 0)
        for c in self.calls:
            if c.stage == "forward":
                out["forward"] += 2 * c.macs
            else:
                if c.dx and c.weight_id not in no_dx:
                    out["dx"] += 2 * c.macs
                if c.dw and c.weight_id not in no_dw:
                    out["dw"] += 2 * c.macs
        out["total"] = out["forward"] + out["dx"] + out["dw"]
        return out


def conv2d_macs(x_shape, w_shape, out_hw) -> int:
    """Multiply-adds of a conv2d forward: N · C_out · H' · W' · C_in · kH · kW."""
    n, c_in = x_shape[:2]
    c_out, _, kh, kw = w_shape
    return n * c_out * out_hw[0] * out_hw[1] * c_in * kh * kw


def conv_transpose2d_macs(x_shape, w_shape) -> int:
    """Multiply-adds of a conv_transpose2d forward: N · C_in · H · W · C_out · kH · kW."""
    n, c_in, h, w = x_shape
    _, c_out, kh, kw = w_shape
    return n * c_in * h * w * c_out * kh * kw


def linear_macs(x_shape, w_shape) -> int:
    """Multiply-adds of a linear forward: N · in · out."""
    return x_shape[0] * w_shape[1] * w_shape[0]


def _done(kwargs) -> dict:
    """Which backward products a call computed, from its ``need_dx`` / ``need_dw`` flags."""
    return {"dx": kwargs.get("need_dx", True), "dw": kwargs.get("need_dw", True)}


@contextlib.contextmanager
def count_flops():
    """Record every conv2d / conv_transpose2d / linear call of the layer kit inside the block.

    Yields a ``FlopCount``. Not thread-safe (it swaps the functions of
    ``minimaskrcnn.nn.functional`` for counting wrappers while open, and restores them on exit)."""
    count = FlopCount()
    originals = {name: getattr(F, name) for name in (
        "conv2d_forward", "conv2d_backward", "conv_transpose2d_forward", "conv_transpose2d_backward",
        "linear_forward", "linear_backward")}

    def conv2d_forward(x, w, *args, **kwargs):
        out, cache = originals["conv2d_forward"](x, w, *args, **kwargs)
        count.calls.append(LayerCall("conv2d", "forward", conv2d_macs(x.shape, w.shape, out.shape[2:]),
                                     id(w)))
        return out, cache

    def conv2d_backward(dout, cache, **kwargs):
        x, w = cache[0], cache[1]
        grads = originals["conv2d_backward"](dout, cache, **kwargs)
        count.calls.append(LayerCall("conv2d", "backward", conv2d_macs(x.shape, w.shape, dout.shape[2:]),
                                     id(w), **_done(kwargs)))
        return grads

    def conv_transpose2d_forward(x, w, *args, **kwargs):
        out, cache = originals["conv_transpose2d_forward"](x, w, *args, **kwargs)
        count.calls.append(LayerCall("conv_transpose2d", "forward", conv_transpose2d_macs(x.shape, w.shape),
                                     id(w)))
        return out, cache

    def conv_transpose2d_backward(dout, cache, **kwargs):
        x, w = cache[0], cache[1]
        grads = originals["conv_transpose2d_backward"](dout, cache, **kwargs)
        count.calls.append(LayerCall("conv_transpose2d", "backward", conv_transpose2d_macs(x.shape, w.shape),
                                     id(w), **_done(kwargs)))
        return grads

    def linear_forward(x, w, b):
        out, cache = originals["linear_forward"](x, w, b)
        count.calls.append(LayerCall("linear", "forward", linear_macs(x.shape, w.shape), id(w)))
        return out, cache

    def linear_backward(dout, cache, **kwargs):
        x, w = cache[0], cache[1]
        grads = originals["linear_backward"](dout, cache, **kwargs)
        count.calls.append(LayerCall("linear", "backward", linear_macs(x.shape, w.shape), id(w),
                                     **_done(kwargs)))
        return grads

    wrappers = {"conv2d_forward": conv2d_forward, "conv2d_backward": conv2d_backward,
                "conv_transpose2d_forward": conv_transpose2d_forward,
                "conv_transpose2d_backward": conv_transpose2d_backward,
                "linear_forward": linear_forward, "linear_backward": linear_backward}
    for name, fn in wrappers.items():
        setattr(F, name, fn)
    try:
        yield count
    finally:
        for name, fn in originals.items():
            setattr(F, name, fn)
