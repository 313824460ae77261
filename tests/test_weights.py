"""Loading torchvision weights: argument mapping, COCO names, strict loading with every key named."""

import inspect
import os
import pickle
import zipfile

import numpy as np
import pytest

from minimaskrcnn.config import BackboneConfig, resnet50_fpn
from minimaskrcnn.model.resnet import ResNet
from minimaskrcnn.pth import UnsafePickleError
from minimaskrcnn.weights import (
    COCO_CATEGORY_NAMES,
    TORCHVISION_KWARGS,
    load_state_dict_named,
    load_torchvision_weights,
    num_classes_of,
    strip_prefix,
    torchvision_config,
)


def test_coco_names_hand_checked():
    assert len(COCO_CATEGORY_NAMES) == 91
    assert COCO_CATEGORY_NAMES[0] == "__background__"
    assert COCO_CATEGORY_NAMES[1] == "person"  # COCO category id 1
    assert COCO_CATEGORY_NAMES[12] == "N/A"  # id 12 was dropped between the paper's list and the data
    assert COCO_CATEGORY_NAMES[13] == "stop sign"
    assert COCO_CATEGORY_NAMES[90] == "toothbrush"  # the last id, 90
    assert COCO_CATEGORY_NAMES.count("N/A") == 10  # 91 outputs − 80 categories − background
    real = [n for n in COCO_CATEGORY_NAMES if n not in ("N/A", "__background__")]
    assert len(set(real)) == 80


def test_coco_names_equal_torchvision(torchvision):
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    assert list(COCO_CATEGORY_NAMES) == MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]


def _field(cfg, dotted):
    obj = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def test_every_torchvision_scalar_argument_is_mapped_with_the_same_default(torchvision):
    """Each scalar keyword of torchvision's MaskRCNN maps onto a config field whose preset value is
    torchvision's default (None defaults mean ImageNet mean/std and box weights (10, 10, 5, 5))."""
    from torchvision.models.detection import MaskRCNN

    params = inspect.signature(MaskRCNN.__init__).parameters
    modules = {"backbone", "rpn_anchor_generator", "rpn_head", "box_roi_pool", "box_head",
               "box_predictor", "mask_roi_pool", "mask_head", "mask_predictor"}
    scalar = {n for n, p in params.items() if n not in modules | {"self", "num_classes", "kwargs"}}
    assert scalar == set(TORCHVISION_KWARGS)
    none_means = {"image_mean": (0.485, 0.456, 0.406), "image_std": (0.229, 0.224, 0.225),
                  "bbox_reg_weights": (10.0, 10.0, 5.0, 5.0)}
    cfg = resnet50_fpn()
    for name, dotted in TORCHVISION_KWARGS.items():
        default = params[name].default
        expected = none_means[name] if default is None else default
        assert _field(cfg, dotted) == expected, name


def test_overrides_applied():
    cfg = torchvision_config(min_size=600, max_size=1000, box_score_thresh=0.7, box_nms_thresh=0.4,
                             box_detections_per_img=20, rpn_pre_nms_top_n_test=500,
                             rpn_post_nms_top_n_test=300, rpn_nms_thresh=0.6, bbox_reg_weights=None,
                             image_mean=[0.5, 0.5, 0.5], **{"mask.threshold": 0.6})
    assert (cfg.transform.min_size, cfg.transform.max_size) == (600, 1000)
    assert (cfg.roi_heads.score_thresh, cfg.roi_heads.nms_thresh, cfg.roi_heads.detections_per_img) == \
        (0.7, 0.4, 20)
    assert (cfg.rpn.pre_nms_top_n_test, cfg.rpn.post_nms_top_n_test, cfg.rpn.nms_thresh) == (500, 300, 0.6)
    assert cfg.roi_heads.box_coder_weights == (10.0, 10.0, 5.0, 5.0)
    assert cfg.transform.image_mean == (0.5, 0.5, 0.5)
    assert cfg.mask.threshold == 0.6
    assert cfg.class_names == COCO_CATEGORY_NAMES and cfg.num_classes == 91
    # everything not overridden keeps torchvision's value
    assert cfg.rpn.pre_nms_top_n_train == 2000 and cfg.backbone.arch == "resnet50"
    other = torchvision_config(num_classes=3)
    assert other.num_classes == 3 and other.class_names is None


