"""The photo-like COCO folder generator: what it promises, and pycocotools reading it the same way."""

import collections
import json

import numpy as np
import pytest

from minimaskrcnn.datasets import CocoFolderDataset
from minimaskrcnn.datasets.synthetic_coco import (
    CATEGORIES,
    IMAGE_SIZES,
    make_image,
    photo_names,
    write_folder,
)


def test_images_objects_and_segmentations_vary():
    kinds, sizes, formats, counts = collections.Counter(), set(), set(), []
    for i in range(40):
        image, objects, fmt = make_image(i, seed=7, crowd_fraction=0.3)
        h, w = image.shape[:2]
        assert (w, h) in IMAGE_SIZES and image.dtype == np.uint8
        sizes.add((w, h))
        formats.add(fmt)
        plain = [o for o in objects if not o["iscrowd"]]
        counts.append(len(plain))
        for o in objects:
            seg = o["segmentation"]
            kinds["crowd" if o["iscrowd"] else "polygon" if isinstance(seg, list) else
                  "rle-" + type(seg["counts"]).__name__] += 1
            if o["iscrowd"]:
                assert isinstance(seg["counts"], list)  # uncompressed, as COCO stores crowds
    assert len(sizes) >= 5 and "jpeg" in formats and len(formats) >= 2
    assert set(kinds) == {"polygon", "rle-str", "rle-list", "crowd"}
    assert 1 <= min(counts) and max(counts) <= 4 and len(set(counts)) >= 3
    assert len(photo_names()) >= 8  # real photographs behind the objects
    np.testing.assert_array_equal(make_image(3, 7)[0], make_image(3, 7)[0])  # a function of (seed, index)
    assert not np.array_equal(make_image(3, 7)[0][:8, :8], make_image(3, 8)[0][:8, :8])


def test_folder_reads_as_pycocotools_reads_it(tmp_path, pycocotools):
    from pycocotools.coco import COCO

    ann_file = write_folder(tmp_path, 12, seed=3, crowd_fraction=0.5)
    data = json.loads(ann_file.read_text())
    assert [c["id"] for c in data["categories"]] == [c["id"] for c in CATEGORIES] == [3, 8, 15, 42]
    ids = [img["id"] for img in data["images"]]
    assert ids != list(range(ids[0], ids[0] + len(ids)))  # non-contiguous image ids
    assert any(a["iscrowd"] for a in data["annotations"])
    ds = CocoFolderDataset(tmp_path)
    ds.check_trainable()
    coco = COCO(str(ann_file))
    for i in range(len(ds)):
        item = ds[i]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[item["image_id"]]))
        assert [a["id"] for a in anns] == item["annotation_ids"].tolist()
        for k, ann in enumerate(anns):
            mask = coco.annToMask(ann).astype(bool)
            np.testing.assert_array_equal(item["masks"][k], mask)
            diameter = max(ann["bbox"][2], ann["bbox"][3])
            assert ann["iscrowd"] or 8 <= diameter <= 57, ann  # 14-56 px (squeezed or rotated: less)
            assert ann["area"] == mask.sum()
        assert item["image"].shape == (coco.imgs[item["image_id"]]["height"],
                                       coco.imgs[item["image_id"]]["width"], 3)


def test_write_folder_refuses_no_images(tmp_path):
    with pytest.raises(ValueError, match="num_images"):
        write_folder(tmp_path, 0)
