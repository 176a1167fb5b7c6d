"""Tests for what the raster engine writes, on real rasterio files: class colours (palette), the class
raster writer, and the staging of output files (StagedFile, prepare_out_dir)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from rsseg.errors import OutputError
from rsseg.protocol.contracts import NODATA, UNLABELLED
from rsseg.raster.outputs import StagedFile, prepare_out_dir
from rsseg.raster.palette import _COLOURS, _MEANINGS, MIN_DISTANCE, SENTENCE_COLOUR, class_colours, colour_table
from rsseg.raster.writer import BLOCK, ClassRasterWriter

UTM33 = CRS.from_epsg(32633)
T = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def test_colour_table():
    names = ["alpha", "beta", "gamma"]  # no known meaning: the qualitative palette in class order
    table = colour_table(names)
    assert set(table) == {0, 1, 2, 3, 255}
    assert table[UNLABELLED] == table[NODATA] == (0, 0, 0, 0)  # transparent
    assert table[1] == (0x1F, 0x77, 0xB4, 255) and table[2] == (0xFF, 0x7F, 0x0E, 255)
    for i, colour in enumerate(class_colours(names), start=1):
        assert table[i] == (*_rgb(colour), 255)
    assert len({table[i] for i in (1, 2, 3)}) == 3
    full = colour_table([f"class {i}" for i in range(1, 255)])
    assert set(full) == set(range(256))
    assert len({full[i] for i in range(1, 21)}) == 20 and full[21] == full[1]  # 20 colours, then repeats
    sentence = class_colours(["the water tower"], sentence=True)
    assert colour_table(["the water tower"], sentence=True)[1] == (255, 0, 255, 255) and sentence == [SENTENCE_COLOUR]


DEMO = {"tree": "#238b45", "grass": "#a6d96a", "bare soil, sand": "#d2b48c", "shadow": "#252525"}


@pytest.mark.parametrize("names, expected", [
    (list(DEMO), list(DEMO.values())),  # `rsseg demo`'s classes
    (["building", "road", "tree", "water"], ["#e31a1c", "#737373", "#238b45", "#1f78b4"]),  # the example prompt
    (["Water Bodies", "Trees", "LAWNS", "Houses", "streets", "bare ground"],  # plurals, case
     ["#1f78b4", "#238b45", "#a6d96a", "#e31a1c", "#737373", "#d2b48c"]),
    (["crop", "field", "snow", "cloud", "wetland"], ["#ffd92f", "#fee391", "#c6e9ff", "#f5f5f5", "#2a9d8f"]),
    (["tall trees", "tree shadows", "red roofs", "parking lots"],  # the longest known phrase, the last on a tie
     ["#238b45", "#252525", "#e31a1c", "#737373"]),
])
def test_known_classes_get_their_conventional_colour(names, expected):
    assert class_colours(names) == expected


@pytest.mark.parametrize("benchmark, expected", [
    ("vaihingen", ["#737373", "#e31a1c", "#a6d96a", "#238b45", "#ff7f00", "#d0d0d0"]),
    ("potsdam", ["#737373", "#e31a1c", "#a6d96a", "#238b45", "#ff7f00", "#d0d0d0"]),
    ("loveda", ["#d0d0d0", "#e31a1c", "#737373", "#1f78b4", "#d2b48c", "#00441b", "#ffd92f"]),
    ("openearthmap", ["#d0d0d0", "#d2b48c", "#a6d96a", "#737373", "#a3a3a3", "#238b45", "#1f78b4", "#ffd92f",
                      "#e31a1c"]),  # pavement and road: two greys
])
def test_benchmark_classes_get_their_usual_colours(benchmark, expected):
    from rsseg.datasets.class_files import builtin_classnames, load_classnames

    assert class_colours(load_classnames(builtin_classnames(f"{benchmark}.txt"))) == expected


def test_classes_of_one_meaning_get_distinct_shades_and_others_skip_them():
    greens = class_colours(["tree", "forest", "woodland", "vegetation", "shrubs"])
    assert len(set(greens)) == 5 and greens[:2] == ["#238b45", "#00441b"]
    assert class_colours(["forest", "tree"]) == ["#00441b", "#238b45"]  # each its own shade, in any order
    waters = class_colours(["water", "river", "lakes", "sea"])
    assert waters[0] == "#1f78b4" and len(set(waters)) == 4
    assert class_colours(["lake", "lakes"]) == ["#1f78b4", "#6baed6"]  # the same word twice: a second shade
    # unknown classes take the palette, skipping a colour a known class already reads as (blue, water)
    assert class_colours(["helipad", "water"]) == ["#ff7f0e", "#1f78b4"]
    assert class_colours(["solar panel", "greenhouse"]) == list(_COLOURS[:2])
    colours = class_colours(["water", "lake", "river", "pond", "ocean", "tree", "x", "y"])
    assert len(set(colours)) == len(colours)
    for a in range(len(colours)):
        for b in range(a):
            assert colours[a] != colours[b]
    for shades, _ in _MEANINGS.values():  # every meaning's shades read as different colours
        for a, first in enumerate(shades):
            for second in shades[a + 1:]:
                assert np.linalg.norm(np.subtract(_rgb(first), _rgb(second))) >= MIN_DISTANCE


def test_class_raster_writer(tmp_path):
    out = prepare_out_dir(tmp_path / "out")
    mask, scores = StagedFile(out / "mask.tif"), StagedFile(out / "scores.tif")
    names = ["building", "road", "tree"]
    writer = ClassRasterWriter(mask, scores, UTM33, T, 300, 200, names, "building, road, tree", False)
    classes = np.tile(np.arange(300, dtype=np.uint8) % 5, (200, 1))
    classes[classes == 4] = NODATA
    values = np.where(classes == NODATA, np.nan, 0.5).astype(np.float32)
    writer.write(Window(0, 0, 256, 200), classes[:, :256], values[:, :256])
    writer.write(Window(256, 0, 44, 200), classes[:, 256:], values[:, 256:])
    writer.close()
    writer.close()  # idempotent
    assert mask.temp.exists() and not mask.final.exists()  # nothing final before commit
    mask.commit()
    scores.commit()
    with rasterio.open(mask.final) as ds:
        assert ds.dtypes == ("uint8",) and ds.nodata == NODATA and ds.crs == UTM33 and ds.transform == T
        assert ds.block_shapes == [(BLOCK, BLOCK)] and ds.compression.value == "DEFLATE"
        np.testing.assert_array_equal(ds.read(1), classes)
        cmap = ds.colormap(1)
        for i, rgba in colour_table(names).items():
            assert cmap[i][:3] == rgba[:3]  # colours (a GeoTIFF palette has no alpha; the plugin styles 0 and 255)
        tags = ds.tags()
        assert json.loads(tags["CLASS_NAMES"]) == {"0": "unlabelled", "1": "building", "2": "road", "3": "tree"}
        assert tags["PROMPT"] == "building, road, tree" and tags["CLASS_2"] == "road"
    with rasterio.open(scores.final) as ds:
        assert ds.dtypes == ("float32",) and np.isnan(ds.nodata)
        np.testing.assert_array_equal(ds.read(1), values)
    assert sorted(p.name for p in out.iterdir()) == ["mask.tif", "scores.tif"]


def test_staged_file_commit_and_discard(tmp_path):
    final = tmp_path / "mask.tif"
    a, b = StagedFile(final), StagedFile(final)
    assert a.temp.parent == tmp_path and a.temp.name.startswith(".") and a.temp.suffix == ".tif"
    assert a.temp != b.temp and "mask" in a.temp.name and a.temp != final
    a.discard()  # nothing written yet: no error
    a.temp.write_text("done")
    a.commit()
    assert final.read_text() == "done" and not a.temp.exists()
    a.discard()  # after commit: the final file stays
    assert final.exists()
    b.temp.write_text("partial")
    sidecars = [tmp_path / f"{b.temp.name}{s}" for s in (".aux.xml", "-wal", "-shm", "-journal")]
    for s in sidecars:
        s.write_text("x")
    b.discard()
    assert not b.temp.exists() and not any(s.exists() for s in sidecars)
    assert final.read_text() == "done"  # the earlier result is untouched
    c = StagedFile(final)
    c.temp.write_text("newer")
    c.commit()  # replaces
    assert final.read_text() == "newer"


def test_prepare_out_dir(tmp_path):
    nested = tmp_path / "a" / "b" / "c"
    assert prepare_out_dir(nested) == nested and nested.is_dir()
    assert list(nested.iterdir()) == []  # the write probe is removed
    assert prepare_out_dir(str(nested)) == nested  # existing: fine
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    with pytest.raises(OutputError, match="file.txt"):
        prepare_out_dir(afile)
    with pytest.raises(OutputError, match="cannot create"):
        prepare_out_dir(afile / "sub")
    with pytest.raises(OutputError):
        prepare_out_dir("/proc/rsseg-cannot-write-here")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write to read-only folders")
def test_prepare_out_dir_read_only(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="not writable"):
            prepare_out_dir(ro)
    finally:
        ro.chmod(0o755)