def test_override_errors():
    with pytest.raises(ValueError, match="argument 'box_score_threshold'.*known: min_size"):
        torchvision_config(box_score_threshold=0.5)
    with pytest.raises(ValueError, match="box_predictor= replaces a part of the network"):
        torchvision_config(box_predictor=object())
    with pytest.raises(ValueError, match="min_size must be a positive int"):
        torchvision_config(min_size=(640, 672, 800))
    with pytest.raises(ValueError, match="unknown config field"):
        torchvision_config(**{"rpn.no_such_field": 1})
    with pytest.raises(ValueError, match="bg_iou_thresh"):  # the config's own validation still runs
        torchvision_config(box_fg_iou_thresh=0.3, box_bg_iou_thresh=0.6)


def test_strip_prefix_and_num_classes():
    sd = {"module.a": 1, "module.b": 2}
    assert strip_prefix(sd) == {"a": 1, "b": 2}
    assert strip_prefix({"module.a": 1, "b": 2}) == {"module.a": 1, "b": 2}  # only when all have it
    assert num_classes_of({"roi_heads.box_predictor.cls_score.weight": np.zeros((91, 1024))}) == 91
    with pytest.raises(ValueError, match="not a torchvision Mask R-CNN state_dict"):
        num_classes_of({"backbone.body.conv1.weight": np.zeros((64, 3, 7, 7))})


def tiny_body():
    cfg = BackboneConfig(stem_channels=8, stage_channels=(16, 32, 64, 128))
    return ResNet(cfg, ["layer4"], np.random.default_rng(0), blocks=(1, 1, 1, 1))


def test_strict_load_names_every_bad_key():
    model = tiny_body()
    sd = model.state_dict()
    sd.pop("layer2.0.conv2.weight")  # missing
    sd.pop("layer3.0.downsample.1.running_var")  # missing (a buffer)
    sd["layer1.0.conv4.weight"] = np.zeros((1,), np.float32)  # unexpected
    sd["layer4.0.bn3.bias"] = np.zeros(7, np.float32)  # mis-shaped: (7,) for (128,)
    sd["layer1.0.bn1.num_batches_tracked"] = np.array(5)  # skipped, as torchvision's FrozenBatchNorm2d
    before = model.state_dict()
    with pytest.raises(ValueError) as info:
        load_state_dict_named(model, sd, "weights.pth")
    msg = str(info.value)
    assert msg.startswith("weights.pth does not fit ResNet")
    for key in ("layer2.0.conv2.weight", "layer3.0.downsample.1.running_var", "layer1.0.conv4.weight",
                "layer4.0.bn3.bias"):
        assert key in msg, key
    assert "num_batches_tracked" not in msg
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)  # nothing was half-loaded


def test_strict_load_hints_at_v2_weights():
    model = tiny_body()
    sd = dict(model.state_dict(), **{"roi_heads.box_head.0.0.weight": np.zeros((256, 256, 3, 3))})
    with pytest.raises(ValueError, match="maskrcnn_resnet50_fpn_v2"):
        load_state_dict_named(model, sd, "v2.pth")


def test_torch_saved_body_loads_by_name(tmp_path, torch):
    """torch.save of a body with torch-built layers → read without torch → loaded by name, equal values."""
    from torch import nn

    model = tiny_body()
    tm = nn.Module()
    for k, v in model.state_dict().items():  # a torch module tree with exactly our keys
        *path, leaf = k.split(".")
        parent = tm
        for p in path:
            if not hasattr(parent, p):
                parent.add_module(p, nn.Module())
            parent = getattr(parent, p)
        parent.register_buffer(leaf, torch.from_numpy(np.random.default_rng(len(k)).standard_normal(v.shape)
                                                      .astype(np.float32)))
    path = tmp_path / "body.pth"
    torch.save({"model": tm.state_dict()}, path)  # a training-style checkpoint wrapper
    from minimaskrcnn.pth import read_state_dict

    load_state_dict_named(model, read_state_dict(path), str(path))
    for k, v in tm.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[k], v.numpy())


