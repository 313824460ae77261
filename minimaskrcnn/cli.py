"""The ``minimaskrcnn`` command line: ``minimaskrcnn <command> --help`` explains each command."""

from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    from minimaskrcnn.demo import run_demo

    return run_demo(out=args.out, num_images=args.num_images, seed=args.seed)


def _bench(args) -> int:
    from minimaskrcnn import bench

    return bench.main(args.target, threads=args.threads, repeat=args.repeat)


def _literal(value: str):
    """A Python literal (``0.7``, ``True``, ``(16, 32)``) or, failing that, the bare word as a string."""
    import ast

    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value  # a bare word: a string such as softmax or pool


def _parse_set(items, expected: str) -> dict:
    """Repeated ``--set NAME=VALUE`` options as {NAME: literal value}; exits naming ``expected``."""
    overrides = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects {expected}, got {item!r}")
        overrides[key] = _literal(value)
    return overrides


def _train(args) -> int:
    from minimaskrcnn.config import get_preset, single_level, with_overrides
    from minimaskrcnn.train import TrainConfig, train

    overrides = _parse_set(args.set, "FIELD=VALUE (e.g. mask.loss=softmax)")
    model_config = with_overrides(get_preset(args.preset), **overrides)
    if args.single_level is not None:
        model_config = single_level(model_config, args.single_level)
    cfg = TrainConfig(preset=args.preset, steps=args.steps if args.steps is not None else
                      (10**7 if args.minutes is not None else TrainConfig.steps),
                      batch_size=args.batch_size, lr=args.lr, seed=args.seed, out=args.out,
                      minutes=args.minutes, eval_images=args.eval_images,
                      checkpoint_every=args.checkpoint_every)
    out = train(cfg, model_config, resume=args.resume)
    minutes = out["seconds"] / 60
    print(f"trained {out['step']} steps in {minutes:.1f} min; model saved to {args.out}/model.npz")
    return 0


def _predict(args) -> int:
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from minimaskrcnn import viz

    if args.torchvision_weights:
        from minimaskrcnn.weights import load_torchvision_weights

        overrides = _parse_set(args.set, "NAME=VALUE (e.g. min_size=512)")
        model = load_torchvision_weights(args.torchvision_weights, **overrides)
    else:
        from minimaskrcnn.weights import load_model

        if args.set:
            raise SystemExit("--set applies to --torchvision-weights only")
        model = load_model(args.checkpoint)
    names = model.config.class_names
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in args.images:
        image = np.asarray(Image.open(path).convert("RGB"))
        (det,) = model.predict([image])
        keep = det["scores"] >= args.score_thresh
        fig = viz.draw_instances(image, det["boxes"][keep], det["labels"][keep], det["scores"][keep],
                                 det["masks"][keep], class_names=names)
        target = out / (Path(path).stem + "_pred.png")
        fig.savefig(target)
        found = ", ".join(f"{names[label] if names else label} {score:.2f}"
                          for label, score in zip(det["labels"][keep][:10], det["scores"][keep][:10]))
        more = ", ..." if keep.sum() > 10 else ""
        print(f"{path}: {int(keep.sum())} instance(s) [{found}{more}] -> {target}")
    return 0


def _evaluate(args) -> int:
    import json
    import os

    from minimaskrcnn.datasets.shapes import shapes_dataset
    from minimaskrcnn.evaluation import evaluate_model, summary
    from minimaskrcnn.weights import load_model

    model = load_model(args.checkpoint)
    if args.dataset == "shapes":
        dataset = shapes_dataset(args.num_images, args.seed)
        indices = None
    else:
        from minimaskrcnn.datasets import CocoFolderDataset

        dataset = CocoFolderDataset(args.dataset)
        indices = range(min(args.num_images, len(dataset)))
    results, coco_gt, detections = evaluate_model(model, dataset, indices, progress=True)
    print(summary(results))
    for path, data in ((args.gt_out, coco_gt), (args.results_out, detections)):
        if path:
            tmp = f"{path}.tmp"
            with open(tmp, "w") as f:
                json.dump(data, f)
            os.replace(tmp, path)
            print(f"wrote {path}")
    return 0


