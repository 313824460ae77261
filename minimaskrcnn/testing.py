"""Checkers for your own implementation of the core ops of Mask R-CNN.

Write RoIAlign (or a convolution's backward, or NMS ...) yourself, then hand your function to the
matching checker::

    from minimaskrcnn.testing import check_roi_align
    assert check_roi_align(my_roi_align)

Each checker runs your function on small golden cases (each chosen so that one typical bug breaks
it), on random cases, and, where the op has one, on its backward pass. It prints one line per case
(the case and the worst difference from the expected result), then, when something fails, ONE line
of feedback: ``Likely bug: ...`` when your output is exactly what a known classic bug of this op
gives (the checker computes each bug's output and compares), otherwise the hint of the simplest
failing case. It returns True only if every case passes; it never raises because of your function.

Options every checker takes (keyword only):

- ``part``: ``"golden"``, ``"random"``, ``"backward"`` (ops with a backward) or ``"all"`` (default):
  which cases to run, so that each can be graded on its own;
- ``seed``: the random generator's seed of the random cases (each checker has its own default); with
  a seed, the golden cases also get fresh input values (same geometry);
- ``graded``: ``False`` (default, the op author's mode) accepts any correct implementation, a wrapper
  of ``torchvision.ops`` included. ``True`` (the assignments' graded cells) runs your function with
  this package, torch and torchvision out of reach: a call into any of them (``minimaskrcnn.*`` in
  every tier and through every name, including references captured before the check, a reloaded
  module, a Numba kernel or a torch tensor op) fails the case with a message naming what was called;
- ``verbose``: print the report (default True).

The expected values come from this package's own implementations (computed before your function
runs), which the test suite holds equal to ``torchvision.ops`` / torch autograd, so the checkers need
neither torch nor torchvision.

All inputs are float64 numpy arrays. Passing means: the same shape, and every element within
``1e-8 · max(1, max|expected|)`` of the expected value (NMS: exactly the same indices in the same
order). The functions you write take these arguments, called positionally:

==================  ================================================================================
checker             your function(s)
==================  ================================================================================
check_conv2d        ``forward(x, w, b, stride, padding, dilation) -> (out, cache)`` with x (N,C,H,W),
                    w (C_out,C,kH,kW), b (C_out,) or None, stride/padding/dilation (h, w) int pairs;
                    ``backward(dout, cache) -> (dx, dw, db)`` (db None when b was None).
check_im2col        ``im2col(x, kH, kW, stride, padding, dilation) -> cols (C·kH·kW, N·H'·W')``, rows
                    ordered (c, i, j), columns (n, y, x).
check_col2im        ``col2im(dcols, x_shape, kH, kW, stride, padding, dilation) -> dx (N,C,H,W)``, the
                    adjoint of im2col (entries added back, padding dropped).
check_roi_align     ``fn(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)`` with input
                    (N,C,H,W), boxes (K,5) rows (batch_index, x1, y1, x2, y2), output_size (PH, PW)
                    -> (K,C,PH,PW); ``backward(grad_output, boxes, input_shape, output_size,
                    spatial_scale, sampling_ratio, aligned) -> (N,C,H,W)``.
check_bilinear      ``fn(y, x, H, W) -> list of (row, col, weight)``: the reads of one RoIAlign sample
                    (empty when torchvision drops it).
check_roi_pool      ``fn(input, boxes, output_size, spatial_scale) -> (K,C,PH,PW)``.
check_iou           ``fn(box (4,), boxes (M,4)) -> (M,)`` IoU without "+1".
check_nms           ``fn(boxes (N,4), scores (N,), iou_threshold) -> kept indices`` by decreasing score.
check_box_coder     ``encode(reference_boxes (N,4), proposals (N,4), weights) -> (N,4)`` deltas and
                    ``decode(deltas (N,4), boxes (N,4), weights) -> (N,4)`` boxes; weights (wx,wy,ww,wh),
                    decode clamps dw/ww and dh/wh at log(1000/16) before exp.
check_mask_loss     ``fn(mask_logits (R,C,M,M), labels (R,), mask_targets (R,M,M)) -> (loss, dlogits)``;
                    ``kind`` "sigmoid" or "softmax" (see the checker's docstring). Golden and random
                    cases check the loss, the backward part the gradient.
==================  ================================================================================
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import threading
import traceback

import numpy as np

__all__ = [
    "check_conv2d",
    "check_im2col",
    "check_col2im",
    "check_roi_align",
    "check_bilinear",
    "check_roi_pool",
    "check_iou",
    "check_nms",
    "check_box_coder",
    "check_mask_loss",
    "GradedModeViolation",
]

RTOL = 1e-8  # tolerance relative to max(1, max|expected|)
BBOX_XFORM_CLIP = math.log(1000.0 / 16)
PARTS = ("all", "golden", "random", "backward")


# --------------------------------------------------------------------------------------------------
# Graded mode: the student's function runs with this package, torch and torchvision out of reach
# --------------------------------------------------------------------------------------------------


class GradedModeViolation(Exception):
    """Raised inside the student's function when, in graded mode, it reaches a forbidden implementation."""


class _Guard:
    """While armed, any call into ``minimaskrcnn``, ``torch`` or ``torchvision`` is a violation.

    Four mechanisms, so that no name or captured reference gets around them:

    1. a profile hook (``sys.setprofile``, and ``threading.setprofile`` for threads started during the
       call) sees every Python function or module body that starts; one whose file lies in the
       package's, torch's or torchvision's directory (or whose module is named after them) is
       refused. This catches every public and private path (``ops.nms``, ``ops.nms._nms_reference``,
       ``BoxCoder.encode``, a reloaded or re-imported module, a Numba kernel's ``py_func``, a
       reference captured by ``from ... import`` before the check), and Numba compiling one of the
       package's Python functions anew;
    2. the package's compiled Numba kernels (which run no Python code) are switched, for the
       duration, to a class whose call is refused;
    3. when torch is loaded, a torch function mode refuses every torch function and tensor method
       (torch's C functions run no Python code either);
    4. a student's own Numba-compiled functions reachable from the function under test are searched
       for references to the package's kernels (compiled code calls them without running Python).

    A violation is recorded (the case fails even if the student's code catches the exception) and
    raised at the call. Calls that turn the hook off from inside (``sys.setprofile``,
    ``sys.settrace``) are refused too. Not caught: copying the package's source text, work handed to a
    thread or process started before the call, and code that deliberately dismantles the checker from
    inside (``ctypes``, editing its internal state): that is misconduct to be seen when reading the
    notebook, not a wrapper.
    """

    NAMES = ("minimaskrcnn", "torch", "torchvision")

    def __init__(self):
        self.violations: list[str] = []
        self._roots: tuple[str, ...] | None = None
        self._ok_codes: set = {_Guard.violation.__code__}  # called by the refusals below
        self._numba_compile_codes: set = set()
        self._swapped: list = []
        self._guarded_classes: dict = {}
        self._mode = None

    # -- what is forbidden -------------------------------------------------------------------------
    def roots(self) -> tuple[str, ...]:
        if self._roots is None:
            dirs = set()
            for name in self.NAMES:
                try:
                    spec = importlib.util.find_spec(name)
                except (ImportError, ValueError):
                    spec = None
                for loc in (spec.submodule_search_locations or []) if spec else []:
                    dirs.update({os.path.join(loc, ""), os.path.join(os.path.realpath(loc), "")})
            here = os.path.dirname(os.path.abspath(__file__))
            dirs.update({os.path.join(here, ""), os.path.join(os.path.realpath(here), "")})
            self._roots = tuple(sorted(dirs))
        return self._roots

    def _forbidden_module(self, name) -> bool:
        return isinstance(name, str) and any(name == n or name.startswith(n + ".") for n in self.NAMES)

    def _describe(self, frame) -> str:
        module = frame.f_globals.get("__name__", "?")
        qual = getattr(frame.f_code, "co_qualname", frame.f_code.co_name)
        return f"{module}.{qual}" if qual != "<module>" else f"the module {module} (import or reload)"

    def violation(self, what: str) -> GradedModeViolation:
        msg = (
            f"graded mode: your code called {what}, an implementation this assignment asks you to "
            f"write yourself (this package, torch and torchvision are not allowed here)"
        )
        self.violations.append(msg)
        return GradedModeViolation(msg)

    # -- the profile hook --------------------------------------------------------------------------
    def profile(self, frame, event, arg):
        if event == "call":
            code = frame.f_code
            if code in self._ok_codes:
                return
            if code in self._numba_compile_codes:
                py_func = getattr(frame.f_locals.get("self"), "py_func", None)
                filename = getattr(getattr(py_func, "__code__", None), "co_filename", "")
                if filename.startswith(self.roots()):
                    raise self.violation(f"numba compiling {py_func.__module__}.{py_func.__qualname__}")
                why = self.scan_compiled(frame.f_locals.get("self"))
                if why:
                    raise self.violation(why)
                return
            if code.co_filename.startswith(self.roots()) or self._forbidden_module(
                frame.f_globals.get("__name__")
            ):
                raise self.violation(self._describe(frame))
            self._ok_codes.add(code)
        elif (
            event == "c_call"
            and (arg is sys.setprofile or arg is sys.settrace)
            and frame.f_code is not _call_student.__code__
        ):
            raise self.violation(f"sys.{arg.__name__} (switching off the graded-mode guard)")

    # -- compiled student code ---------------------------------------------------------------------
    _SKIP_LIBRARIES = ("numpy", "scipy", "numba", "matplotlib", "llvmlite", "IPython", "ipykernel")

    def scan_compiled(self, root) -> str | None:
        """A student's Numba-compiled function runs no Python code, so a call it makes to one of the
        package's kernels is invisible to the hook: look for such references (globals, closures and
        module attributes its code names) in the compiled functions reachable from ``root``."""
        base = getattr(sys.modules.get("numba.core.dispatcher"), "Dispatcher", None)
        if base is None:
            return None
        roots, seen, stack = self.roots(), set(), [(root, False)]
        while stack and len(seen) < 5000:
            obj, compiled = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if isinstance(obj, base):
                py_func = obj.py_func
                if py_func.__code__.co_filename.startswith(roots):
                    if compiled:
                        where = f"{py_func.__module__}.{py_func.__qualname__}"
                        return f"the Numba kernel {where} (from compiled code)"
                    continue  # called from Python: the class swap refuses it
                stack.append((py_func, True))
                continue
            fn = getattr(obj, "__func__", obj)
            code, globals_ = getattr(fn, "__code__", None), getattr(fn, "__globals__", None)
            if not (hasattr(code, "co_names") and isinstance(globals_, dict)):
                continue
            if code.co_filename.startswith(roots) or str(globals_.get("__name__", "")).split(".")[0] in \
                    self._SKIP_LIBRARIES:
                continue
            names = set(code.co_names)
            for const in code.co_consts:
                if hasattr(const, "co_names"):
                    names.update(const.co_names)
            for name in names:
                value = globals_.get(name)
                if value is None:
                    continue
                stack.append((value, compiled))
                if compiled and isinstance(value, type(sys)):  # module.attribute chains, resolved by Numba
                    modules = [value]
                    while modules:
                        module = modules.pop()
                        for attr in names:
                            sub = getattr(module, attr, None)
                            if isinstance(sub, type(sys)) and id(sub) not in seen:
                                seen.add(id(sub))
                                modules.append(sub)
                            elif sub is not None:
                                stack.append((sub, True))
            for cell in getattr(fn, "__closure__", None) or ():
                try:
                    stack.append((cell.cell_contents, compiled))
                except ValueError:  # an empty cell
                    pass
        return None

    # -- arming ------------------------------------------------------------------------------------
    def arm(self) -> None:
        self.violations = []
        self.roots()
        self._swap_numba()
        torch = sys.modules.get("torch")
        if torch is not None and hasattr(torch, "overrides"):
            self._mode = _torch_mode(torch, self)
            self._mode.__enter__()

    def disarm(self) -> None:
        if self._mode is not None:
            mode, self._mode = self._mode, None
            mode.__exit__(None, None, None)
        for obj, cls in self._swapped:
            obj.__class__ = cls
        self._swapped = []

    def _swap_numba(self) -> None:
        numba_dispatcher = sys.modules.get("numba.core.dispatcher")
        if numba_dispatcher is None:
            return
        base = numba_dispatcher.Dispatcher
        for attr in ("_compile_for_args", "compile"):
            fn = getattr(base, attr, None)
            while fn is not None:
                if hasattr(fn, "__code__"):
                    self._numba_compile_codes.add(fn.__code__)
                fn = getattr(fn, "__wrapped__", None)
        seen = set()
        for name, module in list(sys.modules.items()):
            if module is None or not self._forbidden_module(name) or not name.startswith("minimaskrcnn"):
                continue
            for value in list(vars(module).values()):
                if isinstance(value, base) and id(value) not in seen:
                    seen.add(id(value))
                    cls = type(value)
                    guarded = self._guarded_classes.get(cls)
                    if guarded is None:
                        guarded = self._guarded_classes[cls] = _guarded_dispatcher_class(cls, self)
                    value.__class__ = guarded
                    self._swapped.append((value, cls))


