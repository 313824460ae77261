"""Modules: parameters with gradients, composable layers, torch-style names and state dicts.

A ``Module`` wraps a functional forward/backward pair (``minimaskrcnn.nn.functional``):

    y = conv(x)            # forward: computes y, pushes its cache on conv's cache stack
    dx = conv.backward(dy) # backward: pops the cache, ADDS dL/dw into conv.weight.grad, returns dL/dx

Why a stack. One module may be applied several times in one forward pass — the RPN head runs on
every FPN level with the same weights. Each application pushes its own cache, and each backward
pops the latest one, so backward calls must come in the reverse order of the forward calls (as
backpropagation does anyway), and the weight gradient is the sum over all applications (hence +=).
``model.zero_grad()`` resets the sums before the next iteration; ``clear_cache()`` drops unused
caches (e.g. after an inference forward) and ``with model.no_grad(): ...`` never stores them.

Names follow PyTorch: children are registered by attribute assignment, and ``named_parameters()`` /
``state_dict()`` produce the same dotted names as the equivalent torch module
(``layer1.0.conv1.weight``, ``0.bias``), so weights move between the two by name.

Default initialisation is torch's: ``kaiming_uniform_(a=√5)`` for weights, i.e. U(−1/√fan_in,
+1/√fan_in), and the same bound for biases — drawn from an explicit ``np.random.Generator``
(``rng=None`` means ``np.random.default_rng(0)``, so a model is reproducible by default).
Parameters are float32; ``model.astype(np.float64)`` for gradient checks.
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict, namedtuple

import numpy as np

from minimaskrcnn._checks import float_array, pair
from minimaskrcnn.nn import functional as F

LoadResult = namedtuple("LoadResult", ["missing_keys", "unexpected_keys"])


class Parameter:
    """A trainable array ``data`` with its gradient ``grad`` (same shape and dtype, zeros at first).

    Backward passes *add* into ``grad``; ``zero_grad()`` (or the optimiser's) resets it.

    ``requires_grad`` (True by default) is torch's flag: a frozen parameter (``requires_grad=False``,
    e.g. the stem and layer1 of a fine-tuned ResNet-50) gets no gradient — layers skip its dW work and
    leave ``grad`` at zero — and the optimisers skip it, so it never moves (not even by weight decay).
    Layers still pass the gradient of their *input* through a frozen weight when something below
    needs it."""

    __slots__ = ("data", "grad", "requires_grad")

    def __init__(self, data, requires_grad: bool = True):
        data = float_array(data, "data")
        self.data = data
        self.grad = np.zeros_like(data)
        self.requires_grad = bool(requires_grad)

    def requires_grad_(self, requires_grad: bool = True) -> Parameter:
        """Set ``requires_grad`` in place (as torch's ``Tensor.requires_grad_``); freezing resets
        ``grad`` to zero. Returns self."""
        self.requires_grad = bool(requires_grad)
        if not self.requires_grad:
            self.grad.fill(0)
        return self

    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def zero_grad(self) -> None:
        self.grad.fill(0)

    def __repr__(self) -> str:
        frozen = "" if self.requires_grad else ", requires_grad=False"
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype}{frozen})"


class Module:
    """Base class: registration of parameters / buffers / children, names, state, and the cache stack.

    Subclasses set attributes in ``__init__`` (after ``super().__init__()``) and implement
    ``forward(*inputs)`` and ``backward(dout)``; a leaf module calls ``self._push(cache)`` in forward
    and ``self._pop()`` in backward, a composite module calls its children's backward in reverse.
    """

    # State-dict keys of this module that loading silently skips (see FrozenBatchNorm2d).
    _ignored_state_keys: tuple[str, ...] = ()

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_caches", [])
        object.__setattr__(self, "_record", True)
        self.training = True

    # -- registration ----------------------------------------------------------------------------------

    def __setattr__(self, name: str, value) -> None:
        d = self.__dict__
        if "_parameters" not in d:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before setting attributes")
        params, buffers, modules = d["_parameters"], d["_buffers"], d["_modules"]
        if isinstance(value, Parameter):
            buffers.pop(name, None)
            modules.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            params.pop(name, None)
            buffers.pop(name, None)
            modules[name] = value
        elif name in params or name in modules:
            if value is not None:
                kind = "a Parameter" if name in params else "a Module"
                raise TypeError(f"cannot assign {type(value).__name__} to {name!r}: expected {kind} or None")
            params.pop(name, None)
            modules.pop(name, None)
        elif name in buffers:
            if value is None:
                del buffers[name]
            elif isinstance(value, np.ndarray):
                buffers[name] = value
            else:
                raise TypeError(f"cannot assign {type(value).__name__} to buffer {name!r}: expected ndarray")
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, array: np.ndarray) -> None:
        """Add a non-trainable array that belongs to the state (saved, loaded, cast by ``astype``)."""
        if not isinstance(array, np.ndarray):
            raise TypeError(f"buffer {name!r} must be an ndarray, got {type(array).__name__}")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self._buffers[name] = array
        object.__setattr__(self, name, array)

    # -- traversal (torch order: a module's own entries, then its children's, depth first) ------------

    def named_modules(self, prefix: str = ""):
        """Yield ``(dotted_name, module)`` for this module (name ``prefix``) and all descendants;
        a module reachable twice is yielded once."""
        seen = set()

        def walk(mod, pre):
            if id(mod) in seen:
                return
            seen.add(id(mod))
            yield pre, mod
            for name, child in mod._modules.items():
                yield from walk(child, f"{pre}.{name}" if pre else name)

        yield from walk(self, prefix)

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_children(self):
        return iter(self._modules.items())

    def children(self):
        return iter(self._modules.values())

    def named_parameters(self, prefix: str = ""):
        """Yield ``(dotted_name, Parameter)``, e.g. ``("0.weight", ...)``; shared parameters once."""
        seen = set()
        for mod_name, mod in self.named_modules(prefix):
            for name, p in mod._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = ""):
        for mod_name, mod in self.named_modules(prefix):
            for name, b in mod._buffers.items():
                yield (f"{mod_name}.{name}" if mod_name else name), b

    def _state_entries(self, prefix: str = ""):
        """Yield ``(key, module, attr_name, array)`` in torch's state_dict order: own parameters, own
        buffers, then each child recursively (no de-duplication, as torch)."""
        for name, p in self._parameters.items():
            yield prefix + name, self, name, p.data
        for name, b in self._buffers.items():
            yield prefix + name, self, name, b
        for name, child in self._modules.items():
            yield from child._state_entries(f"{prefix}{name}.")

    # -- state -----------------------------------------------------------------------------------------

    def state_dict(self) -> OrderedDict:
        """Parameters and buffers by dotted name, as copies (a snapshot, safe to save later)."""
        return OrderedDict((key, arr.copy()) for key, _, _, arr in self._state_entries())

    def load_state_dict(self, state_dict: dict, strict: bool = True) -> LoadResult:
        """Copy arrays into the parameters and buffers, in place and cast to their dtype.

        Raises ValueError naming every mis-shaped key, and (when ``strict``) every missing and
        unexpected key; in that case nothing is modified. Returns ``(missing_keys, unexpected_keys)``.
        """
        if not hasattr(state_dict, "items"):
            raise TypeError(f"state_dict must be a mapping of name -> array, got {type(state_dict).__name__}")
        expected = {key: arr for key, _, _, arr in self._state_entries()}
        ignored = {f"{name}.{k}" if name else k
                   for name, mod in self.named_modules() for k in mod._ignored_state_keys}
        missing = [k for k in expected if k not in state_dict]
        unexpected = [k for k in state_dict if k not in expected and k not in ignored]
        misshaped, bad_type, values = [], [], {}
        for key, target in expected.items():
            if key not in state_dict:
                continue
            value = np.asarray(state_dict[key])
            if value.dtype.kind not in "fiub":
                bad_type.append(f"{key} (dtype {value.dtype})")
            elif value.shape != target.shape:
                misshaped.append(f"{key}: got {value.shape}, expected {target.shape}")
            else:
                values[key] = value
        problems = [("mis-shaped", misshaped), ("non-numeric", bad_type)]
        if strict:
            problems += [("missing keys", missing), ("unexpected keys", unexpected)]
        problems = [(what, items) for what, items in problems if items]
        if problems:
            raise ValueError(f"cannot load state dict into {type(self).__name__}: "
                             + "; ".join(f"{what}: {items}" for what, items in problems))
        for key, value in values.items():
            expected[key][...] = value
        return LoadResult(missing, unexpected)

    # -- modes, gradients, dtype, caches ---------------------------------------------------------------

    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            m.training = bool(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad.fill(0)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Freeze (False) or unfreeze (True) every parameter of this module and its descendants, as
        torch's ``Module.requires_grad_``. Returns self."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def trainable_parameters(self) -> list:
        """The parameters with ``requires_grad`` (what an optimiser should get), in ``parameters()``
        order — torch's ``[p for p in model.parameters() if p.requires_grad]``."""
        return [p for p in self.parameters() if p.requires_grad]

    def astype(self, dtype) -> Module:
        """Cast every parameter (gradients reset to 0) and floating buffer to ``dtype`` (float32 or
        float64), in place; drops stored caches. Returns self."""
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        for m in self.modules():
            for p in m._parameters.values():
                p.data = p.data.astype(dtype)
                p.grad = np.zeros_like(p.data)
            for name, b in list(m._buffers.items()):
                if np.issubdtype(b.dtype, np.floating):
                    setattr(m, name, b.astype(dtype))
            m._caches.clear()
        return self

    def clear_cache(self) -> None:
        """Forget every stored forward cache (of this module and its descendants)."""
        for m in self.modules():
            m._caches.clear()

    @contextlib.contextmanager
    def no_grad(self):
        """Within this block forward passes store no caches (inference); backward is then impossible."""
        mods = list(self.modules())
        before = [m._record for m in mods]
        for m in mods:
            object.__setattr__(m, "_record", False)
        try:
            yield self
        finally:
            for m, r in zip(mods, before):
                object.__setattr__(m, "_record", r)

    def _push(self, cache) -> None:
        if self._record:
            self._caches.append(cache)

    def _pop(self):
        if not self._caches:
            raise RuntimeError(f"{type(self).__name__}.backward called with no stored forward cache: each "
                               "backward needs one earlier forward (outside no_grad), in reverse order")
        return self._caches.pop()

    # -- forward / backward ----------------------------------------------------------------------------

    def forward(self, *inputs):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, dout):
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def __call__(self, *inputs, **kwargs):
        return self.forward(*inputs, **kwargs)

    # -- printing --------------------------------------------------------------------------------------

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not self._modules:
            return head + ")"
        lines = [head]
        for name, child in self._modules.items():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return "\n".join(lines) + "\n)"


