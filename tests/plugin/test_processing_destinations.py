"""Processing destinations that cannot be written: refused before the job with one line, or (found only
while writing: a full disk) one line after it, with no partial file; cross-device moves arrive whole.

Real headless QGIS through processing.run and a real worker (the `test` model); the file systems are
real: /sys, a read-only and a full tmpfs mounted for the test (root only, else skipped), /dev/shm.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from osgeo import gdal
from qgis.core import (
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingUtils,
    QgsRasterLayer,
    QgsVectorLayer,
)

DATA = Path(__file__).parents[1] / "data"
RASTER = str(DATA / "neon_osbs_rgb.tif")
IS_ROOT = os.name == "posix" and os.geteuid() == 0


class Recorder(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.progress = []
        self.progressChanged.connect(self.progress.append)


def run(parameters, feedback=None):
    from qgis import processing

    return processing.run("rsseg:segment_classes", {"INPUT": RASTER, "CLASSES": "tree, soil", "MODEL": "test",
                                                    "DEVICE": "cpu", **parameters},
                          feedback=feedback or QgsProcessingFeedback())


def work_folders() -> set:
    return set(Path(QgsProcessingUtils.tempFolder()).glob("rsseg_*"))


def one_line(exc) -> str:
    message = str(exc.value)
    assert "\n" not in message and "Traceback" not in message and "Errno" not in message, message
    return message


def refused(parameters, *words) -> str:
    """Runs the algorithm, expecting a refusal before the job: returns the one-line message."""
    before, feedback = work_folders(), Recorder()
    with pytest.raises(QgsProcessingException) as caught:
        run(parameters, feedback)
    message = one_line(caught)
    for word in words:
        assert word in message, (word, message)
    assert feedback.progress == [], "the job ran"
    assert work_folders() == before, "the job's temporary folder was made"
    return message


def probe_writable(folder: Path) -> bool:
    try:
        fd, name = tempfile.mkstemp(dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


@pytest.fixture
def tmpfs(tmp_path):
    """mount(options) -> a fresh tmpfs mounted under tmp_path (root with mount rights only, else skipped)."""
    mounted = []

    def mount(options: str) -> Path:
        if not IS_ROOT or shutil.which("mount") is None:
            pytest.skip("mounting a tmpfs needs root")
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                              capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        if subprocess.run(["umount", str(point)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30)


def fill(folder: Path) -> None:
    """Fills a small file system until it has no space left (an empty file can still be created)."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    with pytest.raises(OSError):
        (folder / "probe").write_bytes(b"\0" * 65536)
    (folder / "probe").unlink(missing_ok=True)


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- refused before the job ---------------------------------------------------------------------------

def test_destination_under_a_regular_file(provider, tmp_path):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    message = refused({"OUTPUT_RASTER": str(tmp_path / "notes.txt" / "out" / "mask.tif"),
                       "OUTPUT_VECTOR": str(tmp_path / "polygons.gpkg")},
                      "Mask:", "cannot create the folder", str(tmp_path / "notes.txt" / "out"), "is a file")
    assert message == (f"Mask: cannot create the folder “{tmp_path / 'notes.txt' / 'out'}”: "
                       f"“{tmp_path / 'notes.txt'}” is a file")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_destination_in_a_system_folder(provider, tmp_path):
    sysfs = Path("/sys")
    if not sysfs.is_dir() or probe_writable(sysfs):
        pytest.skip("no unwritable /sys here")
    listing = sorted(os.listdir(sysfs))
    refused({"OUTPUT_RASTER": str(tmp_path / "mask.tif"), "OUTPUT_VECTOR": "/sys/polygons.gpkg"},
            "Polygons: cannot write to the folder “/sys” (")
    assert sorted(os.listdir(sysfs)) == listing
    if Path("/proc/self").is_dir() and not probe_writable(Path("/proc/self")):
        refused({"OUTPUT_RASTER": "/proc/self/new/mask.tif", "OUTPUT_VECTOR": str(tmp_path / "polygons.gpkg")},
                "Mask: cannot create the folder “/proc/self/new” in “/proc/self” (files cannot be created there)")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or IS_ROOT, reason="root can write to read-only folders")
def test_destination_in_a_read_only_folder(provider, tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        refused({"OUTPUT_RASTER": str(folder / "mask.tif"), "OUTPUT_VECTOR": str(tmp_path / "polygons.gpkg")},
                f"Mask: cannot write to the folder “{folder}” (permission denied)")
        refused({"OUTPUT_RASTER": str(tmp_path / "mask.tif"), "OUTPUT_VECTOR": str(folder / "new" / "p.gpkg")},
                f"Polygons: cannot create the folder “{folder / 'new'}” in “{folder}” (permission denied)")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)
    assert [p.name for p in tmp_path.iterdir()] == ["locked"]


