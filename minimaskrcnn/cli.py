"""The ``minimaskrcnn`` command line: ``minimaskrcnn <command> --help`` explains each command."""

from __future__ import annotations

import argparse
import math
import os
import sys
import traceback

import numpy as np

PROG = "minimaskrcnn"


class UserError(Exception):
    """A mistake in the command line or its input files: printed as one ``error:`` line, exit 2."""


def _user_error_message(exc: BaseException) -> str | None:
    """The one-line message of an expected user error, or None for a bug (which gets a traceback).

    Expected: ``UserError``; any ``OSError`` (a missing, unreadable or unwritable file, disk full,
    read-only folder: the environment, not the code); and a ``ValueError`` (``CocoFormatError``
    included) or ``FloatingPointError`` (``NonFiniteLossError``) raised by a ``raise`` statement of
    minimaskrcnn itself — our validation, whose message names the argument or file. A ValueError
    raised inside NumPy or another library, or by a bare expression of ours, is a bug.
    """
    if isinstance(exc, UserError):
        return str(exc)
    if isinstance(exc, OSError):
        if exc.filename is not None and exc.strerror:
            return f"{exc.filename}: {exc.strerror}" if not exc.filename2 else \
                f"{exc.filename} -> {exc.filename2}: {exc.strerror}"
        return str(exc) or type(exc).__name__
    if isinstance(exc, (ValueError, FloatingPointError)) and _raised_by_minimaskrcnn(exc):
        return str(exc)
    return None


def _raised_by_minimaskrcnn(exc: BaseException) -> bool:
    """True when the innermost frame of ``exc``'s traceback is a ``raise`` statement in this package."""
    import linecache

    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = os.path.abspath(tb.tb_frame.f_code.co_filename)
    package = os.path.dirname(os.path.abspath(__file__))
    return filename.startswith(package + os.sep) and \
        linecache.getline(filename, tb.tb_lineno).lstrip().startswith("raise")


def _error_line(command: str | None, message: str) -> None:
    where = f"{PROG} {command}" if command else PROG
    print(f"{where}: error: {message}", file=sys.stderr)


def _number_type(kind, test, expected: str):
    """An argparse ``type=``: convert with ``kind`` and require ``test``; argparse then prints
    ``error: argument --x: expected ..., got 'v'`` and exits 2."""
    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    convert.__name__ = expected  # argparse names the type in some messages
    return convert


