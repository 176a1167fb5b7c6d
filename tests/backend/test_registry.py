"""The registry as data: every entry is complete, and every real model has a runnable tiny twin."""

from __future__ import annotations

import re

import pytest

from rsseg.models import MODELS
from rsseg.spec import TASKS

REAL = [s for s in MODELS.values() if s.real]


@pytest.mark.parametrize("spec", MODELS.values(), ids=lambda s: s.id)
def test_entries_are_complete(spec):
    assert re.fullmatch(r"[a-z0-9][a-z0-9.-]*", spec.id) and spec.task in TASKS and spec.description
    assert spec.licence and spec.preprocess.bands >= 1
    assert len(spec.preprocess.mean) == len(spec.preprocess.std) == spec.preprocess.bands
    for weight in spec.weights:
        assert weight.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", weight.sha256)
        assert weight.size is None or weight.size > 0
        assert all(url.startswith("https://") for url in weight.urls)
        if not weight.published:  # the hub's record vouches for it: only at an immutable commit
            assert weight.urls and all(re.search(r"/resolve/[0-9a-f]{40}/", url) for url in weight.urls)
    assert bool(spec.weights) == spec.real or spec.id == "test"


@pytest.mark.parametrize("spec", REAL, ids=lambda s: s.id)
def test_every_real_model_has_a_tiny_twin_of_the_same_classes(spec):
    tiny = MODELS.get(f"{spec.id}-tiny")
    assert tiny is not None, f"{spec.id} has no {spec.id}-tiny"
    assert (tiny.task, tiny.builder, tiny.real, tiny.weights) == (spec.task, spec.builder, False, ())
    assert tiny.preprocess.bands == spec.preprocess.bands


def test_ids_ending_in_tiny_are_twins_of_real_models():
    for spec in MODELS.values():
        if spec.id.endswith("-tiny"):
            assert spec.id.removesuffix("-tiny") in MODELS and not spec.real


def test_components_stay_warm_between_loads():
    from rsseg.models.factory import WARM_MODELS, load_component

    first = load_component("litemedsam-tiny")
    assert load_component("litemedsam-tiny") is first  # a worker's next request skips loading
    for other in ["sam-vit-b-tiny", "sam-vit-l-tiny"][:WARM_MODELS]:
        load_component(other)
    assert load_component("litemedsam-tiny") is not first  # evicted: memory stays bounded


def test_rsrefseg_rows_count_parameters_on_the_meta_device(tmp_path, monkeypatch):
    import torch

    from rsseg.models import catalog
    from rsseg.models.rsrefseg.configs import TINY
    from rsseg.models.rsrefseg.model import parameter_counts
    from rsseg.training.rsrefseg import build_trainable

    monkeypatch.setenv(catalog.ENV_CACHE_DIR, str(tmp_path))
    catalog.clear_parameter_cache()
    rows = {r["id"]: r for r in catalog.model_rows() if not r["bundle"]}  # the registry, not My models
    expected = parameter_counts(build_trainable(TINY))  # real weights, LoRA applied: what `rsseg train` trains
    assert expected == (275_753, 4_077_354)
    assert (rows["rsrefseg-test"]["parameters_trainable"], rows["rsrefseg-test"]["parameters_total"]) == expected
    for model_id, row in rows.items():
        if MODELS[model_id].builder not in catalog.COUNTED_BUILDERS:
            assert row["parameters_trainable"] is None and row["parameters_total"] is None, model_id
    assert (tmp_path / catalog.COUNTS_FILE).is_file()

    def no_build(config, builder):
        raise AssertionError("counted again")

    monkeypatch.setattr(catalog, "count_parameters", no_build)
    assert catalog.parameter_counts(MODELS["rsrefseg-test"]) == expected  # remembered in memory
    catalog.clear_parameter_cache()
    assert catalog.parameter_counts(MODELS["rsrefseg-test"]) == expected  # and in the cache file
    assert torch.get_default_device().type == "cpu"  # the meta device does not leak


def test_parameter_counting_that_fails_leaves_the_list_working(tmp_path, monkeypatch, capsys):
    from rsseg.models import catalog

    monkeypatch.setenv(catalog.ENV_CACHE_DIR, str(tmp_path))
    catalog.clear_parameter_cache()

    def broken(config, builder):
        raise RuntimeError("no such layer")

    monkeypatch.setattr(catalog, "count_parameters", broken)
    row = catalog.model_row(MODELS["rsrefseg-test"])
    assert row["parameters_trainable"] is None and row["parameters_total"] is None
    assert "could not count the parameters of rsrefseg-test: no such layer" in capsys.readouterr().err
    assert not (tmp_path / catalog.COUNTS_FILE).exists()
    catalog.clear_parameter_cache()


def test_real_size_rsrefseg_configs_count_on_meta():
    """Named open_clip architectures go through the explicit-architecture path on meta; the numbers
    equal a real build (checked once: build_trainable(CLIP_B16_SAM_B) on CPU gives the same)."""
    from rsseg.models.catalog import count_parameters
    from rsseg.models.rsrefseg import configs

    assert count_parameters(configs.CLIP_B16_SAM_B) == (9_267_761, 248_297_266)
    assert count_parameters(configs.REFERENCE) == (14_621_744, 982_253_154)  # docs/rsrefseg.md


# --- the rows a model picker reads (docs/weights.md: state, runnable, download_bytes) -------------------

