"""The tile runner (batches, out-of-memory recovery, precision) and the image-feature cache."""

from __future__ import annotations

import os
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from rsseg.devices import autocast_dtype, batch_from_memory, is_out_of_memory, precision_name
from rsseg.errors import Cancelled, DeviceError
from rsseg.execution.feature_cache import FeatureCache
from rsseg.execution.tile_runner import TileRunner
from rsseg.models import build_model
from rsseg.models.colour_prototype.model import ColourPrototypeModel
from rsseg.progress import CancelToken
from rsseg.protocol.contracts import SegmentRequest
from rsseg.raster.engine import segment
from rsseg.service import run_segment

DATA = Path(__file__).parents[1] / "data"
NEON = DATA / "neon_osbs_rgb.tif"


class MemoryLimitedModel(ColourPrototypeModel):
    """The test model behind a simulated GPU memory limit: more than `limit` tiles per call raise the
    same OutOfMemoryError CUDA raises (there is no GPU here to run out of)."""

    def __init__(self, *args, limit: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.limit, self.calls = limit, []

    def __call__(self, batch):
        self.calls.append(len(batch))
        if len(batch) > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(batch)} tiles")
        return super().__call__(batch)


def request(tmp_path: Path, name: str, **kw) -> SegmentRequest:
    args = dict(raster=str(NEON), out_dir=str(tmp_path / name), classes=["tree", "grass", "soil"], tile=96,
                overlap=16, vectorise=False)
    return SegmentRequest(**{**args, **kw})


def read_mask(result) -> np.ndarray:
    with rasterio.open(result.mask) as ds:
        return ds.read(1)


def test_out_of_memory_halves_the_batch_and_the_job_goes_on(tmp_path):
    plain = segment(request(tmp_path, "plain"), build_model("test", ["tree", "grass", "soil"], None))
    model = MemoryLimitedModel(["tree", "grass", "soil"], "softmax", limit=1)
    result = segment(request(tmp_path, "oom"), model, runner=TileRunner(model, "cpu", batch_size=4))
    assert result.run["oom_halvings"] == 2 and result.run["batch_size"] == 1
    assert result.run["batch_size_requested"] == 4
    assert any("halved 2 time(s), to 1 tile(s)" in note for note in result.notes)
    assert model.calls[:3] == [4, 2, 1] and set(model.calls[3:]) == {1}  # no retry at the larger size
    assert np.array_equal(read_mask(result), read_mask(plain))


def test_out_of_memory_with_one_tile_is_a_clear_device_error(tmp_path):
    model = MemoryLimitedModel(["tree"], "softmax", limit=0)
    out = tmp_path / "out"
    with pytest.raises(DeviceError, match="out of memory on cpu with a single 96 px tile"):
        segment(request(tmp_path, "out", classes=["tree"]), model, runner=TileRunner(model, "cpu", 2))
    assert not out.exists() or not any(out.iterdir())


def test_other_model_errors_are_not_mistaken_for_out_of_memory():
    class Broken(ColourPrototypeModel):
        def __call__(self, batch):
            raise RuntimeError("shape mismatch")

    runner = TileRunner(Broken(["a"], "softmax"), "cpu", 4)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        runner(np.zeros((3, 3, 16, 16), np.float32), ["a", "b", "c"])
    assert runner.oom_halvings == 0


class CountingLayer(torch.nn.Module):
    """One layer of a deep model: counts the layers run and cancels the job at the `cancel_at`-th."""

    def __init__(self, model: "DeepCountingModel"):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        model = self.model
        model.layers_run += 1
        if model.layers_run == model.cancel_at and model.token is not None:
            model.token.cancel()
            other = threading.Thread(target=model.run_elsewhere)  # another thread's model is not stopped
            other.start()
            other.join()
        return x


class DeepCountingModel(ColourPrototypeModel):
    """The test model behind `depth` torch layers run on the whole batch: one long CPU batch."""

    def __init__(self, classes: list[str], depth: int, token: CancelToken | None = None, cancel_at: int = 0):
        super().__init__(classes, "softmax")
        self.depth, self.token, self.cancel_at = depth, token, cancel_at
        self.layers_run, self.batches, self.elsewhere = 0, [], None
        self.net = torch.nn.Sequential(*(CountingLayer(self) for _ in range(depth)))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(len(batch))
        with torch.inference_mode():
            return super().__call__(self.net(torch.from_numpy(batch)).numpy())

    def run_elsewhere(self) -> None:
        self.elsewhere = torch.nn.Identity()(torch.ones(1)).item()