# ------------------------------------------------------------------------------------------------------
# initialisation
# ------------------------------------------------------------------------------------------------------


def _generator(rng) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng(0)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    return rng


def _uniform(rng: np.random.Generator, fan_in: int, shape: tuple) -> np.ndarray:
    """torch's default init: U(−1/√fan_in, 1/√fan_in), float32.

    For weights this is ``kaiming_uniform_(a=√5)``: gain = √(2/(1 + a²)) = √(1/3) and
    bound = gain·√(3/fan_in) = 1/√fan_in. For biases torch uses the same bound directly."""
    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def _positive_int(v, name: str) -> int:
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return int(v)


# ------------------------------------------------------------------------------------------------------
# layers with parameters
# ------------------------------------------------------------------------------------------------------


class Conv2d(Module):
    """2-D convolution (cross-correlation), as ``torch.nn.Conv2d`` with groups = 1.

    weight (C_out, C_in, kH, kW), bias (C_out,) or None; fan_in = C_in·kH·kW.
    x (N, C_in, H, W) → (N, C_out, H', W'),  H' = 1 + (H + 2·pad − dilation·(kH − 1) − 1) // stride.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 bias=True, *, rng=None):
        super().__init__()
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.out_channels = _positive_int(out_channels, "out_channels")
        self.kernel_size = pair(kernel_size, "kernel_size", minimum=1)
        self.stride = pair(stride, "stride", minimum=1)
        self.padding = pair(padding, "padding", minimum=0)
        self.dilation = pair(dilation, "dilation", minimum=1)
        rng = _generator(rng)
        kh, kw = self.kernel_size
        fan_in = self.in_channels * kh * kw
        self.weight = Parameter(_uniform(rng, fan_in, (self.out_channels, self.in_channels, kh, kw)))
        self.bias = Parameter(_uniform(rng, fan_in, (self.out_channels,))) if bias else None

    def forward(self, x):
        out, cache = F.conv2d_forward(x, self.weight.data, None if self.bias is None else self.bias.data,
                                      self.stride, self.padding, self.dilation,
                                      keep_transform=self._record and self.weight.requires_grad)
        self._push(cache)
        return out

    def backward(self, dout, input_grad: bool = True):
        """Returns dL/dx, or None when ``input_grad=False`` (the caller needs no gradient of the input:
        the first trainable layer above a frozen prefix); a frozen weight's dW is not computed."""
        need_dw = self.weight.requires_grad
        dx, dw, db = F.conv2d_backward(dout, self._pop(), need_dx=input_grad, need_dw=need_dw)
        if need_dw:
            self.weight.grad += dw
        if self.bias is not None and self.bias.requires_grad:
            self.bias.grad += db
        return dx

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        return s + (", bias=False" if self.bias is None else "")


