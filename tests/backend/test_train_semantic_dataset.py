"""Training on a benchmark dataset layout end to end (rsseg.training.dataset_run, `rsseg train semantic`), on
tiny real files: PNG images and labels written into the folder, Vaihingen (mmseg, RGB-coded labels) and LoveDA
(as distributed) layouts that datasets/semantic.py reads.

The scene: red squares (class "roof") on a green field ("grass"), with noise; the class is the colour, so a
model that learns anything scores far above the all-grass baseline. The tiny UNetFormer trains for a few
epochs of 64-px crops. Checked: the bundle and its fixed 0..255 scaling in `rsseg segment` and `rsseg eval`,
learning, the label codings of the benchmark layouts, cancel and resume, and the errors for bad input.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from safetensors.torch import load_file

from rsseg.bundles import BUNDLE_FILE, WEIGHTS_FILE, read_bundle
from rsseg.bundles.format import BundleInfo, write_bundle
from rsseg.bundles.spec import bundle_spec
from rsseg.cli.main import main as cli
from rsseg.datasets.semantic import ISPRS_COLOURS, DatasetError
from rsseg.errors import Cancelled, ParameterError
from rsseg.progress import CancelToken
from rsseg.protocol.contracts import SegmentRequest
from rsseg.service.segment import model_defaults, run_segment
from rsseg.training.dataset_run import CHECKPOINTS, RUN_FILE, SCHEDULES, TrainDatasetRequest, train_dataset

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")]  # plain PNGs
TINY = "unetformer-r18-tiny"
SIZE = 128
GRASS, ROOF = (40, 150, 50), (200, 30, 30)


def _write(path: Path, data: np.ndarray, dtype: str = "uint8") -> None:
    data = data if data.ndim == 3 else data[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="PNG" if path.suffix == ".png" else "GTiff", width=data.shape[2],
                           height=data.shape[1], count=data.shape[0], dtype=dtype) as dst:
            dst.write(data.astype(dtype))


def _scene(rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 image [3, size, size], class index label: 0 grass, 1 roof)."""
    label = np.zeros((size, size), np.uint8)
    for _ in range(4):
        y, x = rng.integers(0, size - size // 4, 2)
        side = rng.integers(size // 10, size // 4)
        label[y:y + side, x:x + side] = 1
    image = np.where(label[None] == 1, np.array(ROOF)[:, None, None], np.array(GRASS)[:, None, None])
    return np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8), label


def _folder(root: Path, train: int = 6, val: int = 2, size: int = SIZE, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        for i in range(count):
            image, label = _scene(rng, size)
            _write(root / split / "images" / f"{i}.png", image)
            _write(root / split / "labels" / f"{i}.png", label)
    (root / "classes.txt").write_text("grass, lawn\nroof\n")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return _folder(tmp_path_factory.mktemp("folder-dataset"))


def _request(root: Path, out: Path, **fields) -> TrainDatasetRequest:
    base = dict(dataset="folder", root=str(root), out=str(out), model=TINY, classes_file=str(root / "classes.txt"),
                epochs=2, crop=64, batch_size=4, device="cpu")
    return TrainDatasetRequest(**{**base, **fields})


@pytest.fixture(scope="module")
def learned(folder, tmp_path_factory) -> Path:
    """The verb itself trains the learning run: 8 epochs of 8 crops per image (12 steps an epoch)."""
    out = tmp_path_factory.mktemp("runs") / "roofs"
    assert cli(["train", "semantic", "--dataset", "folder", str(folder), "--classes-file", str(folder / "classes.txt"),
                "--model", TINY, "--out", str(out), "--epochs", "8", "--crop", "64", "--crops-per-image", "8",
                "--batch-size", "4", "--device", "cpu", "--quiet"]) == 0
    return out


def _majority_miou(root: Path, split: str = "val") -> float:
    """mIoU of predicting the most frequent class everywhere: its share (the other class scores 0)."""
    counts = np.zeros(2, np.int64)
    for path in sorted((root / split / "labels").glob("*.png")):
        with rasterio.open(path) as src:
            counts += np.bincount(src.read(1).ravel(), minlength=2)
    return float(counts.max() / counts.sum()) / 2


def test_the_verb_trains_a_bundle_that_learns_and_rsseg_eval_scores_it(learned, folder, capsys):
    out = learned
    assert sorted(p.name for p in out.iterdir()) == [BUNDLE_FILE, WEIGHTS_FILE]  # the run files made way
    info = read_bundle(out)
    assert info.classes == ["grass", "roof"] and info.name == "roofs"
    assert info.bands == [1, 2, 3] and info.value_range == [0.0, 255.0] and info.chip == 64
    assert json.loads((out / BUNDLE_FILE).read_text())["version"] == 2  # older backends refuse, not mis-scale
    t = info.training
    assert t["dataset"] == "folder" and t["split"] == "train" and t["val_split"] == "val" and t["crop"] == 64
    assert t["train_images"] == 6 and t["val_images"] == 2 and t["crops_per_epoch"] == 48
    assert t["val_tiles"] == 2 * 4 and t["class_lines"] == ["grass,lawn", "roof"] and t["epochs_run"] == 8
    assert sum(t["pixels"].values()) == 6 * SIZE * SIZE and len(t["history"]) == 8
    # learning: far above predicting the majority class everywhere (measured about 0.83 against 0.45)
    baseline = _majority_miou(folder)
    assert info.metrics["miou"] > 0.75 and info.metrics["miou"] > baseline + 0.25
    # rsseg eval runs it through the segmentation path, with the bundle's own scaling and plain argmax
    code = cli(["eval", "--dataset", "folder", str(folder), "--classes-file", str(folder / "classes.txt"),
                "--model", str(out), "--device", "cpu", "--json", "--quiet"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["images"] == 2 and report["settings"]["threshold"] is None
    assert report["settings"]["stretch"] == "0..255 (the bundle's)"
    assert [c["name"] for c in report["metrics"]["classes"]] == ["grass", "roof"]
    assert report["metrics"]["miou"] > 0.7 and report["metrics"]["miou"] > baseline + 0.2


def test_segment_scales_as_training_did(learned, folder, tmp_path, capsys):
    """`rsseg segment` with the bundle divides 8-bit values by 255 (no percentile stretch): its mask equals the
    network's argmax on image / 255."""
    import torch

    from rsseg.models import build_model

    out = learned
    image = folder / "val" / "images" / "0.png"
    request = model_defaults(SegmentRequest(raster=str(image), out_dir=str(tmp_path / "seg"), model=str(out)))
    assert request.value_range == (0.0, 255.0) and request.bands == (1, 2, 3)
    result = run_segment(SegmentRequest(raster=str(image), out_dir=str(tmp_path / "seg"), model=str(out),
                                        tile=SIZE, overlap=0, device="cpu", vectorise=False))
    assert result.stretch == {"low": [0.0] * 3, "high": [255.0] * 3}
    with rasterio.open(result.mask) as src:
        mask = src.read(1)
    with rasterio.open(image) as src:
        pixels = src.read().astype(np.float32) / 255
    model = build_model(str(out), ["grass", "roof"], None, "cpu")
    with torch.no_grad():
        expected = model(pixels[None])[0].argmax(axis=0) + 1
    assert np.array_equal(mask, expected)
    assert cli(["segment", str(image), "--model", str(out), "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    # a bundle with a fixed scaling refuses an eval that asks for another
    assert cli(["eval", "--dataset", "folder", str(folder), "--classes-file", str(folder / "classes.txt"),
                "--model", str(out), "--percentile-stretch", "--quiet"]) == 2
    assert "leave out --percentile-stretch" in capsys.readouterr().err


def test_a_fusion_model_trains_on_a_host_trained_on_the_dataset(learned, folder, tmp_path):
    """RFM-Seg fuses into the UNetFormer trained above (--host); a host scaled otherwise is refused."""
    result = train_dataset(_request(folder, tmp_path / "fused", model="rfm-seg-r18-rn50-tiny", epochs=1,
                                    host=str(learned / BUNDLE_FILE)))
    info = read_bundle(result.model)
    assert info.training["host"] == str(learned) and info.value_range == [0.0, 255.0]
    assert info.mean == read_bundle(learned).mean and "normalised as the host model was trained" in result.notes
    with pytest.raises(ParameterError, match="scales the percentile stretch"):
        train_dataset(_request(folder, tmp_path / "mixed", model="rfm-seg-r18-rn50-tiny", host=str(learned),
                               percentile_stretch=True))
    with pytest.raises(ParameterError, match="takes no host"):
        train_dataset(_request(folder, tmp_path / "mixed", host=str(learned)))
    assert not (tmp_path / "mixed").exists()


# -- the benchmark layouts -------------------------------------------------------------------------------------
def test_vaihingen_rgb_labels_train_with_the_isprs_coding(tmp_path, capsys):
    """img_dir/{split} + ann_dir/{split} with RGB-coded labels: colours -> values 1..6 -> classes 0..5, the black
    boundary ignored; the class names are the shipped file's."""
    rng = np.random.default_rng(1)
    colours = list(ISPRS_COLOURS)  # (0, 0, 0) boundary first, then the six classes in value order
    counts = np.zeros(6, np.int64)
    for split, n in (("train", 2), ("val", 1)):
        for i in range(n):
            values = rng.integers(0, 7, (64, 96))  # 0: boundary
            rgb = np.stack([np.vectorize(lambda v, b=b: colours[v][b])(values) for b in range(3)])
            _write(tmp_path / f"img_dir/{split}/area{i}.png", rng.integers(0, 256, (3, 64, 96)))
            _write(tmp_path / f"ann_dir/{split}/area{i}.png", rgb)
            if split == "train":
                counts += np.bincount(values.ravel(), minlength=7)[1:]
    result = train_dataset(TrainDatasetRequest(dataset="vaihingen", root=str(tmp_path), out=str(tmp_path / "run"),
                                               model=TINY, epochs=1, crop=64, batch_size=2, device="cpu"))
    info = read_bundle(result.model)
    assert info.classes == ["impervious surface", "building", "low vegetation", "tree", "car", "clutter"]
    assert list(info.training["pixels"].values()) == counts.tolist()  # boundary pixels counted nowhere
    assert info.training["class_values"]["building"] == [2] and info.training["ignore_values"] == [0, 255]
    assert result.val_tiles == 2  # a 96x64 image in 64-px tiles: every pixel once, the edge tile padded
    code = cli(["eval", "--dataset", "vaihingen", str(tmp_path), "--model", result.model, "--device", "cpu",
                "--json", "--quiet"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and len(report["metrics"]["classes"]) == 6 and report["settings"]["background"] is None


def test_loveda_urban_reads_the_urban_scenes_only(tmp_path):
    from rsseg.datasets.semantic import DATASETS, find_pairs

    for domain in ("Urban", "Rural"):
        for n in range(2 if domain == "Urban" else 3):
            _write(tmp_path / f"Train/{domain}/images_png/{n}.png", np.zeros((3, 32, 32), np.uint8))
            _write(tmp_path / f"Train/{domain}/masks_png/{n}.png", np.ones((32, 32), np.uint8))
    urban = find_pairs(DATASETS["loveda-urban"], tmp_path, "train")
    assert len(urban) == 2 and all("/Urban/" in str(p.image) for p in urban)
    assert len(find_pairs(DATASETS["loveda"], tmp_path, "train")) == 5


def test_loveda_as_distributed_with_no_data_and_synonym_class_lines(tmp_path, capsys):
    """{Split}/{Urban,Rural}/images_png + masks_png: 0 is no-data, 1..7 the classes; the class file's lines
    ("building,roof,house") name the bundle's classes by their first synonym, and eval's lines find them."""
    rng = np.random.default_rng(2)
    for split in ("Train", "Val"):
        for domain in ("Urban", "Rural"):
            _write(tmp_path / f"{split}/{domain}/images_png/{domain}.png", rng.integers(0, 256, (3, 64, 64)))
            _write(tmp_path / f"{split}/{domain}/masks_png/{domain}.png", rng.integers(0, 8, (64, 64)))
    result = train_dataset(TrainDatasetRequest(dataset="loveda", root=str(tmp_path), out=str(tmp_path / "run"),
                                               model=TINY, epochs=1, crop=64, batch_size=2, device="cpu",
                                               limit=1))
    info = read_bundle(result.model)
    assert info.classes[:3] == ["background", "building", "road"] and len(info.classes) == 7
    assert result.train_images == result.val_images == 1  # --limit: the first image of each split
    assert info.training["class_values"]["background"] == [1] and info.training["ignore_values"] == [0]
    code = cli(["eval", "--dataset", "loveda", str(tmp_path), "--model", result.model, "--device", "cpu", "--json",
                "--quiet", "--limit", "1"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and [c["name"] for c in report["metrics"]["classes"]][1] == "building"


def test_non_8_bit_images_train_with_the_percentile_stretch_and_the_bundle_keeps_it(tmp_path):
    rng = np.random.default_rng(3)
    for split in ("train", "val"):
        image, label = _scene(rng, 64)
        _write(tmp_path / split / "images" / "0.tif", image.astype(np.uint16) * 40, "uint16")
        _write(tmp_path / split / "labels" / "0.tif", label)
    (tmp_path / "classes.txt").write_text("grass\nroof\n")
    result = train_dataset(_request(tmp_path, tmp_path / "run", epochs=1, batch_size=2))
    info = read_bundle(result.model)
    assert info.value_range is None and info.training["scaling"].startswith("2-98 %")
    assert json.loads((Path(result.model) / BUNDLE_FILE).read_text())["version"] == 1
    assert any("percentiles" in n for n in result.notes)
    assert bundle_spec(result.model).preprocess.value_range is None


# -- run folder, cancel, resume --------------------------------------------------------------------------------
def test_cancel_keeps_a_resumable_run_and_resume_matches_an_uninterrupted_run(folder, tmp_path):
    straight = train_dataset(_request(folder, tmp_path / "straight", epochs=3))
    cancel = CancelToken()

    def stop_in_the_second_epoch(event):
        if event.stage == "train" and event.detail.get("epoch") == 2 and "val_miou" not in event.detail:
            cancel.cancel()

    out = tmp_path / "paused"
    with pytest.raises(Cancelled, match="resume"):
        train_dataset(_request(folder, out, epochs=3), stop_in_the_second_epoch, cancel)
    assert (out / RUN_FILE).is_file() and len(list((out / CHECKPOINTS).glob("step-*.json"))) == 1
    assert not (out / BUNDLE_FILE).exists()
    with pytest.raises(ParameterError, match="unfinished run"):
        train_dataset(_request(folder, out, epochs=3))
    resumed = train_dataset(TrainDatasetRequest(dataset="-", root="-", out=str(out), resume=True, device="cpu"))
    assert resumed.epochs == straight.epochs == 3 and resumed.metrics == straight.metrics
    a, b = load_file(str(Path(straight.model) / WEIGHTS_FILE)), load_file(str(out / WEIGHTS_FILE))
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    with pytest.raises(ParameterError, match="already holds a trained model"):
        train_dataset(_request(folder, out))


def test_a_cancel_before_the_first_epoch_leaves_nothing(folder, tmp_path):
    cancel = CancelToken()
    cancel.cancel()
    out = tmp_path / "never"
    with pytest.raises(Cancelled):
        train_dataset(_request(folder, out), cancel=cancel)
    assert not out.exists()
    stopped = CancelToken()
    out = tmp_path / "first-epoch"

    def stop_at_the_first_step(event):
        if event.stage == "train":
            stopped.cancel()

    with pytest.raises(Cancelled):
        train_dataset(_request(folder, out), stop_at_the_first_step, stopped)
    assert not out.exists()


# -- bad input -------------------------------------------------------------------------------------------------
def _broken(root: Path, kind: str) -> Path:
    _folder(root, train=2, val=1, size=64)
    if kind == "size":
        _write(root / "train/labels/1.png", np.zeros((64, 80)))
    elif kind == "values":
        _write(root / "train/labels/1.png", np.full((64, 64), 7))
    elif kind == "bands":
        _write(root / "val/images/0.png", np.zeros((1, 64, 64)))
    return root


@pytest.mark.parametrize("kind, change, error, words", [
    ("ok", dict(split="test"), DatasetError, "no Folder images for split 'test'"),
    ("size", {}, DatasetError, r"train/images/1.png is 64x64 px but its label .*train/labels/1.png is 80x64 px"),
    ("values", {}, DatasetError, r"train/labels/1.png: label values \[7\] are not in the folder mapping"),
    ("bands", {}, DatasetError, r"val/images/0.png has 1 band\(s\) but .* has 3"),
    ("ok", dict(crop=128), ParameterError, "crop of 128 px is larger than every training image"),
    ("ok", dict(crop=80), ParameterError, "multiple of 32"),
    ("ok", dict(schedule="public"), ParameterError, "no public schedule for folder"),
    ("ok", dict(model="clip-vit-b-16"), ParameterError, "unetformer-r18"),
    ("ok", dict(classes_file=None), DatasetError, "needs a class-name file"),
    ("ok", dict(ignore_index=300), ParameterError, "ignore index"),
    ("ok", dict(val_split="train"), DatasetError, "share 2 image"),
])
def test_bad_input_is_refused_before_training_and_leaves_nothing(tmp_path, kind, change, error, words):
    root = _broken(tmp_path / "data", kind)
    out = tmp_path / "run"
    with pytest.raises(error, match=words):
        train_dataset(_request(root, out, **change))
    assert not out.exists()


def test_cli_errors_are_one_line_and_the_schedules_are_data(tmp_path, capsys):
    root = _folder(tmp_path / "data", train=1, val=1, size=64)
    code = cli(["train", "semantic", "--dataset", "folder", str(root), "--classes-file", str(root / "classes.txt"),
                "--out", str(tmp_path / "run"), "--split", "nope", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no Folder images for split 'nope'" in err
    assert cli(["train", "semantic", "--quiet"]) == 2 and "--dataset, ROOT, --out are needed" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    public = TrainDatasetRequest(dataset="potsdam", root="r", out="o", schedule="public").resolved()
    assert (public.epochs, public.batch_size, public.crop) == (45, 8, 768) == tuple(SCHEDULES["potsdam"].values())
    mine = TrainDatasetRequest(dataset="loveda", root="r", out="o", schedule="public", epochs=3).resolved()
    assert (mine.epochs, mine.batch_size, mine.crop) == (3, 16, 512)
    plain = TrainDatasetRequest(dataset="vaihingen", root="r", out="o").resolved()
    assert (plain.epochs, plain.batch_size, plain.crop) == (20, 8, 512)


def test_bundles_without_a_value_range_are_written_and_read_as_before(tmp_path):
    import torch

    info = BundleInfo(name="old", builder="unetformer", config={}, classes=["a"], colours=[[1, 2, 3]], bands=[1],
                      mean=[0.5], std=[0.2])
    write_bundle(tmp_path / "b", info, {"w": torch.zeros(1)})
    manifest = json.loads((tmp_path / "b" / BUNDLE_FILE).read_text())
    assert manifest["version"] == 1 and "value_range" not in manifest
    assert read_bundle(tmp_path / "b").value_range is None
    assert bundle_spec(tmp_path / "b").preprocess.value_range is None
