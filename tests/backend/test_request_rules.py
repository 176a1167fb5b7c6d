"""SegmentRequest.validate(): one rule, one message, one RequestError field; the backend reports each
as the error it always gave that rule (ModelError, RegionError, DeviceError or ParameterError). Also the
train request's host rule, and the protocol's lists of trainable and host models against the registry."""

from __future__ import annotations

import pytest

from rsseg.errors import DeviceError, ModelError, ParameterError, RegionError, check_request
from rsseg.models import MODELS
from rsseg.protocol.contracts import (
    DEFAULT_MODELS,
    DEVICES,
    MAX_CLASS_CHARS,
    MAX_SENTENCE_CHARS,
    MODES,
    TASKS,
    ClassListError,
    RegionSpec,
    RequestError,
    SegmentRequest,
    check_device,
    parse_class_list,
    task_accepts,
)
from rsseg.protocol.training import HOST_FAMILIES, HOST_MODELS, TRAINABLE_MODELS, TrainLayersRequest
from rsseg.spec import ModelSpec


def request(**kw) -> SegmentRequest:
    kw.setdefault("classes", ["water", "tree"])
    return SegmentRequest(raster="in.tif", out_dir="out", **kw)


RULES = {
    # id: (request fields, RequestError.field, backend error, message fragment)
    "no-prompt": (dict(classes=None), "prompt", ModelError, "either a class list or a referring sentence"),
    "two-prompts": (dict(sentence="the pool"), "prompt", ModelError, "not both"),
    "empty-class-list": (dict(classes=[]), "prompt", ModelError, "prompt is empty: type at least one class"),
    "blank-sentence": (dict(classes=None, sentence="  "), "prompt", ModelError, "prompt is empty: type a sentence"),
    "blank-class": (dict(classes=["water", " "]), "classes", ParameterError, "names no class"),
    "duplicate-class": (dict(classes=["water", "WATER"]), "classes", ParameterError, "duplicate class names"),
    "class-too-long": (dict(classes=["water", "x" * 10_000]), "classes", ParameterError,
                       "classes[1] ('xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'...) is 10000 characters long; a class, "
                       "its synonyms included, may have at most 100"),
    "sentence-too-long": (dict(classes=None, sentence="a " * 1000), "sentence", ParameterError,
                          "the sentence is 1999 characters long; a referring sentence may have at most 1000"),
    "tile": (dict(tile=15), "tile", ParameterError, "tile size must be at least 16 pixels, got 15"),
    "overlap": (dict(tile=64, overlap=33), "overlap", ParameterError, "half the tile size (32), got 33"),
    "overlap-negative": (dict(overlap=-1), "overlap", ParameterError, "got -1"),
    "batch-size": (dict(batch_size=-1), "batch_size", ParameterError, "batch size must be at least 1"),
    "threshold-nan": (dict(threshold=float("nan")), "threshold", ParameterError, "threshold must be a finite"),
    "threshold-range": (dict(threshold=1.5), "threshold", ParameterError, "between 0 and 1, got 1.5"),
    "min-area-inf": (dict(min_area_m2=float("inf")), "min_area_m2", ParameterError, "minimum area must be a finite"),
    "simplify-negative": (dict(simplify_tolerance=-1.0), "simplify_tolerance", ParameterError, "must not be negative"),
    "percentiles": (dict(percentiles=(98.0, 2.0)), "percentiles", ParameterError, "0 <= low < high <= 100"),
    "value-range-nan": (dict(value_range=(0.0, float("nan"))), "value_range", ParameterError, "finite numbers"),
    "value-range-empty": (dict(value_range=(5.0, 5.0)), "value_range", ParameterError, "low < high, got 5.0, 5.0"),
    "resolution": (dict(resolution=0.0), "resolution", ParameterError, "positive number of metres per pixel"),
    "bbox-inverted": (dict(region=RegionSpec(bbox=(1.0, 0.0, 0.0, 1.0))), "region", RegionError, "minx < maxx"),
    "bbox-nan": (dict(region=RegionSpec(bbox=(0.0, 0.0, float("nan"), 1.0))), "region", RegionError,
                 "four finite numbers"),
    "device": (dict(device="tpu"), "device", DeviceError, "unknown device 'tpu'; valid choices: auto, cpu, cuda, "
                                                           "cuda:N, mps"),
}


@pytest.mark.parametrize("rule", list(RULES))
def test_each_rule_has_one_message_a_field_and_the_backend_error(rule):
    fields, field, backend_error, fragment = RULES[rule]
    bad = request(**fields)
    with pytest.raises(RequestError) as info:
        bad.validate()
    assert info.value.field == field and fragment in str(info.value)
    with pytest.raises(backend_error) as backend:
        check_request(bad)
    assert str(backend.value) == str(info.value)


def test_a_good_request_passes_and_the_engine_leaves_the_prompt_to_the_model():
    good = request(threshold=0.3, value_range=(0.0, 255.0), resolution=0.5, device="CUDA:1",
                   region=RegionSpec(bbox=(0.0, 0.0, 1.0, 1.0)))
    assert good.validate() is good
    assert request(classes=None).validate(prompt=False) is not None


