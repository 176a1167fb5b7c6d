"""Bad input gives one specific RssegError whose message names the file or parameter and says what
was expected; the CLI turns it into exit code 2 and one `rsseg: error:` line; nothing is written.

Inputs are the real fixtures of tests/data (read only) and rasters made in tmp_path.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from rsseg.cli.main import main
from rsseg.errors import (
    AllNodataError,
    BandError,
    DeviceError,
    ModelError,
    NotARasterError,
    OutputError,
    ParameterError,
    RasterNotFoundError,
    RegionError,
    RssegError,
)
from rsseg.protocol.contracts import RegionSpec, SegmentRequest
from rsseg.service.segment import run_segment

DATA = Path(__file__).parents[1] / "data"
PAN = DATA / "spacenet_atlanta_pan.tif"  # 1 band UInt16, nodata 0, EPSG:32616, 900x900, 0.5 m
NEON = DATA / "neon_osbs_rgb.tif"  # 3 bands Byte, nodata 255, EPSG:32617, 400x400

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")


def tree(path: Path) -> dict[str, bytes]:
    """Every file under `path` (hidden ones included) with its content."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()} | \
        {str(p.relative_to(path)) + "/": b"" for p in sorted(path.rglob("*")) if p.is_dir()}


def pan_bounds():
    with rasterio.open(PAN) as src:
        return src.bounds, src.transform, src.crs


def make_request(out, **kw) -> SegmentRequest:
    kw.setdefault("raster", str(PAN))
    if "sentence" not in kw:
        kw.setdefault("classes", ["building", "road"])
    kw.setdefault("tile", 128)
    kw.setdefault("overlap", 32)
    kw.setdefault("device", "cpu")
    return SegmentRequest(out_dir=str(out), **kw)


@pytest.fixture
def inputs(tmp_path):
    """Bad inputs made in tmp_path: a text file named .tif, a folder named .tif, an all-nodata copy
    of the UInt16 pan, an all-NaN float raster, a two-band raster and a regular file `afile`."""
    d = tmp_path / "inputs"
    d.mkdir()
    (d / "notes.tif").write_text("this is not a GeoTIFF\n")
    (d / "folder.tif").mkdir()
    shutil.copy(PAN, d / "all_nodata.tif")
    with rasterio.open(d / "all_nodata.tif", "r+") as ds:
        ds.write(np.zeros((ds.count, ds.height, ds.width), ds.dtypes[0]))
    prof = dict(driver="GTiff", width=64, height=48, crs="EPSG:32616",
                transform=Affine(1.0, 0.0, 733600.0, 0.0, -1.0, 3725200.0))
    with rasterio.open(d / "nan.tif", "w", count=1, dtype="float32", **prof) as ds:
        ds.write(np.full((1, 48, 64), np.nan, np.float32))
    with rasterio.open(d / "two_bands.tif", "w", count=2, dtype="uint8", **prof) as ds:
        ds.write(np.random.default_rng(0).integers(0, 200, (2, 48, 64), dtype=np.uint8))
    (d / "afile").write_text("keep me\n")
    return d


# ----------------------------------------------------------------------------------------------
# run_segment: one specific exception per kind of bad input, nothing written


