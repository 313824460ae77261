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
