"""DAVIS-layout folders in and out: reading, writing, `vos --davis`, and vos-benchmark as the oracle."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from minimaskrcnn.cli import main as cli_main
from minimaskrcnn.evaluation.davis import GLOBAL_COLUMNS, SEQUENCE_COLUMNS, evaluate_benchmark, evaluate_clip
from minimaskrcnn.video import davis_io
from minimaskrcnn.video.benchmark import run_sequences
from minimaskrcnn.video.synthetic import make_clip, write_davis


def _write_folder(root, clips, res="480p", image_set=None):
    names = [write_davis(c, str(root), resolution=res) for c in clips]
    if image_set:
        os.makedirs(root / "ImageSets" / "2017", exist_ok=True)
        (root / "ImageSets" / "2017" / f"{image_set}.txt").write_text("\n".join(names) + "\n")
    return names


@pytest.fixture(scope="module")
def clips():
    # Small frames keep the test in seconds: two clips, with one and two objects, all visible throughout.
    return [make_clip(i, seed=s, image_size=64, num_frames=9) for s, i in ((3, 0), (1, 3))]


def test_write_and_read_back(tmp_path, clips):
    name = write_davis(clips[1], str(tmp_path))
    frame0 = tmp_path / "JPEGImages" / "480p" / name / "00000.jpg"
    ann0 = tmp_path / "Annotations" / "480p" / name / "00000.png"
    assert frame0.is_file() and ann0.is_file()
    with Image.open(ann0) as a:
        assert a.mode == "P"
        assert a.getpalette()[3:6] == [128, 0, 0]  # object 1 is dark red, as in DAVIS
    seq = davis_io.read_davis_sequence(str(tmp_path), name)
    assert seq.frame_names == [f"{t:05d}" for t in range(9)]
    np.testing.assert_array_equal(seq.gt, clips[1].ids)
    np.testing.assert_array_equal(seq.first_mask, clips[1].ids[0])
    # JPEG at quality 90: close to the frames, not equal.
    err = np.abs(seq.frames.astype(int) - clips[1].frames).mean()
    assert 0 < err < 6
    assert davis_io.davis_palette()[6:9] == [0, 128, 0]
    # No temporary file left behind.
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp")]


def test_davis2016_masks_and_a_plain_folder(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (4, 24, 32, 3), dtype=np.uint8)
    own = tmp_path / "my_clip"
    own.mkdir()
    for t, f in enumerate(frames):
        Image.fromarray(f).save(own / f"frame_{t:03d}.png")
    mask = np.zeros((24, 32), np.uint8)
    mask[5:15, 8:20] = 255
    Image.fromarray(mask, mode="L").save(tmp_path / "first.png")  # DAVIS 2016 style: 0 / 255
    seq = davis_io.read_frames_folder(str(own), str(tmp_path / "first.png"))
    assert seq.name == "my_clip" and seq.frame_names[0] == "frame_000" and seq.gt is None
    np.testing.assert_array_equal(seq.frames, frames)
    np.testing.assert_array_equal(seq.first_mask, (mask > 0).astype(np.uint8))
    out = tmp_path / "results"
    assert cli_main(["vos", "--frames", str(own), "--first-mask", str(tmp_path / "first.png"),
                     "--methods", "copy", "--out", str(out)]) == 0
    written = sorted(p.name for p in (out / "copy" / "my_clip").iterdir())
    assert written == [f"frame_{t:03d}.png" for t in range(4)]
    with Image.open(out / "copy" / "my_clip" / "frame_003.png") as a:
        assert a.mode == "P" and a.size == (32, 24)
        np.testing.assert_array_equal(np.array(a), seq.first_mask)


def test_bad_folders_name_the_file(tmp_path, clips, capsys):
    name = write_davis(clips[1], str(tmp_path))
    ann = tmp_path / "Annotations" / "480p" / name
    img = tmp_path / "JPEGImages" / "480p" / name
    # A later annotation with an object that frame 0 does not have.
    bad = np.array(Image.open(ann / "00004.png"))
    bad[0, 0] = 7
    davis_io.write_indexed_png(bad, str(ann / "00004.png"))
    with pytest.raises(ValueError, match=r"00004\.png.*\[7\]"):
        davis_io.read_davis_sequence(str(tmp_path), name)
    # A non-indexed (RGB) annotation.
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(ann / "00004.png")
    with pytest.raises(ValueError, match=r"00004\.png has image mode 'RGB'"):
        davis_io.read_davis_sequence(str(tmp_path), name)
    # A frame of another size.
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(img / "00003.jpg")
    with pytest.raises(ValueError, match=r"00003\.jpg is 64×32"):
        davis_io.read_davis_sequence(str(tmp_path), name)
    os.replace(img / "00002.jpg", img / "00003.jpg")
    os.remove(ann / "00003.png")
    # First mask: an object ID missing from frame 0 (1 and 3 present, 2 absent), then no first mask.
    first = np.zeros((64, 64), np.uint8)
    first[:5, :5], first[10:15, 10:15] = 1, 3
    davis_io.write_indexed_png(first, str(ann / "00000.png"))
    with pytest.raises(ValueError, match=r"00000\.png.*object\(s\) \[2\]"):
        davis_io.read_frames_folder(str(img), str(ann / "00000.png"))
    os.remove(ann / "00000.png")
    with pytest.raises(FileNotFoundError, match=r"00000\.png"):
        davis_io.read_davis_sequence(str(tmp_path), name)
    # On the command line: one error line, exit 2.
    assert cli_main(["vos", "--davis", str(tmp_path), "--methods", "copy", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "00000.png" in errors[0] and "Traceback" not in err
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        davis_io.list_sequences(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="test-dev"):
        davis_io.list_sequences(str(tmp_path), image_set="test-dev")


def test_vos_davis_command_matches_vos_benchmark(tmp_path, clips, capsys):
    """Our J, F and J&F on the written files equal vos-benchmark's, and vos-benchmark reads the written
    result folder unchanged; the CSVs have the official columns."""
    from conftest import require

    bench = require("vos_benchmark.benchmark")
    root, out = tmp_path / "DAVIS", tmp_path / "results"
    names = _write_folder(root, clips, image_set="val")
    argv = ["vos", "--davis", str(root), "--image-set", "val", "--methods", "copy,flow", "--out", str(out),
            "--evaluate"]
    assert cli_main(argv) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "J&F-Mean" in printed and "frames/s" in printed
    # stderr is not a terminal here (as in a notebook or a log): no progress bar and its carriage returns
    assert "\r" not in captured.err and "seq/s" not in captured.err
    for method in ("copy", "flow"):
        folder = out / method
        with open(folder / "global_results-val.csv") as f:
            header, row = f.read().splitlines()
        assert header.split(",") == list(GLOBAL_COLUMNS)
        ours = dict(zip(GLOBAL_COLUMNS, map(float, row.split(","))))
        with open(folder / "per-sequence_results-val.csv") as f:
            lines = f.read().splitlines()
        assert lines[0].split(",") == list(SEQUENCE_COLUMNS)
        assert [ln.split(",")[0] for ln in lines[1:]] == [f"{n}_{k}" for n, c in zip(names, clips)
                                                          for k in range(1, c.num_objects + 1)]
        # The oracle, on the same files (it takes percentages).
        jf, j, f, per_object = bench.benchmark([str(root / "Annotations" / "480p")], [str(folder)],
                                               num_processes=1, verbose=False)
        assert ours["J&F-Mean"] == pytest.approx(jf[0] / 100, abs=5e-4)
        assert ours["J-Mean"] == pytest.approx(j[0] / 100, abs=5e-4)
        assert ours["F-Mean"] == pytest.approx(f[0] / 100, abs=5e-4)
        # Exactly, per object, from the files as written (not rounded as in the CSV).
        ours_clips = {}
        for n in names:
            seq = davis_io.read_davis_sequence(str(root), n)
            pred = davis_io.read_masks(str(folder / n), seq.frame_names, seq.gt.shape[1:], seq.num_objects)
            ours_clips[n] = evaluate_clip(seq.gt, pred)
            iou, boundary = per_object[0][n]
            for k, obj in enumerate(ours_clips[n]["objects"], start=1):
                assert obj["J"]["mean"] == pytest.approx(iou[k] / 100, abs=1e-12)
                assert obj["F"]["mean"] == pytest.approx(boundary[k] / 100, abs=1e-12)
        want = evaluate_benchmark(list(ours_clips.values()))
        assert want["J&F"] == pytest.approx(jf[0] / 100, abs=1e-12)
        assert (folder / "results.csv").is_file()  # vos-benchmark wrote its own table beside ours


def test_run_sequences_needs_all_annotations_to_evaluate(tmp_path, clips):
    name = write_davis(clips[0], str(tmp_path))
    os.remove(tmp_path / "Annotations" / "480p" / name / "00005.png")
    seq = davis_io.read_davis_sequence(str(tmp_path), name)
    assert seq.gt is None
    with pytest.raises(FileNotFoundError, match="annotation for every frame"):
        run_sequences([seq], ["copy"], str(tmp_path / "r"), evaluate=True)
    res = run_sequences([seq], ["copy"], str(tmp_path / "r"))
    assert res["copy"]["frames"] == 9 and res["copy"]["fps"] > 0 and "global" not in res["copy"]
