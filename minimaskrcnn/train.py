"""Training loop: ``minimaskrcnn train --preset shapes``.

Each step draws a fresh batch of synthetic shapes images (image i of the run is ``ShapesDataset(seed)[i]``,
so the data is a function of the step alone), runs ``forward_train`` and the hand-written
``backward``, and takes one SGD step (lr 0.02, momentum 0.9, weight decay 1e-4; linear warm-up over
the first 200 steps from lr·1e-3; ×0.1 for the last 20% of the run).

Files written in ``--out``:

- ``checkpoint.npz``: model, optimiser momentum, sampler RNG, step (atomic; every
  ``checkpoint_every`` steps and at the end). ``--resume`` continues from it exactly: the same
  parameters as an uninterrupted run.
- ``model.npz``: the final model alone (float32, what ``predict``/``evaluate``/``demo`` load).
- ``log.jsonl``: one JSON object per step (step, lr, the five losses, total, seconds).
- ``eval.json``: box and mask COCO AP on ``eval_images`` fresh images from ``eval_seed``.

Determinism: for a given seed (and the same library versions and thread count) two runs produce
the same losses; randomness comes only from ``np.random.Generator`` objects derived from the seed.
With ``--minutes`` the run stops on time and the ×0.1 decay starts at 80% of the time budget, which
depends on the machine's speed: such a run is not reproducible step for step.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass

import numpy as np

from minimaskrcnn.checkpoint import (
    load_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
    strip_prefix,
    with_prefix,
)
from minimaskrcnn.config import MaskRCNNConfig, get_preset
from minimaskrcnn.datasets.shapes import shapes_dataset
from minimaskrcnn.datasets.transforms import batch_of
from minimaskrcnn.evaluation.evaluate import evaluate_model, summary
from minimaskrcnn.model import LOSS_NAMES, MaskRCNN
from minimaskrcnn.nn.optim import SGD, LRSchedule
from minimaskrcnn.weights import save_model


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the message names the loss part and the step."""


@dataclass
class TrainConfig:
    preset: str = "shapes"
    steps: int = 1800  # optimiser steps (an upper bound when ``minutes`` is set)
    batch_size: int = 8
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    warmup_factor: float = 1e-3
    decay_fraction: float = 0.2  # the last 20% of the run (steps, or time) at lr × 0.1
    seed: int = 0
    out: str = "runs/shapes"
    checkpoint_every: int = 100
    minutes: float | None = None
    image_size: int = 128
    eval_images: int = 200
    eval_seed: int = 1_000_003  # a seed training never uses (training images come from ``seed``)
    progress: bool = True
    # None: every step sees new images. An int n: cycle over the first n images (to overfit in tests
    # and notebooks).
    num_train_images: int | None = None
    # Keyword options of ``ShapesDataset`` (e.g. {"occlusion": True} or {"classes": "all"}) for the
    # training and the evaluation images; the model's num_classes must be 1 + the number of classes.
    dataset_options: dict | None = None


# -- training ------------------------------------------------------------------------------------------

def _check_finite(losses: dict, step: int) -> None:
    for name in LOSS_NAMES:
        if not math.isfinite(losses[name]):
            raise NonFiniteLossError(f"{name} is {losses[name]} at step {step}: training stopped "
                                     "(lower the learning rate, or check the data)")


