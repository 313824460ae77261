"""COCO JSON and folders: export → pycocotools → our loader round-trips exactly; bad input is named."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from PIL import Image

from minimaskrcnn.datasets.coco import (
    CocoFolderDataset,
    CocoFormatError,
    dataset_to_coco,
    detections_to_coco,
    export_coco,
    load_coco_json,
    mask_to_rle,
    save_coco_json,
    segmentation_to_mask,
    validate_coco,
)
from minimaskrcnn.datasets.shapes import ShapesDataset


@pytest.fixture(scope="module")
def shapes():
    return ShapesDataset(6, seed=11, classes="all", occlusion=True, textures=True, rotate=True,
                         num_instances=(2, 5))


def _items_equal(a, b):
    for key in ("image", "boxes", "labels", "masks"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert a["image_id"] == b["image_id"]


def test_export_loads_in_pycocotools_and_round_trips(shapes, tmp_path, pycocotools):
    from pycocotools.coco import COCO

    path = export_coco(shapes, tmp_path)
    assert path == tmp_path / "annotations" / "instances_default.json"
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        ["annotations", "images", "instances_default.json"] + [f"{i:06d}.png" for i in range(6)])

    coco = COCO(str(path))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == shapes.class_names[1:]
    for i in range(len(shapes)):
        item = shapes[i]
        ann_ids = coco.getAnnIds(imgIds=[i])
        anns = coco.loadAnns(ann_ids)
        assert len(anns) == len(item["labels"])
        for k, ann in enumerate(anns):
            np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), item["masks"][k])
            x, y, w, h = ann["bbox"]
            np.testing.assert_array_equal([x, y, x + w, y + h], item["boxes"][k])
            assert ann["area"] == item["masks"][k].sum() and ann["category_id"] == item["labels"][k]

    loaded = CocoFolderDataset(tmp_path)
    assert len(loaded) == len(shapes) and loaded.class_names == shapes.class_names
    assert loaded.category_ids == list(range(1, shapes.num_classes + 1))
    for i in range(len(shapes)):
        _items_equal(loaded[i], shapes[i])
        assert not loaded[i]["iscrowd"].any()

    # Exporting the loaded folder again gives the same JSON.
    again = export_coco(loaded, tmp_path / "again")
    assert json.loads(again.read_text()) == json.loads(path.read_text())


def test_dataset_to_coco_fields(shapes):
    data = dataset_to_coco(shapes, indices=[2, 4])
    validate_coco(data)
    assert [img["id"] for img in data["images"]] == [2, 4]
    assert [a["id"] for a in data["annotations"]] == list(range(1, len(data["annotations"]) + 1))
    ann = data["annotations"][0]
    assert set(ann) == {"id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd"}
    assert isinstance(ann["segmentation"]["counts"], str) and ann["segmentation"]["size"] == [128, 128]


def _write_folder(tmp_path, data, images, layout="images"):
    """A hand-made COCO folder: JSON at annotations/instances_train.json (or top level for labelme)."""
    for img in data["images"]:
        target = tmp_path / ("images" if layout == "images" else "") / img["file_name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[img["id"]]).save(target)
    ann_path = tmp_path / ("annotations/instances_train.json" if layout == "images" else "labels.json")
    ann_path.parent.mkdir(parents=True, exist_ok=True)
    ann_path.write_text(json.dumps(data))
    return ann_path


def _polygon_folder_data():
    # Two images, categories with COCO's gappy ids; polygons (two parts for one object), an
    # uncompressed crowd RLE, an image without annotations.
    crowd = np.zeros((20, 30), dtype=bool)
    crowd[12:18, 2:9] = True
    counts = np.diff(np.r_[0, np.flatnonzero(np.diff(crowd.ravel(order="F"))) + 1, crowd.size]).tolist()
    data = {
        "images": [{"id": 7, "file_name": "a.jpg.png", "height": 20, "width": 30},
                   {"id": 9, "file_name": "b.png", "height": 20, "width": 30}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 18, "iscrowd": 0, "area": 10.0,
             "segmentation": [[2.0, 2.0, 10.5, 2.0, 10.5, 9.0, 2.0, 9.0], [20, 3, 27, 3, 24, 11]],
             "bbox": [2.0, 2.0, 25.0, 9.0]},
            {"id": 5, "image_id": 7, "category_id": 3, "iscrowd": 1, "area": 42,
             "segmentation": {"size": [20, 30], "counts": counts}, "bbox": [2, 12, 7, 6]},
        ],
    }
    rng = np.random.default_rng(0)
    images = {7: rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), 9: rng.integers(0, 256, (20, 30, 3),
                                                                                     dtype=np.uint8)}
    return data, images, crowd


def test_folder_with_polygons_crowd_and_gappy_categories(tmp_path, pycocotools):
    from pycocotools.coco import COCO

    data, images, crowd = _polygon_folder_data()
    ann_path = _write_folder(tmp_path, data, images)
    ds = CocoFolderDataset(tmp_path)
    # Categories sorted by id: car (3) → label 1, dog (18) → label 2.
    assert ds.class_names == ["background", "car", "dog"] and ds.category_ids == [3, 18]
    assert ds.category_id_to_label == {3: 1, 18: 2}
    item = ds[0]
    np.testing.assert_array_equal(item["image"], images[7])
    np.testing.assert_array_equal(item["labels"], [2, 1])
    np.testing.assert_array_equal(item["iscrowd"], [False, True])
    np.testing.assert_array_equal(item["annotation_ids"], [1, 5])
    np.testing.assert_array_equal(item["boxes"], [[2, 2, 27, 11], [2, 12, 9, 18]])
    coco = COCO(str(ann_path))
    for k, ann in enumerate(coco.loadAnns([1, 5])):
        np.testing.assert_array_equal(item["masks"][k], coco.annToMask(ann).astype(bool))
    np.testing.assert_array_equal(item["masks"][1], crowd)
    assert item["masks"][0].sum() > 60  # both polygon parts are in
    empty = ds[1]
    assert empty["masks"].shape == (0, 20, 30) and empty["boxes"].shape == (0, 4) and empty["image_id"] == 9
    # Boxes from the masks instead. Pixel centres inside the polygons: the rectangle [2, 10.5] × [2, 9]
    # gives columns 2..10, rows 2..8; the triangle (20,3) (27,3) (24,11) reaches column 26 at row 3
    # (x in [20.25, 26.81] at y = 3.5) and row 9 (x in [23.25, 24.56] at y = 9.5, holding 23.5 and
    # 24.5) but not row 10 ([23.75, 24.19] at y = 10.5 holds no centre) → (2, 2, 27, 10).
    by_mask = CocoFolderDataset(tmp_path, box_source="mask")[0]["boxes"]
    np.testing.assert_array_equal(by_mask, [[2, 2, 27, 10], [2, 12, 9, 18]])
    # Leaving crowd out is an explicit choice.
    assert list(CocoFolderDataset(tmp_path, skip_crowd=True)[0]["annotation_ids"]) == [1]


def test_labelme_style_layout_and_choosing_a_file(tmp_path):
    data, images, _ = _polygon_folder_data()
    _write_folder(tmp_path, data, images, layout="flat")
    ds = CocoFolderDataset(tmp_path)
    assert ds.annotation_file.name == "labels.json" and len(ds) == 2
    (tmp_path / "other.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="several annotation files"):
        CocoFolderDataset(tmp_path)
    assert len(CocoFolderDataset(tmp_path, annotation_file="other.json")) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no COCO annotation file"):
        CocoFolderDataset(tmp_path / "empty")


def test_missing_image_file_and_wrong_image_size(tmp_path):
    data, images, _ = _polygon_folder_data()
    _write_folder(tmp_path, data, images)
    (tmp_path / "images" / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match="image id=9 file_name='b.png'"):
        CocoFolderDataset(tmp_path)
    Image.fromarray(np.zeros((21, 30, 3), dtype=np.uint8)).save(tmp_path / "images" / "b.png")
    with pytest.raises(CocoFormatError, match="image id=9"):
        CocoFolderDataset(tmp_path)[1]


def test_save_is_atomic_and_json_loads(tmp_path):
    data, _, _ = _polygon_folder_data()
    path = save_coco_json(data, tmp_path / "sub" / "x.json")
    assert load_coco_json(path) == data
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.json"]  # no temporary left behind

    # A failed write leaves the previous file intact.
    class Boom:
        pass

    bad = copy.deepcopy(data)
    bad["info"] = Boom()
    with pytest.raises(TypeError):
        save_coco_json(bad, path)
    assert load_coco_json(path) == data and len(list((tmp_path / "sub").iterdir())) == 1


def test_detections_to_coco_loads_as_results(shapes, pycocotools):
    from pycocotools.coco import COCO

    gt = COCO()
    gt.dataset = dataset_to_coco(shapes, indices=[0])
    gt.createIndex()
    item = shapes[0]
    dets = detections_to_coco(0, item["boxes"], item["labels"], np.linspace(1, 0.5, len(item["labels"])),
                              item["masks"])
    res = gt.loadRes(dets)
    for k, ann in enumerate(res.loadAnns(res.getAnnIds())):
        np.testing.assert_array_equal(res.annToMask(ann).astype(bool), item["masks"][k])
        x1, y1, x2, y2 = (float(v) for v in item["boxes"][k])
        assert ann["bbox"] == [x1, y1, x2 - x1, y2 - y1]


def test_segmentation_to_mask_polygon_golden():
    # The square [1, 3] × [1, 3] holds the pixel centres 1.5 and 2.5 in each direction: a 2×2 block.
    mask = segmentation_to_mask([[1, 1, 3, 1, 3, 3, 1, 3]], 5, 5)
    expected = np.zeros((5, 5), dtype=bool)
    expected[1:3, 1:3] = True
    np.testing.assert_array_equal(mask, expected)


# --- malformed input: every error names the record and the field ---------------------------------

def _valid():
    data, _, _ = _polygon_folder_data()
    return data


def _break(edit):
    data = _valid()
    edit(data)
    return data


BAD = [
    ("missing images", lambda d: d.pop("images"), "missing top-level key 'images'"),
    ("annotations not a list", lambda d: d.update(annotations={}), "'annotations' must be a list"),
    ("annotation missing bbox", lambda d: d["annotations"][0].pop("bbox"),
     "annotation id=1: missing key 'bbox'"),
    ("annotation missing segmentation", lambda d: d["annotations"][1].pop("segmentation"),
     "annotation id=5: missing key 'segmentation'"),
    ("annotation missing id", lambda d: d["annotations"][1].pop("id"), r"annotations\[1\]: missing key 'id'"),
    ("duplicate annotation id", lambda d: d["annotations"][1].update(id=1), "annotation id=1: field 'id'"),
    ("unknown category", lambda d: d["annotations"][1].update(category_id=99),
     r"annotation id=5: field 'category_id': unknown category 99 \(known: \[3, 18\]\)"),
    ("unknown image", lambda d: d["annotations"][0].update(image_id=8), "annotation id=1: field 'image_id'"),
    ("negative image height", lambda d: d["images"][1].update(height=-20), "image id=9: field 'height'"),
    ("zero image width", lambda d: d["images"][0].update(width=0), "image id=7: field 'width'"),
    ("image missing file_name", lambda d: d["images"][0].pop("file_name"),
     "image id=7: missing key 'file_name'"),
    ("negative bbox width", lambda d: d["annotations"][0].update(bbox=[2, 2, -1, 9]),
     "annotation id=1: field 'bbox': width and height must be >= 0"),
    ("bbox of 3 numbers", lambda d: d["annotations"][0].update(bbox=[2, 2, 1]),
     "annotation id=1: field 'bbox'"),
    ("bbox nan", lambda d: d["annotations"][0].update(bbox=[2, 2, float("nan"), 1]),
     "annotation id=1: field 'bbox'"),
    ("bbox outside", lambda d: d["annotations"][0].update(bbox=[2, 2, 29.01, 9]),
     "annotation id=1: field 'bbox': .* outside"),
    ("RLE size differs", lambda d: d["annotations"][1]["segmentation"].update(size=[30, 20]),
     r"annotation id=5: field 'segmentation': RLE size \[30, 20\] differs from the image size \[20, 30\]"),
    ("RLE negative size", lambda d: d["annotations"][1]["segmentation"].update(size=[-20, 30]),
     "annotation id=5: field 'segmentation': RLE size must be non-negative"),
    ("RLE runs do not add up", lambda d: d["annotations"][1]["segmentation"].update(counts=[5, 5]),
     "annotation id=5: field 'segmentation': bad RLE counts"),
    ("RLE bad string", lambda d: d["annotations"][1]["segmentation"].update(counts="\x01\x02"),
     "annotation id=5: field 'segmentation': bad RLE counts"),
    ("RLE without counts", lambda d: d["annotations"][1]["segmentation"].pop("counts"),
     "annotation id=5: field 'segmentation'"),
    ("polygon too short", lambda d: d["annotations"][0].update(segmentation=[[1, 2, 3, 4]]),
     "annotation id=1: field 'segmentation': polygon 0"),
    ("polygon odd length", lambda d: d["annotations"][0]["segmentation"][1].append(5),
     "annotation id=1: field 'segmentation': polygon 1"),
    ("empty segmentation", lambda d: d["annotations"][0].update(segmentation=[]),
     "annotation id=1: field 'segmentation': empty"),
    ("iscrowd 2", lambda d: d["annotations"][0].update(iscrowd=2), "annotation id=1: field 'iscrowd'"),
    ("negative area", lambda d: d["annotations"][0].update(area=-1), "annotation id=1: field 'area'"),
    ("category without name", lambda d: d["categories"][0].pop("name"), "category id=18: field 'name'"),
    ("string id", lambda d: d["annotations"][0].update(id="1"),
     "annotation id='1': field 'id': must be an integer"),
]


@pytest.mark.parametrize("name,edit,message", BAD, ids=[b[0] for b in BAD])
def test_malformed_annotations_are_named(name, edit, message, tmp_path):
    data = _break(edit)
    with pytest.raises(CocoFormatError, match=message):
        validate_coco(data)
    # Through a file too, with the file name in front.
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(CocoFormatError, match="bad.json: " + message):
        load_coco_json(path)


def test_valid_data_passes_and_optional_fields():
    data = _valid()
    validate_coco(data)
    data["annotations"][0]["bbox"] = [2.0, 2.0, 29.0, 9.0]  # 1 px past the right border: tolerated
    validate_coco(data)
    for ann in data["annotations"]:
        ann.pop("iscrowd"), ann.pop("area")  # optional: pycocotools assumes 0 / uses the mask
    validate_coco(data)


def test_malformed_json_names_the_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [],\n "annotations": [,]}')
    with pytest.raises(CocoFormatError, match="broken.json: malformed JSON at line 2"):
        load_coco_json(path)
    path.write_text("[1, 2]")
    with pytest.raises(CocoFormatError, match="must be a JSON object"):
        load_coco_json(path)


def test_mask_to_rle_is_reexported(pycocotools):
    from pycocotools import mask as mask_utils

    m = np.zeros((7, 5), dtype=bool)
    m[2:5, 1:4] = True
    expected = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))["counts"].decode()
    assert mask_to_rle(m)["counts"] == expected
