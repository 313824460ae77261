"""Acceptance: torchvision's maskrcnn_resnet50_fpn, saved by torch.save, runs in NumPy with the same results.

Real COCO weights cannot be fetched here, so torchvision's model is built at random initialisation
(as ``maskrcnn_resnet50_fpn`` builds it for pretrained weights: FrozenBatchNorm2d in the body) and
made *well separated*, so that a comparison of top detections means something:

- the frozen norms get random statistics and affine parameters (not the trivial 0/1);
- the RPN objectness and the mask logits are scaled x30, so proposals and mask pixels are decided
  by clear margins, not by float32 rounding;
- the class logits would otherwise rank the same class first for nearly every RoI (random fc7
  features share a few dominant directions): the top 4 right singular vectors of the fc7 features
  of this photo's proposals are projected out of ``cls_score.weight``, which is then scaled x200, so
  the 20 best detections carry 15 different labels with scores from 0.93 down to 0.44.

The photo is matplotlib's sample ``grace_hopper.jpg`` (600 x 512), run at ``min_size=256`` (300 x 256,
padded to 320 x 256) to keep the test short; both sides get the same torchvision arguments.
"""

import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from minimaskrcnn.model.transform import GeneralizedRCNNTransform
from minimaskrcnn.ops.boxes import box_iou
from minimaskrcnn.weights import COCO_CATEGORY_NAMES, load_torchvision_weights

OVERRIDES = {"min_size": 256, "box_detections_per_img": 50}
TOP = 20  # detections compared one by one

pytestmark = pytest.mark.slow


def photo() -> np.ndarray:
    import matplotlib.cbook as cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        return np.asarray(im.convert("RGB")).copy()


