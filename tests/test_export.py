"""Export to torchvision: our resnet50_fpn model as a state_dict that torchvision's own builder loads.

The model is a K-class one: torchvision's weights loaded with ``num_classes=K`` (new predictors) whose
predictors then get K rows of the well-separated 91-class predictors of
tests/model/test_torchvision_weights.py (background and the four labels torchvision finds most
often on the photo), so its detections are decided by clear margins. Exported, the file loads into
``maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=K)`` with ``strict=True``,
and torchvision's detections on the photo are ours.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from minimaskrcnn.ops.boxes import box_iou
from minimaskrcnn.pth import read_state_dict
from minimaskrcnn.weights import export_torchvision, load_torchvision_weights, save_model
from tests.model.test_torchvision_weights import OVERRIDES, saved  # noqa: F401  (a fixture)

pytestmark = pytest.mark.slow
TOP = 10  # detections compared one by one


def k_class_model(path, ref):
    labels, counts = np.unique(ref["labels"], return_counts=True)
    keep = [0] + sorted(labels[np.argsort(-counts)][:4].tolist())  # background first, as the model's 0
    model = load_torchvision_weights(path, num_classes=len(keep), **OVERRIDES)
    full = read_state_dict(path)
    rows4 = np.concatenate([np.arange(4 * c, 4 * c + 4) for c in keep])
    state = model.state_dict()
    for key in state:
        if key.startswith("roi_heads.box_predictor.bbox_pred."):
            state[key] = full[key][rows4]
        elif key.startswith(("roi_heads.box_predictor.cls_score.",
                             "roi_heads.mask_predictor.mask_fcn_logits.")):
            state[key] = full[key][keep]
        elif key.startswith("roi_heads.mask_predictor."):
            state[key] = full[key]
    model.load_state_dict(state)
    return model, keep


def test_export_round_trip_into_torchvisions_builder(saved, tmp_path, torch, torchvision):  # noqa: F811
    path, _, ref, image = saved
    model, keep = k_class_model(path, ref)
    k = len(keep)
    out = tmp_path / "exported.pth"
    info = export_torchvision(model, out)
    assert info["num_classes"] == k and not os.path.exists(f"{out}.tmp")

    tv = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                                             num_classes=k, **OVERRIDES)
    tv.load_state_dict(torch.load(out, weights_only=True), strict=True)
    tv.eval()
    for name, t in tv.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(t.numpy(), model.state_dict()[name], err_msg=name)

    det = model.predict([image])[0]
    with torch.no_grad():
        tdet = tv([torch.from_numpy(image).permute(2, 0, 1).float() / 255])[0]
    tb, tl, ts = tdet["boxes"].numpy(), tdet["labels"].numpy(), tdet["scores"].numpy()
    tm = tdet["masks"][:, 0].numpy() > 0.5
    assert tb.shape[0] >= TOP and det["boxes"].shape[0] == tb.shape[0]
    assert len(set(tl[:TOP].tolist())) >= 3  # the setup is meaningful: labels vary
    ious = box_iou(tb[:TOP].astype(np.float64), det["boxes"].astype(np.float64))
    for i in range(TOP):  # each of torchvision's best detections is one of ours: label, box, score, mask
        same = np.flatnonzero(det["labels"] == tl[i])
        assert same.size, (i, tl[i])
        j = same[np.argmax(ious[i, same])]
        assert ious[i, j] >= 0.98, (i, ious[i, j])
        assert abs(det["scores"][j] - ts[i]) <= 1e-3, (i, det["scores"][j], ts[i])
        inter = np.logical_and(det["masks"][j], tm[i]).sum()
        union = np.logical_or(det["masks"][j], tm[i]).sum()
        assert union > 0 and inter / union >= 0.95, (i, inter / max(union, 1))


def test_export_command_and_its_errors(saved, tmp_path, torch, capsys):  # noqa: F811
    """``minimaskrcnn export --checkpoint model.npz --torchvision OUT.pth``; the shapes model (another
    architecture) and a machine without torch get one ``error:`` line and exit status 2."""
    from minimaskrcnn.cli import main
    from minimaskrcnn.weights import SHIPPED_MODEL

    path = saved[0]
    npz = tmp_path / "model.npz"
    save_model(npz, load_torchvision_weights(path, num_classes=3, **OVERRIDES))
    out = tmp_path / "tv.pth"
    resume = tmp_path / "resume.pth"
    assert main(["export", "--checkpoint", str(npz), "--torchvision", str(out), "--reference-resume",
                 str(resume), "--lr", "0.01", "--lr-steps", "8", "11"]) == 0
    printed = capsys.readouterr().out
    assert "num_classes=3" in printed and "--trainable-backbone-layers 3" in printed
    assert torch.load(resume, weights_only=True)["optimizer"]["param_groups"][0]["lr"] == 0.01
    sd = torch.load(out, weights_only=True)
    assert sd["roi_heads.box_predictor.cls_score.weight"].shape == (3, 1024)

    if SHIPPED_MODEL.exists():
        bad = ["export", "--checkpoint", str(SHIPPED_MODEL), "--torchvision", str(tmp_path / "x.pth")]
        assert main(bad) == 2
        err = capsys.readouterr().err
        assert "error: only the resnet50_fpn architecture" in err and "backbone.arch" in err
        assert not (tmp_path / "x.pth").exists()

    argv = ["export", "--checkpoint", str(npz), "--torchvision", str(tmp_path / "y.pth")]
    code = ("import sys; sys.modules['torch'] = None\n"
            f"from minimaskrcnn.cli import main\nsys.exit(main({argv!r}))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "error: exporting to torchvision needs torch" in res.stderr and "Traceback" not in res.stderr


def test_reference_resume_checkpoint_restores_as_torchvisions_reference_script(saved, tmp_path, torch):  # noqa: F811
    """The lines of torchvision's references/detection/train.py that ``--resume`` runs, on the model
    that script builds with ``--weights-backbone`` (FrozenBatchNorm) and ``--trainable-backbone-layers
    2``: everything loads, the run starts at epoch 0 with our lr and milestones."""
    from minimaskrcnn.model.torch_reference import torchvision_resnet50_fpn
    from minimaskrcnn.weights import export_reference_checkpoint

    model = load_torchvision_weights(saved[0], num_classes=3, trainable_backbone_layers=2, **OVERRIDES)
    out = tmp_path / "resume.pth"
    info = export_reference_checkpoint(model, out, lr=0.01, lr_steps=(8, 11))
    assert info["trainable"] == len(model.trainable_parameters()) and info["trainable_backbone_layers"] == 2

    tv = torchvision_resnet50_fpn(3, 2)
    params = [p for p in tv.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.02, momentum=0.9, weight_decay=1e-4)
    lr_scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[16, 22], gamma=0.1)
    checkpoint = torch.load(out, map_location="cpu", weights_only=True)
    tv.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
    assert checkpoint["epoch"] + 1 == 0
    assert optimizer.param_groups[0]["lr"] == 0.01 and sorted(lr_scheduler.milestones) == [8, 11]
    for name, t in tv.state_dict().items():
        np.testing.assert_array_equal(t.numpy(), model.state_dict()[name], err_msg=name)

    wrong = torch.optim.SGD(list(tv.parameters()), lr=0.02)  # all 5 layers: another parameter count
    with pytest.raises(ValueError):
        wrong.load_state_dict(checkpoint["optimizer"])
