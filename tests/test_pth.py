"""Reading torch.save'd state_dicts without torch, and refusing pickles that would run code."""

import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from minimaskrcnn.pth import UnsafePickleError, read_state_dict


def _state_dict(torch):
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Linear(5, 2)
    )
    sd = net.state_dict()
    base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    sd["extra.transposed"] = base.t()  # non-contiguous: stride (1, 6)
    sd["extra.slice"] = base[1:3, 2:]  # shares base's storage with an offset
    sd["extra.base"] = base
    sd["extra.half"] = torch.linspace(-2, 2, 7, dtype=torch.float16)
    sd["extra.bool"] = torch.tensor([True, False, True])
    sd["extra.scalar"] = torch.tensor(3.5)
    sd["extra.empty"] = torch.zeros(0, 3)
    return sd


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_round_trip_equals_torch(torch, tmp_path, zip_format):
    sd = _state_dict(torch)
    path = tmp_path / "w.pth"
    torch.save(sd, path, _use_new_zipfile_serialization=zip_format)
    ours = read_state_dict(path)
    assert list(ours) == list(sd)  # order kept, as an OrderedDict
    for k, v in sd.items():
        want = v.numpy()
        assert ours[k].dtype == want.dtype, k
        assert ours[k].shape == want.shape, k
        np.testing.assert_array_equal(ours[k], want, err_msg=k)


def test_torchvision_maskrcnn_state_dict(torch, torchvision, tmp_path):
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                                               num_classes=3)
    sd = model.state_dict()
    path = tmp_path / "maskrcnn.pth"
    torch.save(sd, path)
    ours = read_state_dict(path)
    assert set(ours) == set(sd)
    for k in ("backbone.body.conv1.weight", "backbone.body.bn1.running_var",
              "rpn.head.cls_logits.bias", "roi_heads.mask_predictor.mask_fcn_logits.weight"):
        np.testing.assert_array_equal(ours[k], sd[k].numpy())


def test_checkpoint_wrapper_is_unwrapped(torch, tmp_path):
    path = tmp_path / "ck.pth"
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 3}, path)
    assert list(read_state_dict(path)) == ["w"]


def test_loads_with_torch_absent(torch, tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"a.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, path)
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from minimaskrcnn.pth import read_state_dict\n"
        f"sd = read_state_dict({str(path)!r})\n"
        "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
        "print(sd['a.weight'].sum())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "15.0"


class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_zip_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("evil/data.pkl", pickle.dumps({"w": _RunsCommand(marker)}, protocol=2))
        zf.writestr("evil/byteorder", "little")
    with pytest.raises(UnsafePickleError, match="posix.system|os.system"):
        read_state_dict(path)
    assert not marker.exists()


def test_malicious_legacy_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump(_RunsCommand(marker), f, protocol=2)  # where the magic number should be
    with pytest.raises(UnsafePickleError):
        read_state_dict(path)
    assert not marker.exists()


def test_not_a_state_dict(torch, tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.ones(1)], path)
    with pytest.raises(ValueError, match="expected a state_dict"):
        read_state_dict(path)
    with pytest.raises(FileNotFoundError):
        read_state_dict(tmp_path / "missing.pth")