def test_cancel_stops_a_cpu_batch_inside_the_model(tmp_path):
    """A cancel takes effect before the model's next layer, not after the batch (seconds on CPU)."""
    token = CancelToken()
    model = DeepCountingModel(["tree", "grass", "soil"], depth=40, token=token, cancel_at=10)
    out = tmp_path / "out"
    with pytest.raises(Cancelled):
        segment(request(tmp_path, "out"), model, cancel=token, runner=TileRunner(model, "cpu", batch_size=8))
    assert model.batches == [8]  # cancelled in the first batch of 8 tiles...
    assert model.layers_run == 10 < model.depth  # ...right after the layer that cancelled, 30 layers early
    assert model.elsewhere == 1.0  # the stop applies to the job's thread only
    assert not any(p.name in ("mask.tif", "result.json") for p in out.iterdir())
    model.token = None
    model(np.zeros((1, 3, 16, 16), np.float32))  # the stop ends with the batch: the model runs again
    assert model.layers_run == 10 + model.depth


def test_a_cancel_token_leaves_the_logits_bit_identical():
    model = DeepCountingModel(["tree", "water"], depth=3)
    batch = np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32)
    runner = TileRunner(model, "cpu", 4)
    plain = runner(batch, list("abcd"))
    watched = runner(batch, list("abcd"), CancelToken())
    assert np.array_equal(plain, watched) and model.batches == [4, 4]
    cancelled = CancelToken()
    cancelled.cancel()
    with pytest.raises(Cancelled):  # checked before each model call too (models without torch)
        TileRunner(build_model("test", ["a"], None), "cpu", 4)(batch, list("abcd"), cancelled)


