"""Hostile and damaged .pth files: each one is refused with an error naming the file, quickly and
without a large allocation, and none of them changes how the next file is read.

The files are written here opcode by opcode (the pickle protocol's bytes) and zip entry by zip entry,
so no torch is needed and each probe is exactly the hostile construct it names. The probes that
used to hang run in a subprocess with a timeout.
"""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from minimaskrcnn import pth
from minimaskrcnn.pth import UnsafePickleError, read_state_dict

# -- a tiny pickle assembler ---------------------------------------------------------------------


def g(module: str, name: str) -> bytes:
    """GLOBAL: push module.name (resolved by the reader's find_class)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def s(text: str) -> bytes:
    """BINUNICODE: push a str."""
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def n(value: int) -> bytes:
    """Push an int of any size (LONG1: little-endian two's complement)."""
    if -2**31 <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def tup(*items: bytes) -> bytes:
    """MARK items TUPLE."""
    return b"(" + b"".join(items) + b"t"


def storage(key: str, numel: int, kind: str = "FloatStorage") -> bytes:
    """A persistent id ("storage", torch.<kind>, key, "cpu", numel) and BINPERSID."""
    return tup(s("storage"), g("torch", kind), s(key), s("cpu"), n(numel)) + b"Q"


def tensor(stor: bytes, offset: int, size: tuple, stride: tuple) -> bytes:
    """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""
    return (g("torch._utils", "_rebuild_tensor_v2")
            + tup(stor, n(offset), tup(*map(n, size)), tup(*map(n, stride)), b"\x89",
                  g("collections", "OrderedDict") + b")R")
            + b"R")


def state_dict(*entries: tuple[str, bytes]) -> bytes:
    """A protocol-2 pickle of {name: tensor, ...}."""
    return b"\x80\x02}(" + b"".join(s(k) + v for k, v in entries) + b"u."


def write_zip(path, pkl: bytes, storages: dict, compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compress) as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/byteorder", "little")
        for key, raw in storages.items():
            zf.writestr(f"archive/data/{key}", raw)
    return path


def write_legacy(path, obj_pickle: bytes, storages: list[tuple[str, int, bytes]]):
    """Magic, protocol, sys info, the object, the key list, then (int64 count, bytes) per key."""
    with open(path, "wb") as f:
        f.write(pickle.dumps(pth.LEGACY_MAGIC_NUMBER, protocol=2))
        f.write(pickle.dumps(pth.LEGACY_PROTOCOL_VERSION, protocol=2))
        f.write(pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2))
        f.write(obj_pickle)
        f.write(pickle.dumps([k for k, _, _ in storages], protocol=2))
        for _, count, raw in storages:
            f.write(struct.pack("<q", count) + raw)
    return path


VALUES = np.arange(6, dtype=np.float32)


def valid_zip(path):
    pkl = state_dict(("w", tensor(storage("0", 6), 0, (2, 3), (3, 1))),
                     ("t", tensor(storage("0", 6), 1, (2,), (3,))))
    return write_zip(path, pkl, {"0": VALUES.tobytes()})


def check_valid(path):
    sd = read_state_dict(path)
    np.testing.assert_array_equal(sd["w"], VALUES.reshape(2, 3))
    np.testing.assert_array_equal(sd["t"], VALUES[[1, 4]])


# -- the probes ------------------------------------------------------------------------------------


def test_hand_assembled_files_read(tmp_path):
    """The assembler writes what torch.save writes: both formats read back exactly."""
    check_valid(valid_zip(tmp_path / "ok.pth"))
    pkl = state_dict(("w", tensor(storage("0", 6), 0, (2, 3), (3, 1))),
                     ("t", tensor(storage("0", 6), 1, (2,), (3,))))
    check_valid(write_legacy(tmp_path / "legacy.pth", pkl, [("0", 6, VALUES.tobytes())]))


POISONS = {
    # BUILD on the stand-in for torch.FloatStorage: {'dtype': 5} would replace its dtype for every
    # later read (the probe that broke the next, valid file).
    "storage_type": b"\x80\x02" + g("torch", "FloatStorage") + b"}" + s("dtype") + n(5) + b"sb0}.",
    # BUILD on an allowed function, with slot state (setattr).
    "function": b"\x80\x02" + g("torch._utils", "_rebuild_tensor_v2") + b"N}" + s("fn") + n(1)
                + b"s\x86b0}.",
    "ordered_dict": b"\x80\x02" + g("collections", "OrderedDict") + b"}" + s("x") + n(1) + b"sb0}.",
}


@pytest.mark.parametrize("what", list(POISONS))
def test_poisoned_file_is_refused_and_the_next_file_reads(tmp_path, what):
    path = write_zip(tmp_path / "poison.pth", POISONS[what], {})
    with pytest.raises(UnsafePickleError, match="modify") as exc:
        read_state_dict(path)
    assert str(path) in str(exc.value)
    check_valid(valid_zip(tmp_path / "ok.pth"))  # no state leaked from the poisoned read
    legacy = write_legacy(tmp_path / "poison_legacy.pth", POISONS[what], [])
    with pytest.raises(UnsafePickleError, match="modify"):
        read_state_dict(legacy)
    check_valid(valid_zip(tmp_path / "ok2.pth"))


def test_stride_zero_expansion_is_refused_before_allocating(tmp_path):
    # 4 bytes of storage, viewed as 2**26 float32 with stride 0: 256 MiB from a file of ~500 bytes.
    pkl = state_dict(("w", tensor(storage("0", 1), 0, (2**26,), (0,))))
    path = write_zip(tmp_path / "stride0.pth", pkl, {"0": b"\0\0\0\0"})
    assert path.stat().st_size < 2000
    with pytest.raises(ValueError, match="declares far more data than it holds") as exc:
        read_state_dict(path)
    assert str(path) in str(exc.value)
    # the same in the legacy format
    legacy = write_legacy(tmp_path / "stride0_legacy.pth", pkl, [("0", 1, b"\0\0\0\0")])
    with pytest.raises(ValueError, match="declares far more data"):
        read_state_dict(legacy)


def test_zip_bomb_member_is_refused_before_inflating(tmp_path):
    # 32 MiB of zeros deflate to ~32 KB; the storage declares all of it.
    numel = 2**23
    pkl = state_dict(("w", tensor(storage("0", numel), 0, (numel,), (1,))))
    path = write_zip(tmp_path / "bomb.pth", pkl, {"0": bytes(4 * numel)}, compress=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 200_000
    with pytest.raises(ValueError, match="declares far more data than it holds") as exc:
        read_state_dict(path)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("case", ["storage_numel_past_member", "tensor_past_storage", "negative_stride",
                                  "float_size", "missing_member", "redeclared_storage"])
def test_declared_sizes_are_checked_against_the_bytes(tmp_path, case):
    raw = {"0": VALUES.tobytes()}
    pkl = {
        "storage_numel_past_member": state_dict(("w", tensor(storage("0", 2**40), 0, (6,), (1,)))),
        "tensor_past_storage": state_dict(("w", tensor(storage("0", 6), 4, (3,), (1,)))),
        "negative_stride": state_dict(("w", tensor(storage("0", 6), 5, (3,), (-1,)))),
        "float_size": state_dict(("w", g("torch._utils", "_rebuild_tensor_v2")
                                  + tup(storage("0", 6), n(0), tup(b"G" + struct.pack(">d", 2.0)),
                                        tup(n(1)), b"\x89", g("collections", "OrderedDict") + b")R")
                                  + b"R")),
        "missing_member": state_dict(("w", tensor(storage("7", 6), 0, (6,), (1,)))),
        "redeclared_storage": state_dict(("w", tensor(storage("0", 6), 0, (6,), (1,))),
                                         ("v", tensor(storage("0", 6, "DoubleStorage"), 0, (3,), (1,)))),
    }[case]
    path = write_zip(tmp_path / f"{case}.pth", pkl, raw)
    with pytest.raises(ValueError) as exc:
        read_state_dict(path)
    assert str(path) in str(exc.value)


def test_legacy_declared_count_past_the_file_is_refused(tmp_path):
    pkl = state_dict(("w", tensor(storage("0", 2**40), 0, (6,), (1,))))
    path = write_legacy(tmp_path / "count.pth", pkl, [("0", 2**40, VALUES.tobytes())])
    with pytest.raises(ValueError, match="file ends inside storage") as exc:
        read_state_dict(path)
    assert str(path) in str(exc.value)


def test_truncated_files_name_the_file(tmp_path):
    pkl = state_dict(("w", tensor(storage("0", 6), 0, (2, 3), (3, 1))))
    whole = write_legacy(tmp_path / "whole.pth", pkl, [("0", 6, VALUES.tobytes())]).read_bytes()
    zipped = valid_zip(tmp_path / "whole_zip.pth").read_bytes()
    for data in (whole, zipped):
        for cut in (1, 10, len(data) // 2, len(data) - 3):
            path = tmp_path / f"cut{cut}.pth"
            path.write_bytes(data[:cut])
            with pytest.raises(ValueError) as exc:
                read_state_dict(path)
            assert str(path) in str(exc.value), exc.value


_CHILD = """
import sys, time
from minimaskrcnn.pth import read_state_dict
t = time.perf_counter()
try:
    read_state_dict(sys.argv[1])
except ValueError as exc:
    print("refused:", str(exc)[:300])
"""


def _graph_pickle(depth: int, self_reference: bool) -> bytes:
    """{"model": nested} with a = [b, b], b = [c, c] ... (2**depth paths, depth objects), or a dict
    that holds itself."""
    if self_reference:
        d: dict = {}
        d["model"] = d
        d["w"] = [d, d]
        return pickle.dumps(d, protocol=2)
    node: list = []
    for _ in range(depth):
        node = [node, node]
    return pickle.dumps({"model": {"w": node}}, protocol=2)


@pytest.mark.parametrize("self_reference", [False, True], ids=["shared_graph", "self_reference"])
@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_shared_references_and_cycles_do_not_hang(tmp_path, fmt, self_reference):
    obj = _graph_pickle(80, self_reference)
    path = tmp_path / "graph.pth"
    if fmt == "legacy":
        write_legacy(path, obj, [])
    else:
        write_zip(path, obj, {})
    res = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "refused:" in res.stdout and "not a tensor" in res.stdout, res.stdout
    assert str(path) in res.stdout


def test_memo_reference_to_an_unknown_slot_is_an_error(tmp_path):
    # BINGET of a memo slot never written (a malformed memo), then a LONG_BINGET far past the end.
    for body in (b"\x80\x02h\x07.", b"\x80\x02j\xff\xff\xff\x7f."):
        path = write_zip(tmp_path / "memo.pth", body, {})
        with pytest.raises(ValueError) as exc:
            read_state_dict(path)
        assert str(path) in str(exc.value)


def test_nothing_is_executed(tmp_path):
    marker = tmp_path / "ran"
    evil = b"\x80\x02" + g("os", "system") + tup(s(f"touch {marker}")) + b"R."
    for path in (write_zip(tmp_path / "evil.pth", evil, {}), write_legacy(tmp_path / "evil_l.pth", evil, [])):
        with pytest.raises(UnsafePickleError, match="os.system") as exc:
            read_state_dict(path)
        assert str(path) in str(exc.value)
    assert not marker.exists()


def test_budget_is_relative_to_the_file_size(tmp_path):
    # Two views of one 6-element storage are fine (tied weights); 1 MiB + 4x the file is the cap.
    check_valid(valid_zip(tmp_path / "ok.pth"))
    read = pth._Read(valid_zip(tmp_path / "ok2.pth"))
    assert read.budget == pth.BUDGET_FACTOR * read.file_size + pth.BUDGET_SLACK
    with pytest.raises(ValueError, match="more than"):
        read.charge(read.budget + 1, "a test allocation")