def test_prompt_caps_are_documented_constants_and_their_limits_pass():
    """A class line of MAX_CLASS_CHARS and a sentence of MAX_SENTENCE_CHARS pass; one character more is refused
    by every entry point's check (validate, the class-list parser of the CLI and the dock, from_dict of the worker)."""
    assert (MAX_CLASS_CHARS, MAX_SENTENCE_CHARS) == (100, 1000)
    longest = "road, " + "x" * (MAX_CLASS_CHARS - 6)
    assert request(classes=[longest]).validate() and parse_class_list(longest + "; tree") == [longest, "tree"]
    assert request(classes=None, sentence="y" * MAX_SENTENCE_CHARS + "   ").validate()  # white space collapsed
    with pytest.raises(ClassListError, match="is 101 characters long"):
        parse_class_list(longest + "x; tree")
    with pytest.raises(ValueError, match="is 101 characters long"):
        SegmentRequest.from_dict({**request().to_dict(), "classes": [longest + "x"]})
    with pytest.raises(RequestError, match="is 1001 characters long") as info:
        request(classes=None, sentence="y" * (MAX_SENTENCE_CHARS + 1)).validate()
    assert info.value.field == "sentence" and "\n" not in str(info.value)


def test_class_list_errors_are_request_errors():
    assert issubclass(ClassListError, RequestError) and ClassListError("x").field == "classes"


@pytest.mark.parametrize("name", [*DEVICES, "cuda:0", "cuda:12", " MPS "])
def test_devices_the_rule_accepts(name):
    assert check_device(name) == name.strip().lower()


@pytest.mark.parametrize("name", ["gpu", "", "tpu", "cuda:", "cuda:x", "cuda:-1", "cuda0", "cpu:0", "meta"])
def test_devices_the_rule_refuses(name):
    with pytest.raises(RequestError, match="valid choices: auto, cpu, cuda, cuda:N, mps"):
        check_device(name)


def test_model_tasks_and_default_models():
    assert [m for m in MODES if task_accepts("both", m)] == list(MODES)
    assert task_accepts("classes", "classes") and not task_accepts("classes", "sentence")
    assert not any(task_accepts("component", m) for m in MODES)
    spec = ModelSpec("x", "sentence", "test", "")
    assert [spec.accepts(m) for m in MODES] == [False, True]
    assert set(DEFAULT_MODELS) == set(MODES) and set(MODES) < set(TASKS)
    assert all(MODELS[DEFAULT_MODELS[m]].accepts(m) for m in MODES)  # registered, for their mode


def test_from_prompt_makes_the_request_for_what_the_user_typed():
    """The one place a typed prompt becomes classes or a sentence (the plugin's JobParameters, the bench)."""
    typed = SegmentRequest.from_prompt("classes", " water,  Tree ", raster="in.tif", out_dir="out")
    assert typed.classes == ["water", "Tree"] and typed.sentence is None
    assert SegmentRequest.from_prompt("classes", ["a, b", "c"], raster="in.tif", out_dir="out").classes == ["a, b", "c"]
    said = SegmentRequest.from_prompt("sentence", "  the  white\nbuilding ", raster="in.tif", out_dir="out", tile=256)
    assert said.sentence == "the white building" and said.classes is None and said.tile == 256
    with pytest.raises(RequestError, match="prompt mode must be one of classes, sentence, got 'words'"):
        SegmentRequest.from_prompt("words", "water", raster="in.tif", out_dir="out")
    with pytest.raises(ClassListError, match="duplicate class names"):
        SegmentRequest.from_prompt("classes", "water, Water", raster="in.tif", out_dir="out")


def test_a_bad_bbox_is_shown_with_ten_significant_digits_at_most():
    with pytest.raises(RequestError) as info:
        request(region=RegionSpec(bbox=(404251.912345678901, 3285102.5, 404211.81234567891, 3285143.0))).validate()
    assert "bbox (404251.9123, 3285102.5, 404211.8123, 3285143) is empty or invalid" in str(info.value)


def train_request(**kw) -> TrainLayersRequest:
    return TrainLayersRequest(raster="in.tif", labels="labels.gpkg", field="kind", out="run", **kw)


@pytest.mark.parametrize("host", ["", "   ", "\t\n"])
def test_a_train_request_s_host_is_a_folder_when_given(host):
    with pytest.raises(RequestError, match="the host model is empty") as info:
        train_request(model="rfm-seg-r18-rn50", host=host).validate()
    assert info.value.field == "host"
    with pytest.raises(ParameterError, match="the host model is empty"):
        check_train(train_request(host=host))
    assert train_request().validate().host is None  # most families take none
    assert train_request(model="rfm-seg-r18-rn50", host="~/models/trees").validate().host == "~/models/trees"
    with pytest.raises(ValueError, match="host"):  # the worker's JSON: a string or null
        TrainLayersRequest.from_dict({**train_request().to_dict(), "host": 3})


def check_train(request: TrainLayersRequest) -> None:
    from rsseg.errors import request_rules

    with request_rules():
        request.validate()


def test_the_protocol_s_trainable_and_host_models_are_the_registry_s():
    """The plugin lists TRAINABLE_MODELS and shows its Host model field for HOST_MODELS without the backend:
    both must say what the registry says (task "trainable"; config "host_family", the host bundle's family)."""
    trainable = {model_id for model_id, spec in MODELS.items() if spec.task == "trainable"}
    assert set(TRAINABLE_MODELS) <= trainable and all(f"{m}-tiny" in trainable for m in TRAINABLE_MODELS)
    hosts = {model_id: spec.config["host_family"] for model_id, spec in MODELS.items()
             if spec.task == "trainable" and spec.config.get("host_family")}
    assert hosts == HOST_FAMILIES and set(HOST_MODELS) == set(hosts)
    assert "rfm-seg-r18-rn50" in TRAINABLE_MODELS and "rfm-seg-r18-rn50-tiny" in HOST_MODELS
