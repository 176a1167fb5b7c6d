"""`rsseg eval`: metrics against hand-computed confusion matrices, every dataset layout end to end.

The end-to-end datasets are painted with the `test` model's colour prototypes, so a correct
pipeline must score high and a scrambled label must score low.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin

from rsseg.cli.main import main
from rsseg.datasets.class_files import builtin_classnames
from rsseg.datasets.layout_names import DATASET_CHOICES
from rsseg.datasets.semantic import DATASETS, ISPRS_COLOURS
from rsseg.eval import load_classnames
from rsseg.metrics import NO_PREDICTION, ConfusionMatrix
from rsseg.models.colour_prototype.model import prototype

BLOCK, SIZE = 32, 96  # label blocks of 32 px in 96 px images: the test model's 5 px filter blurs 2 px

# ---------------------------------------------------------------------------------------- metrics


def test_confusion_matrix_by_hand_with_ignore_index():
    m = ConfusionMatrix(3, ignore_index=255)
    m.update(np.array([0, 1, 1, 1, 0, 2]), np.array([0, 0, 1, 1, 2, 255]))  # the last pixel is ignored
    assert m.counts.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0]]
    s = m.scores(["a", "b", "c"])
    assert s.iou == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert s.f1 == pytest.approx([0.5, 0.8, 0.0])
    assert (s.miou, s.mean_f1, s.oa) == pytest.approx((1 / 3, 1.3 / 3, 0.6))
    assert (s.pixels, s.unpredicted, s.label_pixels, s.predicted_pixels) == (5, 0, [2, 2, 1], [2, 3, 0])


def test_absent_class_is_skipped_only_predicted_class_counts_no_prediction_is_wrong():
    m = ConfusionMatrix(4)
    label = np.array([[0, 0, 0, 1, 1]])
    m.update(np.array([[0, 0, 255, 1, 3]]), label)  # 255: nodata; class 2 absent; class 3 only predicted
    s = m.scores()
    assert s.iou[:2] == pytest.approx([2 / 3, 1 / 2]) and math.isnan(s.iou[2]) and s.iou[3] == 0.0
    assert s.f1[:2] == pytest.approx([0.8, 2 / 3]) and math.isnan(s.f1[2]) and s.f1[3] == 0.0
    assert s.miou == pytest.approx(7 / 18) and s.mean_f1 == pytest.approx((0.8 + 2 / 3) / 3)
    assert s.oa == pytest.approx(0.6) and s.unpredicted == 1
    d = s.to_dict()
    assert d["classes"][2]["iou"] is None and d["classes"][3]["iou"] == 0.0 and d["miou"] == pytest.approx(7 / 18)
    json.dumps(d, allow_nan=False)
    table = s.format_table()
    assert "mIoU 38.89  mean F1 48.89  OA 60.00" in table and "      -       -" in table

    streamed = ConfusionMatrix(4)  # image by image, or merged: the same counts
    streamed.update(np.array([0, 0]), np.array([0, 0]))
    other = ConfusionMatrix(4)
    other.update(np.array([NO_PREDICTION, 1, 3]), np.array([0, 1, 1]))
    streamed.merge(other)
    assert (streamed.counts == m.counts).all()


def test_metric_edge_cases():
    empty = ConfusionMatrix(2).scores()
    assert math.isnan(empty.miou) and math.isnan(empty.oa) and empty.to_dict()["oa"] is None
    with pytest.raises(ValueError, match=r"label values \[5\]"):
        ConfusionMatrix(2).update(np.array([0, 1]), np.array([0, 5]))
    with pytest.raises(ValueError, match="shape"):
        ConfusionMatrix(2).update(np.zeros(3), np.zeros(4))


# ---------------------------------------------------------------------------------------- class files


def test_class_files(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("water, river\n\n  building ,roof\ntree\n")
    assert load_classnames(path) == ["water,river", "building,roof", "tree"]
    shipped = {name: load_classnames(builtin_classnames(f"{name}.txt"))
               for name in ("loveda", "potsdam", "vaihingen", "openearthmap")}
    assert {k: len(v) for k, v in shipped.items()} == {"loveda": 7, "potsdam": 6, "vaihingen": 6, "openearthmap": 9}
    assert shipped["loveda"][1] == "building,roof,house" and shipped["potsdam"][5] == "clutter,background"
    assert set(DATASET_CHOICES) == set(DATASETS)


# ---------------------------------------------------------------------------------------- layouts

def _blocks(seed: int, values: list[int]) -> np.ndarray:
    """A SIZE x SIZE label of BLOCK-sized squares, every value used."""
    rng = np.random.default_rng(seed)
    n = SIZE // BLOCK
    cells = np.resize(rng.permutation(values), n * n).reshape(n, n)
    return np.kron(cells, np.ones((BLOCK, BLOCK), np.int64))


def _write(path: Path, data: np.ndarray, georef: bool = False) -> None:
    data = data if data.ndim == 3 else data[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = dict(crs="EPSG:32633", transform=from_origin(500000, 5000000, 0.5, 0.5)) if georef else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff" if path.suffix == ".tif" else "PNG", width=data.shape[2],
                           height=data.shape[1], count=data.shape[0], dtype="uint8", **extra) as dst:
            dst.write(data.astype(np.uint8))


def _paint(classes: np.ndarray, prompts: list[str]) -> np.ndarray:
    """The RGB image the test model reads as `classes` (class indices into prompts)."""
    colours = np.stack([np.round(prototype(p, 3) * 255) for p in prompts])
    return colours[classes].transpose(2, 0, 1)


def _eval(root, dataset, *extra, capsys=None):
    code = main(["eval", "--dataset", dataset, str(root), "--model", "test", "--device", "cpu", "--json", *extra])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def _make(root: Path, image_rel: str, label_rel: str, seed: int, prompts: list[str], label_values: list[int],
          encode=lambda lab: lab, georef=False) -> None:
    """One image painted from a label of `label_values` (value v is prompt index values.index(v))."""
    label = _blocks(seed, label_values)
    index = np.vectorize(label_values.index)(label)
    _write(root / image_rel, _paint(index, prompts), georef)
    _write(root / label_rel, encode(label))


def test_loveda_both_layouts_score_high(tmp_path, capsys):
    prompts = load_classnames(builtin_classnames("loveda.txt"))
    for i, domain in enumerate(("Urban", "Rural")):
        _make(tmp_path / "raw", f"Val/{domain}/images_png/{i}.png", f"Val/{domain}/masks_png/{i}.png", i,
              prompts, list(range(1, 8)))
        _make(tmp_path / "mmseg", f"img_dir/val/{i}.png", f"ann_dir/val/{i}.png", i, prompts, list(range(1, 8)))
    # a no-data label border (value 0) is ignored
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp_path / "raw/Val/Urban/masks_png/0.png") as src:
            lab = src.read(1)
    lab[:, :3] = 0
    _write(tmp_path / "raw/Val/Urban/masks_png/0.png", lab)
    raw = _eval(tmp_path / "raw", "loveda", capsys=capsys)
    mmseg = _eval(tmp_path / "mmseg", "loveda", capsys=capsys)
    assert raw["images"] == mmseg["images"] == 2 and raw["settings"]["threshold"] == 0.3
    assert raw["metrics"]["pixels"] == 2 * SIZE * SIZE - 3 * SIZE
    assert [c["name"] for c in raw["metrics"]["classes"]][:2] == ["background", "building"]
    assert raw["metrics"]["miou"] > 0.8 and mmseg["metrics"]["miou"] > 0.8


def test_potsdam_index_labels_and_vaihingen_rgb_labels(tmp_path, capsys):
    prompts = load_classnames(builtin_classnames("potsdam.txt"))
    colour_of = {v: c for c, v in ISPRS_COLOURS.items()}
    rgb = lambda lab: np.stack([np.vectorize(lambda v, b=b: colour_of[v][b])(lab) for b in range(3)])  # noqa: E731
    for i in range(2):
        _make(tmp_path / "potsdam", f"img_dir/val/2_13_{i}.png", f"ann_dir/val/2_13_{i}.png", i, prompts,
              list(range(1, 7)))
        _make(tmp_path / "vaihingen", f"img_dir/val/area{i}.png", f"ann_dir/val/area{i}.png", i,
              load_classnames(builtin_classnames("vaihingen.txt")), list(range(1, 7)), encode=rgb)
    _make(tmp_path / "potsdam", "img_dir/train/x.png", "ann_dir/train/x.png", 5, prompts, list(range(1, 7)))
    potsdam = _eval(tmp_path / "potsdam", "potsdam", capsys=capsys)
    vaihingen = _eval(tmp_path / "vaihingen", "vaihingen", "--threshold", "0", capsys=capsys)
    assert potsdam["images"] == 2 and potsdam["settings"]["background"] == "clutter"
    assert vaihingen["settings"]["threshold"] is None and vaihingen["settings"]["background"] is None
    assert potsdam["metrics"]["miou"] > 0.8 and vaihingen["metrics"]["miou"] > 0.8


def test_dlrsd_detectron2_layout_and_isaid_tagged_labels(tmp_path, capsys):
    dlrsd = load_classnames(builtin_classnames("dlrsd.txt"))
    isaid = load_classnames(builtin_classnames("isaid.txt"))
    assert len(dlrsd) == 17 and len(isaid) == 16 and isaid[0] == "background"
    for i in range(2):
        _make(tmp_path / "dlrsd", f"images/val/harbor{i:02d}.tif", f"annotations/val/harbor{i:02d}.png", i, dlrsd,
              list(range(17)))
        _make(tmp_path / "isaid", f"img_dir/val/P000{i}_0_896_0_896.png",
              f"ann_dir/val/P000{i}_0_896_0_896_instance_color_RGB.png", i, isaid, list(range(16)))
    by_dlrsd = _eval(tmp_path / "dlrsd", "dlrsd", capsys=capsys)
    by_isaid = _eval(tmp_path / "isaid", "isaid", capsys=capsys)
    assert by_dlrsd["images"] == by_isaid["images"] == 2
    # 16-17 colour prototypes crowd the colour space, so some classes blur together; a misread label scores ~1/17
    assert by_dlrsd["metrics"]["oa"] > 0.75 and by_isaid["metrics"]["oa"] > 0.75


def test_openearthmap_list_file_limit_out_and_resize(tmp_path, capsys):
    prompts = load_classnames(builtin_classnames("openearthmap.txt"))
    for i, region in enumerate(("aachen", "koeln", "tyrolw")):
        _make(tmp_path, f"{region}/images/{region}_{i}.tif", f"{region}/labels/{region}_{i}.tif", i, prompts,
              list(range(9)), georef=True)
    (tmp_path / "val.txt").write_text("aachen_0.tif\nkoeln_1.tif\nmissing_from_wo_xbd.tif\n")
    out = tmp_path / "out"
    full = _eval(tmp_path, "openearthmap", "--out", str(out), capsys=capsys)
    assert full["images"] == 2 and full["metrics"]["miou"] > 0.8
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("mask.tif")) == \
        ["masks/aachen/images/aachen_0/mask.tif", "masks/koeln/images/koeln_1/mask.tif"]
    assert json.loads((out / "eval.json").read_text())["metrics"] == full["metrics"]
    one = _eval(tmp_path, "openearthmap", "--limit", "1", "--resize", "48", "--tile", "64", "--overlap", "0",
                capsys=capsys)
    assert one["images"] == 1 and one["metrics"]["pixels"] == SIZE * SIZE and one["metrics"]["miou"] > 0.7


def test_folder_layout_scores_high_and_a_scrambled_label_scores_low(tmp_path, capsys):
    names = tmp_path / "classes.txt"
    names.write_text("water, lake\nforest,tree\nbuilding\nroad\n")
    prompts = load_classnames(names)
    for i in range(2):  # PNGs without a CRS: the engine takes them
        _make(tmp_path / "good", f"images/{i}.png", f"labels/{i}.png", i, prompts, [0, 1, 2, 3])
        _make(tmp_path / "bad", f"images/{i}.png", f"labels/{i}.png", i, prompts, [0, 1, 2, 3],
              encode=lambda lab: (lab + 1) % 4)
    good = _eval(tmp_path / "good", "folder", "--classes-file", str(names), capsys=capsys)
    bad = _eval(tmp_path / "bad", "folder", "--classes-file", str(names), capsys=capsys)
    assert good["metrics"]["miou"] > 0.8 and good["metrics"]["oa"] > 0.9
    assert bad["metrics"]["miou"] < 0.1 and bad["metrics"]["oa"] < 0.1
    assert [c["name"] for c in good["metrics"]["classes"]] == ["water", "forest", "building", "road"]
    # mmseg's reduce_zero_label convention: 0 unscored, value i is class line i
    _make(tmp_path / "rz", "images/0.png", "labels/0.png", 0, prompts, [1, 2, 3, 4], encode=lambda lab: lab)
    rz = _eval(tmp_path / "rz", "folder", "--classes-file", str(names), "--reduce-zero-label", capsys=capsys)
    assert rz["metrics"]["miou"] > 0.8 and rz["settings"]["ignore_values"] == [0, 255]


# ---------------------------------------------------------------------------------------- bad input

def _error(argv, capsys) -> str:
    assert main(["eval", "--model", "test", "--quiet", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_bad_input_is_one_line_naming_the_file(tmp_path, capsys):
    assert "dataset root not found" in _error(["--dataset", "loveda", str(tmp_path / "nope")], capsys)
    err = _error(["--dataset", "potsdam", str(tmp_path)], capsys)
    assert "no ISPRS Potsdam images for split 'val'" in err and "img_dir/val/*" in err
    assert "needs a class-name file" in _error(["--dataset", "folder", str(tmp_path)], capsys)

    prompts = load_classnames(builtin_classnames("loveda.txt"))
    _make(tmp_path / "a", "img_dir/val/0.png", "ann_dir/val/0.png", 0, prompts, list(range(1, 8)))
    _make(tmp_path / "a", "img_dir/val/1.png", "ann_dir/val/1.png", 1, prompts, [1, 2, 9])
    assert "ann_dir/val/1.png: label values [9] are not in the loveda mapping (classes: 1..7, ignored: 0)" \
        in _error(["--dataset", "loveda", str(tmp_path / "a")], capsys)

    _make(tmp_path / "b", "img_dir/val/0.png", "ann_dir/val/0.png", 0, prompts, list(range(1, 8)))
    _write(tmp_path / "b/ann_dir/val/0.png", np.ones((SIZE, SIZE + 1)))
    assert f"{tmp_path / 'b/img_dir/val/0.png'} is 96x96 px but its label" in \
        _error(["--dataset", "loveda", str(tmp_path / "b")], capsys)

    (tmp_path / "c/img_dir/val").mkdir(parents=True)
    _write(tmp_path / "c/img_dir/val/0.png", np.zeros((3, 8, 8)))
    assert "no label for" in _error(["--dataset", "loveda", str(tmp_path / "c")], capsys)

    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    assert "3 classes, but LoveDA has 7" in _error(["--dataset", "loveda", str(tmp_path / "a"), "--classes-file",
                                                    str(tmp_path / "three.txt")], capsys)
    assert "apply to the folder layout only" in _error(["--dataset", "loveda", str(tmp_path / "a"),
                                                        "--ignore-index", "0"], capsys)
    assert "--limit must be at least 1" in _error(["--dataset", "loveda", str(tmp_path / "a"), "--limit", "0"],
                                                  capsys)
