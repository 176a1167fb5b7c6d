"""The failure corpus: bad, damaged or hostile input through the CLI and a real worker.

Every case is a row of CASES, run twice: through `rsseg segment` (the CLI's main, in this process)
and through a real `rsseg serve` subprocess. Each asserts the exit code or error record, the key
words of the one-line message, that the source raster's sha256 is unchanged, and that the output
folder holds no partial or hidden file afterwards (and still holds the user's own files). Signal
cases (SIGTERM, SIGHUP, SIGKILL of the CLI and of the worker) run real subprocesses further down;
docs/failures.md describes the behaviour they pin.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess  # nosec B404  # real rsseg processes for the signal cases
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import fiona
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.crs import CRS

from rsseg.cli.main import main
from rsseg.protocol.client import BackendError, WorkerClient, WorkerConfig
from rsseg.protocol.contracts import SegmentRequest
from rsseg.weights.trained_checkpoint import save_checkpoint

DATA = Path(__file__).parents[1] / "data"
NEON = DATA / "neon_osbs_rgb.tif"  # 3 bands Byte, nodata 255, EPSG:32617, 400x400
RSSEG = [sys.executable, "-m", "rsseg"]

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.is_dir() else []


def write(path: Path, data: np.ndarray, **profile) -> Path:
    base = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype=data.dtype,
                crs=CRS.from_epsg(32617), transform=Affine(1, 0, 400000, 0, -1, 3285000))
    base.update(profile)
    with rasterio.open(path, "w", **base) as dst:
        dst.write(data)
    return path


def neon_copy(path: Path, **profile) -> Path:
    with rasterio.open(NEON) as src:
        return write(path, src.read(), crs=src.crs, transform=src.transform, nodata=src.nodata, **profile)


# --- inputs: each builder gets the case's work folder and returns the request's fields -------------------

def _neon(work: Path) -> dict:
    return {"raster": str(neon_copy(work / "scene.tif"))}


def _input_in_out(name: str, link: str = "") -> Callable[[Path], dict]:
    def build(work: Path) -> dict:
        out = work / "out"
        out.mkdir()
        if not link:
            return {"raster": str(neon_copy(out / name))}
        source = neon_copy(work / "scene.tif")
        (os.link if link == "hard" else os.symlink)(source, out / name)
        return {"raster": str(source)}
    return build


def _users_file(name: str, content: bytes | None = None) -> Callable[[Path], dict]:
    def build(work: Path) -> dict:
        out = work / "out"
        out.mkdir()
        if name.endswith(".gpkg"):
            schema = {"geometry": "Point", "properties": {"note": "str"}}
            with fiona.open(out / name, "w", driver="GPKG", schema=schema, crs="EPSG:32617") as dst:
                dst.write({"geometry": {"type": "Point", "coordinates": (1.0, 2.0)}, "properties": {"note": "mine"}})
        else:
            (out / name).write_bytes(content or b"")
        return _neon(work)
    return build


def _damaged(cut: float | None = None, corrupt: bool = False) -> Callable[[Path], dict]:
    def build(work: Path) -> dict:
        path = neon_copy(work / "scene.tif", tiled=True, blockxsize=128, blockysize=128, compress="deflate")
        data = bytearray(path.read_bytes())
        if cut is not None:
            del data[int(len(data) * cut):]
        if corrupt:
            with rasterio.open(path) as src:  # garble the middle block's compressed bytes
                offset = int(src.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
                size = int(src.get_tag_item("BLOCK_SIZE_1_1", "TIFF", bidx=1))
            data[offset:offset + size] = bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8))
        path.write_bytes(bytes(data))
        return {"raster": str(path)}
    return build


def _vrt_missing_source(work: Path) -> dict:
    source = neon_copy(work / "gone.tif")
    vrt = work / "scene.vrt"
    with rasterio.open(source) as src:
        bands = "".join(
            f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource><SourceFilename relativeToVRT="1">gone.tif'
            f"</SourceFilename><SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>" for b in (1, 2, 3))
        vrt.write_text(f'<VRTDataset rasterXSize="{src.width}" rasterYSize="{src.height}"><SRS>{src.crs.to_wkt()}'
                       f"</SRS><GeoTransform>{', '.join(map(str, src.transform.to_gdal()))}</GeoTransform>{bands}"
                       "</VRTDataset>")
    source.unlink()
    return {"raster": str(vrt)}


def _fifo(work: Path) -> dict:
    os.mkfifo(work / "scene.tif")
    return {"raster": str(work / "scene.tif")}


def _complex(work: Path) -> dict:
    data = (np.random.default_rng(0).random((1, 64, 64)) * (1 + 1j)).astype(np.complex64)
    return {"raster": str(write(work / "scene.tif", data))}


def _with(build: Callable[[Path], dict], **fields) -> Callable[[Path], dict]:
    return lambda work: {**build(work), **fields}


def _checkpoint(damage: str) -> Callable[[Path], dict]:
    """The tiny RSRefSeg with a checkpoint in `rsseg train`'s format, damaged as named."""
    def build(work: Path) -> dict:
        checkpoint = save_checkpoint(work / "run" / "step-0000001", {"prompter.w": torch.zeros(64)},
                                     {"model": "rsrefseg-test", "step": 1})
        tensors = checkpoint.with_suffix(".safetensors")
        if damage == "truncated":
            tensors.write_bytes(tensors.read_bytes()[:40])
        elif damage == "pickle":
            torch.save({"prompter.w": torch.zeros(64)}, tensors)
        elif damage == "outside":
            record = json.loads(checkpoint.read_text())
            record["tensors"] = "../../elsewhere.safetensors"
            checkpoint.write_text(json.dumps(record))
        elif damage == "raster":
            checkpoint = neon_copy(work / "not-a-checkpoint.tif")
        return {**_neon(work), "model": "rsrefseg-test", "classes": None, "sentence": "the tall tree",
                "checkpoint": str(checkpoint)}
    return build


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Path], dict]
    code: str  # the error record's code (the RssegError class name)
    words: tuple[str, ...]  # key words of the one-line message
    keep: tuple[str, ...] = ()  # the user's files that must still be there, unchanged
    cli_code: int = 2
    # where the worker's answer differs: a request the client cannot encode or the worker's parser refuses
    worker_code: str = ""
    worker_words: tuple[str, ...] = ()


