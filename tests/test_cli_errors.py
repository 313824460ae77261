"""The command line on bad input: one ``minimaskrcnn CMD: error: ...`` line on stderr and exit 2, no
traceback; a traceback (and a line saying it is a bug) only for a bug, exit 1. Output locations are
checked before any long work starts. Most tests call ``main`` in-process; a few run
``python -m minimaskrcnn`` to prove what a user sees."""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minimaskrcnn.cli import main
from minimaskrcnn.datasets import ShapesDataset
from minimaskrcnn.datasets.coco import export_coco
from minimaskrcnn.model import MaskRCNN
from minimaskrcnn.weights import save_model

sys.path.insert(0, str(Path(__file__).parent / "model"))
from test_equivalence import tiny_config  # noqa: E402


def run(argv, capsys):
    """(exit status, stdout, stderr) of ``main(argv)``; argparse's own errors exit via SystemExit."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, *needles):
    """Exit 2 and exactly one ``error:`` line (argparse may add its usage line), no traceback."""
    assert code == 2, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1, err
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = root / "m.npz"
    save_model(model, MaskRCNN(tiny_config(**{"roi_heads.detections_per_img": 5}), np.random.default_rng(0)))
    from PIL import Image

    good = root / "good.png"
    Image.fromarray(ShapesDataset(1, image_size=64, seed=1)[0]["image"]).save(good)
    (root / "text.png").write_text("not an image")
    data = good.read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "junk.npz").write_bytes(b"not a zip archive")
    np.savez(root / "plain.npz", a=np.zeros(3))
    (root / "a_file").write_text("a file where a folder is expected")
    export_coco(ShapesDataset(2, image_size=64, seed=3), root / "coco")
    return root


def coco_variant(files, tmp_path, edit):
    """A copy of the good COCO folder with its annotation file edited (a function or raw text)."""
    folder = tmp_path / "coco"
    shutil.copytree(files / "coco", folder)
    ann = next((folder / "annotations").glob("*.json"))
    if callable(edit):
        data = json.loads(ann.read_text())
        edit(data)
        ann.write_text(json.dumps(data))
    else:
        ann.write_text(edit)
    return folder


# -- predict ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, needle", [("missing.png", "no such file"), ("text.png", "cannot identify"),
                                          ("truncated.png", "truncated")])
def test_predict_unreadable_image(files, tmp_path, capsys, name, needle):
    code, _, err = run(["predict", files / name, "--checkpoint", files / "m.npz", "--out", tmp_path], capsys)
    assert_user_error(code, err, "minimaskrcnn predict: error: cannot read image", name, needle)


@pytest.mark.parametrize("name, needle", [("missing.npz", "does not exist"), ("junk.npz", "not a readable"),
                                          ("plain.npz", "not a minimaskrcnn checkpoint")])
def test_predict_bad_model_file(files, tmp_path, capsys, name, needle):
    code, _, err = run(["predict", files / "good.png", "--checkpoint", files / name, "--out", tmp_path],
                       capsys)
    assert_user_error(code, err, name, needle)


def test_predict_goes_on_past_a_bad_image_and_keeps_same_stems_apart(files, tmp_path, capsys):
    """Two inputs named x.png and one bad image in the middle: both x overlays are written under
    distinct names, the bad image is reported at the end (one error line), exit 2."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(files / "good.png", tmp_path / "a" / "x.png")
    shutil.copy(files / "good.png", tmp_path / "b" / "x.png")
    out = tmp_path / "out"
    images = [tmp_path / "a" / "x.png", files / "text.png", tmp_path / "b" / "x.png"]
    code, stdout, err = run(["predict", *images, "--checkpoint", files / "m.npz", "--out", out,
                             "--score-thresh", "0"], capsys)
    assert_user_error(code, err, "text.png")
    assert sorted(os.listdir(out)) == ["x-2_pred.png", "x_pred.png"]  # nothing overwritten, no temp file
    assert stdout.count("instance(s)") == 2


def test_predict_output_folder_checked_first(files, tmp_path, capsys, monkeypatch):
    import minimaskrcnn.weights as W

    monkeypatch.setattr(W, "load_model", lambda path: pytest.fail("model loaded before --out was checked"))
    code, _, err = run(["predict", files / "good.png", "--checkpoint", files / "m.npz",
                        "--out", files / "a_file" / "sub"], capsys)
    assert_user_error(code, err, "--out", "a_file")


# -- evaluate --------------------------------------------------------------------------------------

def _drop_second_category(data):
    keep = data["categories"][0]["id"]
    data["categories"] = data["categories"][:1]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] == keep]


@pytest.mark.parametrize("edit, needles", [
    ("{not json", ["malformed JSON"]),
    (lambda d: d["annotations"][0].update(image_id=999), ["image_id", "unknown image 999"]),
    (lambda d: d["annotations"][0].update(segmentation={"size": [64, 64], "counts": "!!!"}), ["RLE"]),
    (lambda d: d["images"][0].update(width=65), ["size"]),
    (lambda d: d["annotations"][0].update(category_id=77), ["category_id", "unknown category 77"]),
    (_drop_second_category, ["categories ['square']", "are not the model's classes"]),
], ids=["bad-json", "unknown-image-id", "bad-rle", "size-mismatch", "unknown-category",
        "model-vs-categories"])
