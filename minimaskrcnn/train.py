"""Training loop: ``minimaskrcnn train --preset shapes`` or ``minimaskrcnn train --dataset FOLDER``.

One loop for any data set (items with ``image``, ``boxes``, ``labels``, ``masks``):

- shapes (no ``dataset``): each step draws a fresh batch of synthetic shapes images (image i of
  the run is ``ShapesDataset(seed)[i]``, so the data is a function of the step alone);
- a COCO folder (``dataset``, a path or a data set object): epochs over its images, each epoch in
  the order of a permutation seeded by (seed, epoch), with horizontal flips and optional scale
  jitter of the short side (:class:`~minimaskrcnn.datasets.transforms.Augment`, seeded by
  (seed, step)); crowd regions are left out of the targets. The data of step s is again a
  function of s alone. ``num_classes`` and the class names come from the folder's categories and
  are stored in the model file (with the categories' COCO ids).

Each step runs ``forward_train`` and the hand-written ``backward``, and takes one SGD step (lr 0.02,
momentum 0.9, weight decay 1e-4; linear warm-up over the first 200 steps from lr·1e-3; ×0.1 for the
last 20% of the run).

Validation: with ``val_every`` > 0 and validation data (``val_dataset``, or without it a seeded
held-out share ``val_fraction`` of the folder's images), box and mask COCO AP every ``val_every``
steps, printed and appended to ``val.jsonl``; the model with the best validation mask AP so far is
kept as ``best.npz`` beside the last one.

Files written in ``--out``:

- ``checkpoint.npz``: model, optimiser momentum, sampler RNG, step, best validation AP (atomic;
  every ``checkpoint_every`` steps and at the end). ``--resume`` continues from it exactly: the
  same parameters as an uninterrupted run.
- ``model.npz``: the final model alone (float32, what ``predict``/``evaluate``/``demo`` load);
  ``best.npz``: the best by validation mask AP (when validating).
- ``log.jsonl``: one JSON object per step (step, epoch, lr, the five losses, total, seconds); a new
  run (not ``--resume``) starts a new log. ``val.jsonl``: one per validation pass (step, epoch, box
  and mask AP/AP50/AP75).
- ``eval.json``: box and mask COCO AP at the end: on ``eval_images`` fresh shapes images from
  ``eval_seed``, or on the whole validation data of a folder.

Faults. A run killed at any moment can be resumed: checkpoints are written atomically, temporary files
of a save that was killed are removed at the next start, and a torn last line of ``log.jsonl`` (a kill
mid-write) is dropped on resume. A non-finite loss or parameter stops the run *before* anything is
saved, so ``checkpoint.npz`` stays the last good one (the error says its step). ``--resume`` continues
the run as it was started: it honours a longer ``steps`` (when the lr schedule so far is unchanged),
``minutes``, ``checkpoint_every`` and the evaluation settings, and refuses any other change (lr,
batch size, seed, model config, ...), which would make it a different run.

Determinism: for a given seed (and the same library versions and thread count) two runs produce
the same losses; randomness comes only from ``np.random.Generator`` objects derived from the seed.
With ``--minutes`` the run stops on time and the ×0.1 decay starts at 80% of the time budget, which
depends on the machine's speed: such a run is not reproducible step for step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass

import numpy as np

from minimaskrcnn._checks import writable_folder
from minimaskrcnn.checkpoint import (
    load_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
    strip_prefix,
    with_prefix,
)
from minimaskrcnn.config import MaskRCNNConfig, get_preset, with_overrides
from minimaskrcnn.datasets.shapes import shapes_dataset
from minimaskrcnn.datasets.transforms import Augment, Subset, batch_of, split_indices
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
    # A COCO folder to train on instead of shapes, and one to validate on (None: a seeded held-out
    # share ``val_fraction`` of ``dataset``'s images, split with ``seed``).
    dataset: str | None = None
    val_dataset: str | None = None
    val_fraction: float = 0.1
    val_every: int = 0  # steps between validation passes (0: none during training)
    # Augmentation of folder images (shapes are never augmented: every image is new anyway).
    flip_prob: float = 0.5  # horizontal flip (torchvision's references)
    # None: resize to the model's transform.min_size; (lo, hi): short side drawn from lo..hi per image
    # (detectron2's ResizeShortestEdge), the long side capped at transform.max_size.
    scale_jitter: tuple | None = None


# -- training ------------------------------------------------------------------------------------------

def _check_finite(losses: dict, step: int, note: str = "") -> None:
    for name in LOSS_NAMES:
        if not math.isfinite(losses[name]):
            raise NonFiniteLossError(f"{name} is {losses[name]} at step {step}: training stopped (lower "
                                     "the learning rate, or check the data)" + (f"; {note}" if note else ""))


def train(cfg: TrainConfig, model_config: MaskRCNNConfig | None = None, resume: bool = False,
          evaluate: bool = True, *, dataset=None, val_dataset=None, model=None) -> dict:
    """Run (or resume) a training run; returns {"step", "losses" (last), "seconds", "eval" (if
    evaluated), "best" (the best validation pass, if any)}.

    dataset / val_dataset: data set objects to use instead of ``cfg.dataset`` / ``cfg.val_dataset``
    (which are folder paths) or shapes. model: an already-built model to train (e.g. fine-tuning from
    other weights) instead of ``MaskRCNN(model_config)``, or a function ``model(num_classes,
    class_names)`` that builds one once the data is read (num_classes counts the background); its
    ``num_classes`` must fit the data, and with ``resume`` the checkpoint's parameters are loaded into
    it. The optimiser takes
    ``model.trainable_parameters()`` when the model has it (frozen layers), else ``model.parameters()``.
    """
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise ValueError("steps and batch_size must be >= 1")
    if cfg.checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {cfg.checkpoint_every}")
    ck_path = os.path.join(cfg.out, "checkpoint.npz")
    log_path = os.path.join(cfg.out, "log.jsonl")
    val_path = os.path.join(cfg.out, "val.jsonl")
    state = meta = None
    last_good = None  # the step of checkpoint.npz, when it holds this run
    if resume:
        state, meta = _read_training_checkpoint(ck_path)
        cfg = _resumed_config(cfg, meta, model_config, ck_path)  # the run's own settings
        model_config = MaskRCNNConfig.from_dict(meta["config"])

    # 1. The data: the training set, the validation set (or None), augmentation for folders.
    train_data, val_data, split = _datasets(cfg, dataset, val_dataset)  # a bad folder stops here
    writable_folder(cfg.out, "out")
    _remove_stray_temp_files(cfg.out)
    folder = train_data is not None
    if folder:
        pool = len(train_data)  # an epoch
    else:
        pool = cfg.num_train_images or cfg.steps * cfg.batch_size
        train_data = shapes_dataset(pool, cfg.seed, cfg.image_size, cfg.dataset_options)
    if cfg.progress and split is not None:
        print(f"held-out split (seed {cfg.seed}, val_fraction {cfg.val_fraction}): {split[0]} images "
              f"for training, {split[1]} for validation")

    # 2. The model: given, rebuilt from the checkpoint, or built from the config (a folder's model
    #    takes num_classes and the class names from the folder's categories).
    if model is not None and not hasattr(model, "forward_train"):  # a factory, e.g. fine-tuning
        model = model(train_data.num_classes + 1, tuple(train_data.class_names))
    if model is None:
        model_config = model_config or get_preset(cfg.preset)
        if folder and not resume:
            model_config = with_overrides(model_config, num_classes=train_data.num_classes + 1,
                                          class_names=tuple(train_data.class_names))
        model = MaskRCNN(model_config, np.random.default_rng(cfg.seed))
    elif folder and model.config.class_names is None and \
            model.config.num_classes == train_data.num_classes + 1:
        model.config.class_names = tuple(train_data.class_names)
    if train_data.num_classes + 1 != model.config.num_classes:
        raise ValueError(f"the data has {train_data.num_classes} classes but the model's num_classes is "
                         f"{model.config.num_classes} (it counts the background: set it to "
                         f"{train_data.num_classes + 1})")
    params = getattr(model, "trainable_parameters", model.parameters)()
    opt = SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sample_rng = np.random.default_rng([cfg.seed, 1])  # draws the anchor and RoI samples
    step, elapsed, decay_step, best = 0, 0.0, None, None
    if resume:
        model.load_state_dict(strip_prefix(state, "model."))
        opt.load_state_dict(strip_prefix(state, "optim."))
        sample_rng = restore_rng(meta["rng"])
        step, elapsed, decay_step = meta["step"], meta.get("elapsed", 0.0), meta.get("decay_step")
        last_good = step
        best = meta.get("best")
        for path in (log_path, val_path):
            dropped = _repair_log(path, step)
            if dropped and cfg.progress:
                print(f"{path}: dropped {dropped} torn line(s) (the previous run was killed while writing)")
    if cfg.minutes is None:
        decay_step = int(round(cfg.steps * (1 - cfg.decay_fraction)))
    schedule = LRSchedule(cfg.lr, warmup_iters=cfg.warmup_steps, warmup_factor=cfg.warmup_factor)
    augment = None
    if folder:
        t = model.config.transform
        shorts = cfg.scale_jitter if cfg.scale_jitter is not None else (t.min_size if t.resize else None)
        augment = Augment(shorts, max_size=t.max_size, flip_prob=cfg.flip_prob)
    category_ids = getattr(train_data, "category_ids", None)
    extra = {"category_ids": list(category_ids)} if category_ids is not None else {}

    def save():
        nonlocal last_good
        meta = {"step": step, "elapsed": elapsed, "decay_step": decay_step, "rng": rng_state(sample_rng),
                "config": model.config.to_dict(), "train": dataclasses.asdict(cfg), "best": best}
        state = {**with_prefix(model.state_dict(), "model."), **with_prefix(opt.state_dict(), "optim.")}
        _refuse_non_finite(state, step, _last_good_note(ck_path, last_good, cfg.checkpoint_every))
        with _naming(ck_path):
            save_checkpoint(ck_path, state, meta)
        last_good = step

    bar = None
    if cfg.progress:
        from tqdm import tqdm

        total = cfg.steps if cfg.minutes is None else None  # on a time budget the step count is unknown
        bar = tqdm(total=total, initial=step, unit="step", desc="training", dynamic_ncols=True)
    losses = {}
    budget = None if cfg.minutes is None else cfg.minutes * 60.0
    with _open_log(log_path, "a" if resume else "w") as log:  # a new run starts a new log
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
            epoch = first // pool + 1
            if folder:
                images, targets = batch_of(train_data, _epoch_indices(first, cfg.batch_size, pool, cfg.seed))
                aug_rng = np.random.default_rng([cfg.seed, 3, step])
                pairs = [augment(im, tg, aug_rng) for im, tg in zip(images, targets)]
                images, targets = [p[0] for p in pairs], [p[1] for p in pairs]
            else:
                indices = [i % pool for i in range(first, first + cfg.batch_size)]
                images, targets = batch_of(train_data, indices)
            note = _last_good_note(ck_path, last_good, cfg.checkpoint_every)
            try:
                losses = _forward_train(model, images, targets, sample_rng, resized=augment is not None
                                        and augment.short_sides is not None)
            except FloatingPointError as exc:
                parts = ", ".join(LOSS_NAMES)
                raise NonFiniteLossError(f"every loss ({parts}) is non-finite at step {step}: {exc}; "
                                         f"training stopped (lower the learning rate); {note}") from None
            _check_finite(losses, step, note)
            opt.zero_grad()
            model.backward()
            lr = schedule.lr_at(step) * (0.1 if decay_step is not None and step >= decay_step else 1.0)
            opt.lr = lr
            opt.step()
            _check_parameters_finite(model, step, note)
            total = sum(losses.values())
            step += 1
            elapsed = time.perf_counter() - t_start
            log.write(json.dumps({"step": step, "epoch": epoch, "lr": lr, **losses, "total": total,
                                  "seconds": time.perf_counter() - t0}) + "\n")
            log.flush()
            if bar is not None:
                bar.update(1)
                bar.set_description(f"training epoch {epoch}" if folder else "training")
                parts = {k[5:]: f"{v:.3f}" for k, v in losses.items()}
                bar.set_postfix({"loss": f"{total:.3f}", **parts}, refresh=False)
            if val_data is not None and cfg.val_every > 0 and step % cfg.val_every == 0:
                best = _validate(model, val_data, step, epoch, best, cfg, val_path, extra, bar)
            if step % cfg.checkpoint_every == 0:
                save()
    if bar is not None:
        bar.close()
    save()
    with _naming(os.path.join(cfg.out, "model.npz")):
        save_model(os.path.join(cfg.out, "model.npz"), model, {"step": step, **extra})
    out = {"step": step, "losses": losses, "seconds": elapsed}
    eval_data = val_data  # a folder's validation images (all of them), else fresh shapes images
    if eval_data is None and not folder and cfg.eval_images > 0:
        eval_data = shapes_dataset(cfg.eval_images, cfg.eval_seed, cfg.image_size, cfg.dataset_options)
    if evaluate and eval_data is not None and cfg.eval_images > 0:
        results, _, _ = evaluate_model(model, eval_data, progress=cfg.progress)
        out["eval"] = {t: {k: r[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
                       for t, r in results.items()}
        where = ({"eval_images": cfg.eval_images, "eval_seed": cfg.eval_seed} if not folder else
                 {"eval_images": len(eval_data), "val_dataset": cfg.val_dataset or f"held-out split of "
                  f"{cfg.dataset or 'the data set'}"})
        _write_json_atomic(os.path.join(cfg.out, "eval.json"), {"step": step, **where, **out["eval"]})
        if folder and (best is None or results["segm"]["AP"] > best["segm_AP"]):
            best = _record_best(model, step, results, cfg, extra)
            save()  # the checkpoint knows the best, so a resumed run compares against it
        if cfg.progress:
            print(summary(results))
    if best is not None:
        out["best"] = best
    return out


def _datasets(cfg: TrainConfig, dataset, val_dataset):
    """(train, val, split) for a folder run, (None, val or None, None) for shapes.

    A folder path is read with crowd regions left out (training) or kept (validation: ignore regions,
    as pycocotools treats them), boxes from the masks (what the evaluation's ground truth uses), and
    refused before training when it cannot be trained on (``check_trainable``). ``split`` is
    (training images, validation images) when the validation images are a held-out split."""
    from minimaskrcnn.datasets.coco import CocoFolderDataset

    def read(path, skip_crowd):
        ds = CocoFolderDataset(path, skip_crowd=skip_crowd, box_source="mask")
        if skip_crowd:
            ds.check_trainable()
        return ds

    if dataset is None and cfg.dataset is None:
        return None, val_dataset, None
    train_data = dataset if dataset is not None else read(cfg.dataset, True)
    split = None
    if val_dataset is None and cfg.val_dataset is not None:
        val_dataset = read(cfg.val_dataset, False)
        if list(val_dataset.class_names) != list(train_data.class_names):
            raise ValueError(f"{cfg.val_dataset}: categories {val_dataset.class_names[1:]} differ from the "
                             f"training folder's {train_data.class_names[1:]}")
    if val_dataset is None and cfg.val_fraction > 0:
        tr, va = split_indices(len(train_data), cfg.val_fraction, cfg.seed)
        full = read(cfg.dataset, False) if dataset is None else train_data
        train_data, val_dataset, split = Subset(train_data, tr), Subset(full, va), (len(tr), len(va))
    return train_data, val_dataset, split


def _epoch_indices(first: int, batch_size: int, n: int, seed: int) -> list[int]:
    """Data-set indices of positions first .. first + batch_size − 1 of the run: epoch e visits all n
    items in the order of ``default_rng([seed, 2, e]).permutation(n)`` (a function of the step alone)."""
    out, orders = [], {}
    for pos in range(first, first + batch_size):
        e = pos // n
        if e not in orders:
            orders[e] = np.random.default_rng([seed, 2, e]).permutation(n)
        out.append(int(orders[e][pos % n]))
    return out


def _forward_train(model, images, targets, rng, resized: bool) -> dict:
    """``model.forward_train``; ``resized``: the augmentation already resized the images (with scale
    jitter), so the model's own resize to ``transform.min_size`` — which would undo the jitter — is
    skipped for this forward pass (and only for it: the config saved with the model still resizes)."""
    if not resized:
        return model.forward_train(images, targets, rng=rng)
    t = model.config.transform
    was = t.resize
    t.resize = False
    try:
        return model.forward_train(images, targets, rng=rng)
    finally:
        t.resize = was


def _validate(model, val_data, step, epoch, best, cfg, val_path, extra, bar):
    """One validation pass: COCO AP into val.jsonl and the console; best.npz when mask AP improves."""
    results, _, _ = evaluate_model(model, val_data)
    record = {"step": step, "epoch": epoch, **{f"{t}_{k}": results[t][k] for t in ("bbox", "segm")
                                              for k in ("AP", "AP50", "AP75")}}
    with open(val_path, "a") as f:
        f.write(json.dumps(record) + "\n")
    improved = best is None or record["segm_AP"] > best["segm_AP"]
    if improved:
        best = _record_best(model, step, results, cfg, extra)
    if cfg.progress:
        msg = (f"step {step} (epoch {epoch}): validation box AP {record['bbox_AP']:.3f} "
               f"AP50 {record['bbox_AP50']:.3f}, mask AP {record['segm_AP']:.3f} "
               f"AP50 {record['segm_AP50']:.3f}")
        msg += " (best so far: best.npz)" if improved else \
            f" (best {best['segm_AP']:.3f} at step {best['step']})"
        (bar.write if bar is not None else print)(msg)
    return best


def _record_best(model, step, results, cfg, extra) -> dict:
    best = {"step": step, "segm_AP": results["segm"]["AP"], "bbox_AP": results["bbox"]["AP"]}
    save_model(os.path.join(cfg.out, "best.npz"), model, {"step": step, "val": best, **extra})
    return best


# -- fault handling: temp files of a killed save, a torn log, resume checks, non-finite state --------

# Temporary files of our atomic writes: save_checkpoint's ".NAME.PID.HEX.tmp", and "NAME.tmp".
_TEMP_PATTERNS = (".checkpoint.npz.*.tmp", ".model.npz.*.tmp", "log.jsonl.tmp", "eval.json.tmp")


def _remove_stray_temp_files(out: str) -> list[str]:
    """Remove what a save killed mid-write (SIGKILL, power loss) left in ``out``; returns the names."""
    import glob

    removed = []
    for pattern in _TEMP_PATTERNS:
        for path in glob.glob(os.path.join(glob.escape(out), pattern)):
            try:
                os.unlink(path)
                removed.append(os.path.basename(path))
            except FileNotFoundError:
                pass
    return removed


def _repair_log(path: str, step: int) -> int:
    """Keep the log's complete lines up to ``step`` (the checkpoint we resume from), atomically.

    Lines past ``step`` were written after that checkpoint and are dropped (the resumed run writes
    them again). A line that is not a complete JSON object (a kill mid-write tears the last one) ends
    the log: it and anything after it are dropped. Returns the number of torn lines dropped."""
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8", errors="replace") as f:
        raw = f.read().split("\n")
    lines, torn = [], 0
    for i, text in enumerate(raw):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
            ok = isinstance(record, dict) and isinstance(record.get("step"), int)
        except json.JSONDecodeError:
            ok = False
        if not ok:
            torn = sum(1 for t in raw[i:] if t.strip())
            break
        if record["step"] <= step:
            lines.append(text + "\n")
    tmp = path + ".tmp"
    with _naming(tmp), open(tmp, "w", encoding="utf-8") as f:
        f.writelines(lines)
    os.replace(tmp, path)
    return torn


def _read_training_checkpoint(path: str) -> tuple[dict, dict]:
    """``load_checkpoint`` plus the training state --resume needs; ValueError for a model file."""
    state, meta = load_checkpoint(path)
    missing = [k for k in ("train", "step", "rng", "config") if k not in meta]
    if missing or not any(k.startswith("optim.") for k in state):
        lacking = ", ".join(missing) or "optimiser state"
        raise ValueError(f"{path!r} holds a model but no training state (no {lacking}): --resume needs "
                         "the checkpoint.npz a training run writes, not a model file")
    return state, meta


# Settings --resume may change without making it a different run: how long to go on, how often to
# checkpoint, how to show progress, where the run lives and what to evaluate at the end.
_RESUME_MAY_CHANGE = ("steps", "minutes", "checkpoint_every", "progress", "out", "eval_images",
                      "eval_seed")


def resumed_config(out: str, **changes) -> TrainConfig:
    """The TrainConfig of the run checkpointed in ``out`` with ``changes`` applied (what the command
    line's ``--resume`` passes to :func:`train`: only the flags the user gave)."""
    _, meta = _read_training_checkpoint(os.path.join(out, "checkpoint.npz"))
    return dataclasses.replace(_saved_config(meta), out=out, **changes)


def _saved_config(meta: dict) -> TrainConfig:
    """The TrainConfig a checkpoint's metadata records (JSON lists back to the tuples they were)."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    saved = {k: v for k, v in meta["train"].items() if k in known}
    if saved.get("scale_jitter") is not None:
        saved["scale_jitter"] = tuple(saved["scale_jitter"])
    return TrainConfig(**saved)


def _as_json(value):
    return json.loads(json.dumps(value, default=list))  # tuples and lists compare equal


def _resumed_config(cfg: TrainConfig, meta: dict, model_config, ck_path: str) -> TrainConfig:
    """``cfg`` for the resumed run, or ValueError naming every setting that would change the run.

    ``steps`` is honoured when it reproduces an uninterrupted run of the new length: not below the
    checkpoint's step, and the lr decay (at 80% of the steps) not moved across steps already taken."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    saved = _saved_config(meta)
    changed = [f"{name} ({getattr(saved, name)!r} -> {getattr(cfg, name)!r})" for name in sorted(known)
               if name not in _RESUME_MAY_CHANGE
               and _as_json(getattr(saved, name)) != _as_json(getattr(cfg, name))]
    if model_config is not None and _as_json(model_config.to_dict()) != _as_json(meta["config"]):
        changed.append("the model config")
    if changed:
        raise ValueError(f"--resume continues the run in {cfg.out!r} exactly as it was started; it cannot "
                         f"change {', '.join(changed)}. Resume without them, or start a new run in "
                         "another folder")
    step = meta["step"]
    if cfg.steps < step:
        raise ValueError(f"steps={cfg.steps} is below the step of {ck_path!r} ({step}): the run is "
                         "already further")
    if cfg.minutes is None and saved.minutes is None and cfg.steps != saved.steps:
        old = meta.get("decay_step")
        new = int(round(cfg.steps * (1 - cfg.decay_fraction)))
        if old != new and step > min(old, new):
            raise ValueError(f"steps={cfg.steps}: {ck_path!r} is at step {step}, past the start of the "
                             f"lr decay (step {min(old, new)}) of the {saved.steps}- or the {cfg.steps}-step "
                             f"schedule, so resuming cannot reproduce a {cfg.steps}-step run. Resume with "
                             f"steps={saved.steps}, or start a new run")
    return dataclasses.replace(saved, **{k: getattr(cfg, k) for k in _RESUME_MAY_CHANGE})


def _last_good_note(ck_path: str, last_good: int | None, every: int) -> str:
    if last_good is None:
        return f"no checkpoint of this run was written yet (the first is due at step {every})"
    return f"the last good checkpoint, {ck_path}, is at step {last_good} and was kept"


def _check_parameters_finite(model, step: int, note: str) -> None:
    """After step ``step``'s update: NonFiniteLossError naming the first non-finite parameter."""
    for name, p in model.named_parameters():
        if not np.all(np.isfinite(p.data)):
            raise NonFiniteLossError(f"parameter {name} is non-finite after step {step + 1}'s update: "
                                     f"training stopped (lower the learning rate); {note}")


def _refuse_non_finite(state: dict, step: int, note: str) -> None:
    """Never save a non-finite state over the last good checkpoint."""
    for key, value in state.items():
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise NonFiniteLossError(f"{key} is non-finite at step {step}: not saved; {note}")


@contextlib.contextmanager
def _naming(path: str):
    """Re-raise an OSError that names no file (a write's ENOSPC: "No space left on device") as one
    naming ``path``, so the error says which file could not be written."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), path) from exc


class _open_log:
    """``open(path, mode)`` for the JSON-lines log, whose write and flush errors name the file."""

    def __init__(self, path: str, mode: str):
        self.path = path
        with _naming(path):
            self.file = open(path, mode)

    def write(self, text: str) -> None:
        with _naming(self.path):
            self.file.write(text)

    def flush(self) -> None:
        with _naming(self.path):
            self.file.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        with _naming(self.path):
            self.file.close()


def _write_json_atomic(path: str, data) -> None:
    tmp = path + ".tmp"
    try:
        with _naming(path), open(tmp, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
