"""Referring-segmentation groundwork: metrics, COCO RLE, dataset readers, synthetic scenes."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from rsseg.datasets.referring import (
    ReferringDataError,
    decode_rle,
    encode_rle,
    folder_samples,
    read_mask,
    refsegrs_samples,
    rrsisd_samples,
    uncompressed_rle,
    write_png,
)
from rsseg.datasets.referring.synthetic import (
    COLOURS,
    Desc,
    Query,
    SceneObject,
    candidate_queries,
    object_mask,
    parse,
    resolve,
    synthetic_dataset,
    text_blind,
    write_folder,
)
from rsseg.metrics import ReferringAccumulator, intersection_union

# ---------------------------------------------------------------- metrics

def _three_samples():
    """IoUs 0.9 (large object), 0 (small object missed), 0.75."""
    big_gt = np.ones((10, 10), bool)
    big_pred = big_gt.copy()
    big_pred[9] = False  # I 90, U 100
    small_gt = np.zeros((5, 5), bool)
    small_gt[:2] = True  # 10 px, predicted empty: I 0, U 10
    small_pred = np.zeros((5, 5), bool)
    mid_gt = np.array([1, 1, 1, 1, 0], bool)
    mid_pred = np.array([1, 1, 1, 0, 0], bool)  # I 3, U 4
    return [(big_pred, big_gt), (small_pred, small_gt), (mid_pred, mid_gt)]


def test_miou_and_oiou_differ_with_object_size():
    acc = ReferringAccumulator()
    ious = [acc.add(p, g) for p, g in _three_samples()]
    assert ious == [0.9, 0.0, 0.75]
    s = acc.scores()
    assert s.miou == pytest.approx(0.55)  # (0.9 + 0 + 0.75) / 3
    assert s.oiou == pytest.approx(93 / 114)  # (90 + 0 + 3) / (100 + 10 + 4) = 0.8158
    assert s.giou == s.miou and s.ciou == s.oiou
    assert (s.intersection, s.union, s.samples) == (93, 114, 3)
    assert s.precision == pytest.approx({0.5: 2 / 3, 0.6: 2 / 3, 0.7: 2 / 3, 0.8: 1 / 3, 0.9: 1 / 3})
    d = s.to_dict()
    assert d["miou"] == pytest.approx(0.55) and d["pr@0.9"] == pytest.approx(1 / 3) and d["pr_rule"] == ">="
    table = s.format_table()
    assert "mIoU" in table and "55.00" in table and "81.58" in table and "Pr@0.9" in table


def test_threshold_rule_ge_by_default_gt_when_strict():
    half = (np.array([1, 1], bool), np.array([1, 0], bool))  # IoU exactly 1/2
    lax, strict = ReferringAccumulator(), ReferringAccumulator(strict=True)
    lax.add(*half)
    strict.add(*half)
    assert lax.scores().precision[0.5] == 1.0  # LAVT/RMSIN: this_iou >= 0.5
    assert strict.scores().precision[0.5] == 0.0  # RSRefSeg: per_image_iou > 0.5
    acc = ReferringAccumulator(strict=True)
    for p, g in _three_samples():
        acc.add(p, g)
    assert acc.scores().precision[0.9] == 0.0  # 0.9 is not > 0.9


def test_empty_union_and_edge_cases():
    acc = ReferringAccumulator()
    empty = np.zeros((3, 3), bool)
    assert acc.add(empty, empty) == 1.0  # both empty: a correct "nothing"
    assert acc.add(np.ones((3, 3), bool), empty) == 0.0  # something predicted for an empty target
    s = acc.scores()
    assert (s.miou, s.oiou, s.empty, s.intersection, s.union) == (0.5, 0.0, 1, 0, 9)
    lavt = ReferringAccumulator(empty_iou=0.0)
    assert lavt.add(empty, empty) == 0.0
    assert math.isnan(lavt.scores().oiou) and lavt.scores().to_dict()["oiou"] is None
    none = ReferringAccumulator().scores()
    assert math.isnan(none.miou) and none.to_dict()["pr@0.5"] is None
    with pytest.raises(ValueError, match="shape"):
        intersection_union(np.zeros((2, 2)), np.zeros((3, 3)))
    a, b = ReferringAccumulator(), ReferringAccumulator()
    a.add(*_three_samples()[0])
    b.add(*_three_samples()[1])
    a.merge(b)
    assert a.scores().samples == 2 and a.scores().oiou == pytest.approx(90 / 110)
    with pytest.raises(ValueError):
        a.merge(ReferringAccumulator(strict=True))


# ---------------------------------------------------------------- COCO RLE

HAND = np.array([[0, 1, 1, 0],
                 [0, 1, 0, 0],
                 [1, 1, 0, 0]], bool)  # column-major: 0 0 | 1 1 1 1 1 | 0 0 0 0 0 -> runs 2, 5, 5


def test_rle_hand_made_mask_both_forms():
    assert uncompressed_rle(HAND) == {"size": [3, 4], "counts": [2, 5, 5]}
    assert np.array_equal(decode_rle({"size": [3, 4], "counts": [2, 5, 5]}), HAND)
    # COCO's text code: each run in 5-bit groups + 48; 2 -> '2', 5 -> '5' (no delta before the 4th run)
    assert encode_rle(HAND) == {"size": [3, 4], "counts": "255"}
    assert np.array_equal(decode_rle({"size": [3, 4], "counts": "255"}), HAND)
    starts_with_one = np.array([[1, 0], [1, 1]], bool)  # column-major 1 1 0 1 -> 0, 2, 1, 1
    assert uncompressed_rle(starts_with_one)["counts"] == [0, 2, 1, 1]
    assert np.array_equal(decode_rle(uncompressed_rle(starts_with_one)), starts_with_one)


def test_rle_round_trip_and_bad_input():
    rng = np.random.default_rng(3)
    for shape in [(1, 1), (7, 5), (40, 33)]:
        mask = rng.random(shape) > 0.6
        assert np.array_equal(decode_rle(encode_rle(mask)), mask)
        assert np.array_equal(decode_rle(uncompressed_rle(mask)), mask)
    with pytest.raises(ValueError, match="summing"):
        decode_rle({"size": [3, 4], "counts": [2, 5]})
    with pytest.raises(ValueError, match="counts"):
        decode_rle({"size": [3, 4]})


# ---------------------------------------------------------------- readers

def _write_tif(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    bands = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=bands.shape[2], height=bands.shape[1],
                           count=bands.shape[0], dtype="uint8") as dst:
            dst.write(bands)


def test_rrsisd_jsonl_reader(tmp_path):
    images = tmp_path / "JPEGImages"
    write_png(images / "00001.png", np.full((3, 4, 3), 90, np.uint8))
    mask2 = np.zeros((3, 4), bool)
    mask2[2, 3] = True
    records = [
        # as RSRefSeg's convert_data_to_jsonl.py writes it: sent + [compressed RLE]
        {"split": "test", "image_id": 1, "sent": "the baseball field on the top", "file_name": "00001.png",
         "category_id": 4, "category_name": "baseballfield", "ann_id": 11, "bbox": [1, 0, 2, 3],
         "segmentation": [encode_rle(HAND)], "area": 7},
        # refer style: several sentences, one RLE dict with uncompressed counts
        {"image_id": 1, "file_name": "00001.png", "ref_id": 5, "sent_ids": [50, 51],
         "sentences": [{"sent": "the vehicle", "raw": "The vehicle"}, {"raw": "a car"}],
         "segmentation": uncompressed_rle(mask2)},
    ]
    ann = tmp_path / "rrsisd_test.jsonl"
    ann.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    samples = list(rrsisd_samples(ann, images))
    assert [(s.sample_id, s.sentence, s.image_id) for s in samples] == [
        ("11", "the baseball field on the top", "1"), ("5-50", "the vehicle", "1"), ("5-51", "a car", "1")]
    assert np.array_equal(samples[0].mask, HAND) and np.array_equal(samples[2].mask, mask2)
    assert samples[0].meta["category_name"] == "baseballfield"
    assert samples[0].pixels().shape == (3, 4, 3)
    assert len(list(rrsisd_samples(ann, images, limit=2))) == 2

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"file_name": "00001.png", "sent": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(ReferringDataError, match=r"bad\.jsonl:1: no 'segmentation'"):
        list(rrsisd_samples(bad, images))
    bad.write_text("{not json\n", encoding="utf-8")
    with pytest.raises(ReferringDataError, match=r"bad\.jsonl:1: not valid JSON"):
        list(rrsisd_samples(bad, images))
    bad.write_text(json.dumps({**records[0], "file_name": "missing.jpg"}) + "\n", encoding="utf-8")
    with pytest.raises(ReferringDataError, match="missing.jpg not found"):
        list(rrsisd_samples(bad, images))
    bad.write_text(json.dumps({**records[0], "segmentation": [[1.0, 2.0, 3.0, 4.0]]}) + "\n", encoding="utf-8")
    with pytest.raises(ReferringDataError, match="polygon"):
        list(rrsisd_samples(bad, images))
    with pytest.raises(ReferringDataError, match="annotation file not found"):
        list(rrsisd_samples(tmp_path / "nope.jsonl", images))


def test_refsegrs_reader(tmp_path):
    mask = np.zeros((6, 5), np.uint8)
    mask[1:4, 2:] = 255
    _write_tif(tmp_path / "images" / "17.tif", np.full((6, 5, 3), 50, np.uint8))
    _write_tif(tmp_path / "masks" / "17.tif", mask)
    (tmp_path / "output_phrase_test.txt").write_text("17 road along the river\n17 the road\n", encoding="utf-8")
    samples = list(refsegrs_samples(tmp_path, "test"))
    assert [(s.image_id, s.sample_id, s.sentence) for s in samples] == [
        ("17", "17", "road along the river"), ("17", "17-1", "the road")]
    assert np.array_equal(samples[0].mask, mask > 0)
    assert samples[0].pixels().shape == (6, 5, 3)
    (tmp_path / "output_phrase_val.txt").write_text("18 the tree\n", encoding="utf-8")
    with pytest.raises(ReferringDataError, match=r"output_phrase_val\.txt:1: no image 18\.tif"):
        list(refsegrs_samples(tmp_path, "val"))
    with pytest.raises(ReferringDataError, match="output_phrase_train.txt"):
        list(refsegrs_samples(tmp_path, "train"))


def test_folder_reader_csv_and_bad_mask(tmp_path):
    write_png(tmp_path / "images" / "a.png", np.zeros((4, 4, 3), np.uint8))
    write_png(tmp_path / "masks" / "a.png", np.eye(4, dtype=np.uint8))  # 0/1 values
    (tmp_path / "sentences.csv").write_text("image,sentence\na.png,the diagonal\na,\"the line, again\"\n",
                                            encoding="utf-8")
    samples = list(folder_samples(tmp_path))
    assert [(s.sample_id, s.sentence) for s in samples] == [("a", "the diagonal"), ("a-1", "the line, again")]
    assert np.array_equal(samples[0].mask, np.eye(4, dtype=bool))
    write_png(tmp_path / "masks" / "a.png", np.full((4, 4), 7, np.uint8))
    with pytest.raises(ReferringDataError, match=r"a\.png: mask values \[7\]"):
        list(folder_samples(tmp_path))
    (tmp_path / "sentences.csv").write_text("name,text\na,x\n", encoding="utf-8")
    with pytest.raises(ReferringDataError, match="header row"):
        list(folder_samples(tmp_path))
    with pytest.raises(ReferringDataError, match="no sentences file"):
        list(folder_samples(tmp_path / "images"))


# ---------------------------------------------------------------- synthetic scenes

def test_synthetic_is_deterministic_and_scene_wise_stable():
    a, b = synthetic_dataset(6, seed=7), synthetic_dataset(6, seed=7)
    assert [s.sentence for s in a.samples] == [s.sentence for s in b.samples]
    assert all(np.array_equal(x.mask, y.mask) and np.array_equal(x.pixels(), y.pixels())
               for x, y in zip(a.samples, b.samples))
    fewer = synthetic_dataset(3, seed=7)
    assert [s.sentence for s in fewer.samples] == [s.sentence for s in a.samples if s.image_id < "scene_00003"]
    other = synthetic_dataset(6, seed=8)
    assert [s.sentence for s in other.samples] != [s.sentence for s in a.samples]


def test_every_sentence_picks_out_exactly_its_target():
    data = synthetic_dataset(40, seed=0)
    kinds = {s.meta["kind"] for s in data.samples}
    assert kinds == {"colour", "shape", "colour+shape", "relation", "extreme"}
    for sample in data.samples:
        scene = data.scene(sample)
        target = sample.meta["target"]
        assert resolve(parse(sample.sentence), scene.objects) == [target], sample.sentence
        obj = scene.objects[target]
        assert sample.image.shape == (128, 128, 3) and sample.image.dtype == np.uint8
        assert np.array_equal(sample.mask, object_mask(obj, 128)) and sample.mask.sum() > 30
        colour = sample.image[sample.mask].mean(axis=0)
        assert np.abs(colour - COLOURS[obj.colour]).max() < 15  # the pixels really are that colour
    for scene in data.scenes[:10]:
        assert all(m.any() for m in scene.masks) and 3 <= len(scene.objects) <= 5
        assert sum(m.astype(int) for m in scene.masks).max() == 1  # objects never overlap
        for query in candidate_queries(scene.objects):
            assert parse(query.text()) == query


def test_ambiguous_descriptions_are_never_emitted():
    objs = [SceneObject("red", "square", 20, 20, 8), SceneObject("red", "circle", 60, 40, 8),
            SceneObject("blue", "circle", 100, 90, 8)]
    assert resolve(Query(Desc("red")), objs) == [0, 1]
    assert resolve(Query(Desc(None, "circle"), None, "left of", Desc("blue")), objs) == [1]
    assert resolve(Query(Desc(), None, "above", Desc("red")), objs) == []  # anchor ambiguous
    assert resolve(Query(Desc(), "leftmost"), objs) == [0]
    texts = {q.text() for q in candidate_queries(objs)}
    assert "the red object" not in texts and "the circle" not in texts
    assert {"the blue object", "the square", "the red circle", "the leftmost circle",
            "the circle left of the blue one"} <= texts
    assert parse("the object above the red one") == Query(Desc(), None, "above", Desc("red"))
    with pytest.raises(ValueError):
        parse("the purple thing")


def test_text_blind_and_folder_round_trip(tmp_path):
    data = synthetic_dataset(3, seed=1)
    blind = text_blind(data.samples)
    assert {s.sentence for s in blind} == {"the object"}
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(blind, data.samples))
    write_folder(data.samples, tmp_path)
    assert len(list((tmp_path / "images").iterdir())) == 3
    back = list(folder_samples(tmp_path))
    assert [(s.sample_id, s.image_id, s.sentence) for s in back] == [
        (s.sample_id, s.image_id, s.sentence) for s in data.samples]
    for original, read in zip(data.samples, back):
        assert np.array_equal(read.mask, original.mask)
        assert np.array_equal(read.pixels(), original.pixels())
    assert np.array_equal(read_mask(tmp_path / "masks" / f"{data.samples[0].sample_id}.png"), data.samples[0].mask)


def test_rrsisd_refer_release_reader(tmp_path):
    import pickle

    write_png(tmp_path / "images" / "rrsisd" / "JPEGImages" / "02934.png", np.zeros((3, 4, 3), np.uint8))
    instances = {"images": [{"file_name": "02934.png", "height": 3, "width": 4, "id": 2934}],
                 "annotations": [{"bbox": [0, 0, 2, 3], "categories_id": 4, "id": 77, "image_id": 2934,
                                  "segmentation": [encode_rle(HAND)], "area": 7}],
                 "categories": [{"name": "baseballfield", "id": 4}]}
    refs = [{"image_id": 2934, "split": "test", "file_name": "02934.png", "category_id": 4, "ann_id": 77,
             "sent_ids": [9], "ref_id": 9,
             "sentences": [{"tokens": ["the", "field"], "raw": "The field", "sent_id": 9, "sent": "the field"}]},
            {"image_id": 2934, "split": "train", "ann_id": 77, "ref_id": 10, "sentences": [{"sent": "x"}]}]
    (tmp_path / "rrsisd").mkdir()
    (tmp_path / "rrsisd" / "instances.json").write_text(json.dumps(instances), encoding="utf-8")
    (tmp_path / "rrsisd" / "refs(unc).p").write_bytes(pickle.dumps(refs))
    from rsseg.datasets.referring import rrsisd_refer_samples

    samples = list(rrsisd_refer_samples(tmp_path, "test"))
    assert [(s.sample_id, s.image_id, s.sentence) for s in samples] == [("9", "2934", "the field")]
    assert np.array_equal(samples[0].mask, HAND) and samples[0].image.name == "02934.png"
    # a refs file that names any class or function is refused, not executed
    (tmp_path / "rrsisd" / "refs(unc).p").write_bytes(pickle.dumps([{"a": np.int64(1)}]))
    with pytest.raises(ReferringDataError, match=r"refs\(unc\)\.p: not a refer refs pickle"):
        list(rrsisd_refer_samples(tmp_path, "test"))
