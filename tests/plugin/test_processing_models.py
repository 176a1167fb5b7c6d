"""The Processing algorithms' Model list, from the model list the dock stores in QgsSettings.

Real headless QGIS; the stored rows are the real worker's `models` answer (as the dock stores them)
or hand-written rows for the edge cases. The settings are restored after each test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingFeedback, QgsSettings

from rs_refseg_plugin.core.backend import shared_backend
from rs_refseg_plugin.core.settings import PluginSettings
from rs_refseg_plugin.processing.model_choices import CACHE_KEY, SHOW_TEST_KEY, model_choices
from rs_refseg_plugin.protocol.contracts import DEFAULT_MODELS

DATA = Path(__file__).parents[1] / "data"
RASTER = str(DATA / "neon_osbs_rgb.tif")
ALGORITHMS = {"classes": "rsseg:segment_classes", "sentence": "rsseg:segment_sentence"}


@pytest.fixture
def models_cache(qgis_app):
    """store(rows, show_tests): writes what the dock writes (the rows as JSON; None: no list stored) and
    the show-test-models setting (None: unset); both keys are put back as they were afterwards."""
    settings = QgsSettings()
    before = {key: settings.value(key, None) for key in (CACHE_KEY, SHOW_TEST_KEY)}

    def store(rows, show_tests=None):
        for key, value in ((CACHE_KEY, None if rows is None else json.dumps(rows)), (SHOW_TEST_KEY, show_tests)):
            if value is None:
                settings.remove(key)
            else:
                settings.setValue(key, value)

    yield store
    for key, value in before.items():
        if value is None:
            settings.remove(key)
        else:
            settings.setValue(key, value)


def options(mode: str) -> list[str]:
    """The Model list of a newly created algorithm, as a dialog or processing.run gets it."""
    algorithm = QgsApplication.processingRegistry().createAlgorithmById(ALGORITHMS[mode])
    definition = algorithm.parameterDefinition("MODEL")
    assert definition.usesStaticStrings() and definition.defaultValue() == DEFAULT_MODELS[mode]
    return definition.options()


def row(model_id, task, **extra):
    return {"id": model_id, "task": task, **extra}


def test_without_a_stored_list_each_algorithm_offers_its_default(provider, models_cache):
    models_cache(None)
    assert options("classes") == [DEFAULT_MODELS["classes"]]
    assert options("sentence") == [DEFAULT_MODELS["sentence"]]
    models_cache("not json [")  # a damaged value counts as none
    assert options("classes") == [DEFAULT_MODELS["classes"]]


def test_the_worker_s_list_as_the_dock_stores_it(provider, models_cache):
    """The real worker's rows: each algorithm lists the models of its mode, without components and,
    unless the setting says so, without the test-size models."""
    rows = shared_backend(PluginSettings.load()).models()
    by_id = {r["id"]: r for r in rows}
    models_cache(rows)
    classes, sentence = options("classes"), options("sentence")
    assert DEFAULT_MODELS["classes"] in classes and DEFAULT_MODELS["sentence"] in sentence
    assert {"test", "clip-vit-b-16-tiny", "rsrefseg-test"}.isdisjoint(classes + sentence)
    assert all(by_id[m]["task"] in ("classes", "both") for m in classes)
    assert all(by_id[m]["task"] in ("sentence", "both") for m in sentence)
    assert not any(m.startswith("sam-") for m in classes + sentence)  # components
    assert classes == [r["id"] for r in rows if r["task"] in ("classes", "both") and not r["test_model"]
                       and r.get("runnable", True)]  # the worker's order
    models_cache(rows, show_tests=True)
    assert {"test", "clip-vit-b-16-tiny"} <= set(options("classes"))
    assert {"test", "rsrefseg-test"} <= set(options("sentence"))
    assert "clip-vit-b-16-tiny" not in options("sentence")


def test_rows_are_filtered_by_task_runnable_and_test_flags(provider, models_cache):
    models_cache([
        row("remoteclip-vit-b-32", "classes"),
        row("both-ways", "both"),
        row("rsrefseg-x", "sentence"),
        row("sam-vit-b", "component", runnable=False),
        row("not-yet", "classes", runnable=False),
        row("random-weights", "classes", test_model=True),
        row("clip-x-tiny", "classes"),
        row("test", "both"),
        row("remoteclip-vit-b-32", "classes"),  # a repeated row is listed once
        {"task": "classes"}, "not a row", row("  ", "classes"),
    ])
    # the default is kept even though the list lacks it, first
    assert options("classes") == ["clip-vit-b-16", "remoteclip-vit-b-32", "both-ways"]
    assert options("sentence") == [DEFAULT_MODELS["sentence"], "both-ways", "rsrefseg-x"]
    models_cache([row("clip-x-tiny", "classes"), row("test", "both")], show_tests="true")  # an ini file's spelling
    assert options("classes") == ["clip-vit-b-16", "clip-x-tiny", "test"]
    models_cache([row("clip-x-tiny", "classes")], show_tests=False)
    assert options("classes") == ["clip-vit-b-16"]
    assert model_choices("classes") == ["clip-vit-b-16"]


def test_a_listed_model_is_passed_by_id_and_runs(provider, models_cache, tmp_path):
    """Static strings: a script and the dialog's Python command pass the model's id, not its position."""
    from qgis import processing

    models_cache([row("clip-vit-b-16", "classes"), row("test", "both")], show_tests=True)
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("rsseg:segment_classes")
    assert algorithm.parameterDefinition("MODEL").options() == ["clip-vit-b-16", "test"]
    parameters = {"INPUT": RASTER, "CLASSES": "tree, soil", "MODEL": "test", "DEVICE": "cpu",
                  "OUTPUT_RASTER": str(tmp_path / "m.tif"), "OUTPUT_VECTOR": str(tmp_path / "p.gpkg")}
    context = QgsProcessingContext()
    assert algorithm.checkParameterValues(parameters, context)[0]
    assert "'MODEL':'test'" in algorithm.asPythonCommand(parameters, context)
    out = processing.run("rsseg:segment_classes", parameters, feedback=QgsProcessingFeedback())
    assert Path(out["OUTPUT_RASTER"]).is_file()


def test_any_model_id_runs_from_a_script_or_the_custom_field(provider, models_cache, tmp_path):
    """A script may pass an id the list does not show (here the hidden `test`), and Custom model id wins
    over Model; an unknown id is the backend's refusal, worded for the dialog."""
    from qgis import processing
    from qgis.core import QgsProcessingException

    models_cache([row("clip-vit-b-16", "classes")])
    assert "test" not in options("classes")

    def run(name, **parameters):
        return processing.run("rsseg:segment_classes", {
            "INPUT": RASTER, "CLASSES": "tree, soil", "DEVICE": "cpu",
            "OUTPUT_RASTER": str(tmp_path / f"{name}.tif"), "OUTPUT_VECTOR": str(tmp_path / f"{name}.gpkg"),
            **parameters}, feedback=QgsProcessingFeedback())

    assert Path(run("hidden", MODEL="test")["OUTPUT_RASTER"]).is_file()
    # the default Model (whose weights these tests never download) is not used: the custom id wins
    assert Path(run("custom", CUSTOM_MODEL=" test ")["OUTPUT_RASTER"]).is_file()
    with pytest.raises(QgsProcessingException) as caught:
        run("unknown", MODEL="test", CUSTOM_MODEL="no-such-model")
    message = str(caught.value)
    assert "no-such-model" in message and "`" not in message and "rsseg models" not in message
    assert "Model list" in message and "Custom model id" in message, message
    assert not (tmp_path / "unknown.tif").exists()