CASES = [
    # data loss: the input or a user's file under an output's name
    Case("input-is-out/mask.tif", _input_in_out("mask.tif"), "OutputError", ("mask.tif", "is the input raster"),
         keep=("mask.tif",)),
    Case("input-is-out/scores.tif-without-scores", _input_in_out("scores.tif"), "OutputError",
         ("scores.tif", "is the input raster"), keep=("scores.tif",)),
    Case("hard-link-to-the-input", _input_in_out("mask.tif", "hard"), "OutputError", ("is the input raster",),
         keep=("mask.tif",)),
    Case("symlink-to-the-input", _input_in_out("mask.tif", "symbolic"), "OutputError", ("is the input raster",),
         keep=("mask.tif",)),
    Case("users-polygons.gpkg-with-no-polygons", _with(_users_file("polygons.gpkg"), vectorise=False),
         "OutputError", ("polygons.gpkg", "not written by rsseg"), keep=("polygons.gpkg",)),
    Case("users-result.json", _users_file("result.json", b'{"my": "notes"}'), "OutputError",
         ("result.json", "not written by rsseg"), keep=("result.json",)),
    Case("users-scores.tif-text", _users_file("scores.tif", b"not a raster"), "OutputError",
         ("scores.tif", "not written by rsseg"), keep=("scores.tif",)),
    Case("empty-output-folder", _with(_neon, out_dir=""), "OutputError", ("no output folder",)),
    # non-finite numbers
    Case("min-area-nan", _with(_neon, min_area_m2=float("nan")), "ParameterError", ("minimum area", "finite"),
         worker_code="ProtocolError", worker_words=("min_area_m2 is nan",)),
    Case("simplify-inf", _with(_neon, simplify_tolerance=float("inf")), "ParameterError",
         ("simplify tolerance", "finite"), worker_code="ProtocolError", worker_words=("simplify_tolerance is inf",)),
    Case("threshold-nan", _with(_neon, threshold=float("nan")), "ParameterError", ("threshold", "finite"),
         worker_code="ProtocolError", worker_words=("threshold is nan",)),
    Case("resolution-inf", _with(_neon, resolution=float("inf")), "ParameterError", ("resolution", "metres"),
         worker_code="ProtocolError", worker_words=("resolution is inf",)),
    # damaged or unusual rasters
    Case("truncated-50%", _damaged(cut=0.5), "DamagedRasterError", ("scene.tif", "damaged or incomplete")),
    Case("truncated-90%", _damaged(cut=0.9), "DamagedRasterError", ("scene.tif", "damaged or incomplete")),
    Case("truncated-99%", _damaged(cut=0.99), "DamagedRasterError", ("scene.tif", "damaged or incomplete")),
    Case("corrupt-block", _damaged(corrupt=True), "DamagedRasterError", ("scene.tif", "damaged", "columns")),
    Case("vrt-source-missing", _vrt_missing_source, "DamagedRasterError", ("scene.vrt", "VRT refers to")),
    Case("fifo", _fifo, "NotARasterError", ("scene.tif", "not a regular file")),
    Case("complex-band", _complex, "BandError", ("band 1", "complex")),
    # class lists that would give a class 0 px
    Case("duplicate-classes", _with(_neon, classes=["water", "water"]), "ParameterError",
         ("duplicate class names", "water"), worker_code="ProtocolError"),
    Case("duplicate-classes-by-case", _with(_neon, classes=["Water", "WATER"]), "ParameterError",
         ("duplicate class names", "'Water' and 'WATER'"), worker_code="ProtocolError"),
    # trained checkpoints
    Case("checkpoint-truncated", _checkpoint("truncated"), "ModelError", ("step-0000001.json", "not a complete")),
    Case("checkpoint-pickle", _checkpoint("pickle"), "ModelError", ("step-0000001.json", "a torch pickle")),
    Case("checkpoint-outside-its-folder", _checkpoint("outside"), "ModelError", ("refused", "no '..'")),
    Case("checkpoint-is-a-raster", _checkpoint("raster"), "ModelError",
         ("not-a-checkpoint.tif is not an rsseg checkpoint JSON",)),
]
IDS = [c.id for c in CASES]
BY_ID = {c.id: c for c in CASES}