def _guarded_dispatcher_class(cls, guard):
    def refuse(self, *args, **kwargs):
        py_func = getattr(self, "py_func", None)
        name = f"{getattr(py_func, '__module__', '?')}.{getattr(py_func, '__qualname__', '?')}"
        raise guard.violation(f"the Numba kernel {name}")

    guard._ok_codes.add(refuse.__code__)  # the refusal itself runs in this file
    return type(f"Graded{cls.__name__}", (cls,), {"__call__": refuse})


def _torch_mode(torch, guard):
    class _NoTorch(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            raise guard.violation(f"torch ({getattr(func, '__qualname__', func)})")

    guard._ok_codes.add(_NoTorch.__torch_function__.__code__)  # the refusal itself runs in this file
    return _NoTorch()


_GUARD = _Guard()


def _call_student(fn, args, graded: bool):
    """``fn(*args)``; in graded mode with the guard armed for exactly the duration of the call."""
    if not graded:
        return fn(*args)
    why = _GUARD.scan_compiled(fn)
    if why:
        raise _GUARD.violation(why)
    _GUARD.arm()
    threading.setprofile(_GUARD.profile)
    sys.setprofile(_GUARD.profile)
    try:
        result = fn(*args)
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
        _GUARD.disarm()
    if _GUARD.violations:
        raise GradedModeViolation(_GUARD.violations[0])
    return result


# --------------------------------------------------------------------------------------------------
# Cases, reports and comparisons
# --------------------------------------------------------------------------------------------------


class _Case:
    """One test case: ``call()`` runs the student's code (through ``_call_student``), ``check(result)
    -> (ok, detail)``; ``variants`` is a list of (bug label, expected output of that bug) thunks, tried
    only when the case fails."""

    def __init__(self, name, call, check, hint, variants=()):
        self.name, self.call, self.check, self.hint, self.variants = name, call, check, hint, variants


class _Report:
    """Runs the cases, prints one row per case and the one line of feedback."""

    def __init__(self, title: str, verbose: bool):
        self.title, self.verbose = title, verbose
        self.rows: list[tuple[str, bool]] = []
        self.failed: list[tuple[_Case, object, str | None]] = []  # (case, result, violation)
        if verbose:
            print(title)

    def run(self, case: _Case) -> None:
        violation, result, raised = None, None, False
        try:
            result = case.call()
        except GradedModeViolation as exc:
            violation, raised = str(exc), True
            ok, detail = False, violation
        except Exception as exc:  # a broken implementation must fail its case, not crash the checker
            ok, detail, raised = False, _error_text(exc), True
        else:
            try:
                ok, detail = case.check(result)
            except Exception as exc:  # e.g. the function returned something that cannot be unpacked
                ok, detail = False, f"unexpected return value ({type(exc).__name__}: {exc})"
        if not ok:
            self.failed.append((case, None if raised else result, violation))
        self.rows.append((case.name, ok))
        if self.verbose:
            print(f"  {'PASS' if ok else 'FAIL'}  {case.name:<58s} {detail}")

    def result(self) -> bool:
        passed = sum(ok for _, ok in self.rows)
        ok = passed == len(self.rows) and len(self.rows) > 0
        if self.verbose:
            print(f"  {passed}/{len(self.rows)} cases passed -> {'OK' if ok else 'FAILED'}")
            if not ok:
                print("  " + self.feedback())
        return ok

    def feedback(self) -> str:
        """``Likely bug: ...`` when a failing result equals a known bug's output, else the hint of
        the simplest (first) failing case."""
        if not self.failed:
            return "no case ran"
        for _, _, violation in self.failed:
            if violation:
                return "Not allowed: " + violation
        # The bug whose output equals the student's on the most failing cases (ties: the simplest case).
        matches: dict[str, list[str]] = {}
        for case, result, _ in self.failed:
            if result is None:
                continue
            for label, expected in case.variants:
                try:
                    ok, _ = case.check(result, expected())
                except Exception:  # a variant that does not apply to this case (e.g. invalid geometry)
                    continue
                if ok and case.name not in matches.setdefault(label, []):
                    matches[label].append(case.name)
        if any(matches.values()):
            label = max(matches, key=lambda k: len(matches[k]))
            n, first = len(matches[label]), matches[label][0]
            where = f'case "{first}"' + (f" and {n - 1} more" if n > 1 else "")
            return f"Likely bug: {label} ({where} {'gives' if n == 1 else 'give'} exactly that bug's output)"
        case = self.failed[0][0]
        return f'hint (simplest failing case, "{case.name}"): {case.hint}'


def _error_text(exc: BaseException) -> str:
    """``ValueError: message (at file:line)`` naming the innermost frame of the caller's code."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].name}, line {frames[-1].lineno})" if frames else ""
    msg = str(exc).splitlines()[0] if str(exc) else ""
    return f"raised {type(exc).__name__}: {msg[:120]}{where}"


def _fmt(v) -> str:
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{float(v):.6g}"


def _diff(got, expected, name: str = "output"):
    """(ok, text): same shape and every element within RTOL·max(1, max|expected|)."""
    expected = np.asarray(expected, dtype=np.float64)
    if got is None:
        return False, f"{name} is None"
    try:
        got = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        return False, f"{name} is not a numeric array ({type(exc).__name__}: {exc})"
    if got.shape != expected.shape:
        return (
            False,
            f"{name} has shape {tuple(int(s) for s in got.shape)}, expected "
            f"{tuple(int(s) for s in expected.shape)}",
        )
    if got.size == 0:
        return True, "worst |diff| 0 (empty)"
    err = np.abs(got - expected)
    err = np.where(np.isnan(got) != np.isnan(expected), np.inf, np.nan_to_num(err, nan=0.0))
    worst = float(err.max())
    tol = RTOL * max(1.0, float(np.nan_to_num(np.abs(expected)).max()))
    if worst <= tol:
        return True, f"worst |diff| {worst:.1e}"
    at = tuple(int(i) for i in np.unravel_index(int(np.argmax(err)), err.shape))
    return False, (
        f"worst |diff| {worst:.1e} in {name}{list(at)}: got {_fmt(got[at])}, expected {_fmt(expected[at])}"
    )


def _diffs(pairs):
    """Combine several (got, expected, name) comparisons into one (ok, detail)."""
    details = []
    for got, expected, name in pairs:
        ok, detail = _diff(got, expected, name)
        if not ok:
            return False, detail
        details.append(detail.replace("worst |diff|", f"{name}"))
    return True, "worst |diff| " + ", ".join(details)


def _array_check(name="output"):
    def check(got, expected):
        return _diff(got, expected, name)

    return check


def _bind(check, expected):
    """``check(result)`` against ``expected``, keeping ``check(result, other)`` for the bug variants."""
    return lambda got, other=None: check(got, expected if other is None else other)


def _parts(part: str, has_backward: bool):
    if part not in PARTS or (part == "backward" and not has_backward):
        allowed = PARTS if has_backward else PARTS[:3]
        raise ValueError(f"part must be one of {allowed}, got {part!r}")
    return part in ("all", "golden"), part in ("all", "random"), part in ("all", "backward")


def _copy(a):
    return a.copy() if isinstance(a, np.ndarray) else a


def _student(fn, args, graded):
    """A thunk calling the student's ``fn`` on fresh copies of ``args``."""
    return lambda: _call_student(fn, tuple(_copy(a) for a in args), graded)


def _seeded(seed, default):
    return np.random.default_rng(default if seed is None else seed)


# --------------------------------------------------------------------------------------------------
# Convolution, im2col, col2im
# --------------------------------------------------------------------------------------------------

_CONV_GOLDEN = [
    (
        "1x1x4x4 input, 2x2 kernel, no padding",
        (1, 1, 4, 4),
        (1, 1, 2, 2),
        True,
        (1, 1),
        (0, 0),
        (1, 1),
        "out[y, x] = b + sum_ij w[i, j]·x[y + i, x + j] (cross-correlation: the kernel is not flipped)",
    ),
    (
        "non-square kernel 2x3 on a 4x5 input",
        (1, 1, 4, 5),
        (1, 1, 2, 3),
        True,
        (1, 1),
        (0, 0),
        (1, 1),
        "rows go with kH and H, columns with kW and W; H' = H − kH + 1, W' = W − kW + 1",
    ),
    (
        "several channels and images, 3x3 kernel",
        (2, 3, 5, 5),
        (4, 3, 3, 3),
        True,
        (1, 1),
        (0, 0),
        (1, 1),
        "sum over every input channel c; one output channel per filter; loop over the batch",
    ),
    (
        "padding 1 (zeros around the input)",
        (1, 2, 4, 4),
        (2, 2, 3, 3),
        True,
        (1, 1),
        (1, 1),
        (1, 1),
        "pad with zeros on all four sides; H' = 1 + (H + 2p − kH) // s",
    ),
    (
        "stride 2",
        (1, 2, 7, 7),
        (2, 2, 3, 3),
        True,
        (2, 2),
        (0, 0),
        (1, 1),
        "output (y, x) reads input rows y·s + i; H' = 1 + (H − kH) // s (floor)",
    ),
    (
        "stride (2, 1), padding (1, 2)",
        (2, 2, 6, 5),
        (3, 2, 3, 3),
        True,
        (2, 1),
        (1, 2),
        (1, 1),
        "stride and padding are (h, w) pairs: use the h value for rows, the w value for columns",
    ),
    (
        "dilation 2",
        (1, 2, 7, 7),
        (2, 2, 3, 3),
        True,
        (1, 1),
        (0, 0),
        (2, 2),
        "dilation d reads x[y·s + i·d]; H' = 1 + (H + 2p − d·(kH − 1) − 1) // s",
    ),
    (
        "stride 2 and dilation 3 together",
        (1, 1, 11, 11),
        (1, 1, 2, 2),
        True,
        (2, 2),
        (0, 0),
        (3, 3),
        "stride moves the window (y·s), dilation spaces the taps inside it (i·d): do not swap them",
    ),
    (
        "no bias (b = None)",
        (1, 2, 5, 5),
        (3, 2, 3, 3),
        False,
        (1, 1),
        (1, 1),
        (1, 1),
        "b may be None: add nothing, and return db = None",
    ),
]


def _conv_random_geometries(rng, n=4):
    out = []
    for i in range(n):
        kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        s = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        p = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
        d = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        h = int(rng.integers(d[0] * (kh - 1) + 1, 10)) + 1
        w = int(rng.integers(d[1] * (kw - 1) + 1, 10)) + 1
        c, o, n_img = int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 3))
        out.append(
            (
                f"random {i}: {n_img}x{c}x{h}x{w}, kernel {kh}x{kw}, stride {s}, padding {p}, dilation {d}",
                (n_img, c, h, w),
                (o, c, kh, kw),
                bool(i % 3),
                s,
                p,
                d,
                "compare with the seven-loop definition on this case",
            )
        )
    return out


