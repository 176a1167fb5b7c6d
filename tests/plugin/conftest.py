"""Shared plugin-test fixtures."""

from __future__ import annotations

import sys

import pytest
from qgis.core import QgsApplication

from rs_refseg_plugin.core.backend import close_shared_backend
from rs_refseg_plugin.core.settings import PREFIX
from rs_refseg_plugin.processing.provider import RsSegProvider


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
