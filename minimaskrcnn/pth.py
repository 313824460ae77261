"""Read a PyTorch ``.pth`` state_dict into NumPy arrays without torch — and without running its pickle.

A ``.pth`` written by ``torch.save(model.state_dict(), path)`` is a pickle in which every tensor is
a call to a torch function that rebuilds it from a raw byte "storage". ``pickle.load`` would import
and call whatever the file names, so a malicious file runs arbitrary code. Here the unpickler only
resolves a short allow-list of names (below); anything else is refused with ``UnsafePickleError``
before it is imported or called. The allowed callables are our own NumPy stand-ins, never torch's.

Two container formats exist and both are read:

1. **zip** (torch ≥ 1.6, the default): ``<name>/data.pkl`` holds the pickle; ``<name>/data/<key>``
   holds the raw little-endian bytes of storage ``key``; ``<name>/byteorder`` (if present) says
   ``little`` or ``big``.
2. **legacy** (torch < 1.6, e.g. torchvision's 2019 detection weights): five consecutive pickles in
   one stream — magic number, protocol version, system info, the object, the list of storage keys —
   followed, for each key in that order, by an int64 element count and the raw bytes.

In both, a storage is referenced by a *persistent id*
``("storage", storage_type, key, location, numel[, view_metadata])`` and a tensor by
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])``.

A hostile file gets no further than an error naming it (``ValueError``, or ``UnsafePickleError`` for a
name outside the allow-list), never a crash, a hang or a huge allocation:

* every read builds its own stand-ins and tables (nothing is shared between two reads), and the
  stand-ins refuse the pickle's BUILD opcode, so a file cannot change how the next one is read;
* storages and tensors are checked against the bytes the file actually holds *before* anything is
  allocated: a storage's declared element count against its zip member (or the legacy file's
  remaining bytes), a tensor's offset, sizes and strides against its storage;
* everything allocated in one read (storages and the tensors copied out of them) fits a budget of
  ``4 × file size + 1 MiB``: a stride-0 tensor that would expand 4 bytes into 256 MiB, or a
  compressed zip member that would inflate to 512 MiB, is refused;
* tensors are copied out only for the entries of the state_dict that is returned, and nothing walks
  the rest of the pickle's object graph, so shared references and cycles cost nothing (a cycle
  where a tensor should be is "not a tensor").
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# torch storage class name -> numpy dtype (the element type of the raw bytes).
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafePickleError(pickle.UnpicklingError):
    """The file asks the unpickler for something outside the state_dict allow-list."""


# Each read's budget for what it allocates: this many times the file's size, plus BUDGET_SLACK bytes.
BUDGET_FACTOR = 4
BUDGET_SLACK = 2**20


class _Frozen:
    """Base of the stand-ins the unpickler hands out: a pickle's BUILD opcode calls ``__setstate__``,
    which here refuses, so a file cannot rewrite a stand-in (not even this read's own copy)."""

    __slots__ = ()

    def __setstate__(self, state):
        raise UnsafePickleError(f"the pickle tries to modify {self!r}; a state_dict never does that")


class _StorageType(_Frozen):
    """Stand-in for ``torch.FloatStorage`` & co.: only knows its dtype."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", np.dtype(_STORAGE_DTYPES[name]))

    def __setattr__(self, key, value):
        raise UnsafePickleError(f"the pickle tries to modify torch.{self.name}")

    def __repr__(self):
        return f"torch.{self.name}"


class _Callable(_Frozen):
    """Stand-in for one allowed torch / collections function: calls our NumPy version of it."""

    __slots__ = ("qualname", "fn")

    def __init__(self, qualname, fn):
        object.__setattr__(self, "qualname", qualname)
        object.__setattr__(self, "fn", fn)

    def __setattr__(self, key, value):
        raise UnsafePickleError(f"the pickle tries to modify {self.qualname}")

    def __call__(self, *args):
        return self.fn(*args)

    def __repr__(self):
        return self.qualname


def _count(v, what: str, limit: int = 2**62) -> int:
    """``v`` as a Python int in [0, limit), else ValueError (never formats a gigantic number)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"{what} must be an int, got {type(v).__name__}")
    v = int(v)
    if not 0 <= v < limit:
        raise ValueError(f"{what} must lie in [0, 2**{limit.bit_length() - 1})")
    return v


class _Storage:
    """A flat array of one dtype, filled from the file's raw bytes (later, for the legacy format)."""

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key, self.dtype, self.numel = key, dtype, numel
        self.array: np.ndarray | None = None


