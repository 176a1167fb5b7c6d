"""Nothing lost, nothing misleading: every bad request, line or result gets a specific answer.

Request fields of the wrong type or shape, NaN or infinity, repeated class names, lines nested
deep enough to break a recursive JSON decoder, and results JSON cannot carry: each comes back as
an error naming what is wrong, through the real service, the real `rsseg serve` worker and the
real client, and the worker keeps serving.
"""

from __future__ import annotations

import json
import math
import queue
import subprocess  # nosec B404
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from rsseg.cli.main import main
from rsseg.protocol.client import BackendError, InvalidRequest, JobFailed, WorkerClient, WorkerConfig
from rsseg.protocol.contracts import ClassListError, SegmentRequest, check_class_names, parse_class_list
from rsseg.protocol.messages import (
    MAX_DEPTH,
    EncodeError,
    ProtocolError,
    ResultRecord,
    Segment,
    decode,
    nesting_depth,
)
from rsseg.service.inprocess import InProcessRunner
from rsseg.service.jobs import Service

WORKER = [sys.executable, "-m", "rsseg", "serve"]
BASE = {"raster": "/data/a.tif", "out_dir": "/tmp/out"}
NAN, INF = float("nan"), float("inf")


# --- 1. every request field is checked for type, shape and finiteness -----------------------------

BAD_FIELDS = [
    ({"tile": "512"}, "tile must be an integer, got the string '512'"),
    ({"tile": True}, "tile must be an integer, got true"),
    ({"overlap": 8.5}, "overlap must be an integer, got 8.5"),
    ({"batch_size": None}, "batch_size must be an integer, got null"),
    ({"region": {"bbox": [0, 0]}}, "region.bbox must be a list of 4 finite numbers or null, got a list of 2"),
    ({"region": {"bbox": [0, 0, 1, "1"]}}, "region.bbox[3] must be a finite number, got the string '1'"),
    ({"region": {"bbox": [0, 0, 1, NAN]}}, "region.bbox[3] must be a finite number, got nan"),
    ({"region": "everywhere"}, "region must be an object with bbox, bbox_crs, polygons, polygons_crs"),
    ({"region": {"box": [0, 0, 1, 1]}}, "unknown field(s) 'region.box'"),
    ({"region": {"polygons": {"type": "Polygon"}}}, "region.polygons must be a list of objects or null, got an object"),
    ({"region": {"polygons": [[0, 0]]}}, "region.polygons[0] must be an object, got a list of 2"),
    ({"region": {"bbox_crs": 4326}}, "region.bbox_crs must be a string or null, got 4326"),
    ({"classes": "water"}, "classes must be a list of strings or null, got the string 'water'"),
    ({"classes": [1, 2]}, "classes[0] must be a string, got 1"),
    ({"classes": ["water", " "]}, "classes[1] (' ') names no class"),
    ({"sentence": ["the", "roof"]}, "sentence must be a string or null, got a list of 2"),
    ({"bands": [3, "2", 1]}, "bands[1] must be an integer, got the string '2'"),
    ({"bands": 3}, "bands must be a list of integers or null, got 3"),
    ({"percentiles": [2]}, "percentiles must be a list of 2 finite numbers, got a list of 1"),
    ({"percentiles": [2, INF]}, "percentiles[1] must be a finite number, got inf"),
    ({"value_range": [-INF, 1]}, "value_range[0] must be a finite number, got -inf"),
    ({"resolution": NAN}, "resolution must be a finite number, got nan"),
    ({"resolution": "0.5"}, "resolution must be a finite number or null, got the string '0.5'"),
    ({"threshold": INF}, "threshold must be a finite number, got inf"),
    ({"simplify_tolerance": NAN}, "simplify_tolerance must be a finite number, got nan"),
    ({"min_area_m2": -INF}, "min_area_m2 must be a finite number, got -inf"),
    ({"write_scores": 1}, "write_scores must be true or false, got 1"),
    ({"vectorise": "no"}, "vectorise must be true or false, got the string 'no'"),
    ({"model": None}, "model must be a string, got null"),
    ({"raster": 7}, "raster must be a string, got 7"),
]


