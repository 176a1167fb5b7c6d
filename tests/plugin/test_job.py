"""JobParameters (dock, Processing) check a job with the protocol's SegmentRequest.validate(): the
same rules and messages as the CLI and the worker, as a JobError before any worker starts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rs_refseg_plugin.core.job import JobError, JobParameters

NEON = Path(__file__).parents[1] / "data" / "neon_osbs_rgb.tif"


def job(**kw) -> JobParameters:
    kw = {"raster": str(NEON), "mode": "classes", "prompt": "tree, soil", "model": "test", **kw}
    return JobParameters(**kw)


@pytest.mark.parametrize("fields, fragment", [
    (dict(prompt=" , "), "type at least one class"),
    (dict(mode="sentence", prompt="  "), "type a sentence"),
    (dict(prompt="water, WATER"), "duplicate class names"),
    (dict(tile=512, overlap=300), "overlap must be between 0 and half the tile size (256), got 300"),
    (dict(tile=8, overlap=0), "tile size must be at least 16 pixels"),
    (dict(device="tpu"), "unknown device 'tpu'"),
    (dict(region="extent", bbox=(5.0, 5.0, 5.0, 6.0)), "is empty or invalid"),
    (dict(region="polygons"), "no polygons selected"),
    (dict(region="view"), "region must be one of layer, extent, polygons"),
    (dict(mode="words"), "prompt mode must be one of classes, sentence"),
])
def test_bad_parameters_are_one_job_error(fields, fragment, tmp_path):
    with pytest.raises(JobError) as info:
        job(out_dir=str(tmp_path / "out"), **fields).to_request()
    assert fragment in str(info.value)
    assert not (tmp_path / "out").exists()


def test_good_parameters_give_a_request_with_an_output_folder(tmp_path):
    request = job(mode="sentence", prompt=" the  tall tree ", device="cuda:1", region="extent",
                  bbox=(0.0, 0.0, 1.0, 1.0)).to_request()
    assert request.sentence == "the tall tree" and request.device == "cuda:1" and request.region.bbox == (0, 0, 1, 1)
    assert Path(request.out_dir).is_dir()
    Path(request.out_dir).rmdir()
    first, second = (Path(job(out_dir=str(tmp_path)).to_request().out_dir) for _ in range(2))
    assert first.parent == second.parent == tmp_path and first != second  # a new sub-folder per run
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d{6} tree soil( 2)?", f.name) for f in (first, second))


def test_without_a_folder_runs_go_beside_the_saved_project(tmp_path):
    from qgis.core import QgsProject

    from rs_refseg_plugin.core.run_folder import PROJECT_FOLDER, default_root

    project = QgsProject()
    assert default_root(project).parts[-2:] == ("rs_refseg", "outputs")  # unsaved: the QGIS profile
    assert project.write(str(tmp_path / "work.qgz"))
    assert default_root(project) == tmp_path / PROJECT_FOLDER


def test_a_folder_that_cannot_hold_runs_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("x")
    with pytest.raises(JobError, match="cannot create a run folder in the output folder .*a file.*choose another"):
        job(out_dir=str(blocker)).to_request()
