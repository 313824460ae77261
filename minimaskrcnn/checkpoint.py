"""Checkpoints: a flat dict of named arrays plus JSON metadata, in one ``.npz`` file.

Format. An ordinary NumPy ``.npz`` archive (readable with ``np.load`` alone) holding every array of
``state`` under its own name, plus one reserved entry ``__metadata__``: a 0-d unicode array with the
JSON text of the metadata. The library adds ``format`` ("minimaskrcnn-checkpoint"),
``format_version`` and ``library_version`` (``minimaskrcnn.__version__``) to it.

Safety. A save writes to a temporary file in the destination's folder and then ``os.replace``-s it
onto the destination, which is atomic on POSIX and Windows: a crash or an exception mid-save leaves
the previous checkpoint intact and no half-written file. A load uses ``allow_pickle=False``, so a
checkpoint can never run code; object arrays are refused on both sides. Before a member is inflated,
its ``.npy`` header (shape and dtype) must agree with the size the zip declares for it, and all the
members together must fit ``16 × the file's size + 16 MiB`` (``save_checkpoint`` stores them
uncompressed, so a real checkpoint is about its file's size): a header declaring 2**40 elements, or a
small compressed member that would inflate to 256 MiB, is refused with a ValueError naming it.

Training state. Everything a trainer needs to resume goes into one file by prefixing names::

    state = {**with_prefix(model.state_dict(), "model."), **with_prefix(opt.state_dict(), "optim.")}
    save_checkpoint(path, state, {"step": step, "config": asdict(cfg), "rng": rng_state(rng)})
    ...
    state, meta = load_checkpoint(path)
    model.load_state_dict(strip_prefix(state, "model."))
    opt.load_state_dict(strip_prefix(state, "optim."))
    rng = restore_rng(meta["rng"])
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
import zipfile
import zlib

import numpy as np

FORMAT = "minimaskrcnn-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "__metadata__"

# What one load may inflate: this many times the file's size, plus NPZ_BUDGET_SLACK bytes.
NPZ_BUDGET_FACTOR = 16
NPZ_BUDGET_SLACK = 16 * 2**20


def _json_default(obj):
    """Make the usual non-JSON values of a config JSON-able: dataclasses, tuples of numpy scalars,
    small arrays. Anything else is a TypeError naming its type."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray) and obj.dtype != object:
        return obj.tolist()
    raise TypeError(f"metadata value of type {type(obj).__name__} is not JSON-serialisable")


def save_checkpoint(path, state: dict, metadata: dict | None = None) -> None:
    """Write ``state`` (str → ndarray) and ``metadata`` (a JSON-able dict) to ``path`` atomically.

    Raises TypeError/ValueError before touching the disk when a key is not a string, is reserved
    (starts with "__"), or a value is not a numeric/bool/string ndarray (object arrays are refused:
    they could only be stored by pickling).
    """
    # 1. Check everything first: a bad input must not cost the previous checkpoint.
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict of arrays, got {type(state).__name__}")
    arrays = {}
    for key, value in state.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"state keys must be non-empty strings, got {key!r}")
        if key.startswith("__"):
            raise ValueError(f"state key {key!r} is reserved (keys may not start with '__')")
        if not isinstance(value, (np.ndarray, np.generic)):
            raise TypeError(f"state[{key!r}] must be a numpy array, got {type(value).__name__}")
        if value.dtype.hasobject:
            raise TypeError(f"state[{key!r}] is an object array; only numeric, bool and string arrays "
                            "can be stored without pickling")
        arrays[key] = np.asarray(value)
    meta = dict(metadata or {})
    if not all(isinstance(k, str) for k in meta):
        raise TypeError("metadata keys must be strings")
    from minimaskrcnn import __version__

    meta.update(format=FORMAT, format_version=FORMAT_VERSION, library_version=__version__)
    text = json.dumps(meta, default=_json_default, allow_nan=True)
    arrays[METADATA_KEY] = np.array(text)

    # 2. Write to a temporary file beside the destination (same file system, so the rename is
    #    atomic), flush it to disk, then replace the destination in one step.
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot save checkpoint: folder {folder!r} does not exist")
    # (Not tempfile.mkstemp: its files are private (0600) and would stay so after the rename; "xb"
    # creates a fresh file with the usual permissions and never overwrites an existing one.)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    f = open(tmp, "xb")  # outside the try: if creating it fails there is nothing to remove
    try:
        with f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def load_checkpoint(path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a checkpoint written by :func:`save_checkpoint`. Returns ``(state, metadata)``.

    Raises FileNotFoundError for a missing file and ValueError for a file that is not a minimaskrcnn
    checkpoint (not an .npz archive, no metadata, unreadable metadata, or object arrays).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    state = _read_npz(path)
    if METADATA_KEY not in state:
        raise ValueError(f"{path!r} is an .npz file but not a minimaskrcnn checkpoint (no metadata)")
    raw = state.pop(METADATA_KEY)
    try:
        metadata = json.loads(str(raw[()]))
    except (json.JSONDecodeError, IndexError, TypeError) as exc:
        raise ValueError(f"{path!r}: metadata is not valid JSON: {exc}") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a minimaskrcnn checkpoint (metadata format is "
                         f"{metadata.get('format') if isinstance(metadata, dict) else metadata!r})")
    if metadata.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path!r} uses checkpoint format {metadata['format_version']}; this library "
                         f"reads format {FORMAT_VERSION} or older — upgrade minimaskrcnn")
    return state, metadata


