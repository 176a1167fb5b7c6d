"""Shared plugin-test fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer

from rs_refseg_plugin.core.backend import close_shared_backend
from rs_refseg_plugin.core.settings import PREFIX
from rs_refseg_plugin.processing.provider import RsSegProvider

NEON = Path(__file__).parents[1] / "data" / "neon_osbs_rgb.tif"


@pytest.fixture(scope="module")
def provider(qgis_app, qgis_processing):
    """The provider on the test venv's python (which has rsseg); a stale QgsSettings value is cleared."""
    from qgis.core import QgsSettings

    mp = pytest.MonkeyPatch()
    mp.setenv("RSSEG_PYTHON", sys.executable)
    settings = QgsSettings()
    before = settings.value(PREFIX + "python", None)
    settings.setValue(PREFIX + "python", "")
    registry = QgsApplication.processingRegistry()
    provider = RsSegProvider()
    assert registry.addProvider(provider)
    yield provider
    registry.removeProvider(provider)
    close_shared_backend()
    if before is None:
        settings.remove(PREFIX + "python")
    else:
        settings.setValue(PREFIX + "python", before)
    mp.undo()


@pytest.fixture
def neon():
    """The NEON RGB orthophoto (tests/data) as a layer of the current project."""
    layer = QgsRasterLayer(str(NEON), "neon", "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


SETTINGS = ("python", "recent_classes", "recent_sentences", "model_classes", "model_sentence", "out_dir",
            "show_test_models", "models_cache", "train_model", "train_dir", "train_host", "top_k")


@pytest.fixture
def worker(monkeypatch, tmp_path):
    """The real worker on this venv's Python, with "My models" kept in the test's folder (not the user's):
    a worker started before (with other settings) is closed first, and this one after."""
    close_shared_backend()
    monkeypatch.setenv("RSSEG_PYTHON", sys.executable)
    monkeypatch.setenv("RSSEG_MODELS_DIR", str(tmp_path / "rsseg-models"))
    monkeypatch.setenv("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "1"))
    yield tmp_path / "rsseg-models"
    close_shared_backend()


@pytest.fixture
def started_plugin(qgis_iface, qgis_new_project):
    """The plugin as QGIS starts it, on settings as a fresh profile has them (the dock reads them when it
    opens); unloaded and cleared after."""
    from qgis.core import QgsSettings

    from rs_refseg_plugin import classFactory

    settings = QgsSettings()
    for key in SETTINGS:
        settings.remove(PREFIX + key)
    qgis_iface.messageBar().clear_messages()
    instance = classFactory(qgis_iface)
    instance.initGui()
    yield instance
    instance.unload()
    close_shared_backend()
    for key in SETTINGS:
        settings.remove(PREFIX + key)
