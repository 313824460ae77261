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
