"""Nothing is loaded that does not match its checksum, and a bad checkpoint or weights folder is one clear line.

Real files only: a tiny CLIP registered with a real weight file (a torch checkpoint) in a temporary
weights folder, loaded through `build_model`, the call `rsseg segment` makes; `rsseg train`-format
checkpoints written with the real writer, then truncated, re-pointed or replaced by a pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from rsseg.cli.main import main
from rsseg.errors import ModelError, WeightsError
from rsseg.models import MODELS, build_model, get_spec
from rsseg.models.clip.builder import build_vl_encoder
from rsseg.spec import WeightFile
from rsseg.weights import import_weight, installed_path, load_checkpoint, weight_path, weight_status
from rsseg.weights.trained_checkpoint import save_checkpoint

NEON = Path(__file__).parents[1] / "data" / "neon_osbs_rgb.tif"
MODEL_ID = "integrity-clip"  # a "real" entry (one registered weight file) over the tiny CLIP
NAME = "integrity_clip.pth"


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory) -> Path:
    """A tiny CLIP's state dict, perturbed so it differs from the seeded init, saved with torch.save."""
    config = get_spec("clip-vit-b-16-tiny").config
    state = {k: v + 0.25 for k, v in build_vl_encoder(config).state_dict().items()}
    path = tmp_path_factory.mktemp("source") / "downloaded.pth"
    torch.save(state, path)
    return path