def prepare(case: Case, work: Path) -> tuple[dict, dict[str, str], str | None]:
    """The request fields, the sha256 of the user's files to keep, and of the source raster."""
    fields = {"out_dir": str(work / "out"), "model": "test", "classes": ["tree", "grass"], "tile": 128,
              "overlap": 16, "device": "cpu", **case.build(work)}
    out = work / "out"
    kept = {name: sha256(out / name) for name in case.keep}
    raster = Path(fields["raster"])
    source = sha256(raster) if raster.is_file() else None
    return fields, kept, source


def check_after(case: Case, work: Path, fields: dict, kept: dict[str, str], source: str | None) -> None:
    out = work / "out"
    assert hidden(out) == [], f"{case.id}: partial files left: {hidden(out)}"
    for name, digest in kept.items():
        assert sha256(out / name) == digest, f"{case.id}: the user's {name} changed"
    assert not (set(os.listdir(out)) - set(kept)) if out.is_dir() else True, f"{case.id}: {os.listdir(out)}"
    if source is not None:
        assert sha256(fields["raster"]) == source, f"{case.id}: the source raster changed"
    assert sorted(os.listdir(work.parent / "cwd")) == [], f"{case.id}: wrote into the current folder"


def cli_argv(fields: dict) -> list[str]:
    argv = ["segment", fields["raster"], "--out", fields["out_dir"], "--quiet", "--tile", str(fields["tile"]),
            "--overlap", str(fields["overlap"]), "--device", fields["device"]]
    argv += ["--classes", ", ".join(fields["classes"])] if fields["classes"] else ["--sentence", fields["sentence"]]
    flags = {"model": "--model", "min_area_m2": "--min-area", "simplify_tolerance": "--simplify",
             "threshold": "--threshold", "resolution": "--resolution", "checkpoint": "--checkpoint"}
    argv += [a for key, flag in flags.items() if key in fields for a in (flag, str(fields[key]))]
    return argv + (["--no-polygons"] if fields.get("vectorise") is False else [])


@pytest.fixture
def work(tmp_path, monkeypatch):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # `--out ''` must not write here
    (tmp_path / "case").mkdir()
    return tmp_path / "case"


