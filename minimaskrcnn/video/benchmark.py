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

from minimaskrcnn.evaluation.davis import evaluate_benchmark, evaluate_clip
from minimaskrcnn.video.propagate import DETECTOR_METHODS, METHODS
from minimaskrcnn.video.synthetic import ATTRIBUTES, davis_palette, make_clip

__all__ = ["run_benchmark", "format_table", "write_json", "write_strip", "main"]


def _summary(stats: dict) -> dict:
    return {"J&F": stats["J&F"], "J": stats["J"]["mean"], "F": stats["F"]["mean"]}


def run_benchmark(methods, num_clips: int = 30, seed: int = 0, image_size: int = 128,
                  strips_dir: str | None = None, options: dict | None = None, log=None, model=None,
                  checkpoint=None, num_frames: int | None = None, keep_predictions: bool = False) -> dict:
    """Evaluate ``methods`` (names in ``propagate.METHODS``) on clips 0..num_clips−1 of ``seed``.

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
    options = {m: dict(o) for m, o in (options or {}).items()}
    if any(m in DETECTOR_METHODS for m in methods):
        from minimaskrcnn.weights import resolve_model

        detector = resolve_model(model, checkpoint)
        for m in methods:
            if m in DETECTOR_METHODS and "model" not in options.get(m, {}) and \
                    "checkpoint" not in options.get(m, {}):
                options.setdefault(m, {})["model"] = detector
    per_method = {m: [] for m in methods}  # list of (clip name, attributes, evaluate_clip result)
    seconds = {m: 0.0 for m in methods}
    kept = {m: {} for m in methods}
    for index in range(int(num_clips)):
        clip = make_clip(index, seed=seed, image_size=image_size, num_frames=num_frames)
        predictions = {}
        line = [f"{clip.name:28s} T={clip.frames.shape[0]:2d} K={clip.num_objects}"]
        for m in methods:
            start = time.perf_counter()
            pred = METHODS[m](clip.frames, clip.ids[0], **options.get(m, {}))
            seconds[m] += time.perf_counter() - start
            res = evaluate_clip(clip.ids, pred)
            per_method[m].append((clip.name, clip.attributes, res))
            predictions[m] = pred
            if keep_predictions:
                kept[m][clip.name] = pred
            line.append(f"{m} {evaluate_benchmark([res])['J&F']:.3f}")
        if strips_dir is not None:
            write_strip(os.path.join(strips_dir, f"{clip.name}.png"), clip.frames, clip.ids, predictions)
        if log is not None:
            log("  ".join(line))

    out = {}
    for m in methods:
        rows = per_method[m]
        overall = evaluate_benchmark([r for _, _, r in rows])
        groups = {"control": [r for _, a, r in rows if not a]}
        for attr in ATTRIBUTES:
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
        }
        if keep_predictions:
            out[m]["predictions"] = kept[m]
    return out


def format_table(results: dict) -> str:
    """The overall table (one row per method) and the per-attribute J&F table, as text."""
    lines = [f"{'method':10s} {'J&F':>6s} {'J-mean':>7s} {'J-recall':>8s} {'J-decay':>8s} {'F-mean':>7s} "
             f"{'F-recall':>8s} {'F-decay':>8s} {'s/clip':>7s}"]
    for m, r in results.items():
        n = max(len(r["per_clip"]), 1)
        lines.append(f"{m:10s} {r['J&F']:6.3f} {r['J']['mean']:7.3f} {r['J']['recall']:8.3f} "
                     f"{r['J']['decay']:8.3f} {r['F']['mean']:7.3f} {r['F']['recall']:8.3f} "
                     f"{r['F']['decay']:8.3f} {r['seconds'] / n:7.2f}")
    methods = list(results)
    attrs = [a for a in ("control",) + ATTRIBUTES if any(a in results[m]["per_attribute"] for m in methods)]
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
         seed: int = 0, checkpoint: str | None = None) -> int:
    """Entry point of ``minimaskrcnn vos``: run, print the tables, write the JSON (and strips).

    checkpoint: the Mask R-CNN model file for "redetect" / "osvos" (default: the shipped
    data/shapes_model.npz). Returns 2 (and says why) for unknown methods or a missing model file."""
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
    start = time.perf_counter()
    results = run_benchmark(names, num_clips=clips, seed=seed, strips_dir=strips, model=model,
                            log=lambda s: print(s, flush=True))
    print()
    print(format_table(results))
    print(f"\n{clips} clips, seed {seed}, {time.perf_counter() - start:.1f} s in all")
    if json_path:
        write_json(results, json_path)
        print(f"wrote {json_path}")
    return 0
