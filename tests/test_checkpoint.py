"""Checkpoints: round trip, atomic saves, no unpickling, clear errors, resumable training state."""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest

import minimaskrcnn
from minimaskrcnn import checkpoint as ckpt
from minimaskrcnn.checkpoint import (
    load_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
    strip_prefix,
    with_prefix,
)
from minimaskrcnn.nn.optim import SGD


def _state(rng):
    return {
        "backbone.body.conv1.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "rpn.head.cls_logits.bias": rng.standard_normal(3),
        "counts": np.arange(5, dtype=np.int64),
        "flags": np.array([True, False]),
        "scalar": np.array(2.5),
    }


def test_round_trip(tmp_path, rng):
    state = _state(rng)
    path = tmp_path / "model.npz"
    save_checkpoint(path, state, {"step": 120, "config": {"num_classes": 4, "sizes": (32, 64)}})
    loaded, meta = load_checkpoint(path)
    assert list(loaded) == list(state)
    for k, v in state.items():
        assert loaded[k].dtype == v.dtype and loaded[k].shape == v.shape
        np.testing.assert_array_equal(loaded[k], v)
    assert meta["step"] == 120
    assert meta["config"] == {"num_classes": 4, "sizes": [32, 64]}
    assert meta["library_version"] == minimaskrcnn.__version__
    assert meta["format"] == "minimaskrcnn-checkpoint"
    # A plain .npz: NumPy alone reads it, without pickling, and the metadata is JSON text.
    with np.load(path, allow_pickle=False) as raw:
        assert json.loads(str(raw["__metadata__"][()]))["step"] == 120
    assert os.listdir(tmp_path) == ["model.npz"]


def test_metadata_dataclass_and_numpy_values(tmp_path):
    from dataclasses import dataclass

    @dataclass
    class Cfg:
        lr: float = 0.02
        sizes: tuple = (32, 64)

    save_checkpoint(tmp_path / "c.npz", {}, {"config": Cfg(), "loss": np.float32(0.5), "hist": np.arange(3)})
    _, meta = load_checkpoint(tmp_path / "c.npz")
    assert meta["config"] == {"lr": 0.02, "sizes": [32, 64]}
    assert meta["loss"] == 0.5 and meta["hist"] == [0, 1, 2]
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(tmp_path / "d.npz", {}, {"bad": object()})
    assert not (tmp_path / "d.npz").exists()


@pytest.mark.parametrize("where", ["during_write", "at_rename"])
def test_interrupted_save_keeps_previous_file(tmp_path, rng, monkeypatch, where):
    path = tmp_path / "model.npz"
    old = _state(rng)
    save_checkpoint(path, old, {"step": 1})
    before = path.read_bytes()

    if where == "during_write":
        real_savez = np.savez

        def failing_savez(f, **arrays):
            f.write(b"PK\x03\x04 half a zip")  # some bytes reach the temporary file, then a crash
            raise KeyboardInterrupt("simulated interruption")

        monkeypatch.setattr(ckpt.np, "savez", failing_savez)
    else:
        def failing_replace(src, dst):
            raise OSError("simulated failure at rename")

        monkeypatch.setattr(ckpt.os, "replace", failing_replace)

    with pytest.raises((KeyboardInterrupt, OSError), match="simulated"):
        save_checkpoint(path, {"x": np.zeros(3)}, {"step": 2})
    monkeypatch.undo()
    if where == "during_write":
        assert np.savez is real_savez
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]  # no temporary file left behind
    state, meta = load_checkpoint(path)
    assert meta["step"] == 1 and set(state) == set(old)