def _cases(d: Path):
    b, t, _ = pan_bounds()
    cx, cy = (b.left + b.right) / 2, (b.bottom + b.top) / 2
    outside = [[(b.left - 500, b.bottom - 500), (b.left - 400, b.bottom - 500), (b.left - 400, b.bottom - 400),
                (b.left - 500, b.bottom - 500)]]
    return {
        # id: (request kwargs, exception, message fragments)
        "missing-file": (dict(raster=str(d / "missing.tif")), RasterNotFoundError,
                         [str(d / "missing.tif"), "not found"]),
        "text-file-named-tif": (dict(raster=str(d / "notes.tif")), NotARasterError,
                                [str(d / "notes.tif"), "not a raster", "GeoTIFF"]),
        "directory": (dict(raster=str(d / "folder.tif")), NotARasterError,
                      [str(d / "folder.tif"), "directory", "GeoTIFF"]),
        "band-out-of-range-pan": (dict(bands=(2,)), BandError, ["band 2", PAN.name, "1 band", "1..1"]),
        "band-out-of-range-rgb": (dict(raster=str(NEON), bands=(3, 2, 4)), BandError,
                                  ["band 4", NEON.name, "3 band", "1..3"]),
        "band-zero": (dict(raster=str(NEON), bands=(0,)), BandError, ["band 0", NEON.name, "1..3"]),
        "two-bands-for-three-inputs": (dict(raster=str(NEON), bands=(1, 2)), BandError,
                                       [NEON.name, "takes 3", "2 were given", "1,2"]),
        "four-bands-for-three-inputs": (dict(raster=str(NEON), bands=(1, 2, 3, 1)), BandError,
                                        [NEON.name, "takes 3", "4 were given"]),
        "two-band-raster-no-mapping": (dict(raster=str(d / "two_bands.tif")), BandError,
                                       ["two_bands.tif", "2 bands", "takes 3", "--bands"]),
        "bbox-inverted": (dict(region=RegionSpec(bbox=(cx + 10, cy - 10, cx - 10, cy + 10))), RegionError,
                          ["bbox", "empty or invalid", "minx < maxx"]),
        "bbox-inverted-y": (dict(region=RegionSpec(bbox=(cx - 10, cy + 10, cx + 10, cy - 10))), RegionError,
                            ["bbox", "empty or invalid", "miny < maxy"]),
        "bbox-empty": (dict(region=RegionSpec(bbox=(cx, cy - 10, cx, cy + 10))), RegionError,
                       ["bbox", "empty or invalid"]),
        "bbox-nan": (dict(region=RegionSpec(bbox=(float("nan"), cy - 10, cx, cy + 10))), RegionError,
                     ["bbox", "empty or invalid"]),
        "bbox-outside": (dict(region=RegionSpec(bbox=(b.right + 10, b.top + 10, b.right + 50, b.top + 50))),
                         RegionError, ["bbox", "outside", PAN.name, "raster bounds", "EPSG:32616"]),
        "bbox-outside-lonlat": (dict(region=RegionSpec(bbox=(2.0, 48.0, 3.0, 49.0), bbox_crs="EPSG:4326")),
                                RegionError, ["EPSG:4326", "outside", PAN.name, "EPSG:32616"]),
        "bbox-bad-crs": (dict(region=RegionSpec(bbox=(cx - 10, cy - 10, cx + 10, cy + 10), bbox_crs="EPSG:999999")),
                         RegionError, ["EPSG:999999", "CRS", "EPSG:4326"]),
        "bbox-garbage-crs": (dict(region=RegionSpec(bbox=(cx - 10, cy - 10, cx + 10, cy + 10),
                                                    bbox_crs="not a crs")),
                             RegionError, ["'not a crs'", "CRS"]),
        "polygons-outside": (dict(region=RegionSpec(polygons=[{"type": "Polygon", "coordinates": outside}])),
                             RegionError, ["polygon", "outside", PAN.name]),
        "polygons-bad-crs": (dict(region=RegionSpec(polygons=[{"type": "Polygon", "coordinates": outside}],
                                                    polygons_crs="EPSG:999999")),
                             RegionError, ["EPSG:999999", "polygon"]),
        "polygons-malformed": (dict(region=RegionSpec(polygons=[{"type": "Polygon", "coordinates": [[1, 2]]}])),
                               RegionError, ["polygon", "GeoJSON"]),
        "all-nodata-raster": (dict(raster=str(d / "all_nodata.tif")), AllNodataError,
                              [str(d / "all_nodata.tif"), "no valid pixel", "nodata"]),
        "all-nan-raster": (dict(raster=str(d / "nan.tif")), AllNodataError, [str(d / "nan.tif"), "NaN"]),
        "out-is-a-file": (dict(out_dir=str(d / "afile")), OutputError, [str(d / "afile")]),
        "out-under-a-file": (dict(out_dir=str(d / "afile" / "out")), OutputError, [str(d / "afile" / "out")]),
        "tile-too-small": (dict(tile=8, overlap=0), ParameterError, ["tile size", "16", "got 8"]),
        "overlap-too-large": (dict(tile=128, overlap=65), ParameterError, ["overlap", "64", "got 65"]),
        "overlap-negative": (dict(overlap=-1), ParameterError, ["overlap", "got -1"]),
        "batch-size-negative": (dict(batch_size=-1), ParameterError, ["batch size", "got -1"]),
        "unknown-model": (dict(model="no-such-model"), ModelError, ["'no-such-model'", "test", "rsseg models"]),
        "empty-class-list": (dict(classes=[]), ModelError, ["prompt is empty", "class list"]),
        "blank-class-names": (dict(classes=["", "  "]), ParameterError, ["names no class"]),
        "blank-sentence": (dict(classes=None, sentence="   "), ModelError, ["prompt is empty"]),
        "class-name-too-long": (dict(classes=["road", "x" * 10_000]), ParameterError,
                                ["classes[1]", "10000 characters", "at most 100"]),
        "sentence-too-long": (dict(classes=None, sentence="the red roof " * 800), ParameterError,
                              ["sentence is 10399 characters", "at most 1000"]),
        "classes-and-sentence": (dict(classes=["building"], sentence="the white building"), ModelError,
                                 ["either a class list or a referring sentence"]),
        "no-prompt": (dict(classes=None), ModelError, ["either a class list or a referring sentence"]),
        "unknown-device": (dict(device="tpu"), DeviceError, ["'tpu'", "cpu"]),
    }