def train(cfg: TrainConfig, model_config: MaskRCNNConfig | None = None, resume: bool = False,
          evaluate: bool = True, model: MaskRCNN | None = None) -> dict:
    """Run (or resume) a training run; returns {"step", "losses" (last), "eval" (if evaluated)}.

    ``model``: an already-built model to start from (e.g. ``weights.load_torchvision_weights``, with
    its frozen layers) instead of a fresh ``MaskRCNN(model_config)``; its config is saved, so
    ``resume`` rebuilds it with the same frozen layers."""
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise ValueError("steps and batch_size must be >= 1")
    if model is not None and (model_config is not None or resume):
        raise ValueError("pass model= alone: not with model_config= (the model has its config) nor "
                         "resume=True (a resumed run rebuilds its model from the checkpoint)")
    os.makedirs(cfg.out, exist_ok=True)
    ck_path = os.path.join(cfg.out, "checkpoint.npz")
    log_path = os.path.join(cfg.out, "log.jsonl")
    if model is None:
        model_config = model_config or get_preset(cfg.preset)
        model = MaskRCNN(model_config, np.random.default_rng(cfg.seed))
    sample_rng = np.random.default_rng([cfg.seed, 1])  # draws the anchor and RoI samples
    opt = SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    step, elapsed, decay_step = 0, 0.0, None
    if resume:
        state, meta = load_checkpoint(ck_path)
        # The run's own settings win, except how long to go on and how to show progress.
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        saved = {k: v for k, v in meta["train"].items() if k in known}
        cfg = dataclasses.replace(TrainConfig(**saved), steps=cfg.steps, minutes=cfg.minutes,
                                  progress=cfg.progress, out=cfg.out)
        model = MaskRCNN(MaskRCNNConfig.from_dict(meta["config"]), np.random.default_rng(cfg.seed))
        model.load_state_dict(strip_prefix(state, "model."))
        opt = SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        opt.load_state_dict(strip_prefix(state, "optim."))
        sample_rng = restore_rng(meta["rng"])
        step, elapsed, decay_step = meta["step"], meta.get("elapsed", 0.0), meta.get("decay_step")
        _truncate_log(log_path, step)
    if cfg.minutes is None:
        decay_step = int(round(cfg.steps * (1 - cfg.decay_fraction)))
    schedule = LRSchedule(cfg.lr, warmup_iters=cfg.warmup_steps, warmup_factor=cfg.warmup_factor)
    pool = cfg.num_train_images or cfg.steps * cfg.batch_size
    data = shapes_dataset(pool, cfg.seed, cfg.image_size, cfg.dataset_options)
    if data.num_classes + 1 != model.config.num_classes:
        raise ValueError(f"the data has {data.num_classes} classes but the model's num_classes is "
                         f"{model.config.num_classes} (it counts the background: set it to "
                         f"{data.num_classes + 1})")

    def save():
        meta = {"step": step, "elapsed": elapsed, "decay_step": decay_step, "rng": rng_state(sample_rng),
                "config": model.config.to_dict(), "train": dataclasses.asdict(cfg)}
        save_checkpoint(ck_path, {**with_prefix(model.state_dict(), "model."),
                                  **with_prefix(opt.state_dict(), "optim.")}, meta)

    bar = None
    if cfg.progress:
        from tqdm import tqdm

        total = cfg.steps if cfg.minutes is None else None  # on a time budget the step count is unknown
        bar = tqdm(total=total, initial=step, unit="step", desc="training", dynamic_ncols=True)
    losses = {}
    budget = None if cfg.minutes is None else cfg.minutes * 60.0
    with open(log_path, "a") as log:
        t_start = time.perf_counter() - elapsed
        while step < cfg.steps:
            elapsed = time.perf_counter() - t_start
            if budget is not None:
                if decay_step is None and elapsed >= (1 - cfg.decay_fraction) * budget:
                    decay_step = step
                if elapsed >= budget:
                    break
            t0 = time.perf_counter()
            first = step * cfg.batch_size
            images, targets = batch_of(data, [i % pool for i in range(first, first + cfg.batch_size)])
            try:
                losses = model.forward_train(images, targets, rng=sample_rng)
            except FloatingPointError as exc:
                parts = ", ".join(LOSS_NAMES)
                raise NonFiniteLossError(f"every loss ({parts}) is non-finite at step {step}: {exc}; "
                                         "training stopped (lower the learning rate)") from None
            _check_finite(losses, step)
            opt.zero_grad()
            model.backward()
            lr = schedule.lr_at(step) * (0.1 if decay_step is not None and step >= decay_step else 1.0)
            opt.lr = lr
            opt.step()
            total = sum(losses.values())
            step += 1
            elapsed = time.perf_counter() - t_start
            log.write(json.dumps({"step": step, "lr": lr, **losses, "total": total,
                                  "seconds": time.perf_counter() - t0}) + "\n")
            log.flush()
            if bar is not None:
                bar.update(1)
                parts = {k[5:]: f"{v:.3f}" for k, v in losses.items()}
                bar.set_postfix({"loss": f"{total:.3f}", **parts}, refresh=False)
            if step % cfg.checkpoint_every == 0:
                save()
    if bar is not None:
        bar.close()
    save()
    save_model(os.path.join(cfg.out, "model.npz"), model, {"step": step})
    out = {"step": step, "losses": losses, "seconds": elapsed}
    if evaluate and cfg.eval_images > 0:
        eval_data = shapes_dataset(cfg.eval_images, cfg.eval_seed, cfg.image_size, cfg.dataset_options)
        results, _, _ = evaluate_model(model, eval_data, progress=cfg.progress)
        out["eval"] = {t: {k: r[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
                       for t, r in results.items()}
        with open(os.path.join(cfg.out, "eval.json"), "w") as f:
            json.dump({"step": step, "eval_images": cfg.eval_images, "eval_seed": cfg.eval_seed,
                       **out["eval"]}, f, indent=1)
        if cfg.progress:
            print(summary(results))
    return out


def _truncate_log(path: str, step: int) -> None:
    """Drop log lines past ``step`` (written after the checkpoint we resume from), atomically."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [ln for ln in f if ln.strip() and json.loads(ln)["step"] <= step]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(lines)
    os.replace(tmp, path)