def test_out_of_memory_detection_and_batch_arithmetic():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert is_out_of_memory(
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only the allocators' error types
    gib = 1 << 30
    assert batch_from_memory(10 * gib, gib) == 7  # 70% of the free memory
    assert batch_from_memory(10 * gib, 20 * gib) == 1  # always at least one tile
    assert batch_from_memory(100 * gib, 1 << 20) == 32  # capped
    assert batch_from_memory(gib, 0) == 32


def test_cpu_runs_in_fp32_with_the_cpu_default_batch():
    assert autocast_dtype("cpu") is None and precision_name("cpu") == "fp32"
    runner = TileRunner(build_model("test", ["a"], None), "cpu", 0)
    assert runner.batch_size == 4 and runner.stats()["batch_size_requested"] == "auto"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_precision_and_measured_batch():  # pragma: no cover - runs on GPU machines
    assert precision_name("cuda") in ("bf16", "fp16")
    runner = TileRunner(build_model("test", ["a"], None), "cuda", 0)
    runner(np.zeros((2, 3, 64, 64), np.float32), ["a", "b"])
    assert runner.batch_size >= 1


# --- feature cache ------------------------------------------------------------------------------------

class CountingModel(ColourPrototypeModel):
    encode_calls = 0

    def encode(self, batch):
        type(self).encode_calls += len(batch)
        return super().encode(batch)


def run_counting(tmp_path, name, cache, classes, **kw):
    model = CountingModel(classes, "softmax")
    before = CountingModel.encode_calls
    req = request(tmp_path, name, classes=classes, **kw)
    result = segment(req, model, runner=TileRunner(model, "cpu", 4, cache))
    return result, CountingModel.encode_calls - before


def test_second_prompt_on_the_same_extent_runs_no_image_encoder(tmp_path):
    cache = FeatureCache()
    first, encoded_first = run_counting(tmp_path, "a", cache, ["tree", "soil"])
    second, encoded_second = run_counting(tmp_path, "b", cache, ["grass", "road", "shadow"])
    assert encoded_first == first.tiles > 0 and encoded_second == 0
    assert second.run["features"] == {"encoded": 0, "reused": second.tiles}
    uncached = segment(request(tmp_path, "c", classes=["grass", "road", "shadow"]),
                       build_model("test", ["grass", "road", "shadow"], None))
    assert np.array_equal(read_mask(second), read_mask(uncached))


@pytest.mark.parametrize("change", ["percentiles", "bands", "region", "raster touched", "resolution", "nodata"])
def test_anything_that_changes_the_model_input_misses_the_cache(tmp_path, change):
    raster = tmp_path / "copy.tif"
    raster.write_bytes(NEON.read_bytes())
    cache = FeatureCache()
    base = dict(raster=str(raster))
    first, _ = run_counting(tmp_path, "a", cache, ["tree"], **base)
    kw = dict(base)
    if change == "percentiles":
        kw["percentiles"] = (1.0, 99.0)
    elif change == "resolution":
        kw["resolution"] = 0.1  # the raster's own pixel size: same grid, but read through a resampled view
    elif change == "bands":
        kw["bands"] = (3, 2, 1)
    elif change == "nodata":
        kw["nodata"] = 0.0  # other pixels are nodata, so other tiles go into the model
    elif change == "region":
        with rasterio.open(raster) as ds:
            b = ds.bounds
        kw["region"] = {"bbox": (b.left, b.bottom, b.right - 1, b.top)}
    else:
        stat = raster.stat()
        os.utime(raster, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    if "region" in kw:
        from rsseg.protocol.contracts import RegionSpec

        kw["region"] = RegionSpec(**kw["region"])
    second, encoded = run_counting(tmp_path, "b", cache, ["tree"], **kw)
    assert encoded == second.tiles > 0


def test_cache_key_of_a_raster_in_an_archive_follows_the_archive(tmp_path):
    """/vsizip/ paths name no file to stat: the key takes the archive's size and time."""
    archive = tmp_path / "scene.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(NEON, NEON.name)
    virtual = dict(raster=f"/vsizip/{archive}/{NEON.name}")
    cache = FeatureCache()
    first, encoded_first = run_counting(tmp_path, "a", cache, ["tree"], **virtual)
    second, encoded_second = run_counting(tmp_path, "b", cache, ["grass"], **virtual)
    assert encoded_first == first.tiles > 0 and encoded_second == 0
    stat = archive.stat()
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third, encoded_third = run_counting(tmp_path, "c", cache, ["grass"], **virtual)
    assert encoded_third == third.tiles


def test_memory_cache_is_bounded_in_bytes_and_least_recently_used():
    item = np.zeros(1000, np.float32)  # 4000 bytes
    cache = FeatureCache(max_bytes=10_000)
    cache.put("a", item)
    cache.put("b", item + 1)
    assert cache.get("a") is not None  # "a" is now the most recent
    cache.put("c", item + 2)
    assert cache.size_bytes == 8000 and len(cache) == 2
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    cache.put("huge", np.zeros(5000, np.float32))  # larger than the whole cache: not kept
    assert cache.get("huge") is None and cache.hits == 3 and cache.misses == 2


def test_disk_cache_round_trips_numpy_and_torch_and_respects_its_cap(tmp_path):
    disk = tmp_path / "features"
    cache = FeatureCache(max_bytes=1 << 20, disk_dir=disk, disk_max_bytes=10_000)
    array, tensor = np.arange(600, dtype=np.float32), torch.arange(600, dtype=torch.float16)
    cache.put("np", array)
    cache.put("pt", tensor)
    fresh = FeatureCache(disk_dir=disk, disk_max_bytes=10_000)  # a new worker, same folder
    assert np.array_equal(fresh.get("np"), array) and torch.equal(fresh.get("pt"), tensor)
    for i in range(6):
        cache.put(f"more{i}", np.zeros(500, np.float32))
    files = list(disk.glob("*.npy")) + list(disk.glob("*.pt"))
    assert sum(f.stat().st_size for f in files) <= 10_000 and len(files) < 8


def test_damaged_disk_entry_is_dropped_and_recomputed(tmp_path):
    disk = tmp_path / "features"
    FeatureCache(disk_dir=disk).put("k", np.ones(10, np.float32))
    (entry,) = disk.glob("*.npy")
    entry.write_bytes(b"not an npy file")
    assert FeatureCache(disk_dir=disk).get("k") is None and not entry.exists()


def test_run_segment_uses_the_given_cache(tmp_path):
    cache = FeatureCache()
    a = run_segment(request(tmp_path, "a", classes=["tree"]), cache=cache)
    b = run_segment(request(tmp_path, "b", sentence="the white roof", classes=None), cache=cache)
    assert a.run["features"]["encoded"] == a.tiles and b.run["features"] == {"encoded": 0, "reused": b.tiles}


def test_tiles_reach_the_cpu_without_a_copy_and_a_gpu_through_the_pinned_buffer():
    import torch

    from rsseg.execution.host_to_device import tiles_to_device

    batch = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
    on_cpu = tiles_to_device(batch, "cpu")
    assert on_cpu.dtype == torch.float32 and on_cpu.data_ptr() == batch.ctypes.data  # no copy
    assert tiles_to_device(batch.astype(np.float64), "cpu").dtype == torch.float32
    if not torch.cuda.is_available():
        return
    for shape in [(2, 3, 8, 8), (2, 3, 8, 8), (1, 3, 16, 16)]:  # the buffer reused, then remade for a new shape
        tiles = np.random.default_rng(len(shape)).random(shape, dtype=np.float32)
        on_gpu = tiles_to_device(tiles, "cuda")
        assert on_gpu.is_cuda and torch.equal(on_gpu.cpu(), torch.from_numpy(tiles))