def _conv_cases(part, seed):
    golden, random, _ = _parts(part, True)
    rng = _seeded(seed, 0)
    specs = (list(_CONV_GOLDEN) if golden else []) + (_conv_random_geometries(rng) if random else [])
    cases = []
    for name, xs, ws, has_b, s, p, d, hint in specs:
        x, w = rng.standard_normal(xs), rng.standard_normal(ws)
        b = rng.standard_normal(ws[0]) if has_b else None
        cases.append((name, x, w, b, s, p, d, hint))
    return cases


def _conv(x, w, b, s, p, d):
    from minimaskrcnn.nn.functional import conv2d_forward

    return conv2d_forward(x, w, b, s, p, d)


def _conv_forward_variants(x, w, b, s, p, d):
    """The classic forward bugs: (label, thunk giving that bug's output)."""
    flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1])
    variants = [
        (
            "flipped kernel: that is the textbook convolution; a CNN's conv2d is cross-correlation, "
            "out[y, x] = sum_ij w[i, j]·x[y·s + i·d, x·s + j·d] with w NOT flipped",
            lambda: _conv(x, flipped, b, s, p, d)[0],
        )
    ]
    if any(p):
        for label, pads in (
            ("top/left", ((p[0], 0), (p[1], 0))),
            ("bottom/right", ((0, p[0]), (0, p[1]))),
            ("top/left, twice", ((2 * p[0], 0), (2 * p[1], 0))),
            ("bottom/right, twice", ((0, 2 * p[0]), (0, 2 * p[1]))),
        ):
            xp = np.pad(x, ((0, 0), (0, 0)) + pads)
            variants.append(
                (
                    f"padding on one side only ({label}): pad p zeros on ALL four sides, "
                    "np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))",
                    lambda xp=xp: _conv(xp, w, b, s, (0, 0), d)[0],
                )
            )
    if tuple(s) != tuple(d):
        variants.append(
            (
                "stride and dilation mixed up: the stride moves the window (y·s), the dilation "
                "spaces the kernel taps (i·d)",
                lambda: _conv(x, w, b, d, p, s)[0],
            )
        )
    if (s[0], p[0], d[0]) != (s[1], p[1], d[1]):
        variants.append(
            (
                "(h, w) pairs swapped: stride[0], padding[0], dilation[0] go with the rows",
                lambda: _conv(x, w, b, s[::-1], p[::-1], d[::-1])[0],
            )
        )
    return variants


def _conv_backward_variants(x, w, b, s, p, d, dout, dx, dw, db):
    from minimaskrcnn.nn.functional import conv2d_backward

    flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1])
    o = w.shape[0]
    variants = [
        (
            "flipped kernel in dx: dx[.., y·s + i·d − p, ..] += dout·w[o, c, i, j] with the same, unflipped "
            "w[i, j] as the forward",
            lambda: (conv2d_backward(dout, _conv(x, flipped, b, s, p, d)[1])[0], dw, db),
        ),
        (
            "transposed dw: the GEMM gives dW = dout_mat (C_out × N·H'·W') @ colsᵀ; cols @ dout_matᵀ is its "
            "transpose (C·kH·kW × C_out) and reshaping that to w's shape scrambles dw",
            lambda: (dx, dw.reshape(o, -1).T.reshape(w.shape).copy(), db),
        ),
    ]
    if w.shape[2] == w.shape[3]:
        variants.append(
            (
                "transposed dw: kernel rows and columns swapped, dw[o, c, i, j] must pair tap (i, j) "
                "with input x[y·s + i·d, x·s + j·d]",
                lambda: (dx, dw.transpose(0, 1, 3, 2), db),
            )
        )
    return variants


def _conv_backward_check(got, expected):
    dx, dw, db = expected
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        return False, "backward must return a tuple (dx, dw, db)"
    if db is None and got[2] is not None:
        return False, "db must be None when the forward had no bias"
    return _diffs([(got[0], dx, "dx"), (got[1], dw, "dw")] + ([(got[2], db, "db")] if db is not None else []))


def _forward_out_check(got, expected):
    if not (isinstance(got, tuple) and len(got) == 2):
        return False, "forward must return a tuple (out, cache)"
    return _diff(got[0], expected, "out")


def check_conv2d(
    forward,
    backward=None,
    *,
    part: str = "all",
    seed: int | None = None,
    graded: bool = False,
    verbose: bool = True,
) -> bool:
    """Check a 2-D convolution (cross-correlation, torch's ``conv2d`` with groups = 1).

    forward(x, w, b, stride, padding, dilation) -> (out, cache): x (N, C_in, H, W), w (C_out, C_in,
    kH, kW), b (C_out,) or None, stride/padding/dilation ``(h, w)`` pairs; out (N, C_out, H', W') with
    H' = 1 + (H + 2·pad_h − dil_h·(kH − 1) − 1) // stride_h.
    backward(dout, cache) -> (dx, dw, db), the gradients of sum(out · dout); db is None when b was
    None. The backward cases call your forward only for its cache: their score depends on dx, dw, db
    alone. ``part="all"`` without ``backward`` checks the forward only.
    """
    from minimaskrcnn.nn.functional import conv2d_backward, conv2d_forward

    if part == "backward" and backward is None:
        raise ValueError("part='backward' needs the backward function")
    what = {
        "all": "forward and backward" if backward else "forward",
        "golden": "forward, golden cases",
        "random": "forward, random cases",
        "backward": "backward",
    }[part]
    report = _Report(f"check_conv2d ({what}{', graded' if graded else ''})", verbose)
    do_forward = part in ("all", "golden", "random")
    do_backward = backward is not None and part in ("all", "backward")
    bwd_rng = _seeded(seed, 10)
    for name, x, w, b, s, p, d, hint in _conv_cases("all" if part == "backward" else part, seed):
        out, cache = conv2d_forward(x, w, b, s, p, d)
        if do_forward:
            report.run(
                _Case(
                    "forward:  " + name,
                    _student(forward, (x, w, b, s, p, d), graded),
                    _bind(_forward_out_check, out),
                    hint,
                    _conv_forward_variants(x, w, b, s, p, d),
                )
            )
        if not do_backward:
            continue
        dout = bwd_rng.standard_normal(out.shape)
        dx, dw, db = conv2d_backward(dout, cache)

        def call(x=x, w=w, b=b, s=s, p=p, d=d, dout=dout):
            result = _call_student(
                forward, (x.copy(), w.copy(), None if b is None else b.copy(), s, p, d), graded
            )
            if not (isinstance(result, tuple) and len(result) == 2):
                raise TypeError("your forward must return (out, cache); the backward needs its cache")
            return _call_student(backward, (dout.copy(), result[1]), graded)

        report.run(
            _Case(
                "backward: " + name,
                call,
                _bind(_conv_backward_check, (dx, dw, db)),
                "dx[n,c,y·s+i·d−p, x·s+j·d−p] += dout[n,o,y,x]·w[o,c,i,j] (the same w[i,j], not "
                "flipped or transposed); dw[o,c,i,j] += dout·x at that pixel; db[o] = sum of dout "
                "over n, y, x",
                _conv_backward_variants(x, w, b, s, p, d, dout, dx, dw, db),
            )
        )
    return report.result()


def _im2col_reference(x, kh, kw, s, p, d):
    """cols (C·kH·kW, N·H'·W'), rows (c, i, j), columns (n, y, x): a loop over the kernel taps."""
    n, c, h, w = x.shape
    ho = 1 + (h + 2 * p[0] - d[0] * (kh - 1) - 1) // s[0]
    wo = 1 + (w + 2 * p[1] - d[1] * (kw - 1) - 1) // s[1]
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    cols = np.empty((c, kh, kw, n, ho, wo))
    for i in range(kh):
        for j in range(kw):
            cols[:, i, j] = xp[
                :,
                :,
                i * d[0] : i * d[0] + s[0] * (ho - 1) + 1 : s[0],
                j * d[1] : j * d[1] + s[1] * (wo - 1) + 1 : s[1],
            ].transpose(1, 0, 2, 3)
    return cols.reshape(c * kh * kw, n * ho * wo)


def _col2im_reference(dcols, x_shape, kh, kw, s, p, d, assign=False):
    n, c, h, w = x_shape
    ho = 1 + (h + 2 * p[0] - d[0] * (kh - 1) - 1) // s[0]
    wo = 1 + (w + 2 * p[1] - d[1] * (kw - 1) - 1) // s[1]
    g = dcols.reshape(c, kh, kw, n, ho, wo)
    dxp = np.zeros((n, c, h + 2 * p[0], w + 2 * p[1]))
    for i in range(kh):
        for j in range(kw):
            ys = slice(i * d[0], i * d[0] + s[0] * (ho - 1) + 1, s[0])
            xs = slice(j * d[1], j * d[1] + s[1] * (wo - 1) + 1, s[1])
            if assign:
                dxp[:, :, ys, xs] = g[:, i, j].transpose(1, 0, 2, 3)
            else:
                dxp[:, :, ys, xs] += g[:, i, j].transpose(1, 0, 2, 3)
    return dxp[:, :, p[0] : p[0] + h, p[1] : p[1] + w]