class ConvTranspose2d(Module):
    """Transposed convolution, as ``torch.nn.ConvTranspose2d`` (groups = 1, no output padding):
    the mask head's 2×2 stride-2 upsampling.

    weight (C_in, C_out, kH, kW) — torch's layout; so, as torch computes it from weight dim 1,
    fan_in = C_out·kH·kW. x (N, C_in, H, W) → (N, C_out, (H − 1)·stride − 2·pad + kH, ...).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, *, rng=None):
        super().__init__()
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.out_channels = _positive_int(out_channels, "out_channels")
        self.kernel_size = pair(kernel_size, "kernel_size", minimum=1)
        self.stride = pair(stride, "stride", minimum=1)
        self.padding = pair(padding, "padding", minimum=0)
        rng = _generator(rng)
        kh, kw = self.kernel_size
        fan_in = self.out_channels * kh * kw
        self.weight = Parameter(_uniform(rng, fan_in, (self.in_channels, self.out_channels, kh, kw)))
        self.bias = Parameter(_uniform(rng, fan_in, (self.out_channels,))) if bias else None

    def forward(self, x):
        out, cache = F.conv_transpose2d_forward(
            x, self.weight.data, None if self.bias is None else self.bias.data, self.stride, self.padding)
        self._push(cache)
        return out

    def backward(self, dout):
        dx, dw, db = F.conv_transpose2d_backward(dout, self._pop())
        if self.weight.requires_grad:
            self.weight.grad += dw
        if self.bias is not None and self.bias.requires_grad:
            self.bias.grad += db
        return dx

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        return s + (", bias=False" if self.bias is None else "")


class Linear(Module):
    """Fully connected layer, as ``torch.nn.Linear``: x (N, in) → x·Wᵀ + b (N, out);
    weight (out, in), bias (out,); fan_in = in."""

    def __init__(self, in_features, out_features, bias=True, *, rng=None):
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features")
        self.out_features = _positive_int(out_features, "out_features")
        rng = _generator(rng)
        self.weight = Parameter(_uniform(rng, self.in_features, (self.out_features, self.in_features)))
        self.bias = Parameter(_uniform(rng, self.in_features, (self.out_features,))) if bias else None

    def forward(self, x):
        out, cache = F.linear_forward(x, self.weight.data, None if self.bias is None else self.bias.data)
        self._push(cache)
        return out

    def backward(self, dout):
        need_dw = self.weight.requires_grad
        dx, dw, db = F.linear_backward(dout, self._pop(), need_dw=need_dw)
        if need_dw:
            self.weight.grad += dw
        if self.bias is not None and self.bias.requires_grad:
            self.bias.grad += db
        return dx

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class GroupNorm(Module):
    """Group normalisation, as ``torch.nn.GroupNorm`` (affine): per sample, the channels are split
    into ``num_groups`` groups normalised by their own mean and variance, then scaled by ``weight``
    (γ, ones) and shifted by ``bias`` (β, zeros), both (C,). x (N, C, H, W) → same shape.
    Why here: batch statistics are useless at the 1–2 images per batch of detection training."""

    def __init__(self, num_groups, num_channels, eps=1e-5):
        super().__init__()
        self.num_groups = _positive_int(num_groups, "num_groups")
        self.num_channels = _positive_int(num_channels, "num_channels")
        if self.num_channels % self.num_groups:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.eps = float(eps)
        self.weight = Parameter(np.ones(self.num_channels, dtype=np.float32))
        self.bias = Parameter(np.zeros(self.num_channels, dtype=np.float32))

    def forward(self, x):
        out, cache = F.group_norm_forward(x, self.num_groups, self.weight.data, self.bias.data, self.eps)
        self._push(cache)
        return out

    def backward(self, dout):
        dx, dgamma, dbeta = F.group_norm_backward(dout, self._pop())
        if self.weight.requires_grad:
            self.weight.grad += dgamma
        if self.bias.requires_grad:
            self.bias.grad += dbeta
        return dx

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}"


class FrozenBatchNorm2d(Module):
    """Batch normalisation with frozen statistics and affine parameters, as torchvision's
    ``FrozenBatchNorm2d``: y = (x − running_mean) / √(running_var + eps) · weight + bias per channel.

    All four (C,) arrays are *buffers* (state, not trained), with torchvision's state-dict keys
    ``weight``, ``bias``, ``running_mean``, ``running_var``; a ``num_batches_tracked`` entry (from a
    trained ``BatchNorm2d``) is skipped on loading, as torchvision does. Backward returns dx only.
    """

    _ignored_state_keys = ("num_batches_tracked",)

    def __init__(self, num_features, eps=1e-5):
        super().__init__()
        self.num_features = _positive_int(num_features, "num_features")
        self.eps = float(eps)
        c = self.num_features
        self.register_buffer("weight", np.ones(c, dtype=np.float32))
        self.register_buffer("bias", np.zeros(c, dtype=np.float32))
        self.register_buffer("running_mean", np.zeros(c, dtype=np.float32))
        self.register_buffer("running_var", np.ones(c, dtype=np.float32))

    def forward(self, x):
        out, cache = F.frozen_batch_norm_forward(x, self.weight, self.bias, self.running_mean,
                                                 self.running_var, self.eps)
        self._push(cache)
        return out

    def backward(self, dout):
        return F.frozen_batch_norm_backward(dout, self._pop())

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}"


# ------------------------------------------------------------------------------------------------------
# layers without parameters
# ------------------------------------------------------------------------------------------------------


class ReLU(Module):
    """max(x, 0) elementwise; the gradient passes where x > 0."""

    def forward(self, x):
        out, cache = F.relu_forward(x)
        self._push(cache)
        return out

    def backward(self, dout):
        return F.relu_backward(dout, self._pop())


class MaxPool2d(Module):
    """Max pooling, as ``torch.nn.MaxPool2d`` (floor mode; padding counts as −inf; the gradient goes
    to the first maximum of each window). stride defaults to kernel_size.
    x (N, C, H, W) → (N, C, H', W'), H' = 1 + (H + 2·pad − kH) // stride."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size", minimum=1)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", minimum=1)
        self.padding = pair(padding, "padding", minimum=0)

    def forward(self, x):
        out, cache = F.max_pool2d_forward(x, self.kernel_size, self.stride, self.padding)
        self._push(cache)
        return out

    def backward(self, dout):
        return F.max_pool2d_backward(dout, self._pop())

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class Flatten(Module):
    """(N, ...) → (N, prod(...)), as ``torch.nn.Flatten()`` (the box head flattens RoI features)."""

    def forward(self, x):
        out, cache = F.flatten_forward(x)
        self._push(cache)
        return out

    def backward(self, dout):
        return F.flatten_backward(dout, self._pop())