def _read_npz(path: str) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path``, each member checked before it is inflated.

    1. the file is a zip archive (a single ``.npy`` or anything else is refused);
    2. per member: a ``.npy`` name, its .npy header read (a few hundred bytes at most), the dtype not
       an object dtype (that would need unpickling), and ``header + prod(shape) · itemsize`` equal to
       the uncompressed size the zip declares;
    3. the declared sizes, summed, within ``NPZ_BUDGET_FACTOR × file size + NPZ_BUDGET_SLACK``;
    4. only then the member is read, with ``allow_pickle=False``.
    """
    with open(path, "rb") as f:
        if f.read(6) == b"\x93NUMPY":
            raise ValueError(f"{path!r} is a single .npy array, not a checkpoint (.npz archive)")
    budget = NPZ_BUDGET_FACTOR * os.path.getsize(path) + NPZ_BUDGET_SLACK
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise ValueError(f"{path!r} is not a readable checkpoint (.npz): {exc}") from None
    fmt = np.lib.format
    state, total, key = {}, 0, None
    with zf:
        try:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    raise ValueError(f"{path!r}: member {info.filename!r} is not an .npy array")
                key = info.filename[:-4]
                total += info.file_size
                if total > budget:
                    raise ValueError(f"{path!r}: entry {key!r} declares {info.file_size} bytes once "
                                     f"inflated, bringing the archive past {budget} bytes "
                                     f"({NPZ_BUDGET_FACTOR} x its size + 16 MiB): it declares far more "
                                     "data than it holds")
                with zf.open(info) as fp:
                    version = fmt.read_magic(fp)
                    if version == (1, 0):
                        shape, fortran, dtype = fmt.read_array_header_1_0(fp)
                    elif version == (2, 0):
                        shape, fortran, dtype = fmt.read_array_header_2_0(fp)
                    else:
                        raise ValueError(f"{path!r}: entry {key!r} has .npy format {version}, "
                                         "expected 1.0 or 2.0")
                    header = fp.tell()
                if dtype.hasobject:
                    raise ValueError(f"{path!r}: entry {key!r} cannot be loaded without unpickling: it is an "
                                     f"object array ({dtype})")
                nbytes = math.prod(shape) * dtype.itemsize
                if header + nbytes != info.file_size:
                    raise ValueError(f"{path!r}: entry {key!r} declares shape {shape} of {dtype} "
                                     f"({nbytes} bytes) but its member holds {info.file_size - header}")
                with zf.open(info) as fp:  # sizes agree: numpy allocates no more than the zip declares
                    state[key] = fmt.read_array(fp, allow_pickle=False)
        except ValueError as exc:
            if str(exc).startswith(repr(path)):
                raise
            raise ValueError(f"{path!r} is damaged: entry {key!r}: {exc}") from None
        except (OSError, zipfile.BadZipFile, EOFError, zlib.error, RuntimeError) as exc:
            raise ValueError(f"{path!r} is damaged: entry {key!r}: {exc}") from None
    return state


# -- helpers for saving several objects (model, optimiser) and the RNG in one checkpoint -------------


def with_prefix(state: dict, prefix: str) -> dict:
    """``{prefix + key: value}`` — e.g. "model." or "optim." — to share one checkpoint."""
    return {prefix + k: v for k, v in state.items()}


def strip_prefix(state: dict, prefix: str) -> dict:
    """The entries of ``state`` whose key starts with ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def rng_state(rng: np.random.Generator) -> dict:
    """The state of a ``np.random.Generator`` as JSON-able data (for the checkpoint metadata).
    Arrays inside a bit generator's state (Philox, MT19937) become tagged lists."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")

    def encode(v):
        if isinstance(v, dict):
            return {k: encode(x) for k, x in v.items()}
        if isinstance(v, np.ndarray):
            return {"__ndarray__": v.tolist(), "dtype": str(v.dtype)}
        if isinstance(v, np.generic):
            return v.item()
        return v

    return encode(rng.bit_generator.state)


_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937")


def restore_rng(state: dict) -> np.random.Generator:
    """A new ``np.random.Generator`` continuing exactly where the one given to :func:`rng_state` was."""
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if name not in _BIT_GENERATORS:
        raise ValueError(f"unknown bit generator {name!r}; expected one of {_BIT_GENERATORS}")

    def decode(v):
        if isinstance(v, dict):
            if "__ndarray__" in v:
                return np.array(v["__ndarray__"], dtype=v["dtype"])
            return {k: decode(x) for k, x in v.items()}
        return v

    bit_generator = getattr(np.random, name)()
    bit_generator.state = decode(state)
    return np.random.Generator(bit_generator)