@pytest.mark.parametrize("case_id", IDS)
def test_cli(case_id, work, capsys):
    case = BY_ID[case_id]
    fields, kept, source = prepare(case, work)
    try:
        code = main(cli_argv(fields))
    except SystemExit as exc:  # argparse's refusals (a --classes value)
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == case.cli_code, err
    assert len(err.splitlines()) == 1 and "internal error" not in err and "Traceback" not in err, err
    assert all(w in err for w in case.words), err
    check_after(case, work, fields, kept, source)


@pytest.fixture(scope="module")
def worker():
    with WorkerClient(WorkerConfig(sys.executable, start_timeout=60, idle_timeout=60)) as client:
        yield client


@pytest.mark.parametrize("case_id", IDS)
def test_worker(case_id, work, worker):
    case = BY_ID[case_id]
    fields, kept, source = prepare(case, work)
    with pytest.raises(BackendError) as info:
        worker.segment(SegmentRequest(**fields), timeout=60)
    message = str(info.value)
    assert info.value.code == (case.worker_code or case.code), message
    assert "\n" not in message and all(w in message for w in case.worker_words or case.words), message
    check_after(case, work, fields, kept, source)
    assert worker.ping()["protocol"]  # still serving


# --- cases whose outcome is a finished job ----------------------------------------------------------------

def run_cli_json(argv: list[str], capsys) -> dict:
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_rsseg_replaces_and_removes_only_its_own_outputs(tmp_path, capsys):
    raster, out = neon_copy(tmp_path / "scene.tif"), tmp_path / "out"
    base = ["segment", str(raster), "--classes", "tree, grass", "--model", "test", "--quiet", "--out", str(out),
            "--tile", "128", "--overlap", "16"]
    first = run_cli_json([*base, "--scores"], capsys)
    assert sorted(os.listdir(out)) == ["mask.tif", "polygons.gpkg", "result.json", "scores.tif"]
    (out / "notes.txt").write_text("mine")
    second = run_cli_json([*base, "--no-polygons"], capsys)  # replaces its mask, removes its scores and polygons
    assert sorted(os.listdir(out)) == ["mask.tif", "notes.txt", "result.json"]
    assert first["run"]["job"] != second["run"]["job"]
    with rasterio.open(out / "mask.tif") as mask:
        assert mask.tags()["RSSEG_JOB"] == second["run"]["job"]


def test_stale_files_of_dead_jobs_are_removed_and_live_ones_kept(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,  # nosec
                          text=True, check=True).stdout.strip()
    stale = [f".mask.rsseg-{dead}-0123abcd.partial.tif", f".polygons.rsseg-{dead}-0123abcd.partial.gpkg-wal",
             f".rsseg-write-test-{dead}-0123abcd"]
    for name in stale:
        (out / name).write_bytes(b"x" * 100)
    (out / f".rsseg-spill-{dead}-0123abcd").mkdir()
    (out / f".rsseg-spill-{dead}-0123abcd" / "3.logits.npy").write_bytes(b"x")
    live = f".mask.rsseg-{os.getppid()}-0123abcd.partial.tif"  # pytest's parent: alive, not ours
    (out / live).write_bytes(b"running")
    (out / ".my-hidden-file").write_text("mine")  # not rsseg's naming: never touched
    result = run_cli_json(["segment", str(NEON), "--classes", "tree, grass", "--model", "test", "--quiet",
                           "--out", str(out), "--tile", "128", "--overlap", "16"], capsys)
    assert hidden(out) == sorted([live, ".my-hidden-file"])
    assert any("removed 4 leftover file(s)" in n for n in result["notes"])


