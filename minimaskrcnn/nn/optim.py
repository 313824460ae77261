"""Training-loop arithmetic: SGD (momentum, weight decay, Nesterov), the learning-rate schedule, and
global-norm gradient clipping — each exactly as torch defines it, so a run can be compared step for
step with a PyTorch run.

The optimiser works on ``Parameter`` objects (anything with ``.data`` and ``.grad`` ndarrays) and
updates ``.data`` in place, so modules keep seeing their own arrays.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np


def _as_param_list(params, name: str = "params") -> list:
    params = list(params)
    for i, p in enumerate(params):
        if not (isinstance(getattr(p, "data", None), np.ndarray) and isinstance(getattr(p, "grad", None),
                                                                                   np.ndarray)):
            raise TypeError(f"{name}[{i}] must be a Parameter (with .data and .grad arrays), "
                            f"got {type(p).__name__}")
    return params


class SGD:
    """Stochastic gradient descent, step for step ``torch.optim.SGD``.

    Parameters
    ----------
    params : iterable of Parameters (e.g. ``model.parameters()``), fixed order — the order keys the
        optimiser state.
    lr : learning rate (a schedule may overwrite ``self.lr`` before each step).
    momentum, dampening : the velocity update ``v ← momentum·v + (1 − dampening)·g``; on the first
        step ``v ← g`` (no dampening), as torch.
    weight_decay : L2 penalty, added to the gradient: ``g ← g + weight_decay·θ``.
    nesterov : use ``g + momentum·v`` instead of ``v`` (needs momentum > 0 and dampening = 0).

    One step, per parameter θ with gradient g (a frozen parameter, ``requires_grad=False``, is
    skipped, as torch skips a parameter without a gradient: it never moves, not even by weight decay):
        1. g ← g + weight_decay·θ                         (if weight_decay ≠ 0)
        2. v ← g on the first step, else momentum·v + (1 − dampening)·g   (if momentum ≠ 0)
           g ← g + momentum·v if nesterov else v
        3. θ ← θ − lr·g
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov momentum requires momentum > 0 and dampening = 0")
        self.params = _as_param_list(params)
        if not self.params:
            raise ValueError("params must not be empty")
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError("params must not contain the same Parameter twice")
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.dampening = float(dampening)
        self.weight_decay = float(weight_decay)
        self.nesterov = bool(nesterov)
        # One velocity per parameter, created on its first step (torch's "momentum_buffer").
        self.momentum_buffers: list[np.ndarray | None] = [None] * len(self.params)

    def zero_grad(self) -> None:
        """Set every parameter's gradient to 0 (backward passes accumulate into it)."""
        for p in self.params:
            p.grad.fill(0)

    def step(self) -> None:
        """Apply one update to every parameter, in place."""
        for i, p in enumerate(self.params):
            if not getattr(p, "requires_grad", True):
                continue
            g = p.grad
            if self.weight_decay != 0:
                g = g + self.weight_decay * p.data
            if self.momentum != 0:
                v = self.momentum_buffers[i]
                if v is None:
                    v = np.array(g, dtype=p.data.dtype, copy=True)
                    self.momentum_buffers[i] = v
                else:
                    v *= self.momentum
                    v += (1 - self.dampening) * g
                g = g + self.momentum * v if self.nesterov else v
            p.data -= (self.lr * g).astype(p.data.dtype, copy=False)

    # -- resuming -----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """The optimiser state as a flat dict of arrays (saveable in a checkpoint under a prefix):
        hyper-parameters as 0-d float64 arrays and ``momentum_buffer.{i}`` for every parameter i that
        has a velocity. Copies, so later steps do not change a saved state."""
        state = {
            "lr": np.array(self.lr), "momentum": np.array(self.momentum),
            "dampening": np.array(self.dampening), "weight_decay": np.array(self.weight_decay),
            "nesterov": np.array(float(self.nesterov)),
        }
        for i, v in enumerate(self.momentum_buffers):
            if v is not None:
                state[f"momentum_buffer.{i}"] = v.copy()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a state from :meth:`state_dict`, so training resumes exactly. Raises ValueError
        naming every unexpected, missing or mis-shaped key; nothing is changed when it raises."""
        hyper = ("lr", "momentum", "dampening", "weight_decay", "nesterov")
        missing = [k for k in hyper if k not in state]
        unexpected, misshaped, buffers = [], [], {}
        for key, value in state.items():
            if key in hyper:
                continue
            prefix, _, idx = key.partition(".")
            if prefix != "momentum_buffer" or not idx.isdigit() or int(idx) >= len(self.params):
                unexpected.append(key)
                continue
            value = np.asarray(value)
            p = self.params[int(idx)]
            if value.shape != p.data.shape:
                misshaped.append(f"{key}: saved {value.shape}, parameter {p.data.shape}")
                continue
            buffers[int(idx)] = value
        if missing or unexpected or misshaped:
            problems = (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped", misshaped))
            raise ValueError("cannot load SGD state: "
                             + "; ".join(f"{what} {items}" for what, items in problems if items))
        self.lr = float(state["lr"])
        self.momentum = float(state["momentum"])
        self.dampening = float(state["dampening"])
        self.weight_decay = float(state["weight_decay"])
        self.nesterov = bool(float(state["nesterov"]))
        self.momentum_buffers = [
            np.array(buffers[i], dtype=p.data.dtype, copy=True) if i in buffers else None
            for i, p in enumerate(self.params)
        ]


class LRSchedule:
    """Learning rate per iteration: a linear warm-up, then a step or cosine decay.

    ``lr_at(step) = base_lr · warmup(step) · decay(step)`` where ``step`` counts optimiser steps from 0:

    - warm-up (torchvision's detection references, i.e. ``LinearLR(start_factor=warmup_factor,
      total_iters=warmup_iters)``): with α = step / warmup_iters,
      ``warmup = warmup_factor·(1 − α) + α`` for step < warmup_iters, else 1.
      Why: at the start the RPN and heads are random and their losses large; a full learning rate
      in the first few hundred iterations can diverge.
    - ``kind="step"`` (``MultiStepLR``): ``decay = gamma ** (number of milestones ≤ step)``.
    - ``kind="cosine"`` (``CosineAnnealingLR`` over ``total_steps``, floor ``min_lr``):
      ``lr = min_lr + (base_lr − min_lr)·(1 + cos(π·t/total_steps))/2`` with t = min(step, total_steps)
      — held at ``min_lr`` after the end rather than rising again as torch's periodic formula would.
      (The warm-up factor multiplies the whole cosine value.)
    """

    def __init__(self, base_lr: float, *, kind: str = "step", warmup_iters: int = 0,
                 warmup_factor: float = 1e-3, milestones: Sequence[int] = (), gamma: float = 0.1,
                 total_steps: int | None = None, min_lr: float = 0.0):
        if kind not in ("step", "cosine"):
            raise ValueError(f"kind must be 'step' or 'cosine', got {kind!r}")
        if not base_lr >= 0:
            raise ValueError(f"base_lr must be >= 0, got {base_lr}")
        if int(warmup_iters) != warmup_iters or warmup_iters < 0:
            raise ValueError(f"warmup_iters must be an int >= 0, got {warmup_iters!r}")
        if not 0 < warmup_factor <= 1:
            raise ValueError(f"warmup_factor must be in (0, 1], got {warmup_factor}")
        milestones = [int(m) for m in milestones]
        if milestones != sorted(milestones):
            raise ValueError(f"milestones must be increasing, got {milestones}")
        if kind == "cosine" and (total_steps is None or total_steps < 1):
            raise ValueError(f"kind='cosine' needs total_steps >= 1, got {total_steps!r}")
        self.base_lr = float(base_lr)
        self.kind = kind
        self.warmup_iters = int(warmup_iters)
        self.warmup_factor = float(warmup_factor)
        self.milestones = milestones
        self.gamma = float(gamma)
        self.total_steps = total_steps
        self.min_lr = float(min_lr)

    def warmup(self, step: int) -> float:
        """The warm-up multiplier at ``step`` (1 once warm-up is over)."""
        if step >= self.warmup_iters:
            return 1.0
        alpha = step / self.warmup_iters
        return self.warmup_factor * (1 - alpha) + alpha

    def lr_at(self, step: int) -> float:
        """Learning rate for optimiser step ``step`` (0-based)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if self.kind == "step":
            lr = self.base_lr * self.gamma ** sum(1 for m in self.milestones if m <= step)
        else:
            t = min(step, self.total_steps)
            cosine = (1 + math.cos(math.pi * t / self.total_steps)) / 2
            lr = self.min_lr + (self.base_lr - self.min_lr) * cosine
        return lr * self.warmup(step)

    __call__ = lr_at


def clip_grad_norm(params: Iterable, max_norm: float, norm_type: float = 2.0,
                   error_if_nonfinite: bool = False) -> float:
    """Scale all gradients together so their global norm is at most ``max_norm``
    (``torch.nn.utils.clip_grad_norm_``). Returns the global norm *before* clipping.

    The global norm is the norm of the vector of all gradient entries of all parameters
    (``norm_type`` 2 or ``inf``). Every gradient is multiplied by
    ``min(1, max_norm / (total_norm + 1e-6))`` — one factor for all, so the update direction is kept;
    the 1e-6 guards against division by 0 (torch's constant).
    """
    params = _as_param_list(params)
    norm_type = float(norm_type)
    if norm_type not in (2.0, math.inf):
        raise ValueError(f"norm_type must be 2 or inf, got {norm_type}")
    if not max_norm >= 0:
        raise ValueError(f"max_norm must be >= 0, got {max_norm}")
    if not params:
        return 0.0
    if norm_type == math.inf:
        total = max(float(np.max(np.abs(p.grad), initial=0.0)) for p in params)
    else:
        total = math.sqrt(sum(float(np.linalg.norm(p.grad.ravel())) ** 2 for p in params))
    if error_if_nonfinite and not math.isfinite(total):
        raise ValueError(f"the total gradient norm is {total}; cannot clip non-finite gradients")
    coef = min(max_norm / (total + 1e-6), 1.0)
    for p in params:
        p.grad *= p.grad.dtype.type(coef)
    return total
