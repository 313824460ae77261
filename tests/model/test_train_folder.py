"""Training on a COCO folder: classes from the categories, validation, best checkpoint, exact resume,
bad folders refused before training; evaluate's JSON scored alike by pycocotools (crowds included)."""

import json
import os

import numpy as np
import pytest
from test_equivalence import tiny_config

from minimaskrcnn.checkpoint import load_checkpoint
from minimaskrcnn.cli import main
from minimaskrcnn.datasets import CocoFolderDataset
from minimaskrcnn.datasets.synthetic_coco import write_folder
from minimaskrcnn.train import TrainConfig, train
from minimaskrcnn.weights import load_model

NAMES = ["background", "disc", "square", "triangle", "star"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    write_folder(root / "train", 8, seed=0, crowd_fraction=0.3)
    write_folder(root / "val", 3, seed=2, crowd_fraction=1.0)
    return root


def _cfg(tmp_path, folders, **kw):
    base = dict(steps=4, batch_size=2, lr=0.01, warmup_steps=2, seed=0, out=str(tmp_path / "run"),
                checkpoint_every=2, eval_images=1, progress=False, dataset=str(folders / "train"),
                val_dataset=str(folders / "val"), val_every=2, scale_jitter=(56, 72))
    base.update(kw)
    return TrainConfig(**base)


def _model_cfg():
    return tiny_config(**{"rpn.batch_size_per_image": 64, "roi_heads.batch_size_per_image": 32,
                          "transform.resize": True, "transform.min_size": 64, "transform.max_size": 96})


def _lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_folder_run_takes_classes_validates_and_keeps_the_best(tmp_path, folders):
    cfg = _cfg(tmp_path, folders)
    out = train(cfg, _model_cfg())
    assert out["step"] == 4 and "segm" in out["eval"]
    model = load_model(os.path.join(cfg.out, "model.npz"))
    assert list(model.config.class_names) == NAMES and model.config.num_classes == 5
    assert model.config.transform.resize  # the saved model still resizes photos at inference
    _, meta = load_checkpoint(os.path.join(cfg.out, "model.npz"))
    assert meta["category_ids"] == [3, 8, 15, 42]
    log = _lines(os.path.join(cfg.out, "log.jsonl"))
    assert [r["step"] for r in log] == [1, 2, 3, 4] and [r["epoch"] for r in log] == [1, 1, 1, 1]
    val = _lines(os.path.join(cfg.out, "val.jsonl"))
    assert [r["step"] for r in val] == [2, 4] and all(0 <= r["segm_AP"] <= 1 for r in val)
    _, best = load_checkpoint(os.path.join(cfg.out, "best.npz"))
    assert best["val"]["step"] == out["best"]["step"] and best["val"]["segm_AP"] == max(
        [r["segm_AP"] for r in val] + [out["eval"]["segm"]["AP"]])
    with open(os.path.join(cfg.out, "eval.json")) as f:
        assert json.load(f)["eval_images"] == 3  # the whole validation folder


def test_epochs_visit_every_image_in_a_seeded_order(tmp_path, folders, monkeypatch):
    import minimaskrcnn.train as T

    seen, real = [], T.batch_of
    monkeypatch.setattr(T, "batch_of", lambda ds, idx: (seen.append(list(idx)), real(ds, idx))[1])
    train(_cfg(tmp_path, folders, steps=8, val_every=0, eval_images=0, val_fraction=0.25, val_dataset=None),
          _model_cfg())
    flat = [i for b in seen for i in b]  # 6 training images after holding out 2: 16 draws = 2.67 epochs
    assert sorted(flat[:6]) == sorted(flat[6:12]) == list(range(6)) and flat[:6] != flat[6:12]


def test_an_already_built_model_or_a_factory_trains(tmp_path, folders):
    from minimaskrcnn.config import with_overrides
    from minimaskrcnn.model import MaskRCNN

    built = []

    def factory(num_classes, class_names):
        built.append((num_classes, class_names))
        return MaskRCNN(with_overrides(_model_cfg(), num_classes=num_classes, class_names=class_names),
                        np.random.default_rng(5))

    cfg = _cfg(tmp_path, folders, steps=1, val_every=0, eval_images=0)
    assert train(cfg, model=factory)["step"] == 1 and built == [(5, tuple(NAMES))]
    model = MaskRCNN(with_overrides(_model_cfg(), num_classes=5, class_names=None), np.random.default_rng(5))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    train(_cfg(tmp_path / "b", folders, steps=1, val_every=0, eval_images=0), model=model)
    assert list(model.config.class_names) == NAMES  # filled in from the folder
    assert any(not np.array_equal(before[k], v) for k, v in model.state_dict().items())  # it trained
    with pytest.raises(ValueError, match="num_classes"):
        train(_cfg(tmp_path / "c", folders, steps=1), model=MaskRCNN(_model_cfg(), np.random.default_rng(0)))


def test_held_out_split_is_printed_and_disjoint(tmp_path, folders, capsys):
    out = train(_cfg(tmp_path, folders, steps=1, val_dataset=None, val_fraction=0.25, progress=True,
                     val_every=0), _model_cfg())
    text = capsys.readouterr().out
    assert "held-out split (seed 0, val_fraction 0.25): 6 images for training, 2 for validation" in text
    assert out["step"] == 1


def test_folder_resume_continues_exactly(tmp_path, folders, monkeypatch):
    import minimaskrcnn.train as T

    straight = _cfg(tmp_path / "a", folders, val_every=3)
    train(straight, _model_cfg())
    half = _cfg(tmp_path / "b", folders, val_every=3)
    calls, real = [], T.batch_of

    def dying_batch_of(*args):
        calls.append(1)
        if len(calls) == 4:  # killed loading step 4's batch, after step 3's validation
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(T, "batch_of", dying_batch_of)
    with pytest.raises(KeyboardInterrupt):
        train(half, _model_cfg())
    monkeypatch.setattr(T, "batch_of", real)
    # --resume continues the run as it was started: the same settings, the checkpoint's model config.
    train(_cfg(tmp_path / "b", folders, val_every=3), None, resume=True)
    sa, ma = load_checkpoint(os.path.join(straight.out, "checkpoint.npz"))
    sb, mb = load_checkpoint(os.path.join(half.out, "checkpoint.npz"))
    assert ma["step"] == mb["step"] == 4 and ma["rng"] == mb["rng"] and ma["best"] == mb["best"]
    for k in sa:
        np.testing.assert_array_equal(sb[k], sa[k], err_msg=k)
    assert [r["total"] for r in _lines(os.path.join(half.out, "log.jsonl"))] == \
        [r["total"] for r in _lines(os.path.join(straight.out, "log.jsonl"))]
    assert _lines(os.path.join(half.out, "val.jsonl")) == _lines(os.path.join(straight.out, "val.jsonl"))


def test_bad_folder_refused_before_training(tmp_path, folders, capsys):
    bad = tmp_path / "bad"
    write_folder(bad, 2, seed=0)
    ann = bad / "annotations" / "instances_default.json"
    data = json.loads(ann.read_text())
    data["categories"].append({"id": 99, "name": "unicorn"})
    ann.write_text(json.dumps(data))
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(bad), "--steps", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("minimaskrcnn train: error: ")
    assert "instances_default.json" in err[0] and "id=99 name='unicorn'" in err[0]
    assert not out.exists()  # nothing trained, nothing written
    assert main(["train", "--val-dataset", str(bad)]) == 2  # --val-dataset without --dataset
    assert main(["train", "--dataset", str(bad), "--scale-jitter", "big"]) == 2


class _GroundTruthModel:
    """Stands in for a trained model: detects each non-crowd object of a folder (shifted by a pixel,
    with descending scores), plus one false positive per image on the crowd region when there is one."""

    def __init__(self, dataset):
        from types import SimpleNamespace

        self.config = SimpleNamespace(class_names=tuple(dataset.class_names))
        self.items = {dataset[i]["image"].tobytes(): dataset[i] for i in range(len(dataset))}

    def predict(self, images):
        out = []
        for image in images:
            item = self.items[image.tobytes()]
            masks = np.roll(item["masks"], 1, axis=2)
            boxes = item["boxes"] + np.array([1, 0, 1, 0], np.float32)
            labels = item["labels"].copy()
            labels[1::3] = labels[1::3] % 4 + 1  # every third one in the wrong class
            scores = np.linspace(0.9, 0.3, len(labels)).astype(np.float32)
            out.append({"boxes": boxes, "labels": labels, "scores": scores, "masks": masks})
        return out


def test_evaluate_folder_json_scored_alike_by_pycocotools(tmp_path, folders, monkeypatch, capsys,
                                                         pycocotools):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    import minimaskrcnn.weights as W
    from minimaskrcnn.evaluation import coco_evaluate

    ds = CocoFolderDataset(folders / "val")
    assert any(ds[i]["iscrowd"].any() for i in range(len(ds)))  # crowd regions are in the test
    monkeypatch.setattr(W, "load_model", lambda path: _GroundTruthModel(ds))
    gt, dt = tmp_path / "gt.json", tmp_path / "dt.json"
    assert main(["evaluate", "--checkpoint", "x.npz", "--dataset", str(folders / "val"),
                 "--gt-out", str(gt), "--results-out", str(dt)]) == 0
    printed = capsys.readouterr().out
    gt_data, dets = json.loads(gt.read_text()), json.loads(dt.read_text())
    # the folder's own ids
    assert {img["id"] for img in gt_data["images"]} == {1000, 1003, 1006}
    assert {c["id"] for c in gt_data["categories"]} == {3, 8, 15, 42}
    assert {d["category_id"] for d in dets} <= {3, 8, 15, 42}
    assert any(a["iscrowd"] for a in gt_data["annotations"])
    coco = COCO(str(gt))
    for iou_type, name in (("bbox", "box "), ("segm", "mask")):
        ev = COCOeval(coco, coco.loadRes(str(dt)), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        ours = coco_evaluate(gt_data, dets, iou_type)["stats"]
        np.testing.assert_allclose(ours, ev.stats, atol=1e-12)
        assert 0.2 < ev.stats[0] < 1.0  # a real test: neither zero nor perfect
        assert f"{name} AP {ev.stats[0]:.3f}" in printed


def test_evaluate_refuses_a_folder_of_other_classes(tmp_path, folders, capsys):
    from minimaskrcnn.model import MaskRCNN
    from minimaskrcnn.weights import save_model

    path = tmp_path / "shapes.npz"
    save_model(path, MaskRCNN(tiny_config(), np.random.default_rng(0)))  # square, circle, triangle
    assert main(["evaluate", "--checkpoint", str(path), "--dataset", str(folders / "val")]) == 2
    assert "are not the model's classes" in capsys.readouterr().err


def test_predict_draws_the_folders_class_names(tmp_path, folders, monkeypatch):
    import minimaskrcnn.viz as V

    cfg = _cfg(tmp_path, folders, steps=1, val_every=0, eval_images=0)
    train(cfg, _model_cfg())
    seen = {}
    real = V.draw_instances
    monkeypatch.setattr(V, "draw_instances", lambda *a, **kw: (seen.update(kw), real(*a, **kw))[1])
    image = next((folders / "val" / "images").iterdir())
    assert main(["predict", str(image), "--checkpoint", os.path.join(cfg.out, "model.npz"),
                 "--out", str(tmp_path / "p"), "--score-thresh", "0"]) == 0
    assert list(seen["class_names"]) == NAMES