def _vos(args) -> int:
    import sys

    from minimaskrcnn.video import benchmark

    if args.speed:
        try:
            return benchmark.main_speed(args.methods, num_frames=args.num_frames or 10,
                                        checkpoint=args.checkpoint)
        except (FileNotFoundError, ValueError) as exc:
            print(f"minimaskrcnn vos: error: {exc}", file=sys.stderr)
            return 2
    if args.davis is None and args.frames is None:
        return benchmark.main(args.methods, clips=args.clips, json_path=args.json, strips=args.strips,
                              seed=args.seed, checkpoint=args.checkpoint, split=args.split,
                              frames=args.num_frames)
    if args.out is None:
        print("minimaskrcnn vos: error: --davis / --frames need --out RESULTS (the masks are written there)",
              file=sys.stderr)
        return 2
    if args.sequences is not None and args.image_set is not None:
        print("minimaskrcnn vos: error: give --sequences or --image-set, not both", file=sys.stderr)
        return 2
    try:
        return benchmark.main_folder(args.methods, args.out, davis=args.davis, resolution=args.resolution,
                                     sequences=args.sequences, image_set=args.image_set, frames=args.frames,
                                     first_mask=args.first_mask, evaluate=args.evaluate,
                                     checkpoint=args.checkpoint)
    except (FileNotFoundError, ValueError) as exc:
        print(f"minimaskrcnn vos: error: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minimaskrcnn",
        description="Mask R-CNN from scratch in NumPy: demo, training, evaluation and benchmarks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "demo",
        help="run the shipped shapes model on fresh synthetic images, print AP, save a figure",
        description="Load the checkpoint shipped in data/, detect and segment fresh synthetic shapes "
        "images, print box and mask COCO AP and write a figure of the predictions.",
    )
    p.add_argument("--out", default="demo.png", help="where to write the figure (default demo.png)")
    p.add_argument("--num-images", type=int, default=50, help="images to evaluate (default 50)")
    p.add_argument("--seed", type=int, default=12345, help="seed of the fresh images (default 12345)")
    p.set_defaults(func=_demo)

    p = sub.add_parser(
        "train",
        help="train Mask R-CNN from scratch (hand-written backprop) on fresh synthetic shapes images",
        description="Train from scratch: SGD (momentum 0.9, weight decay 1e-4), linear warm-up over 200 "
        "steps, lr x 0.1 for the last 20%% of the run. Writes checkpoint.npz (atomic, periodic), "
        "model.npz, log.jsonl and eval.json (box and mask COCO AP on fresh images) to --out.",
    )
    p.add_argument("--preset", default="shapes", choices=["shapes"], help="model preset (default shapes)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default 1800; with --minutes "
                   "an upper bound, default unlimited)")
    p.add_argument("--minutes", type=float, default=None, help="stop after this wall time; the lr decay "
                   "then starts at 80%% of it (not reproducible step for step)")
    p.add_argument("--batch-size", type=int, default=8, help="images per step (default 8)")
    p.add_argument("--lr", type=float, default=0.02, help="base learning rate (default 0.02)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, data and samples (default 0)")
    p.add_argument("--out", default="runs/shapes", help="output folder (default runs/shapes)")
    p.add_argument("--resume", action="store_true", help="continue exactly from OUT/checkpoint.npz")
    p.add_argument("--checkpoint-every", type=int, default=100,
                   help="steps between checkpoints (default 100)")
    p.add_argument("--eval-images", type=int, default=200, help="fresh images evaluated at the end "
                   "(default 200; 0 skips)")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="change a model config field, e.g. --set mask.loss=softmax "
                   "--set roi_heads.pooler=pool (repeatable; the paper's ablations)")
    p.add_argument("--single-level", type=int, choices=[16, 32], default=None,
                   help="no FPN: the heads read one map of this stride (C4 = 16, C5 = 32)")
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "predict",
        help="detect and segment objects in image files, write overlays",
        description="Run a trained model (model.npz or checkpoint.npz) or torchvision's COCO-trained "
        "maskrcnn_resnet50_fpn weights (a .pth you downloaded; read without torch, nothing in it is "
        "executed) on images and write, per image, a PNG with masks, boxes, class names and scores.",
    )
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="model file written by `minimaskrcnn train`")
    which.add_argument("--torchvision-weights", metavar="FILE",
                       help="torchvision's maskrcnn_resnet50_fpn state_dict (.pth), e.g. "
                       "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth")
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="with --torchvision-weights: one of torchvision's keyword arguments, e.g. "
                   "--set min_size=512 --set box_score_thresh=0.7 (repeatable)")
    p.add_argument("--out", default="predictions", help="output folder (default predictions)")
    p.add_argument("--score-thresh", type=float, default=0.5, help="draw detections scoring at least "
                   "this (default 0.5)")
    p.set_defaults(func=_predict)

    p = sub.add_parser(
        "evaluate",
        help="COCO box and mask AP of a trained model on shapes or a COCO folder",
        description="Print box and mask COCO AP/AR of a model; optionally write the ground truth and "
        "the detections as COCO JSON so pycocotools can score them too.",
    )
    p.add_argument("--checkpoint", required=True, help="model file written by `minimaskrcnn train`")
    p.add_argument("--dataset", default="shapes", help="'shapes' (fresh synthetic images) or a COCO folder")
    p.add_argument("--num-images", type=int, default=500, help="images to evaluate (default 500)")
    p.add_argument("--seed", type=int, default=1_000_003, help="seed of the shapes images (default "
                   "1000003, never used in training)")
    p.add_argument("--gt-out", default=None, help="write the ground truth as COCO JSON here")
    p.add_argument("--results-out", default=None, help="write the detections as COCO results JSON here")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser(
        "bench",
        help="time our kernels against torch/torchvision in the same run and print ratios",
        description="Time a group of our kernels against the reference implementation measured in "
        "the same process with the same number of threads; prints times and ratios (ours / theirs). "
        "Needs torch and torchvision installed (the [test] extra).",
    )
    p.add_argument("target", choices=["conv", "ops", "train", "resnet50"],
                   help="conv: conv2d forward+backward; ops: roi_align/roi_pool/nms; train: one "
                   "training step of the tiny model; resnet50: inference at torchvision's preset")
    p.add_argument("--threads", type=int, default=2, help="threads for both sides (default 2)")
    p.add_argument("--repeat", type=int, default=5, help="timed repetitions, best is kept (default 5)")
    p.set_defaults(func=_bench)

    p = sub.add_parser(
        "vos",
        help="video object segmentation: propagate first-frame masks (synthetic clips, DAVIS folders, "
        "your own frames), print J and F",
        description="Without --davis / --frames: render the seeded synthetic video benchmark, run each "
        "propagation method from the first frame's ground-truth masks, and print the DAVIS measures: J&F, "
        "J mean/recall/decay, F mean/recall/decay per method, and J&F per attribute (control = clips "
        "without any). With --davis ROOT: read ROOT/JPEGImages/<res>/<seq>/ and the first frame's "
        "annotation ROOT/Annotations/<res>/<seq>/00000.png, write OUT/<method>/<seq>/<frame>.png "
        "(indexed PNGs, DAVIS palette) and, with --evaluate, score them as the DAVIS 2017 evaluation does "
        "and write its CSV files. With --frames DIR --first-mask PNG: the same for one clip of your own.",
    )
    p.add_argument("--methods", default="copy,flow",
                   help="comma-separated propagation methods among copy, flow, embed, redetect, osvos "
                   "(default copy,flow)")
    p.add_argument("--clips", type=int, default=30, help="synthetic: number of clips (default 30)")
    p.add_argument("--split", choices=["shapes", "photo"], default="shapes",
                   help="synthetic: 'shapes' (128×128 flat-textured clips, the original benchmark) or "
                   "'photo' (real-photo backgrounds, JPEG, 854×480 and 432×240, objects entering and "
                   "leaving; default shapes)")
    p.add_argument("--num-frames", type=int, default=None,
                   help="synthetic: frames per clip (default: drawn per clip)")
    p.add_argument("--json", default=None, help="synthetic: write the results as JSON here")
    p.add_argument("--strips", default=None, help="synthetic: write one PNG frame strip per clip here")
    p.add_argument("--seed", type=int, default=None,
                   help="synthetic: seed of the clips (default 0 for shapes; for photo the report seed "
                   "2000 — 1000 is the tuning seed, 3000 and 3001 unseen)")
    p.add_argument("--davis", default=None, metavar="ROOT",
                   help="a DAVIS-layout folder (JPEGImages/, Annotations/, optionally ImageSets/)")
    p.add_argument("--resolution", default="480p", help="DAVIS resolution folder (default 480p)")
    p.add_argument("--sequences", default=None, help="comma-separated sequence names (default: all, or "
                   "--image-set)")
    p.add_argument("--image-set", default=None, help="read the sequences from ImageSets/2017/<SET>.txt "
                   "(or 2016/), e.g. val")
    p.add_argument("--frames", default=None, metavar="DIR",
                   help="your own clip: a folder of frames (.jpg/.png, sorted by name)")
    p.add_argument("--first-mask", default=None, metavar="PNG",
                   help="with --frames: the first frame's mask (indexed PNG 0/1..K, or 0/255)")
    p.add_argument("--out", default=None, metavar="RESULTS",
                   help="with --davis / --frames: write RESULTS/<method>/<sequence>/<frame>.png here")
    p.add_argument("--evaluate", action="store_true",
                   help="with --davis: score the written masks against the annotations, print the official "
                   "table, write global_results-<set>.csv and per-sequence_results-<set>.csv")
    p.add_argument("--speed", action="store_true",
                   help="measure frames per second of each method on a photo clip at 854×480 and 432×240 "
                   "(--num-frames frames, default 10), with the ratio to flow at full resolution")
    p.add_argument("--checkpoint", default=None,
                   help="Mask R-CNN model file for redetect / osvos (default: the shipped "
                   "data/shapes_model.npz)")
    p.set_defaults(func=_vos)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