def test_evaluate_bad_coco_folder(files, tmp_path, capsys, edit, needles):
    folder = coco_variant(files, tmp_path, edit)
    code, _, err = run(["evaluate", "--checkpoint", files / "m.npz", "--dataset", folder], capsys)
    assert_user_error(code, err, "minimaskrcnn evaluate: error:", *needles)


def test_evaluate_missing_coco_folder(files, tmp_path, capsys):
    code, _, err = run(["evaluate", "--checkpoint", files / "m.npz", "--dataset", tmp_path / "nope"], capsys)
    assert_user_error(code, err, "nope", "does not exist")


@pytest.mark.parametrize("flag", ["--gt-out", "--results-out"])
def test_evaluate_outputs_checked_before_the_evaluation(files, tmp_path, capsys, monkeypatch, flag):
    import minimaskrcnn.evaluation as E

    monkeypatch.setattr(E, "evaluate_model", lambda *a, **k: pytest.fail("evaluated before checking " + flag))
    for target, needle in ((files / "a_file" / "x.json", "is a file, not a folder"),
                           (tmp_path / "missing" / "x.json", "does not exist"), (tmp_path, "is a folder")):
        code, _, err = run(["evaluate", "--checkpoint", files / "m.npz", "--num-images", "1", flag, target],
                           capsys)
        assert_user_error(code, err, flag, needle)