def test_destination_on_a_read_only_file_system(provider, tmp_path, tmpfs):
    readonly = tmpfs("ro,size=64k")
    assert not probe_writable(readonly)
    message = refused({"OUTPUT_RASTER": str(readonly / "mask.tif"), "OUTPUT_VECTOR": str(tmp_path / "p.gpkg")},
                      "read-only file system")
    assert message == f"Mask: cannot write to the folder “{readonly}” (read-only file system)"
    message = refused({"OUTPUT_RASTER": str(tmp_path / "m.tif"), "OUTPUT_VECTOR": str(readonly / "sub" / "p.shp")})
    assert message == (f"Polygons: cannot create the folder “{readonly / 'sub'}” in “{readonly}” "
                       "(read-only file system)")
    assert [p.name for p in tmp_path.iterdir()] == ["mnt0"]


def test_destination_is_the_input_raster(provider, tmp_path):
    """The same path, the same path spelt differently, a symbolic link and a hard link to it."""
    source = tmp_path / "input.tif"
    shutil.copyfile(RASTER, source)
    (tmp_path / "alias.tif").symlink_to(source)
    os.link(source, tmp_path / "hardlink.tif")
    digest = sha(source)
    for destination in (source, tmp_path / "sub" / ".." / "input.tif", tmp_path / "alias.tif",
                        tmp_path / "hardlink.tif"):
        message = refused({"INPUT": str(source), "OUTPUT_RASTER": str(destination),
                           "OUTPUT_VECTOR": str(tmp_path / "polygons.gpkg")}, "Mask:", "is the input raster")
        assert message.endswith("is the input raster; choose another file")
    refused({"INPUT": str(source), "OUTPUT_RASTER": str(tmp_path / "mask.tif"),
             "OUTPUT_VECTOR": f"{source}|layername=polygons"}, f"Polygons: “{source}” is the input raster")
    assert sha(source) == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alias.tif", "hardlink.tif", "input.tif"]


def test_destination_is_a_folder(provider, tmp_path):
    (tmp_path / "mask.tif").mkdir()
    (tmp_path / "polygons.gpkg").mkdir()
    message = refused({"OUTPUT_RASTER": str(tmp_path / "mask.tif"), "OUTPUT_VECTOR": str(tmp_path / "p.gpkg")})
    assert message == f"Mask: “{tmp_path / 'mask.tif'}” is a folder; choose a file name in it"
    message = refused({"OUTPUT_RASTER": str(tmp_path / "m.tif"), "OUTPUT_VECTOR": str(tmp_path / "polygons.gpkg")})
    assert message == f"Polygons: “{tmp_path / 'polygons.gpkg'}” is a folder; choose a file name in it"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif", "polygons.gpkg"]
    assert not any((tmp_path / "mask.tif").iterdir()) and not any((tmp_path / "polygons.gpkg").iterdir())


def test_other_destinations_that_are_not_files(provider, tmp_path):
    os.mkfifo(tmp_path / "pipe.tif")
    refused({"OUTPUT_RASTER": str(tmp_path / "pipe.tif"), "OUTPUT_VECTOR": str(tmp_path / "p.gpkg")},
            f"Mask: “{tmp_path / 'pipe.tif'}” is not a regular file")
    refused({"OUTPUT_RASTER": str(tmp_path / "m.tif"), "OUTPUT_VECTOR": "postgis:dbname='gis' table=\"t\" (geom)"},
            "Polygons: “postgis:dbname='gis' table=\"t\" (geom)” is not a file")
    refused({"OUTPUT_RASTER": str(tmp_path / "same.gpkg"), "OUTPUT_VECTOR": str(tmp_path / "same.gpkg")},
            f"Polygons: “{tmp_path / 'same.gpkg'}” is also the Mask file")
    assert [p.name for p in tmp_path.iterdir()] == ["pipe.tif"]


# -- found while writing ------------------------------------------------------------------------------