def _im2col_variants(x, kh, kw, s, p, d):
    n, c = x.shape[:2]
    ref = _im2col_reference(x, kh, kw, s, p, d)
    ho_wo = ref.shape[1] // n
    return [
        (
            "columns ordered (y, x, n) instead of (n, y, x): column n·H'·W' + y·W' + x holds image n",
            lambda: ref.reshape(-1, n, ho_wo).transpose(0, 2, 1).reshape(ref.shape),
        ),
        (
            "rows ordered (i, j, c) instead of (c, i, j): row c·kH·kW + i·kW + j pairs with "
            "w.reshape(C_out, -1)",
            lambda: ref.reshape(c, kh * kw, -1).transpose(1, 0, 2).reshape(ref.shape),
        ),
        ("stride and dilation mixed up", lambda: _im2col_reference(x, kh, kw, d, p, s)),
    ]


def check_im2col(
    im2col, *, part: str = "all", seed: int | None = None, graded: bool = False, verbose: bool = True
) -> bool:
    """Check ``im2col(x, kH, kW, stride, padding, dilation) -> cols (C·kH·kW, N·H'·W')``: column
    n·H'·W' + y·W' + x holds the receptive field of output pixel (y, x) of image n, rows ordered
    (c, i, j) (so that ``w.reshape(C_out, -1) @ cols`` is the convolution)."""
    report = _Report(f"check_im2col ({part}{', graded' if graded else ''})", verbose)
    for name, x, w, _, s, p, d, hint in _conv_cases(part, seed):
        kh, kw = w.shape[2:]
        expected = _im2col_reference(x, kh, kw, s, p, d)
        report.run(
            _Case(
                name,
                _student(im2col, (x, kh, kw, s, p, d), graded),
                _bind(_array_check("cols"), expected),
                "row (c, i, j), column (n, y, x) holds x_padded[n, c, y·s + i·d, x·s + j·d]; " + hint,
                _im2col_variants(x, kh, kw, s, p, d),
            )
        )
    return report.result()


def check_col2im(
    col2im, *, part: str = "all", seed: int | None = None, graded: bool = False, verbose: bool = True
) -> bool:
    """Check ``col2im(dcols, x_shape, kH, kW, stride, padding, dilation) -> dx (N, C, H, W)``, the adjoint
    of im2col: every entry of dcols is ADDED back to the input pixel im2col copied it from (padding
    positions dropped)."""
    report = _Report(f"check_col2im ({part}{', graded' if graded else ''})", verbose)
    rng = _seeded(seed, 16)
    for name, x, w, _, s, p, d, _hint in _conv_cases(part, seed):
        kh, kw = w.shape[2:]
        dcols = rng.standard_normal(_im2col_reference(x, kh, kw, s, p, d).shape)
        expected = _col2im_reference(dcols, x.shape, kh, kw, s, p, d)
        variants = [
            (
                "assigning instead of adding: taps overlap, accumulate with +=",
                lambda dc=dcols, xs=x.shape, k=(kh, kw), s=s, p=p, d=d: _col2im_reference(
                    dc, xs, *k, s, p, d, assign=True
                ),
            )
        ]
        report.run(
            _Case(
                name,
                _student(col2im, (dcols, x.shape, kh, kw, s, p, d), graded),
                _bind(_array_check("dx"), expected),
                "dx_padded[n, c, y·s + i·d, x·s + j·d] += dcols[(c, i, j), (n, y, x)], then crop the padding",
                variants,
            )
        )
    return report.result()


# --------------------------------------------------------------------------------------------------
# RoIAlign, bilinear interpolation and RoIPool: loop references with the classic bugs as switches
# --------------------------------------------------------------------------------------------------

_ALIGN_BUGS = {
    "offset_plus": "half-pixel offset the wrong way: aligned=True SUBTRACTS 0.5 after scaling "
    "(start = x1·s − 0.5), yours adds it",
    "offset_before_scale": "half-pixel offset applied before scaling: start = x1·s − 0.5, not (x1 − 0.5)·s",
    "no_min_size": "missing max(…, 1) of aligned=False: roi_w = max(x2·s − x1·s, 1) (same for h)",
    "grid_plus1": "sampling count off by one (one too many): grid_h = sampling_ratio if > 0 else "
    "ceil(roi_h / PH) samples per bin along y, same for x",
    "grid_minus1": "sampling count off by one (one too few): grid_h = sampling_ratio if > 0 else "
    "ceil(roi_h / PH) samples per bin along y, same for x",
    "int_no_clamp": "floor vs int at negatives: for −1 <= y < 0 torchvision first sets y = 0; without that "
    "int(y) = 0 truncates toward zero and the weight ly = y − y_low goes negative",
    "floor_no_clamp": "floor vs int at negatives: for −1 <= y < 0 torchvision first sets y = 0; without "
    "that floor(y) = −1 reads row −1 (NumPy's last row)",
    "count_valid": "dropped samples still count: divide by grid_h·grid_w, not by the number of samples "
    "inside the map",
}


def _bilinear_ref(y, x, h, w, bug=None):
    """torchvision's bilinear_interpolate for one sample: [(row, col, weight)], [] when dropped."""
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return []
    if bug not in ("int_no_clamp", "floor_no_clamp"):
        y, x = max(y, 0.0), max(x, 0.0)
    rnd = math.floor if bug == "floor_no_clamp" else int
    y0, x0 = int(rnd(y)), int(rnd(x))
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return [
        (y0, x0, (1 - ly) * (1 - lx)),
        (y0, x1, (1 - ly) * lx),
        (y1, x0, ly * (1 - lx)),
        (y1, x1, ly * lx),
    ]


def _roi_align_ref(x, rois, out_size, scale, sr, aligned, bug=None, grad=None, shape=None):
    """RoIAlign (grad None) or its backward (grad (K, C, PH, PW), shape the input's) as plain loops."""
    ph_n, pw_n = out_size
    n, c, h, w = x.shape if grad is None else shape
    out = np.zeros((len(rois), c, ph_n, pw_n)) if grad is None else np.zeros(shape)
    for k, roi in enumerate(rois):
        bi = int(roi[0])
        off = 0.5 if aligned else 0.0
        if bug == "offset_plus":
            off = -off
        if bug == "offset_before_scale":
            x1, y1, x2, y2 = ((v - off) * scale for v in roi[1:])
        else:
            x1, y1, x2, y2 = (v * scale - off for v in roi[1:])
        rw, rh = x2 - x1, y2 - y1
        if not aligned and bug != "no_min_size":
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / ph_n, rw / pw_n
        gh = sr if sr > 0 else int(math.ceil(rh / ph_n))
        gw = sr if sr > 0 else int(math.ceil(rw / pw_n))
        if bug in ("grid_plus1", "grid_minus1"):
            delta = 1 if bug == "grid_plus1" else -1
            gh, gw = max(gh + delta, 1), max(gw + delta, 1)
        for ph in range(ph_n):
            for pw in range(pw_n):
                reads, valid = [], 0
                for iy in range(gh):
                    yy = y1 + ph * bh + (iy + 0.5) * bh / gh
                    for ix in range(gw):
                        xx = x1 + pw * bw + (ix + 0.5) * bw / gw
                        r = _bilinear_ref(yy, xx, h, w, bug)
                        valid += bool(r)
                        reads += r
                count = max(valid if bug == "count_valid" else gh * gw, 1)
                for r, q, wt in reads:
                    if grad is None:
                        out[k, :, ph, pw] += wt * x[bi, :, r, q] / count
                    else:
                        out[bi, :, r, q] += wt * grad[k, :, ph, pw] / count
    return out


def _ramp(n, c, h, w):
    """A feature map whose value at (row i, column j) of channel c is 10·c + i + j/10: bilinear
    interpolation of it is exact, so a wrong sample position shows up as a wrong value."""
    i = np.arange(h, dtype=np.float64)[:, None]
    j = np.arange(w, dtype=np.float64)[None, :]
    base = i + j / 10.0
    return np.stack([np.stack([base + 10.0 * ch + 100.0 * b for ch in range(c)]) for b in range(n)])


def _golden_values(x, rng):
    """With a seed, the golden maps get new values: a random positive scale and offset of the ramp."""
    return x if rng is None else x * rng.uniform(0.5, 2.0) + rng.uniform(-50, 50)


def _roi_align_cases(part, seed):
    """(name, input, boxes (K,5), output_size, spatial_scale, sampling_ratio, aligned, hint)."""
    golden, random, _ = _parts(part, True)
    vrng = None if seed is None else np.random.default_rng(seed + 1)
    ramp = _golden_values(_ramp(1, 2, 6, 7), vrng)
    cases = (
        [
            (
                "ramp 6x7, box (1,1,4,4), 2x2 bins, 2 samples, aligned=False",
                ramp,
                [[0, 1, 1, 4, 4]],
                (2, 2),
                1.0,
                2,
                False,
                "sample y = y1·s + ph·bin_h + (iy + 0.5)·bin_h/grid_h, bin value = mean of its samples",
            ),
            (
                "same box, aligned=True (half-pixel shift)",
                ramp,
                [[0, 1, 1, 4, 4]],
                (2, 2),
                1.0,
                2,
                True,
                "aligned=True SUBTRACTS 0.5 after scaling: start = x1·s − 0.5 (not + 0.5, not "
                "before scaling)",
            ),
            (
                "output 3x2 (PH != PW), fractional box",
                ramp,
                [[0, 0.7, 1.3, 5.2, 4.9]],
                (3, 2),
                1.0,
                2,
                False,
                "output_size is (PH, PW): bins along y use PH and roi height, along x PW and roi width",
            ),
            (
                "adaptive sampling (sampling_ratio=-1)",
                ramp,
                [[0, 0.5, 0.2, 6.1, 5.3]],
                (2, 2),
                1.0,
                -1,
                False,
                "sampling_ratio <= 0: grid_h = ceil(roi_h / PH), grid_w = ceil(roi_w / PW) (ceil, per axis)",
            ),
            (
                "spatial_scale 0.5 (stride-2 map)",
                ramp,
                [[0, 2.0, 3.0, 9.0, 10.0]],
                (2, 2),
                0.5,
                2,
                False,
                "multiply the box coordinates by spatial_scale first",
            ),
            (
                "tiny box, aligned=False (size forced to >= 1)",
                ramp,
                [[0, 2.2, 2.3, 2.4, 2.5]],
                (2, 2),
                1.0,
                2,
                False,
                "aligned=False: roi_w = max(x2·s − x1·s, 1) (same for h); aligned=True keeps the raw size",
            ),
            (
                "box over the bottom-right border",
                ramp,
                [[0, 4.0, 3.0, 7.8, 6.9]],
                (2, 2),
                1.0,
                2,
                False,
                "a sample at y >= H−1 reads row H−1 (y_low = y_high = H−1); only y > H is dropped",
            ),
            (
                "box partly outside the map (samples dropped)",
                ramp,
                [[0, -3.0, -2.5, 2.0, 1.5]],
                (2, 2),
                1.0,
                2,
                True,
                "a sample with y < −1 or x < −1 adds 0 but still counts in the average; −1 <= y < 0 "
                "reads row 0",
            ),
            (
                "two images, batch index from column 0",
                np.concatenate([ramp, -ramp]),
                [[1, 1, 1, 4, 4], [0, 2, 0, 5, 3]],
                (2, 2),
                1.0,
                2,
                False,
                "boxes[k, 0] is the batch index of RoI k; the box is boxes[k, 1:5]",
            ),
        ]
        if golden
        else []
    )
    rng = _seeded(seed, 1)
    for i in range(4 if random else 0):
        n, c, h, w = 2, 3, int(rng.integers(4, 12)), int(rng.integers(4, 12))
        x = rng.standard_normal((n, c, h, w))
        scale = [1.0, 0.5, 0.25, 0.125][i]
        k = 5
        xy = rng.uniform(-2, max(h, w) + 2, size=(k, 2)) / scale
        wh = rng.uniform(0.2, max(h, w), size=(k, 2)) / scale
        boxes = np.column_stack([rng.integers(0, n, k), xy, xy + wh])
        sr = [2, -1, 1, 3][i]
        aligned = bool(i % 2)
        out = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        cases.append(
            (
                f"random {i}: {h}x{w} map, scale {scale}, sampling {sr}, aligned={aligned}",
                x,
                boxes,
                out,
                scale,
                sr,
                aligned,
                "compare with the numbered steps on a single bin",
            )
        )
    return [
        (nm, np.asarray(x, np.float64), np.asarray(b, np.float64), o, s, sr, al, hint)
        for nm, x, b, o, s, sr, al, hint in cases
    ]