CASE_IDS = list(_cases(Path("/x")))


@pytest.mark.parametrize("case", CASE_IDS)
def test_bad_input_raises_specific_error(tmp_path, inputs, case):
    kwargs, exc_type, fragments = _cases(inputs)[case]
    out = Path(kwargs.pop("out_dir", tmp_path / "out"))
    before = tree(tmp_path)
    with pytest.raises(exc_type) as info:
        run_segment(make_request(out, **kwargs))
    message = info.value.text("cli")  # as the CLI prints it: the message and its fixes as commands
    assert isinstance(info.value, RssegError) and "`" not in str(info.value)
    assert "\n" not in message.strip()
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert tree(tmp_path) == before  # no output folder, no file, no hidden leftover
    assert not (tmp_path / "out").exists()


def test_all_nodata_region_of_a_valid_raster(tmp_path):
    """A bbox over a nodata block of an otherwise valid raster: AllNodataError, nothing written."""
    path = tmp_path / "pan.tif"
    shutil.copy(PAN, path)
    with rasterio.open(path, "r+") as ds:
        data = ds.read()
        data[:, 100:300, 100:300] = 0
        ds.write(data)
        t = ds.transform
    bbox = (t.c + 120 * t.a, t.f + 280 * t.e, t.c + 280 * t.a, t.f + 120 * t.e)
    out = tmp_path / "out"
    with pytest.raises(AllNodataError, match="no valid pixel"):
        run_segment(make_request(out, raster=str(path), region=RegionSpec(bbox=bbox)))
    assert not out.exists()
    # the same box one block to the right holds data
    bbox_ok = (bbox[0] + 300 * t.a, bbox[1], bbox[2] + 300 * t.a, bbox[3])
    result = run_segment(make_request(out, raster=str(path), region=RegionSpec(bbox=bbox_ok), vectorise=False))
    assert (result.width, result.height) == (160, 160)


