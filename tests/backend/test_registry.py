"""The registry as data: every entry is complete, and every real model has a runnable tiny twin."""

from __future__ import annotations

import re

import pytest

from rsseg.models import MODELS
from rsseg.models.spec import TASKS

REAL = [s for s in MODELS.values() if s.real]


@pytest.mark.parametrize("spec", MODELS.values(), ids=lambda s: s.id)
def test_entries_are_complete(spec):
    assert re.fullmatch(r"[a-z0-9][a-z0-9.-]*", spec.id) and spec.task in TASKS and spec.description
    assert spec.licence and spec.preprocess.bands >= 1
    assert len(spec.preprocess.mean) == len(spec.preprocess.std) == spec.preprocess.bands
    for weight in spec.weights:
        assert re.fullmatch(r"[0-9a-f]{64}", weight.sha256) and weight.size > 0
        assert all(url.startswith("https://") for url in weight.urls)
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
    from rsseg.models.registry import WARM_MODELS, load_component

    first = load_component("litemedsam-tiny")
    assert load_component("litemedsam-tiny") is first  # a worker's next request skips loading
    for other in ["sam-vit-b-tiny", "sam-vit-l-tiny"][:WARM_MODELS]:
        load_component(other)
    assert load_component("litemedsam-tiny") is not first  # evicted: memory stays bounded
