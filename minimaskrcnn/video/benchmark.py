"""Run propagation methods over the synthetic clips, score them with the DAVIS measures, report.

``run_benchmark(["copy", "flow"], num_clips=30)`` renders clip after clip (``synthetic.make_clip``),
runs every method on it from the first frame's ground truth (the methods that need the trained Mask
R-CNN, "redetect" and "osvos", share one loaded model), evaluates J and F per object
(``evaluation.davis``: all frames but the first and the last) and aggregates over all objects of all
clips, overall and per attribute ("control" = the clips without any attribute). The result, also
written as JSON by ``minimaskrcnn vos``, is

    {method: {"J&F": float,
              "J": {"mean", "recall", "decay"}, "F": {"mean", "recall", "decay"},
              "per_attribute": {attribute: {"J&F", "J", "F", "num_clips"}},
              "per_clip": {clip name: {"J&F", "J", "F"}},
              "seconds": the method's run time over all clips}}

where J and F of per_attribute / per_clip are means. Every J / F value lies in [0, 1] except the
decays, which lie in [−1, 1] (negative when a method gets better towards the end of a clip).
``write_strip`` draws a PNG per clip: the ground truth and each method's masks on a few frames.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np

from minimaskrcnn.evaluation.davis import (
    GLOBAL_COLUMNS,
    evaluate_benchmark,
    evaluate_clip,
    official_tables,
    write_official_csv,
)
from minimaskrcnn.video.davis_io import davis_palette, read_masks, write_masks
from minimaskrcnn.video.methods import DETECTOR_METHODS, METHODS
from minimaskrcnn.video.synthetic import ATTRIBUTES, make_clip

__all__ = ["run_benchmark", "format_table", "write_json", "write_strip", "main", "run_sequences",
           "format_official", "main_folder", "measure_speed", "main_speed"]


def _summary(stats: dict) -> dict:
    return {"J&F": stats["J&F"], "J": stats["J"]["mean"], "F": stats["F"]["mean"]}


def run_benchmark(methods, num_clips: int = 30, seed: int | None = None, image_size: int = 128,
                  strips_dir: str | None = None, options: dict | None = None, log=None, model=None,
                  checkpoint=None, num_frames: int | None = None, keep_predictions: bool = False,
                  split: str = "shapes") -> dict:
    """Evaluate ``methods`` (names in ``methods.METHODS``) on clips 0..num_clips−1 of ``seed``.

    seed None: 0 for shapes, ``photo.REPORT_SEED`` for photo.
    split: "shapes" (``synthetic.make_clip`` at image_size × image_size) or "photo"
    (``photo.make_photo_clip``: real-photo backgrounds, JPEG, 854 × 480 / 432 × 240; image_size unused).

    options: optional {method: {keyword: value}} passed to the method. log: optional callable
    receiving one progress line per clip. model / checkpoint: the Mask R-CNN of the methods that
    need one ("redetect", "osvos"), loaded once (``weights.resolve_model``: default the shipped
    ``data/shapes_model.npz``; FileNotFoundError when missing). num_frames: None draws 40–80 frames
    per clip, else every clip has that many (short clips for tests and quick looks).
    keep_predictions: also return each method's (T, H, W) ID maps under "predictions" (by clip name).
    Returns the dict described in the module docstring.
    """
    methods = list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise ValueError(f"unknown or no method(s) {unknown}; available: {', '.join(sorted(METHODS))}")
    if int(num_clips) < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    if split not in ("shapes", "photo"):
        raise ValueError(f"split must be 'shapes' or 'photo', got {split!r}")
    options = _detector_options(methods, options, model, checkpoint)
    attributes = ATTRIBUTES
    if split == "photo":
        from minimaskrcnn.video.photo import PHOTO_ATTRIBUTES, make_photo_clip

        attributes = PHOTO_ATTRIBUTES
    if seed is None:  # the shapes benchmark's seed 0, the photo split's report seed
        from minimaskrcnn.video.photo import REPORT_SEED

        seed = REPORT_SEED if split == "photo" else 0
    per_method = {m: [] for m in methods}  # list of (clip name, attributes, evaluate_clip result)
    seconds = {m: 0.0 for m in methods}
    frames_done = {m: 0 for m in methods}
    kept = {m: {} for m in methods}
    for index in range(int(num_clips)):
        if split == "photo":
            clip = make_photo_clip(index, seed=seed, num_frames=num_frames)
        else:
            clip = make_clip(index, seed=seed, image_size=image_size, num_frames=num_frames)
        predictions = {}
        line = [f"{clip.name:28s} T={clip.frames.shape[0]:2d} K={clip.num_objects}"]
        n_computed = clip.frames.shape[0] - 1
        for m in methods:
            start = time.perf_counter()
            pred = METHODS[m](clip.frames, clip.ids[0], **options.get(m, {}))
            elapsed = time.perf_counter() - start
            seconds[m] += elapsed
            frames_done[m] += n_computed
            res = evaluate_clip(clip.ids, pred)
            per_method[m].append((clip.name, clip.attributes, res))
            predictions[m] = pred
            if keep_predictions:
                kept[m][clip.name] = pred
            fps = n_computed / max(elapsed, 1e-9)
            line.append(f"{m} {evaluate_benchmark([res])['J&F']:.3f} ({fps:.1f} fps)")
        if strips_dir is not None:
            write_strip(os.path.join(strips_dir, f"{clip.name}.png"), clip.frames, clip.ids, predictions)
        if log is not None:
            log("  ".join(line))

    out = {}
    for m in methods:
        rows = per_method[m]
        overall = evaluate_benchmark([r for _, _, r in rows])
        groups = {"control": [r for _, a, r in rows if not a]}
        for attr in attributes:
            groups[attr] = [r for _, a, r in rows if attr in a]
        per_attribute = {}
        for name, results in groups.items():
            if results:
                per_attribute[name] = dict(_summary(evaluate_benchmark(results)), num_clips=len(results))
        out[m] = {
            "J&F": overall["J&F"],
            "J": overall["J"],
            "F": overall["F"],
            "per_attribute": per_attribute,
            "per_clip": {name: _summary(evaluate_benchmark([r])) for name, _, r in rows},
            "seconds": seconds[m],
            "fps": frames_done[m] / max(seconds[m], 1e-9),
        }
        if keep_predictions:
            out[m]["predictions"] = kept[m]
    return out


def format_table(results: dict) -> str:
    """The overall table (one row per method) and the per-attribute J&F table, as text."""
    lines = [f"{'method':10s} {'J&F':>6s} {'J-mean':>7s} {'J-recall':>8s} {'J-decay':>8s} {'F-mean':>7s} "
             f"{'F-recall':>8s} {'F-decay':>8s} {'s/clip':>7s} {'frames/s':>8s}"]
    for m, r in results.items():
        n = max(len(r["per_clip"]), 1)
        lines.append(f"{m:10s} {r['J&F']:6.3f} {r['J']['mean']:7.3f} {r['J']['recall']:8.3f} "
                     f"{r['J']['decay']:8.3f} {r['F']['mean']:7.3f} {r['F']['recall']:8.3f} "
                     f"{r['F']['decay']:8.3f} {r['seconds'] / n:7.2f} {r.get('fps', float('nan')):8.2f}")
    methods = list(results)
    from minimaskrcnn.video.photo import PHOTO_ATTRIBUTES

    known = ("control",) + ATTRIBUTES + tuple(a for a in PHOTO_ATTRIBUTES if a not in ATTRIBUTES)
    attrs = [a for a in known if any(a in results[m]["per_attribute"] for m in methods)]
    lines.append("")
    lines.append(f"{'J&F per attribute':20s} {'clips':>5s} " + " ".join(f"{m:>9s}" for m in methods))
    for a in attrs:
        clips = next(results[m]["per_attribute"][a]["num_clips"] for m in methods
                     if a in results[m]["per_attribute"])
        cells = " ".join(f"{results[m]['per_attribute'].get(a, {}).get('J&F', float('nan')):9.3f}"
                         for m in methods)
        lines.append(f"{a:20s} {clips:5d} {cells}")
    return "\n".join(lines)


def _atomic_write(path: str, write) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(results: dict, path: str) -> None:
    """Write the results as JSON (atomically: a temp file, then rename)."""

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(results, f, indent=1, sort_keys=False)
            f.write("\n")

    _atomic_write(path, write)


def write_strip(path: str, frames: np.ndarray, gt_ids: np.ndarray, predictions: dict, num_columns: int = 8):
    """PNG of ``num_columns`` evenly spaced frames: the ground truth on the top row, then one row per
    method, each object's mask blended over the frame in its DAVIS palette colour."""
    from PIL import Image

    t_len = frames.shape[0]
    cols = np.unique(np.linspace(0, t_len - 1, min(num_columns, t_len)).round().astype(int))
    palette = np.array(davis_palette(), np.float32).reshape(256, 3)
    rows = []
    for ids in [gt_ids] + list(predictions.values()):
        row = []
        for t in cols:
            img = frames[t].astype(np.float32)
            m = ids[t] > 0
            img[m] = 0.45 * img[m] + 0.55 * palette[ids[t][m]]
            row.append(img)
            row.append(np.full((frames.shape[1], 2, 3), 255.0, np.float32))
        rows.append(np.concatenate(row, 1))
        rows.append(np.full((2, rows[-1].shape[1], 3), 255.0, np.float32))
    strip = np.clip(np.concatenate(rows, 0), 0, 255).astype(np.uint8)
    _atomic_write(path, lambda tmp: Image.fromarray(strip).save(tmp, format="PNG"))


