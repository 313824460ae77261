"""The benchmark runner and the `minimaskrcnn vos` command (small runs with the cheap copy method)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from minimaskrcnn.cli import main as cli_main
from minimaskrcnn.evaluation.davis import evaluate_benchmark, evaluate_clip
from minimaskrcnn.video.benchmark import format_table, run_benchmark
from minimaskrcnn.video.propagate import propagate_copy
from minimaskrcnn.video.synthetic import make_clip


def test_run_benchmark_aggregates_like_davis(tmp_path):
    res = run_benchmark(["copy"], num_clips=3, seed=2, image_size=64, strips_dir=str(tmp_path))
    r = res["copy"]
    # The overall numbers are the DAVIS means over every object of every clip.
    clips = [make_clip(i, seed=2, image_size=64) for i in range(3)]
    want = evaluate_benchmark([evaluate_clip(c.ids, propagate_copy(c.frames, c.ids[0])) for c in clips])
    assert r["J&F"] == pytest.approx(want["J&F"])
    assert r["J"] == pytest.approx(want["J"]) and r["F"] == pytest.approx(want["F"])
    # Per attribute: clip 0 is the control split, clip 1 an occlusion clip, clip 2 fast motion.
    assert r["per_attribute"]["control"]["num_clips"] == 1
    assert r["per_attribute"]["control"]["J&F"] == pytest.approx(r["per_clip"][clips[0].name]["J&F"])
    assert r["per_attribute"]["occlusion"]["num_clips"] >= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{c.name}.png" for c in clips)
    table = format_table(res)
    assert "copy" in table and "control" in table and "occlusion" in table


def test_vos_command_writes_json(tmp_path, capsys):
    out = tmp_path / "out.json"
    assert cli_main(["vos", "--methods", "copy", "--clips", "1", "--json", str(out), "--seed", "4"]) == 0
    printed = capsys.readouterr().out
    assert "J&F" in printed and "control" in printed
    data = json.loads(out.read_text())
    r = data["copy"]
    for key in ("J", "F"):
        assert set(r[key]) == {"mean", "recall", "decay"}
        assert 0 <= r[key]["mean"] <= 1 and 0 <= r[key]["recall"] <= 1 and -1 <= r[key]["decay"] <= 1
    assert 0 <= r["J&F"] <= 1
    assert r["J&F"] == pytest.approx((r["J"]["mean"] + r["F"]["mean"]) / 2)
    assert list(r["per_attribute"]) == ["control"]
    assert np.isfinite(r["seconds"])


def test_vos_command_refuses_unknown_method(capsys):
    assert cli_main(["vos", "--methods", "copy,redetect-not-here", "--clips", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minimaskrcnn vos: error:") and "available: align, copy, embed" in err


def test_unknown_method_and_bad_count():
    with pytest.raises(ValueError, match="available"):
        run_benchmark(["copy", "osvos-not-here"], num_clips=1)
    with pytest.raises(ValueError, match="num_clips"):
        run_benchmark(["copy"], num_clips=0)


def test_vos_command_missing_checkpoint(tmp_path, capsys):
    missing = str(tmp_path / "none.npz")
    assert cli_main(["vos", "--methods", "copy,redetect", "--clips", "1", "--checkpoint", missing]) == 2
    err = capsys.readouterr().err
    assert "no trained Mask R-CNN" in err and "none.npz" in err
    with pytest.raises(FileNotFoundError):
        run_benchmark(["osvos"], num_clips=1, checkpoint=missing)


def test_run_benchmark_with_the_detector_on_a_short_clip():
    res = run_benchmark(["copy", "redetect"], num_clips=1, seed=0, num_frames=8, keep_predictions=True)
    clip = make_clip(0, seed=0, num_frames=8)
    pred = res["redetect"]["predictions"][clip.name]
    assert pred.shape == clip.ids.shape
    assert res["redetect"]["J&F"] == pytest.approx(evaluate_benchmark([evaluate_clip(clip.ids, pred)])["J&F"])
    assert 0 <= res["redetect"]["J&F"] <= 1


def test_speed_rows_and_photo_split(capsys):
    from minimaskrcnn.video.benchmark import measure_speed

    rows = measure_speed(["copy", "flow"], num_frames=8, sizes=((64, 96),))
    assert [r["method"] for r in rows] == ["copy", "flow", "flow@full"]
    assert all(r["size"] == (64, 96) and r["fps"] > 0 for r in rows)
    res = run_benchmark(["copy"], num_clips=2, split="photo", num_frames=8)
    assert len(res["copy"]["per_clip"]) == 2 and res["copy"]["fps"] > 0
    assert all(name.startswith("photo2000_") for name in res["copy"]["per_clip"])
    with pytest.raises(ValueError, match="split"):
        run_benchmark(["copy"], num_clips=1, split="nope")
