"""AnchorGenerator against torchvision's, and the legacy py-faster-rcnn anchors."""

import numpy as np
import pytest

from minimaskrcnn.ops.anchors import AnchorGenerator, cell_anchors, legacy_anchors


def torchvision_anchors(torch, sizes, ratios, image_size, feature_sizes, dtype):
    from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    gen = TVAnchorGenerator(sizes, ratios)
    images = ImageList(torch.zeros((1, 3) + tuple(image_size), dtype=dtype), [tuple(image_size)])
    feats = [torch.zeros((1, 1) + tuple(fs), dtype=dtype) for fs in feature_sizes]
    # forward concatenates the levels; split them back (h * w * A rows per level)
    counts = [a * h * w for a, (h, w) in zip(gen.num_anchors_per_location(), feature_sizes)]
    return [a.numpy() for a in gen(images, feats)[0].split(counts)]


def test_cell_anchors_golden():
    # size 32: ratio 0.5 -> w = 32/sqrt(.5) = 45.25, h = 22.63 -> round(+-22.63, +-11.31) = (-23, -11, 23, 11)
    #          ratio 1   -> (-16, -16, 16, 16); ratio 2 -> the transpose of ratio 0.5, (-11, -23, 11, 23)
    np.testing.assert_array_equal(cell_anchors((32,), (0.5, 1.0, 2.0)),
                                  [[-23, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]])


def test_cell_anchors_round_half_to_even():
    # size 5, ratio 1: (-2.5, -2.5, 2.5, 2.5) rounds half to even -> (-2, -2, 2, 2), 4 wide (not 5 or 6)
    # size 3: (-1.5, ..., 1.5) -> (-2, -2, 2, 2)
    np.testing.assert_array_equal(cell_anchors((5, 3), (1.0,)), [[-2, -2, 2, 2], [-2, -2, 2, 2]])


def test_grid_anchors_golden_order():
    gen = AnchorGenerator(((8,),), ((1.0, 2.0),))
    # image 8 x 12 with a 2 x 3 map: stride (4, 4); A = 2 (ratio 1: (-4,-4,4,4); ratio 2: w = 8/1.414 = 5.66,
    # h = 11.31 -> round(+-2.83, +-5.66) = (-3, -6, 3, 6)); location (y, x) shifts by (4x, 4y)
    (anchors,) = gen.grid_anchors((8, 12), [(2, 3)])
    assert anchors.shape == (2 * 3 * 2, 4) and anchors.dtype == np.float32
    np.testing.assert_array_equal(anchors[0], [-4, -4, 4, 4])          # (y=0, x=0), a=0
    np.testing.assert_array_equal(anchors[1], [-3, -6, 3, 6])          # (y=0, x=0), a=1
    np.testing.assert_array_equal(anchors[2], [0, -4, 8, 4])           # (y=0, x=1), a=0: shifted by 4 in x
    np.testing.assert_array_equal(anchors[(1 * 3 + 2) * 2 + 1], [8 - 3, 4 - 6, 8 + 3, 4 + 6])  # (1, 2), a=1
    assert gen.num_anchors_per_location() == [2]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_grid_anchors_match_torchvision(torch, torchvision, dtype):
    sizes = ((32,), (64,), (128, 180), (256,))
    ratios = ((0.5, 1.0, 2.0),) * 3 + ((0.25, 1.0, 3.0),)
    image_size = (100, 130)                        # not divisible: strides are floor divisions
    feature_sizes = [(25, 33), (13, 17), (7, 9), (4, 5)]
    gen = AnchorGenerator(sizes, ratios)
    ours = gen.grid_anchors(image_size, feature_sizes, dtype=np.dtype(dtype))
    theirs = torchvision_anchors(torch, sizes, ratios, image_size, feature_sizes, getattr(torch, dtype))
    assert len(ours) == 4
    for a, b in zip(ours, theirs):
        assert a.dtype == np.dtype(dtype) and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_flat_arguments_like_torchvision():
    gen = AnchorGenerator((16, 32), (0.5, 1.0, 2.0))  # one size per level, the same ratios everywhere
    assert gen.sizes == ((16,), (32,)) and gen.aspect_ratios == ((0.5, 1.0, 2.0),) * 2
    assert gen.num_anchors_per_location() == [3, 3]
    assert AnchorGenerator(((16, 32, 64),), ((0.5, 1.0),)).num_anchors_per_location() == [6]


def test_legacy_anchors_golden():
    # py-faster-rcnn generate_anchors(): base 16, ratios (0.5, 1, 2), scales (8, 16, 32), inclusive pixels.
    # ratio 0.5: w = round(sqrt(256 / 0.5)) = 23, h = round(11.5) = 12; x 8 -> 184 x 96 around 7.5:
    #   (7.5 - 183/2, 7.5 - 95/2, 7.5 + 183/2, 7.5 + 95/2) = (-84, -40, 99, 55)
    # ratio 1: 16 x 16 -> x 8 = 128: (7.5 - 63.5, ..., 7.5 + 63.5) = (-56, -56, 71, 71)
    # ratio 2: w = round(sqrt(128)) = 11, h = 22 -> x 8 = 88 x 176: (-36, -80, 51, 95)
    expected = np.array([[-84, -40, 99, 55], [-176, -88, 191, 103], [-360, -184, 375, 199],
                         [-56, -56, 71, 71], [-120, -120, 135, 135], [-248, -248, 263, 263],
                         [-36, -80, 51, 95], [-80, -168, 95, 183], [-168, -344, 183, 359]], dtype=np.float64)
    np.testing.assert_array_equal(legacy_anchors(), expected)
    # inclusive widths: x2 - x1 + 1 = 184 = 23 * 8 for the first one
    assert legacy_anchors()[0, 2] - legacy_anchors()[0, 0] + 1 == 184


def test_legacy_and_modern_conventions_differ():
    # same nominal anchor (size 128, ratio 1): modern is 128 wide centred on the cell corner,
    # legacy is 128 inclusive pixels centred on the centre of the 16-pixel cell
    modern = cell_anchors((128,), (1.0,))[0]
    legacy = legacy_anchors(ratios=(1.0,), scales=(8,))[0]
    assert modern[2] - modern[0] == 128 and legacy[2] - legacy[0] + 1 == 128
    assert (modern[0] + modern[2]) / 2 == 0 and (legacy[0] + legacy[2]) / 2 == 7.5


def test_bad_input_rejected():
    with pytest.raises(ValueError, match="aspect_ratios must have one tuple per level"):
        AnchorGenerator(((32,), (64,)), ((1.0,), (1.0,), (2.0,)))
    with pytest.raises(ValueError, match=r"sizes\[0\] must be non-empty positive"):
        AnchorGenerator(((0,),), ((1.0,),))
    with pytest.raises(ValueError, match=r"aspect_ratios\[0\] must be non-empty positive"):
        AnchorGenerator(((32,),), ((-1.0,),))
    gen = AnchorGenerator(((32,),), ((1.0,),))
    with pytest.raises(ValueError, match="feature_sizes must have one"):
        gen.grid_anchors((64, 64), [(8, 8), (4, 4)])
    with pytest.raises(ValueError, match=r"feature_sizes\[0\] must be >= 1"):
        gen.grid_anchors((64, 64), [(0, 8)])
    with pytest.raises(ValueError, match="image_size must be >= 1"):
        gen.grid_anchors((0, 64), [(8, 8)])
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        gen.grid_anchors((64, 64), [(8, 8)], dtype=np.int32)