positive_int = _number_type(int, lambda v: v >= 1, "an integer >= 1")
non_negative_int = _number_type(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number_type(float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
unit_float = _number_type(float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")


def _demo(args) -> int:
    from minimaskrcnn._checks import writable_file
    from minimaskrcnn.demo import run_demo

    writable_file(args.out, "--out")
    return run_demo(out=args.out, num_images=args.num_images, seed=args.seed)


def _bench(args) -> int:
    from minimaskrcnn import bench

    return bench.main(args.target, threads=args.threads, repeat=args.repeat)


def _literal(value: str):
    """A Python literal (``0.7``, ``True``, ``(16, 32)``) or, failing that, the bare word as a string.
    ``true`` / ``false`` (as JSON, YAML and most command lines spell them) are the booleans too."""
    import ast

    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value  # a bare word: a string such as softmax or pool


def _parse_set(items, expected: str) -> dict:
    """Repeated ``--set NAME=VALUE`` options as {NAME: literal value}; exits naming ``expected``."""
    overrides = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects {expected}, got {item!r}")
        overrides[key] = _literal(value)
    return overrides


def _train(args) -> int:
    from minimaskrcnn._checks import creatable_folder
    from minimaskrcnn.config import get_preset, single_level, with_overrides
    from minimaskrcnn.train import TrainConfig, train

    preset = args.preset or ("folder" if args.dataset else "shapes")
    creatable_folder(args.out, "--out")  # created by train() once the data has passed its checks
    overrides = _parse_set(args.set, "FIELD=VALUE (e.g. mask.loss=softmax)")
    model = None
    if args.init_torchvision:
        # Fine-tuning: torchvision's resnet50_fpn weights, new predictors for the data's classes (a
        # factory: train() calls it with the class count and names once it has read the data).
        from minimaskrcnn.weights import load_torchvision_weights

        if args.resume or args.single_level is not None:
            raise UserError("--init-torchvision starts a new run from torchvision's architecture: "
                            "not with --resume (which rebuilds the model from the checkpoint) or "
                            "--single-level")
        path = args.init_torchvision

        def model(num_classes, class_names):
            return load_torchvision_weights(
                path, num_classes=num_classes, class_names=class_names,
                trainable_backbone_layers=args.trainable_backbone_layers,
                rng=np.random.default_rng(args.seed or 0), **overrides)

        model_config = None
    else:
        model_config = with_overrides(get_preset(preset), **overrides)
    if args.single_level is not None:
        model_config = single_level(model_config, args.single_level)
    if args.dataset is None and (args.val_dataset or args.scale_jitter):
        raise UserError("--val-dataset and --scale-jitter need --dataset FOLDER")
    jitter = None
    if args.scale_jitter:
        lo, sep, hi = args.scale_jitter.partition(",")
        try:
            jitter = (int(lo), int(hi) if sep else int(lo))
        except ValueError:
            raise UserError(f"--scale-jitter expects LO,HI (short side in pixels, e.g. 112,144), got "
                            f"{args.scale_jitter!r}") from None
        if not 1 <= jitter[0] <= jitter[1]:
            raise UserError(f"--scale-jitter expects 1 <= LO <= HI, got {args.scale_jitter!r}")
    given = {name: value for name, value in (
        ("steps", args.steps), ("batch_size", args.batch_size), ("lr", args.lr), ("seed", args.seed),
        ("minutes", args.minutes), ("eval_images", args.eval_images),
        ("checkpoint_every", args.checkpoint_every), ("dataset", args.dataset),
        ("val_dataset", args.val_dataset), ("val_fraction", args.val_fraction),
        ("val_every", args.val_every), ("scale_jitter", jitter),
        ("flip_prob", 0.0 if args.no_flip else None)) if value is not None}
    if args.resume:
        # Only the flags given may change the run (train() refuses those that would make it another run).
        from minimaskrcnn.train import resumed_config

        if args.minutes is not None and args.steps is None:
            given["steps"] = 10**7
        cfg = resumed_config(args.out, **given)
        if not (args.set or args.single_level is not None):
            model_config = None  # the checkpoint's own
    else:
        if "steps" not in given:
            given["steps"] = 10**7 if args.minutes is not None else TrainConfig.steps
        given.setdefault("val_every", 200 if args.dataset else 0)
        if args.dataset and model_config is not None:
            # A folder of a few hundred photos trained from scratch on a time budget: batches of 4 (twice
            # the steps of 8 in the same time) and scale jitter of 0.75-1.25x the short side. On a
            # tuning folder (seed 1, validated on seed 4, 1200 steps) mask AP rose from 0.191 (batch 8,
            # no jitter, same time) to 0.224 (batch 4) and 0.241 (batch 4 + jitter).
            given.setdefault("batch_size", 4)
            t = model_config.transform
            if t.resize:
                given.setdefault("scale_jitter", (round(0.75 * t.min_size), round(1.25 * t.min_size)))
        cfg = TrainConfig(preset=preset, out=args.out, **given)
    out = train(cfg, model_config, resume=args.resume, model=model)
    minutes = out["seconds"] / 60
    print(f"trained {out['step']} steps in {minutes:.1f} min; model saved to {args.out}/model.npz")
    return 0


def _predict(args) -> int:
    from pathlib import Path

    from minimaskrcnn import viz
    from minimaskrcnn._checks import writable_folder

    out = Path(writable_folder(args.out, "--out"))  # before loading anything
    if args.torchvision_weights:
        from minimaskrcnn.weights import load_torchvision_weights

        overrides = _parse_set(args.set, "NAME=VALUE (e.g. min_size=512)")
        model = load_torchvision_weights(args.torchvision_weights, **overrides)
    else:
        from minimaskrcnn.weights import load_model

        if args.set:
            raise UserError("--set applies to --torchvision-weights only")
        model = load_model(args.checkpoint)
    names = model.config.class_names
    failed = []
    for path, target in zip(args.images, _output_names(args.images, out)):
        try:
            image = _read_image(path)
        except UserError as exc:  # go on with the other images; report them all at the end
            failed.append(str(exc))
            continue
        (det,) = model.predict([image])
        keep = det["scores"] >= args.score_thresh
        fig = viz.draw_instances(image, det["boxes"][keep], det["labels"][keep], det["scores"][keep],
                                 det["masks"][keep], class_names=names)
        _save_figure(fig, target)
        found = ", ".join(f"{names[label] if names else label} {score:.2f}"
                          for label, score in zip(det["labels"][keep][:10], det["scores"][keep][:10]))
        more = ", ..." if keep.sum() > 10 else ""
        print(f"{path}: {int(keep.sum())} instance(s) [{found}{more}] -> {target}")
    for message in failed:
        _error_line("predict", message)
    return 2 if failed else 0


def _read_image(path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB; UserError naming the file when it cannot be read."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as pil:
                return np.asarray(pil.convert("RGB"))
    except FileNotFoundError:
        raise UserError(f"cannot read image {str(path)!r}: no such file") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:  # PIL: not an image, truncated, damaged, huge
        raise UserError(f"cannot read image {str(path)!r}: {exc}") from None


def _output_names(images, out) -> list:
    """One overlay file per input, ``STEM_pred.png``; inputs of the same stem (a/x.png, b/x.jpg) get
    ``STEM-2_pred.png``, ``STEM-3_pred.png``, ... so that no output overwrites another."""
    from pathlib import Path

    names, used = [], set()
    for path in images:
        stem, n = Path(path).stem, 1
        name = f"{stem}_pred.png"
        while name in used:
            n += 1
            name = f"{stem}-{n}_pred.png"
        used.add(name)
        names.append(Path(out) / name)
    return names


def _save_figure(fig, target) -> None:
    """``fig.savefig`` atomically (a temporary file beside ``target``, then a rename), then close it."""
    import matplotlib.pyplot as plt

    tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.png")  # matplotlib reads the format
    try:
        fig.savefig(tmp)
        os.replace(tmp, target)
    except OSError as exc:  # disk full, folder removed meanwhile
        raise UserError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()


def _evaluate(args) -> int:
    import json

    from minimaskrcnn._checks import writable_file
    from minimaskrcnn.datasets.shapes import shapes_dataset
    from minimaskrcnn.evaluation import evaluate_model, summary
    from minimaskrcnn.weights import load_model

    for name, path in (("--gt-out", args.gt_out), ("--results-out", args.results_out)):
        if path:
            writable_file(path, name)  # before the evaluation, not after it
    model = load_model(args.checkpoint)
    if args.dataset == "shapes":
        dataset = shapes_dataset(args.num_images, args.seed)
        indices = None
    else:
        from minimaskrcnn.datasets import CocoFolderDataset

        dataset = CocoFolderDataset(args.dataset)
        names = model.config.class_names
        if names is not None and list(names[1:]) != list(dataset.class_names[1:]):
            raise UserError(f"--dataset {args.dataset}: categories {dataset.class_names[1:]} (sorted by id) "
                            f"are not the model's classes {list(names[1:])}")
        # The COCO output keeps the folder's own image ids and category ids (label k -> category_ids[k-1]).
        indices = range(min(args.num_images, len(dataset)))
    results, coco_gt, detections = evaluate_model(model, dataset, indices, progress=True)
    print(summary(results))
    for path, data in ((args.gt_out, coco_gt), (args.results_out, detections)):
        if path:
            tmp = f"{path}.tmp"
            try:
                with open(tmp, "w") as f:
                    json.dump(data, f)
                os.replace(tmp, path)
            except OSError as exc:
                raise UserError(f"cannot write {path!r}: {exc.strerror or exc}") from None
            finally:
                if os.path.exists(tmp):  # a failed write (disk full) leaves nothing behind
                    os.unlink(tmp)
            print(f"wrote {path}")
    return 0


def _export(args) -> int:
    from minimaskrcnn.weights import export_reference_checkpoint, export_torchvision, load_model

    if not (args.torchvision or args.reference_resume):
        raise UserError("give --torchvision OUT.pth and/or --reference-resume OUT.pth")
    try:
        model = load_model(args.checkpoint)
        if args.torchvision:
            info = export_torchvision(model, args.torchvision)
            print(f"wrote {info['path']}: torchvision maskrcnn_resnet50_fpn state_dict, {info['keys']} "
                  f"tensors, num_classes={info['num_classes']}")
        if args.reference_resume:
            info = export_reference_checkpoint(model, args.reference_resume, lr=args.lr,
                                               momentum=args.momentum, weight_decay=args.weight_decay,
                                               lr_steps=args.lr_steps, lr_gamma=args.lr_gamma)
            print(f"wrote {info['path']}: for torchvision's references/detection/train.py --resume "
                  f"(SGD over {info['trainable']} trainable tensors, lr {args.lr}, lr steps "
                  f"{' '.join(map(str, args.lr_steps))}, epoch 0 next); run it with --weights-backbone "
                  f"ResNet50_Weights.IMAGENET1K_V1 --trainable-backbone-layers "
                  f"{info['trainable_backbone_layers']}, without --amp")
    except (OSError, ValueError, ImportError) as exc:
        print(f"minimaskrcnn export: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _vos(args) -> int:
    from minimaskrcnn._checks import writable_file, writable_folder
    from minimaskrcnn.video import benchmark

    if args.json:
        writable_file(args.json, "--json")
    if args.strips:
        writable_folder(args.strips, "--strips")
    if args.speed:
        return benchmark.main_speed(args.methods, num_frames=args.num_frames or 10,
                                    checkpoint=args.checkpoint)
    if args.davis is None and args.frames is None:
        return benchmark.main(args.methods, clips=args.clips, json_path=args.json, strips=args.strips,
                              seed=args.seed, checkpoint=args.checkpoint, split=args.split,
                              frames=args.num_frames)
    if args.out is None:
        raise UserError("--davis / --frames need --out RESULTS (the masks are written there)")
    if args.sequences is not None and args.image_set is not None:
        raise UserError("give --sequences or --image-set, not both")
    writable_folder(args.out, "--out")
    return benchmark.main_folder(args.methods, args.out, davis=args.davis, resolution=args.resolution,
                                 sequences=args.sequences, image_set=args.image_set, frames=args.frames,
                                 first_mask=args.first_mask, evaluate=args.evaluate,
                                 checkpoint=args.checkpoint)


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
    p.add_argument("--num-images", type=positive_int, default=50, help="images to evaluate (default 50)")
    p.add_argument("--seed", type=non_negative_int, default=12345,
                   help="seed of the fresh images (default 12345)")
    p.set_defaults(func=_demo)

    p = sub.add_parser(
        "train",
        help="train Mask R-CNN from scratch (hand-written backprop) on synthetic shapes or a COCO folder",
        description="Train from scratch: SGD (momentum 0.9, weight decay 1e-4), linear warm-up over 200 "
        "steps, lr x 0.1 for the last 20%% of the run. Writes checkpoint.npz (atomic, periodic), "
        "model.npz, log.jsonl and eval.json (box and mask COCO AP on fresh images or the validation "
        "images) to --out; with --dataset also val.jsonl (validation AP every --val-every steps) and "
        "best.npz (the best validation mask AP).",
    )
    p.add_argument("--dataset", metavar="FOLDER", default=None,
                   help="train on this COCO folder (images/ + annotations/instances_*.json, as CVAT, "
                   "Label Studio or labelme export) instead of synthetic shapes; classes from its categories")
    p.add_argument("--val-dataset", metavar="FOLDER", default=None,
                   help="validate on this COCO folder (default: a seeded held-out share of --dataset)")
    p.add_argument("--val-fraction", type=unit_float, default=None,
                   help="without --val-dataset: the share of --dataset's images held out (default 0.1)")
    p.add_argument("--val-every", type=non_negative_int, default=None,
                   help="steps between validation passes (default 200 with --dataset; 0: only at the end)")
    p.add_argument("--scale-jitter", metavar="LO,HI", default=None,
                   help="with --dataset: draw each training image's short side from LO..HI pixels "
                   "(detectron2's ResizeShortestEdge; default with a from-scratch preset: 0.75x..1.25x its "
                   "transform.min_size, 96,160 for folder; with --init-torchvision: none; LO,LO turns it "
                   "off)")
    p.add_argument("--no-flip", action="store_true",
                   help="with --dataset: no random horizontal flips (default: p = 0.5)")
    p.add_argument("--preset", default=None, choices=["shapes", "folder"],
                   help="model preset (default shapes; folder with --dataset: shapes' model resizing "
                   "photos to a 128 px short side)")
    p.add_argument("--steps", type=positive_int, default=None, help="optimiser steps (default 1800; with "
                   "--minutes an upper bound, default unlimited)")
    p.add_argument("--minutes", type=positive_float, default=None, help="stop after this wall time; the lr "
                   "decay then starts at 80%% of it (not reproducible step for step)")
    # (Defaults None: --resume must know which flags were given; _train fills in TrainConfig's.)
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="images per step (default 8; 4 with --dataset from scratch)")
    p.add_argument("--lr", type=positive_float, default=None, help="base learning rate (default 0.02)")
    p.add_argument("--seed", type=non_negative_int, default=None,
                   help="seed of the weights, data and samples (default 0)")
    p.add_argument("--out", default="runs/shapes", help="output folder (default runs/shapes)")
    p.add_argument("--resume", action="store_true", help="continue exactly from OUT/checkpoint.npz (the "
                   "run's own settings, --dataset included, come from the checkpoint); --steps (a longer "
                   "run), --minutes, --checkpoint-every and --eval-images may change, a flag that would "
                   "change the run (--lr, --batch-size, --seed, --set) is refused")
    p.add_argument("--checkpoint-every", type=positive_int, default=None,
                   help="steps between checkpoints (default 100)")
    p.add_argument("--eval-images", type=non_negative_int, default=None, help="fresh images evaluated at "
                   "the end (default 200; 0 skips)")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="change a model config field, e.g. --set mask.loss=softmax "
                   "--set roi_heads.pooler=pool (repeatable; the paper's ablations)")
    p.add_argument("--single-level", type=int, choices=[16, 32], default=None,
                   help="no FPN: the heads read one map of this stride (C4 = 16, C5 = 32)")
    p.add_argument("--init-torchvision", metavar="FILE", default=None,
                   help="fine-tune torchvision's maskrcnn_resnet50_fpn weights (a .pth you downloaded, "
                   "e.g. maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth): new box and mask predictors for the "
                   "data's classes; --set then takes torchvision's arguments (e.g. --set min_size=512)")
    p.add_argument("--trainable-backbone-layers", type=int, choices=range(6), default=3, metavar="N",
                   help="with --init-torchvision: how many of layer4..layer1, conv1 train (torchvision's "
                   "trainable_backbone_layers, default 3: conv1 and layer1 frozen)")
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "predict",
        help="detect and segment objects in image files, write overlays",
        description="Run a trained model (model.npz or checkpoint.npz) or torchvision's COCO-trained "
        "maskrcnn_resnet50_fpn weights (a .pth you downloaded; read without torch, nothing in it is "
        "executed) on images and write, per image, a PNG with masks, boxes, class names and scores "
        "(STEM_pred.png; STEM-2_pred.png, ... for inputs of the same name). An image that cannot be read "
        "is skipped and reported in an error line at the end, and the exit status is then 2.",
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
    p.add_argument("--score-thresh", type=unit_float, default=0.5, help="draw detections scoring at least "
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
    p.add_argument("--num-images", type=positive_int, default=500, help="images to evaluate (default 500)")
    p.add_argument("--seed", type=non_negative_int, default=1_000_003, help="seed of the shapes images "
                   "(default 1000003, never used in training)")
    p.add_argument("--gt-out", default=None, help="write the ground truth as COCO JSON here")
    p.add_argument("--results-out", default=None, help="write the detections as COCO results JSON here")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser(
        "export",
        help="write a resnet50_fpn model as a torchvision state_dict (.pth), to train on on many GPUs",
        description="Write a model of the resnet50_fpn architecture (e.g. fine-tuned with `train "
        "--init-torchvision`) as a state_dict that torchvision.models.detection.maskrcnn_resnet50_fpn("
        "weights=None, weights_backbone=None, num_classes=K) loads with strict=True, or as the "
        "training state torchvision's detection reference script resumes from. Needs torch.",
    )
    p.add_argument("--checkpoint", required=True, help="model file written by `minimaskrcnn train`")
    p.add_argument("--torchvision", metavar="OUT.pth", help="where to write the state_dict")
    p.add_argument("--reference-resume", metavar="OUT.pth",
                   help="also/instead write the training state that torchvision's detection reference "
                   "script (references/detection/train.py) restores with --resume: model, a fresh SGD "
                   "and MultiStepLR state with the values below (they replace the script's --lr and "
                   "--lr-steps), epoch 0 next")
    p.add_argument("--lr", type=float, default=0.02, help="with --reference-resume: SGD lr (default "
                   "0.02, the script's: 8 GPUs x 2 images)")
    p.add_argument("--momentum", type=float, default=0.9, help="with --reference-resume (default 0.9)")
    p.add_argument("--weight-decay", type=float, default=1e-4,
                   help="with --reference-resume (default 1e-4)")
    p.add_argument("--lr-steps", type=int, nargs="+", default=[16, 22],
                   help="with --reference-resume: MultiStepLR milestones in epochs (default 16 22)")
    p.add_argument("--lr-gamma", type=float, default=0.1, help="with --reference-resume (default 0.1)")
    p.set_defaults(func=_export)

    p = sub.add_parser(
        "bench",
        help="time our kernels against torch/torchvision in the same run and print ratios",
        description="Time a group of our kernels against the reference implementation measured in "
        "the same process with the same number of threads; prints times and ratios (ours / theirs). "
        "Needs torch and torchvision installed (the [test] extra).",
    )
    p.add_argument("target", choices=["conv", "ops", "train", "resnet50", "finetune", "roofline"],
                   help="conv: conv2d forward+backward, time and achieved GFLOP/s; ops: "
                   "roi_align/roi_pool/nms; train: one training step of the tiny model; resnet50: "
                   "inference at torchvision's preset; "
                   "finetune: one R50-FPN training step at 512 px with conv1+layer1 frozen, time and "
                   "peak memory; roofline: achieved GFLOP/s of the shapes train step, R50-FPN inference "
                   "and fine-tuning against this machine's sgemm rate")
    p.add_argument("--threads", type=positive_int, default=2, help="threads for both sides (default 2)")
    p.add_argument("--repeat", type=positive_int, default=5,
                   help="timed repetitions, best is kept (default 5)")
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
                   help="comma-separated propagation methods among copy, flow, align, flowalign, embed, "
                   "redetect, osvos (default copy,flow)")
    p.add_argument("--clips", type=positive_int, default=30, help="synthetic: number of clips (default 30)")
    p.add_argument("--split", choices=["shapes", "photo"], default="shapes",
                   help="synthetic: 'shapes' (128×128 flat-textured clips, the original benchmark) or "
                   "'photo' (real-photo backgrounds, JPEG, 854×480 and 432×240, objects entering and "
                   "leaving; default shapes)")
    p.add_argument("--num-frames", type=positive_int, default=None,
                   help="synthetic: frames per clip (default: drawn per clip)")
    p.add_argument("--json", default=None, help="synthetic: write the results as JSON here")
    p.add_argument("--strips", default=None, help="synthetic: write one PNG frame strip per clip here")
    p.add_argument("--seed", type=non_negative_int, default=None,
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
    """Run one command. Exit status: 0 done; 2 a user error (bad argument, input file or output
    location: one ``minimaskrcnn CMD: error: ...`` line on stderr, argparse's convention); 1 a bug in
    minimaskrcnn (its traceback, and a line saying so)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except Exception as exc:  # KeyboardInterrupt and SystemExit pass through
        message = _user_error_message(exc)
        if message is None:
            traceback.print_exc()
            _error_line(args.command, f"this is a bug in minimaskrcnn (an unexpected "
                        f"{type(exc).__name__}); please report it with the traceback above")
            return 1
        _error_line(args.command, message)
        return 2


if __name__ == "__main__":
    sys.exit(main())
