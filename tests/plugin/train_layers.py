"""Layers for the training tests: the SpaceNet Atlanta raster and building footprints (tests/data), and label
layers made from the footprints with a class field of several values (a GeoPackage, a memory layer)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsFeature,
    QgsProject,
    QgsRasterLayer,
    QgsVectorFileWriter,
    QgsVectorLayer,
)

DATA = Path(__file__).parents[1] / "data"
RASTER = DATA / "spacenet_atlanta_pan.tif"
BUILDINGS = DATA / "spacenet_atlanta_buildings.geojson"
KINDS = ("house", "garage", "shed")  # by osm_id modulo 3: a class field with several values
TINY = "unetformer-r18-tiny"  # a trainable family's test twin: random start, fast on CPU


def project_layer(layer):
    assert layer.isValid(), layer.source()
    QgsProject.instance().addMapLayer(layer)
    return layer


def raster_layer(folder: Path) -> QgsRasterLayer:
    """The SpaceNet raster, copied into `folder`: QGIS writes the statistics it computes for a grey band's
    stretch to a side-car .aux.xml beside the file, which must not appear in tests/data."""
    copy = folder / RASTER.name
    if not copy.exists():
        shutil.copy(RASTER, copy)
    return project_layer(QgsRasterLayer(str(copy), "atlanta", "gdal"))


def buildings_layer() -> QgsVectorLayer:
    return project_layer(QgsVectorLayer(str(BUILDINGS), "buildings", "ogr"))


def memory_labels(name: str = "drawn labels") -> QgsVectorLayer:
    """The footprints in a memory layer with a `kind` field (house / garage / shed) and a `code` (1, 2, 3)."""
    source = QgsVectorLayer(str(BUILDINGS), "source", "ogr")
    layer = QgsVectorLayer(f"Polygon?crs={source.crs().authid()}&field=kind:string&field=code:integer",
                           name, "memory")
    features = []
    for feature in source.getFeatures():
        kind = int(feature["osm_id"]) % 3
        copy = QgsFeature(layer.fields())
        copy.setGeometry(feature.geometry())
        copy.setAttributes([KINDS[kind], kind + 1])
        features.append(copy)
    assert layer.dataProvider().addFeatures(features)[0]
    layer.updateExtents()
    return project_layer(layer)


def labelled_gpkg(folder: Path, name: str = "labels") -> QgsVectorLayer:
    """memory_labels written to `<folder>/<name>.gpkg` (layer `name`) and loaded from there."""
    memory = memory_labels("to write")
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName, options.layerName = "GPKG", name
    path = folder / f"{name}.gpkg"
    error = QgsVectorFileWriter.writeAsVectorFormatV3(memory, str(path), QgsProject.instance().transformContext(),
                                                      options)[0]
    assert error == QgsVectorFileWriter.WriterError.NoError
    QgsProject.instance().removeMapLayer(memory.id())
    return project_layer(QgsVectorLayer(f"{path}|layername={name}", name, "ogr"))


def pump(until, seconds: float = 240) -> bool:
    deadline = time.monotonic() + seconds
    while not until() and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.02)
    return until()