def check_roi_align(
    fn,
    backward=None,
    *,
    part: str = "all",
    seed: int | None = None,
    graded: bool = False,
    verbose: bool = True,
) -> bool:
    """Check a RoIAlign: ``fn(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)``.

    input (N, C, H, W); boxes (K, 5) rows (batch_index, x1, y1, x2, y2) in image pixels; output_size
    (PH, PW); returns (K, C, PH, PW), equal to ``torchvision.ops.roi_align``. With ``backward``
    (``backward(grad_output, boxes, input_shape, output_size, spatial_scale, sampling_ratio, aligned)
    -> (N, C, H, W)``) the gradient is checked on the same cases; it does not call ``fn``, so a forward
    bug does not cost the backward's points. ``part="backward"`` checks the backward only (``fn`` may
    be None).
    """
    from minimaskrcnn.ops.roi_align import roi_align, roi_align_backward

    if part == "backward" and backward is None:
        raise ValueError("part='backward' needs the backward function")
    report = _Report(
        f"check_roi_align ({part}{', with backward' if backward and part == 'all' else ''}"
        f"{', graded' if graded else ''})",
        verbose,
    )
    g_rng = _seeded(seed, 11)
    for name, x, boxes, out_size, scale, sr, aligned, hint in _roi_align_cases(
        "all" if part == "backward" else part, seed
    ):
        expected = roi_align(x, boxes, out_size, scale, sr, aligned)
        args = (out_size, scale, sr, aligned)
        if part != "backward":
            report.run(
                _Case(
                    "forward:  " + name,
                    _student(fn, (x, boxes) + args, graded),
                    _bind(_array_check(), expected),
                    hint,
                    [
                        (label, lambda x=x, b=boxes, a=args, bug=bug: _roi_align_ref(x, b, *a, bug=bug))
                        for bug, label in _ALIGN_BUGS.items()
                    ],
                )
            )
        if backward is None or part not in ("all", "backward"):
            continue
        g = g_rng.standard_normal(expected.shape)
        dx = roi_align_backward(g, boxes, x.shape, out_size, scale, sr, aligned)
        variants = [
            (
                label,
                lambda b=boxes, a=args, g=g, s=x.shape, bug=bug: _roi_align_ref(
                    np.empty(0), b, *a, bug=bug, grad=g, shape=s
                ),
            )
            for bug, label in _ALIGN_BUGS.items()
        ]
        variants += [
            (
                "gradient not divided by the sample count: each sample passes weight·g / count",
                lambda g=g, b=boxes, s=x.shape, a=args: roi_align_backward(
                    g * (_sample_counts(b, a, s)[:, None, None, None]), b, s, *a
                ),
            )
        ]
        report.run(
            _Case(
                "backward: " + name,
                _student(backward, (g, boxes, x.shape) + args, graded),
                _bind(_array_check("dx"), dx),
                "scatter each bin's gradient / count into the 4 pixels of every sample, with the same "
                "bilinear weights as the forward (dropped samples add nothing; accumulate with +=)",
                variants,
            )
        )
    return report.result()


def _sample_counts(boxes, args, shape):
    """Per RoI, grid_h·grid_w (the divisor of every bin's mean)."""
    (ph_n, pw_n), scale, sr, aligned = args
    counts = []
    for roi in boxes:
        rw, rh = (roi[3] - roi[1]) * scale, (roi[4] - roi[2]) * scale
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        gh = sr if sr > 0 else int(math.ceil(rh / ph_n))
        gw = sr if sr > 0 else int(math.ceil(rw / pw_n))
        counts.append(max(gh * gw, 1))
    return np.array(counts, dtype=np.float64)


def _reads_map(reads, h, w):
    """Accumulate [(row, col, weight)] into an (H, W) array of weights; rows/cols must be ints in range
    (negative ones index from the end, as NumPy would)."""
    m = np.zeros((h, w))
    for item in reads:
        r, q, wt = item
        if not (float(r).is_integer() and float(q).is_integer()):
            raise ValueError(f"row and col must be integers, got ({r}, {q})")
        r, q = int(r), int(q)
        if not (-h <= r < h and -w <= q < w):
            raise ValueError(f"read ({r}, {q}) outside the {h}x{w} map")
        m[r, q] += float(wt)
    return m


def _bilinear_check(got, expected):
    y, x, h, w, exp = expected
    try:
        got_map = _reads_map(list(got), h, w)
    except Exception as exc:
        return False, f"not a list of (row, col, weight): {exc}"
    return _diff(got_map, _reads_map(exp, h, w), "weights")


def check_bilinear(
    fn, *, part: str = "all", seed: int | None = None, graded: bool = False, verbose: bool = True
) -> bool:
    """Check the bilinear interpolation of one RoIAlign sample: ``fn(y, x, H, W) -> [(row, col, weight)]``.

    torchvision's rules: a sample with y < −1, y > H, x < −1 or x > W is dropped (return []); else
    y = max(y, 0), y_low = int(y), y_high = y_low + 1, except y_low >= H − 1 reads row H − 1 only (same
    for x); weights (1 − ly)(1 − lx), (1 − ly)·lx, ly·(1 − lx), ly·lx with ly = y − y_low. The reads
    are compared as a weight map (repeated cells add up; zero weights may be left out).
    """
    golden, random, _ = _parts(part, False)
    report = _Report(f"check_bilinear ({part}{', graded' if graded else ''})", verbose)
    shift = 0.0 if seed is None else float(np.random.default_rng(seed).uniform(0.01, 0.2))
    h, w = 5, 6
    cases = (
        [
            (
                "inside: (y, x) = (1.25, 2.5)",
                1.25,
                2.5,
                "weights (1 − ly)(1 − lx), (1 − ly)·lx, ly·(1 − lx), ly·lx",
            ),
            ("on a pixel centre: (2, 3)", 2.0, 3.0, "an integer sample reads its pixel with weight 1"),
            (
                "-1 <= y < 0 reads row 0: (-0.6, 1.5)",
                -0.6 + shift / 4,
                1.5,
                "for −1 <= y < 0 set y = 0 first",
            ),
            (
                "y < -1 is dropped: (-1.2, 2)",
                -1.2 - shift,
                2.0,
                "y < −1 or x < −1: the sample is dropped, []",
            ),
            (
                "y at the last row: (H - 1, 2.5)",
                h - 1.0,
                2.5,
                "y_low >= H − 1: y_low = y_high = H − 1, y = H − 1",
            ),
            (
                "H - 1 < y <= H reads row H - 1: (H - 0.3, 1.5)",
                h - 0.3 - shift,
                1.5,
                "past the last row but not beyond H: read row H − 1 only",
            ),
            ("y > H is dropped: (H + 0.2, 1)", h + 0.2 + shift, 1.0, "y > H or x > W: the sample is dropped"),
            (
                "x near both borders: (2.5, -0.4) and columns",
                2.5,
                -0.4 + shift / 4,
                "the same rules for x with W",
            ),
            (
                "x past the last column: (1.5, W - 0.5)",
                1.5 + shift,
                w - 0.5,
                "x_low >= W − 1: read column W − 1",
            ),
        ]
        if golden
        else []
    )
    rng = _seeded(seed, 7)
    pts = [
        (f"random {i}: ({y:.3f}, {x:.3f})", y, x, "compare with the rules in the docstring")
        for i, (y, x) in enumerate(zip(rng.uniform(-1.5, h + 0.5, 12), rng.uniform(-1.5, w + 0.5, 12)))
    ]
    cases += pts if random else []
    for name, y, x, hint in cases:
        variants = [
            (_ALIGN_BUGS[bug], lambda y=y, x=x, bug=bug: (y, x, h, w, _bilinear_ref(y, x, h, w, bug)))
            for bug in ("int_no_clamp", "floor_no_clamp")
        ]
        report.run(
            _Case(
                name,
                lambda y=y, x=x: _call_student(fn, (y, x, h, w), graded),
                _bind(_bilinear_check, (y, x, h, w, _bilinear_ref(y, x, h, w))),
                hint,
                variants,
            )
        )
    return report.result()


_POOL_BUGS = {
    "np_round": "NumPy's half-to-even rounding: np.round(2.5) = 2 but C's round(2.5) = 3 (halves away from "
    "zero); use floor(v + 0.5) for v >= 0, −floor(−v + 0.5) below",
    "truncate": "int() instead of rounding the box corners: C's round(), halves away from zero",
    "no_plus1": "missing inclusive +1: the rounded box covers x1r..x2r INCLUSIVE, roi_w = max(x2r − "
                "x1r + 1, 1)",
    "max_from_zero": "the max starts at 0: start at −inf, every value in a bin may be negative",
}


def _c_round(v, bug=None):
    if bug == "np_round":
        return int(np.round(v))
    if bug == "truncate":
        return int(v)
    return int(math.floor(v + 0.5)) if v >= 0 else -int(math.floor(-v + 0.5))


def _roi_pool_ref(x, rois, out_size, scale, bug=None):
    ph_n, pw_n = out_size
    n, c, h, w = x.shape
    out = np.zeros((len(rois), c, ph_n, pw_n))
    for k, roi in enumerate(rois):
        x1, y1, x2, y2 = (_c_round(v * scale, bug) for v in roi[1:])
        extra = 0 if bug == "no_plus1" else 1
        bh, bw = max(y2 - y1 + extra, 1) / ph_n, max(x2 - x1 + extra, 1) / pw_n
        for ph in range(ph_n):
            hs = min(max(math.floor(ph * bh) + y1, 0), h)
            he = min(max(math.ceil((ph + 1) * bh) + y1, 0), h)
            for pw in range(pw_n):
                ws = min(max(math.floor(pw * bw) + x1, 0), w)
                we = min(max(math.ceil((pw + 1) * bw) + x1, 0), w)
                if he > hs and we > ws:
                    m = x[int(roi[0]), :, hs:he, ws:we].max(axis=(1, 2))
                    out[k, :, ph, pw] = np.maximum(m, 0) if bug == "max_from_zero" else m
    return out