@pytest.fixture(scope="module")
def saved(torch, torchvision, tmp_path_factory):
    """(path of the .pth, torchvision model, its outputs and intermediates on the photo)."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(0)
    body = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    g = torch.Generator().manual_seed(0)
    for m in body.modules():
        if isinstance(m, FrozenBatchNorm2d):
            c = m.weight.shape[0]
            m.weight.copy_(torch.rand(c, generator=g) * 0.6 + 0.4)
            m.bias.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
    tv = MaskRCNN(_resnet_fpn_extractor(body, 3), num_classes=91, **OVERRIDES).eval()
    image = photo()
    with torch.no_grad():
        tv.rpn.head.cls_logits.weight.mul_(30)
        tv.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(30)
        # GeneralizedRCNN.forward, step by step, to keep the intermediates.
        images, _ = tv.transform([torch.from_numpy(image).permute(2, 0, 1).float() / 255])
        features = tv.backbone(images.tensors)
        proposals, _ = tv.rpn(images, features)
        rh = tv.roi_heads
        fc7 = rh.box_head(rh.box_roi_pool(features, proposals, images.image_sizes))
        top = torch.linalg.svd(fc7, full_matrices=False)[2][:4]  # (4, 1024), orthonormal rows
        w = rh.box_predictor.cls_score.weight
        w.sub_((w @ top.T) @ top).mul_(200)
        dets, _ = rh(features, proposals, images.image_sizes)
        dets = tv.transform.postprocess(dets, images.image_sizes, [image.shape[:2]])[0]
    path = tmp_path_factory.mktemp("tv") / "maskrcnn_random.pth"
    torch.save(tv.state_dict(), path)
    out = {"batch": images.tensors.numpy(), "sizes": images.image_sizes,
           "features": {k: v.numpy() for k, v in features.items()}, "proposals": proposals[0].numpy(),
           "boxes": dets["boxes"].numpy(), "labels": dets["labels"].numpy(), "scores": dets["scores"].numpy(),
           "masks": dets["masks"][:, 0].numpy() > 0.5}
    return path, tv, out, image


def test_outputs_equal_torchvision(saved):
    path, _, ref, image = saved
    model = load_torchvision_weights(path, **OVERRIDES)
    assert model.config.class_names == COCO_CATEGORY_NAMES
    assert model.config.transform.min_size == 256 and model.config.roi_heads.detections_per_img == 50

    # 1. transform, backbone + FPN, proposals
    x, sizes, _, _ = GeneralizedRCNNTransform(model.config.transform, model.dtype)([image])
    assert x.shape == ref["batch"].shape == (1, 3, 320, 256) and sizes == [tuple(s) for s in ref["sizes"]]
    assert np.abs(x - ref["batch"]).max() < 1e-3  # torch's bilinear source index is float32 arithmetic
    with model.no_grad():
        features = model.backbone(x)
        proposals, _ = model.rpn(features, x.shape[-2:], sizes)
    assert len(features) == len(ref["features"]) == 5
    for f, (name, t) in zip(features, ref["features"].items()):
        assert f.shape == t.shape, name
        assert np.linalg.norm(f - t) <= 1e-4 * np.linalg.norm(t), name
    p, tp = proposals[0], ref["proposals"]
    assert p.shape == tp.shape == (1000, 4)
    best = box_iou(tp[:300].astype(np.float64), p[:300].astype(np.float64)).max(axis=1)
    assert best.min() >= 0.99  # every one of torchvision's best 300 proposals is among ours

    # 2. detections: the same count, and each of the TOP best matched by label, box, score and mask
    det = model.predict([image])[0]
    n = ref["boxes"].shape[0]
    assert n >= TOP and det["boxes"].shape[0] == n
    assert len(set(ref["labels"][:TOP].tolist())) >= 5  # the setup is meaningful: labels vary
    assert ref["scores"][0] > 0.3 and ref["scores"][TOP - 1] < ref["scores"][0] - 0.1  # and scores spread
    assert det["masks"].shape == (n,) + image.shape[:2] and det["masks"].dtype == bool
    ious = box_iou(ref["boxes"][:TOP].astype(np.float64), det["boxes"].astype(np.float64))
    for i in range(TOP):
        same = np.flatnonzero(det["labels"] == ref["labels"][i])
        assert same.size, f"torchvision's detection {i} (label {ref['labels'][i]}) has no match"
        j = same[np.argmax(ious[i, same])]
        assert ious[i, j] >= 0.98, (i, ious[i, j])
        assert abs(det["scores"][j] - ref["scores"][i]) <= 1e-3, (i, det["scores"][j], ref["scores"][i])
        inter = np.logical_and(det["masks"][j], ref["masks"][i]).sum()
        union = np.logical_or(det["masks"][j], ref["masks"][i]).sum()
        assert union > 0 and inter / union >= 0.95, (i, inter / max(union, 1))
    np.testing.assert_array_equal(det["labels"][:TOP], ref["labels"][:TOP])  # and in the same order


def test_loads_without_torch(saved, tmp_path, torch):
    """In a process where ``import torch`` fails: load the file — in torch's legacy (pre-1.6) format,
    the format of torchvision's released COCO weights — and run the backbone on a fixed input; the
    maps equal torchvision's backbone on the same input."""
    _, tv, _, _ = saved
    path = tmp_path / "legacy.pth"
    torch.save(tv.state_dict(), path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    out = tmp_path / "features.npz"
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
        "import numpy as np\n"
        "from minimaskrcnn.weights import load_torchvision_weights\n"
        f"model = load_torchvision_weights({str(path)!r}, min_size=256)\n"
        "assert sys.modules['torch'] is None\n"
        "x = np.random.default_rng(0).standard_normal((1, 3, 64, 96)).astype(np.float32)\n"
        "with model.no_grad():\n"
        "    feats = model.backbone(x)\n"
        f"np.savez({str(out)!r}, *feats)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert res.returncode == 0, res.stderr[-2000:]
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, 64, 96)).astype(np.float32))
    with torch.no_grad():
        expected = list(tv.backbone(x).values())
    with np.load(out, allow_pickle=False) as got:
        assert len(got.files) == len(expected) == 5
        for i, e in enumerate(expected):
            g = got[f"arr_{i}"]
            assert g.shape == tuple(e.shape)
            assert np.linalg.norm(g - e.numpy()) <= 1e-4 * np.linalg.norm(e.numpy()), i


def test_predict_cli_with_torchvision_weights(saved, tmp_path, capsys):
    """``minimaskrcnn predict photo.jpg --torchvision-weights FILE --set min_size=256``: COCO names are
    printed for the detections above the threshold, and the overlay PNG is written."""
    import matplotlib.cbook as cbook

    from minimaskrcnn.cli import main

    path, _, ref, _ = saved
    jpg = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    out = tmp_path / "pred"
    assert main(["predict", str(jpg), "--torchvision-weights", str(path), "--set", "min_size=256",
                 "--set", "box_detections_per_img=50", "--score-thresh", "0.3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (out / "grace_hopper_pred.png").stat().st_size > 10_000
    assert f"{int((ref['scores'] >= 0.3).sum())} instance(s)" in printed
    assert COCO_CATEGORY_NAMES[int(ref["labels"][0])] in printed  # the best detection, by its COCO name
    assert main(["predict", str(jpg), "--torchvision-weights", str(path), "--set", "min_size"]) == 2
    assert "minimaskrcnn predict: error: --set expects NAME=VALUE" in capsys.readouterr().err
