"""Adding a model family touches its own package and one registry entry: proved with a toy family.

The toy family is a real package written to a temporary folder that joins `rsseg.models`' package
path (as a new folder under backend/src/rsseg/models/ would); the factory finds its `family.py` the
first time its builder ("toyfamily") is asked for. Nothing in the engine, the service, the factory or the
registry's code changes: the job below runs through `run_segment` like any other.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio

import rsseg.models
from rsseg.errors import ModelError
from rsseg.models import factory
from rsseg.models.catalog import model_row
from rsseg.models.registry import MODELS, register
from rsseg.protocol.contracts import SegmentRequest
from rsseg.service.segment import run_segment
from rsseg.spec import ModelSpec

NEON = Path(__file__).parents[1] / "data" / "neon_osbs_rgb.tif"

TOY_FAMILY = '''
"""A toy family: class k wins where band k is brightest (a real TileModel, no weights)."""
import numpy as np

from rsseg.models.factory import builder, refuse_options


class BrightestBand:
    def __init__(self, names, activation):
        self.class_names, self.activation, self.n_inputs = names, activation, 3

    def __call__(self, tiles):
        return np.ascontiguousarray(tiles[:, : len(self.class_names)] * 10.0, dtype=np.float32)


@builder("toyfamily")
def build(spec, prompts, activation, device, options):
    refuse_options(spec, options)
    return BrightestBand(prompts, activation)
'''


@pytest.fixture
def toy_family(tmp_path, monkeypatch):
    package = tmp_path / "families" / "toyfamily"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""The toy family."""\n')
    (package / "family.py").write_text(textwrap.dedent(TOY_FAMILY))
    monkeypatch.setattr(rsseg.models, "__path__", [*rsseg.models.__path__, str(package.parent)])
    ids = set(MODELS)
    yield
    factory.BUILDERS.pop("toyfamily", None)
    for model_id in set(MODELS) - ids:
        del MODELS[model_id]
    for name in [m for m in sys.modules if m.startswith("rsseg.models.toyfamily")]:
        del sys.modules[name]


def test_a_new_family_needs_its_package_and_one_registry_entry(toy_family, tmp_path):
    assert "toyfamily" not in factory.BUILDERS
    # the one data entry
    register(ModelSpec(id="toy-brightest", task="classes", builder="toyfamily",
                       description="Toy family: the brightest band wins.", licence="GPL-2.0-or-later"))
    result = run_segment(SegmentRequest(raster=str(NEON), out_dir=str(tmp_path / "out"), model="toy-brightest",
                                        classes=["red", "green", "blue"], tile=128, overlap=16, device="cpu"))
    assert "toyfamily" in factory.BUILDERS  # imported on demand, registered from its own package
    with rasterio.open(NEON) as src, rasterio.open(result.mask) as mask:
        data, classes = src.read().astype(np.float32), mask.read(1)
    low, high = (np.array(result.stretch[k], np.float32)[:, None, None] for k in ("low", "high"))
    expected = np.clip((data - low) / (high - low), 0, 1).argmax(axis=0) + 1  # the engine's stretch, then the toy
    valid = classes != 255
    assert (classes[valid] == expected[valid]).mean() > 0.99
    assert sum(c.pixels for c in result.classes) == valid.sum()
    row = model_row(MODELS["toy-brightest"])
    assert row["description"] == "Toy family: the brightest band wins." and row["test_model"] is True
    assert json.loads(json.dumps(row))["task"] == "classes"


def test_an_unknown_builder_is_a_model_error(toy_family):
    register(ModelSpec(id="toy-missing", task="classes", builder="no-such-builder", description="x", licence="x"))
    with pytest.raises(ModelError, match="no builder 'no-such-builder' is registered"):
        factory.build_model("toy-missing", ["a", "b"], None)
