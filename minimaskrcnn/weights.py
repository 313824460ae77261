"""Model files: our own ``.npz`` models (save, load, the shipped one) and torchvision's weights.

    from minimaskrcnn.weights import load_model, save_model, SHIPPED_MODEL
    model = load_model(SHIPPED_MODEL)         # data/shapes_model.npz, made by `minimaskrcnn train`

torchvision's COCO-trained Mask R-CNN R50-FPN in NumPy: read its ``.pth``, build, load by name.

    from minimaskrcnn.weights import load_torchvision_weights
    model = load_torchvision_weights("maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth", box_score_thresh=0.7)
    det = model.predict([image])[0]          # boxes, labels, scores, masks, mask_probs
    names = [model.config.class_names[k] for k in det["labels"]]

Fine-tuning on your own K classes (torchvision's fine-tuning tutorial: new box and mask predictors;
conv1 and layer1 frozen, FrozenBatchNorm everywhere), and back to torchvision to train on many GPUs:

    model = load_torchvision_weights("maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth", num_classes=K + 1)
    ...                                      # train (hand-written backward; frozen parameters never move)
    export_torchvision(model, "finetuned_tv.pth")   # torchvision's state_dict (needs torch)

The official file is torchvision's ``MaskRCNN_ResNet50_FPN_Weights.COCO_V1``
(https://download.pytorch.org/models/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth, 170 MB, box AP 37.9,
mask AP 34.6 on COCO val2017); download it yourself — nothing here touches the network. The file is
read by :func:`minimaskrcnn.pth.read_state_dict`, which never runs the pickle inside it, so torch is
not needed (and a file that would run code is refused).

Steps of :func:`load_torchvision_weights`:

1. Read the state_dict (name → ndarray) without torch.
2. Map torchvision's keyword arguments (``min_size``, ``box_score_thresh`` ...) onto the
   ``resnet50_fpn`` preset config; an unknown name is an error listing the known ones.
3. ``num_classes``: by default the file's (the rows of ``roi_heads.box_predictor.cls_score.weight``),
   so a model fine-tuned by torchvision on another label set loads too; COCO's 91 get their names.
   Another count K replaces both predictors, freshly initialised as torchvision's ``FastRCNNPredictor``
   (1024 → K scores, 4K deltas) and ``MaskRCNNPredictor`` (256 → 256 → K masks) initialise them.
4. Build the model (``trainable_backbone_layers`` sets which body parameters train, torchvision's
   rule) and load every array strictly: a missing, unexpected or mis-shaped key is an error that
   names each one (``num_batches_tracked`` of a trained BatchNorm is skipped, as torchvision's
   FrozenBatchNorm2d does); only the replaced predictors' keys are left out.

:func:`export_torchvision` goes the other way: a model of this architecture (fine-tuned or not) as a
``.pth`` that ``torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None,
weights_backbone=None, num_classes=K).load_state_dict(torch.load(path), strict=True)`` accepts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from minimaskrcnn.checkpoint import load_checkpoint, save_checkpoint, with_prefix
from minimaskrcnn.checkpoint import strip_prefix as _strip_key_prefix
from minimaskrcnn.config import MaskRCNNConfig, resnet50_fpn, with_overrides
from minimaskrcnn.pth import read_state_dict

# The shapes model shipped with the package (``minimaskrcnn train --preset shapes``; see the README).
SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "data" / "shapes_model.npz"


# -- our own model files ----------------------------------------------------------------------------

def save_model(path, model, metadata: dict | None = None) -> None:
    """The model alone (float32 parameters + its config), atomically."""
    state = {k: v.astype(np.float32) for k, v in model.state_dict().items()}
    meta = {"config": model.config.to_dict(), **(metadata or {})}
    save_checkpoint(path, with_prefix(state, "model."), meta)


def check_finite_state(state_dict: dict, source: str) -> None:
    """Raise ValueError naming ``source`` and the first parameter (or buffer) holding NaN or inf:
    such a model predicts nothing at all, and would do so without a word."""
    for name, value in state_dict.items():
        v = np.asarray(value)
        if v.dtype.kind in "fc" and not np.all(np.isfinite(v)):
            bad = int(np.count_nonzero(~np.isfinite(v)))
            raise ValueError(f"{source}: parameter {name!r} holds {bad} non-finite value(s) (NaN or inf) "
                             f"out of {v.size}: the file is damaged or comes from a diverged training run")


def load_model(path, overrides: dict | None = None):
    """A model saved by ``save_model`` or a training checkpoint (both keep the config). Refuses a
    file whose parameters are not all finite, naming the parameter.

    ``overrides``: dotted config fields to change before the weights are loaded, as in
    :func:`~minimaskrcnn.config.with_overrides` -- meant for inference-time switches such as
    ``{"mask.softmax_rule": "argmax"}`` or ``{"mask.paste": "continuous"}``; a field that changes a
    parameter's shape makes the load fail naming that parameter."""
    from minimaskrcnn.config import with_overrides
    from minimaskrcnn.model import MaskRCNN

    state, meta = load_checkpoint(path)
    if "config" not in meta:
        raise ValueError(f"{path!r} has no model config in its metadata: not a minimaskrcnn model file")
    state = _strip_key_prefix(state, "model.")
    check_finite_state(state, repr(str(path)))
    config = MaskRCNNConfig.from_dict(meta["config"])
    if overrides:
        config = with_overrides(config, **overrides)
    model = MaskRCNN(config, np.random.default_rng(0))
    model.load_state_dict(state)
    return model


