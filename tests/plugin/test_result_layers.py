"""The plugin's result loader in real headless QGIS: a backend job's outputs become styled layers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from qgis.core import QgsProject, QgsRasterLayer

from rs_refseg_plugin import classFactory
from rs_refseg_plugin.core.result_layers import ResultError, add_result_layers, read_result
from rsseg.protocol.contracts import SegmentRequest
from rsseg.service import run_segment

DATA = Path(__file__).parents[1] / "data"


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    out = tmp_path_factory.mktemp("job")
    request = SegmentRequest(raster=str(DATA / "neon_osbs_rgb.tif"), out_dir=str(out),
                             classes=["tree", "grass", "soil"], tile=256, overlap=32)
    return run_segment(request), out / "result.json"


def test_layers_are_georeferenced_styled_and_grouped(qgis_new_project, job):
    result, path = job
    project = QgsProject.instance()
    added = add_result_layers(read_result(path), project)
    assert json.dumps(read_result(path).to_dict()) == json.dumps(result.to_dict())  # the record the job returned
    source = QgsRasterLayer(str(DATA / "neon_osbs_rgb.tif"), "source", "gdal")
    assert added.group.name() == "tree, grass, soil"
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


def test_plugin_menu_action_and_unload(qgis_iface, qgis_new_project, job, tmp_path):
    plugin = classFactory(qgis_iface)
    plugin.initGui()
    assert [a.text() for a in plugin.actions] == ["Segment with text…", "Add segmentation result…"]
    plugin.add_result(str(tmp_path / "nothing.json"))  # a bad path: a message, no layer
    assert QgsProject.instance().mapLayers() == {}
    plugin.add_result(str(job[1]))
    assert len(QgsProject.instance().mapLayers()) == 2
    plugin.unload()
    assert plugin.actions == []