def main(methods: str, clips: int = 30, json_path: str | None = None, strips: str | None = None,
         seed: int | None = None, checkpoint: str | None = None, split: str = "shapes",
         frames: int | None = None) -> int:
    """Entry point of ``minimaskrcnn vos``: run, print the tables, write the JSON (and strips).

    checkpoint: the Mask R-CNN model file for "redetect" / "osvos" (default: the shipped
    data/shapes_model.npz). split: "shapes" or "photo"; seed None is 0 for shapes and
    ``photo.REPORT_SEED`` for photo. frames: clip length (None: drawn per clip). Returns 2 (and says
    why) for unknown methods or a missing model file."""
    import sys

    names = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if not names or unknown or clips < 1:
        print(f"minimaskrcnn vos: error: unknown or no method(s) {unknown} (available: "
              f"{', '.join(sorted(METHODS))}), or --clips < 1", file=sys.stderr)
        return 2
    model = None
    if any(m in DETECTOR_METHODS for m in names):
        from minimaskrcnn.weights import resolve_model

        try:
            model = resolve_model(checkpoint=checkpoint)
        except (FileNotFoundError, ValueError) as exc:
            print(f"minimaskrcnn vos: error: {exc}", file=sys.stderr)
            return 2
    if seed is None:
        from minimaskrcnn.video.photo import REPORT_SEED

        seed = REPORT_SEED if split == "photo" else 0
    start = time.perf_counter()
    results = run_benchmark(names, num_clips=clips, seed=seed, strips_dir=strips, model=model,
                            log=lambda s: print(s, flush=True), split=split, num_frames=frames)
    print()
    print(format_table(results))
    print(f"\n{clips} {split} clips, seed {seed}, {time.perf_counter() - start:.1f} s in all")
    if json_path:
        write_json(results, json_path)
        print(f"wrote {json_path}")
    return 0