def resolve_model(model=None, checkpoint=None):
    """The detector to use: ``model`` (a MaskRCNN) if given, else the one loaded from ``checkpoint``
    (a path), else the shipped ``data/shapes_model.npz``. Raises FileNotFoundError with a clear
    message when the file is missing."""
    if model is not None:
        if checkpoint is not None:
            raise ValueError("pass either model= or checkpoint=, not both")
        if not callable(getattr(model, "predict", None)):
            raise TypeError(f"model must be a detector with predict(images) (a MaskRCNN), got "
                            f"{type(model).__name__}")
        return model
    import os

    path = SHIPPED_MODEL if checkpoint is None else checkpoint
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"no trained Mask R-CNN at {os.fspath(path)!r}: the 'redetect' and 'osvos' methods need one "
            "(the shapes model shipped as data/shapes_model.npz, or one made by `minimaskrcnn train "
            "--preset shapes`; pass its model.npz as checkpoint / --checkpoint)")
    return load_model(path)


# -- torchvision's weights --------------------------------------------------------------------------

# torchvision's COCO category names (``MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]``):
# the 91 classifier outputs, indexed by COCO category id (1..90). Index 0 is the background; "N/A"
# marks the 10 ids that the released COCO annotations never use (the model still has outputs there).
COCO_CATEGORY_NAMES = (
    "__background__", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck",
    "boat", "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "N/A", "backpack", "umbrella",
    "N/A", "N/A", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle", "N/A",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "N/A", "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)

# torchvision ``MaskRCNN(...)`` keyword argument → our config field. Every scalar hyper-parameter of
# torchvision's constructor is here; the ones that take modules (backbone, rpn_head, box_predictor ...)
# replace architecture and cannot apply to a fixed set of weights.
TORCHVISION_KWARGS = {
    "min_size": "transform.min_size",
    "max_size": "transform.max_size",
    "image_mean": "transform.image_mean",
    "image_std": "transform.image_std",
    "rpn_pre_nms_top_n_train": "rpn.pre_nms_top_n_train",
    "rpn_pre_nms_top_n_test": "rpn.pre_nms_top_n_test",
    "rpn_post_nms_top_n_train": "rpn.post_nms_top_n_train",
    "rpn_post_nms_top_n_test": "rpn.post_nms_top_n_test",
    "rpn_nms_thresh": "rpn.nms_thresh",
    "rpn_fg_iou_thresh": "rpn.fg_iou_thresh",
    "rpn_bg_iou_thresh": "rpn.bg_iou_thresh",
    "rpn_batch_size_per_image": "rpn.batch_size_per_image",
    "rpn_positive_fraction": "rpn.positive_fraction",
    "rpn_score_thresh": "rpn.score_thresh",
    "box_score_thresh": "roi_heads.score_thresh",
    "box_nms_thresh": "roi_heads.nms_thresh",
    "box_detections_per_img": "roi_heads.detections_per_img",
    "box_fg_iou_thresh": "roi_heads.fg_iou_thresh",
    "box_bg_iou_thresh": "roi_heads.bg_iou_thresh",
    "box_batch_size_per_image": "roi_heads.batch_size_per_image",
    "box_positive_fraction": "roi_heads.positive_fraction",
    "bbox_reg_weights": "roi_heads.box_coder_weights",
}
_MODULE_KWARGS = ("backbone", "rpn_anchor_generator", "rpn_head", "box_roi_pool", "box_head",
                  "box_predictor", "mask_roi_pool", "mask_head", "mask_predictor")

# The key whose first axis is the number of classes (background included).
_CLASSIFIER_KEY = "roi_heads.box_predictor.cls_score.weight"