@pytest.fixture
def weights(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "weights"
    monkeypatch.setenv("RSSEG_WEIGHTS_DIR", str(folder))
    return folder


@pytest.fixture
def spec(clip_file, weights, monkeypatch):
    data = clip_file.read_bytes()
    # a download URL, as every real entry has (never contacted here): the fixes offer a download and an import
    weight = WeightFile(NAME, len(data), hashlib.sha256(data).hexdigest(), (f"https://example.invalid/{NAME}",))
    entry = replace(get_spec("clip-vit-b-16-tiny"), id=MODEL_ID, weights=(weight,), real=True)
    monkeypatch.setitem(MODELS, MODEL_ID, entry)
    return entry


def _flip_a_weight(path: Path, keep_mtime: bool) -> None:
    """One byte of tensor data changed: the file still loads (torch does not check), with a wrong weight."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    mtime = stat.st_mtime_ns if keep_mtime else stat.st_mtime_ns + 10**9
    os.utime(path, ns=(stat.st_atime_ns, mtime))


def _build():
    return build_model(MODEL_ID, ["roof", "tree"], None)


def _one_line(text: str) -> str:
    assert len(text.strip().splitlines()) == 1, text
    return text


# --- registered weight files ---------------------------------------------------------------------------

def test_a_file_that_failed_verify_is_not_loaded(spec, clip_file, capsys):
    import_weight(spec, clip_file)
    path = weight_path(spec.weights[0])
    _flip_a_weight(path, keep_mtime=True)  # same size and mtime: only a hash can tell
    assert main(["models", "verify", MODEL_ID, "--quiet"]) == 2
    capsys.readouterr()
    with pytest.raises(WeightsError) as info:
        _build()
    message = _one_line(info.value.text("cli"))
    assert f"{path} was not loaded: it failed its checksum" in message and spec.weights[0].sha256 in message
    assert f"`rsseg models download {MODEL_ID}`" in message and f"`rsseg models import {MODEL_ID} FILE`" in message


def test_a_seven_byte_file_is_refused_before_torch_load(spec, weights, capsys):
    weights.mkdir()
    (weights / NAME).write_bytes(b"1234567")
    assert main(["models"]) == 0
    assert any(line.startswith(MODEL_ID) and "weights missing" in line for line in capsys.readouterr().out.splitlines())
    with pytest.raises(WeightsError) as info:
        _build()
    message = _one_line(info.value.text("cli"))
    assert message == (f"{weights / NAME} was not loaded: it is 7 bytes, but {NAME} is {spec.weights[0].size} bytes: "
                       f"run `rsseg models download {MODEL_ID}` (or `rsseg models import {MODEL_ID} FILE`)")
    assert "weights_only" not in message
    with pytest.raises(WeightsError) as info:  # read directly, torch's advice is not passed on either
        load_checkpoint(weights / NAME)
    assert str(info.value).startswith(f"{weights / NAME} is not a weights-only torch checkpoint: it is damaged")
    assert "weights_only" not in str(info.value)
    code = main(["segment", str(NEON), "--classes", "roof, tree", "--model", MODEL_ID, "--out",
                 str(weights.parent / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and _one_line(err).startswith("rsseg: error: ") and "weights_only" not in err


def test_a_file_edited_after_verification_is_rehashed_and_refused(spec, clip_file):
    import_weight(spec, clip_file)
    assert weight_status(spec)[0].verified is True
    path = weight_path(spec.weights[0])
    _flip_a_weight(path, keep_mtime=False)  # same size, new mtime: the record no longer vouches for it
    with pytest.raises(WeightsError, match=r"was not loaded: it failed its checksum"):
        _build()
    assert weight_status(spec)[0].verified is None  # the stale record was dropped


def test_a_verified_file_loads_and_a_replaced_one_is_rehashed(spec, clip_file):
    path = import_weight(spec, clip_file)
    model = _build()
    expected = torch.load(clip_file, weights_only=True)
    assert all(torch.equal(model.clip.state_dict()[k], v) for k, v in expected.items())
    stat = path.stat()  # the same bytes under a new inode, mtime restored: re-hashed, found good, recorded
    copy = path.with_name("copy.tmp")
    copy.write_bytes(path.read_bytes())
    os.replace(copy, path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_ino != stat.st_ino and weight_status(spec)[0].verified is None
    assert installed_path(spec) == path and weight_status(spec)[0].verified is True


def test_a_pinned_file_is_checked_like_a_registry_one(spec, clip_file, weights, monkeypatch):
    """A file the registry has no checksum for: its pin (written by the download that fetched it) decides."""
    url = f"https://example.invalid/{NAME}"
    monkeypatch.setitem(MODELS, MODEL_ID, replace(spec, weights=(WeightFile(NAME, None, None, (url,)),)))
    weights.mkdir()
    (weights / NAME).write_bytes(clip_file.read_bytes())
    with pytest.raises(WeightsError, match=rf"{NAME} was not loaded: it has no checksum to be checked against"):
        _build()
    pin = {"size": spec.weights[0].size, "sha256": spec.weights[0].sha256, "url": url}
    (weights / "pins.json").write_text(json.dumps({NAME: pin}))
    assert installed_path(get_spec(MODEL_ID)) == weights / NAME  # hashed against the pin, recorded
    _flip_a_weight(weights / NAME, keep_mtime=False)
    with pytest.raises(WeightsError,
                       match=rf"{NAME} was not loaded: it failed its checksum .*expected {pin['sha256']}"):
        _build()


# --- trained checkpoints (`rsseg segment --checkpoint`) ------------------------------------------------

def _checkpoint(folder: Path) -> Path:
    """A checkpoint in the format `rsseg train` writes (its own writer), for the tiny RSRefSeg."""
    return save_checkpoint(folder / "step-0000001", {"prompter.w": torch.zeros(64)},
                           {"model": "rsrefseg-test", "step": 1})


def _segment_error(checkpoint: Path, tmp_path: Path, capsys) -> str:
    code = main(["segment", str(NEON), "--sentence", "the tall tree", "--model", "rsrefseg-test", "--checkpoint",
                 str(checkpoint), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("rsseg: error: ")
    return _one_line(err)


def test_a_truncated_checkpoint_names_the_checkpoint(tmp_path, capsys):
    checkpoint = _checkpoint(tmp_path / "run")
    tensors = checkpoint.with_suffix(".safetensors")
    tensors.write_bytes(tensors.read_bytes()[:-100])
    with pytest.raises(ModelError) as info:
        build_model("rsrefseg-test", None, "x", options={"checkpoint": str(checkpoint)})
    assert str(info.value).startswith(f"checkpoint {checkpoint}: its tensor file {tensors} is not a complete "
                                      "safetensors file (damaged or truncated: ")
    assert f"checkpoint {checkpoint}" in _segment_error(checkpoint, tmp_path, capsys)


@pytest.mark.parametrize("where", ["parent", "absolute"])
def test_a_checkpoint_naming_tensors_outside_its_folder_is_refused(tmp_path, capsys, where):
    elsewhere = _checkpoint(tmp_path / "elsewhere").with_suffix(".safetensors")  # a real, loadable file
    checkpoint = _checkpoint(tmp_path / "run")
    record = json.loads(checkpoint.read_text())
    record["tensors"] = "../elsewhere/step-0000001.safetensors" if where == "parent" else str(elsewhere)
    checkpoint.write_text(json.dumps(record))
    err = _segment_error(checkpoint, tmp_path, capsys)
    assert f"{checkpoint}: refused, its tensor file {record['tensors']!r} must be a relative path beside or below " \
           "the JSON (no '..', not absolute)" in err


def test_a_pickle_in_place_of_safetensors_is_never_unpickled(tmp_path, capsys):
    checkpoint = _checkpoint(tmp_path / "run")
    tensors = checkpoint.with_suffix(".safetensors")
    torch.save({"model.prompter.w": torch.zeros(64)}, tensors)
    err = _segment_error(checkpoint, tmp_path, capsys)
    assert f"checkpoint {checkpoint}: its tensor file {tensors} is not a complete safetensors file (a torch " \
           "pickle, which is never loaded)" in err


def test_a_raster_given_as_checkpoint_is_named_as_given(tmp_path, capsys):
    err = _segment_error(NEON, tmp_path, capsys)
    assert f"{NEON} is not an rsseg checkpoint JSON: expected the .json that a training run writes" in err
    assert "neon_osbs_rgb.json" not in err


# --- the weights folder --------------------------------------------------------------------------------

@pytest.mark.parametrize("verb", ["list", "download", "import", "load"])
def test_a_weights_dir_that_is_a_file_is_one_clear_error(spec, clip_file, weights, capsys, verb):
    weights.write_text("not a folder")
    expected = (f"RSSEG_WEIGHTS_DIR={weights} is a file, not a folder: point RSSEG_WEIGHTS_DIR at a folder for the "
                "weight files (it is created if missing)")
    if verb == "load":
        with pytest.raises(WeightsError) as info:
            _build()
        assert str(info.value) == expected
        assert build_model("clip-vit-b-16-tiny", ["roof"], None) is not None  # weight-free models still run
        return
    argv = {"list": ["models"], "download": ["models", "download", MODEL_ID, "--quiet"],
            "import": ["models", "import", MODEL_ID, str(clip_file)]}[verb]
    assert main(argv) == 2
    assert _one_line(capsys.readouterr().err) == f"rsseg: error: {expected}\n"