def test_global_grid_to_the_poles_has_finite_areas(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = (rng.random((3, 180, 360)) * 255).astype(np.uint8)
    raster = write(tmp_path / "globe.tif", data, crs=CRS.from_epsg(4326), transform=Affine(1, 0, -180, 0, -1, 90.5))
    result = run_cli_json(["segment", str(raster), "--classes", "tree, grass", "--model", "test", "--quiet",
                           "--out", str(tmp_path / "out"), "--tile", "128", "--overlap", "16"], capsys)
    areas = [c["area_m2"] for c in result["classes"]]
    assert all(np.isfinite(areas)) and sum(areas) > 4e14  # most of the 5.1e14 m2 globe (its top row is clipped)
    with fiona.open(tmp_path / "out" / "polygons.gpkg") as layer:
        polygon_areas = [f["properties"]["area_m2"] for f in layer]
    assert all(a is not None and np.isfinite(a) and a > 0 for a in polygon_areas)
    assert sum(polygon_areas) == pytest.approx(sum(areas), rel=1e-6)


def test_infinite_pixels_count_as_nodata_and_do_not_collapse_the_stretch(tmp_path, capsys):
    with rasterio.open(NEON) as src:
        data = src.read().astype(np.float32)
    data[:, :32, :] = np.inf  # 8% of the pixels
    raster = write(tmp_path / "inf.tif", data, dtype="float32")
    result = run_cli_json(["segment", str(raster), "--classes", "tree, grass", "--model", "test", "--quiet",
                           "--out", str(tmp_path / "out"), "--tile", "128", "--overlap", "16"], capsys)
    assert result["nodata_pixels"] == 32 * 400
    assert any("+-inf" in n for n in result["notes"])
    assert all(np.isfinite(result["stretch"]["high"])) and result["stretch"]["high"][0] > 100
    finite = run_cli_json(["segment", str(NEON), "--classes", "tree, grass", "--model", "test", "--quiet",
                           "--out", str(tmp_path / "ref"), "--tile", "128", "--overlap", "16"], capsys)
    pixels = [c["pixels"] for c in result["classes"]]
    assert max(pixels) < 0.99 * sum(pixels)  # was: all but 14 pixels one class
    assert result["stretch"]["low"] == pytest.approx(finite["stretch"]["low"], abs=2)


@pytest.mark.parametrize("argv, words", [
    (["--bbox", "-1,-2,3,4"], ("outside",)),  # parsed: a region error, not "expected one argument"
    (["--percentiles", "-5,98"], ("percentiles", "0 <= low")),
    (["--bbox", "-81.0,29.6,-80.9,29.7", "--bbox-crs", "EPSG:4326"], ("outside",)),
])
def test_negative_numbers_after_options_are_values(tmp_path, capsys, argv, words):
    code = main(["segment", str(NEON), "--classes", "tree, grass", "--model", "test", "--quiet",
                 "--out", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and "expected one argument" not in err and all(w in err for w in words), err


# --- full disks and file size limits: real file systems and real limits -----------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """Mounts a tmpfs of the given size (root only) and unmounts it afterwards."""
    mounts = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"small-{size}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],  # nosec
                              capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip("mounting a small tmpfs needs root")
        mounts.append(folder)
        return folder

    yield mount
    for folder in mounts:
        subprocess.run(["umount", str(folder)], check=False)  # nosec B603 B607


@pytest.mark.parametrize("kind, size, extra", [
    ("noise", "400k", ["--scores"]),  # the GeoTIFFs fill it
    ("noise", "400k", ["--no-polygons"]),
    ("speckle", "700k", []),  # the mask fits, the (uncompressed, internal) scores do not
    ("speckle", "1200k", []),
    ("speckle", "6M", []),  # both rasters fit, the polygons do not
])
def test_full_disk_is_one_line_naming_the_folder(tmp_path, small_disk, kind, size, extra):
    rng = np.random.default_rng(1)
    data = (rng.random((3, 1024, 1024)) * 255).astype(np.uint8) if kind == "noise" else \
        np.repeat(rng.integers(0, 2, (1, 1024, 1024)).astype(np.uint8) * 200, 3, axis=0)
    raster = write(tmp_path / f"{kind}.tif", data)
    digest, folder = sha256(raster), small_disk(size)
    proc = subprocess.run([*RSSEG, "segment", str(raster), "--classes", "black, white", "--model", "test",  # nosec
                           "--quiet", "--out", str(folder), *extra], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"rsseg: error: the output folder {folder} is full (no space left on the " \
                                  "device): the job stopped and removed its partial files"
    assert os.listdir(folder) == [] and sha256(raster) == digest


def test_file_size_limit_is_one_line(tmp_path):
    data = (np.random.default_rng(1).random((3, 1024, 1024)) * 255).astype(np.uint8)
    raster, out = write(tmp_path / "noise.tif", data), tmp_path / "out"

    def limit():  # the child may write 300 kB per file; SIGXFSZ ignored, so writes fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    proc = subprocess.run([*RSSEG, "segment", str(raster), "--classes", "tree, grass", "--model", "test",  # nosec
                           "--quiet", "--out", str(out), "--scores"], capture_output=True, text=True, timeout=300,
                          check=False, preexec_fn=limit)  # noqa: PLW1509 - sets a limit, runs no shell
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "file size limit" in proc.stderr, proc.stderr
    assert os.listdir(out) == []


# --- lines only a protocol peer can send: one real worker answers them all, then still answers a ping ------

def _request(**changes) -> str:
    request = SegmentRequest(raster=str(NEON), out_dir="never-written", classes=["tree", "grass"]).to_dict()
    return json.dumps({"id": "r", "type": "segment", "request": {**request, **changes}})


PROTOCOL_CASES = {
    "deep-list": ("[" * 100_000, "nested 100000 levels deep"),
    "deep-object": ('{"a":' * 100_000, "levels deep"),
    "tile-as-string": (_request(tile="512"), "tile must be an integer, got the string '512'"),
    "bbox-of-2": (_request(region={"bbox": [1, 2]}), "region.bbox must be a list of 4 finite numbers"),
    "classes-as-string": (_request(classes="water"), "classes must be a list of strings or null"),
    "integer-classes": (_request(classes=[1, 2]), "classes[0] must be a string"),
    "nan-literal": (_request().replace('"min_area_m2": 0.0', '"min_area_m2": NaN'), "min_area_m2"),
    "duplicate-classes": (_request(classes=["water", "WATER"]), "duplicate class names"),
    "not-json": ("{this is not json", "not valid JSON"),
}


@pytest.fixture(scope="module")
def protocol_answers() -> tuple[dict[str, dict], list[dict], int]:
    lines = []
    for key, (line, _) in PROTOCOL_CASES.items():
        lines.append(line.replace('"id": "r"', f'"id": "{key}"') + "\n")
    lines.append('{"id": "last", "type": "ping"}\n')
    proc = subprocess.run([*RSSEG, "serve"], input="".join(lines), capture_output=True, text=True,  # nosec B603
                          timeout=120, check=False)
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    return {r["id"]: r for r in records}, records, proc.returncode


@pytest.mark.parametrize("key", list(PROTOCOL_CASES))
def test_worker_protocol_line(key, protocol_answers):
    by_id, records, code = protocol_answers
    record = by_id.get(key) or by_id.get("invalid")  # a line whose id cannot be read is answered as "invalid"
    assert record is not None and record["type"] == "error" and record["code"] == "ProtocolError", records
    if key in by_id:
        assert PROTOCOL_CASES[key][1] in record["message"], record
    assert records[-1]["type"] == "pong" and code == 0  # the worker kept serving
    assert not Path("never-written").exists()


# --- signals: real processes stopped from outside --------------------------------------------------------

@pytest.fixture(scope="module")
def slow_raster(tmp_path_factory) -> Path:
    """Noise the test model takes several seconds over at tile 64: time to stop it mid-job."""
    data = (np.random.default_rng(2).random((3, 2048, 2048)) * 255).astype(np.uint8)
    return write(tmp_path_factory.mktemp("slow") / "noise.tif", data)


def segment_argv(raster: Path, out: Path) -> list[str]:
    return [*RSSEG, "segment", str(raster), "--classes", "tree, grass", "--model", "test", "--quiet",
            "--out", str(out), "--tile", "64", "--overlap", "8", "--scores", "--batch-size", "1"]


def wait_for_staged(out: Path, timeout: float = 120) -> list[str]:
    """Block until the job has staged files in `out` (it is mid-job then)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        staged = [n for n in hidden(out) if ".partial" in n]
        if staged:
            time.sleep(0.3)  # a few tiles into the job
            return staged
        time.sleep(0.05)
    raise AssertionError(f"no staged files appeared in {out}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_cli_stopped_by_signal_cleans_up_and_exits_143(tmp_path, slow_raster, signum):
    out, digest = tmp_path / "out", sha256(slow_raster)
    proc = subprocess.Popen(segment_argv(slow_raster, out), stderr=subprocess.PIPE, text=True)  # nosec B603
    wait_for_staged(out)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip() == f"rsseg: stopped by {signal.Signals(signum).name}; the job removed its partial outputs"
    assert os.listdir(out) == [] and sha256(slow_raster) == digest


def test_cli_killed_leaves_staged_files_the_next_job_removes(tmp_path, slow_raster, capsys):
    out = tmp_path / "out"
    proc = subprocess.Popen(segment_argv(slow_raster, out), stderr=subprocess.DEVNULL)  # nosec B603
    wait_for_staged(out)
    proc.kill()
    proc.wait(timeout=60)
    left = hidden(out)
    assert left and all(f"-{proc.pid}-" in n for n in left)  # staged names carry the job's process id
    result = run_cli_json(["segment", str(NEON), "--classes", "tree, grass", "--model", "test", "--quiet",
                           "--out", str(out), "--tile", "128", "--overlap", "16"], capsys)
    assert hidden(out) == [] and any(f"removed {len(left)} leftover" in n for n in result["notes"])


def _worker_job(out: Path, raster: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([*RSSEG, "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,  # nosec B603
                            stderr=subprocess.DEVNULL, text=True)
    request = SegmentRequest(raster=str(raster), out_dir=str(out), classes=["tree", "grass"], tile=64, overlap=8,
                             batch_size=1, write_scores=True)
    proc.stdin.write(json.dumps({"id": "job", "type": "segment", "request": request.to_dict()}) + "\n")
    proc.stdin.flush()
    wait_for_staged(out)
    return proc, proc.pid


def test_worker_stopped_by_sigterm_cancels_cleans_up_and_exits_143(tmp_path, slow_raster):
    out = tmp_path / "out"
    proc, _ = _worker_job(out, slow_raster)
    proc.terminate()
    records = [json.loads(line) for line in proc.stdout.read().splitlines()]
    assert proc.wait(timeout=60) == 143
    assert records[-1]["type"] == "error" and records[-1]["code"] == "Cancelled"
    assert os.listdir(out) == []


def test_worker_killed_leaves_staged_files_the_next_job_removes(tmp_path, slow_raster, worker):
    out = tmp_path / "out"
    proc, pid = _worker_job(out, slow_raster)
    proc.kill()
    proc.wait(timeout=60)
    assert hidden(out)
    result = worker.segment(SegmentRequest(raster=str(NEON), out_dir=str(out), classes=["tree", "grass"],
                                           tile=128, overlap=16), timeout=60)
    assert hidden(out) == [] and any("leftover" in n and f"-{pid}-" in n for n in result["notes"])


def test_client_timeout_stops_the_worker_and_the_next_job_cleans_up(tmp_path, slow_raster):
    out = tmp_path / "out"
    # 10 s of silence: far longer than any gap between the progress events of a live job on a busy machine
    # (a first import of torch, the statistics of a 2048² raster), so the timeout is the frozen worker's.
    with WorkerClient(WorkerConfig(sys.executable, start_timeout=60, idle_timeout=10, stop_grace=2)) as client:
        pid = client.start()["pid"]
        client.segment(SegmentRequest(raster=str(NEON), out_dir=str(tmp_path / "warm"), classes=["tree", "grass"],
                                      tile=128, overlap=16, vectorise=False), timeout=300)

        def freeze(event):  # a worker that stops answering mid-job (a hung driver, a stopped process)
            if event.stage == "segment" and event.done >= 3:
                os.kill(pid, signal.SIGSTOP)

        request = SegmentRequest(raster=str(slow_raster), out_dir=str(out), classes=["tree", "grass"], tile=64,
                                 overlap=8, batch_size=1, write_scores=True)
        with pytest.raises(BackendError, match="sent nothing for 10 s"):
            client.segment(request, on_progress=freeze)
        assert hidden(out)  # SIGTERM cannot reach a stopped process: it was killed after the grace period
        result = client.segment(SegmentRequest(raster=str(NEON), out_dir=str(out), classes=["tree", "grass"],
                                               tile=128, overlap=16))
        assert client.ping()["pid"] != pid
    assert hidden(out) == [] and any(f"-{pid}-" in n for n in result["notes"])
