"""Weight files: download (resume, bad servers, offline), import, verify, and the `rsseg models` verbs.

Everything is served by a local HTTP server on 127.0.0.1; nothing here touches the internet.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_safetensors

from rsseg.cli.main import main
from rsseg.errors import Cancelled, WeightsError
from rsseg.models import MODELS
from rsseg.progress import CancelToken
from rsseg.spec import ModelSpec, WeightFile
from rsseg.weights import download as download_module
from rsseg.weights import (
    download_weight,
    import_weight,
    load_checkpoint,
    verify_model,
    weight_path,
    weight_status,
    weights_present,
)

PTH, SAFE = "tiny_state.pth", "tiny_state.safetensors"
MODEL_ID = "weights-test"


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"encoder.weight": torch.randn(300, 400, generator=g), "encoder.bias": torch.arange(7, dtype=torch.float32)}


def _pth_bytes(tensors) -> bytes:
    buf = io.BytesIO()
    torch.save(tensors, buf)
    return buf.getvalue()


def _git_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id


HUB_MODES = ("lfs", "git", "git-wrong", "nohash", "hop")
TENSORS = _tensors()
FILES = {PTH: _pth_bytes(TENSORS), SAFE: save_safetensors(TENSORS)}  # ~480 KB each


class _Handler(BaseHTTPRequestHandler):
    """GET /<mode>/<name>: `mode` picks how this server misbehaves."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.requests.append((self.path, self.headers.get("Range")))
        mode, _, name = self.path.strip("/").partition("/")
        data = FILES.get(name)
        if mode == "404" or data is None:
            self.send_error(404)
        elif mode == "ok":
            self._ranged(data)
        elif mode == "truncated":  # full length advertised, half sent, connection closed
            self._send(200, data[: len(data) // 2], length=len(data))
        elif mode == "corrupt":
            self._send(200, bytes(b ^ 0xFF for b in data[:100]) + data[100:])
        elif mode == "badlen":
            self._send(200, data + b"0123456789")
        elif mode == "long":  # no Content-Length: the body ends when the connection closes
            self._send(200, data + b"x" * 1000, length=None)
        elif mode == "norange":
            self._send(200, data)
        elif mode in HUB_MODES:  # the hub's answer is in HEAD; the content itself is served as-is
            self._ranged(data)
        elif mode == "redirect-ftp":
            self.send_response(302)
            self.send_header("Location", f"ftp://127.0.0.1/{name}")
            self.end_headers()
        else:
            self.send_error(400)

    def do_HEAD(self) -> None:  # noqa: N802 - what a Hugging Face resolve URL answers, by mode
        self.server.requests.append((f"HEAD {self.path}", None))
        mode, _, name = self.path.strip("/").partition("/")
        data = FILES.get(name)
        if data is None or mode not in HUB_MODES:
            return self._send(404, b"", length=0)
        if mode == "lfs":  # an LFS file: a redirect to the CDN carrying the file's sha256 and size
            return self._send(302, b"", length=0, extra={
                "X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"', "X-Linked-Size": str(len(data)),
                "ETag": '"0123456789abcdef0123456789abcdef01234567"', "Location": f"/ok/{name}"})
        if mode == "hop":  # the hub's canonical path, relative: the answer is one HEAD further
            return self._send(307, b"", length=0, extra={"Location": f"/git/{name}"})
        if mode == "git":  # a plain git file: its git blob id as the ETag
            return self._send(200, b"", length=len(data), extra={"ETag": f'W/"{_git_id(data)}"'})
        if mode == "git-wrong":
            return self._send(200, b"", length=len(data), extra={"ETag": f'"{_git_id(data + b"!")}"'})
        return self._send(200, b"", length=len(data))  # "nohash": no ETag at all

    def _ranged(self, data: bytes) -> None:
        header = self.headers.get("Range")
        if not header:
            return self._send(200, data)
        start = int(header.removeprefix("bytes=").split("-")[0])
        if start >= len(data):
            return self.send_error(416)
        self._send(206, data[start:], extra={"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})

    def _send(self, status: int, body: bytes, length: int | None | str = "auto", extra: dict | None = None) -> None:
        self.send_response(status)
        if length is not None:
            self.send_header("Content-Length", str(len(body) if length == "auto" else length))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)  # HTTP/1.0: one request per connection
    srv.requests = []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.fixture
def base(server):
    server.requests.clear()
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(autouse=True)
def weights_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RSSEG_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.delenv("RSSEG_WEIGHTS_MIRROR", raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(download_module, "CHUNK", 64 * 1024)  # several chunks per file: resume and cancel bite
    return tmp_path / "weights"


def _weight(name: str, base: str = "", mode: str = "ok", data: bytes | None = None) -> WeightFile:
    data = FILES[name] if data is None else data
    return WeightFile(name, len(data), hashlib.sha256(data).hexdigest(), (f"{base}/{mode}/{name}",) if base else ())


def _part(weight: WeightFile) -> Path:
    return weight_path(weight).with_name(weight.name + ".part")


def _closed_port_url(name: str) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/ok/{name}"  # nothing listens there: connection refused


def _assert_same_tensors(state: dict) -> None:
    assert state.keys() == TENSORS.keys()
    for key, value in TENSORS.items():
        assert torch.equal(state[key], value)


# --- download -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [PTH, SAFE])
def test_clean_download_loads_the_original_tensors(base, server, name):
    weight = _weight(name, base)
    events = []
    path = download_weight(weight, progress=events.append)
    assert path == weight_path(weight) and path.read_bytes() == FILES[name] and not _part(weight).exists()
    _assert_same_tensors(load_checkpoint(path))
    assert events[-1].stage == "download" and events[-1].done == events[-1].total == weight.size
    assert [s.verified for s in weight_status(ModelSpec("m", "component", "x", "", weights=(weight,)))] == [True]
    download_weight(weight)  # already there and verified: no second request
    assert len(server.requests) == 1


def test_resume_after_a_truncated_transfer(base, server):
    weight = _weight(PTH, base, "truncated")
    with pytest.raises(WeightsError, match=r"stopped at \d+ of \d+ bytes \(connection closed early\).*kept.*resumes"):
        download_weight(weight)
    half = len(FILES[PTH]) // 2
    assert _part(weight).stat().st_size == half and not weight_path(weight).exists()
    path = download_weight(weight, urls=[f"{base}/ok/{PTH}"])
    assert server.requests[-1] == (f"/ok/{PTH}", f"bytes={half}-")
    assert path.read_bytes() == FILES[PTH] and not _part(weight).exists()
    _assert_same_tensors(load_checkpoint(path))


def test_a_server_ignoring_range_restarts_from_zero(base, server):
    weight = _weight(PTH, base, "truncated")
    with pytest.raises(WeightsError):
        download_weight(weight)
    path = download_weight(weight, urls=[f"{base}/norange/{PTH}"])
    assert server.requests[-1][1] == f"bytes={len(FILES[PTH]) // 2}-"  # asked to resume, got a 200
    assert path.read_bytes() == FILES[PTH]


def test_a_stale_part_costs_one_fresh_retry_not_an_error(base, server):
    weight = _weight(PTH, base)
    _part(weight).parent.mkdir(parents=True)
    _part(weight).write_bytes(b"\0" * 1000)  # e.g. left by an older version of the file
    assert download_weight(weight).read_bytes() == FILES[PTH]
    assert server.requests == [(f"/ok/{PTH}", "bytes=1000-"), (f"/ok/{PTH}", None)]


def test_corrupted_download_names_both_hashes_and_leaves_nothing(base, server):
    weight = _weight(PTH, base, "corrupt")
    with pytest.raises(WeightsError) as info:
        download_weight(weight)
    assert len(server.requests) == 1  # a bad fresh download is not retried
    bad = hashlib.sha256(bytes(b ^ 0xFF for b in FILES[PTH][:100]) + FILES[PTH][100:]).hexdigest()
    message = str(info.value)
    assert weight.sha256 in message and bad in message and "\n" not in message
    assert not weight_path(weight).exists() and not _part(weight).exists()


@pytest.mark.parametrize("mode, expected", [("badlen", "offers .* bytes but .* should be"),
                                            ("long", "sent more than the .* bytes expected")])
def test_wrong_size_is_refused_and_removed(base, mode, expected):
    weight = _weight(PTH, base, mode)
    with pytest.raises(WeightsError, match=expected):
        download_weight(weight)
    assert not weight_path(weight).exists() and not _part(weight).exists()


def test_http_error_status(base):
    with pytest.raises(WeightsError, match=r"HTTP 404"):
        download_weight(_weight(PTH, base, "404"))


def test_unreachable_host_gives_the_offline_message(tmp_path):
    weight = _weight(PTH)
    with pytest.raises(WeightsError) as info:
        download_weight(weight, urls=[_closed_port_url(PTH)], model_id="sam-vit-b")
    message = info.value.text("cli")
    assert "could not reach 127.0.0.1" in message and "no network was reachable" in message
    assert "`rsseg models import sam-vit-b FILE`" in message and "\n" not in message
    assert info.value.fixes == ("import",) and "`" not in str(info.value)
    assert not weight_path(weight).exists()


def test_no_url_asks_for_an_import():
    with pytest.raises(WeightsError, match=r"has no download URL") as info:
        download_weight(_weight(PTH), model_id="m")
    assert info.value.fixes == ("import",) and info.value.text("cli").endswith("run `rsseg models import m FILE`")


def test_only_http_urls_and_redirects_are_followed(base):
    with pytest.raises(WeightsError, match="only http and https"):
        download_weight(_weight(PTH), urls=["file:///etc/passwd"])
    with pytest.raises(WeightsError, match="redirect to non-http"):
        download_weight(_weight(PTH, base, "redirect-ftp"))


def test_mirror_is_tried_first(base, server, monkeypatch):
    monkeypatch.setenv("RSSEG_WEIGHTS_MIRROR", f"{base}/ok/")
    path = download_weight(_weight(SAFE, base, "404"))
    assert server.requests == [(f"/ok/{SAFE}", None)] and path.read_bytes() == FILES[SAFE]


def test_cancel_keeps_the_part_for_resume(base, server):
    weight = _weight(PTH, base)
    token = CancelToken()

    def cancel_after_first_chunk(event):
        if event.done > 0:
            token.cancel()

    with pytest.raises(Cancelled, match="kept"):
        download_weight(weight, progress=cancel_after_first_chunk, cancel=token)
    kept = _part(weight).stat().st_size
    assert 0 < kept < weight.size and not weight_path(weight).exists()
    path = download_weight(weight)
    assert server.requests[-1][1] == f"bytes={kept}-" and path.read_bytes() == FILES[PTH]


def test_a_complete_part_is_finished_without_the_network():
    weight = _weight(PTH)
    _part(weight).parent.mkdir(parents=True)
    _part(weight).write_bytes(FILES[PTH])
    assert download_weight(weight, urls=[_closed_port_url(PTH)]).read_bytes() == FILES[PTH]


# --- verify and status ----------------------------------------------------------------------------

def test_verify_detects_a_file_corrupted_after_download(base):
    weight = _weight(PTH, base)
    spec = ModelSpec("m", "component", "x", "", weights=(weight,))
    path = download_weight(weight)
    assert weights_present(spec) and verify_model(spec)[0].verified is True
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime: the cheap status trusts it...
    assert weight_status(spec)[0].verified is True and weights_present(spec)
    with pytest.raises(WeightsError) as info:  # ...the full verify does not
        verify_model(spec)
    assert weight.sha256 in str(info.value) and hashlib.sha256(data).hexdigest() in str(info.value)
    assert weight_status(spec)[0].verified is None  # the record was dropped
    path.write_bytes(b"short")
    assert weight_status(spec)[0].verified is False and not weights_present(spec)


def test_status_of_missing_weights(weights_env):
    spec = ModelSpec("m", "component", "x", "", weights=(_weight(PTH),))
    [state] = weight_status(spec)
    assert (state.present, state.verified, state.size, state.path) == (False, None, None, weights_env / PTH)
    assert not weights_present(spec) and weights_present(ModelSpec("n", "both", "x", ""))
    with pytest.raises(WeightsError, match=r"tiny_state.pth is missing") as info:
        verify_model(spec)
    assert info.value.text("cli").endswith(": run `rsseg models import m FILE`")  # no URL: only an import helps
    with_url = ModelSpec("m", "component", "x", "", weights=(replace(_weight(PTH), urls=("https://example.invalid/x",)),))
    with pytest.raises(WeightsError) as info:
        verify_model(with_url)
    assert info.value.text("cli").endswith("run `rsseg models download m` (or `rsseg models import m FILE`)")


# --- files the registry has no checksum for: the hub's record, then a pin -------------------------

def _unpublished(name: str, base: str, mode: str, sha256: str | None = None) -> WeightFile:
    return WeightFile(name, None, sha256, (f"{base}/{mode}/{name}",))


def test_an_unpublished_lfs_file_is_checked_against_the_hubs_record_and_pinned(base, server, weights_env):
    weight = _unpublished(SAFE, base, "lfs")
    spec = ModelSpec("m", "component", "x", "", weights=(weight,))
    assert not weights_present(spec) and weight_status(spec)[0].present is False
    path = download_weight(weight)
    assert path.read_bytes() == FILES[SAFE] and server.requests[0][0] == f"HEAD /lfs/{SAFE}"
    pins = json.loads((weights_env / "pins.json").read_text())
    assert pins[SAFE] == {"size": len(FILES[SAFE]), "sha256": hashlib.sha256(FILES[SAFE]).hexdigest(),
                          "url": weight.urls[0]}
    assert weights_present(spec) and verify_model(spec)[0].verified is True
    server.requests.clear()
    assert download_weight(weight) == path and server.requests == []  # pinned and verified: no network
    path.write_bytes(bytes(b ^ 1 for b in FILES[SAFE]))  # same size, other bytes: the pin catches it
    with pytest.raises(WeightsError, match="failed its checksum"):
        verify_model(spec)


def test_the_registrys_sha256_must_agree_with_the_hub_and_the_size_comes_from_it(base, weights_env):
    good = _unpublished(PTH, base, "lfs", hashlib.sha256(FILES[PTH]).hexdigest())
    assert download_weight(good).read_bytes() == FILES[PTH]
    assert json.loads((weights_env / "pins.json").read_text())[PTH]["size"] == len(FILES[PTH])
    wrong = _unpublished(SAFE, base, "lfs", "ab" * 32)
    with pytest.raises(WeightsError, match=f"the hub says .* has sha256 .* but the registry says {SAFE} has abab"):
        download_weight(wrong)
    assert not (weights_env / SAFE).exists() and not (weights_env / f"{SAFE}.part").exists()


@pytest.mark.parametrize("mode", ["git", "hop"])
def test_a_plain_git_file_is_checked_by_its_git_blob_id(base, weights_env, mode):
    good = _unpublished(PTH, base, mode)
    assert download_weight(good).read_bytes() == FILES[PTH]
    assert json.loads((weights_env / "pins.json").read_text())[PTH]["sha256"] == hashlib.sha256(FILES[PTH]).hexdigest()
    bad = _unpublished(SAFE, base, "git-wrong")
    with pytest.raises(WeightsError, match=r"failed its checksum: expected git blob id \(the hub's record\)"):
        download_weight(bad)
    assert not (weights_env / SAFE).exists() and SAFE not in json.loads((weights_env / "pins.json").read_text())


def test_no_hash_from_the_hub_or_no_hub_at_all_is_a_clear_refusal(base, weights_env):
    with pytest.raises(WeightsError, match=rf"cannot verify {PTH}: .* answered HTTP 200 without a size and a hash"):
        download_weight(_unpublished(PTH, base, "nohash"))
    offline = WeightFile(PTH, None, None, (_closed_port_url(PTH),))
    with pytest.raises(WeightsError, match=r"cannot reach 127.0.0.1 .*no network was reachable.*needs the hub once"):
        download_weight(offline)
    assert not weights_env.exists() or not any(p.name != "pins.json" for p in weights_env.iterdir())


def test_an_unpublished_file_imports_only_once_a_download_pinned_it(base, tmp_path, weights_env):
    weight = _unpublished(SAFE, base, "lfs")
    spec = ModelSpec("m", "component", "x", "", weights=(weight,))
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(FILES[SAFE])
    with pytest.raises(WeightsError, match=f"{SAFE} cannot be imported before a download of m") as info:
        import_weight(spec, copy)
    assert info.value.text("cli").endswith(": run `rsseg models download m`")
    weights_env.mkdir(parents=True)
    (weights_env / SAFE).write_bytes(FILES[SAFE])  # copied in by hand: nothing to check it against yet
    assert weight_status(spec)[0].verified is None and not weights_present(spec)
    with pytest.raises(WeightsError, match="nothing to check it against"):
        verify_model(spec)
    (weights_env / SAFE).unlink()
    download_weight(weight)
    (weights_env / SAFE).unlink()
    assert import_weight(spec, copy).read_bytes() == FILES[SAFE]


def test_a_tokenizer_downloads_into_its_folder_and_loads_without_the_network(base, monkeypatch, weights_env):
    from tokenizers import Tokenizer, models, pre_tokenizers

    from rsseg.models.clip.builder import build_tokenizer

    tok = Tokenizer(models.WordLevel({"<pad>": 0, "<unk>": 1, "roof": 2}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "unk_token": "<unk>"}
    files = {"tokenizer.json": tok.to_str().encode(), "tokenizer_config.json": json.dumps(config).encode()}
    monkeypatch.setitem(FILES, "tokenizer.json", files["tokenizer.json"])
    monkeypatch.setitem(FILES, "tokenizer_config.json", files["tokenizer_config.json"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in files:  # plain git files on the hub: checked by their git blob id
        download_weight(WeightFile(f"tok/{name}", None, None, (f"{base}/git/{name}",)))
    assert sorted(p.name for p in (weights_env / "tok").iterdir()) == sorted(files)
    tokenizer = build_tokenizer({"architecture": {"text_cfg": {"context_length": 6}}, "tokenizer_dir": "tok"})
    assert tokenizer(["roof  ROOF?"]).tolist() == [[2, 1, 1, 0, 0, 0]]


# --- import ---------------------------------------------------------------------------------------

def test_import_picks_the_matching_file_and_leaves_the_source_alone(tmp_path, weights_env):
    spec = ModelSpec("m", "component", "x", "", weights=(_weight(PTH), _weight(SAFE)))
    source = tmp_path / "downloads" / "whatever-name.bin"
    source.parent.mkdir()
    source.write_bytes(FILES[SAFE])
    before = source.stat()
    path = import_weight(spec, source)
    assert path == weights_env / SAFE and path.read_bytes() == FILES[SAFE]
    assert source.read_bytes() == FILES[SAFE] and source.stat().st_mtime_ns == before.st_mtime_ns
    _assert_same_tensors(load_checkpoint(path))
    assert [s.verified for s in weight_status(spec)] == [None, True]
    assert sorted(p.name for p in weights_env.iterdir()) == [".verified.json", SAFE]


def test_import_of_a_wrong_file_writes_nothing(tmp_path, weights_env):
    weight = _weight(PTH)
    spec = ModelSpec("m", "component", "x", "", weights=(weight,))
    same_size = tmp_path / "same_size.pth"
    same_size.write_bytes(b"\0" * weight.size)
    with pytest.raises(WeightsError) as info:
        import_weight(spec, same_size)
    assert weight.sha256 in str(info.value) and hashlib.sha256(b"\0" * weight.size).hexdigest() in str(info.value)
    other = tmp_path / "other.pth"
    other.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=rf"is 16 bytes.*expected {PTH} \({weight.size} bytes"):
        import_weight(spec, other)
    with pytest.raises(WeightsError, match="no such file"):
        import_weight(spec, tmp_path / "absent.pth")
    assert not weights_env.exists() or not any(weights_env.iterdir())


# --- CLI ------------------------------------------------------------------------------------------

@pytest.fixture
def cli_model(base):
    spec = ModelSpec(MODEL_ID, "component", "x", "Weights test model.",
                     weights=(_weight(PTH, base), _weight(SAFE, base)), licence="CC0-1.0")
    MODELS[spec.id] = spec
    yield spec
    MODELS.pop(spec.id, None)


def _row(capsys, *argv) -> dict:
    assert main(list(argv)) == 0
    return next(r for r in json.loads(capsys.readouterr().out) if r["id"] == MODEL_ID)


def test_cli_list_download_verify(cli_model, capsys, weights_env):
    for argv in (["models", "--json"], ["models", "list", "--json"]):
        row = _row(capsys, *argv)
        assert row["weights_present"] is False and row["licence"] == "CC0-1.0" and row["real"] is False
        assert [(w["name"], w["present"], w["verified"]) for w in row["weights"]] == [(PTH, False, None),
                                                                                     (SAFE, False, None)]
        assert row["weights"][0]["urls"] == list(cli_model.weights[0].urls)
        assert row["weights"][0]["path"] == str(weights_env / PTH)
    assert main(["models", "download", MODEL_ID, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"{PTH}: downloaded, sha256 verified" in out and f"{SAFE}: downloaded" in out
    assert main(["models", "download", MODEL_ID, "--quiet"]) == 0
    assert capsys.readouterr().out.count(": already present, sha256 verified") == 2
    assert main(["models", "download", MODEL_ID, "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["weights_present"] is True and all(w["verified"] is True for w in row["weights"])
    assert main(["models"]) == 0
    assert any(line.startswith(MODEL_ID) and " ready " in line for line in capsys.readouterr().out.splitlines())
    assert main(["models", "verify", MODEL_ID]) == 0
    assert capsys.readouterr().out.count(": ok, size and sha256 match") == 2
    (weights_env / SAFE).write_bytes(b"\0" * cli_model.weights[1].size)
    assert main(["models", "verify", MODEL_ID, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rsseg: error: model 'weights-test': ") and cli_model.weights[1].sha256 in err
    assert len(err.splitlines()) == 1


def test_cli_import_and_weight_free_models(cli_model, capsys, tmp_path, weights_env):
    source = tmp_path / "fetched.pth"
    source.write_bytes(FILES[PTH])
    assert main(["models", "import", MODEL_ID, str(source)]) == 0
    assert f"as {PTH} for model 'weights-test'" in capsys.readouterr().out
    assert (weights_env / PTH).read_bytes() == FILES[PTH]
    for verb in (["download", "test"], ["verify", "test"], ["import", "test", str(source)]):
        assert main(["models", *verb]) == 0
        assert capsys.readouterr().out == "model 'test' needs no weight files\n"


def test_cli_errors_are_one_line(cli_model, base, capsys, monkeypatch):
    assert main(["models", "download", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'no-such-model'" in err and len(err.splitlines()) == 1
    monkeypatch.setitem(MODELS, MODEL_ID,
                        ModelSpec(MODEL_ID, "component", "x", "", weights=(_weight(PTH, base, "404"),)))
    assert main(["models", "download", MODEL_ID, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "HTTP 404" in err and len(err.splitlines()) == 1
    assert main(["models", "import", MODEL_ID, "/no/such/file.pth"]) == 2
    assert "no such file" in capsys.readouterr().err


class _RunsCode:
    """Unpickling this calls a function: what a malicious checkpoint would do."""

    def __reduce__(self):
        return (exec, ("import os; os.environ['RSSEG_PICKLE_RAN'] = 'yes'",))


def test_a_checkpoint_that_runs_code_is_refused_and_the_code_never_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("RSSEG_PICKLE_RAN", raising=False)
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "payload": _RunsCode()}, path)
    with pytest.raises(WeightsError, match="not a weights-only torch checkpoint"):
        load_checkpoint(path)
    assert "RSSEG_PICKLE_RAN" not in os.environ
