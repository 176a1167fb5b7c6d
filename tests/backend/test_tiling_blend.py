"""Tests for the tile grid (rsseg.raster.tiling), the strip blend (rsseg.raster.blend) and the
property the engine is built on: with a translation-equivariant model, a tiled run gives the same
result as an untiled one.

hypothesis is not installed in the project's venv, so the properties are checked over
deterministic, parametrised sets of cases (edge cases around tile multiples plus seeded random
ones) instead.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from scipy import ndimage, special
from shapely import contains_xy
from shapely.geometry import shape

from rsseg.errors import Cancelled, ModelError, ParameterError
from rsseg.models import SOFTMAX, build_model
from rsseg.progress import CancelToken
from rsseg.protocol.contracts import NODATA, UNLABELLED, RegionSpec, SegmentRequest
from rsseg.raster.blend import StripAccumulator, finished_rows, plan_strips, strip_tiles
from rsseg.raster.engine import decide, segment
from rsseg.raster.tiling import TileGrid, edge_window, tile_starts
from rsseg.raster.writer import BLOCK

UTM33 = "EPSG:32633"
T = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)  # north-up, 10 m pixels


# --------------------------------------------------------------------------------------------
# tile_starts / edge_window / TileGrid
# --------------------------------------------------------------------------------------------

def _lengths(tile: int, overlap: int, rng: np.random.Generator) -> list[int]:
    stride = tile - overlap
    near = [1, 2, tile - 1, tile, tile + 1, tile + stride - 1, tile + stride, tile + stride + 1,
            2 * tile, 3 * tile + 7, tile + 5 * stride, tile + 5 * stride + 1]
    return sorted({n for n in near if n >= 1} | {int(n) for n in rng.integers(1, 8 * tile, 6)})


def _cases():
    rng = np.random.default_rng(20240611)
    cases = []
    for tile in (16, 17, 33, 64, 100, 128, 257, 512):
        for overlap in sorted({0, 1, 2, 3, 4, 5, 7, tile // 4, tile // 3, tile // 2 - 1, tile // 2}):
            for length in _lengths(tile, overlap, rng):
                cases.append((length, tile, overlap))
    return cases


CASES = _cases()


def test_case_set_is_broad():
    assert len(CASES) > 1000
    assert any(length <= tile for length, tile, _ in CASES)
    assert any(length > 6 * tile for length, tile, _ in CASES)


def test_tile_starts_cover_length_with_at_least_the_requested_overlap():
    for length, tile, overlap in CASES:
        starts = tile_starts(length, tile, overlap)
        size = min(tile, length)
        msg = f"tile_starts({length}, {tile}, {overlap}) = {starts}"
        assert starts[0] == 0, msg
        assert starts[-1] + size == length, msg  # last tile flush with the end: inside, full-size
        assert all(isinstance(s, int) for s in starts), msg
        assert all(0 <= s and s + size <= length for s in starts), msg
        gaps = np.diff(starts)
        assert (gaps > 0).all(), msg  # strictly increasing: no duplicate tile
        assert (size - gaps >= overlap).all(), msg  # every actual overlap >= the requested one
        covered = np.zeros(length, bool)
        for s in starts:
            covered[s:s + size] = True
        assert covered.all(), msg
        if len(starts) > 2:
            # not wasteful: one tile fewer, spread evenly, could not keep the requested overlap
            assert (length - size) / (len(starts) - 2) > tile - overlap, msg


@pytest.mark.parametrize("length", [1, 15, 16, 100, 511, 512])
def test_tile_starts_single_tile_when_length_fits(length):
    assert tile_starts(length, 512, 64) == [0]
    assert tile_starts(length, 512, 0) == [0]


def test_tile_starts_known_values():
    assert tile_starts(1000, 512, 64) == [0, 244, 488]  # two would overlap by only 24
    assert tile_starts(960, 512, 64) == [0, 448]
    assert tile_starts(513, 512, 0) == [0, 1]
    # 900 wide, 128 tiles, stride 96: 9 gaps of 772 / 9 = 85.8 px, rounded
    assert tile_starts(900, 128, 32) == [round(k * 772 / 9) for k in range(10)]


def test_edge_window_known_ramp():
    # overlap 4: margin 1 (zero), then a linear ramp reaching 1 at overlap - margin
    np.testing.assert_allclose(edge_window(8, 4, True, False), [0, 1 / 3, 2 / 3, 1, 1, 1, 1, 1], atol=1e-7)
    np.testing.assert_allclose(edge_window(8, 4, False, True), [1, 1, 1, 1, 1, 2 / 3, 1 / 3, 0], atol=1e-7)
    np.testing.assert_array_equal(edge_window(8, 4, False, False), np.ones(8))
    np.testing.assert_array_equal(edge_window(8, 0, True, True), np.ones(8))
    assert edge_window(8, 4, True, True).dtype == np.float32


@pytest.mark.parametrize("size,overlap", [(64, 16), (128, 32), (128, 64), (512, 64), (33, 16), (16, 1), (16, 3)])
def test_edge_window_ramps(size, overlap):
    margin = overlap // 4
    both = edge_window(size, overlap, True, True)
    start = edge_window(size, overlap, True, False)
    end = edge_window(size, overlap, False, True)
    np.testing.assert_array_equal(both, both[::-1])  # symmetric
    np.testing.assert_array_equal(start, end[::-1])
    assert (both >= 0).all() and (both <= 1).all()
    # zero margin where the model saw the least context, then strictly positive
    assert (start[:margin] == 0).all() and (start[margin:] > 0).all()
    # non-decreasing ramp over the overlap, exactly 1 after it
    assert (np.diff(start[:overlap]) >= 0).all()
    assert (start[overlap:] == 1).all()
    assert start[overlap - margin:overlap].tolist() == [1.0] * margin
    np.testing.assert_array_equal(both[overlap:size - overlap], 1)


def test_edge_windows_of_neighbours_leave_no_gap():
    # two tiles overlapping by exactly `overlap`: the weights of both never vanish together
    for overlap in range(1, 65):
        a = edge_window(128, overlap, False, True)[128 - overlap:]
        b = edge_window(128, overlap, True, False)[:overlap]
        assert (a + b > 0).all(), overlap


def _grid_cases():
    rng = np.random.default_rng(7)
    out = []
    for length, tile, overlap in CASES[::7]:
        out.append((length, int(rng.integers(1, 5 * tile)), tile, overlap))
    return out


def test_tile_grid_weights_positive_and_separable():
    cases = _grid_cases()
    assert len(cases) > 150
    for height, width, tile, overlap in cases:
        grid = TileGrid(height, width, tile, overlap)
        msg = f"TileGrid({height}, {width}, {tile}, {overlap})"
        assert grid.row_weight_sum.shape == (height,) and grid.col_weight_sum.shape == (width,)
        assert (grid.row_weight_sum > 0).all(), msg
        assert (grid.col_weight_sum > 0).all(), msg
        assert len(grid) == len(grid.ys) * len(grid.xs) == len(list(grid))
        # brute-force 1-D sums from the windows, independent of the grid's own summing
        rows = np.zeros(height)
        for y, w in zip(grid.ys, grid.row_weights):
            rows[y:y + grid.tile_height] += w
        np.testing.assert_allclose(grid.row_weight_sum, rows, rtol=1e-6, err_msg=msg)


@pytest.mark.parametrize("height,width,tile,overlap", [
    (700, 900, 128, 32), (61, 1001, 128, 32), (300, 300, 64, 0), (257, 130, 64, 32), (100, 40, 16, 8),
])
def test_tile_grid_full_2d_weight_sum(height, width, tile, overlap):
    grid = TileGrid(height, width, tile, overlap)
    total = np.zeros((height, width))
    for t in grid:
        assert 0 <= t.y and t.y + t.height <= height and 0 <= t.x and t.x + t.width <= width
        assert (t.height, t.width) == (min(tile, height), min(tile, width))  # no padding, no cut tiles
        weight = grid.weight(t)
        assert weight.shape == (t.height, t.width)
        # no weight within overlap // 4 of an inner tile edge: the model's padding there never counts
        m = overlap // 4
        if m:
            assert t.y == 0 or (weight[:m] == 0).all()
            assert t.y + t.height == height or (weight[-m:] == 0).all()
            assert t.x == 0 or (weight[:, :m] == 0).all()
            assert t.x + t.width == width or (weight[:, -m:] == 0).all()
        total[t.y:t.y + t.height, t.x:t.x + t.width] += weight
    assert (total > 0).all()
    np.testing.assert_allclose(total, np.outer(grid.row_weight_sum, grid.col_weight_sum), rtol=1e-5)


@pytest.mark.parametrize("tile,overlap", [(15, 0), (8, 2), (64, 33), (64, -1), (16, 9)])
def test_tile_grid_rejects_bad_parameters(tile, overlap):
    with pytest.raises(ParameterError):
        TileGrid(100, 100, tile, overlap)


# --------------------------------------------------------------------------------------------
# plan_strips
# --------------------------------------------------------------------------------------------

STRIP_WIDTHS = [1, 100, 256, 300, 512, 700, 1024, 4096]
WIDTHS = [1, 60, 255, 256, 257, 383, 384, 385, 511, 512, 640, 900, 1001, 2000, 4097, 6200, 10000]


@pytest.mark.parametrize("tile,overlap", [(128, 32), (512, 64), (300, 0), (16, 8)])
def test_plan_strips_partition_and_cols(tile, overlap):
    for width in WIDTHS:
        if tile < 64 and width > 2000:
            continue  # thousands of tiny tiles: slow and adds nothing
        grid = TileGrid(50, width, tile, overlap)
        for strip_width in STRIP_WIDTHS:
            strips = plan_strips(grid, strip_width, BLOCK)
            msg = f"width {width}, strip_width {strip_width}, tile {tile}: {strips}"
            assert strips[0].x0 == 0 and strips[-1].x1 == width, msg
            for a, b in zip(strips, strips[1:]):
                assert a.x1 == b.x0, msg  # contiguous, no overlap, no gap
            for s in strips:
                assert s.x0 < s.x1, msg
                assert s.x0 % BLOCK == 0, msg  # aligned with the GeoTIFF blocks
                if s is not strips[-1]:
                    assert s.x1 % BLOCK == 0, msg
                    # at least a tile wide (so a tile meets at most two strips), at most a block over the ask
                    assert grid.tile_width <= s.x1 - s.x0 < max(strip_width, grid.tile_width) + BLOCK, msg
                # cols: exactly the tile columns whose pixels meet [x0, x1)
                touching = tuple(c for c, x in enumerate(grid.xs)
                                 if max(x, s.x0) < min(x + grid.tile_width, s.x1))
                assert s.cols == touching, msg
                tiles = strip_tiles(grid, s)
                assert {t.col for t in tiles} == set(touching) and len(tiles) == len(touching) * len(grid.ys)
                assert [t.index for t in tiles] == sorted(t.index for t in tiles)  # row-major order
            if len(strips) > 1:
                assert strips[-1].x1 - strips[-1].x0 >= (strips[0].x1 - strips[0].x0) // 2, msg
            for c in range(len(grid.xs)):  # every tile column meets one strip, or two neighbours
                owners = [i for i, st in enumerate(strips) if c in st.cols]
                assert owners in ([owners[0]], [owners[0], owners[0] + 1]), msg
            assert set().union(*(s.cols for s in strips)) == set(range(len(grid.xs))), msg


def test_plan_strips_known_layout():
    grid = TileGrid(700, 900, 128, 32)
    strips = plan_strips(grid, 256, 256)
    assert [(s.x0, s.x1) for s in strips] == [(0, 256), (256, 512), (512, 768), (768, 900)]
    # a last strip narrower than half a strip joins its neighbour
    strips = plan_strips(TileGrid(700, 1100, 128, 32), 512, 256)
    assert [(s.x0, s.x1) for s in strips] == [(0, 512), (512, 1100)]
    assert [(s.x0, s.x1) for s in plan_strips(TileGrid(10, 5000, 512, 64), 4096)] == [(0, 5000)]
    # a strip narrower than a tile is widened to a tile (rounded up to whole blocks)
    strips = plan_strips(TileGrid(10, 2000, 512, 64), 256, 256)
    assert [(s.x0, s.x1) for s in strips] == [(0, 512), (512, 1024), (1024, 1536), (1536, 2000)]


# --------------------------------------------------------------------------------------------
# StripAccumulator + decide against a brute-force full-array blend
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spill", [False, True], ids=["whole-tiles", "spilled-parts"])
@pytest.mark.parametrize("height,width,tile,overlap,strip_width,seed", [
    (300, 700, 64, 16, 256, 1),
    (130, 520, 128, 32, 256, 2),
    (97, 1100, 40, 20, 512, 3),
    (50, 60, 64, 0, 256, 4),
    (257, 513, 100, 50, 256, 5),
    (61, 1001, 128, 32, 256, 6),
    (400, 300, 300, 150, 256, 7),  # more rows than POP_ROWS finish at once
])
def test_strip_blend_matches_brute_force(height, width, tile, overlap, strip_width, seed, spill):
    rng = np.random.default_rng(seed)
    k = 4
    grid = TileGrid(height, width, tile, overlap)
    tiles = list(grid)
    # independent random logits per tile: only a correct weighted average reproduces the brute force
    logits = {t.index: rng.normal(0, 3, (k, t.height, t.width)).astype(np.float32) for t in tiles}
    valid = rng.random((height, width)) > 0.05
    if len(tiles) > 4:  # make one whole tile invalid: the engine skips it, as here
        t = tiles[len(tiles) // 2]
        valid[t.y:t.y + t.height, t.x:t.x + t.width] = False

    # brute force, float64, weights from edge_window directly
    num = np.zeros((k, height, width))
    den = np.zeros((height, width))
    for t in tiles:
        w = np.outer(edge_window(t.height, overlap, t.y > 0, t.y + t.height < height),
                     edge_window(t.width, overlap, t.x > 0, t.x + t.width < width)).astype(np.float64)
        num[:, t.y:t.y + t.height, t.x:t.x + t.width] += logits[t.index] * w
        den[t.y:t.y + t.height, t.x:t.x + t.width] += w
    assert (den > 0).all()
    expected = num / den

    # the engine's streaming order: strip by strip, tiles row-major, finished rows handed out
    # as soon as the last tile touching them has been added
    out = np.full((k, height, width), np.nan, np.float32)
    out_valid = np.zeros((height, width), bool)
    written = np.zeros((height, width), int)
    for strip in plan_strips(grid, strip_width, BLOCK):
        acc = StripAccumulator(grid, strip, k)
        by_row = {}
        for t in strip_tiles(grid, strip):
            by_row.setdefault(t.row, []).append(t)
        for r in range(len(grid.ys)):
            for t in by_row[r]:
                v = valid[t.y:t.y + t.height, t.x:t.x + t.width]
                if not v.any():
                    continue
                if spill and t.x < strip.x0:  # only the part right of the previous strip, as spilled
                    cut = strip.x0 - t.x
                    acc.add(t, logits[t.index][:, :, cut:], v[:, cut:], strip.x0)
                else:
                    acc.add(t, logits[t.index], v)
                # memory bound: never more pending rows than one tile is high
                assert acc.valid.shape[0] <= grid.tile_height
                assert acc.logits.shape[1:] == acc.valid.shape == (acc.valid.shape[0], strip.x1 - strip.x0)
            end = finished_rows(grid, r)
            for row0, blended, v in acc.pop(end):
                n = v.shape[0]
                assert n > 0 and blended.dtype == np.float32 and blended.shape == (k, n, strip.x1 - strip.x0)
                out[:, row0:row0 + n, strip.x0:strip.x1] = blended
                out_valid[row0:row0 + n, strip.x0:strip.x1] = v
                written[row0:row0 + n, strip.x0:strip.x1] += 1
            assert acc.row0 == end
        assert acc.row0 == height
    assert (written == 1).all()  # every output pixel handed out exactly once
    np.testing.assert_array_equal(out_valid, valid)
    np.testing.assert_allclose(out[:, valid], expected[:, valid], rtol=1e-5, atol=1e-5)

    # decide on the streamed blend == decide on the brute force blend
    classes, scores = decide(out, out_valid, SOFTMAX, None)
    bf_classes, bf_scores = decide(expected.astype(np.float32), valid, SOFTMAX, None)
    top2 = np.sort(expected, axis=0)[-2:]
    clear = valid & (top2[1] - top2[0] > 1e-3)
    assert clear.sum() > 0.9 * valid.sum()
    np.testing.assert_array_equal(classes[clear], bf_classes[clear])
    np.testing.assert_array_equal(classes[~valid], NODATA)
    np.testing.assert_allclose(scores[valid], special.softmax(expected, axis=0).max(axis=0)[valid], atol=1e-5)
    np.testing.assert_allclose(scores[valid], bf_scores[valid], atol=1e-5)


def test_strip_accumulator_rejects_out_of_order_tiles():
    grid = TileGrid(300, 200, 128, 32)
    strip = plan_strips(grid, 256, BLOCK)[0]
    acc = StripAccumulator(grid, strip, 2)
    later = [t for t in grid if t.row == 1][0]  # row 1 before row 0 was popped
    with pytest.raises(RuntimeError, match="row-major"):
        acc.add(later, np.zeros((2, 128, 128), np.float32), np.ones((128, 128), bool))


# --------------------------------------------------------------------------------------------
# Tiled == untiled with translation-equivariant models, through rsseg.raster.engine.segment
# --------------------------------------------------------------------------------------------

class BoxLinearModel:
    """Hand-written TileModel: zero-padded (2r+1)^2 box mean of each band, then a fixed linear
    map per class. A convolution, so translation-equivariant with receptive field 2r+1."""

    n_inputs = 3

    def __init__(self, radius: int = 2, n_classes: int = 4, activation: str = SOFTMAX, seed: int = 11):
        rng = np.random.default_rng(seed)
        self.radius = radius
        self.activation = activation
        self.class_names = tuple(f"class {i}" for i in range(n_classes))
        self.weights = rng.normal(0, 8, (n_classes, 3))
        self.bias = rng.normal(0, 1, n_classes)
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.shapes.append(batch.shape)
        r, k = self.radius, 2 * self.radius + 1
        padded = np.pad(batch.astype(np.float64), ((0, 0), (0, 0), (r + 1, r), (r + 1, r)))
        s = padded.cumsum(2).cumsum(3)  # integral image
        box = (s[..., k:, k:] - s[..., :-k, k:] - s[..., k:, :-k] + s[..., :-k, :-k]) / k**2
        logits = np.einsum("kc,bchw->bkhw", self.weights, box) + self.bias[None, :, None, None]
        return logits.astype(np.float32)


class Recording:
    """Wraps a TileModel and keeps the shapes it was called with and its last output."""

    def __init__(self, model):
        self.model = model
        self.class_names, self.activation, self.n_inputs = model.class_names, model.activation, model.n_inputs
        self.shapes: list[tuple[int, ...]] = []
        self.last = None

    def __call__(self, batch):
        self.shapes.append(batch.shape)
        self.last = self.model(batch)
        return self.last


def test_box_linear_model_is_translation_equivariant():
    rng = np.random.default_rng(0)
    image = rng.random((1, 3, 80, 90), np.float32)
    model = BoxLinearModel(radius=3)
    full = model(image)[0]
    part = model(image[:, :, 20:60, 30:75])[0]
    np.testing.assert_allclose(part[:, 3:-3, 3:-3], full[:, 23:57, 33:72], atol=1e-5)
    # the box filter itself, against scipy
    box = ndimage.uniform_filter(image[0].astype(np.float64), size=(1, 7, 7), mode="constant")
    np.testing.assert_allclose(model(image)[0], (np.einsum("kc,chw->khw", model.weights, box)
                                                 + model.bias[:, None, None]), atol=1e-4)


@pytest.fixture(scope="module")
def smooth_raster(tmp_path_factory):
    """700x900 float32 3-band GeoTIFF, spatially smooth random fields, with a NaN block larger than a
    tile (so one 128-pixel tile is all nodata and skipped) and a few scattered NaN pixels."""
    rng = np.random.default_rng(42)
    h, w = 700, 900
    data = ndimage.gaussian_filter(rng.normal(size=(3, h, w)), (0, 9, 9))
    data = (data * 4000 + 1000).astype(np.float32)
    data[:, 300:520, 400:620] = np.nan
    ys, xs = rng.integers(0, h, 40), rng.integers(0, w, 40)
    data[1, ys, xs] = np.nan  # NaN in one band only is invalid too
    path = tmp_path_factory.mktemp("smooth") / "smooth.tif"
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=3, dtype="float32",
                       crs=UTM33, transform=T, tiled=True, blockxsize=256, blockysize=256) as dst:
        dst.write(data)
    return path, data


def _run(raster, out_dir, model, tile, overlap, strip_width, batch_size=4, **kw):
    events = []
    result = segment(SegmentRequest(raster=str(raster), out_dir=str(out_dir), tile=tile, overlap=overlap,
                                    batch_size=batch_size, write_scores=True, vectorise=False, **kw),
                     model, progress=events.append, strip_width=strip_width)
    with rasterio.open(result.mask) as ds:
        classes = ds.read(1)
    with rasterio.open(result.scores) as ds:
        scores = ds.read(1)
    return result, classes, scores, events


MODELS = {
    "test-classes": lambda: build_model("test", classes=["water", "forest", "building", "road", "sand"],
                                        sentence=None),
    "test-sentence": lambda: build_model("test", classes=None, sentence="the dark water"),
    "box5": lambda: BoxLinearModel(radius=2),
    "box17": lambda: BoxLinearModel(radius=8),  # radius == overlap // 4: the limit of the guarantee
}
RADIUS = {"test-classes": 2, "test-sentence": 2, "box5": 2, "box17": 8}


@pytest.mark.parametrize("name", list(MODELS))
def test_tiled_equals_untiled(name, smooth_raster, tmp_path):
    path, data = smooth_raster
    h, w = data.shape[1:]
    untiled_model, tiled_model = Recording(MODELS[name]()), Recording(MODELS[name]())
    r0, c0, s0, _ = _run(path, tmp_path / "untiled", untiled_model, 1024, 0, 4096)
    r1, c1, s1, events = _run(path, tmp_path / "tiled", tiled_model, 128, 32, 256, batch_size=3)

    # the untiled run really is one model call on the whole raster
    assert untiled_model.shapes == [(1, 3, h, w)] and r0.tiles == 1
    full_logits = untiled_model.last[0].astype(np.float64)
    # the tiled run really is many tiles in several strips
    grid = TileGrid(h, w, 128, 32)
    strips = plan_strips(grid, 256, BLOCK)
    assert len(strips) == 4 and len(grid) == 70
    assert all(s[2:] == (128, 128) and s[0] <= 3 for s in tiled_model.shapes)  # full tiles, batches <= 3
    invalid = np.isnan(data).any(axis=0)
    skipped = sum(bool(invalid[t.y:t.y + 128, t.x:t.x + 128].all()) for t in grid)
    assert skipped >= 1  # the NaN block covers a whole tile, which must not reach the model
    # every other tile reaches the model exactly once, even the ones crossing a strip edge
    assert r1.tiles == sum(s[0] for s in tiled_model.shapes) == len(grid) - skipped
    assert events[0].done == 0 and all(e.total == len(grid) for e in events)
    assert [e.done for e in events] == sorted(e.done for e in events)
    # only the outputs are left in the folder (no staging or spill leftovers)
    assert sorted(p.name for p in (tmp_path / "tiled").iterdir()) == ["mask.tif", "result.json", "scores.tif"]
    assert r0.stretch == r1.stretch  # stretch does not depend on tiling

    # nodata: identical, and exactly the NaN input pixels
    np.testing.assert_array_equal(c0 == NODATA, invalid)
    np.testing.assert_array_equal(c1 == NODATA, invalid)
    np.testing.assert_array_equal(np.isnan(s1), invalid)
    assert r0.nodata_pixels == r1.nodata_pixels == invalid.sum()

    # Translation equivariance promises equal outputs only where a pixel's whole receptive field
    # (radius r) lies inside the raster: within r pixels of the raster edge the model sees its own
    # zero padding instead of image, so agreement there is not a consequence of equivariance and
    # blending but of how the engine places edge tiles. The property itself is therefore checked
    # on the interior, with a border band of r pixels excluded.
    r = RADIUS[name]
    interior = np.zeros((h, w), bool)
    interior[r:h - r, r:w - r] = True
    ok = interior & ~invalid
    np.testing.assert_allclose(s1[ok], s0[ok], rtol=0, atol=1e-5)
    top2 = np.sort(full_logits, axis=0)[-2:] if full_logits.shape[0] > 1 else None
    if top2 is not None:
        clear = top2[1] - top2[0] > 1e-4
    else:  # sigmoid: the decision flips at logit 0 (score 0.5)
        clear = np.abs(full_logits[0]) > 1e-4
    assert (ok & ~clear).sum() < 1e-4 * ok.sum()  # near-ties, where float rounding may pick either
    np.testing.assert_array_equal(c1[ok & clear], c0[ok & clear])
    # the test is meaningful: several classes (or both sides of the threshold) occur
    labels = np.unique(c0[ok])
    assert len(labels) >= (2 if name == "test-sentence" else 3), labels
    if name == "test-sentence":
        assert UNLABELLED in labels

    # Here edge tiles are full-size and flush with the raster edge (no engine padding), so both runs
    # pad identically at the raster border and the border band must agree too.
    band = ~interior & ~invalid
    np.testing.assert_allclose(s1[band], s0[band], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(c1[band & clear], c0[band & clear])


def test_tiled_differs_when_receptive_field_exceeds_the_zero_margin(smooth_raster, tmp_path):
    """Negative control: a model whose context (radius 16) is wider than the zero-weight margin
    (overlap // 4 = 8) sees tile padding in pixels that do count, so the comparison above would
    catch an engine that blended wrongly."""
    path, data = smooth_raster
    _, _, s0, _ = _run(path, tmp_path / "untiled", BoxLinearModel(radius=16), 1024, 0, 4096)
    _, _, s1, _ = _run(path, tmp_path / "tiled", BoxLinearModel(radius=16), 128, 32, 256)
    ok = ~np.isnan(s0)
    assert np.abs(s1[ok] - s0[ok]).max() > 1e-3


def test_progress_ends_at_its_total(smooth_raster, tmp_path):
    """The last 'segment' progress event says done == total, also when an all-nodata tile (skipped,
    so never spilled) crosses a strip edge."""
    path, data = smooth_raster
    grid = TileGrid(*data.shape[1:], 128, 32)
    strips = plan_strips(grid, 256, BLOCK)
    invalid = np.isnan(data).any(axis=0)
    crossing = [t for t in grid if invalid[t.y:t.y + 128, t.x:t.x + 128].all()
                and sum(t.col in s.cols for s in strips) == 2]
    assert crossing  # the situation this test is about
    _, _, _, events = _run(path, tmp_path / "tiled", BoxLinearModel(radius=2), 128, 32, 256)
    segment_events = [e for e in events if e.stage == "segment"]
    assert segment_events[-1].done == segment_events[-1].total == len(grid)
    assert all(e.done <= e.total for e in segment_events)


def test_thin_odd_raster_uses_full_size_edge_tiles(tmp_path):
    """61 x 1001 uint8: smaller than the tile in height, many tiles across; edge tiles are full
    size (no padding) and the tiled result equals the untiled one."""
    rng = np.random.default_rng(3)
    h, w = 61, 1001
    data = ndimage.gaussian_filter(rng.normal(size=(3, h, w)), (0, 4, 4))
    data = np.clip(data / np.abs(data).max() * 127 + 128, 0, 255).astype(np.uint8)
    path = tmp_path / "thin.tif"
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8",
                       crs=UTM33, transform=T) as dst:
        dst.write(data)
    untiled, tiled = BoxLinearModel(radius=2), BoxLinearModel(radius=2)
    r0, c0, s0, _ = _run(path, tmp_path / "u", untiled, 1024, 0, 4096)
    r1, c1, s1, _ = _run(path, tmp_path / "t", tiled, 128, 32, 256)
    assert untiled.shapes == [(1, 3, h, w)]
    grid = TileGrid(h, w, 128, 32)
    assert grid.ys == [0] and len(grid.xs) == 11 and grid.xs[-1] == w - 128
    assert all(shape[1:] == (3, h, 128) for shape in tiled.shapes)  # 61 high (the raster), 128 wide
    assert (r1.width, r1.height) == (w, h)
    assert (c0 != NODATA).all() and (c1 != NODATA).all()
    np.testing.assert_allclose(s1, s0, rtol=0, atol=1e-5)
    assert (c1 == c0).mean() > 0.9999
    assert len(np.unique(c0)) >= 2


def test_finished_rows():
    grid = TileGrid(700, 900, 128, 32)
    assert [finished_rows(grid, r) for r in range(len(grid.ys))] == grid.ys[1:] + [700]


def test_polygon_region_tiled_equals_untiled(smooth_raster, tmp_path):
    """A polygon region: outside the polygon is nodata, inside the tiled run equals the untiled one
    (the untiled tile is the polygon's bounding window)."""
    path, data = smooth_raster
    poly = {"type": "Polygon", "coordinates": [[(500503.0, 4999497.0), (508007.0, 4998003.0),
                                                 (504001.0, 4993555.0), (500503.0, 4999497.0)]]}
    region = RegionSpec(polygons=[poly])
    r0, c0, s0, _ = _run(path, tmp_path / "u", BoxLinearModel(radius=2), 1024, 0, 4096, region=region)
    r1, c1, s1, _ = _run(path, tmp_path / "t", BoxLinearModel(radius=2), 128, 32, 256, region=region)
    assert (r0.width, r0.height) == (r1.width, r1.height) == (751, 595)
    assert r0.transform == r1.transform == (10.0, 0.0, 500500.0, 0.0, -10.0, 4999500.0)
    assert r1.tiles > 1
    # pixel centres outside the triangle are nodata
    cols, rows = np.meshgrid(np.arange(751) + 50.5, np.arange(595) + 50.5)
    inside = contains_xy(shape(poly), 500000 + 10 * cols, 5000000 - 10 * rows)
    invalid = np.isnan(data).any(axis=0)[50:645, 50:801]
    np.testing.assert_array_equal(c0 != NODATA, inside & ~invalid)
    np.testing.assert_array_equal(c1 != NODATA, inside & ~invalid)
    ok = c0 != NODATA
    np.testing.assert_allclose(s1[ok], s0[ok], rtol=0, atol=1e-5)
    assert (c1[ok] == c0[ok]).mean() > 0.9999


def test_cancel_leaves_no_outputs(smooth_raster, tmp_path):
    path, _ = smooth_raster
    token = CancelToken()
    seen = []

    def progress(event):
        seen.append(event)
        if event.stage == "segment" and event.done >= 5:
            token.cancel()

    out = tmp_path / "cancelled"
    with pytest.raises(Cancelled):
        segment(SegmentRequest(raster=str(path), out_dir=str(out), tile=128, overlap=32, write_scores=True),
                BoxLinearModel(), progress=progress, cancel=token, strip_width=256)
    assert seen and seen[-1].done < seen[-1].total  # stopped early
    assert list(out.iterdir()) == []  # no partial rasters, no spill folder


class WrongShape(BoxLinearModel):
    def __call__(self, batch):
        return super().__call__(batch)[:, :, :-1]


@pytest.mark.parametrize("model,kwargs,error", [
    (WrongShape(), {}, ModelError),
    (BoxLinearModel(), {"batch_size": -1}, ParameterError),
    (BoxLinearModel(), {"tile": 8}, ParameterError),
    (BoxLinearModel(), {"overlap": 100}, ParameterError),
])
def test_engine_errors(smooth_raster, tmp_path, model, kwargs, error):
    path, _ = smooth_raster
    out = tmp_path / "out"
    request = dict(raster=str(path), out_dir=str(out), tile=128, overlap=32, vectorise=False)
    request.update(kwargs)
    with pytest.raises(error):
        segment(SegmentRequest(**request), model, strip_width=256)
    assert not out.exists() or list(out.iterdir()) == []


def test_engine_rejects_a_model_without_classes(smooth_raster, tmp_path):
    model = BoxLinearModel()
    model.class_names = ()
    with pytest.raises(ModelError, match="classes"):
        segment(SegmentRequest(raster=str(smooth_raster[0]), out_dir=str(tmp_path / "o")), model)
