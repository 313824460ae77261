import warnings

import numpy as np
import pytest

from minimaskrcnn.config import TransformConfig
from minimaskrcnn.model.transform import GeneralizedRCNNTransform


def _inputs(rng, shapes):
    images, targets = [], []
    for h, w in shapes:
        images.append(rng.random((h, w, 3)))
        x1, y1 = rng.uniform(0, w / 2), rng.uniform(0, h / 2)
        boxes = np.array([[x1, y1, x1 + w / 3, y1 + h / 3]])
        masks = np.zeros((1, h, w), dtype=bool)
        masks[0, int(y1):int(y1 + h / 3), int(x1):int(x1 + w / 3)] = True
        targets.append({"boxes": boxes, "labels": np.array([1]), "masks": masks})
    return images, targets


def test_transform_equals_torchvision(torch, torchvision, rng):
    from torchvision.models.detection.transform import GeneralizedRCNNTransform as TV

    cfg = TransformConfig(min_size=50, max_size=90)
    images, targets = _inputs(rng, [(37, 45), (60, 33)])
    ours = GeneralizedRCNNTransform(cfg, np.float64)
    batch, sizes, originals, tt = ours(images, targets)
    tv = TV(50, 90, list(cfg.image_mean), list(cfg.image_std)).double()
    tv_images = [torch.from_numpy(im.transpose(2, 0, 1).copy()) for im in images]
    tv_targets = [{"boxes": torch.from_numpy(t["boxes"]), "labels": torch.from_numpy(t["labels"]),
                   "masks": torch.from_numpy(t["masks"].astype(np.uint8))} for t in targets]
    il, tvt = tv(tv_images, tv_targets)
    assert sizes == [tuple(s) for s in il.image_sizes] and originals == [(37, 45), (60, 33)]
    np.testing.assert_allclose(batch, il.tensors.numpy(), rtol=0, atol=1e-12)
    for a, b in zip(tt, tvt):
        np.testing.assert_allclose(a["boxes"], b["boxes"].numpy(), rtol=1e-12)
        np.testing.assert_array_equal(a["masks"], b["masks"].numpy().astype(bool))
    back = ours.postprocess_boxes(tt[0]["boxes"], sizes[0], originals[0])
    np.testing.assert_allclose(back, targets[0]["boxes"], rtol=1e-6)


def test_no_resize_pads_to_32(rng):
    cfg = TransformConfig(resize=False)
    img = (rng.random((40, 70, 3)) * 255).astype(np.uint8)
    batch, sizes, _, _ = GeneralizedRCNNTransform(cfg)([img])
    assert batch.shape == (1, 3, 64, 96) and batch.dtype == np.float32 and sizes == [(40, 70)]
    assert np.all(batch[:, :, 40:] == 0) and np.all(batch[:, :, :, 70:] == 0)


def test_bad_inputs_and_degenerate_boxes(rng):
    t = GeneralizedRCNNTransform(TransformConfig(resize=False))
    img = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match=r"images\[0\] must have shape"):
        t([np.zeros((32, 32), np.uint8)])
    with pytest.raises(TypeError, match=r"images\[0\] must be uint8"):
        t([np.zeros((32, 32, 3), np.int32)])
    with pytest.raises(ValueError, match="2 images but 1 targets"):
        t([img, img], [{"boxes": np.zeros((0, 4)), "labels": np.zeros(0, np.int64)}])
    with pytest.raises(ValueError, match="2 boxes but 1 labels"):
        t([img], [{"boxes": np.ones((2, 4)), "labels": np.ones(1, np.int64)}])
    boxes = np.array([[1, 1, 10, 10], [5, 5, 5, 9], [40, 40, 50, 50]], dtype=np.float32)
    tg = {"boxes": boxes, "labels": np.array([1, 2, 3]), "masks": np.zeros((3, 32, 32), bool)}
    with pytest.warns(UserWarning, match="dropped 2 ground-truth"):
        _, _, _, out = t([img], [tg])
    assert out[0]["boxes"].shape == (1, 4) and out[0]["labels"].tolist() == [1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t([img], [{"boxes": np.zeros((0, 4)), "labels": np.zeros(0, np.int64)}])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_images_must_lie_in_unit_range(dtype):
    # torchvision's convention: float images in [0, 1], uint8 in [0, 255] (divided by 255 here).
    t = GeneralizedRCNNTransform(TransformConfig(resize=False))
    t([np.ones((8, 8, 3), dtype)])  # the ends of [0, 1] are fine
    t([np.zeros((8, 8, 3), dtype)])
    with pytest.raises(ValueError, match=r"images\[1\] is .* values in \[0, 255\]; a float image must lie "
                                         r"in \[0, 1\] \(it looks like \[0, 255\]"):
        t([np.zeros((8, 8, 3), dtype), np.full((8, 8, 3), 255, dtype) * np.eye(8, dtype=dtype)[..., None]])
    with pytest.raises(ValueError, match=r"images\[0\] is .* values in \[-0.5, 0.5\]; a float image"):
        t([np.full((8, 8, 3), 0.5, dtype) * np.sign(np.arange(-32, 32).reshape(8, 8, 1)).astype(dtype)])
    img = np.zeros((8, 8, 3), dtype)
    img[2, 3, 1] = np.nan
    with pytest.raises(ValueError, match=r"images\[0\] holds NaN or inf; a float image must lie in"):
        t([img])


def test_box_only_targets_as_torchvision(torch, torchvision, rng):
    # torchvision's transform needs only "boxes"; labels and masks are the model's business.
    from torchvision.models.detection.transform import GeneralizedRCNNTransform as TV

    cfg = TransformConfig(min_size=50, max_size=90)
    images, targets = _inputs(rng, [(37, 45)])
    box_only = [{"boxes": t["boxes"]} for t in targets]
    _, _, _, out = GeneralizedRCNNTransform(cfg, np.float64)(images, box_only)
    assert set(out[0]) == {"boxes"}
    tv = TV(50, 90, list(cfg.image_mean), list(cfg.image_std)).double()
    _, tv_out = tv([torch.from_numpy(images[0].transpose(2, 0, 1).copy())],
                   [{"boxes": torch.from_numpy(box_only[0]["boxes"])}])
    np.testing.assert_allclose(out[0]["boxes"], tv_out[0]["boxes"].numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match=r"targets\[0\] has no 'boxes'"):
        GeneralizedRCNNTransform(cfg)(images, [{"labels": np.array([1])}])
