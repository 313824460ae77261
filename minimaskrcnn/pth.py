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
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
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


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co.: only remembers the dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    """A flat array of one dtype, filled from the file's raw bytes (lazily for the legacy format)."""

    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype = dtype
        self.numel = numel
        self.array: np.ndarray | None = None


class _LazyTensor:
    """A tensor whose storage bytes come later in a legacy file: materialised after the data is read."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def materialize(self) -> np.ndarray:
        flat = self.storage.array
        if flat is None:
            raise ValueError("a tensor refers to a storage whose bytes are missing from the file")
        return _view(flat, self.offset, self.size, self.stride)


def _view(flat: np.ndarray, offset: int, size: tuple, stride: tuple) -> np.ndarray:
    """Copy out the strided view ``flat[offset + sum(i_k * stride_k)]`` of shape ``size``."""
    size = tuple(int(s) for s in size)
    stride = tuple(int(s) for s in stride)
    if any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise ValueError(f"tensor has a negative size or stride: size {size}, stride {stride}")
    if int(np.prod(size)) == 0:
        return np.zeros(size, dtype=flat.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if offset < 0 or last >= flat.size:
        raise ValueError(f"tensor (offset {offset}, size {size}, stride {stride}) reaches past its "
                         f"storage of {flat.size} elements")
    item = flat.itemsize
    view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size,
                                           strides=tuple(s * item for s in stride), writeable=False)
    return np.array(view)  # own the memory; never alias the file buffer


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise UnsafePickleError("_rebuild_tensor_v2 called without a storage")
    t = _LazyTensor(storage, int(storage_offset), tuple(size), tuple(stride))
    return t.materialize() if storage.array is not None else t


def _rebuild_parameter(data, requires_grad, backward_hooks):
    return data


def _ordered_dict(*args):
    return collections.OrderedDict(*args)


# (module, name) -> what the unpickler hands back. Nothing outside this table is ever imported.
_ALLOWED = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, load_storage):
        super().__init__(file, encoding="utf-8")
        self._load_storage = load_storage

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: a state_dict file only needs tensors, storages "
                "and OrderedDict, so this file is either not a plain state_dict or is unsafe"
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage")):
            raise UnsafePickleError(f"unexpected persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1], str(pid[2]), pid[3], int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"unexpected storage type {storage_type!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise ValueError("storage views (legacy view_metadata) are not supported")
        return self._load_storage(key, storage_type.dtype, numel)


def _load_zip(path: Path) -> dict:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise ValueError(f"{path}: expected exactly one data.pkl in the zip archive, found {len(pkl)}")
        prefix = pkl[0][: -len("data.pkl")]
        order = "<"
        if prefix + "byteorder" in names:
            order = "<" if zf.read(prefix + "byteorder").decode().strip() == "little" else ">"
        storages: dict[str, _Storage] = {}

        def load_storage(key, dtype, numel):
            if key not in storages:
                st = _Storage(dtype, numel)
                raw = zf.read(f"{prefix}data/{key}")
                if len(raw) < numel * dtype.itemsize:
                    raise ValueError(f"{path}: storage {key} holds {len(raw)} bytes, "
                                     f"expected {numel * dtype.itemsize}")
                st.array = np.frombuffer(raw, dtype=dtype.newbyteorder(order), count=numel).astype(dtype)
                storages[key] = st
            return storages[key]

        return _RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), load_storage).load()


def _load_legacy(path: Path) -> dict:
    with open(path, "rb") as f:
        header = [_RestrictedUnpickler(f, None).load() for _ in range(3)]
        if header[0] != LEGACY_MAGIC_NUMBER or header[1] != LEGACY_PROTOCOL_VERSION:
            raise ValueError(f"{path}: not a PyTorch file (bad magic number or protocol version)")
        little = header[2].get("little_endian", True) if isinstance(header[2], dict) else True
        storages: dict[str, _Storage] = {}

        def load_storage(key, dtype, numel):
            return storages.setdefault(key, _Storage(dtype, numel))

        obj = _RestrictedUnpickler(f, load_storage).load()
        keys = _RestrictedUnpickler(f, None).load()
        for key in keys:
            st = storages.get(str(key))
            if st is None:
                raise ValueError(f"{path}: storage key {key!r} listed but never used")
            (count,) = struct.unpack("<q" if little else ">q", f.read(8))
            raw = f.read(count * st.dtype.itemsize)
            if len(raw) != count * st.dtype.itemsize:
                raise ValueError(f"{path}: file ends inside storage {key!r}")
            order = "<" if little else ">"
            st.array = np.frombuffer(raw, dtype=st.dtype.newbyteorder(order)).astype(st.dtype)
    return _materialize(obj)


def _materialize(obj):
    if isinstance(obj, _LazyTensor):
        return obj.materialize()
    if isinstance(obj, dict):
        return type(obj)((k, _materialize(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v) for v in obj)
    return obj


def read_state_dict(path) -> dict[str, np.ndarray]:
    """Read a ``torch.save``-d state_dict from ``path`` as ``{name: ndarray}``, torch not needed.

    Accepts both the zip and the legacy format. A file wrapping the state_dict in a dict under
    ``"model"`` or ``"state_dict"`` (common for training checkpoints) is unwrapped. Raises
    ``UnsafePickleError`` for any pickle that names a global outside the allow-list (nothing in the
    file is executed), ``ValueError`` for a malformed file, ``FileNotFoundError`` if missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such weights file: {path}")
    obj = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
    for wrapper in ("model", "state_dict"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state_dict (a mapping of names to tensors), "
                         f"got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if not isinstance(v, np.ndarray):
            raise ValueError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor")
        out[str(k)] = v
    return out
