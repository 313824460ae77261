"""Argument checks shared by every public function.

Each check raises ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong shape or
value) with a message that names the argument and says what was expected, *before* any Numba kernel
runs: a kernel that indexes out of bounds can crash the interpreter instead of raising.
"""

from __future__ import annotations

import numpy as np


def float_array(x, name: str, ndim: int | None = None) -> np.ndarray:
    """Return ``x`` as a floating-point ndarray (float32 or float64, unchanged), or raise.

    Integer and boolean arrays are refused rather than silently converted: a uint8 image passed
    where features are expected is a bug worth hearing about.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must have dtype float32 or float64, got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}")
    return x


def check_shape(x: np.ndarray, name: str, shape: tuple) -> None:
    """Raise ValueError unless ``x.shape`` matches ``shape`` (``None`` entries match anything)."""
    if x.ndim != len(shape) or any(s is not None and s != t for s, t in zip(shape, x.shape)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {x.shape}")


def check_finite(x: np.ndarray, name: str) -> None:
    """Raise ValueError if ``x`` holds NaN or infinity."""
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite, found NaN or inf")


def pair(v, name: str, minimum: int = 0) -> tuple[int, int]:
    """Normalise an int or a 2-sequence of ints into ``(vh, vw)``, each ≥ ``minimum``.

    Floats (even 2.0) and bools are refused, as torch refuses them: a size computed as a float is
    usually a bug (a division that should have been ``//``)."""
    def is_int(a):
        return isinstance(a, (int, np.integer)) and not isinstance(a, (bool, np.bool_))

    if is_int(v):
        v = (int(v), int(v))
    else:
        try:
            items = tuple(v)
        except TypeError:
            raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}") from None
        if not all(is_int(a) for a in items):
            raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}")
        if len(items) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
        v = tuple(int(a) for a in items)
    if v[0] < minimum or v[1] < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


# -- output locations: checked before any long work starts --------------------------------------------

def _probe_write(folder: str, name: str) -> None:
    """Create and remove an empty file in ``folder``: the only reliable test that a write will work
    (``os.access`` says yes to root on a read-only mount, and nothing about a full quota)."""
    import os
    import secrets

    probe = os.path.join(folder, f".minimaskrcnn-write-test.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        with open(probe, "xb"):
            pass
    except OSError as exc:
        raise ValueError(f"{name}: cannot write into folder {folder!r}: {exc.strerror}") from None
    os.unlink(probe)


def writable_folder(path, name: str) -> str:
    """Create the output folder ``path`` (and its parents) if needed and check that files can be
    written into it; raise ValueError naming the argument ``name`` otherwise. Returns ``path``."""
    import os

    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{name}: {path!r} exists and is not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{name}: cannot create folder {path!r}: {exc.strerror}") from None
    _probe_write(path, name)
    return path


def creatable_folder(path, name: str) -> str:
    """Check, without creating anything, that the output folder ``path`` exists and accepts files or
    could be created: its nearest existing ancestor is a folder that accepts files. ValueError naming
    the argument ``name`` otherwise; returns ``path``. (For commands that read and check their input
    before they create their output folder.)"""
    import os

    path = os.fspath(path)
    if os.path.isdir(path):
        _probe_write(path, name)
        return path
    folder = os.path.abspath(path)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"{name}: {folder!r} (in {path!r}) exists and is not a folder")
    _probe_write(folder, name)
    return path


def writable_file(path, name: str) -> str:
    """Check that the output file ``path`` can be written: its folder exists and accepts files, and
    ``path`` is not a folder. Raise ValueError naming the argument ``name`` otherwise; returns ``path``.
    (The file itself is not created: writers replace it atomically at the end.)"""
    import os

    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{name}: {path!r} is a folder, expected a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(f"{name}: {os.path.dirname(path)!r} (in {path!r}) is a file, not a folder")
    if not os.path.isdir(folder):
        raise ValueError(f"{name}: folder {os.path.dirname(path) or folder!r} of {path!r} does not exist")
    _probe_write(folder, name)
    return path