def _roi_pool_cases(part, seed):
    """(name, input, boxes (K,5), output_size, spatial_scale, hint)."""
    golden, random, _ = _parts(part, False)
    vrng = None if seed is None else np.random.default_rng(seed + 1)
    ramp = _golden_values(_ramp(1, 2, 8, 8), vrng)
    neg = -1.0 - np.abs(ramp)  # all values negative
    cases = (
        [
            (
                "ramp 8x8, integer box (1,1,4,4), 2x2 bins",
                ramp,
                [[0, 1, 1, 4, 4]],
                (2, 2),
                1.0,
                "the rounded box covers x1r..x2r INCLUSIVE: roi_w = x2r − x1r + 1",
            ),
            (
                "box coordinates at .5 after scaling (2.5 -> 3)",
                ramp,
                [[0, 2.5, 0.5, 5.5, 4.5]],
                (2, 2),
                1.0,
                "round halves AWAY from zero like C's round (2.5 -> 3, 0.5 -> 1); np.round rounds to even "
                "(2.5 -> 2): use floor(v + 0.5) for v >= 0",
            ),
            (
                "negative halves (-0.5 -> -1, -1.5 -> -2)",
                ramp,
                [[0, -1.5, -0.5, 3.5, 4.5]],
                (2, 2),
                1.0,
                "C's round(-0.5) = -1 and round(-1.5) = -2 (away from zero); then clip bins to [0, W]",
            ),
            (
                "3x3 bins on a 7-pixel box: overlapping bins",
                ramp,
                [[0, 0, 0, 6, 6]],
                (3, 3),
                1.0,
                "bin edges: hstart = floor(ph·bin_h) + y1r, hend = ceil((ph + 1)·bin_h) + y1r (bins "
                "may overlap)",
            ),
            (
                "output 2x3 (PH != PW), spatial_scale 0.5",
                ramp,
                [[0, 2, 4, 13, 11]],
                (2, 3),
                0.5,
                "scale the box by spatial_scale, then round; PH bins along y, PW along x",
            ),
            (
                "all values negative",
                neg,
                [[0, 1, 2, 5, 6]],
                (2, 2),
                1.0,
                "start the max at -inf (not 0): every value in a bin may be negative",
            ),
            (
                "box outside the map: empty bins give 0",
                ramp,
                [[0, 9.6, 9.6, 12, 12]],
                (2, 2),
                1.0,
                "clip bin edges to [0, H] and [0, W]; a bin with hend <= hstart or wend <= wstart outputs 0",
            ),
            (
                "reversed box becomes 1x1",
                ramp,
                [[0, 5, 5, 3, 3]],
                (2, 2),
                1.0,
                "roi_w = max(x2r − x1r + 1, 1): a reversed box is one pixel wide",
            ),
            (
                "two images, batch index from column 0",
                np.concatenate([ramp, neg]),
                [[1, 1, 1, 4, 6], [0, 0, 2, 3, 5]],
                (2, 2),
                1.0,
                "boxes[k, 0] is the batch index of RoI k",
            ),
        ]
        if golden
        else []
    )
    rng = _seeded(seed, 2)
    for i in range(4 if random else 0):
        n, c, h, w = 2, 3, int(rng.integers(4, 12)), int(rng.integers(4, 12))
        x = rng.standard_normal((n, c, h, w))
        scale = [1.0, 0.5, 0.25, 1.0 / 16][i]
        k = 6
        # Coordinates on a grid of quarter feature pixels, so that halves (rounding ties) occur.
        xy = np.round(rng.uniform(-2, max(h, w), size=(k, 2)) * 4) / 4 / scale
        wh = np.round(rng.uniform(0, max(h, w), size=(k, 2)) * 4) / 4 / scale
        boxes = np.column_stack([rng.integers(0, n, k), xy, xy + wh])
        out = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        cases.append(
            (
                f"random {i}: {h}x{w} map, scale {scale}",
                x,
                boxes,
                out,
                scale,
                "compare with the numbered steps on a single bin",
            )
        )
    return [
        (nm, np.asarray(x, np.float64), np.asarray(b, np.float64), o, s, hint)
        for nm, x, b, o, s, hint in cases
    ]


def check_roi_pool(
    fn, *, part: str = "all", seed: int | None = None, graded: bool = False, verbose: bool = True
) -> bool:
    """Check a RoIPool: ``fn(input, boxes, output_size, spatial_scale) -> (K, C, PH, PW)``.

    input (N, C, H, W); boxes (K, 5) rows (batch_index, x1, y1, x2, y2) in image pixels; output_size
    (PH, PW). Must equal ``torchvision.ops.roi_pool`` (C rounding, inclusive size, floor/ceil bin
    edges clipped to the map, empty bins 0).
    """
    from minimaskrcnn.ops.roi_pool import roi_pool

    report = _Report(f"check_roi_pool ({part}{', graded' if graded else ''})", verbose)
    for name, x, boxes, out_size, scale, hint in _roi_pool_cases(part, seed):
        expected = roi_pool(x, boxes, out_size, scale)
        report.run(
            _Case(
                name,
                _student(fn, (x, boxes, out_size, scale), graded),
                _bind(_array_check(), expected),
                hint,
                [
                    (label, lambda x=x, b=boxes, o=out_size, s=scale, bug=bug: _roi_pool_ref(x, b, o, s, bug))
                    for bug, label in _POOL_BUGS.items()
                ],
            )
        )
    return report.result()


# --------------------------------------------------------------------------------------------------
# IoU and NMS
# --------------------------------------------------------------------------------------------------


def _iou_ref(box, boxes, bug=None):
    one = 1.0 if bug == "plus1" else 0.0
    iw = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]) + one
    ih = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]) + one
    if bug != "no_clamp":
        iw, ih = np.clip(iw, 0, None), np.clip(ih, 0, None)
    inter = iw * ih
    area = (box[2] - box[0] + one) * (box[3] - box[1] + one)
    areas = (boxes[:, 2] - boxes[:, 0] + one) * (boxes[:, 3] - boxes[:, 1] + one)
    union = area + areas if bug == "union_keeps_inter" else area + areas - inter
    return inter / union


_IOU_BUGS = {
    "plus1": "IoU with +1: boxes are continuous (x1, y1, x2, y2), area = (x2 − x1)·(y2 − y1), no +1 anywhere",
    "no_clamp": "overlap not clamped at 0: two disjoint boxes have negative iw and ih whose product "
                "is positive; "
    "iw = max(0, min(x2) − max(x1))",
    "union_keeps_inter": "union = area_a + area_b − inter (the intersection is counted twice otherwise)",
}


def check_iou(
    fn, *, part: str = "all", seed: int | None = None, graded: bool = False, verbose: bool = True
) -> bool:
    """Check IoU of one box with many: ``fn(box (4,), boxes (M, 4)) -> (M,)``, no "+1" (torchvision's
    ``box_iou`` row)."""
    golden, random, _ = _parts(part, False)
    report = _Report(f"check_iou ({part}{', graded' if graded else ''})", verbose)
    t = 0.0 if seed is None else float(np.random.default_rng(seed).integers(-20, 20))
    box = np.array([0.0, 0.0, 4.0, 2.0]) + t
    cases = (
        [
            (
                "partial overlap (IoU 1/3)",
                box,
                np.array([[2.0, 0, 6, 2]]) + t,
                "inter / (area_a + area_b − inter)",
            ),
            ("identical box (IoU 1)", box, box[None].copy(), "IoU of a box with itself is 1"),
            (
                "contained box (IoU 1/4)",
                box,
                np.array([[1.0, 0.5, 3, 1.5]]) + t,
                "inter = the smaller box's area",
            ),
            (
                "disjoint boxes (IoU 0)",
                box,
                np.array([[10.0, 5, 12, 9]]) + t,
                "clamp iw and ih at 0 before multiplying",
            ),
            (
                "touching edge (IoU 0)",
                box,
                np.array([[4.0, 0, 5, 2]]) + t,
                "boxes sharing an edge do not overlap",
            ),
            (
                "small boxes (no +1)",
                np.array([0.0, 0, 1, 1]) + t,
                np.array([[0.5, 0, 1.5, 1]]) + t,
                "no +1: area = (x2 − x1)·(y2 − y1)",
            ),
            (
                "several boxes at once",
                box,
                np.array([[2.0, 0, 6, 2], [10, 5, 12, 9], [0, 0, 4, 2]]) + t,
                "one IoU per row of boxes, shape (M,)",
            ),
        ]
        if golden
        else []
    )
    rng = _seeded(seed, 8)
    for i in range(3 if random else 0):
        xy = rng.uniform(0, 30, size=(25, 2))
        boxes = np.column_stack([xy, xy + rng.uniform(0.2, 15, size=(25, 2))])
        cases.append((f"random {i}: 1 box against 25", boxes[0], boxes[1:], "check one row by hand"))
    for name, b, bs, hint in cases:
        report.run(
            _Case(
                name,
                _student(fn, (b, bs), graded),
                _bind(_array_check("iou"), _iou_ref(b, bs)),
                hint,
                [
                    (label, lambda b=b, bs=bs, bug=bug: _iou_ref(b, bs, bug))
                    for bug, label in _IOU_BUGS.items()
                ],
            )
        )
    return report.result()


_NMS_BUGS = {
    "ge": "'>=' instead of '>': suppress only when IoU > threshold (strictly); IoU exactly at the threshold "
    "survives",
    "plus1": "IoU with +1: area = (x2 − x1)·(y2 − y1), inter = max(0, min(x2) − max(x1))·(...), no +1",
    "tie_reversed": "unstable tie order: scores.argsort()[::-1] puts equal scores higher index first; use "
    "np.argsort(-scores, kind='stable') (lower index first)",
    "unstable": "unstable tie order: np.argsort(-scores) is not stable; use kind='stable' (lower "
                "index first)",
    "suppressed_suppress": "a suppressed box must not suppress others: skip it when you reach it",
}


def _nms_ref(boxes, scores, thr, bug=None):
    if bug == "tie_reversed":
        order = np.argsort(scores, kind="stable")[::-1]
    elif bug == "unstable":
        order = np.argsort(-scores, kind="quicksort")
    else:
        order = np.argsort(-scores, kind="stable")
    suppressed = np.zeros(len(boxes), bool)
    keep = []
    for pos, i in enumerate(order):
        if suppressed[i] and bug != "suppressed_suppress":
            continue
        if not suppressed[i]:
            keep.append(int(i))
        later = order[pos + 1 :]
        iou = _iou_ref(boxes[i], boxes[later], "plus1" if bug == "plus1" else None)
        suppressed[later[(iou >= thr) if bug == "ge" else (iou > thr)]] = True
    return np.array(keep, dtype=np.int64)