def torchvision_config(num_classes: int = 91, **overrides) -> MaskRCNNConfig:
    """The ``resnet50_fpn`` preset with torchvision keyword arguments applied.

    ``overrides``: any name of ``TORCHVISION_KWARGS`` (e.g. ``box_score_thresh=0.7``,
    ``min_size=600``), or a dotted config field passed as ``**{"mask.threshold": 0.6}``.
    ``bbox_reg_weights=None`` means torchvision's default (10, 10, 5, 5); ``min_size`` must be one int
    (torchvision's tuple of training sizes does not apply to inference). Class names are COCO's when
    ``num_classes == 91``.
    """
    fields = {}
    for name, value in overrides.items():
        if name in TORCHVISION_KWARGS:
            field = TORCHVISION_KWARGS[name]
        elif "." in name or name == "class_names":
            field = name
        elif name in _MODULE_KWARGS:
            raise ValueError(f"{name}= replaces a part of the network, which a weights file fixes; "
                             "build a MaskRCNN from a config instead")
        else:
            raise ValueError(f"unknown torchvision argument {name!r}; known: {', '.join(TORCHVISION_KWARGS)} "
                             "(or a dotted config field such as 'mask.threshold')")
        if name == "bbox_reg_weights" and value is None:
            value = (10.0, 10.0, 5.0, 5.0)
        if name in ("min_size", "max_size") and (
                isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
        if name in ("image_mean", "image_std", "bbox_reg_weights"):
            value = tuple(float(v) for v in value)
        fields[field] = value
    cfg = resnet50_fpn(num_classes)
    if num_classes == len(COCO_CATEGORY_NAMES):
        fields.setdefault("class_names", COCO_CATEGORY_NAMES)
    return with_overrides(cfg, **fields)


def strip_prefix(state_dict: dict, prefix: str = "module.") -> dict:
    """Remove ``prefix`` when every key has it (``torch.nn.DataParallel`` saves ``module.backbone...``)."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def num_classes_of(state_dict: dict) -> int:
    """The class count (background included) of a torchvision Mask R-CNN state_dict."""
    w = state_dict.get(_CLASSIFIER_KEY)
    if w is None or np.ndim(w) != 2:
        raise ValueError(f"not a torchvision Mask R-CNN state_dict: no 2-D {_CLASSIFIER_KEY!r}")
    return int(w.shape[0])


def load_state_dict_named(model, state_dict: dict, source: str = "state_dict") -> None:
    """Strictly load ``state_dict`` into ``model`` (any Module); on any missing, unexpected or
    mis-shaped key raise ValueError naming ``source``, every offending key, and a likely cause; on a
    parameter holding NaN or inf raise ValueError naming ``source`` and the parameter."""
    check_finite_state(state_dict, source)
    try:
        model.load_state_dict(state_dict, strict=True)
    except ValueError as exc:
        hint = ""
        if any(k.startswith("roi_heads.box_head.0.") or ".conv.0.1." in k for k in state_dict):
            hint = (" — this looks like maskrcnn_resnet50_fpn_v2 (GroupNorm heads, 4-conv box head), which "
                    "is a different architecture; use the v1 weights (maskrcnn_resnet50_fpn_coco)")
        raise ValueError(f"{source} does not fit {type(model).__name__}: {exc}{hint}") from None


def build_model(config: MaskRCNNConfig):
    """A MaskRCNN for ``config`` (float32, parameters about to be overwritten by the file)."""
    from minimaskrcnn.model import MaskRCNN

    return MaskRCNN(config, np.random.default_rng(0))


# The predictors that fine-tuning replaces (torchvision's tutorial replaces both modules whole).
PREDICTOR_PREFIXES = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.")


def init_predictors_as_torchvision(model, rng: np.random.Generator) -> None:
    """Draw fresh box and mask predictors exactly as torchvision's classes initialise them.

    - ``FastRCNNPredictor``: two ``nn.Linear`` with torch's default init, U(±1/√fan_in) for weight and
      bias (fan_in = 1024) — our ``Linear`` default.
    - ``MaskRCNNPredictor``: every weight ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``,
      N(0, 2 / fan_out); the biases keep torch's default U(±1/√fan_in), fan_in = C_in·k·k for the
      1x1 conv and, for the transposed conv, torch's weight.size(1)·k·k = 256·2·2.
    """
    from minimaskrcnn.model.resnet import kaiming_normal_fan_out

    box = model.roi_heads.box_predictor
    for layer in (box.cls_score, box.bbox_pred):
        bound = 1 / np.sqrt(layer.weight.shape[1])
        for p in (layer.weight, layer.bias):
            p.data[...] = rng.uniform(-bound, bound, size=p.shape)
    mask = model.roi_heads.mask_predictor
    for layer in (mask.conv5_mask, mask.mask_fcn_logits):
        w = layer.weight
        kaiming_normal_fan_out(w, rng)
        fan_in = w.shape[1] * w.shape[2] * w.shape[3]
        layer.bias.data[...] = rng.uniform(-1 / np.sqrt(fan_in), 1 / np.sqrt(fan_in), size=layer.bias.shape)


def load_torchvision_weights(path, num_classes: int | None = None, trainable_backbone_layers: int = 3,
                             class_names=None, rng: np.random.Generator | None = None, **overrides):
    """torchvision's ``maskrcnn_resnet50_fpn`` (v1) weights in our ``MaskRCNN``, in eval mode.

    Inputs
    - path: a ``.pth`` saved by ``torch.save(model.state_dict())`` (zip or legacy format; a checkpoint
      dict holding it under ``"model"`` or ``"state_dict"`` is unwrapped, a ``module.`` prefix dropped).
    - num_classes: None (the file's count) or K, background included. When K differs from the file's,
      the box and mask predictors are replaced by fresh ones for K classes (torchvision's fine-tuning
      tutorial); everything else comes from the file.
    - trainable_backbone_layers: 0..5, torchvision's argument (its default 3 for pretrained weights):
      conv1 and layer1 frozen, layer2..layer4 train. Frozen parameters have ``requires_grad=False``;
      the FPN, RPN and RoI heads always train, and every norm is a FrozenBatchNorm2d (no parameters).
    - class_names: optional, K names (index 0 the background) stored in the config; COCO's names are
      used when K = 91 and none are given.
    - rng: draws the fresh predictors (default ``np.random.default_rng(0)``).
    - overrides: torchvision's keyword arguments (see ``TORCHVISION_KWARGS``), e.g.
      ``box_score_thresh=0.7``, ``min_size=512``, ``box_detections_per_img=20``, or dotted config
      fields.

    Returns the model (float32). Raises ``minimaskrcnn.pth.UnsafePickleError`` for a file whose pickle
    asks for anything but tensors, ValueError for a bad argument or a key mismatch (every key named).
    """
    if num_classes is not None and (isinstance(num_classes, bool)
                                    or not isinstance(num_classes, (int, np.integer)) or num_classes < 2):
        raise ValueError("num_classes must be an int >= 2 (background + at least one class), got "
                         f"{num_classes!r}")
    if isinstance(trainable_backbone_layers, bool) or trainable_backbone_layers not in range(6):
        raise ValueError(f"trainable_backbone_layers must be an int in 0..5 (torchvision's range), got "
                         f"{trainable_backbone_layers!r}")
    source = str(Path(path))
    state_dict = strip_prefix(read_state_dict(path))
    file_classes = num_classes_of(state_dict)
    k = file_classes if num_classes is None else int(num_classes)
    if class_names is not None:
        class_names = tuple(str(n) for n in class_names)
        if len(class_names) != k:
            raise ValueError(f"class_names has {len(class_names)} names but the model has {k} classes "
                             "(background included)")
        overrides = {**overrides, "class_names": class_names}
    overrides = {**overrides, "backbone.trainable_layers": int(trainable_backbone_layers)}
    model = build_model(torchvision_config(k, **overrides))
    if k != file_classes:
        init_predictors_as_torchvision(model, np.random.default_rng(0) if rng is None else rng)
        fresh = {key: v for key, v in model.state_dict().items() if key.startswith(PREDICTOR_PREFIXES)}
        state_dict = {key: v for key, v in state_dict.items() if not key.startswith(PREDICTOR_PREFIXES)}
        state_dict.update(fresh)
    load_state_dict_named(model, state_dict, source)
    return model.eval()


# -- export to torchvision ---------------------------------------------------------------------------

def _flat_config(cfg: MaskRCNNConfig) -> dict:
    out = {}
    for part, value in cfg.to_dict().items():
        if isinstance(value, dict):
            out.update({f"{part}.{k}": v for k, v in value.items()})
        else:
            out[part] = value
    return out


# Fields that torchvision's maskrcnn_resnet50_fpn takes as arguments or that do not change what the
# weights mean: they may differ from the preset in an exported model.
_EXPORT_FREE_FIELDS = set(TORCHVISION_KWARGS.values()) | {
    "num_classes", "class_names", "backbone.trainable_layers", "transform.resize", "mask.threshold",
    "rpn.min_size", "roi_heads.min_box_size"}


def export_mismatches(config: MaskRCNNConfig) -> list[str]:
    """The config fields that make a model something ``maskrcnn_resnet50_fpn`` cannot rebuild
    (``"field: ours vs torchvision's"``); empty for the resnet50_fpn preset, fine-tuned or not."""
    ours, theirs = _flat_config(config), _flat_config(torchvision_config(config.num_classes))
    return [f"{k}: {ours.get(k)!r} vs torchvision's {theirs.get(k)!r}"
            for k in sorted(set(ours) | set(theirs))
            if k not in _EXPORT_FREE_FIELDS and ours.get(k) != theirs.get(k)]


def _torch_for_export(model):
    """torch, after checking that ``model`` is of the architecture torchvision builds."""
    problems = export_mismatches(model.config)
    if problems:
        raise ValueError("only the resnet50_fpn architecture (torchvision's maskrcnn_resnet50_fpn) can be "
                         "exported to torchvision; this model differs in: " + "; ".join(problems))
    try:
        import torch
    except ImportError:
        raise ImportError("exporting to torchvision needs torch: pip install torch torchvision "
                          "(reading torchvision's weights does not)") from None
    return torch


def _torch_state_dict(model):
    import collections

    import torch

    return collections.OrderedDict((k, torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)))
                                   for k, v in model.state_dict().items())


def _save_atomically(torch, obj, path) -> str:
    """``torch.save`` to ``path.tmp``, then rename: a reader never sees a half-written file."""
    import os

    path = os.fspath(path)
    tmp = f"{path}.tmp"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def export_torchvision(model, path) -> dict:
    """Write ``model`` as a torchvision ``maskrcnn_resnet50_fpn`` state_dict (float32 tensors, torch's
    names; a plain dict, so BatchNorm layers of a ``weights=None`` build fill in their own
    ``num_batches_tracked``), atomically.

    Load it with ``model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
    num_classes=K); model.load_state_dict(torch.load(path, weights_only=True), strict=True)``.
    Needs torch (raises ImportError with the install command otherwise); ValueError naming the config
    fields when the model is not of that architecture (the shapes preset is not). Returns
    ``{"num_classes", "keys", "path"}``.
    """
    torch = _torch_for_export(model)
    state = _torch_state_dict(model)
    path = _save_atomically(torch, state, path)
    return {"num_classes": model.config.num_classes, "keys": len(state), "path": path}


def export_reference_checkpoint(model, path, *, lr: float = 0.02, momentum: float = 0.9,
                                weight_decay: float = 1e-4, lr_steps=(16, 22), lr_gamma: float = 0.1) -> dict:
    """Write ``model`` as the training state that torchvision's detection reference script
    (``references/detection/train.py`` in the torchvision repository) restores with ``--resume``.

    That script's ``--resume FILE`` reads ``torch.load(FILE, weights_only=True)`` and restores
    ``["model"]`` (the state_dict), ``["optimizer"]``, ``["lr_scheduler"]`` and ``["epoch"]`` (it starts
    at epoch + 1), so a bare state_dict cannot go there. Written here: the state_dict, a fresh
    ``torch.optim.SGD`` state over the model's trainable parameters (``lr``, ``momentum``,
    ``weight_decay``: the script's defaults; no momentum yet), a ``MultiStepLR(milestones=lr_steps,
    gamma=lr_gamma)`` state at its start, and epoch −1 (so the run starts at epoch 0, warm-up
    included). Restoring the optimizer and scheduler replaces the script's ``--lr`` and ``--lr-steps``
    by these values, and the optimizer must see as many trainable parameters as this model has: run
    the script with ``--weights-backbone ResNet50_Weights.IMAGENET1K_V1`` (FrozenBatchNorm, as here),
    ``--trainable-backbone-layers`` equal to this model's and without ``--amp`` or
    ``--norm-weight-decay``. Returns ``{"trainable", "trainable_backbone_layers", "path"}``.
    """
    torch = _torch_for_export(model)
    state = _torch_state_dict(model)
    trainable = [torch.from_numpy(np.zeros(p.shape, np.float32)) for p in model.trainable_parameters()]
    optimizer = torch.optim.SGD(trainable, lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[int(s) for s in lr_steps],
                                                     gamma=lr_gamma)
    checkpoint = {"model": state, "optimizer": optimizer.state_dict(), "lr_scheduler": scheduler.state_dict(),
                  "epoch": -1}
    path = _save_atomically(torch, checkpoint, path)
    return {"trainable": len(trainable), "path": path,
            "trainable_backbone_layers": model.config.backbone.trainable_layers}
