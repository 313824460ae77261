"""The resnet50_fpn preset: torchvision's maskrcnn_resnet50_fpn architecture and names, weights loaded
from its state_dict, same features and detections (small images keep the test cheap)."""

import numpy as np

from minimaskrcnn.config import resnet50_fpn, with_overrides
from minimaskrcnn.model import MaskRCNN


def test_resnet50_fpn_equals_torchvision(torch, torchvision):
    tv = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=96, max_size=128, box_detections_per_img=5).double()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, b in tv.named_buffers():  # random BatchNorm statistics: the test must see them
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g, dtype=b.dtype))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g, dtype=b.dtype))
        tv.roi_heads.box_predictor.cls_score.weight.mul_(50)  # well-separated class scores
    tv.eval()
    cfg = with_overrides(resnet50_fpn(), **{"transform.min_size": 96, "transform.max_size": 128,
                                            "roi_heads.detections_per_img": 5})
    model = MaskRCNN(cfg, np.random.default_rng(0)).astype(np.float64)
    model.load_state_dict({k: v.numpy() for k, v in tv.state_dict().items()})
    image = np.random.default_rng(1).random((70, 90, 3))
    # backbone + FPN features (the body uses FrozenBatchNorm2d; torchvision's eval BatchNorm is the same)
    x, _, _, _ = model._transform()([image])
    ours = model.backbone(x)
    model.clear_cache()
    tx = torch.from_numpy(x)
    theirs = list(tv.backbone(tx).values())
    assert len(ours) == len(theirs) == 5
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-9, atol=1e-9)
    (det,) = model.predict([image])
    with torch.no_grad():
        (tdet,) = tv([torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))])
    assert det["boxes"].shape[0] == 5
    np.testing.assert_array_equal(det["labels"], tdet["labels"].numpy())
    np.testing.assert_allclose(det["boxes"], tdet["boxes"].numpy(), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(det["scores"], tdet["scores"].numpy(), rtol=1e-5)
    np.testing.assert_allclose(det["mask_probs"], tdet["masks"][:, 0].numpy(), atol=1e-5)