def _same_indices(got, expected):
    try:
        got = np.asarray(got)
    except Exception as exc:
        return False, f"not an array ({exc})"
    if got.ndim != 1:
        return False, f"kept indices must be 1-D, got shape {tuple(int(s) for s in got.shape)}"
    if got.size and not np.issubdtype(got.dtype, np.integer):
        return False, f"kept indices must be integers, got dtype {got.dtype}"
    g, e = [int(v) for v in got.tolist()], [int(v) for v in np.asarray(expected).tolist()]
    if g != e:
        return (
            False,
            f"kept {g[:12]}{' ...' if len(g) > 12 else ''}, expected {e[:12]}{' ...' if len(e) > 12 else ''}",
        )
    return True, f"kept {len(e)} of the boxes, same order"


def check_nms(
    fn, *, part: str = "all", seed: int | None = None, graded: bool = False, verbose: bool = True
) -> bool:
    """Check greedy NMS: ``fn(boxes (N, 4), scores (N,), iou_threshold) -> kept indices``.

    Semantics of ``torchvision.ops.nms``: visit boxes by decreasing score (equal scores: lower index
    first); keep a box unless a kept box has IoU > iou_threshold with it; IoU without "+1". The
    indices must come out in decreasing score order.
    """
    from minimaskrcnn.ops.nms import nms

    golden, random, _ = _parts(part, False)
    report = _Report(f"check_nms ({part}{', graded' if graded else ''})", verbose)
    t = 0.0 if seed is None else float(np.random.default_rng(seed).integers(-50, 50))
    cases = (
        [
            # IoU(a, b) = 2 / (4 + 4 − 2) = 1/3; c is far away.
            (
                "3 boxes, IoU(a, b) = 1/3 > 0.3: b suppressed",
                [[0, 0, 2, 2], [1, 0, 3, 2], [4, 4, 5, 5]],
                [0.9, 0.8, 0.7],
                0.3,
                "keep a box, drop every later box whose IoU with it is > threshold",
            ),
            # IoU = 2 / 4 = 0.5 exactly (b lies inside a, half its area).
            (
                "IoU exactly equal to the threshold 0.5 survives",
                [[0, 0, 2, 2], [0, 0, 2, 1]],
                [0.9, 0.8],
                0.5,
                "suppress only when IoU > threshold (strictly), not >=",
            ),
            # Without +1: inter 0.5, union 1.5, IoU 1/3 -> kept at 0.5. With +1: 3 / 5 = 0.6 -> dropped.
            (
                "small boxes: IoU without '+1'",
                [[0, 0, 1, 1], [0.5, 0, 1.5, 1]],
                [0.9, 0.8],
                0.5,
                "area = (x2 − x1)·(y2 − y1) and inter = max(0, min(x2) − max(x1))·(...), no +1 anywhere",
            ),
            (
                "scores not sorted: output by decreasing score",
                [[0, 0, 1, 1], [5, 5, 6, 6], [10, 10, 11, 11]],
                [0.2, 0.9, 0.5],
                0.5,
                "return the kept indices in decreasing score order (here [1, 2, 0])",
            ),
            (
                "a suppressed box suppresses nothing",
                [[0, 0, 10, 10], [5, 0, 15, 10], [10, 0, 20, 10]],
                [0.9, 0.8, 0.7],
                0.3,
                "only KEPT boxes suppress: c overlaps b (dropped by a) but not a",
            ),
            (
                "boxes that only touch (IoU 0)",
                [[0, 0, 1, 1], [1, 0, 2, 1], [0, 1, 1, 2]],
                [0.9, 0.8, 0.7],
                0.0,
                "boxes sharing an edge have intersection 0 (clamp each side at 0)",
            ),
            (
                "equal scores: lower index first",
                [[0, 0, 4, 4], [0, 0, 4, 4.5], [20, 20, 24, 24]],
                [0.5, 0.5, 0.5],
                0.5,
                "sort stably by decreasing score: np.argsort(-scores, kind='stable')",
            ),
            ("empty input", np.zeros((0, 4)), np.zeros(0), 0.5, "no boxes in, empty int64 array out"),
        ]
        if golden
        else []
    )
    cases = [(nm, np.asarray(b, np.float64).reshape(-1, 4) + t, s, thr, h) for nm, b, s, thr, h in cases]
    rng = _seeded(seed, 3)
    for i, thr in enumerate((0.3, 0.5, 0.7) if random else ()):
        n = 60
        xy = rng.uniform(0, 40, size=(n, 2))
        wh = rng.uniform(2, 20, size=(n, 2))
        # a few tied scores, so that the tie order matters
        scores = np.round(rng.uniform(size=n), 1)
        cases.append(
            (
                f"random {i}: {n} boxes, threshold {thr}",
                np.column_stack([xy, xy + wh]),
                scores,
                thr,
                "compare your IoU matrix with a hand computation",
            )
        )
    for name, boxes, scores, thr, hint in cases:
        scores = np.asarray(scores, np.float64)
        expected = nms(boxes, scores, thr)
        report.run(
            _Case(
                name,
                _student(fn, (boxes, scores, thr), graded),
                _bind(_same_indices, expected),
                hint,
                [
                    (label, lambda b=boxes, s=scores, t=thr, bug=bug: _nms_ref(b, s, t, bug))
                    for bug, label in _NMS_BUGS.items()
                ],
            )
        )
    return report.result()


# --------------------------------------------------------------------------------------------------
# Box coding
# --------------------------------------------------------------------------------------------------

_CODER_BUGS = {
    "plus1": "+1 widths: w = x2 − x1 (no +1), cx = x1 + 0.5·w",
    "plus1_no_minus": "+1 widths: w = x2 − x1 (no +1), cx = x1 + 0.5·w",
    "swapped": "arguments swapped: encode(reference_boxes, proposals) moves the PROPOSAL onto the reference "
    "box, in units of the proposal's size",
    "encode_divides": "weights divided on encode: MULTIPLY the deltas by (wx, wy, ww, wh) when encoding",
    "decode_multiplies": "weights multiplied on decode: DIVIDE the deltas by (wx, wy, ww, wh) "
                         "before decoding",
    "no_clamp": "missing clamp: dw = min(dw / ww, log(1000/16)) before exp (same for dh)",
}


def _centre_size(b, one=0.0):
    w, h = b[:, 2] - b[:, 0] + one, b[:, 3] - b[:, 1] + one
    return b[:, 0] + 0.5 * w, b[:, 1] + 0.5 * h, w, h


def _encode_ref(ref, prop, weights, bug=None):
    if bug == "swapped":
        ref, prop = prop, ref
    one = 1.0 if bug == "plus1" else 0.0
    wts = np.asarray(weights, np.float64)
    if bug == "encode_divides":
        wts = 1.0 / wts
    gx, gy, gw, gh = _centre_size(ref, one)
    px, py, pw, ph = _centre_size(prop, one)
    return np.stack([(gx - px) / pw, (gy - py) / ph, np.log(gw / pw), np.log(gh / ph)], axis=1) * wts


def _decode_ref(deltas, boxes, weights, bug=None):
    one = 1.0 if bug in ("plus1", "plus1_no_minus") else 0.0
    wts = np.asarray(weights, np.float64)
    d = deltas * wts if bug == "decode_multiplies" else deltas / wts
    px, py, pw, ph = _centre_size(boxes, one)
    dw, dh = (
        (d[:, 2], d[:, 3])
        if bug == "no_clamp"
        else (np.minimum(d[:, 2], BBOX_XFORM_CLIP), np.minimum(d[:, 3], BBOX_XFORM_CLIP))
    )
    cx, cy, w, h = d[:, 0] * pw + px, d[:, 1] * ph + py, np.exp(dw) * pw, np.exp(dh) * ph
    if bug == "plus1_no_minus":  # +1 in the sizes only, corners without the matching −1
        return np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=1)
    return np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w - one, cy + 0.5 * h - one], axis=1)


def check_box_coder(
    encode, decode, *, part: str = "all", seed: int | None = None, graded: bool = False, verbose: bool = True
) -> bool:
    """Check box encoding and decoding (torchvision's ``BoxCoder`` arithmetic).

    encode(reference_boxes (N, 4), proposals (N, 4), weights) -> (N, 4) deltas (dx, dy, dw, dh) that
    move each proposal onto its reference box; decode(deltas (N, 4), boxes (N, 4), weights) -> (N, 4)
    boxes (x1, y1, x2, y2). weights = (wx, wy, ww, wh). w = x2 − x1 (no +1), cx = x1 + 0.5·w; decode
    clamps dw/ww and dh/wh at log(1000/16) before exp.
    """
    from minimaskrcnn.ops.box_coder import BoxCoder

    golden, random, _ = _parts(part, False)
    report = _Report(f"check_box_coder ({part}{', graded' if graded else ''})", verbose)
    t = np.zeros(4) if seed is None else np.tile(np.random.default_rng(seed).integers(-30, 30, 2), 2) * 1.0
    # Worked example: reference (0,0,10,10): centre (5,5), size 10x10; target (2,2,22,12): centre (12,7),
    # size 20x10 -> deltas (0.7, 0.2, log 2, 0) with weights 1.
    worked_ref = np.array([[2.0, 2.0, 22.0, 12.0]]) + t
    worked_prop = np.array([[0.0, 0.0, 10.0, 10.0]]) + t
    rng = _seeded(seed, 4)
    xy = rng.uniform(0, 100, size=(20, 2))
    rand_ref = np.column_stack([xy, xy + rng.uniform(1, 50, size=(20, 2))])
    xy = rng.uniform(0, 100, size=(20, 2))
    rand_prop = np.column_stack([xy, xy + rng.uniform(1, 50, size=(20, 2))])
    rand_deltas = rng.normal(0, 2, size=(20, 4))
    rand_deltas[::5, 2:] = rng.uniform(4.5, 8, size=(4, 2)) * 5  # some beyond the clamp after / ww
    enc_cases = (
        [
            (
                "encode: worked example, weights (1,1,1,1)",
                worked_ref,
                worked_prop,
                (1.0, 1.0, 1.0, 1.0),
                "dx = wx·(gx − ax)/aw with centres cx = x1 + 0.5·w and w = x2 − x1 (no +1); dw = "
                "ww·log(gw/aw)",
            ),
            (
                "encode: box-head weights (10,10,5,5)",
                worked_ref,
                worked_prop,
                (10.0, 10.0, 5.0, 5.0),
                "MULTIPLY the deltas by the weights when encoding (divide when decoding)",
            ),
            (
                "encode: order of arguments (reference_boxes, proposals)",
                worked_prop,
                worked_ref,
                (1.0, 1.0, 1.0, 1.0),
                "encode(reference_boxes, proposals): deltas move the PROPOSAL onto the "
                "reference (ground-truth) box, in units of the proposal's size",
            ),
        ]
        if golden
        else []
    ) + (
        [
            (
                "encode: 20 random boxes, weights (10,10,5,5)",
                rand_ref,
                rand_prop,
                (10.0, 10.0, 5.0, 5.0),
                "check one row by hand",
            )
        ]
        if random
        else []
    )
    for name, ref, prop, weights, hint in enc_cases:
        expected = BoxCoder(weights).encode(ref, prop)
        report.run(
            _Case(
                name,
                _student(encode, (ref, prop, weights), graded),
                _bind(_array_check("deltas"), expected),
                hint,
                [
                    (_CODER_BUGS[bug], lambda r=ref, p=prop, w=weights, bug=bug: _encode_ref(r, p, w, bug))
                    for bug in ("plus1", "swapped", "encode_divides")
                ],
            )
        )
    big = np.array([[0.5, -0.3, 8.0, 6.0], [0.0, 0.0, -9.0, 10.0]])  # dw, dh beyond log(1000/16) = 4.135
    dec_cases = (
        [
            (
                "decode: worked example back to (2,2,22,12)",
                np.array([[0.7, 0.2, math.log(2.0), 0.0]]),
                worked_prop,
                (1.0, 1.0, 1.0, 1.0),
                "centre = dx·aw + ax, size = exp(dw)·aw, box = centre ∓ size/2",
            ),
            (
                "decode: weights (10,10,5,5)",
                np.array([[7.0, 2.0, 5 * math.log(2.0), 0.0]]),
                worked_prop,
                (10.0, 10.0, 5.0, 5.0),
                "DIVIDE the deltas by the weights before decoding",
            ),
            (
                "decode: huge dw, dh are clamped at log(1000/16)",
                big,
                np.array([[0, 0, 10, 10], [5, 5, 9, 7.0]]) + t,
                (1.0, 1.0, 1.0, 1.0),
                "dw = min(dw / ww, log(1000/16)) before exp (only from above)",
            ),
        ]
        if golden
        else []
    ) + (
        [
            (
                "decode: 20 random deltas, weights (10,10,5,5)",
                rand_deltas,
                rand_prop,
                (10.0, 10.0, 5.0, 5.0),
                "check one row by hand",
            )
        ]
        if random
        else []
    )
    for name, deltas, boxes, weights, hint in dec_cases:
        expected = BoxCoder(weights).decode(deltas, boxes)
        report.run(
            _Case(
                name,
                _student(decode, (deltas, boxes, weights), graded),
                _bind(_array_check("boxes"), expected),
                hint,
                [
                    (
                        _CODER_BUGS[bug],
                        lambda d=deltas, b=boxes, w=weights, bug=bug: _decode_ref(d, b, w, bug),
                    )
                    for bug in ("plus1", "plus1_no_minus", "decode_multiplies", "no_clamp")
                ],
            )
        )
    if golden:
        wts = (10.0, 10.0, 5.0, 5.0)
        g = rand_ref[:5] + t
        p = rand_prop[:5] + t

        def round_trip():
            return _call_student(
                decode, (_call_student(encode, (g.copy(), p.copy(), wts), graded), p.copy(), wts), graded
            )

        report.run(
            _Case(
                "round trip: decode(encode(g, p), p) == g",
                round_trip,
                _bind(_array_check("boxes"), g),
                "decode must invert encode exactly",
            )
        )
    return report.result()