class _LazyTensor:
    """A strided view of a storage, checked against the storage's declared size when made and copied
    out (within the read's budget) only if it is an entry of the returned state_dict."""

    def __init__(self, storage: _Storage, offset, size, stride):
        try:
            size, stride = tuple(size), tuple(stride)
        except TypeError:
            raise ValueError("a tensor's size and stride must be sequences of ints") from None
        if len(size) != len(stride) or len(size) > 32:
            raise ValueError(f"a tensor has {len(size)} sizes and {len(stride)} strides (at most 32 dims)")
        self.storage = storage
        self.offset = _count(offset, "a tensor's storage offset")
        self.size = tuple(_count(n, "a tensor's size") for n in size)
        self.stride = tuple(_count(n, "a tensor's stride") for n in stride)
        self.numel = math.prod(self.size)
        if self.numel:
            last = self.offset + sum((n - 1) * st for n, st in zip(self.size, self.stride))
            if last >= storage.numel:
                raise ValueError(f"a tensor (offset {self.offset}, size {self.size}, stride {self.stride}) "
                                 f"reaches past its storage {storage.key!r} of {storage.numel} elements")

    def materialize(self, read: "_Read") -> np.ndarray:
        flat = self.storage.array
        if flat is None:
            raise ValueError(f"a tensor refers to storage {self.storage.key!r}, whose bytes are missing")
        if self.numel == 0:
            return np.zeros(self.size, dtype=flat.dtype)
        read.charge(self.numel * flat.itemsize, f"a tensor of shape {self.size}")
        view = np.lib.stride_tricks.as_strided(flat[self.offset:], shape=self.size,
                                               strides=tuple(s * flat.itemsize for s in self.stride),
                                               writeable=False)
        return np.array(view)  # own the memory; never alias the file buffer


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise UnsafePickleError("_rebuild_tensor_v2 called without a storage")
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    return data


def _ordered_dict(*args):
    return collections.OrderedDict(*args)


class _Read:
    """Everything one read of one file uses: its stand-ins, its storages, its budget. A new one per
    read, so that nothing a file does can reach another read."""

    def __init__(self, path: Path):
        self.path = path
        self.file_size = path.stat().st_size
        self.budget = BUDGET_FACTOR * self.file_size + BUDGET_SLACK
        self.used = 0
        # (module, name) -> what the unpickler hands back. Nothing outside this table is imported.
        self.allowed = {
            ("collections", "OrderedDict"): _Callable("collections.OrderedDict", _ordered_dict),
            ("torch._utils", "_rebuild_tensor_v2"): _Callable("torch._utils._rebuild_tensor_v2",
                                                              _rebuild_tensor_v2),
            ("torch._utils", "_rebuild_parameter"): _Callable("torch._utils._rebuild_parameter",
                                                              _rebuild_parameter),
            **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
        }
        self.storages: dict[str, _Storage] = {}

    def charge(self, nbytes: int, what: str) -> None:
        """Count ``nbytes`` against the budget before they are allocated; refuse past it."""
        self.used += nbytes
        if self.used > self.budget:
            raise ValueError(f"{what} would bring what this file allocates to more than {self.budget} "
                             f"bytes ({BUDGET_FACTOR} x its {self.file_size} bytes + {BUDGET_SLACK}): "
                             "it declares far more data than it holds")

    def storage(self, key, dtype: np.dtype, numel: int) -> tuple[_Storage, bool]:
        """The storage ``key`` (new: True) — the same key must always declare the same dtype and size."""
        st = self.storages.get(key)
        if st is None:
            st = self.storages[key] = _Storage(key, dtype, numel)
            return st, True
        if st.dtype != dtype or st.numel != numel:
            raise ValueError(f"storage {key!r} is declared twice, as {st.numel} x {st.dtype} and "
                             f"{numel} x {dtype}")
        return st, False

    def unpickler(self, file, load_storage):
        return _RestrictedUnpickler(file, self.allowed, load_storage)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, allowed, load_storage):
        super().__init__(file, encoding="utf-8")
        self._allowed = allowed
        self._load_storage = load_storage

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except (KeyError, TypeError):
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: a state_dict file only needs tensors, storages "
                "and OrderedDict, so this file is either not a plain state_dict or is unsafe"
            ) from None

    def persistent_load(self, pid):
        if self._load_storage is None:
            raise UnsafePickleError("a persistent id (storage) outside the pickle that holds the tensors")
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage")):
            raise UnsafePickleError(f"unexpected persistent id of type {type(pid).__name__}")
        storage_type, key = pid[1], pid[2]
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"unexpected storage type {type(storage_type).__name__}")
        if not isinstance(key, (str, int)) or isinstance(key, bool) or len(str(key)) > 256:
            raise ValueError("a storage key must be a short string")
        numel = _count(pid[4], "a storage's element count")
        if len(pid) > 5 and pid[5] is not None:
            raise ValueError("storage views (legacy view_metadata) are not supported")
        return self._load_storage(str(key), storage_type.dtype, numel)


