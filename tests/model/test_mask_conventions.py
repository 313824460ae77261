"""The mask branch's switches: softmax inference rule, aligned mask targets, paste convention."""

import numpy as np
import pytest
from test_equivalence import tiny_batch, tiny_config

from minimaskrcnn.config import resnet50_fpn, shapes, with_overrides
from minimaskrcnn.model import MaskRCNN
from minimaskrcnn.model.roi_heads import softmax_mask_scores


def test_softmax_rules_golden():
    # Four pixels of one detection of class k = 1, C = 4 channels (0 = background); logits per pixel:
    z = np.array([[0.0, 1.0, 0.8, 0.8],   # k wins, but p_k = e / (1 + e + 2 e^0.8) = 0.333 < 0.5
                  [0.0, 1.0, 1.5, 0.0],   # class 2 wins; k beats background only
                  [2.0, 1.0, 0.0, 0.0],   # background wins
                  [0.0, 3.0, 0.0, 0.0]])  # k holds most of the probability: p_k = e^3 / (e^3 + 3) = 0.870
    logits = z.T.reshape(1, 4, 2, 2)  # (D=1, C=4, 2, 2); pixel (i, j) is row 2 i + j of z
    e = np.exp
    expected = {
        "p_k": [e(1) / (1 + e(1) + 2 * e(0.8)), e(1) / (2 + e(1) + e(1.5)), e(1) / (e(2) + e(1) + 2),
                e(3) / (e(3) + 3)],
        # sigmoid(z_k - max_{j != k} z_j): rivals 0.8, 1.5, 2, 0
        "argmax": [1 / (1 + e(-0.2)), 1 / (1 + e(0.5)), 1 / (1 + e(1)), 1 / (1 + e(-3))],
        # sigmoid(z_k - z_0): z_0 = 0, 0, 2, 0
        "k_vs_bg": [1 / (1 + e(-1)), 1 / (1 + e(-1)), 1 / (1 + e(1)), 1 / (1 + e(-3))],
    }
    kept = {"p_k": [0, 0, 0, 1], "argmax": [1, 0, 0, 1], "k_vs_bg": [1, 1, 0, 1]}
    for rule, values in expected.items():
        scores = softmax_mask_scores(logits, np.array([1]), rule)
        assert scores.shape == (1, 2, 2)
        np.testing.assert_allclose(scores.ravel(), values, rtol=1e-12)
        np.testing.assert_array_equal(scores.ravel() > 0.5, np.array(kept[rule], dtype=bool))
    with pytest.raises(ValueError, match="rule must be"):
        softmax_mask_scores(logits, np.array([1]), "max")


def test_softmax_argmax_rule_equals_the_argmax(rng):
    logits = rng.normal(size=(5, 6, 7, 7)) * 3
    labels = rng.integers(1, 6, 5)
    wins = logits.argmax(axis=1) == labels[:, None, None]
    np.testing.assert_array_equal(softmax_mask_scores(logits, labels, "argmax") > 0.5, wins)


def test_defaults_and_validation():
    for c in (resnet50_fpn(), tiny_config()):
        assert c.mask.paste == "torchvision" and c.mask.targets_aligned is False
    assert resnet50_fpn().mask.softmax_rule == "p_k"
    for field, bad in (("mask.softmax_rule", "max"), ("mask.paste", "detectron2"),
                       ("mask.targets_aligned", 1)):
        with pytest.raises(ValueError, match=field):
            with_overrides(shapes(), **{field: bad})


@pytest.mark.parametrize("field,value,target,kwarg", [
    ("mask.paste", "continuous", "minimaskrcnn.model.mask_rcnn.paste_masks_in_image", "convention"),
    ("mask.targets_aligned", True, "minimaskrcnn.model.roi_heads.project_masks_on_boxes", "aligned"),
])
def test_switches_reach_the_ops(monkeypatch, field, value, target, kwarg):
    import importlib

    module_name, name = target.rsplit(".", 1)
    module = importlib.import_module(module_name)
    real, seen = getattr(module, name), []

    def spy(*args, **kwargs):
        seen.append(kwargs[kwarg])
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    images, targets = tiny_batch(seed=5)
    for v in (value, {"mask.paste": "torchvision", "mask.targets_aligned": False}[field]):
        seen.clear()
        model = MaskRCNN(tiny_config(**{field: v}), np.random.default_rng(0)).astype(np.float64)
        model.roi_heads.box_predictor.cls_score.weight.data *= 30  # some detections survive
        if field == "mask.paste":
            model.predict(images)
        else:
            model.forward_train(images, targets)
        assert seen and all(s == v for s in seen), (field, v, seen)


def test_softmax_rule_reaches_predict():
    # A softmax model's pasted mask probabilities follow the rule; with identical weights the "k_vs_bg"
    # score is >= the "p_k" one at every pixel (p_k + p_0 <= 1), so its masks contain the p_k masks.
    images, _ = tiny_batch(seed=5)
    out = {}
    for rule in ("p_k", "argmax", "k_vs_bg"):
        model = MaskRCNN(tiny_config(**{"mask.loss": "softmax", "mask.softmax_rule": rule}),
                         np.random.default_rng(0)).astype(np.float64)
        model.roi_heads.box_predictor.cls_score.weight.data *= 30
        out[rule] = model.predict(images)
    for a, b, c in zip(out["p_k"], out["argmax"], out["k_vs_bg"]):
        assert a["boxes"].shape[0] > 0
        np.testing.assert_array_equal(a["boxes"], c["boxes"])
        assert np.all(c["mask_probs"] >= a["mask_probs"] - 1e-12)
        assert np.all(b["mask_probs"] >= a["mask_probs"] - 1e-12)  # max_{j != k} p_j <= 1 - p_k
        assert not np.array_equal(a["mask_probs"], c["mask_probs"])