def test_full_disk_is_one_line_and_leaves_nothing(provider, tmp_path, tmpfs):
    """A full file system passes the check (an empty probe file fits) and fails the copy: one line, no
    partial or hidden file; polygons failing after the mask take the mask back out."""
    full = tmpfs("size=64k")
    assert os.stat(full).st_dev != os.stat(QgsProcessingUtils.tempFolder()).st_dev
    fill(full)
    feedback = Recorder()
    with pytest.raises(QgsProcessingException) as caught:
        run({"OUTPUT_RASTER": str(full / "mask.tif"), "OUTPUT_VECTOR": str(tmp_path / "polygons.gpkg")}, feedback)
    assert one_line(caught) == f"Mask: cannot write “{full / 'mask.tif'}”: no space left on the device"
    assert feedback.progress, "the job should have run"
    assert os.listdir(full) == ["filler"]
    assert [p.name for p in tmp_path.iterdir()] == ["mnt0"]

    with pytest.raises(QgsProcessingException) as caught:
        run({"OUTPUT_RASTER": str(tmp_path / "mask.tif"), "OUTPUT_VECTOR": str(full / "new" / "polygons.gpkg")})
    assert one_line(caught) == f"Polygons: cannot write “{full / 'new' / 'polygons.gpkg'}”: no space left on the device"
    assert os.listdir(full) == ["filler"]  # neither the hidden copy nor the folder it made
    assert [p.name for p in tmp_path.iterdir()] == ["mnt0"]  # the mask is taken back out

    # converted by GDAL, not moved: GDAL's own words for a full disk vary, the message does not
    with pytest.raises(QgsProcessingException) as caught:
        run({"OUTPUT_RASTER": str(full / "mask.img"), "OUTPUT_VECTOR": str(tmp_path / "polygons.gpkg")})
    assert one_line(caught) == f"Mask: cannot write “{full / 'mask.img'}”: no space left on the device"
    with pytest.raises(QgsProcessingException) as caught:
        run({"OUTPUT_RASTER": str(tmp_path / "mask.tif"), "OUTPUT_VECTOR": str(full / "polygons.shp")})
    assert one_line(caught) == f"Polygons: cannot write “{full / 'polygons.shp'}”: no space left on the device"
    assert os.listdir(full) == ["filler"]  # no .img/.shp/.dbf/.shx/.prj left
    assert [p.name for p in tmp_path.iterdir()] == ["mnt0"]


# -- what still works ---------------------------------------------------------------------------------

def test_cross_device_destinations_arrive_complete(provider, tmp_path):
    """/dev/shm is another file system than Processing's temporary folder: the mask replaces an older file
    there, the polygons go to a folder that is created; both arrive whole, like a same-disk run."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not probe_writable(shm) \
            or os.stat(shm).st_dev == os.stat(QgsProcessingUtils.tempFolder()).st_dev:
        pytest.skip("no /dev/shm on another file system than the temporary folder")
    target = shm / f"rsseg-test-{uuid.uuid4().hex}"
    target.mkdir()
    try:
        (target / "mask.tif").write_bytes(b"an older file")
        out = run({"OUTPUT_RASTER": str(target / "mask.tif"), "OUTPUT_VECTOR": str(target / "new" / "p.gpkg")})
        assert out["OUTPUT_RASTER"] == str(target / "mask.tif")
        local = run({"OUTPUT_RASTER": str(tmp_path / "mask.tif"), "OUTPUT_VECTOR": str(tmp_path / "p.gpkg")})
        far, near = gdal.Open(str(target / "mask.tif")), gdal.Open(local["OUTPUT_RASTER"])
        assert (far.RasterXSize, far.RasterYSize) == (near.RasterXSize, near.RasterYSize)
        assert far.GetGeoTransform() == near.GetGeoTransform() and far.GetProjection() == near.GetProjection()
        assert far.GetRasterBand(1).ReadAsArray().tobytes() == near.GetRasterBand(1).ReadAsArray().tobytes()
        far = near = None
        polygons = QgsVectorLayer(str(target / "new" / "p.gpkg"), "p", "ogr")
        assert polygons.isValid()
        assert polygons.featureCount() == QgsVectorLayer(local["OUTPUT_VECTOR"], "p", "ogr").featureCount() > 0
        assert (target / "mask.tif").stat().st_mode == (tmp_path / "mask.tif").stat().st_mode
        assert sorted(p.name for p in target.iterdir()) == ["mask.tif", "new"]  # no hidden copies left
        assert [p.name for p in (target / "new").iterdir()] == ["p.gpkg"]
    finally:
        shutil.rmtree(target, ignore_errors=True)


def test_temporary_and_geopackage_table_destinations(provider, tmp_path):
    out = run({"OUTPUT_RASTER": "TEMPORARY_OUTPUT", "OUTPUT_VECTOR": "TEMPORARY_OUTPUT"})
    assert QgsRasterLayer(out["OUTPUT_RASTER"], "m", "gdal").isValid()
    assert QgsVectorLayer(out["OUTPUT_VECTOR"], "p", "ogr").featureCount() > 0
    # the dialog's "Save to GeoPackage…": a table in a file
    table = f"ogr:dbname='{tmp_path / 'result.gpkg'}' table=\"trees\" (geom)"
    out = run({"OUTPUT_RASTER": str(tmp_path / "mask.tif"), "OUTPUT_VECTOR": table})
    assert out["OUTPUT_VECTOR"] == table
    assert QgsVectorLayer(f"{tmp_path / 'result.gpkg'}|layername=trees", "p", "ogr").featureCount() > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif", "result.gpkg"]
