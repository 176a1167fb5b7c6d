"""The plugin's result loader in real headless QGIS: a backend job's outputs become styled layers,
named so that repeated runs differ, with the full prompt and the job's summary in their metadata;
and the plugin's menu, toolbar and help entries."""

from __future__ import annotations

import json
import os
import shutil
from configparser import ConfigParser
from datetime import datetime
from pathlib import Path

import pytest
from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QObject, QUrl, pyqtSlot
from qgis.PyQt.QtGui import QDesktopServices

from rs_refseg_plugin import classFactory
from rs_refseg_plugin.core import help as plugin_help
from rs_refseg_plugin.core.result_layers import (
    KEYWORDS_CLASSES,
    KEYWORDS_MODEL,
    ResultError,
    add_result_layers,
    read_result,
)
from rs_refseg_plugin.core.summary import short, summary_lines
from rs_refseg_plugin.plugin import MENU
from rsseg.protocol.contracts import SegmentRequest
from rsseg.service import run_segment

ROOT = Path(__file__).parents[2]
DATA = ROOT / "tests" / "data"


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    out = tmp_path_factory.mktemp("job")
    request = SegmentRequest(raster=str(DATA / "neon_osbs_rgb.tif"), out_dir=str(out),
                             classes=["tree", "grass", "soil"], tile=256, overlap=32)
    return run_segment(request), out / "result.json"