def test_load_torchvision_weights_checks_arguments_before_building(tmp_path, torch):
    path = tmp_path / "head.pth"
    torch.save({"roi_heads.box_predictor.cls_score.weight": torch.zeros(5, 1024)}, path)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        load_torchvision_weights(path, num_classes=1)
    with pytest.raises(ValueError, match="trainable_backbone_layers must be an int in 0..5"):
        load_torchvision_weights(path, trainable_backbone_layers=True)
    with pytest.raises(ValueError, match="unknown torchvision argument"):
        load_torchvision_weights(path, box_thresh=0.5)
    with pytest.raises(FileNotFoundError):
        load_torchvision_weights(tmp_path / "missing.pth")


class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_file_that_would_run_a_command_is_refused(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("evil/data.pkl", pickle.dumps({"roi_heads.box_predictor.cls_score.weight":
                                                   _RunsCommand(marker)}, protocol=2))
    with pytest.raises(UnsafePickleError, match="refusing to load"):
        load_torchvision_weights(path)
    assert not marker.exists()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_parameters_are_refused_by_name(tmp_path, bad):
    # A model file whose weights diverged would load and predict 0 detections without a word.
    from minimaskrcnn.config import shapes as shapes_config
    from minimaskrcnn.model import MaskRCNN
    from minimaskrcnn.weights import load_model, save_model

    model = MaskRCNN(shapes_config(), np.random.default_rng(0))
    path = tmp_path / "model.npz"
    save_model(path, model)
    load_model(path)  # finite: fine
    model.roi_heads.box_predictor.cls_score.weight.data[3, 1] = bad
    save_model(path, model)
    with pytest.raises(ValueError, match=r"model.npz'?: parameter 'roi_heads.box_predictor.cls_score.weight' "
                                         r"holds 1 non-finite value"):
        load_model(path)
    sd = model.state_dict()
    with pytest.raises(ValueError, match=r"weights.pth: parameter 'roi_heads.box_predictor.cls_score"):
        load_state_dict_named(MaskRCNN(shapes_config(), np.random.default_rng(1)), sd, "weights.pth")


def test_load_model_with_overrides_switches_inference_rules(tmp_path):
    # A softmax model scored with another pixel rule (notebook 04b): same weights, the config changed.
    from minimaskrcnn.config import shapes as shapes_config
    from minimaskrcnn.config import with_overrides
    from minimaskrcnn.datasets import ShapesDataset
    from minimaskrcnn.model import MaskRCNN
    from minimaskrcnn.weights import load_model, save_model

    model = MaskRCNN(with_overrides(shapes_config(), **{"mask.loss": "softmax"}), np.random.default_rng(0))
    path = tmp_path / "model.npz"
    save_model(path, model)
    plain = load_model(path)
    argmax = load_model(path, overrides={"mask.softmax_rule": "argmax"})
    assert plain.config.mask.softmax_rule == "p_k" and argmax.config.mask.softmax_rule == "argmax"
    assert argmax.roi_heads.mask_cfg.softmax_rule == "argmax"
    for (k, a), (_, b) in zip(plain.state_dict().items(), argmax.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=k)
    image = ShapesDataset(1, seed=3)[0]["image"]
    p, q = plain.predict([image])[0], argmax.predict([image])[0]
    np.testing.assert_array_equal(p["boxes"], q["boxes"])  # the rule changes the masks only
    if len(p["boxes"]):
        # sigmoid(z_k - max_j z_j) >= p_k = softmax_k for every pixel: the argmax rule keeps a superset
        assert np.all(q["mask_probs"] >= p["mask_probs"] - 1e-6)
    with pytest.raises(ValueError, match="mask.softmax_rul"):
        load_model(path, overrides={"mask.softmax_rul": "argmax"})
    with pytest.raises(ValueError, match="num_classes"):  # the config's own checks run
        load_model(path, overrides={"num_classes": 7})