@pytest.mark.parametrize("bad, message", BAD_FIELDS, ids=lambda v: json.dumps(v) if isinstance(v, dict) else None)
def test_a_mistyped_field_is_refused_naming_the_field(bad, message):
    with pytest.raises(ValueError) as info:
        SegmentRequest.from_dict({**BASE, **bad})
    assert message in str(info.value)


def test_valid_requests_still_parse_and_numbers_become_floats():
    request = SegmentRequest.from_dict({**BASE, "classes": ["road, parking lot", "tree"], "bands": [3, 2, 1],
                                        "region": {"bbox": [0, 0, 10, 10], "bbox_crs": "EPSG:4326"},
                                        "percentiles": [2, 98], "value_range": [0, 255], "threshold": 0})
    assert request.bands == (3, 2, 1) and request.region.bbox == (0.0, 0.0, 10.0, 10.0)
    assert all(isinstance(v, float) for v in request.region.bbox + request.percentiles + request.value_range)
    assert isinstance(request.threshold, float) and request.classes == ["road, parking lot", "tree"]
    assert SegmentRequest.from_dict({**BASE, "region": None}).region.is_whole
    assert SegmentRequest.from_dict(request.to_dict()) == request


def test_the_service_answers_a_bad_request_with_a_protocol_error_naming_the_field():
    records: list = []
    service = Service(lambda m: records.append(decode(m.encode())))  # what the worker and the runner do
    service.handle(Segment("j1", {**BASE, "tile": "512"}))
    service.handle(Segment("j2", {**BASE, "region": {"bbox": [0, 0]}}))
    service.handle(Segment("j3", {**BASE, "classes": ["water", "WATER"]}))
    assert not service.busy
    assert [(r.id, r.type, r.code) for r in records] == [(f"j{i}", "error", "ProtocolError") for i in (1, 2, 3)]
    assert records[0].message == "invalid segment request: tile must be an integer, got the string '512'"
    assert "region.bbox must be a list of 4" in records[1].message and records[1].detail == ""
    assert "duplicate class names: 'water' and 'WATER'" in records[2].message


# --- 2. a class name given twice is refused wherever the class list comes from ----------------------

@pytest.mark.parametrize("text, fragment", [
    ("water, water", "duplicate class names: 'water' and 'water' (case and spacing ignored); give each class once"),
    ("Water, WATER", "duplicate class names: 'Water' and 'WATER'"),
    ("parking lot; Parking   Lot", "duplicate class names: 'parking lot' and 'Parking   Lot'"),
    ("road, street; tree; Street", "'Street' is a name of both 'road, street' and 'Street'"),
])
def test_repeated_class_names_are_refused(text, fragment):
    with pytest.raises(ClassListError) as info:
        parse_class_list(text)
    assert fragment in str(info.value)
    with pytest.raises(ValueError, match="duplicate class names"):  # the worker's check is the same one
        SegmentRequest.from_dict({**BASE, "classes": text.split(";" if ";" in text else ",")})


def test_distinct_names_and_synonyms_repeated_within_one_class_pass():
    assert check_class_names(["water, river, River", "tree"]) == ["water, river, River", "tree"]
    assert parse_class_list("building, road, tree") == ["building", "road", "tree"]
    assert parse_class_list("road, parking lot; parking garage") == ["road, parking lot", "parking garage"]
    assert parse_class_list("") == []


