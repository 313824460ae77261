import numpy as np
import pytest
from test_equivalence import SIZE, tiny_batch, tiny_config

from minimaskrcnn.model import MaskRCNN
from minimaskrcnn.model.torch_reference import build_torch_maskrcnn, copy_weights


def test_predict_equals_torchvision(torch, torchvision):
    """Inference (eval mode): same detections, scores and pasted mask probabilities as torchvision."""
    cfg = tiny_config(**{"roi_heads.detections_per_img": 20})
    images, _ = tiny_batch(seed=13)
    model = MaskRCNN(cfg, np.random.default_rng(2)).astype(np.float64)
    # sharpen the class scores so the score threshold and NMS see well-separated values
    model.roi_heads.box_predictor.cls_score.weight.data *= 30
    ours = model.predict(images)
    tm = build_torch_maskrcnn(cfg, SIZE)
    copy_weights(model, tm)
    tm.eval()
    with torch.no_grad():
        theirs = tm([torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))) for im in images])
    for o, t in zip(ours, theirs):
        assert o["boxes"].shape[0] > 0
        np.testing.assert_array_equal(o["labels"], t["labels"].numpy())
        np.testing.assert_allclose(o["boxes"], t["boxes"].numpy(), rtol=1e-6, atol=1e-4)
        np.testing.assert_allclose(o["scores"], t["scores"].numpy(), rtol=1e-6)
        np.testing.assert_allclose(o["mask_probs"], t["masks"][:, 0].numpy(), atol=1e-6)
        assert o["masks"].dtype == bool and o["masks"].shape == (o["boxes"].shape[0], SIZE, SIZE)


def test_predict_uint8_and_structure():
    model = MaskRCNN(tiny_config(), np.random.default_rng(0))
    img = (np.random.default_rng(0).random((SIZE, SIZE + 10, 3)) * 255).astype(np.uint8)
    (det,) = model.predict([img])
    assert det["boxes"].dtype == np.float32 and det["labels"].dtype == np.int64
    assert det["masks"].shape[1:] == (SIZE, SIZE + 10) and det["mask_probs"].dtype == np.float32
    assert np.all(det["boxes"][:, 2] <= SIZE + 10) and np.all(np.diff(det["scores"]) <= 0)


def test_bad_inputs():
    model = MaskRCNN(tiny_config(), np.random.default_rng(0))
    images, targets = tiny_batch()
    with pytest.raises(ValueError, match="2 images but 1 targets"):
        model.forward_train(images, targets[:1])
    with pytest.raises(TypeError, match=r"images\[0\] must be uint8"):
        model.predict([np.zeros((SIZE, SIZE, 3), np.int64)])
    with pytest.raises(ValueError, match=r"images\[1\] must have shape"):
        model.predict([images[0], images[1][..., 0]])
    bad = [dict(t) for t in targets]
    bad[0]["labels"] = np.full_like(bad[0]["labels"], 9)
    with pytest.raises(ValueError, match="num_classes"):
        model.forward_train(images, bad)
    # the transform takes box-only targets (as torchvision's); training needs the labels
    no_labels = [{k: v for k, v in t.items() if k != "labels"} for t in targets]
    with pytest.raises(ValueError, match=r"targets\[0\] has no 'labels'"):
        model.forward_train(images, no_labels)
    # predict refuses a float image in [0, 255] instead of returning nothing
    with pytest.raises(ValueError, match=r"images\[0\] is float64 with values in \[0, 255\]"):
        model.predict([np.full((SIZE, SIZE, 3), 255.0) * (np.arange(SIZE) % 2)[:, None, None]])


def test_degenerate_boxes_dropped_and_empty_images_train():
    model = MaskRCNN(tiny_config(), np.random.default_rng(0))
    images, targets = tiny_batch()
    t = dict(targets[0])
    t["boxes"] = np.concatenate([t["boxes"], [[5.0, 5.0, 5.0, 20.0]]])
    t["labels"] = np.concatenate([t["labels"], [1]])
    t["masks"] = np.concatenate([t["masks"], np.zeros((1, SIZE, SIZE), bool)])
    with pytest.warns(UserWarning, match="dropped 1 ground-truth"):
        losses = model.forward_train(images, [t, targets[1]])
    assert all(np.isfinite(v) for v in losses.values())
    model.backward()
    empty = {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, np.int64),
             "masks": np.zeros((0, SIZE, SIZE), bool)}
    losses = model.forward_train(images, [empty, empty])
    assert losses["loss_mask"] == 0 and losses["loss_box_reg"] == 0 and losses["loss_rpn_box_reg"] == 0
    model.zero_grad()
    model.backward()
    grads = dict((k, p.grad) for k, p in model.named_parameters())
    assert np.all(grads["roi_heads.mask_head.0.0.weight"] == 0)
    assert np.any(grads["rpn.head.cls_logits.weight"] != 0)


