"""CLI verbs not covered elsewhere: doctor, demo, bench (tiny sizes), models."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio

from rsseg.cli.main import main
from rsseg.models import MODELS
from rsseg.protocol import PROTOCOL_VERSION

ROOT = Path(__file__).parents[2]
SAMPLE = ROOT / "resources" / "sample" / "neon_osbs_rgb.tif"


def test_doctor_markdown(capsys):
    assert main(["doctor", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("## rsseg environment") and "| torchvision |" in out
    assert "| test | both | none needed |" in out
    assert "| worker round trip | ok: started in " in out and f"(protocol {PROTOCOL_VERSION})" in out


def test_doctor_reports_weight_state_and_a_broken_worker(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RSSEG_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "shadow"))  # the worker imports a broken rsseg
    (tmp_path / "shadow" / "rsseg").mkdir(parents=True)
    (tmp_path / "shadow" / "rsseg" / "__init__.py").write_text("raise ImportError('broken backend install')\n")
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["worker"]["ok"] is False and "did not start" in report["worker"]["error"]
    sam = next(m for m in report["models"] if m["id"] == "sam-vit-b")
    assert sam["weights"] == "sam_vit_b_01ec64.pth (missing)"


def test_demo_runs_the_sample_with_the_test_model(tmp_path, capsys):
    assert main(["demo", "--sample", str(SAMPLE), "--out", str(tmp_path / "demo")]) == 0
    captured = capsys.readouterr()
    assert "clip-vit-b-16 are not installed" in captured.err and "`test`" in captured.err
    assert f"Outputs are in {tmp_path / 'demo'}" in captured.out
    record = json.loads((tmp_path / "demo" / "result.json").read_text())
    with rasterio.open(SAMPLE) as src, rasterio.open(record["mask"]) as mask:
        assert (mask.crs, mask.transform, mask.shape) == (src.crs, src.transform, src.shape)
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["mask.tif", "polygons.gpkg", "result.json"]


def test_bench_prints_a_table(tmp_path, capsys):
    # --repeat: the job and the reference three times each in turn, the median run in the rows
    assert main(["bench", "--sizes", "256", "--repeat", "3", "--speckle-sizes", "128", "--vit-size", "0",
                 "--clip-size", "0",
                 "--rsrefseg-size", "0", "--zs-ref-size", "0", "--rfm-size", "0", "--sgseg-size", "0", "--tile", "128",
                 "--overlap", "16", "--json", "--batch-rasters", "0", "--workdir", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = [r for r in out if not r.get("yardstick")]
    assert [(r["model"], r["raster"], r["tiles"]) for r in rows] == [("test", "256x256", 9),
                                                                      ("test speckle", "128x128", 1)]
    assert rows[0]["peak_rss_mb"] >= rows[0]["raster_pass_rss_mb"] > 0
    assert 0 < rows[0]["outside_model_pct"] < 100
    assert rows[1]["polygons"] > 500  # per-pixel noise: a region per twenty-odd pixels
    checks = {r["raster"]: r for r in out if r.get("yardstick")}
    assert set(checks) == {"256x256", "128x128 speckle"} and checks["128x128 speckle"]["ratio_to_gdal"] == "n/a"
    reference = checks["256x256"]["gdal_reference_s"]  # GDAL's tools, where gdal-bin is installed
    assert reference == "n/a" or checks["256x256"]["ratio_to_gdal"] == pytest.approx(rows[0]["wall_s"] / reference,
                                                                                       rel=0.05)


@pytest.mark.parametrize("model", ["rsrefseg-test", "zs-ref-clip-b16-sam-b-tiny"])
def test_bench_referring_rows_run_two_sentences_on_one_tile(tmp_path, capsys, model):
    # the real-size defaults (CLIP ViT-B/16 + SAM ViT-B, random) are too slow for a test: the tiny models
    assert main(["bench", "--sizes", "", "--speckle-sizes", "", "--vit-size", "0", "--clip-size", "0",
                 "--rsrefseg-size", "96",
                 "--zs-ref-size", "0", "--rfm-size", "0", "--sgseg-size", "0", "--rsrefseg-model", model, "--json",
                 "--batch-rasters", "0", "--workdir", str(tmp_path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == [model, f"{model}, 2nd sentence"]
    assert all(r["raster"] == "96x96" and r["tiles"] == 1 for r in rows)


@pytest.mark.parametrize("flag, model", [("--rfm-size", "rfm-seg-r18-rn50-random"),
                                         ("--sgseg-size", "sgseg-vit-b-16-random")])
def test_bench_encoder_split_rows_reuse_the_encoders_for_another_prompt(tmp_path, capsys, flag, model):
    # the real architectures (ResNet-18 host + RN50; CLIP ViT-B/16 at 384-px windows), random weights, one small tile
    sizes = {"--rfm-size": "0", "--sgseg-size": "0", flag: "96"}
    assert main(["bench", "--sizes", "", "--speckle-sizes", "", "--vit-size", "0", "--clip-size", "0",
                 "--rsrefseg-size", "0",
                 "--zs-ref-size", "0", *(v for pair in sizes.items() for v in pair), "--tile", "96", "--overlap", "0",
                 "--json", "--batch-rasters", "0", "--workdir", str(tmp_path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == [model, f"{model}, 2nd prompt"]
    assert all(r["raster"] == "96x96" and r["tiles"] == 1 for r in rows)


def test_models_table_and_json_show_rsrefseg_parameter_counts(capsys):
    assert main(["models"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}  # any "My models"
    assert lines["rsrefseg-test"].endswith("[parameters: 275,753 trainable of 4,077,354]")
    assert "parameters" not in lines["test"]
    assert main(["models", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert (rows["rsrefseg-test"]["parameters_trainable"],
            rows["rsrefseg-test"]["parameters_total"]) == (275_753, 4_077_354)
    assert rows["sam-vit-b"]["parameters_trainable"] is None and rows["sam-vit-b"]["parameters_total"] is None


def test_demo_download_that_fails_falls_back_to_the_test_model(tmp_path, monkeypatch, capsys):
    import socket

    with socket.socket() as sock:  # a local port nobody listens on: the download fails at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("RSSEG_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("RSSEG_WEIGHTS_MIRROR", f"http://127.0.0.1:{port}")
    spec = MODELS["clip-vit-b-16"]
    monkeypatch.setitem(MODELS, "clip-vit-b-16", replace(spec, weights=(replace(spec.weights[0], urls=()),)))
    assert main(["demo", "--download", "--sample", str(SAMPLE), "--out", str(tmp_path / "demo")]) == 0
    err = capsys.readouterr().err
    assert "Could not download the demo model clip-vit-b-16" in err and "127.0.0.1" in err and "`test`" in err
    assert (tmp_path / "demo" / "mask.tif").exists()


def test_class_list_syntax_with_synonyms():
    from rsseg.protocol.contracts import parse_class_list as classes

    assert classes("building, road,tree ,") == ["building", "road", "tree"]
    assert classes("road, parking lot; tree;\nwater") == ["road, parking lot", "tree", "water"]
    assert classes("road, parking lot\ntree\n\n") == ["road, parking lot", "tree"]  # one class per line
    assert classes("  ;  ,") == []


def test_segment_nodata_option_blanks_a_zero_collar(tmp_path, capsys):
    """`--nodata 0`: a black collar the file does not flag (NEON declares 255) is nodata, not a class."""
    path = tmp_path / "collar.tif"
    shutil.copy(ROOT / "tests" / "data" / "neon_osbs_rgb.tif", path)
    with rasterio.open(path, "r+") as ds:
        data = ds.read()
        data[:, :16] = 0
        ds.write(data)
    args = ["segment", str(path), "--classes", "tree, water", "--tile", "128", "--overlap", "32", "--no-polygons",
            "--quiet", "--json", "--out"]
    assert main([*args, str(tmp_path / "out"), "--nodata", "0"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["request"]["nodata"] == 0 and record["nodata_pixels"] == 16 * 400
    with rasterio.open(tmp_path / "out" / "mask.tif") as ds:
        assert (ds.read(1)[:16] == 255).all() and (ds.read(1)[16:] != 255).all()
    assert np.count_nonzero(data == 0) == 3 * 16 * 400
    assert main([*args, str(tmp_path / "nan"), "--nodata", "nan"]) == 2
    assert "nodata value must be a finite number, got nan" in capsys.readouterr().err
    assert not (tmp_path / "nan").exists()


def test_an_offline_demo_trains_on_the_sample_labels_and_segments_with_that_model(tmp_path, monkeypatch, capsys):
    """`make demo` without the CLIP weights: the bundled labels train a UNetFormer (one epoch here; the demo
    runs DEMO_EPOCHS), the sample is segmented into its classes, and a second demo reuses the model."""
    import rsseg.cli.main as cli_main

    monkeypatch.setenv("RSSEG_WEIGHTS_DIR", str(tmp_path / "weights"))  # nothing installed, nothing downloaded
    monkeypatch.setenv("RSSEG_MODELS_DIR", str(tmp_path / "models"))  # the trained model joins this test's list
    monkeypatch.setattr(cli_main, "DEMO_EPOCHS", 1)
    out = tmp_path / "demo"
    args = ["demo", "--sample", str(SAMPLE), "--labels", str(SAMPLE.with_name("neon_osbs_labels.geojson")),
            "--out", str(out)]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "training a small model" in captured.err and "epoch 1/1" in captured.err
    record = json.loads((out / "result.json").read_text())
    assert sorted(c["name"] for c in record["classes"]) == ["ground", "tree"]
    assert record["request"]["model"] == str((out / "model").resolve())
    assert main(args) == 0
    assert "Using the model trained by an earlier demo run" in capsys.readouterr().err