# --------------------------------------------------------------------------------------------------
# Mask loss
# --------------------------------------------------------------------------------------------------


def _mask_loss_variant(z, labels, t, kind, bug):
    """The classic bugs of the two mask losses: (loss, dlogits)."""
    r_n, c_n, m, _ = z.shape
    r = np.arange(r_n)
    n = {"count_R": r_n, "count_MM": m * m, "count_RCMM": r_n * c_n * m * m, "count_sum": 1}.get(bug, t.size)
    if kind == "sigmoid" and bug in ("all_channels", "all_channels_mean", "all_channels_target_t"):
        # every channel in the BCE: target 0 on the other classes' channels (one-hot), or t on all of them
        if bug == "all_channels_target_t":
            tt = np.broadcast_to(t[:, None], z.shape)
        else:
            tt = np.zeros_like(z)
            tt[r, labels] = t
        n = z.size if bug == "all_channels_mean" else t.size
        loss = (np.maximum(z, 0) - z * tt + np.log1p(np.exp(-np.abs(z)))).sum() / n
        return float(loss), (1 / (1 + np.exp(-z)) - tt) / n
    if kind == "sigmoid":
        zk = z[r, labels]
        d = np.zeros_like(z)
        d[r, labels] = (1 / (1 + np.exp(-zk)) - t) / n
        return float((np.maximum(zk, 0) - zk * t + np.log1p(np.exp(-np.abs(zk)))).sum() / n), d
    zz = z - z.max(axis=1, keepdims=True)
    logp = zz - np.log(np.exp(zz).sum(axis=1, keepdims=True))
    q = np.zeros_like(z)
    q[r, labels] = t
    if bug == "no_background":
        loss = -(q * logp).sum() / n
        d = t[:, None] * np.exp(logp)
        d[r, labels] -= t
        return float(loss), d / n
    q[:, 0] += 1 - t
    return float(-(q * logp).sum() / n), (np.exp(logp) - q) / n


_MASK_BUGS = {
    "count_R": "mean over the wrong count: divide by R·M·M (every pixel of every RoI), not by R",
    "count_MM": "mean over the wrong count: divide by R·M·M (every pixel of every RoI), not by M·M",
    "count_RCMM": "mean over the wrong count: divide by R·M·M, not by R·C·M·M (only one channel per RoI "
    "has a target)",
    "count_sum": "mean over the wrong count: the loss is a MEAN over the R·M·M pixels, not a sum",
}
_MASK_KIND_BUGS = {
    "sigmoid": {
        "all_channels": "all channels in the sigmoid loss: only channel labels[r] gets a loss; every "
        "other channel has no target and gradient 0",
        "all_channels_mean": "all channels in the sigmoid loss (averaged over R·C·M·M): only channel "
        "labels[r] gets a loss, mean over R·M·M",
        "all_channels_target_t": "all channels in the sigmoid loss (target t on every channel): only "
        "channel labels[r] gets a loss; the other channels have no target and gradient 0",
    },
    "softmax": {
        "no_background": "softmax without the background target: q = t on channel labels[r] AND "
        "1 − t on channel 0"
    },
}


def check_mask_loss(
    fn, kind: str, *, part: str = "all", seed: int | None = None, graded: bool = False, verbose: bool = True
) -> bool:
    """Check a mask loss: ``fn(mask_logits (R, C, M, M), labels (R,), mask_targets (R, M, M))
    -> (loss, dlogits)``.

    mask_logits: one M×M logit map per class for each of R positive RoIs (channel 0 the background);
    labels: the GT class k_r in 1..C−1 of each RoI; mask_targets: the GT mask in the RoI, t in [0, 1].
    Both losses are means over the R·M·M pixels.

    - ``"sigmoid"`` (the paper's): binary cross-entropy on the GT class channel only,
      loss = mean −[t·log σ(z_k) + (1 − t)·log(1 − σ(z_k))]; d/dz_k = (σ(z_k) − t) / (R·M·M), every
      other channel 0.
    - ``"softmax"`` (Table 2b's ablation): per pixel a softmax p over the C channels, target t on
      channel k_r and 1 − t on channel 0: loss = mean −[t·log p_k + (1 − t)·log p_0];
      d/dz = (p − q) / (R·M·M), q = t on channel k_r, 1 − t on channel 0, 0 elsewhere.

    ``part`` "golden" / "random" check the loss value, "backward" the gradient (on all cases), so a
    wrong gradient and a wrong loss cost separately.
    """
    from minimaskrcnn.model.roi_heads import mask_loss

    if kind not in ("sigmoid", "softmax"):
        raise ValueError(f"kind must be 'sigmoid' or 'softmax', got {kind!r}")
    golden, random, backward = _parts(part, True)
    if part == "backward":
        golden = random = True
    report = _Report(f"check_mask_loss ({kind}, {part}{', graded' if graded else ''})", verbose)
    hint = {
        "sigmoid": "per-pixel BCE on channel labels[r] only (other channels: no loss, zero gradient); "
        "mean over R·M·M pixels; d/dz = (σ(z) − t) / (R·M·M)",
        "softmax": "softmax across the C channels at each pixel; target t on channel labels[r] and 1 − t "
        "on channel 0; mean over R·M·M pixels; d/dz = (p − q) / (R·M·M)",
    }[kind]
    vrng = None if seed is None else np.random.default_rng(seed + 1)
    # One RoI, 3 channels (background + 2 classes), 2x2 mask, hard target.
    golden_z = np.array([[[[0.0, 1.0], [-1.0, 2.0]], [[0.5, -0.5], [1.5, 0.0]], [[2.0, 0.0], [0.0, -2.0]]]])
    if vrng is not None:
        golden_z = golden_z + vrng.normal(0, 0.5, golden_z.shape)
    cases = (
        [
            (
                "1 RoI, 3 channels, 2x2, hard mask, class 1",
                golden_z,
                np.array([1]),
                np.array([[[1.0, 0.0], [1.0, 1.0]]]),
            ),
            (
                "same logits, class 2 (channel = label)",
                golden_z,
                np.array([2]),
                np.array([[[1.0, 0.0], [1.0, 1.0]]]),
            ),
            (
                "2 RoIs, 4 channels, 3x3 (mean over R·M·M)",
                np.random.default_rng(12).normal(0, 2, (2, 4, 3, 3)),
                np.array([3, 1]),
                np.array([[[1.0, 0, 1], [0, 1, 1], [1, 1, 0]], [[0, 0, 1.0], [1, 1, 0], [0.5, 1, 0]]]),
            ),
            (
                "large logits (|z| ~ 50): stable log",
                golden_z * 25,
                np.array([2]),
                np.array([[[1.0, 0.0], [0.5, 1.0]]]),
            ),
        ]
        if golden
        else []
    )
    rng = _seeded(seed, 5)
    for i, (r, c, m) in enumerate(((4, 3, 5), (6, 5, 7), (3, 8, 4)) if random else ()):
        z = rng.normal(0, 3, size=(r, c, m, m))
        labels = rng.integers(1, c, size=r)
        t = rng.uniform(size=(r, m, m)) if i % 2 else (rng.uniform(size=(r, m, m)) > 0.5).astype(np.float64)
        cases.append(
            (f"random {i}: R={r}, C={c}, M={m}, {'soft' if i % 2 else 'hard'} targets", z, labels, t)
        )
    bugs = dict(_MASK_BUGS, **_MASK_KIND_BUGS[kind])

    def check_loss(got, expected):
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            return False, "must return a tuple (loss, dlogits)"
        return _diff(np.asarray(got[0], dtype=np.float64).reshape(()), expected[0], "loss")

    def check_grad(got, expected):
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            return False, "must return a tuple (loss, dlogits)"
        return _diff(got[1], expected[1], "dlogits")

    for name, z, labels, t in cases:
        expected = mask_loss(z, labels, t, kind)
        variants = [
            (label, lambda z=z, lb=labels, t=t, bug=bug: _mask_loss_variant(z, lb, t, kind, bug))
            for bug, label in bugs.items()
        ]
        if part != "backward":
            report.run(
                _Case(
                    "loss:     " + name,
                    _student(fn, (z, labels, t), graded),
                    _bind(check_loss, expected),
                    hint,
                    variants,
                )
            )
        if backward:
            report.run(
                _Case(
                    "gradient: " + name,
                    _student(fn, (z, labels, t), graded),
                    _bind(check_grad, expected),
                    hint,
                    variants,
                )
            )
    return report.result()