def _load_zip(read: _Read):
    with zipfile.ZipFile(read.path) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        pkl = [n for n in infos if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise ValueError(f"expected exactly one data.pkl in the zip archive, found {len(pkl)}")
        prefix = pkl[0][: -len("data.pkl")]

        def member(name, limit=None):
            """The bytes of member ``name``, its declared size checked before it is inflated."""
            info = infos.get(name)
            if info is None:
                raise ValueError(f"the zip archive has no member {name!r}")
            want = info.file_size if limit is None else min(limit, info.file_size)
            read.charge(want, f"member {name!r} ({info.file_size} bytes once inflated)")
            with zf.open(info) as f:
                data = f.read(want)
            if len(data) != want:
                raise ValueError(f"member {name!r} holds {len(data)} bytes, its header says {want}")
            return data, info.file_size

        order = "<"
        if prefix + "byteorder" in infos:
            text, _ = member(prefix + "byteorder", limit=16)
            order = "<" if text.decode("ascii", "replace").strip() == "little" else ">"

        def load_storage(key, dtype, numel):
            st, new = read.storage(key, dtype, numel)
            if new:
                need = numel * dtype.itemsize
                name = f"{prefix}data/{key}"
                info = infos.get(name)
                if info is None:
                    raise ValueError(f"storage {key!r} has no member {name!r} in the zip archive")
                if info.file_size < need:  # checked before anything is read or allocated
                    raise ValueError(f"storage {key!r} declares {numel} x {dtype} = {need} bytes but its "
                                     f"member holds {info.file_size}")
                raw, _ = member(name, limit=need)
                st.array = np.frombuffer(raw, dtype=dtype.newbyteorder(order), count=numel).astype(dtype)
            return st

        raw, _ = member(pkl[0])
        return _to_state_dict(read.unpickler(io.BytesIO(raw), load_storage).load(), read)


def _load_legacy(read: _Read):
    with open(read.path, "rb") as f:
        header = [read.unpickler(f, None).load() for _ in range(3)]
        if header[0] != LEGACY_MAGIC_NUMBER or header[1] != LEGACY_PROTOCOL_VERSION:
            raise ValueError("not a PyTorch file (bad magic number or protocol version)")
        little = header[2].get("little_endian", True) if isinstance(header[2], dict) else True
        order = "<" if little else ">"

        def load_storage(key, dtype, numel):
            return read.storage(key, dtype, numel)[0]

        obj = read.unpickler(f, load_storage).load()
        keys = read.unpickler(f, None).load()
        if not isinstance(keys, list):
            raise ValueError(f"the list of storage keys is a {type(keys).__name__}")
        seen = set()
        for key in keys:
            key = str(key) if isinstance(key, (str, int)) and not isinstance(key, bool) else None
            st = read.storages.get(key)
            if st is None:
                raise ValueError("a storage key is listed but never used")
            if key in seen:
                raise ValueError(f"storage {key!r} is listed twice")
            seen.add(key)
            head = f.read(8)
            if len(head) != 8:
                raise ValueError(f"file ends before storage {key!r}")
            (count,) = struct.unpack(order + "q", head)
            if count != st.numel:
                raise ValueError(f"storage {key!r} holds {count} elements but was declared with {st.numel}")
            need = count * st.dtype.itemsize
            if need > read.file_size - f.tell():  # checked before anything is read or allocated
                raise ValueError(f"file ends inside storage {key!r}: it declares {need} bytes, "
                                 f"{read.file_size - f.tell()} are left")
            read.charge(need, f"storage {key!r}")
            raw = f.read(need)
            if len(raw) != need:
                raise ValueError(f"file ends inside storage {key!r}")
            st.array = np.frombuffer(raw, dtype=st.dtype.newbyteorder(order)).astype(st.dtype)
    return _to_state_dict(obj, read)


def _to_state_dict(obj, read: _Read) -> dict[str, np.ndarray]:
    """Unwrap ``{"model": ...}`` / ``{"state_dict": ...}`` and copy out the tensors of the result.
    Only the entries are looked at, never the rest of the object graph."""
    for wrapper in ("model", "state_dict"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise ValueError(f"expected a state_dict (a mapping of names to tensors), got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if not isinstance(k, str):
            raise ValueError(f"a state_dict key is a {type(k).__name__}, not a string")
        if not isinstance(v, _LazyTensor):
            raise ValueError(f"entry {k[:200]!r} is a {type(v).__name__}, not a tensor")
        out[k] = v.materialize(read)
    return out


# What reading a hostile or damaged file can raise, turned into one ValueError that names the file.
_FILE_ERRORS = (pickle.UnpicklingError, EOFError, struct.error, zipfile.BadZipFile, zlib.error,
                ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError,
                OverflowError, UnicodeDecodeError, NotImplementedError, MemoryError)


def read_state_dict(path) -> dict[str, np.ndarray]:
    """Read a ``torch.save``-d state_dict from ``path`` as ``{name: ndarray}``, torch not needed.

    Accepts both the zip and the legacy format. A file wrapping the state_dict in a dict under
    ``"model"`` or ``"state_dict"`` (common for training checkpoints) is unwrapped. Raises
    ``UnsafePickleError`` for any pickle that names a global outside the allow-list or tries to
    modify one (nothing in the file is executed), ``ValueError`` for a malformed or oversized file,
    ``FileNotFoundError`` if missing; every message starts with the file's path.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such weights file: {path}")
    read = _Read(path)  # a fresh one per call: no state survives from one read to the next
    try:
        return _load_zip(read) if zipfile.is_zipfile(path) else _load_legacy(read)
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except _FILE_ERRORS as exc:
        kind = "" if isinstance(exc, ValueError) else f"{type(exc).__name__}: "
        raise ValueError(f"{path}: not a readable state_dict file: {kind}{exc}") from None