def test_mask_losses_equal_torch(torch, rng):
    """sigmoid: BCE on the GT class channel; softmax: cross-entropy against the distribution that
    puts t on the GT class channel and 1 - t on background (torch's probability-target form)."""
    import torch.nn.functional as TF

    from minimaskrcnn.model.roi_heads import mask_loss

    K, C, M = 5, 4, 6
    logits = rng.standard_normal((K, C, M, M)) * 3
    labels = rng.integers(1, C, K)
    t = rng.random((K, M, M)) * (rng.random((K, M, M)) < 0.7)
    for kind in ("sigmoid", "softmax"):
        loss, d = mask_loss(logits, labels, t, kind)
        z = torch.from_numpy(logits).requires_grad_()
        if kind == "sigmoid":
            picked = z[torch.arange(K), torch.from_numpy(labels)]
            ref = TF.binary_cross_entropy_with_logits(picked, torch.from_numpy(t))
        else:
            q = np.zeros_like(logits)
            q[np.arange(K), labels] = t
            q[:, 0] += 1 - t
            ref = TF.cross_entropy(z, torch.from_numpy(q))  # mean over the K·M·M pixels
        ref.backward()
        assert abs(loss - ref.item()) <= 1e-12 * abs(ref.item())
        np.testing.assert_allclose(d, z.grad.numpy(), rtol=1e-10, atol=1e-15)
    loss, d = mask_loss(logits[:0], labels[:0], t[:0], "sigmoid")
    assert loss == 0 and d.shape == (0, C, M, M)


def test_roi_heads_with_no_roi_at_all():
    """No proposal and no GT: every RoI loss is 0 (not NaN) and the backward gives zero gradients."""
    model = MaskRCNN(tiny_config(), np.random.default_rng(0))
    images, _ = tiny_batch()
    x, sizes, _, _ = model._transform()(images)
    feats = model.backbone(x)
    empty = {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
             "masks": np.zeros((0, SIZE, SIZE), bool)}
    _, losses = model.roi_heads(feats[:4], [np.zeros((0, 4), np.float32)] * 2, sizes, [empty] * 2,
                                np.random.default_rng(0))
    assert losses == {"loss_classifier": 0.0, "loss_box_reg": 0.0, "loss_mask": 0.0}
    grads = model.roi_heads.backward()
    assert all(np.all(g == 0) for g in grads)
    model.clear_cache()


def test_mask_targets_of_a_batch_equal_one_call_per_image():
    """Consecutive images whose masks have one size share a RoIAlign call; the targets equal those of
    one ``project_masks_on_boxes`` call per image, in order, also when the sizes change mid-batch."""
    from minimaskrcnn.ops.masks import project_masks_on_boxes

    model = MaskRCNN(tiny_config(), np.random.default_rng(0))
    rng = np.random.default_rng(5)
    positives = []
    for k, p, size in ((2, 3, (40, 48)), (3, 2, (40, 48)), (1, 4, (32, 32)), (2, 1, (40, 48))):
        masks = rng.random((k,) + size) > 0.5
        xy = rng.uniform(0, 20, (p, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(2, 12, (p, 2))], axis=1).astype(np.float32)
        positives.append((masks, boxes, rng.integers(0, k, p)))
    got = model.roi_heads._mask_targets(positives)
    assert len(got) == 3  # runs: the two 40×48 images, the 32×32 one, the last 40×48 one
    M = 2 * model.roi_heads.mask_cfg.output_size
    expected = [project_masks_on_boxes(m, b, M, matched_idxs=i,
                                       aligned=model.roi_heads.mask_cfg.targets_aligned)
                for m, b, i in positives]
    np.testing.assert_array_equal(np.concatenate(got), np.concatenate(expected))
    assert model.roi_heads._mask_targets([]) == []
