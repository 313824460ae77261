"""A folder that cannot be trained on is refused before training, naming the file, id and field;
images of any mode are read as RGB."""

import json

import numpy as np
import pytest
from PIL import Image

from minimaskrcnn.datasets import CocoFolderDataset, CocoFormatError


def _folder(tmp_path, mutate=None, modes=("RGB", "RGB")):
    rng = np.random.default_rng(0)
    data = {"images": [], "annotations": [],
            "categories": [{"id": 4, "name": "cat"}, {"id": 11, "name": "dog"}]}
    (tmp_path / "images").mkdir(parents=True, exist_ok=True)
    for i, mode in enumerate(modes):
        image_id = 10 + 5 * i
        name = f"im{i}.{'jpg' if mode in ('L', 'RGB') and i % 2 else 'png'}"
        pixels = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).convert(mode).save(tmp_path / "images" / name)
        data["images"].append({"id": image_id, "file_name": name, "height": 24, "width": 32})
        data["annotations"].append({"id": 100 + i, "image_id": image_id, "category_id": 4 if i % 2 else 11,
                                    "segmentation": [[2, 2, 12, 2, 12, 10, 2, 10]], "bbox": [2, 2, 10, 8],
                                    "iscrowd": 0, "area": 80})
    if mutate:
        mutate(data, tmp_path)
    (tmp_path / "annotations").mkdir(exist_ok=True)
    (tmp_path / "annotations" / "instances_default.json").write_text(json.dumps(data))
    return tmp_path


def test_grayscale_rgba_and_palette_images_become_rgb(tmp_path):
    ds = CocoFolderDataset(_folder(tmp_path, modes=("L", "RGBA", "P", "RGB")))
    ds.check_trainable()
    for i in range(len(ds)):
        image = ds[i]["image"]
        assert image.shape == (24, 32, 3) and image.dtype == np.uint8
    grey = ds[0]["image"]
    np.testing.assert_array_equal(grey[..., 0], grey[..., 1])


def _drop_file(data, root):
    (root / "images" / data["images"][1]["file_name"]).unlink()


def _no_categories(data, root):
    data["categories"], data["annotations"] = [], []


def _unused_class(data, root):
    data["categories"].append({"id": 30, "name": "bird"})


def _only_crowd(data, root):
    data["annotations"][0]["iscrowd"] = 1  # image 0's dog is a crowd: no dog left to learn


def _outside_bbox(data, root):
    data["annotations"][1]["bbox"] = [20, 2, 20, 8]


def _outside_polygon(data, root):
    data["annotations"][1]["segmentation"] = [[2, 2, 40, 2, 12, 10]]


def _wrong_size(data, root):
    data["images"][0]["width"] = 33


def _empty_mask(data, root):
    data["annotations"][0]["segmentation"] = [[2.1, 2.1, 2.2, 2.1, 2.2, 2.2]]


def _not_an_image(data, root):
    (root / "images" / data["images"][0]["file_name"]).write_bytes(b"not an image")


@pytest.mark.parametrize("mutate, match", [
    (_drop_file, r"image id=15 file_name='im1.jpg'"),
    (_no_categories, r"field 'categories' is empty"),
    (_unused_class, r"field 'categories': no \(non-crowd\) annotation of category id=30 name='bird'"),
    (_only_crowd, r"category id=11 name='dog'"),
    (_outside_bbox, r"annotation id=101: field 'bbox': .* outside the 32x24 image id=15"),
    (_outside_polygon, r"annotation id=101: field 'segmentation': polygon 0 has the vertex \(40, 2\)"),
    (_wrong_size, r"image id=10: fields 'width'/'height': .*im0.png is 32x24 but the record says 33x24"),
    (_empty_mask, r"annotation id=100: field 'segmentation': the mask is empty"),
    (_not_an_image, r"image id=10: field 'file_name': .*im0.png is not an image"),
])
def test_bad_folder_is_refused_naming_file_id_and_field(tmp_path, mutate, match):
    with pytest.raises((CocoFormatError, FileNotFoundError), match=match) as info:
        CocoFolderDataset(_folder(tmp_path, mutate), skip_crowd=True).check_trainable()
    if info.type is CocoFormatError:
        assert "instances_default.json" in str(info.value)  # the file