# ------------------------------------------------------------------------------------ folders on disk
def _detector_options(methods, options, model, checkpoint) -> dict:
    """options with the shared Mask R-CNN filled in for the methods that need one (loaded once)."""
    options = {m: dict(o) for m, o in (options or {}).items()}
    if any(m in DETECTOR_METHODS for m in methods):
        from minimaskrcnn.weights import resolve_model

        detector = resolve_model(model, checkpoint)
        for m in methods:
            if m in DETECTOR_METHODS and not {"model", "checkpoint"} & set(options.get(m, {})):
                options.setdefault(m, {})["model"] = detector
    return options


def run_sequences(sequences, methods, out: str, *, evaluate: bool = False, image_set: str = "val",
                  options: dict | None = None, model=None, checkpoint=None, log=None,
                  progress: bool = False) -> dict:
    """Run ``methods`` on videos read from disk, write their masks, optionally score them.

    sequences: an iterable of ``davis_io.Sequence`` (read lazily, one at a time). For each sequence and
    method: 1. run the method from the sequence's first-frame mask, timing it; 2. write the masks as
    OUT/<method>/<sequence>/<frame>.png (indexed PNGs, DAVIS palette — the layout the official
    evaluation and vos-benchmark read); 3. with ``evaluate`` (every frame must have an annotation),
    read the written files back and score them against the annotations with ``evaluate_clip`` (DAVIS
    2017: first and last frames left out); after the last sequence, write the official CSVs
    OUT/<method>/global_results-<image_set>.csv and per-sequence_results-<image_set>.csv.
    ``progress``: a tqdm bar of sequences on stderr, shown only when stderr is a terminal.

    Returns {method: {"frames": total frames, "seconds": run time, "fps": frames / seconds,
    "sequences": {name: {"frames", "seconds", "fps"} (+ "J&F", "J", "F" when evaluated)},
    and when evaluated "global": {column: value} of ``GLOBAL_COLUMNS``, "clips": {name: evaluate_clip
    result}}}.
    """
    methods = list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise ValueError(f"unknown or no method(s) {unknown}; available: {', '.join(sorted(METHODS))}")
    options = _detector_options(methods, options, model, checkpoint)
    res = {m: {"frames": 0, "seconds": 0.0, "sequences": {}, "clips": {}} for m in methods}
    bar = None
    if progress:
        from tqdm import tqdm

        # disable=None: no bar unless stderr is a terminal -- in a notebook or a log file the bar's
        # carriage-return updates would interleave with the printed lines and garble them.
        bar = tqdm(desc="sequences", unit="seq", dynamic_ncols=True, leave=False, disable=None)
    try:
        _run_all(sequences, methods, out, evaluate, options, res, log, bar)
    finally:
        if bar is not None:
            bar.close()
    for m in methods:
        r = res[m]
        # Frame 0 is given, not computed: frames per second count the propagated frames.
        computed = r["frames"] - len(r["sequences"])
        r["fps"] = computed / max(r["seconds"], 1e-9)
        if evaluate and r["clips"]:
            r["global"], _ = official_tables(r["clips"])
            write_official_csv(os.path.join(out, m), r["clips"], image_set)
        else:
            del r["clips"]
    return res