def test_read_only_output_folder(files, tmp_path, capsys, monkeypatch):
    """A read-only folder (simulated: the write probe's open fails with EROFS, as it would on a
    read-only mount, whose permissions root cannot override) is refused before any work."""
    import minimaskrcnn._checks as C

    def read_only(path, mode="r", *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    monkeypatch.setattr(C, "open", read_only, raising=False)
    for argv in (["evaluate", "--checkpoint", files / "m.npz", "--results-out", tmp_path / "d.json"],
                 ["predict", files / "good.png", "--checkpoint", files / "m.npz", "--out", tmp_path],
                 ["train", "--out", tmp_path / "run", "--steps", "1"],
                 ["vos", "--methods", "copy", "--clips", "1", "--strips", tmp_path / "strips"],
                 ["demo", "--out", tmp_path / "demo.png"]):
        code, _, err = run(argv, capsys)
        assert_user_error(code, err, "Read-only file system")


def test_disk_full_while_writing_results(files, tmp_path, capsys, monkeypatch):
    """ENOSPC in the middle of writing --results-out: one error line naming the file, exit 2, and no
    half-written file (neither the result nor its temporary)."""
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(json, "dump", full)
    dt = tmp_path / "dt.json"
    code, _, err = run(["evaluate", "--checkpoint", files / "m.npz", "--num-images", "1", "--seed", "7",
                        "--results-out", dt], capsys)
    assert_user_error(code, err, "dt.json", "No space left on device")
    assert os.listdir(tmp_path) == []


# -- train, vos, demo, bench arguments ---------------------------------------------------------------

@pytest.mark.parametrize("argv, needles", [
    (["train", "--steps", "0"], ["--steps", ">= 1", "'0'"]),
    (["train", "--batch-size", "0"], ["--batch-size", ">= 1"]),
    (["train", "--lr", "nan"], ["--lr", "finite"]),
    (["train", "--lr", "-1"], ["--lr", "> 0"]),
    (["train", "--checkpoint-every", "0"], ["--checkpoint-every", ">= 1"]),
    (["train", "--seed", "-1"], ["--seed", ">= 0"]),
    (["train", "--minutes", "inf"], ["--minutes", "finite"]),
    (["train", "--eval-images", "x"], ["--eval-images", "integer"]),
    (["train", "--set", "rpn.nope=1"], ["unknown config field 'rpn.nope'", "nms_thresh"]),
    (["train", "--set", "nope.x=1"], ["unknown config field 'nope.x'", "no part 'nope'"]),
    (["train", "--set", "rpn=1"], ["'rpn' is a group of fields"]),
    (["train", "--set", "rpn.nms_thresh=abc"], ["'rpn.nms_thresh' expects float", "'abc'"]),
    (["train", "--set", "backbone.stem_channels=1.5"], ["'backbone.stem_channels' expects int", "1.5"]),
    (["train", "--set", "backbone.fpn=1"], ["'backbone.fpn' expects bool"]),
    (["train", "--set", "mask.loss"], ["--set expects FIELD=VALUE"]),
    (["vos", "--clips", "0"], ["--clips", ">= 1"]),
    (["vos", "--seed", "-3"], ["--seed", ">= 0"]),
    (["demo", "--num-images", "0"], ["--num-images", ">= 1"]),
    (["evaluate", "--checkpoint", "m.npz", "--num-images", "0"], ["--num-images", ">= 1"]),
    (["predict", "x.png", "--checkpoint", "m.npz", "--score-thresh", "nan"], ["--score-thresh", "[0, 1]"]),
    (["bench", "ops", "--repeat", "0"], ["--repeat", ">= 1"]),
    (["bench", "ops", "--threads", "0"], ["--threads", ">= 1"]),
])
def test_bad_arguments_are_named(tmp_path, capsys, monkeypatch, argv, needles):
    import minimaskrcnn.train as T

    monkeypatch.setattr(T, "train", lambda *a, **k: pytest.fail("training started"))
    if argv[0] == "train":
        argv = argv + ["--out", str(tmp_path / "run")]
    code, _, err = run(argv, capsys)
    assert_user_error(code, err, f"minimaskrcnn {argv[0]}: error:", *needles)


def test_train_output_folder_checked_before_work(files, capsys, monkeypatch):
    import minimaskrcnn.train as T

    monkeypatch.setattr(T, "train", lambda *a, **k: pytest.fail("training started"))
    code, _, err = run(["train", "--out", files / "a_file" / "run"], capsys)
    assert_user_error(code, err, "--out", "a_file")


@pytest.mark.parametrize("flag", ["--json", "--strips"])
def test_vos_outputs_checked_before_the_benchmark(files, capsys, monkeypatch, flag):
    from minimaskrcnn.video import benchmark

    monkeypatch.setattr(benchmark, "run_benchmark", lambda *a, **k: pytest.fail("ran before checking"))
    code, _, err = run(["vos", "--methods", "copy", "--clips", "1", flag, files / "a_file" / "x"], capsys)
    assert_user_error(code, err, flag, "a_file")


def test_demo_output_checked_before_work(files, capsys):
    code, _, err = run(["demo", "--out", files / "a_file" / "demo.png"], capsys)
    assert_user_error(code, err, "--out", "a_file")


# -- a bug is not a user error ---------------------------------------------------------------------

def test_a_bug_gets_its_traceback_and_says_so(files, tmp_path, capsys, monkeypatch):
    """An exception that no validation raised (here NumPy's own ValueError and a ZeroDivisionError)
    prints the traceback and a line calling it a bug, exit 1."""
    import minimaskrcnn.weights as W

    for exc in (lambda: np.zeros(3).reshape(2, 2), lambda: 1 // 0):
        monkeypatch.setattr(W, "load_model", lambda path, exc=exc: exc())
        code, _, err = run(["predict", files / "good.png", "--checkpoint", files / "m.npz",
                            "--out", tmp_path], capsys)
        assert code == 1 and "Traceback" in err and "this is a bug in minimaskrcnn" in err, err


# -- what a user sees: real processes --------------------------------------------------------------

def _cli(*argv, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "minimaskrcnn", *map(str, argv)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


@pytest.mark.parametrize("argv, needle", [
    (["predict", "{files}/missing.png", "--checkpoint", "{files}/m.npz", "--out", "o"], "cannot read image"),
    (["evaluate", "--checkpoint", "{files}/junk.npz"], "not a readable checkpoint"),
    (["train", "--checkpoint-every", "0"], "--checkpoint-every"),
    (["train", "--set", "rpn.nms_thresh=abc", "--out", "run"], "expects float"),
])
def test_subprocess_one_error_line_exit_2(files, tmp_path, argv, needle):
    proc = _cli(*(a.format(files=files) for a in argv), cwd=tmp_path)
    assert_user_error(proc.returncode, proc.stderr, needle)


def test_disk_full_while_writing_an_overlay(files, tmp_path, capsys, monkeypatch):
    from matplotlib.figure import Figure

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Figure, "savefig", full)
    code, _, err = run(["predict", files / "good.png", "--checkpoint", files / "m.npz", "--out", tmp_path],
                       capsys)
    assert_user_error(code, err, "good_pred.png", "No space left on device")
    assert os.listdir(tmp_path) == []


def test_disk_full_while_training_names_the_checkpoint(tmp_path, capsys, monkeypatch):
    """ENOSPC in the middle of a checkpoint save of `minimaskrcnn train`: one error line naming
    checkpoint.npz, exit 2, no temporary file left (a one-step run of a tiny model)."""
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "savez", full)
    code, _, err = run(["train", "--out", tmp_path / "run", "--steps", "1", "--batch-size", "1",
                        "--eval-images", "0", "--set", "backbone.stem_channels=8",
                        "--set", "backbone.stage_channels=(8, 8, 16, 16)", "--set", "backbone.num_groups=4",
                        "--set", "backbone.fpn_channels=8", "--set", "mask.layers=(8, 8)",
                        "--set", "roi_heads.representation_size=16"], capsys)
    assert_user_error(code, err, "checkpoint.npz: No space left on device")
    assert [f for f in os.listdir(tmp_path / "run") if f.endswith(".tmp")] == []


def test_set_accepts_lowercase_booleans():
    """``--set backbone.residual=true`` means True, as JSON and YAML spell it; other words stay strings."""
    from minimaskrcnn.cli import _literal

    assert _literal("true") is True and _literal("False") is False and _literal("TRUE") is True
    assert _literal("softmax") == "softmax" and _literal("(16, 32)") == (16, 32)
