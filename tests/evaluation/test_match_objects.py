"""match_objects / pixel_error_summary: per-object detection matching and mask pixel errors."""

import numpy as np

from minimaskrcnn.evaluation import match_objects, pixel_error_summary


def _mask(y0, y1, x0, x1, size=20):
    m = np.zeros((size, size), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_match_objects_golden():
    # GT 0: a 4 x 4 square at rows/cols 2..5 (class 1); GT 1: a 3 x 3 square at rows/cols 12..14 (class 2).
    item = {"masks": np.stack([_mask(2, 6, 2, 6), _mask(12, 15, 12, 15)]), "labels": np.array([1, 2])}
    pred = {"masks": np.stack([_mask(2, 6, 3, 7),       # GT 0 one pixel to the right: IoU 12 / 20 = 0.6
                               _mask(12, 15, 12, 15),   # exactly GT 1, but class 1: misclassified
                               _mask(0, 2, 15, 20),     # on nothing: false positive
                               _mask(2, 6, 2, 6)]),     # exactly GT 0, but score 0.3 < 0.5: not considered
            "labels": np.array([1, 1, 1, 1]), "scores": np.array([0.9, 0.8, 0.7, 0.3])}
    m = match_objects([item], [pred])
    np.testing.assert_array_equal(m["found"], [True, False])
    np.testing.assert_array_equal(m["misclassified"], [False, True])
    np.testing.assert_array_equal(m["missed"], [False, False])
    np.testing.assert_array_equal(m["detection"], [0, 1])
    np.testing.assert_allclose(m["iou"], [0.6, 1.0])
    # shifted right by one column: column 6 is extra (4 px), column 2 missed (4 px), centroid x + 1
    assert (m["extra"][0], m["missed_px"][0], m["shift_x"][0], m["shift_y"][0]) == (4, 4, 1.0, 0.0)
    assert np.isnan(m["extra"][1])  # not found: no pixel statistics
    assert m["false_positives"] == [(0, 1), (0, 2)]  # the wrong-class detection and the stray one
    s = pixel_error_summary(m)
    assert s == {"objects": 1, "iou": 0.6, "extra": 4.0, "missed_px": 4.0, "shift_x": 1.0, "shift_y": 0.0}
    # no confident detection at all: every object missed
    none = match_objects([item], [{**pred, "scores": np.zeros(4)}])
    assert none["missed"].all() and (none["detection"] == -1).all()
    assert pixel_error_summary(none)["objects"] == 0


def test_paste_comparison_on_the_shipped_model(capsys):
    from minimaskrcnn.datasets.shapes import shapes_dataset
    from minimaskrcnn.evaluation import evaluate_model
    from minimaskrcnn.evaluation.evaluate import paste_comparison
    from minimaskrcnn.weights import SHIPPED_MODEL, load_model

    rows = paste_comparison([SHIPPED_MODEL], num_images=3, seed=1_000_003)
    assert [r["paste"] for r in rows] == ["torchvision", "continuous"]
    assert len(capsys.readouterr().out.splitlines()) == 2
    model = load_model(SHIPPED_MODEL)  # its own paste, scored the ordinary way, gives the same AP
    res, _, _ = evaluate_model(model, shapes_dataset(3, 1_000_003))
    own = next(r for r in rows if r["paste"] == model.config.mask.paste)
    assert own["mask_AP"] == res["segm"]["AP"] and own["box_AP"] == res["bbox"]["AP"]
    assert model.config.mask.paste == "continuous"  # the shipped model was trained for it