@pytest.fixture
def empty_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("RSSEG_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.delenv("RSSEG_WEIGHTS_MIRROR", raising=False)
    return tmp_path / "weights"


def test_every_row_has_a_state_for_a_model_picker(empty_weights):
    from rsseg.models.catalog import model_rows
    from rsseg.protocol.contracts import MODEL_STATES, NOT_RUN

    rows = {r["id"]: r for r in model_rows() if not r["bundle"]}  # the registry, not My models
    assert set(rows) == set(MODELS) and all(r["state"] in MODEL_STATES for r in rows.values())
    for model_id, row in rows.items():
        spec = MODELS[model_id]
        assert row["runnable"] == (spec.task not in NOT_RUN) == (row["state"] not in NOT_RUN), model_id
        assert row["test_model"] == (not spec.real) and row["description"] == spec.description
        assert "`" not in row["description"] and "rsseg " not in row["description"], model_id  # shown in the GUI
    assert {r["id"] for r in rows.values() if r["state"] == "component"} >= {"sam-vit-b", "litemedsam",
                                                                             "siglip-so400m-14-384"}
    clip, sam = MODELS["clip-vit-b-16"], MODELS["sam-vit-b"]
    clip_row = rows["clip-vit-b-16"]
    assert (clip_row["state"], clip_row["download_bytes"]) == ("download", clip.weights[0].size)
    assert rows["rsrefseg-clip-b16-sam-b"]["download_bytes"] == clip.weights[0].size + sam.weights[0].size
    assert rows["rsrefseg-clip-b16-sam-b"]["needs_checkpoint"] and not rows["clip-vit-b-16"]["needs_checkpoint"]
    assert (rows["georsclip-vit-b-32"]["state"], rows["georsclip-vit-b-32"]["download_bytes"]) == ("download", None)
    for ready in ("test", "rsrefseg-test", "clip-vit-b-16-tiny", "rsrefseg-clip-b16-sam-b-tiny"):
        assert (rows[ready]["state"], rows[ready]["runnable"], rows[ready]["download_bytes"]) == ("ready", True, None)
    assert rows["sam-vit-b"]["download_bytes"] is None and rows["sam-vit-b"]["weights_present"] is False


def test_row_states_follow_the_files(empty_weights, monkeypatch):
    """import (no URL), download (a mirror gives one), ready (present), needs checkpoint (a referring model
    whose base files are present): real files in a temporary weights folder, through model_row."""
    import hashlib
    from dataclasses import replace

    from rsseg.models.catalog import model_row
    from rsseg.spec import WeightFile

    data = b"weights of a model with no download URL"
    weight = WeightFile("no-url.bin", len(data), hashlib.sha256(data).hexdigest())
    offline = replace(MODELS["clip-vit-b-16"], id="offline-clip", weights=(weight,))
    referring = replace(MODELS["rsrefseg-clip-b16-sam-b"], id="referring", weights=(weight,))
    assert (model_row(offline)["state"], model_row(offline)["runnable"]) == ("import", True)
    assert model_row(referring)["state"] == "import"  # files first: the checkpoint is of no use without them
    monkeypatch.setenv("RSSEG_WEIGHTS_MIRROR", "https://mirror.invalid/weights")
    assert (model_row(offline)["state"], model_row(offline)["download_bytes"]) == ("download", len(data))
    monkeypatch.delenv("RSSEG_WEIGHTS_MIRROR")
    empty_weights.mkdir()
    (empty_weights / "no-url.bin").write_bytes(b"short")
    assert model_row(offline)["state"] == "import"  # a wrong size is as good as missing
    (empty_weights / "no-url.bin").write_bytes(data)
    assert model_row(offline)["state"] == "ready"  # present with its size: hashed at its first load
    row = model_row(referring)
    assert (row["state"], row["runnable"], row["needs_checkpoint"]) == ("needs checkpoint", True, True)
    assert (model_row(MODELS["sam-vit-b"])["state"], model_row(MODELS["sam-vit-b"])["runnable"]) == ("component",
                                                                                                     False)


def test_the_cli_and_the_worker_list_the_same_rows(empty_weights, capsys):
    import json

    from rsseg.cli.main import main
    from rsseg.service.inprocess import InProcessRunner

    assert main(["models", "--json"]) == 0
    printed = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    with InProcessRunner() as runner:
        answered = {r["id"]: r for r in runner.models()}
    keys = ("state", "runnable", "download_bytes", "needs_checkpoint", "test_model", "description")
    def fields(rows: dict) -> dict:
        return {i: [r[k] for k in keys] for i, r in rows.items()}

    assert fields(printed) == fields(answered)
    assert printed["clip-vit-b-16"]["state"] == "download"


def test_an_unknown_model_lists_only_the_models_a_job_can_run():
    from rsseg.errors import ModelError
    from rsseg.models import get_spec

    with pytest.raises(ModelError) as info:
        get_spec("no-such-model")
    message = str(info.value)
    assert "'no-such-model'" in message and "clip-vit-b-16" in message and "rsrefseg-test" in message
    listed = set(message.split("(known models: ", 1)[1].split(")", 1)[0].split(", "))
    assert "zs-ref-clip-b16-sam-b" in listed
    assert not listed & {"sam-vit-b", "litemedsam", "siglip-so400m-14-384", "unetformer-r18"}
    assert get_spec("sam-vit-b").task == "component"  # still found by id: the models that use it load it
    assert info.value.fixes == ("models",) and info.value.text("cli").endswith(": see `rsseg models`")