# ------------------------------------------------------------------------------------------------------
# containers
# ------------------------------------------------------------------------------------------------------


class Sequential(Module):
    """Children applied in order; backward runs them in reverse. Children are named "0", "1", ...,
    or by the keys of an ``OrderedDict`` passed as the only argument (as torch)."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            items = list(modules[0].items())
        else:
            items = [(str(i), m) for i, m in enumerate(modules)]
        for name, m in items:
            if not isinstance(m, Module):
                raise TypeError(f"Sequential child {name!r} must be a Module, got {type(m).__name__}")
            setattr(self, name, m)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def backward(self, dout):
        for m in reversed(list(self._modules.values())):
            dout = m.backward(dout)
        return dout

    def __getitem__(self, i):
        mods = list(self._modules.values())
        if isinstance(i, slice):
            return Sequential(OrderedDict(list(self._modules.items())[i]))
        return mods[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(list(self._modules.values()))

    def append(self, module: Module) -> Sequential:
        setattr(self, str(len(self._modules)), module)
        return self


class ModuleList(Module):
    """A list of children named "0", "1", ... (for the per-level FPN convolutions, say); it has no
    forward of its own — the owner decides how the children are applied."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> ModuleList:
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList items must be Modules, got {type(module).__name__}")
        setattr(self, str(len(self._modules)), module)
        return self

    def extend(self, modules) -> ModuleList:
        for m in modules:
            self.append(m)
        return self

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(list(self._modules.values()))