def _run_all(sequences, methods, out, evaluate, options, res, log, bar) -> None:
    """The loop of ``run_sequences``: steps 1–3 for every sequence and method, into ``res``."""
    for seq in sequences:
        if evaluate and seq.gt is None:
            raise FileNotFoundError(f"--evaluate needs an annotation for every frame of {seq.name!r} "
                                    "(Annotations/<res>/<sequence>/<frame>.png); some are missing")
        t_len = seq.frames.shape[0]
        for m in methods:
            start = time.perf_counter()
            pred = METHODS[m](seq.frames, seq.first_mask, **options.get(m, {}))
            seconds = time.perf_counter() - start
            folder = os.path.join(out, m, seq.name)
            write_masks(folder, seq.frame_names, pred)
            entry = {"frames": t_len, "seconds": seconds, "fps": (t_len - 1) / max(seconds, 1e-9)}
            r = res[m]
            r["frames"] += t_len
            r["seconds"] += seconds
            line = (f"{seq.name:24s} {m:9s} {t_len:4d} frames {seq.frames.shape[2]}×{seq.frames.shape[1]}  "
                    f"{entry['fps']:6.2f} frames/s")
            if evaluate:
                written = read_masks(folder, seq.frame_names, seq.frames.shape[1:3], seq.num_objects)
                clip = evaluate_clip(seq.gt, written)
                r["clips"][seq.name] = clip
                entry.update(_summary(evaluate_benchmark([clip])))
                line += f"  J&F {entry['J&F']:.3f}"
            r["sequences"][seq.name] = entry
            if log is not None:
                log(line)
            if bar is not None:
                bar.set_postfix_str(f"{seq.name} {m} {entry['fps']:.2f} frames/s")
        if bar is not None:
            bar.update(1)


def format_official(results: dict) -> str:
    """The global table of the official evaluation, one row per method, and frames per second; with
    per-object J / F means below (the per-sequence CSV's rows)."""
    head = f"{'method':10s} " + " ".join(f"{c:>9s}" for c in GLOBAL_COLUMNS) + f" {'frames/s':>9s}"
    lines = [head]
    for m, r in results.items():
        if "global" in r:
            cells = " ".join(f"{r['global'][c]:9.3f}" for c in GLOBAL_COLUMNS)
        else:
            cells = " ".join(f"{'-':>9s}" for _ in GLOBAL_COLUMNS)
        lines.append(f"{m:10s} {cells} {r['fps']:9.2f}")
    evaluated = [m for m, r in results.items() if "global" in r]
    if evaluated:
        lines += ["", f"{'Sequence':28s} " + " ".join(f"{m + ' J':>11s} {m + ' F':>11s}" for m in evaluated)]
        rows = {m: official_tables(results[m]["clips"])[1] for m in evaluated}
        for i, (name, _, _) in enumerate(rows[evaluated[0]]):
            lines.append(f"{name:28s} " + " ".join(f"{rows[m][i][1]:11.3f} {rows[m][i][2]:11.3f}"
                                                    for m in evaluated))
    return "\n".join(lines)


