"""Protocol records: JSON round trip, and a specific error for every kind of malformed line."""

from __future__ import annotations

import json

import pytest

from rsseg.protocol.batch import BatchRequest
from rsseg.protocol.contracts import RegionSpec, SegmentRequest
from rsseg.protocol.messages import (
    MAX_LINE_BYTES,
    MESSAGE_TYPES,
    Batch,
    Bye,
    Cancel,
    Doctor,
    Download,
    ErrorRecord,
    ImportWeights,
    ListModels,
    Ping,
    Pong,
    ProgressRecord,
    ProtocolError,
    ResultRecord,
    Segment,
    Shutdown,
    Train,
    decode,
)
from rsseg.protocol.training import TrainLayersRequest

REQUEST = SegmentRequest(raster="/data/a.tif", out_dir="/tmp/out", classes=["building", "road"], bands=(3, 2, 1),
                         region=RegionSpec(bbox=(0.0, 0.0, 10.0, 10.0), bbox_crs="EPSG:4326"), value_range=(0, 255))

RECORDS = [
    Ping("p1"), Pong("p1", 1, "0.1.0", 123), Segment("j1", json.loads(json.dumps(REQUEST.to_dict()))),
    Cancel("c1", "j1"), ListModels("m1"), Download("d1", "clip-vit-b-16"),
    ImportWeights("i1", "litemedsam", "/data/lite_medsam.pth"),
    Doctor("x1", {"ok": True, "protocol": 3, "ping_ms": 1.5, "start_s": 2.25}),
    Shutdown("s1"), Bye("s1"), ProgressRecord("j1", "segment", 3, 10),
    Train("t1", json.loads(json.dumps(TrainLayersRequest("/data/a.tif", "/data/l.gpkg", "kind", "/tmp/run",
                                                         classes={"1": "tree", "2": None}).to_dict()))),
    Train("t2", json.loads(json.dumps(TrainLayersRequest("/data/a.tif", "/data/l.gpkg", "kind", "/tmp/fused",
                                                         model="rfm-seg-r18-rn50",
                                                         host="/data/models/trees").to_dict()))),
    Batch("b1", json.loads(json.dumps(BatchRequest(["/data/*.tif", "/data/jobs.csv"], "/tmp/many", REQUEST,
                                                   workers=2, address="auto").to_dict()))),
    ProgressRecord("b1", "batch", 1, 8, {"running": {"a.tif": {"stage": "segment", "done": 3, "total": 9,
                                                                "worker": "node:123"}}, "failed": 0}),
    ProgressRecord("t1", "train", 2, 20, {"epoch": 2, "loss": 0.5, "val_miou": 0.61, "iou": {"tree": 0.7}}),
    ResultRecord("j1", {"mask": "/tmp/out/mask.tif", "classes": [{"id": 1, "name": "building"}]}),
    ErrorRecord("j1", "BandError", "band 4 is out of range", ""),
    ErrorRecord("j2", "WeightsError", "weights for sam-vit-b are not installed", "", ["download", "import"],
                "sam-vit-b"),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.type)
def test_records_round_trip_through_one_json_line(record):
    line = record.encode()
    assert line.endswith("\n") and line.count("\n") == 1
    data = json.loads(line)
    assert data["id"] == record.id and data["type"] == record.type
    assert decode(line) == record


def test_error_fixes_are_a_list_of_strings():
    """fixes and subject (protocol 4) are checked like every field: a peer gets a ProtocolError, not a crash."""
    line = ErrorRecord("j", "WeightsError", "m", "", ["download"], "x").encode()
    assert json.loads(line)["fixes"] == ["download"] and json.loads(line)["subject"] == "x"
    assert decode('{"id": "j", "type": "error", "code": "X", "message": "m"}').fixes == []  # both optional
    for bad in ('"download"', '[1]', '[["download"]]'):
        with pytest.raises(ProtocolError, match="fixes"):
            decode('{"id": "j", "type": "error", "code": "X", "message": "m", "fixes": %s}' % bad)


def test_every_type_is_covered():
    assert {r.type for r in RECORDS} == set(MESSAGE_TYPES)


def test_segment_request_survives_the_protocol():
    back = decode(Segment("j", REQUEST.to_dict()).encode())
    assert SegmentRequest.from_dict(back.request) == REQUEST
    assert SegmentRequest.from_dict(back.request).prompt == "building, road"


def test_segment_request_rejects_unknown_and_missing_fields():
    with pytest.raises(ValueError, match="unknown field.*'tiles'"):
        SegmentRequest.from_dict({**REQUEST.to_dict(), "tiles": 3})
    with pytest.raises(ValueError, match="missing.*out_dir"):
        SegmentRequest.from_dict({"raster": "/a.tif"})


@pytest.mark.parametrize("line, fragments", [
    ("not json", ["not valid JSON"]),
    ("[1, 2]", ["expected a JSON object", "list"]),
    ('{"type": "ping"}', ["non-empty string `id`"]),
    ('{"id": 7, "type": "ping"}', ["`id`"]),
    ('{"id": "a", "type": "frobnicate"}', ["unknown record type 'frobnicate'", "ping"]),
    ('{"id": "a"}', ["unknown record type None"]),
    ('{"id": "a", "type": "segment", "request": "x.tif"}', ["'request'", "must be dict", "got str"]),
    ('{"id": "a", "type": "progress", "done": true}', ["'done'", "must be int", "bool"]),
    ('{"id": "a", "type": "ping", "extra": 1}', ["unknown field(s) extra"]),
])
def test_malformed_lines_raise_specific_errors(line, fragments):
    with pytest.raises(ProtocolError) as info:
        decode(line)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_protocol_error_keeps_the_id_when_it_could_be_read():
    with pytest.raises(ProtocolError) as info:
        decode('{"id": "abc", "type": "nope"}')
    assert info.value.msg_id == "abc"


def test_over_long_line_is_refused():
    with pytest.raises(ProtocolError, match="longer than the limit"):
        decode("x" * (MAX_LINE_BYTES + 1))
