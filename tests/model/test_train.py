import json
import os

import numpy as np
import pytest
from test_equivalence import tiny_config

from minimaskrcnn.checkpoint import load_checkpoint
from minimaskrcnn.train import NonFiniteLossError, TrainConfig, train
from minimaskrcnn.weights import load_model


def _cfg(tmp_path, **kw):
    base = dict(steps=6, batch_size=2, lr=0.01, warmup_steps=2, seed=0, out=str(tmp_path / "run"),
                checkpoint_every=3, image_size=64, eval_images=0, progress=False, num_train_images=4)
    base.update(kw)
    return TrainConfig(**base)


def _model_cfg(**kw):
    return tiny_config(**{"rpn.batch_size_per_image": 64, "roi_heads.batch_size_per_image": 32, **kw})


def _log(path):
    with open(os.path.join(path, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_training_drives_the_loss_down(tmp_path):
    cfg = _cfg(tmp_path, steps=40, lr=0.02, warmup_steps=5)
    out = train(cfg, _model_cfg())
    log = _log(cfg.out)
    assert [r["step"] for r in log] == list(range(1, 41)) and out["step"] == 40
    first = np.mean([r["total"] for r in log[:5]])
    last = np.mean([r["total"] for r in log[-5:]])
    assert last < 0.7 * first, (first, last)
    model = load_model(os.path.join(cfg.out, "model.npz"))
    assert model.config == _model_cfg()


def test_resume_continues_exactly(tmp_path, monkeypatch):
    import minimaskrcnn.train as T

    straight = _cfg(tmp_path / "a")
    train(straight, _model_cfg())
    # the same run, killed while loading step 4's batch (after the checkpoint of step 3), then resumed
    half = _cfg(tmp_path / "b")
    calls, real = [], T.batch_of

    def dying_batch_of(*args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(T, "batch_of", dying_batch_of)
    with pytest.raises(KeyboardInterrupt):
        train(half, _model_cfg())
    monkeypatch.setattr(T, "batch_of", real)
    train(half, _model_cfg(), resume=True)
    sa, ma = load_checkpoint(os.path.join(straight.out, "checkpoint.npz"))
    sb, mb = load_checkpoint(os.path.join(half.out, "checkpoint.npz"))
    assert ma["step"] == mb["step"] == 6 and ma["rng"] == mb["rng"]
    for k in sa:  # bit for bit: the parameters, the momentum buffers
        np.testing.assert_array_equal(sb[k], sa[k], err_msg=k)
    la, lb = _log(straight.out), _log(half.out)
    assert [r["step"] for r in lb] == list(range(1, 7))
    assert [r["total"] for r in lb] == [r["total"] for r in la]


def test_deterministic_for_a_seed(tmp_path):
    train(_cfg(tmp_path / "a", steps=2), _model_cfg())
    train(_cfg(tmp_path / "b", steps=2), _model_cfg())
    la, lb = _log(tmp_path / "a" / "run"), _log(tmp_path / "b" / "run")
    assert [r["total"] for r in la] == [r["total"] for r in lb]  # bit for bit


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow we provoke
def test_nan_loss_stops_with_the_part_and_step(tmp_path):
    cfg = _cfg(tmp_path, steps=3, lr=1e30, warmup_steps=0)
    match = r"loss_\w+.* is (nan|inf|-inf|non-finite) at step [12]"
    with pytest.raises(NonFiniteLossError, match=match):
        train(cfg, _model_cfg())


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    # (no lr decay: a 3-step run can then be resumed as a 6-step one, see test_resume_refuses_...)
    cfg = _cfg(tmp_path, steps=3, decay_fraction=0.0)
    train(cfg, _model_cfg())
    path = os.path.join(cfg.out, "checkpoint.npz")
    before, meta = load_checkpoint(path)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt("interrupted mid-write")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tmp_path, steps=6, decay_fraction=0.0), _model_cfg(), resume=True)
    after, meta2 = load_checkpoint(path)
    assert meta2["step"] == meta["step"] == 3
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert [f for f in os.listdir(cfg.out) if f.endswith(".tmp")] == []


def test_time_budget_stops_the_run(tmp_path):
    """--minutes: the run stops on time (well before its step bound) and records where the lr decay began."""
    cfg = _cfg(tmp_path, steps=10**6, minutes=0.05)  # 3 seconds
    out = train(cfg, _model_cfg())
    assert 1 <= out["step"] < 10**6
    _, meta = load_checkpoint(os.path.join(cfg.out, "checkpoint.npz"))
    assert meta["step"] == out["step"] and meta["decay_step"] is not None
    lrs = [r["lr"] for r in _log(cfg.out)]
    assert len(lrs) == out["step"]


def test_dataset_options_reach_training_and_evaluation(tmp_path, monkeypatch):
    """dataset_options: a ShapesDataset variant for the training and the evaluation images; the model must
    have one class per shape + background."""
    import minimaskrcnn.train as T

    options = {"classes": ("square", "star", "ring", "cross", "hexagon"), "occlusion": True}
    cfg = _cfg(tmp_path, steps=2, eval_images=2, dataset_options=options)
    with pytest.raises(ValueError, match="num_classes"):
        train(cfg, _model_cfg())  # 4 classes in the model, 6 needed
    seen, real_batch_of, real_evaluate = [], T.batch_of, T.evaluate_model
    monkeypatch.setattr(T, "batch_of", lambda ds, idx: (seen.append(ds), real_batch_of(ds, idx))[1])
    monkeypatch.setattr(T, "evaluate_model", lambda model, ds, **kw: (seen.append(ds), real_evaluate(
        model, ds, **kw))[1])
    out = train(cfg, _model_cfg(num_classes=6, class_names=None))
    assert out["step"] == 2 and "segm" in out["eval"]
    assert len(seen) == 3 and [len(ds) for ds in seen] == [4, 4, 2]
    for ds in seen:
        assert ds.classes == options["classes"] and ds.occlusion
    _, meta = load_checkpoint(os.path.join(cfg.out, "checkpoint.npz"))
    assert meta["train"]["dataset_options"]["occlusion"] is True


# -- faults: SIGKILL, torn log, stray temp files, non-finite steps, --resume refusals, disk full --------

_KILLED_RUN = r"""
import sys
import numpy as np
import minimaskrcnn.checkpoint as C
from minimaskrcnn.train import TrainConfig, train
from test_equivalence import tiny_config

real_savez, calls = np.savez, []


def savez_then_hang(f, **arrays):  # the second save (step 4): half the bytes, then wait to be killed
    calls.append(1)
    if len(calls) < 2:
        return real_savez(f, **arrays)
    f.write(b"PK\x03\x04 half an archive")
    f.flush()
    print("saving", flush=True)
    import time
    while True:
        time.sleep(1)


C.np.savez = savez_then_hang
cfg = TrainConfig(**eval(sys.argv[1]))
train(cfg, tiny_config(**{"rpn.batch_size_per_image": 64, "roi_heads.batch_size_per_image": 32}))
"""


def dataclasses_asdict(cfg):
    import dataclasses

    return dataclasses.asdict(cfg)


def test_sigkill_mid_save_then_torn_log_then_resume_equals_an_uninterrupted_run(tmp_path):
    """A real SIGKILL while the step-4 checkpoint is being written leaves its temporary file; a torn
    last log line is added as a kill mid-write would leave it. --resume removes the temp file, repairs
    the log, continues from the step-2 checkpoint and ends bit-identical to an uninterrupted run."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    straight = _cfg(tmp_path / "a", checkpoint_every=2)
    train(straight, _model_cfg())
    killed = _cfg(tmp_path / "b", checkpoint_every=2)
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), str(here.parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, repr(dataclasses_asdict(killed))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()  # blocks until the child is inside the step-4 save
        assert line.strip() == "saving", proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    stray = [f for f in os.listdir(killed.out) if f.endswith(".tmp")]
    assert len(stray) == 1 and stray[0].startswith(".checkpoint.npz.")
    with open(os.path.join(killed.out, "log.jsonl"), "a") as f:
        f.write('{"step": 5, "lr": 0.01, "loss_')  # torn: no end, no newline
    _, meta = load_checkpoint(os.path.join(killed.out, "checkpoint.npz"))
    assert meta["step"] == 2  # the killed save never replaced the previous checkpoint

    train(killed, _model_cfg(), resume=True)
    assert [f for f in os.listdir(killed.out) if f.endswith(".tmp")] == []
    sa, ma = load_checkpoint(os.path.join(straight.out, "checkpoint.npz"))
    sb, mb = load_checkpoint(os.path.join(killed.out, "checkpoint.npz"))
    assert ma["step"] == mb["step"] == 6 and ma["rng"] == mb["rng"]
    for k in sa:
        np.testing.assert_array_equal(sb[k], sa[k], err_msg=k)
    la, lb = _log(straight.out), _log(killed.out)
    assert [r["step"] for r in lb] == list(range(1, 7))
    assert [r["total"] for r in lb] == [r["total"] for r in la]


def test_stray_temp_files_removed_at_a_fresh_start(tmp_path):
    cfg = _cfg(tmp_path, steps=1)
    os.makedirs(cfg.out)
    names = [".checkpoint.npz.123.deadbeef.tmp", ".model.npz.9.00ff00ff.tmp", "log.jsonl.tmp", "keep.tmp"]
    for name in names:
        with open(os.path.join(cfg.out, name), "w") as f:
            f.write("half")
    train(cfg, _model_cfg())
    assert [f for f in os.listdir(cfg.out) if f.endswith(".tmp")] == ["keep.tmp"]  # only our own patterns


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow we provoke
def test_non_finite_step_keeps_the_last_good_checkpoint(tmp_path):
    """lr 1e30 with a checkpoint every step: the run stops at the first non-finite loss or parameter,
    and checkpoint.npz is still the last good (finite) state, at the step the error names."""
    cfg = _cfg(tmp_path, steps=6, lr=1e30, warmup_steps=0, checkpoint_every=1)
    with pytest.raises(NonFiniteLossError) as info:
        train(cfg, _model_cfg())
    message = str(info.value)
    path = os.path.join(cfg.out, "checkpoint.npz")
    state, meta = load_checkpoint(path)  # the first step's update stays finite (at this seed)
    assert f"last good checkpoint, {path}, is at step {meta['step']}" in message
    assert all(np.all(np.isfinite(v)) for v in state.values() if v.dtype.kind == "f")
    with pytest.raises(NonFiniteLossError, match="no checkpoint of this run was written yet"):
        train(_cfg(tmp_path / "b", steps=6, lr=1e30, warmup_steps=0, checkpoint_every=5), _model_cfg())


def test_non_finite_parameters_are_never_saved(tmp_path, monkeypatch):
    """Parameters that become NaN while the losses are still finite (the update of the step before a
    checkpoint) stop the run before the save: the previous checkpoint stays."""
    from minimaskrcnn.nn.optim import SGD

    cfg = _cfg(tmp_path, steps=4, checkpoint_every=2)
    real_step, calls = SGD.step, []

    def poisoned_step(self):
        real_step(self)
        calls.append(1)
        if len(calls) == 4:
            self.params[0].data[...] = np.nan

    monkeypatch.setattr(SGD, "step", poisoned_step)
    with pytest.raises(NonFiniteLossError, match=r"non-finite after step 4's update.*last good "
                       r"checkpoint, .*checkpoint.npz, is at step 2"):
        train(cfg, _model_cfg())
    state, meta = load_checkpoint(os.path.join(cfg.out, "checkpoint.npz"))
    assert meta["step"] == 2 and all(np.all(np.isfinite(v)) for v in state.values() if v.dtype.kind == "f")


@pytest.mark.parametrize("change, needle", [
    ({"lr": 0.5}, "lr (0.01 -> 0.5)"), ({"batch_size": 1}, "batch_size (2 -> 1)"),
    ({"seed": 3}, "seed (0 -> 3)"), ({"num_train_images": 8}, "num_train_images"),
    ({"steps": 2}, "steps=2 is below the step"),
    ({"steps": 12}, "cannot reproduce a 12-step run"),  # the 6-step run's decay began at step 5
])
def test_resume_refuses_changes_that_would_make_another_run(tmp_path, change, needle):
    train(_cfg(tmp_path), _model_cfg())
    with pytest.raises(ValueError) as info:
        train(_cfg(tmp_path, **change), _model_cfg(), resume=True)
    assert needle in str(info.value)


def test_resume_refuses_another_model_config(tmp_path):
    train(_cfg(tmp_path, steps=1), _model_cfg())
    with pytest.raises(ValueError, match="cannot change the model config"):
        train(_cfg(tmp_path, steps=1), _model_cfg(**{"mask.loss": "softmax"}), resume=True)


def test_resume_honours_a_longer_run_exactly_and_a_new_checkpoint_interval(tmp_path, monkeypatch):
    """A 6-step run killed after its step-3 checkpoint, resumed with steps=8 and checkpoint_every=1,
    equals an uninterrupted 8-step run (both lr decays start after step 3)."""
    import minimaskrcnn.train as T

    straight = _cfg(tmp_path / "a", steps=8)
    train(straight, _model_cfg())
    half = _cfg(tmp_path / "b", steps=6)
    calls, real = [], T.batch_of

    def dying_batch_of(*args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(T, "batch_of", dying_batch_of)
    with pytest.raises(KeyboardInterrupt):
        train(half, _model_cfg())
    monkeypatch.setattr(T, "batch_of", real)
    saves, real_save = [], T.save_checkpoint
    monkeypatch.setattr(T, "save_checkpoint", lambda path, state, meta: (saves.append(meta["step"]),
                                                                          real_save(path, state, meta)))
    train(_cfg(tmp_path / "b", steps=8, checkpoint_every=1), _model_cfg(), resume=True)
    assert saves == [4, 5, 6, 7, 8, 8]  # every step, then the final save
    sa, _ = load_checkpoint(os.path.join(straight.out, "checkpoint.npz"))
    sb, mb = load_checkpoint(os.path.join(half.out, "checkpoint.npz"))
    assert mb["train"]["steps"] == 8
    for k in sa:
        np.testing.assert_array_equal(sb[k], sa[k], err_msg=k)


def test_resume_on_a_model_file_says_so(tmp_path):
    cfg = _cfg(tmp_path, steps=1)
    train(cfg, _model_cfg())
    os.replace(os.path.join(cfg.out, "model.npz"), os.path.join(cfg.out, "checkpoint.npz"))
    with pytest.raises(ValueError, match="holds a model but no training state.*not a model file"):
        train(cfg, _model_cfg(), resume=True)


def test_disk_full_during_a_save_names_the_file_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    import errno

    cfg = _cfg(tmp_path, steps=3, decay_fraction=0.0)
    train(cfg, _model_cfg())

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "savez", full)
    with pytest.raises(OSError) as info:
        train(_cfg(tmp_path, steps=6, decay_fraction=0.0), _model_cfg(), resume=True)
    assert info.value.errno == errno.ENOSPC and info.value.filename.endswith("checkpoint.npz")
    _, meta = load_checkpoint(os.path.join(cfg.out, "checkpoint.npz"))
    assert meta["step"] == 3 and [f for f in os.listdir(cfg.out) if f.endswith(".tmp")] == []


# -- the command line's --resume ---------------------------------------------------------------------

def test_cli_resume_refuses_a_changed_flag_and_a_model_file(tmp_path, capsys):
    from minimaskrcnn.cli import main

    cfg = _cfg(tmp_path, steps=1)
    train(cfg, _model_cfg())
    for argv, needle in ((["--lr", "0.5"], "lr (0.01 -> 0.5)"),
                         (["--batch-size", "4"], "batch_size (2 -> 4)"),
                         (["--set", "mask.loss=softmax"], "model config")):
        assert main(["train", "--resume", "--out", cfg.out, *argv]) == 2
        err = capsys.readouterr().err
        assert "minimaskrcnn train: error: --resume continues the run" in err and needle in err, err
    os.replace(os.path.join(cfg.out, "model.npz"), os.path.join(cfg.out, "checkpoint.npz"))
    assert main(["train", "--resume", "--out", cfg.out]) == 2
    assert "no training state" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(tmp_path / "empty")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_resume_keeps_the_runs_own_settings(tmp_path, monkeypatch):
    """--resume without flags continues with the run's settings (not the command's defaults); the flags
    given are the only changes."""
    import minimaskrcnn.train as T
    from minimaskrcnn.cli import main

    cfg = _cfg(tmp_path, steps=2)
    train(cfg, _model_cfg())
    seen = {}
    def fake_train(c, m=None, resume=False, model=None):
        seen.update(cfg=c, model=m, resume=resume, built=model)
        return {"step": 0, "seconds": 0.0}

    monkeypatch.setattr(T, "train", fake_train)
    assert main(["train", "--resume", "--out", cfg.out, "--checkpoint-every", "1"]) == 0
    import dataclasses

    assert seen["resume"] and seen["model"] is None and seen["built"] is None
    assert seen["cfg"] == dataclasses.replace(cfg, checkpoint_every=1)


def test_a_new_run_starts_a_new_log(tmp_path):
    """A fresh run in a folder whose previous run was killed mid-write: the log holds this run only."""
    cfg = _cfg(tmp_path, steps=2)
    os.makedirs(cfg.out)
    with open(os.path.join(cfg.out, "log.jsonl"), "w") as f:
        f.write('{"step": 1, "total": 1.0}\n{"step": 2, "to')
    train(cfg, _model_cfg())
    assert [r["step"] for r in _log(cfg.out)] == [1, 2]