def test_save_refuses_bad_state(tmp_path):
    path = tmp_path / "x.npz"
    with pytest.raises(TypeError, match="object array"):
        save_checkpoint(path, {"a": np.array([{"x": 1}], dtype=object)})
    with pytest.raises(TypeError, match=r"state\['a'\]"):
        save_checkpoint(path, {"a": [1.0, 2.0]})
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(path, {"__metadata__": np.zeros(1)})
    with pytest.raises(TypeError, match="keys"):
        save_checkpoint(path, {3: np.zeros(1)})
    with pytest.raises(FileNotFoundError, match="folder"):
        save_checkpoint(tmp_path / "missing" / "x.npz", {})
    assert not path.exists()


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip archive at all")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(garbage)
    truncated = tmp_path / "trunc.npz"
    save_checkpoint(truncated, {"w": np.arange(1000.0)})
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ValueError, match="trunc.npz"):
        load_checkpoint(truncated)
    plain = tmp_path / "plain.npz"
    np.savez(plain, w=np.zeros(2))
    with pytest.raises(ValueError, match="no metadata"):
        load_checkpoint(plain)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(2))
    with pytest.raises(ValueError, match="single .npy"):
        load_checkpoint(single)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, __metadata__=np.array(json.dumps({"format": "something-else"})))
    with pytest.raises(ValueError, match="not a minimaskrcnn checkpoint"):
        load_checkpoint(foreign)


def test_load_never_unpickles(tmp_path):
    # An archive with a pickled object array and otherwise valid metadata: loading must refuse it
    # rather than unpickle (a pickle can run arbitrary code).
    path = tmp_path / "evil.npz"
    meta = json.dumps({"format": "minimaskrcnn-checkpoint", "format_version": 1})
    np.savez(path, __metadata__=np.array(meta), payload=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="payload"):
        load_checkpoint(path)


def test_newer_format_refused(tmp_path):
    path = tmp_path / "future.npz"
    np.savez(path, __metadata__=np.array(json.dumps({"format": "minimaskrcnn-checkpoint",
                                                     "format_version": 99})))
    with pytest.raises(ValueError, match="format 99"):
        load_checkpoint(path)


@pytest.mark.parametrize("name", ["PCG64", "Philox", "MT19937", "SFC64"])
def test_rng_state_round_trip_through_checkpoint(tmp_path, name):
    rng = np.random.Generator(getattr(np.random, name)(7))
    rng.standard_normal(11)  # advance it somewhere arbitrary
    save_checkpoint(tmp_path / "r.npz", {}, {"rng": rng_state(rng)})
    _, meta = load_checkpoint(tmp_path / "r.npz")
    restored = restore_rng(meta["rng"])
    np.testing.assert_array_equal(restored.standard_normal(5), rng.standard_normal(5))
    with pytest.raises(ValueError, match="bit generator"):
        restore_rng({"bit_generator": "os.system"})


class _P:
    def __init__(self, data):
        self.data = data
        self.grad = np.zeros_like(data)


def test_training_state_resumes_exactly(tmp_path):
    # model + optimiser + step + RNG in one file, resumed, gives the same run as never stopping.
    def train(params, opt, rng, steps):
        for _ in range(steps):
            for p in params:
                p.grad[...] = rng.standard_normal(p.data.shape) + 0.1 * p.data
            opt.step()

    def fresh():
        params = [_P(np.linspace(-1, 1, 6).reshape(2, 3)), _P(np.ones(4, dtype=np.float32))]
        return params, SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-4)

    params, opt = fresh()
    rng = np.random.default_rng(0)
    train(params, opt, rng, 7)
    reference = [p.data.copy() for p in params]

    params, opt = fresh()
    rng = np.random.default_rng(0)
    train(params, opt, rng, 4)
    model_state = {"w": params[0].data, "b": params[1].data}
    state = {**with_prefix(model_state, "model."), **with_prefix(opt.state_dict(), "optim.")}
    save_checkpoint(tmp_path / "train.npz", state, {"step": 4, "rng": rng_state(rng)})

    loaded, meta = load_checkpoint(tmp_path / "train.npz")
    params2, opt2 = fresh()
    model2 = strip_prefix(loaded, "model.")
    params2[0].data[...], params2[1].data[...] = model2["w"], model2["b"]
    opt2.load_state_dict(strip_prefix(loaded, "optim."))
    train(params2, opt2, restore_rng(meta["rng"]), 7 - meta["step"])
    for a, b in zip(reference, params2):
        np.testing.assert_array_equal(a, b.data)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_saved_file_has_ordinary_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    save_checkpoint(tmp_path / "p.npz", {"w": np.zeros(2)})
    assert (tmp_path / "p.npz").stat().st_mode & 0o777 == 0o666 & ~umask