def test_output_error_leaves_the_file_alone(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    for out in (afile, afile / "out", afile / "out" / "deeper"):
        with pytest.raises(OutputError) as info:
            run_segment(make_request(out))
        assert str(out) in str(info.value)
    assert afile.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


# ----------------------------------------------------------------------------------------------
# stretch parameters (regressions: at 6be8440 out-of-range percentiles escaped as numpy's ValueError,
# shown by the CLI as an internal error with exit 1, and value_range low == high divided by zero and
# "succeeded")


@pytest.mark.parametrize("percentiles", [(2.0, 150.0), (-5.0, 98.0), (98.0, 2.0), (50.0, 50.0)])
def test_percentiles_out_of_range(tmp_path, percentiles):
    out = tmp_path / "out"
    with pytest.raises(ParameterError, match="percentile") as info:
        run_segment(make_request(out, percentiles=percentiles))
    assert str(percentiles[0]) in str(info.value) and str(percentiles[1]) in str(info.value)
    assert not out.exists()


@pytest.mark.parametrize("value_range", [(500.0, 500.0), (1000.0, 500.0), (0.0, float("inf"))])
def test_value_range_without_span(tmp_path, value_range):
    out = tmp_path / "out"
    with pytest.raises(ParameterError, match="value range"):
        run_segment(make_request(out, value_range=value_range, vectorise=False))
    assert not out.exists()


@pytest.mark.parametrize("params, fragment", [
    ({"threshold": 1.5}, "threshold"), ({"threshold": -0.1}, "threshold"),
    ({"simplify_tolerance": -1.0}, "must not be negative"), ({"min_area_m2": -5.0}, "must not be negative"),
])
def test_job_parameters_out_of_range(tmp_path, params, fragment):
    out = tmp_path / "out"
    with pytest.raises(ParameterError, match=fragment):
        run_segment(make_request(out, **params))
    assert not out.exists()


def test_cli_usage_error_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["segment", str(PAN), "--classes", "a", "--sentence", "b", "--out", str(tmp_path / "o")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rsseg segment: error:") and "--sentence" in err[0]
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------------------------
# the CLI: exit 2, one line on stderr, no traceback, nothing written


def _cli_cases(d: Path, out: Path):
    b, _, _ = pan_bounds()
    cx, cy = (b.left + b.right) / 2, (b.bottom + b.top) / 2
    seg = ["segment", str(PAN), "--classes", "building,road", "--tile", "128", "--overlap", "32",
           "--device", "cpu", "--out", str(out)]
    return {
        "missing-file": (["segment", str(d / "missing.tif"), "--classes", "a", "--out", str(out)],
                         ["missing.tif", "not found"]),
        "text-file-named-tif": (["segment", str(d / "notes.tif"), "--classes", "a", "--out", str(out)],
                                ["notes.tif", "not a raster"]),
        "directory": (["segment", str(d / "folder.tif"), "--classes", "a", "--out", str(out)],
                      ["folder.tif", "directory"]),
        "band-out-of-range": (seg + ["--bands", "2"], ["band 2", "1 band"]),
        "wrong-band-count": (["segment", str(NEON), "--classes", "tree", "--bands", "1,2", "--out", str(out)],
                             ["takes 3", "2 were given"]),
        "bbox-inverted": (seg + ["--bbox", f"{cx + 10},{cy - 10},{cx - 10},{cy + 10}"], ["empty or invalid"]),
        "bbox-outside": (seg + ["--bbox", "2,48,3,49", "--bbox-crs", "EPSG:4326"], ["outside", PAN.name]),
        "bbox-bad-crs": (seg + ["--bbox", "2,48,3,49", "--bbox-crs", "EPSG:999999"], ["EPSG:999999"]),
        "all-nodata": (["segment", str(d / "all_nodata.tif"), "--classes", "a", "--out", str(out)],
                       ["all_nodata.tif", "no valid pixel"]),
        "out-under-a-file": (seg[:-1] + [str(d / "afile" / "out")], ["afile"]),
        "tile-too-small": (seg + ["--tile", "8", "--overlap", "0"], ["tile size", "got 8"]),
        "overlap-too-large": (seg + ["--overlap", "100"], ["overlap", "got 100"]),
        "unknown-model": (seg + ["--model", "nope"], ["'nope'", "test"]),
        "empty-class-list": (["segment", str(PAN), "--classes", " , ", "--out", str(out)], ["prompt is empty"]),
        "unknown-device": (seg + ["--device", "tpu"], ["'tpu'"]),
        "percentiles-out-of-range": (seg + ["--percentiles", "2,150"], ["percentiles", "150"]),
        "value-range-without-span": (seg + ["--value-range", "500,500"], ["value range", "500"]),
    }


CLI_IDS = list(_cli_cases(Path("/x"), Path("/y")))


@pytest.mark.parametrize("case", CLI_IDS)
def test_cli_error_is_one_line(tmp_path, inputs, capsys, case):
    out = tmp_path / "out"
    argv, fragments = _cli_cases(inputs, out)[case]
    before = tree(tmp_path)
    code = main(argv + ["--quiet"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("rsseg: error: ")
    assert "Traceback" not in captured.err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert tree(tmp_path) == before
    assert not out.exists()


def test_cli_debug_shows_the_exception(tmp_path, inputs):
    with pytest.raises(RasterNotFoundError):
        main(["--debug", "segment", str(inputs / "missing.tif"), "--classes", "a", "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


def test_cli_classes_and_sentence_are_exclusive(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["segment", str(PAN), "--classes", "a", "--sentence", "the a", "--out", str(tmp_path / "out")])
    assert info.value.code == 2
    assert "not allowed with" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", [["--bbox", "1,2,3"], ["--bands", "1,x"], ["--percentiles", "2"]])
def test_cli_malformed_numbers_are_usage_errors(tmp_path, capsys, bad):
    with pytest.raises(SystemExit) as info:
        main(["segment", str(PAN), "--classes", "a", "--out", str(tmp_path / "out")] + bad)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert bad[0] in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_cli_percentiles_out_of_range_is_an_input_error(tmp_path, capsys):
    """Regression: at 6be8440 this was 'rsseg: internal error: ValueError ...' with exit code 1."""
    code = main(["segment", str(PAN), "--classes", "a", "--percentiles", "2,150", "--quiet",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("rsseg: error: ") and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_cli_models_json(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert isinstance(rows, list)
    test = [r for r in rows if r["id"] == "test"]
    assert len(test) == 1
    assert test[0]["task"] == "both" and test[0]["weights_present"] is True and test[0]["real"] is False


def test_cli_segment_json_prints_the_result_record(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["segment", str(NEON), "--classes", "tree, grass,soil", "--tile", "128", "--overlap", "32",
                 "--device", "cpu", "--scores", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0
    record = json.loads(captured.out)
    assert record == json.loads((out / "result.json").read_text())
    assert record["mask"] == str(out / "mask.tif") and record["scores"] == str(out / "scores.tif")
    assert record["polygons"] == str(out / "polygons.gpkg")
    assert [c["name"] for c in record["classes"]] == ["tree", "grass", "soil"]
    assert record["request"]["classes"] == ["tree", "grass", "soil"]
    assert (record["width"], record["height"]) == (400, 400)
    assert "Traceback" not in captured.err and "segmenting" not in captured.err  # --json: no progress bars
    with rasterio.open(out / "mask.tif") as ds:
        counts = np.bincount(ds.read(1).ravel(), minlength=256)
    assert [c["pixels"] for c in record["classes"]] == counts[1:4].tolist()
    assert sorted(p.name for p in out.iterdir()) == ["mask.tif", "polygons.gpkg", "result.json", "scores.tif"]


def test_cli_segment_summary(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["segment", str(PAN), "--sentence", "the white building", "--tile", "256", "--overlap", "32",
                 "--device", "cpu", "--no-polygons", "--quiet", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out.splitlines()[0] == f"mask      {out / 'mask.tif'}"
    assert "900x900 px" in captured.out and "EPSG:32616" in captured.out
    assert "the white building" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["mask.tif", "result.json"]
