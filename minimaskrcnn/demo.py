"""``minimaskrcnn demo``: the shipped shapes model on fresh images."""

from __future__ import annotations

from pathlib import Path

CHECKPOINT = Path(__file__).resolve().parent.parent / "data" / "shapes_model.npz"


def run_demo(out: str = "demo.png", num_images: int = 50, seed: int = 12345) -> int:
    if not CHECKPOINT.exists():
        print("No trained model is available yet: the shapes checkpoint "
              f"({CHECKPOINT.name}) has not been trained and shipped in data/. "
              "Nothing was run.")
        return 1
    raise RuntimeError("unreachable until the model lands")  # replaced when the model exists
