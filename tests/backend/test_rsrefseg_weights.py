"""RSRefSeg's two weight parts (docs/rsrefseg.md): the base encoders' registry files and a trained
checkpoint of `rsseg train`, through the registry, the service and the CLI.

The real entry (`rsrefseg-clip-b16-sam-b`) needs 1 GB of downloads, so a registry entry of the same
builder is made here over the tiny configuration, with real weight files written to a temporary
weights folder: the same loading code runs on them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from safetensors.torch import save_file

from rsseg.cli.main import main
from rsseg.errors import ModelError, WeightsError
from rsseg.models import MODELS, build_model, get_spec
from rsseg.models.rsrefseg.configs import TINY
from rsseg.models.rsrefseg.model import build_rsrefseg
from rsseg.models.rsrefseg.weights import load_base
from rsseg.protocol.contracts import SegmentRequest
from rsseg.service import run_segment
from rsseg.spec import ModelSpec, WeightFile

NEON = Path(__file__).parents[1] / "data" / "neon_osbs_rgb.tif"
REAL = "rsrefseg-tinybase"  # a real-weights entry over the tiny configuration


def _weight_file(path: Path, state: dict[str, torch.Tensor]) -> WeightFile:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return WeightFile(path.name, path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())


@pytest.fixture
def real_entry(tmp_path, monkeypatch):
    """Registry entries: two base parts with weight files (perturbed, so they differ from the seeded
    init) and an RSRefSeg whose config names them, as rsrefseg-clip-b16-sam-b names its parts."""
    monkeypatch.setenv("RSSEG_WEIGHTS_DIR", str(tmp_path / "weights"))
    (tmp_path / "weights").mkdir()
    donor = build_rsrefseg(TINY, seed=7)  # other seed: other weights than load_base's init
    parts = {}
    for name in ("clip", "sam"):
        state = {k: v + 0.01 for k, v in getattr(donor, name).state_dict().items()}
        weight = _weight_file(tmp_path / "weights" / f"tiny-{name}.safetensors", state)
        parts[name] = ModelSpec(id=f"tinybase-{name}", task="component", builder="sam", description="test part",
                                weights=(weight,), real=True)
        parts[f"{name}_state"] = state
    config = {**TINY, "clip_weights": "tinybase-clip", "sam_weights": "tinybase-sam"}
    spec = replace(get_spec("rsrefseg-clip-b16-sam-b"), id=REAL, config=config,
                   weights=parts["clip"].weights + parts["sam"].weights)
    for entry in (parts["clip"], parts["sam"], spec):
        monkeypatch.setitem(MODELS, entry.id, entry)
    return spec, parts


def test_the_base_loads_both_weight_files_strictly(real_entry, tmp_path):
    spec, parts = real_entry
    model = load_base(spec, "cpu")
    for name in ("clip", "sam"):
        loaded = getattr(model, name).state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in parts[f"{name}_state"].items())
    (tmp_path / "weights" / "tiny-sam.safetensors").unlink()
    with pytest.raises(WeightsError, match="weights for tinybase-sam are not installed") as info:
        load_base(spec, "cpu")
    # the test part has no download URL: importing the file is the one fix offered
    assert info.value.text("cli").endswith("not installed: run `rsseg models import tinybase-sam FILE`")


def test_a_real_entry_needs_a_checkpoint_and_the_released_one_names_its_parts():
    spec = get_spec("rsrefseg-clip-b16-sam-b")
    assert [w.name for w in spec.weights] == [w.name for w in get_spec("clip-vit-b-16").weights
                                               + get_spec("sam-vit-b").weights]
    assert get_spec("rsrefseg-clip-b16-sam-b-tiny").config == TINY
    with pytest.raises(ModelError, match="no released trained weights") as info:
        build_model("rsrefseg-clip-b16-sam-b", None, "the red roof")
    assert info.value.fixes == ("checkpoint",) and "--checkpoint" in info.value.text("cli")


def _train(model_id: str, out: Path, capsys) -> Path:
    code = main(["train", "--model", model_id, "--data", "synthetic", "--scenes", "2", "--val-split", "none",
                 "--scene-size", "64", "--size", "64", "--steps", "2", "--batch-size", "2", "--lr", "1e-2",
                 "--out", str(out), "--device", "cpu", "--threads", "1", "--json"])
    assert code == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    return Path(report["checkpoint"])


def test_train_from_the_base_weights_then_segment_with_the_checkpoint(real_entry, tmp_path, capsys):
    """`rsseg train` starts from the registry base files; `rsseg segment --checkpoint` runs the result."""
    checkpoint = _train(REAL, tmp_path / "run", capsys)
    out = tmp_path / "seg"
    code = main(["segment", str(NEON), "--sentence", "the tall tree", "--model", REAL, "--checkpoint",
                 str(checkpoint), "--out", str(out), "--json"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)
    assert result["request"]["checkpoint"] == str(checkpoint) and result["tiles"] == 1
    with rasterio.open(result["mask"]) as mask, rasterio.open(NEON) as src:
        assert (mask.crs, mask.transform, mask.shape) == (src.crs, src.transform, src.shape)
    trained = build_model(REAL, None, "the tall tree", options={"checkpoint": str(checkpoint)})
    assert any("lora_A" in n for n, _ in trained.model.named_parameters())
    assert trained.encoder_id.startswith(f"{REAL}:") and "+ckpt:" in trained.encoder_id


def test_the_checkpoint_decides_the_output_and_the_cache_key(tmp_path, capsys):
    checkpoint = _train("rsrefseg-test", tmp_path / "run", capsys)
    batch = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    plain = build_model("rsrefseg-test", None, "the red square")
    trained = build_model("rsrefseg-test", None, "the red square", options={"checkpoint": str(checkpoint)})
    assert trained.encoder_id != plain.encoder_id  # LoRA changes the image features: other cache entries
    assert not np.allclose(trained(batch), plain(batch), atol=1e-4)
    again = build_model("rsrefseg-test", None, "the blue circle", options={"checkpoint": str(checkpoint)})
    assert again.model is trained.model  # kept warm: a second sentence loads nothing
    cache_result = run_segment(SegmentRequest(raster=str(NEON), out_dir=str(tmp_path / "a"), model="rsrefseg-test",
                                              sentence="the tall tree", checkpoint=str(checkpoint), vectorise=False))
    assert cache_result.tiles == 1


def test_a_checkpoint_for_another_model_or_not_a_checkpoint_is_refused(tmp_path, capsys):
    checkpoint = _train("rsrefseg-test", tmp_path / "run", capsys)
    with pytest.raises(ModelError, match="trained for model 'rsrefseg-test', not 'rsrefseg-clip-b16-sam-b-tiny'"):
        build_model("rsrefseg-clip-b16-sam-b-tiny", None, "x", options={"checkpoint": str(checkpoint)})
    bogus = tmp_path / "bogus.json"
    bogus.write_text("{}")
    code = main(["segment", str(NEON), "--sentence", "x", "--model", "rsrefseg-test", "--checkpoint", str(bogus),
                 "--out", str(tmp_path / "out")])
    assert code == 2 and "not an rsseg training checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ModelError, match="takes no checkpoint option"):
        build_model("clip-vit-b-16-tiny", ["a"], None, options={"checkpoint": str(checkpoint)})