def test_the_cli_prints_the_duplicate_message_not_argparses_generic_one(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["segment", str(tmp_path / "a.tif"), "--classes", "water, WATER", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "argument --classes: duplicate class names: 'water' and 'WATER'" in err
    assert "invalid parse_class_list value" not in err


# --- 3. nesting is bounded before decoding ------------------------------------------------------------

def test_nesting_depth_skips_strings_and_escaped_quotes():
    assert nesting_depth('{"a": [[1], {"b": "[[[[{{"}]}') == 3
    assert nesting_depth(b'{"a": "\\"[[[", "b": [["\\\\", [1]]]}\n') == 4
    assert nesting_depth("[" * 100000) == 100000 and nesting_depth("1") == 0


@pytest.mark.parametrize("line", ["[" * 100000, '{"a":' * 100000, "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)])
def test_deep_lines_are_a_protocol_error_not_a_recursion_error(line):
    with pytest.raises(ProtocolError, match=f"nested .* the limit is {MAX_DEPTH}"):
        decode(line)
    with pytest.raises(ProtocolError, match=f"nested .* the limit is {MAX_DEPTH}"):
        decode(line.encode())


def test_a_deep_but_allowed_line_and_brackets_in_strings_still_decode():
    geometry = {"type": "MultiPolygon", "coordinates": [[[[0, 0], [1, 0], [1, 1], [0, 0]]]]}
    request = {**BASE, "classes": ["[[[" * 40], "region": {"polygons": [geometry] * 100}}
    assert decode(Segment("j", request).encode()).request == request


def test_the_worker_answers_deep_lines_and_keeps_serving():
    lines = ["[" * 100000, '{"a":' * 100000, '{"id": "x", "type": "ping", "s": "' + "[" * 100000 + '"}',
             '{"id": "p", "type": "ping"}', '{"id": "s", "type": "shutdown"}']
    proc = subprocess.run(WORKER, input="\n".join(lines) + "\n", capture_output=True, text=True,  # nosec B603
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["id"], r["type"], r.get("code")) for r in records] == [
        ("invalid", "error", "ProtocolError"), ("invalid", "error", "ProtocolError"),
        ("x", "error", "ProtocolError"), ("p", "pong", None), ("s", "bye", None)]
    assert all(f"the limit is {MAX_DEPTH}" in r["message"] for r in records[:2])
    assert "unknown field(s) s" in records[2]["message"]  # brackets inside a string do not count
    assert "RecursionError" not in proc.stderr


# --- 4. a record JSON cannot carry becomes an answer, never silence -----------------------------------

def test_encode_names_the_field_that_json_cannot_carry():
    with pytest.raises(EncodeError, match=r"result\.classes\[1\]\.area_m2 is nan \(JSON has no NaN"):
        ResultRecord("j", {"classes": [{"area_m2": 1.0}, {"area_m2": NAN}]}).encode()
    with pytest.raises(EncodeError, match=r"result\.stretch\.high\[0\] is of type float32"):
        ResultRecord("j", {"stretch": {"high": [np.float32(1)]}}).encode()
    with pytest.raises(EncodeError, match=r"request\.threshold is inf"):
        Segment("j", {**BASE, "threshold": INF}).encode()


def test_the_service_turns_a_record_it_cannot_send_into_an_error_record():
    records: list = []
    service = Service(lambda m: records.append(decode(m.encode())))  # what the worker and the runner do
    service._answer(ResultRecord("j1", {"classes": [{"area_m2": INF}]}))
    assert [(r.id, r.type, r.code) for r in records] == [("j1", "error", "InternalError")]
    assert records[0].message == ("internal error: the result could not be sent: result.classes[0].area_m2 is inf "
                                  "(JSON has no NaN or infinity)")
    assert "EncodeError" in records[0].detail


@pytest.fixture(scope="module")
def unsendable_raster(tmp_path_factory) -> Path:
    """Pixels of 1e200 m: every class area overflows to infinity, which JSON cannot carry.

    Should the engine learn to refuse such a raster, its error must still come back as an answer.
    """
    path = tmp_path_factory.mktemp("huge_pixels") / "huge.tif"
    data = (np.random.default_rng(0).random((3, 32, 32)) * 255).astype("uint8")
    with rasterio.open(path, "w", driver="GTiff", width=32, height=32, count=3, dtype="uint8", crs="EPSG:32617",
                       transform=from_origin(0, 0, 1e200, 1e200)) as ds:
        ds.write(data)
    return path


def unsendable_request(raster: Path, out: Path) -> SegmentRequest:
    return SegmentRequest(raster=str(raster), out_dir=str(out), classes=["a", "b"], tile=32, overlap=0,
                          vectorise=False)


def check_answer(record) -> None:
    """An error for the job; an InternalError names the field that could not be sent."""
    assert record["type"] == "error" and record["id"] == "j1", record
    if record["code"] == "InternalError":
        assert record["message"].startswith("internal error: the result could not be sent: result.classes[0].area_m2 "
                                            "is inf (JSON has no NaN or infinity)") and record["detail"]


def test_the_worker_answers_a_result_it_cannot_encode(tmp_path, unsendable_raster):
    request = unsendable_request(unsendable_raster, tmp_path / "o")
    proc = subprocess.Popen(WORKER, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,  # nosec B603
                            text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        proc.stdin.write(json.dumps({"id": "j1", "type": "segment", "request": request.to_dict()}) + "\n")
        proc.stdin.flush()
        record = {"type": "progress"}
        while record["type"] == "progress":
            record = json.loads(lines.get(timeout=120))  # before the fix: nothing, until the client gave up
        check_answer(record)
        proc.stdin.write('{"id": "p", "type": "ping"}\n{"id": "s", "type": "shutdown"}\n')
        proc.stdin.flush()
        assert [json.loads(lines.get(timeout=60))["type"] for _ in range(2)] == ["pong", "bye"]
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.communicate()


def test_the_in_process_runner_answers_a_result_it_cannot_encode(tmp_path, unsendable_raster):
    request = unsendable_request(unsendable_raster, tmp_path / "o")
    with InProcessRunner(idle_timeout=120) as runner:
        with pytest.raises(JobFailed) as info:
            runner.segment(request)
        check_answer({"type": "error", "id": "j1", "code": info.value.code, "message": str(info.value),
                      "detail": info.value.detail})
        assert runner.ping()["protocol"]


@pytest.mark.parametrize("bad, where", [({"threshold": NAN}, "request.threshold is nan"),
                                        ({"region": {"bbox": [0, 0, 1, INF]}}, "request.region.bbox[3] is inf"),
                                        ({"classes": [b"water"]}, "request.classes[0] is of type bytes")])
def test_the_client_refuses_a_request_it_cannot_encode_before_starting_a_worker(bad, where):
    with WorkerClient(WorkerConfig(sys.executable, start_timeout=60, idle_timeout=60)) as client:
        with pytest.raises(InvalidRequest) as info:
            client.segment({**BASE, **bad})
        assert isinstance(info.value, BackendError) and not isinstance(info.value, ValueError)
        assert str(info.value).startswith(f"the request cannot be sent: {where}")
        assert not client.running and not client.busy  # nothing was started, nothing is held
    with pytest.raises(InvalidRequest, match="a SegmentRequest or a dict, got int"):
        InProcessRunner().segment(3)


def test_nan_from_a_dataclass_request_is_refused_by_the_client_too():
    request = SegmentRequest(**BASE, resolution=math.nan)
    with pytest.raises(InvalidRequest, match="request.resolution is nan"):
        InProcessRunner().segment(request)


def test_result_record_round_trips_and_refuses_what_does_not_fit(tmp_path):
    """The plugin builds its layers from the worker's record through SegmentResult.from_dict."""
    from rsseg.protocol.contracts import SegmentResult
    from rsseg.service.segment import run_segment

    neon = Path(__file__).parents[1] / "data" / "neon_osbs_rgb.tif"
    result = run_segment(SegmentRequest(raster=str(neon), out_dir=str(tmp_path / "out"), classes=["tree", "soil"],
                                        tile=256, overlap=32, device="cpu"))
    record = json.loads(json.dumps(result.to_dict()))  # as it travels
    def travelled(r: SegmentResult) -> dict:
        return json.loads(json.dumps(r.to_dict()))

    assert travelled(SegmentResult.from_dict(record)) == record
    assert SegmentResult.from_dict(record).classes == result.classes and result.transform == tuple(record["transform"])
    assert travelled(SegmentResult.from_dict({**record, "added_later": 1})) == record  # a newer backend's field
    without_mask = {k: v for k, v in record.items() if k != "mask"}
    for broken, words in ((["a list"], "is an object"), (without_mask, "lacks mask"),
                          ({**record, "classes": [{"id": 1}]}, "does not fit")):
        with pytest.raises(ValueError, match=words):
            SegmentResult.from_dict(broken)