def test_module_state_round_trip(tmp_path):
    from minimaskrcnn.nn.layers import Conv2d, FrozenBatchNorm2d, Sequential

    def make(seed):
        return Sequential(Conv2d(3, 4, 3, rng=np.random.default_rng(seed)), FrozenBatchNorm2d(4))

    a, b = make(0), make(1)
    a[1].running_var[:] = 2.0
    save_checkpoint(tmp_path / "m.npz", a.state_dict(), {"step": 3})
    state, _ = load_checkpoint(tmp_path / "m.npz")
    b.load_state_dict(state)
    x = np.random.default_rng(2).standard_normal((1, 3, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(a(x), b(x))


# -- hostile archives: declared sizes are checked before anything is inflated ------------------------

def _npz_with_member(path, name: str, payload: bytes, compress=zipfile.ZIP_STORED):
    """A checkpoint-looking archive: valid metadata plus one hand-made member."""
    meta = io.BytesIO()
    np.lib.format.write_array(meta, np.array(json.dumps({"format": "minimaskrcnn-checkpoint",
                                                         "format_version": 1})))
    with zipfile.ZipFile(path, "w", compression=compress) as zf:
        zf.writestr("__metadata__.npy", meta.getvalue())
        zf.writestr(name, payload)
    return path


def _npy_header(shape, descr="<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_declared_huge_shape_is_refused_not_memory_error(tmp_path):
    # 2**40 float32 elements (4 TiB) declared by a 100-byte member.
    path = _npz_with_member(tmp_path / "huge.npz", "w.npy", _npy_header((2**40,)) + bytes(16))
    with pytest.raises(ValueError, match=r"entry 'w' declares shape \(1099511627776,\)"):
        load_checkpoint(path)


def test_compressed_bomb_is_refused_before_inflating(tmp_path):
    # 64 MiB of zeros deflate to ~64 KB: far past 16 x the file + 16 MiB.
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros(2**24, np.float32))
    path = _npz_with_member(tmp_path / "bomb.npz", "w.npy", buf.getvalue(), zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 2**20
    with pytest.raises(ValueError, match="entry 'w' declares .* far more data than it holds"):
        load_checkpoint(path)


def test_header_and_member_size_must_agree(tmp_path):
    path = _npz_with_member(tmp_path / "short.npz", "w.npy", _npy_header((10,)) + bytes(8))
    with pytest.raises(ValueError, match=r"entry 'w' declares shape \(10,\).*40 bytes.*holds 8"):
        load_checkpoint(path)
    path = _npz_with_member(tmp_path / "obj.npz", "w.npy", _npy_header((1,), "|O") + bytes(8))
    with pytest.raises(ValueError, match="entry 'w' cannot be loaded without unpickling"):
        load_checkpoint(path)
    path = _npz_with_member(tmp_path / "other.npz", "notes.txt", b"hello")
    with pytest.raises(ValueError, match="'notes.txt' is not an .npy array"):
        load_checkpoint(path)


def test_small_compressed_checkpoint_still_loads(tmp_path):
    path = tmp_path / "ok.npz"
    save_checkpoint(path, {"w": np.arange(12.0).reshape(3, 4)}, {"step": 3})
    state, meta = load_checkpoint(path)
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp_path / "z.npz", "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    state2, meta2 = load_checkpoint(tmp_path / "z.npz")
    np.testing.assert_array_equal(state2["w"], state["w"])
    assert meta2 == meta
