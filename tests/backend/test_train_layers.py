"""Training from layers end to end (rsseg.training.layers_run, `rsseg train layers`), on a synthetic scene
written as real files: a UTM GeoTIFF and label polygons in EPSG:4326 with a class field named "kind".

The tiny UNetFormer (same classes as the real one, test size) trains for a few epochs; what is checked
is the contract: the bundle's contents, its use as a model id, errors before training with nothing left
behind, cancel keeping a resumable run, and resume giving the weights of an uninterrupted run. RFM-Seg's
test twin fuses into that trained UNetFormer (its host): the host is checked before training, recorded in
the bundle, and kept by a resumed run.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import fiona
import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Transformer
from rasterio.transform import from_origin
from safetensors.torch import load_file
from shapely.geometry import box, mapping

from rsseg.bundles import BUNDLE_FILE, WEIGHTS_FILE, read_bundle
from rsseg.bundles.index import installed_bundles
from rsseg.cli.main import main as cli
from rsseg.datasets.semantic import DatasetError
from rsseg.errors import Cancelled, ParameterError
from rsseg.models.catalog import model_rows
from rsseg.progress import CancelToken
from rsseg.protocol.contracts import SegmentRequest
from rsseg.protocol.training import TrainLayersRequest
from rsseg.service.segment import run_segment
from rsseg.training.layers_run import CHECKPOINTS, RUN_FILE, train_layers

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZE, PIXEL, ORIGIN = 192, 0.5, (500000.0, 3700000.0)
TINY = "unetformer-r18-tiny"
FUSED = "rfm-seg-r18-rn50-tiny"  # RFM-Seg's test twin: builds on a trained UNetFormer, its host
# (class value, pixel box col0, row0, col1, row1): red roofs and blue ponds on a green field
SHAPES = [("roof", 20, 20, 60, 50), ("roof", 120, 30, 170, 70), ("roof", 40, 130, 80, 175),
          ("pond", 100, 110, 150, 160), ("pond", 150, 150, 185, 185)]
COLOURS = {"roof": (200, 40, 40), "pond": (30, 60, 180)}


def _pixel_box(c0, r0, c1, r1):
    x0, y0 = ORIGIN[0] + c0 * PIXEL, ORIGIN[1] - r1 * PIXEL
    return box(x0, y0, x0 + (c1 - c0) * PIXEL, y0 + (r1 - r0) * PIXEL)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("scene")
    rng = np.random.default_rng(0)
    image = np.empty((3, SIZE, SIZE), np.uint8)
    image[:] = np.array([60, 140, 50], np.uint8)[:, None, None]
    for kind, c0, r0, c1, r1 in SHAPES:
        image[:, r0:r1, c0:c1] = np.array(COLOURS[kind], np.uint8)[:, None, None]
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    raster = root / "scene.tif"
    with rasterio.open(raster, "w", driver="GTiff", width=SIZE, height=SIZE, count=3, dtype="uint8",
                       crs="EPSG:32617", transform=from_origin(*ORIGIN, PIXEL, PIXEL)) as dst:
        dst.write(image)
    to_wgs84 = Transformer.from_crs("EPSG:32617", "EPSG:4326", always_xy=True).transform
    labels = root / "labels.gpkg"
    with fiona.open(labels, "w", driver="GPKG", crs="EPSG:4326",
                    schema={"geometry": "Polygon", "properties": {"kind": "str"}}) as out:
        for kind, *pixels in SHAPES:
            out.write({"geometry": mapping(shapely.transform(_pixel_box(*pixels), lambda xy: np.column_stack(
                to_wgs84(xy[:, 0], xy[:, 1])))),
                       "properties": {"kind": kind}})
    return raster, labels


def _request(scene, out: Path, **fields) -> TrainLayersRequest:
    raster, labels = scene
    base = dict(raster=str(raster), labels=str(labels), field="kind", out=str(out), model=TINY, epochs=2, chip=64,
                stride=32, batch_size=4, validation="east", validation_fraction=0.3, device="cpu")
    return TrainLayersRequest(**{**base, **fields})


@pytest.fixture(scope="module")
def trained(scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "roofs"
    events = []
    result = train_layers(_request(scene, out, classes={"roof": "building", "pond": "water"}), events.append)
    return out, result, events


def test_a_run_writes_a_self_describing_bundle(trained):
    out, result, events = trained
    assert sorted(p.name for p in out.iterdir()) == [BUNDLE_FILE, WEIGHTS_FILE]  # run files made way for it
    info = read_bundle(out)
    assert info.classes == ["background", "building", "water"] == result.classes
    assert info.builder == "unetformer" and info.bands == [1, 2, 3] and len(info.mean) == 3
    assert info.training["field"] == "kind" and info.training["class_values"]["building"] == ["roof"]
    assert info.training["val_chips"] == result.val_chips > 0 and result.train_chips > 0
    assert set(info.metrics["iou"]) == set(info.classes) and 0.0 <= info.metrics["miou"] <= 1.0
    assert len(info.training["history"]) == result.epochs == 2
    assert len(load_file(str(out / WEIGHTS_FILE))) > 0
    epochs = [e.detail for e in events if e.stage == "train" and "val_miou" in e.detail]
    assert [d["epoch"] for d in epochs] == [1, 2] and all(set(d["iou"]) == set(info.classes) for d in epochs)
    assert any("loss" in e.detail and "val_miou" not in e.detail for e in events if e.stage == "train")


def test_the_bundle_is_a_model_id_and_segments_into_its_own_classes(trained, scene, tmp_path):
    out, result, _ = trained
    assert result.model == str(out.resolve()) and result.model in installed_bundles()
    row = next(r for r in model_rows() if r["id"] == result.model)
    assert row["bundle"] and row["classes"] == result.classes and row["state"] == "ready" and row["runnable"]
    segmented = run_segment(SegmentRequest(raster=str(scene[0]), out_dir=str(tmp_path / "seg"), model=result.model,
                                           tile=128, overlap=16, device="cpu"))
    assert [c.name for c in segmented.classes] == result.classes and Path(segmented.mask).is_file()
    some = run_segment(SegmentRequest(raster=str(scene[0]), out_dir=str(tmp_path / "seg2"), model=result.model,
                                      classes=["water", "building"], tile=128, overlap=16, device="cpu"))
    assert [c.name for c in some.classes] == ["water", "building"]


def test_the_cli_trains_and_segments_with_the_bundle(scene, tmp_path, capsys):
    raster, labels = scene
    out = tmp_path / "cli-run"
    code = cli(["train", "layers", "--raster", str(raster), "--labels", str(labels), "--field", "kind", "--sparse",
                "--validation", "west", "--model", TINY, "--out", str(out), "--epochs", "1", "--chip", "64",
                "--batch-size", "4", "--device", "cpu", "--classes", "roof=building; pond=", "--json", "--quiet"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["classes"] == ["building"] and read_bundle(out).training["mode"] == "sparse"
    assert cli(["segment", str(raster), "--model", str(out), "--out", str(tmp_path / "seg"), "--quiet"]) == 0


@pytest.mark.parametrize("change, error, words", [
    (dict(field="class"), DatasetError, "kind"),  # a missing field: the layer's fields are named
    (dict(classes={"roof": "building"}), DatasetError, "pond"),  # a value the table lacks
    (dict(chip=256), ParameterError, "smaller chip"),
    (dict(validation="blocks", chip=128, stride=128), ParameterError, "too few chips"),
    (dict(validation="blocks", chip=96, stride=96), DatasetError, "no training chip"),
    (dict(model="clip-vit-b-16"), ParameterError, "unetformer-r18"),
])
def test_bad_input_is_refused_before_training_and_leaves_nothing(scene, tmp_path, change, error, words):
    out = tmp_path / "run"
    with pytest.raises(error, match=words):
        train_layers(_request(scene, out, **change))
    assert not out.exists()


def test_an_existing_model_or_a_foreign_folder_is_never_overwritten(trained, scene, tmp_path):
    with pytest.raises(ParameterError, match="already holds a trained model"):
        train_layers(_request(scene, trained[0]))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ParameterError, match="not an empty folder"):
        train_layers(_request(scene, foreign))
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    stale = tmp_path / "killed"  # a run killed before its first epoch ended: only its own files
    (stale / CHECKPOINTS).mkdir(parents=True)
    (stale / RUN_FILE).write_text("{}")
    assert train_layers(_request(scene, stale, epochs=1)).epochs == 1
    assert sorted(p.name for p in stale.iterdir()) == [BUNDLE_FILE, WEIGHTS_FILE]


@pytest.mark.parametrize("model", [TINY, "sam-head-litemedsam-tiny"])  # the SAM head caches embeddings
def test_cancel_keeps_a_resumable_run_and_resume_matches_an_uninterrupted_run(scene, tmp_path, model):
    straight = train_layers(_request(scene, tmp_path / "straight", epochs=3, patience=0, model=model))
    cancel = CancelToken()

    def stop_after_first_epoch(event):
        if event.stage == "train" and event.detail.get("epoch") == 2 and "val_miou" not in event.detail:
            cancel.cancel()

    out = tmp_path / "paused"
    with pytest.raises(Cancelled, match="resume"):
        train_layers(_request(scene, out, epochs=3, patience=0, model=model), stop_after_first_epoch, cancel)
    assert (out / RUN_FILE).is_file() and len(list((out / CHECKPOINTS).glob("step-*.json"))) == 1
    assert not (out / BUNDLE_FILE).exists()
    with pytest.raises(ParameterError, match="unfinished run"):
        train_layers(_request(scene, out, epochs=3))
    resumed = train_layers(TrainLayersRequest(raster="-", labels="-", field="-", out=str(out), resume=True,
                                              device="cpu"))
    assert resumed.epochs == straight.epochs == 3 and resumed.metrics == straight.metrics
    a, b = load_file(str(Path(straight.model) / WEIGHTS_FILE)), load_file(str(out / WEIGHTS_FILE))
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_a_cancel_before_the_first_epoch_leaves_nothing(scene, tmp_path):
    cancel = CancelToken()
    cancel.cancel()
    out = tmp_path / "never"
    with pytest.raises(Cancelled):
        train_layers(_request(scene, out), cancel=cancel)
    assert not out.exists()


def test_the_sam_head_trains_its_decoder_and_the_bundle_holds_no_encoder(scene, tmp_path):
    result = train_layers(_request(scene, tmp_path / "head", model="sam-head-litemedsam-tiny", epochs=1))
    info = read_bundle(result.model)
    weights = load_file(str(Path(result.model) / WEIGHTS_FILE))
    assert info.builder == "sam_head" and not any(k.startswith("encoder.") for k in weights)
    assert info.config["input_mean"] == info.mean  # the frozen encoder sees the engine's [0, 1] values again
    segmented = run_segment(SegmentRequest(raster=str(scene[0]), out_dir=str(tmp_path / "seg"), model=result.model,
                                           tile=128, overlap=16, device="cpu"))
    assert [c.name for c in segmented.classes] == info.classes


def test_without_imagenet_weights_unetformer_trains_from_scratch_and_says_so(scene, tmp_path, monkeypatch):
    from rsseg.weights.store import ENV_DIR

    monkeypatch.setenv(ENV_DIR, str(tmp_path / "no-weights"))
    result = train_layers(_request(scene, tmp_path / "scratch", model="unetformer-r18", epochs=1, chip=64,
                                   batch_size=2))
    assert any("from scratch" in n and "resnet18-imagenet" in n for n in result.notes)
    assert "pretrained" not in read_bundle(result.model).config


def test_rsseg_models_lists_my_models_first_and_forget_takes_one_off(trained, capsys):
    from rsseg.bundles.index import remember_bundle

    out, result, _ = trained
    assert cli(["models"]) == 0
    listing = capsys.readouterr().out
    assert listing.startswith("My models") and result.model in listing and "background, building, water" in listing
    assert cli(["models", "forget", result.model]) == 0
    assert result.model not in installed_bundles() and out.is_dir()  # off the list, files kept
    remember_bundle(out)


def test_chips_export_for_other_tools_with_visible_masks_and_a_manifest(scene, tmp_path, capsys):
    raster, labels = scene
    out = tmp_path / "chips"
    assert cli(["train", "layers", "--raster", str(raster), "--labels", str(labels), "--field", "kind",
                "--validation", "east", "--chip", "64", "--stride", "64", "--export", str(out)]) == 0
    assert "training and" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == ["background", "pond", "roof"] and manifest["ignore_index"] == 255
    first = manifest["chips"][0]
    with rasterio.open(out / first["image"]) as img, rasterio.open(out / first["mask"]) as mask, \
            rasterio.open(raster) as src:
        assert img.count == 3 and img.dtypes[0] == "uint8" and img.crs == src.crs
        col, row = first["col"], first["row"]
        assert np.array_equal(img.read(), src.read(window=rasterio.windows.Window(col, row, 64, 64)))
        assert mask.colormap(1)[manifest["classes"].index("roof")][:3] != (0, 0, 0)  # a visible class colour
        assert set(np.unique(mask.read(1))) <= {0, 1, 2}
    assert {c["split"] for c in manifest["chips"]} == {"train", "val"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".chips")]  # no partial folder left
    with pytest.raises(ParameterError, match="not an empty folder"):
        from rsseg.training.layers_run import export_layers

        export_layers(_request(scene, out))


# -- a host model (RFM-Seg) ---------------------------------------------------------------------------------------
def test_a_host_goes_only_with_a_model_that_builds_on_one_and_is_checked_before_training(trained, scene,
                                                                                           tmp_path, capsys):
    host = trained[0]
    out = tmp_path / "run"

    def refused(words: str, **change) -> None:
        with pytest.raises(ParameterError, match=words) as info:
            train_layers(_request(scene, out, **change))
        assert info.value.subject == "host" and not out.exists()

    refused(f"{TINY} trains on its own and takes no host model: leave the host empty", host=str(host))
    refused("sam-head-litemedsam-tiny trains on its own and takes no host model", model="sam-head-litemedsam-tiny",
            host=str(host))
    refused(f"{FUSED} fuses into a unetformer model you trained before: choose that model's folder as the host",
            model=FUSED)
    refused(f"the host {tmp_path / 'gone'} does not exist: choose the folder of a unetformer model you trained",
            model=FUSED, host=str(tmp_path / "gone"))
    (tmp_path / "empty").mkdir()
    refused("empty is not a trained model folder \\(it has no model.json\\)", model=FUSED,
            host=str(tmp_path / "empty"))
    refused("scene.tif is not a trained model folder", model=FUSED, host=str(scene[0]))
    other = tmp_path / "other family"  # a trained model of another family (the manifest's builder)
    shutil.copytree(host, other)
    manifest = json.loads((other / BUNDLE_FILE).read_text())
    (other / BUNDLE_FILE).write_text(json.dumps({**manifest, "builder": "sam_head"}))
    refused(f"the host {other} is a sam_head model; {FUSED} fuses into a unetformer model", model=FUSED,
            host=str(other))
    with pytest.raises(ParameterError, match="the host model is empty"):
        train_layers(_request(scene, out, model=FUSED, host="  "))
    raster, labels = scene  # the CLI says the same in one line, exit code 2
    assert cli(["train", "layers", "--raster", str(raster), "--labels", str(labels), "--field", "kind", "--model",
                TINY, "--host", str(host), "--out", str(out), "--quiet"]) == 2
    assert "takes no host model" in capsys.readouterr().err and not out.exists()


def test_a_fused_model_records_its_host_and_a_resumed_run_keeps_it(trained, scene, tmp_path, monkeypatch):
    """The host as a user may give it ("~", the manifest rather than its folder) becomes the bundle folder's
    absolute path, in run.json (so Resume keeps it) and in the bundle's training record."""
    home = tmp_path / "home"
    shutil.copytree(trained[0], home / "trees")
    monkeypatch.setenv("HOME", str(home))
    folder = str(home / "trees")
    cancel = CancelToken()

    def stop_in_the_second_epoch(event):
        if event.stage == "train" and event.detail.get("epoch") == 2 and "val_miou" not in event.detail:
            cancel.cancel()

    out = tmp_path / "fused"
    request = _request(scene, out, model=FUSED, host="~/trees/model.json", epochs=2, patience=0,
                       classes={"roof": "building", "pond": "water"})  # the host's classes
    with pytest.raises(Cancelled, match="resume"):
        train_layers(request, stop_in_the_second_epoch, cancel)
    assert json.loads((out / RUN_FILE).read_text())["host"] == folder
    resumed = train_layers(TrainLayersRequest(raster="-", labels="-", field="-", out=str(out), resume=True,
                                              device="cpu"))
    info = read_bundle(resumed.model)
    assert resumed.epochs == 2 and info.builder == "rfm_seg" and info.training["host"] == folder
    assert info.training["model"] == FUSED
    assert read_bundle(trained[0]).training["host"] is None  # a model that builds on none records none


def test_the_cli_s_host_option():
    from rsseg.training.layers_cli import add_train_layers_parser, request_from_args

    parser = argparse.ArgumentParser()
    command = add_train_layers_parser(parser.add_subparsers())
    common = ["train-layers", "--raster", "a.tif", "--labels", "l.gpkg", "--field", "kind", "--out", "run"]
    args = parser.parse_args([*common, "--model", "rfm-seg-r18-rn50", "--host", "~/models/trees"])
    assert request_from_args(args).host == "~/models/trees"  # resolved by the run, as the worker's is
    assert request_from_args(parser.parse_args(common)).host is None
    with pytest.raises(ParameterError, match="a resumed run keeps the host it started with: leave out --host"):
        request_from_args(parser.parse_args(["train-layers", "--resume", "run", "--host", "x"]))
    assert "--host BUNDLE" in command.format_help()