def copied_job(job, folder: Path, **changes) -> Path:
    """The job's outputs copied into `folder` with a result.json changed by `changes` (paths follow)."""
    _, path = job
    record = json.loads(path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    for key in ("mask", "polygons"):
        record[key] = str(shutil.copy(record[key], folder / Path(record[key]).name))
    record.update(changes)
    (folder / "result.json").write_text(json.dumps(record))
    return folder / "result.json"


def hh_mm(path: str) -> str:
    return datetime.fromtimestamp(os.stat(path).st_mtime).strftime("%H:%M:%S")


def test_layers_are_georeferenced_styled_and_grouped(qgis_new_project, job):
    result, path = job
    project = QgsProject.instance()
    added = add_result_layers(read_result(path), project)
    assert json.dumps(read_result(path).to_dict()) == json.dumps(result.to_dict())  # the record the job returned
    source = QgsRasterLayer(str(DATA / "neon_osbs_rgb.tif"), "source", "gdal")
    # Named by the prompt, the model and the time the job finished (the mask's modification time).
    assert added.group.name() == f"tree, grass, soil — test {hh_mm(result.mask)}"
    assert (added.raster.name(), added.vector.name()) == ("tree, grass, soil (mask)", "tree, grass, soil (polygons)")
    assert {child.layer().id() for child in added.group.findLayers()} == {added.raster.id(), added.vector.id()}
    assert added.raster.crs().authid() == source.crs().authid() == "EPSG:32617"
    assert added.raster.extent() == source.extent()
    assert (added.raster.width(), added.raster.height()) == (source.width(), source.height())
    renderer = added.raster.renderer()
    assert renderer.type() == "paletted"
    palette = {c.value: (c.label, c.color.name()) for c in renderer.classes()}
    assert palette == {c.id: (c.name, c.colour) for c in result.classes}
    assert added.vector.crs().authid() == "EPSG:32617"
    assert added.vector.featureCount() == sum(c.polygons for c in result.classes) > 0
    categories = added.vector.renderer().categories()
    assert added.vector.renderer().classAttribute() == "class_id"
    assert {c.value(): (c.label(), c.symbol().color().name()) for c in categories} == palette


def test_metadata_holds_the_prompt_model_source_and_summary_and_stays_in_the_project(qgis_new_project, job,
                                                                                       tmp_path):
    result, path = job
    added = add_result_layers(read_result(path), QgsProject.instance())
    expected_lines = ["Prompt: tree, grass, soil", "Model: test", f"Source raster: {DATA / 'neon_osbs_rgb.tif'}",
                      *summary_lines(result)]
    for layer, kind in ((added.raster, "mask"), (added.vector, "polygons")):
        metadata = layer.metadata()
        assert metadata.title() == f"tree, grass, soil ({kind}) — test {hh_mm(result.mask)}"
        abstract = metadata.abstract().splitlines()
        assert all(line in abstract for line in expected_lines), abstract
        assert any(line.startswith("Finished: ") for line in abstract)
        assert metadata.keywords() == {KEYWORDS_CLASSES: ["tree", "grass", "soil"], KEYWORDS_MODEL: ["test"]}
        assert metadata.crs().authid() == "EPSG:32617"

    # Saved with the project and read back from it.
    project_file, group = tmp_path / "saved.qgs", added.group.name()
    assert QgsProject.instance().write(str(project_file))
    QgsProject.instance().clear()
    assert QgsProject.instance().read(str(project_file))
    by_name = {layer.name(): layer for layer in QgsProject.instance().mapLayers().values()}
    assert set(by_name) == {"tree, grass, soil (mask)", "tree, grass, soil (polygons)"}
    for layer in by_name.values():
        assert layer.metadata().abstract().splitlines()[:3] == expected_lines[:3]
        assert layer.metadata().keywords()[KEYWORDS_MODEL] == ["test"]
    assert [g.name() for g in QgsProject.instance().layerTreeRoot().findGroups()] == [group]


def test_a_long_prompt_gives_short_names_and_legend_labels_and_stays_whole_in_the_metadata(
        qgis_new_project, job, tmp_path):
    result, _ = job
    sentence = "the large white building\nnext to the parking lot " + "and the trees " * 700  # ~10,000 characters
    assert len(sentence) > 9000
    long_class = "deciduous broadleaf tree canopy " * 10
    classes = [dict(c.__dict__) for c in result.classes]
    classes[0]["name"] = long_class
    request = {**result.request, "model": "clip-vit-b-16", "checkpoint": "/runs/a/checkpoints/step-9.json"}
    path = copied_job(job, tmp_path / "long", prompt=sentence, classes=classes, request=request)
    mask = json.loads(path.read_text())["mask"]
    when = datetime(2024, 5, 1, 9, 7, 30)
    os.utime(mask, (when.timestamp(), when.timestamp()))

    added = add_result_layers(read_result(path), QgsProject.instance())
    name = short(sentence)
    assert name.startswith("the large white building next to the parking lot and")  # one line
    assert len(name) == 60 and name.endswith("…")
    assert added.group.name() == f"{name} — clip-vit-b-16 09:07:30"
    assert (added.raster.name(), added.vector.name()) == (f"{name} (mask)", f"{name} (polygons)")
    labels = [c.label for c in added.raster.renderer().classes()]
    assert labels[0] == short(long_class, 40) and len(labels[0]) <= 40 and labels[0].endswith("…")
    assert labels[1:] == [c.name for c in result.classes[1:]]
    assert [c.label() for c in added.vector.renderer().categories()] == labels
    metadata = added.raster.metadata()
    assert metadata.abstract().startswith(f"Prompt: {sentence}\nModel: clip-vit-b-16\n"
                                          "Checkpoint: /runs/a/checkpoints/step-9.json\n")
    assert "Finished: 2024-05-01 09:07:30" in metadata.abstract()
    assert metadata.keywords()[KEYWORDS_CLASSES][0] == long_class
    assert "\n" not in added.group.name() + added.raster.name() + metadata.title()


def test_a_record_without_model_names_the_prompt_and_time(qgis_new_project, job, tmp_path):
    result, _ = job
    request = {k: v for k, v in result.request.items() if k != "model"}
    path = copied_job(job, tmp_path / "nomodel", request=request)
    added = add_result_layers(read_result(path), QgsProject.instance())
    assert added.group.name() == f"tree, grass, soil — {hh_mm(added.raster.source())}"
    assert KEYWORDS_MODEL not in added.raster.metadata().keywords()


def test_a_broken_result_adds_nothing(qgis_new_project, job, tmp_path):
    _, path = job
    record = json.loads(path.read_text())
    record["polygons"] = str(tmp_path / "missing.gpkg")
    broken = tmp_path / "result.json"
    broken.write_text(json.dumps(record))
    project = QgsProject.instance()
    before = (len(project.mapLayers()), len(project.layerTreeRoot().children()))
    with pytest.raises(ResultError, match="missing.gpkg"):
        add_result_layers(read_result(broken), project)
    with pytest.raises(ResultError, match="not a readable result record.*a result record is an object"):
        (tmp_path / "other.json").write_text("[1, 2]")
        read_result(tmp_path / "other.json")
    with pytest.raises(ResultError, match="lacks mask"):
        (tmp_path / "other.json").write_text(json.dumps({k: v for k, v in record.items() if k != "mask"}))
        read_result(tmp_path / "other.json")
    assert (len(project.mapLayers()), len(project.layerTreeRoot().children())) == before


class UrlCatcher(QObject):
    """Qt's own hook for QDesktopServices.openUrl (setUrlHandler): no browser starts in the test."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    @pyqtSlot(QUrl)
    def open(self, url: QUrl) -> None:
        self.urls.append(url.toString())


def test_plugin_menu_toolbar_help_and_unload(qgis_iface, qgis_new_project, job, tmp_path, monkeypatch):
    on_toolbar, off_toolbar = [], []
    monkeypatch.setattr(qgis_iface, "addToolBarIcon", on_toolbar.append)
    monkeypatch.setattr(qgis_iface, "removeToolBarIcon", off_toolbar.append)
    for name in ("addPluginToRasterMenu", "removePluginRasterMenu", "addRasterToolBarIcon", "removeRasterToolBarIcon"):
        getattr(qgis_iface, name).reset_mock()
    plugin = classFactory(qgis_iface)
    plugin.initGui()
    actions = list(plugin.actions)
    assert [a.text() for a in actions] == ["Segment with text…", "Add segmentation result…", "Help"]
    assert [c.args for c in qgis_iface.addPluginToRasterMenu.call_args_list] == [(MENU, a) for a in actions]
    # The dock's action on the Plugins toolbar (shown in a fresh profile), not the hidden Raster toolbar.
    assert on_toolbar == [actions[0]] and plugin.toolbar_action is actions[0]
    qgis_iface.addRasterToolBarIcon.assert_not_called()

    catcher = UrlCatcher()
    QDesktopServices.setUrlHandler("https", catcher, "open")
    try:
        actions[2].trigger()
    finally:
        QDesktopServices.unsetUrlHandler("https")
    assert catcher.urls == [plugin_help.HELP_URL]

    plugin.add_result(str(tmp_path / "nothing.json"))  # a bad path: a message, no layer
    assert QgsProject.instance().mapLayers() == {}
    plugin.add_result(str(job[1]))
    assert len(QgsProject.instance().mapLayers()) == 2
    plugin.unload()
    assert plugin.actions == [] and plugin.toolbar_action is None
    assert off_toolbar == [actions[0]]
    assert [c.args for c in qgis_iface.removePluginRasterMenu.call_args_list] == [(MENU, a) for a in actions]
    qgis_iface.removeRasterToolBarIcon.assert_not_called()


def test_help_url_is_the_homepage_docs(tmp_path):
    meta = ConfigParser(interpolation=None)
    meta.read(ROOT / "rs_refseg_plugin" / "metadata.txt", encoding="utf-8")
    homepage = meta.get("general", "homepage").strip().rstrip("/")
    assert plugin_help.HELP_URL == homepage + "/blob/main/docs/plugin.md"
    assert (ROOT / "docs" / "plugin.md").is_file()  # the page the URL names, on the main branch
    assert plugin_help.help_url("the-dock") == plugin_help.HELP_URL + "#the-dock"
    (tmp_path / "metadata.txt").write_text("[general]\nname=x\nhomepage=https://example.org/r/\n")
    assert plugin_help.homepage(tmp_path / "metadata.txt") == "https://example.org/r"
    (tmp_path / "bad.txt").write_text("no section header\n")
    assert plugin_help.homepage(tmp_path / "bad.txt") == plugin_help.FALLBACK_HOMEPAGE
    assert plugin_help.homepage(tmp_path / "absent.txt") == plugin_help.FALLBACK_HOMEPAGE