def main_folder(methods: str, out: str, *, davis: str | None = None, resolution: str = "480p",
                sequences: str | None = None, image_set: str | None = None, frames: str | None = None,
                first_mask: str | None = None, evaluate: bool = False, checkpoint: str | None = None) -> int:
    """Entry point of ``minimaskrcnn vos --davis ROOT`` / ``--frames DIR --first-mask PNG``: run, write
    OUT/<method>/<sequence>/*.png, print frames per second (and, with ``evaluate``, the official table),
    write the official CSVs. Bad folders raise FileNotFoundError / ValueError naming the file."""
    from minimaskrcnn.video import davis_io

    names = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if not names or unknown:
        raise ValueError(f"unknown or no method(s) {unknown} (available: {', '.join(sorted(METHODS))})")
    if (davis is None) == (frames is None):
        raise ValueError("give either --davis ROOT or --frames DIR (with --first-mask PNG)")
    if davis is not None:
        seq_names = davis_io.list_sequences(davis, resolution, image_set, sequences)
        stream = (davis_io.read_davis_sequence(davis, n, resolution) for n in seq_names)
    else:
        if first_mask is None:
            raise ValueError("--frames DIR needs --first-mask PNG (the first frame's mask)")
        if evaluate:
            raise ValueError("--evaluate needs a DAVIS folder (--davis ROOT) with every frame annotated")
        stream = iter([davis_io.read_frames_folder(frames, first_mask)])
    start = time.perf_counter()
    results = run_sequences(stream, names, out, evaluate=evaluate, image_set=image_set or "val",
                            checkpoint=checkpoint, log=lambda s: print(s, flush=True), progress=True)
    print()
    print(format_official(results))
    print(f"\n{time.perf_counter() - start:.1f} s in all; masks written to {os.path.join(out, '<method>')}")
    if evaluate:
        set_name = image_set or "val"
        print(f"wrote global_results-{set_name}.csv and per-sequence_results-{set_name}.csv under each "
              "method's folder")
    return 0


# ------------------------------------------------------------------------------------------ speed
def measure_speed(methods, num_frames: int = 10, sizes=((480, 854), (240, 432)), seed: int | None = None,
                  model=None, checkpoint=None, reference: bool = True) -> list[dict]:
    """Frames per second of each method on one photo clip per size (``photo.make_photo_clip`` index 0,
    ``num_frames`` frames; frame 0 is given, so T − 1 frames are timed). Each method runs once on a
    2-frame clip first (Numba compilation and caches are not timed). With ``reference``, "flow" is
    also timed with its optical flow at full resolution (``flow_size=None``, the method before the
    reduced working grid) in the same run, as "flow@full", so that a busy machine's speed cancels out
    of the ratio. Returns rows {"method", "size" (H, W), "fps", "seconds"}."""
    from minimaskrcnn.video.photo import TUNE_SEED, make_photo_clip

    seed = TUNE_SEED if seed is None else seed
    runs = [(m, m, {}) for m in methods]
    if reference and "flow" in methods:
        runs.append(("flow@full", "flow", {"flow_size": None}))
    options = _detector_options(methods, None, model, checkpoint)
    rows = []
    for size in sizes:
        clip = make_photo_clip(0, seed=seed, num_frames=num_frames, size=tuple(size))
        for label, m, extra in runs:
            opts = {**options.get(m, {}), **extra}
            METHODS[m](clip.frames[:2], clip.ids[0], **opts)  # warm-up: compilation, caches
            start = time.perf_counter()
            METHODS[m](clip.frames, clip.ids[0], **opts)
            seconds = time.perf_counter() - start
            rows.append({"method": label, "size": tuple(size), "fps": (num_frames - 1) / seconds,
                         "seconds": seconds})
    return rows


def main_speed(methods: str, num_frames: int = 10, checkpoint: str | None = None) -> int:
    """Entry point of ``minimaskrcnn vos --speed``: frames per second per method at 854 × 480 and
    432 × 240, and each method's ratio to "flow@full" measured in the same run."""
    import os as _os

    names = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if not names or unknown:
        raise ValueError(f"unknown or no method(s) {unknown} (available: {', '.join(sorted(METHODS))})")
    rows = measure_speed(names, num_frames=num_frames, checkpoint=checkpoint)
    threads = _os.environ.get("NUMBA_NUM_THREADS", str(_os.cpu_count()))
    print(f"{'method':12s} {'size':>9s} {'frames/s':>9s} {'s/frame':>8s} {'vs flow@full':>12s}")
    for r in rows:
        ref = next((q for q in rows if q["method"] == "flow@full" and q["size"] == r["size"]), None)
        ratio = f"{r['fps'] / ref['fps']:11.1f}x" if ref else f"{'-':>12s}"
        print(f"{r['method']:12s} {r['size'][1]:>4d}×{r['size'][0]:<4d} {r['fps']:9.2f} "
              f"{1 / r['fps']:8.2f} {ratio}")
    print(f"\n{num_frames} frames per clip, Numba threads {threads}; timings depend on the machine and "
          "its load, the ratios much less")
    return 0
