"""The plugin's side of the backend: the worker client imported from the plugin package, in QGIS.

The client is the standard-library module the plugin ships (through its `protocol` link); it starts
a real `rsseg serve` worker, whose result record becomes styled layers in the project.
"""

from __future__ import annotations

import subprocess  # nosec B404
import sys
from pathlib import Path

from qgis.core import QgsProject, QgsRasterLayer

from rs_refseg_plugin.core.result_layers import add_result_layers
from rs_refseg_plugin.protocol.client import WorkerClient, WorkerConfig
from rs_refseg_plugin.protocol.contracts import SegmentRequest, SegmentResult

DATA = Path(__file__).parents[1] / "data"


def test_importing_the_client_does_not_import_torch_or_numpy():
    code = ("import sys; import rs_refseg_plugin.protocol.client; "
            "bad = {'torch', 'numpy', 'rasterio', 'rsseg'} & set(sys.modules); assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)  # nosec B603
    assert proc.returncode == 0, proc.stderr


def test_job_through_the_worker_becomes_layers(qgis_new_project, tmp_path):
    request = SegmentRequest(raster=str(DATA / "neon_osbs_rgb.tif"), out_dir=str(tmp_path / "out"),
                             classes=["tree", "soil"], tile=256, overlap=32)
    stages = []
    with WorkerClient(WorkerConfig(sys.executable)) as client:
        result = client.segment(request, on_progress=lambda p: stages.append(p.stage))
    assert "segment" in stages
    (tmp_path / "out" / "result.json").unlink()  # the layers come from the worker's record, not the file
    added = add_result_layers(SegmentResult.from_dict(result), QgsProject.instance())
    source = QgsRasterLayer(str(DATA / "neon_osbs_rgb.tif"), "source", "gdal")
    assert result["prompt"] == "tree, soil" and added.group.name().startswith("tree, soil — test ")
    assert added.raster.crs() == source.crs() and added.raster.extent() == source.extent()
    assert added.vector is not None and added.vector.featureCount() > 0
