"""The detector-based propagation methods: tracking by re-detection and OSVOS-style fine-tuning.

The identity logic of "redetect" is tested with a stand-in detector that reports the true visible
masks (plus a false positive), on a constructed clip where a target passes behind an occluder; the
trained shapes model runs only on short clips.
"""

from __future__ import annotations

import numpy as np
import pytest

from minimaskrcnn.evaluation.davis import jaccard
from minimaskrcnn.video.methods import METHODS, propagate
from minimaskrcnn.video.osvos import (
    _relabelled_copy,
    augment_first_frame,
    finetune_first_frame,
    propagate_osvos,
)
from minimaskrcnn.video.redetect import bhattacharyya, propagate_redetect
from minimaskrcnn.video.synthetic import make_clip
from minimaskrcnn.weights import resolve_model

H = W = 96


def _texture(base, seed):
    """A smooth colour pattern around ``base`` (±25 per channel): well apart from other bases."""
    rng = np.random.default_rng(seed)
    f = rng.uniform(0.05, 0.15, (3, 2))
    ph = rng.uniform(0, 2 * np.pi, 3)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    return np.stack([base[c] + 25 * np.sin(f[c, 0] * xx + f[c, 1] * yy + ph[c]) for c in range(3)], -1)


def occlusion_scene(num_frames=30):
    """A textured target square (half-size 9) moving 2 px/frame to the right behind a static occluder
    (half-size 13, centred at x = 55), over a textured background. Returns (frames, ids, occluder).

    The target (ID 1) is hidden completely for frames 13–17 and fully visible again from frame 26.
    """
    bg = _texture((70, 160, 70), 0)  # green
    target = _texture((200, 60, 60), 1)  # red
    occ_tex = _texture((60, 60, 200), 2)  # blue
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    occluder = (np.abs(xx - 55) < 13) & (np.abs(yy - 48) < 13)
    frames = np.zeros((num_frames, H, W, 3), np.uint8)
    ids = np.zeros((num_frames, H, W), np.uint8)
    for t in range(num_frames):
        img = np.roll(bg, t // 3, axis=1).copy()  # a slowly panning background
        cx = 25 + 2 * t
        inside = (np.abs(xx - cx) < 9) & (np.abs(yy - 48) < 9)
        img[inside] = np.roll(target, 2 * t, axis=1)[inside]  # the texture moves with the target
        ids[t][inside] = 1
        img[occluder] = occ_tex[occluder]
        ids[t][occluder] = 0
        frames[t] = np.clip(np.rint(img), 0, 255)
    return frames, ids, occluder


class FakeDetector:
    """Reports, for a frame of the clip, the visible target (when ≥ 12 px), the occluder and a false
    positive on the background, each with score 0.9 and its exact mask."""

    def __init__(self, frames, ids, occluder):
        self.index = {f.tobytes(): t for t, f in enumerate(frames)}
        self.ids, self.occluder = ids, occluder
        self.background = np.zeros((H, W), bool)
        self.background[70:86, 10:26] = True

    def predict(self, images):
        out = []
        for img in images:
            t = self.index[img.tobytes()]
            masks = [self.occluder, self.background]
            if (self.ids[t] == 1).sum() >= 12:
                masks.append(self.ids[t] == 1)
            m = np.stack(masks)
            out.append({"masks": m, "mask_probs": m.astype(np.float32),
                        "scores": np.full(len(masks), 0.9, np.float32),
                        "labels": np.ones(len(masks), np.int64),
                        "boxes": np.zeros((len(masks), 4), np.float32)})
        return out


def test_scene_has_a_full_occlusion():
    _, ids, _ = occlusion_scene()
    area = (ids == 1).sum((1, 2))
    assert area[0] == 18 * 18 and (area[13:18] == 0).all() and area[26:].min() == 18 * 18


def test_redetect_keeps_identity_through_full_occlusion():
    frames, ids, occ = occlusion_scene()
    det = FakeDetector(frames, ids, occ)
    pred = propagate_redetect(frames, ids[0], model=det)
    assert pred.shape == ids.shape and pred.dtype == np.uint8
    assert np.array_equal(pred[0], ids[0])
    # 1. While the target is hidden, nothing is labelled (the flow alone would slide onto the occluder).
    assert all((pred[t] == 1).sum() == 0 for t in range(13, 18))
    # 2. The re-appearing target is found again by its colours, not the false positive or occluder.
    for t in range(26, 30):
        assert jaccard(ids[t] == 1, pred[t] == 1) >= 0.8
    assert not (pred[:, det.background] == 1).any()
    # 3. The flow method, by contrast, cannot tell the occluder from the target.
    flow = METHODS["flow"](frames, ids[0])
    assert np.mean([jaccard(ids[t] == 1, flow[t] == 1) for t in range(13, 30)]) < \
        np.mean([jaccard(ids[t] == 1, pred[t] == 1) for t in range(13, 30)])


def test_redetect_without_detections_is_flow_with_occlusion_test():
    frames, ids, occ = occlusion_scene(10)

    class Blind:
        def predict(self, images):
            z = np.zeros((0, H, W))
            return [{"masks": z.astype(bool), "mask_probs": z.astype(np.float32), "scores": np.zeros(0),
                     "labels": np.zeros(0, np.int64), "boxes": np.zeros((0, 4))} for _ in images]

    # Before the occlusion starts, the two agree exactly.
    assert np.array_equal(propagate_redetect(frames, ids[0], model=Blind()), METHODS["flow"](frames, ids[0]))


def test_bhattacharyya():
    p = np.array([0.5, 0.5, 0.0])
    assert bhattacharyya(p, p) == pytest.approx(1.0)
    assert bhattacharyya(p, np.array([0.0, 0.0, 1.0])) == 0.0
    assert bhattacharyya(p, np.array([1.0, 0.0, 0.0])) == pytest.approx(np.sqrt(0.5))


# ------------------------------------------------------------------------------------------- osvos
def test_augment_identity_and_flip_conventions():
    rng = np.random.default_rng(0)
    frames, ids, _ = occlusion_scene(1)
    same = dict(scale=(1.0, 1.0), max_angle=0.0, max_shift=0.0, colour=0.0)
    img, lab = augment_first_frame(frames[0], ids[0], 3, rng, flip=False, **same)
    assert np.array_equal(img[1], frames[0]) and np.array_equal(lab[2], ids[0])
    # A flip maps pixel centre x + ½ to W − (x + ½): column x to column W − 1 − x, exactly.
    img, lab = augment_first_frame(frames[0], ids[0], 40, rng, flip=True, **same)
    flipped = [i for i in range(1, 40) if not np.array_equal(lab[i], ids[0])]
    assert flipped and all(np.array_equal(lab[i], ids[0][:, ::-1]) for i in flipped)
    assert all(np.array_equal(img[i], frames[0][:, ::-1]) for i in flipped)
    # Random copies: the IDs are those of the transformed image (the red target stays red).
    img, lab = augment_first_frame(frames[0], ids[0], 6, rng)
    for i in range(6):
        red = img[i][lab[i] == 1].astype(int)
        assert red.size and (red[:, 0] > red[:, 1] + 60).mean() > 0.95


@pytest.fixture(scope="module")
def shapes_model():
    try:
        return resolve_model()
    except FileNotFoundError as exc:  # pragma: no cover - the model is shipped in data/
        pytest.fail(str(exc))


def test_relabelled_copy_takes_rows_of_the_source_classes(shapes_model):
    net = _relabelled_copy(shapes_model, [3, 1])
    a, b = shapes_model.state_dict(), net.state_dict()
    assert net.config.num_classes == 3
    cls = "roi_heads.box_predictor.cls_score.weight"
    assert np.array_equal(b[cls], a[cls][[0, 3, 1]])
    box = "roi_heads.box_predictor.bbox_pred.weight"
    assert np.array_equal(b[box][4:8], a[box][12:16]) and np.array_equal(b[box][8:12], a[box][4:8])
    mask = "roi_heads.mask_predictor.mask_fcn_logits.bias"
    assert np.array_equal(b[mask], a[mask][[0, 3, 1]])
    assert np.array_equal(a["backbone.body.conv1.weight"], b["backbone.body.conv1.weight"])


def test_heads_backward_without_feature_gradients_gives_the_same_parameter_gradients(shapes_model):
    """osvos trains the RoI heads through public methods only: the sample size comes from the copy's
    config, and ``RoIHeads.backward(features_grad=False)`` skips RoIAlign's backward, nothing else."""
    clip = make_clip(7, num_frames=8)
    net = _relabelled_copy(shapes_model, [1, 2], rois_per_image=16)
    assert net.config.roi_heads.batch_size_per_image == 16
    from minimaskrcnn.datasets.shapes import masks_to_boxes

    masks = np.stack([clip.ids[0] == j for j in (1, 2)])
    target = {"boxes": masks_to_boxes(masks), "labels": np.array([1, 2]), "masks": masks}
    grads = []
    for flag in (True, False):
        net.clear_cache()
        for p in net.parameters():
            p.grad[...] = 0
        net.forward_train([clip.frames[0]], [target], np.random.default_rng(0))
        out = net.roi_heads.backward(features_grad=flag)
        assert (out is None) == (not flag)
        grads.append({n: p.grad.copy() for n, p in net.named_parameters() if n.startswith("roi_heads.")})
    net.clear_cache()
    assert all(np.array_equal(grads[0][n], grads[1][n]) for n in grads[0])
    assert any(np.abs(g).sum() > 0 for g in grads[0].values())


def test_finetune_lowers_the_loss_and_leaves_the_model_alone(shapes_model):
    clip = make_clip(0, num_frames=8)
    before = {k: v.copy() for k, v in shapes_model.state_dict().items()}
    net, history = finetune_first_frame(shapes_model, clip.frames[0], clip.ids[0], steps=12, num_augment=6)
    assert len(history) == 12 and net is not shapes_model
    total = [sum(h.values()) for h in history]
    assert np.mean(total[-4:]) < 0.8 * np.mean(total[:4])
    after = shapes_model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    # Only the RoI heads moved.
    tuned = net.state_dict()
    assert np.array_equal(tuned["backbone.fpn.layer_blocks.0.0.weight"],
                          before["backbone.fpn.layer_blocks.0.0.weight"])
    key = "roi_heads.mask_head.0.0.weight"
    assert not np.array_equal(tuned[key], before[key])


def test_detector_methods_on_a_short_clip(shapes_model):
    clip = make_clip(7, num_frames=10)  # two objects
    for name, opts in (("redetect", {}), ("osvos", dict(steps=3, num_augment=4))):
        pred = propagate(name, clip.frames, clip.ids[0], model=shapes_model, **opts)
        assert pred.shape == clip.ids.shape and pred.dtype == np.uint8
        assert np.array_equal(pred[0], clip.ids[0])
        assert pred.max() <= clip.num_objects


# ------------------------------------------------------------------------------------------- errors
def test_bad_inputs_and_missing_checkpoint(tmp_path):
    frames, ids, _ = occlusion_scene(3)
    missing = str(tmp_path / "no_model.npz")
    for fn in (propagate_redetect, propagate_osvos):
        with pytest.raises(ValueError, match="size"):
            fn(frames, ids[0][:-1], checkpoint=missing)
        with pytest.raises(ValueError, match="empty"):
            fn(frames, np.zeros((H, W), bool), checkpoint=missing)
        with pytest.raises(FileNotFoundError, match="no trained Mask R-CNN"):
            fn(frames, ids[0], checkpoint=missing)
    with pytest.raises(TypeError, match="predict"):
        propagate_redetect(frames, ids[0], model=object())
    with pytest.raises(ValueError, match="either"):
        resolve_model(model=FakeDetector(frames, ids, ids[0] > 0), checkpoint=missing)
    with pytest.raises(TypeError, match="MaskRCNN"):
        propagate_osvos(frames, ids[0], model=FakeDetector(frames, ids, ids[0] > 0))


def test_finetune_only_the_chosen_layers(shapes_model):
    clip = make_clip(0, num_frames=8)
    before = shapes_model.state_dict()
    net, history = finetune_first_frame(shapes_model, clip.frames[0], clip.ids[0], steps=2, num_augment=2,
                                        train_layers=("rpn", "mask_predictor"))
    assert set(history[0]) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg",
                               "loss_mask"}
    after = net.state_dict()
    assert not np.array_equal(after["rpn.head.conv.0.0.weight"], before["rpn.head.conv.0.0.weight"])
    assert not np.array_equal(after["roi_heads.mask_predictor.conv5_mask.weight"],
                              before["roi_heads.mask_predictor.conv5_mask.weight"])
    assert np.array_equal(after["roi_heads.mask_head.0.0.weight"], before["roi_heads.mask_head.0.0.weight"])
    with pytest.raises(ValueError, match="train_layers"):
        finetune_first_frame(shapes_model, clip.frames[0], clip.ids[0], steps=1, train_layers=("backbone",))
