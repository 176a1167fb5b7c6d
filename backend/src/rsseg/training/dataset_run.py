"""Train on a benchmark dataset: a TrainDatasetRequest in, a model bundle out (`rsseg train semantic`).

The dataset is read through the same layouts `rsseg eval` scores (datasets/semantic.py: Vaihingen, Potsdam,
LoveDA, OpenEarthMap, a plain folder): (image, label) pairs of a split, label values mapped to class indices
by the dataset's LabelCoding, its class-name file naming the classes. The run trains the family's network
with the same trainer as training from layers (training/semantic.py), through a reader with the chip
reader's contract (`read(item) -> (image float32 [C, h, w] in [0, 1], label uint8 [h, w])`, `.labels.ignore_index`):

- training items are random crops of `crop` px, drawn when read from torch's global generator (seeded by
  the run and saved in every checkpoint, as the augmentations are), so every epoch sees new crops and a
  resumed run draws exactly the crops an uninterrupted one would;
- validation items are the val split's images cut into tiles that cover every pixel once (edge tiles are
  padded, padding ignored).

Pixel scaling is `rsseg eval`'s default: 8-bit images map 0..255 to 0..1 unchanged (the bundle records the
fixed range `value_range` [0, 255], which `rsseg segment` and `rsseg eval` then apply); other data types,
or `percentile_stretch`, get the engine's 2-98 % percentile stretch of each image (the bundle's percentiles).

The run folder, checkpoints, resume, best-epoch choice, early stopping and "nothing left behind when no
epoch finished" are layers_run.py's (its helpers are imported, not copied, where they fit).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from ..bundles.format import BundleInfo, write_bundle
from ..bundles.index import remember_bundle
from ..datasets.semantic import (
    DATASETS,
    IGNORE,
    DatasetError,
    LabelCoding,
    Pair,
    decode_colours,
    find_pairs,
    get_dataset,
    map_labels,
)
from ..devices import resolve_device
from ..errors import ParameterError, request_rules
from ..jsonfile import write_json_file
from ..models.prompts import display_name
from ..models.registry import get_spec
from ..models.segmenter import trained_state
from ..progress import CancelToken, ProgressCallback, report
from ..protocol.contracts import check_device, describe_value, from_fields, is_finite
from ..protocol.training import (
    CHECKPOINTS,
    DEFAULT_TRAINABLE,
    RUN_FILE,
    TRAINABLE_MODELS,
)
from ..raster.normalize import Stretch, estimate_stretch
from ..raster.palette import class_rgb
from ..raster.region import Region
from ..raster.source import RasterSource
from ..weights.trained_checkpoint import load_checkpoint
from .augment import Augment
from .base import TrainConfig
from .layer_data import CACHE_BYTES, pixel_stats
from .layers_run import (
    BEST,
    _epochs,
    _last_checkpoint,
    _remove_run_files,
    _score,
    check_run_folder,
    in_run_folder,
    resolve_host,
)
from .net_setup import build_training_net
from .registry import family_of, get_trainer
from .semantic import SemanticTrainer

# Per-dataset schedules (`--schedule public`): GeoSeg's public training configs for UNetFormer / RFM-Seg
# (https://github.com/WangLibo1995/GeoSeg, config/<dataset>/unetformer.py: max_epoch, train_batch_size, crop).
SCHEDULES: dict[str, dict[str, int]] = {
    "vaihingen": {"epochs": 105, "batch_size": 8, "crop": 512},
    "potsdam": {"epochs": 45, "batch_size": 8, "crop": 768},
    "loveda": {"epochs": 30, "batch_size": 16, "crop": 512},
    "loveda-urban": {"epochs": 30, "batch_size": 16, "crop": 512},  # RFM-Seg's LoveDA: the urban scenes
}
PLAIN: dict[str, int] = {"epochs": 20, "batch_size": 8, "crop": 512}  # the default schedule of any dataset
SCHEDULE_NAMES = ("default", "public")
NO_VALIDATION = "none"
FIXED_RANGE = (0.0, 255.0)  # `rsseg eval`'s default scaling of 8-bit images
PERCENTILES = (2.0, 98.0)  # the engine's stretch, for other data types or percentile_stretch
CROP_MULTIPLE = 32  # crops (and validation tiles) are multiples of this: UNetFormer's input multiple
STATS_CROPS = 64  # crops sampled for the per-band mean and std


def _quiet_open(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path)


@dataclass(frozen=True)
class TrainDatasetRequest:
    """Train a semantic segmenter on a split of a benchmark layout; the result is a bundle in `out`.

    `epochs`, `batch_size` and `crop` left at None come from the schedule (`resolved()`): "public" is the
    dataset's entry of SCHEDULES, "default" is PLAIN. A stored run (run.json) holds the resolved values."""

    dataset: str  # a datasets/semantic.py layout: vaihingen, potsdam, loveda, openearthmap, folder
    root: str
    out: str  # the bundle folder (created; a run there is resumed with `resume`)
    model: str = DEFAULT_TRAINABLE  # a trainable registry entry
    split: str = "train"
    val_split: str = "val"  # "none": no validation (the last epoch's weights are kept)
    classes_file: Optional[str] = None  # required for `folder`; else overrides the shipped class names
    ignore_index: Optional[int] = None  # folder layout: the label value that does not count (default 255)
    reduce_zero_label: bool = False  # folder layout: 0 does not count, value i is class line i
    schedule: str = "default"  # "default" or "public" (SCHEDULES)
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    crop: Optional[int] = None  # training crop side in px
    crops_per_image: Optional[int] = None  # random crops per training image per epoch (None: about one cover)
    lr: Optional[float] = None  # default: the family trainer's
    limit: Optional[int] = None  # the first N images (sorted by path) of each split
    patience: int = 0  # stop after this many epochs without a better validation mIoU (0: never)
    augment: bool = True  # flips, rot90, scale, colour jitter, band dropout (training/augment.py)
    percentile_stretch: bool = False  # stretch each image by its 2-98 % percentiles instead of 0..255
    host: Optional[str] = None  # the trained bundle a fusion family (RFM-Seg) fuses into
    name: Optional[str] = None  # shown under "My models" (default: the folder's name)
    device: str = "auto"
    seed: int = 0
    resume: bool = False  # continue the run in `out` from its last checkpoint

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainDatasetRequest":
        if not isinstance(data, dict):
            raise ValueError(f"a train request must be an object, got {describe_value(data)}")
        return from_fields(cls, data)

    def resolved(self) -> "TrainDatasetRequest":
        """The request with the schedule's epochs, batch size and crop where it names none."""
        preset = SCHEDULES[self.dataset] if self.schedule == "public" else PLAIN
        return replace(self, **{k: preset[k] if getattr(self, k) is None else getattr(self, k) for k in PLAIN})

    def validate(self) -> "TrainDatasetRequest":
        """The rules that need no file; raises ParameterError naming the field."""
        if not str(self.out).strip():
            raise ParameterError("choose the folder to write the model to (out)", subject="out")
        with request_rules():
            check_device(self.device)
        if self.resume:
            return self
        if self.dataset not in DATASETS:
            raise ParameterError(f"unknown dataset {self.dataset!r}; known: {', '.join(DATASETS)}", subject="dataset")
        if not str(self.root).strip():
            raise ParameterError("choose the dataset's root folder", subject="root")
        if self.schedule not in SCHEDULE_NAMES:
            raise ParameterError(f"schedule must be one of {', '.join(SCHEDULE_NAMES)}, got {self.schedule!r}",
                                 subject="schedule")
        if self.schedule == "public" and self.dataset not in SCHEDULES:
            raise ParameterError(f"there is no public schedule for {self.dataset}; the datasets with one are "
                                 f"{', '.join(SCHEDULES)}: give --epochs, --batch-size and --crop instead",
                                 subject="schedule")
        for name in ("split", "val_split"):
            if not str(getattr(self, name)).strip():
                raise ParameterError(f"{name.replace('_', ' ')} must name a split", subject=name)
        crop = self.crop
        checks = (
            ("epochs", self.epochs is None or self.epochs >= 1, "at least 1"),
            ("batch_size", self.batch_size is None or self.batch_size >= 1, "at least 1"),
            ("crop", crop is None or (32 <= crop <= 2048 and crop % CROP_MULTIPLE == 0),
             f"a multiple of {CROP_MULTIPLE} px from 32 to 2048"),
            ("crops_per_image", self.crops_per_image is None or self.crops_per_image >= 1, "at least 1"),
            ("lr", self.lr is None or (is_finite(self.lr) and 0 < self.lr < 1), "between 0 and 1"),
            ("limit", self.limit is None or self.limit >= 1, "at least 1 image"),
            ("patience", self.patience >= 0, "0 or more"),
            ("ignore_index", self.ignore_index is None or 0 <= self.ignore_index <= 255, "a label value 0 to 255"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ParameterError(f"{name.replace('_', ' ')} must be {expected}, got {getattr(self, name)}",
                                     subject=name)
        return self


@dataclass
class TrainDatasetResult:
    """What a finished run reports: the bundle (its model id is what segment and eval take) and how it did."""

    model: str  # the bundle's model id (its folder's absolute path)
    name: str
    classes: list[str]
    epochs: int  # epochs run
    best_epoch: int  # the epoch whose weights the bundle holds (the last without validation)
    stopped: str  # "epochs" (all run) or "early" (no better validation mIoU for `patience` epochs)
    seconds: float
    train_images: int
    val_images: int
    crops_per_epoch: int
    val_tiles: int
    metrics: dict[str, Any] = field(default_factory=dict)  # validation scores of the saved weights
    notes: list[str] = field(default_factory=list)
    dataset: str = ""
    root: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the data ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Crop:
    """One item of the reader: a window of image `image`, padded to `size` px; window None is a random
    crop drawn when the item is read (torch's global generator)."""

    image: int
    window: Optional[Window]
    size: int


@dataclass(frozen=True)
class DatasetLabels:
    """What the trainer asks of `reader.labels`."""

    class_names: tuple[str, ...]
    ignore_index: int = IGNORE


@dataclass
class DatasetImage:
    pair: Pair
    width: int
    height: int
    stretch: Stretch


def read_label_window(pair: Pair, coding: LabelCoding, dataset: str, window: Optional[Window] = None) -> np.ndarray:
    """A pair's label (or a window of it) as class indices 0..K-1, IGNORE where it does not count; like
    datasets/semantic.py's read_label, windowed."""
    try:
        with _quiet_open(pair.label) as src:
            if coding.colours is not None and src.count >= 3:
                values = decode_colours(src.read((1, 2, 3), window=window), coding.colours, pair.label)
            else:
                values = src.read(1, window=window)
    except RasterioIOError as exc:
        raise DatasetError(f"cannot read the label {pair.label}: {exc}") from None
    return map_labels(values, coding.value_map, coding.ignore_values, pair.label, dataset)


class DatasetChipReader:
    """Crops of a dataset's images, scaled as the bundle will scale them, with their labels: the ChipReader
    contract (training/layer_data.py) over `Crop` items. Whole images (and labels) are kept in memory as
    they are first read, within `cache_bytes`; beyond it crops are read from the files."""

    def __init__(self, images: Sequence[DatasetImage], coding: LabelCoding, dataset: str, n_bands: int,
                 labels: DatasetLabels, cache_bytes: int = CACHE_BYTES):
        self.images, self.coding, self.dataset, self.n_bands, self.labels = list(images), coding, dataset, \
            n_bands, labels
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._cache_left = cache_bytes

    def _source(self, entry: DatasetImage) -> RasterSource:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return RasterSource(str(entry.pair.image), tuple(range(1, self.n_bands + 1)), self.n_bands)

    def _whole(self, index: int) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        if index in self._cache:
            return self._cache[index]
        entry = self.images[index]
        size = entry.width * entry.height * (self.n_bands * 4 + 2)
        if size > self._cache_left:
            return None
        with self._source(entry) as source:
            data, valid = source.read(Window(0, 0, entry.width, entry.height))
        label = read_label_window(entry.pair, self.coding, self.dataset)
        self._cache[index] = (entry.stretch.apply(data, valid).astype(np.float32, copy=False), valid, label)
        self._cache_left -= size
        return self._cache[index]

    def window(self, index: int, window: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scaled image [C, h, w], valid [h, w], label [h, w]) of a window of image `index`."""
        whole = self._whole(index)
        if whole is not None:
            rows = slice(int(window.row_off), int(window.row_off + window.height))
            cols = slice(int(window.col_off), int(window.col_off + window.width))
            image, valid, label = whole
            return image[:, rows, cols], valid[rows, cols], label[rows, cols]
        entry = self.images[index]
        with self._source(entry) as source:
            data, valid = source.read(window)
        label = read_label_window(entry.pair, self.coding, self.dataset, window)
        return entry.stretch.apply(data, valid).astype(np.float32, copy=False), valid, label

    def random_window(self, index: int, size: int) -> Window:
        entry = self.images[index]
        w, h = min(size, entry.width), min(size, entry.height)
        x = int(torch.randint(0, entry.width - w + 1, ()))
        y = int(torch.randint(0, entry.height - h + 1, ()))
        return Window(x, y, w, h)

    def read(self, item: Crop) -> tuple[np.ndarray, np.ndarray]:
        window = item.window if item.window is not None else self.random_window(item.image, item.size)
        image, valid, label = self.window(item.image, window)
        label = np.where(valid, label, np.uint8(self.labels.ignore_index)).astype(np.uint8, copy=False)
        h, w = label.shape
        if (h, w) == (item.size, item.size):
            return np.ascontiguousarray(image), label
        padded = np.zeros((image.shape[0], item.size, item.size), np.float32)
        padded[:, :h, :w] = image
        padded_label = np.full((item.size, item.size), self.labels.ignore_index, np.uint8)
        padded_label[:h, :w] = label
        return padded, padded_label


@dataclass
class DatasetData:
    """What the data side decided before training."""

    title: str
    class_lines: list[str]  # the class-name file's lines (prompts)
    class_names: list[str]  # the first synonym of each line: the bundle's classes
    coding: LabelCoding
    reader: DatasetChipReader
    train: list[Crop]  # one epoch of training crops (random windows)
    val: list[Crop]  # the validation tiles
    train_images: int
    val_images: int
    n_bands: int
    dtype: str
    scaling: str  # "fixed" (value_range) or "percentile"
    pixels: dict[str, int]  # labelled training pixels per class
    mean: list[float]
    std: list[float]
    notes: list[str] = field(default_factory=list)
    val_tile: int = 0


def _pairs(spec, request: TrainDatasetRequest) -> tuple[list[Pair], list[Pair]]:
    train = find_pairs(spec, request.root, request.split)[:request.limit]
    if request.val_split == NO_VALIDATION:
        return train, []
    val = find_pairs(spec, request.root, request.val_split)[:request.limit]
    shared = sorted({p.image for p in train} & {p.image for p in val})
    if shared:
        raise DatasetError(f"the validation split {request.val_split!r} and the training split {request.split!r} "
                           f"share {len(shared)} image(s) under {request.root} (e.g. {shared[0]}): the layout found "
                           "has no separate split folders; give a validation split of other images, or "
                           f"--val-split {NO_VALIDATION}")
    return train, val


def _header(pair: Pair) -> tuple[int, int, int, str]:
    """(width, height, bands, dtype) of a pair's image, after its label's size is checked against it."""
    try:
        with _quiet_open(pair.image) as src:
            width, height, count, dtype = src.width, src.height, src.count, src.dtypes[0]
        with _quiet_open(pair.label) as lab:
            lw, lh = lab.width, lab.height
    except RasterioIOError as exc:
        raise DatasetError(f"cannot read {pair.image} or its label {pair.label}: {exc}") from None
    if (lw, lh) != (width, height):
        raise DatasetError(f"{pair.image} is {width}x{height} px but its label {pair.label} is {lw}x{lh} px")
    return width, height, count, dtype


def _scaling(request: TrainDatasetRequest, dtypes: dict[str, Path]) -> tuple[str, list[str]]:
    """"fixed" (8-bit values 0..255 -> 0..1, `rsseg eval`'s default) or "percentile" (each image by its 2-98 %)."""
    if request.percentile_stretch:
        return "percentile", []
    if set(dtypes) == {"uint8"}:
        return "fixed", []
    if "uint8" in dtypes:
        other = next(d for d in dtypes if d != "uint8")
        raise DatasetError(f"the images mix data types: {dtypes['uint8']} is uint8 but {dtypes[other]} is {other}, "
                           "and `rsseg eval` scales them differently (0..255 against a percentile stretch); "
                           "convert them to one type, or train with --percentile-stretch")
    kinds = ", ".join(sorted(dtypes))
    return "percentile", [f"images are {kinds}, not 8-bit: each is stretched by its 2-98 % percentiles, as "
                          "`rsseg eval` and `rsseg segment` do for such images"]


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def prepare(request: TrainDatasetRequest, progress: Optional[ProgressCallback] = None,
            cancel: Optional[CancelToken] = None) -> DatasetData:
    """Pairs, checks, crops and normalisation; every problem with the data raises here, before training."""
    from ..datasets.dataset_classes import dataset_classes

    spec = get_dataset(request.dataset)
    class_lines = dataset_classes(spec, request.classes_file)
    class_names = [display_name(line) for line in class_lines]
    if len(set(n.lower() for n in class_names)) != len(class_names):
        raise DatasetError(f"the class names {', '.join(class_names)} repeat a name (the first synonym of each line "
                           "names the class): make them distinct")
    coding = spec.coding(len(class_lines), request.ignore_index, request.reduce_zero_label)
    train_pairs, val_pairs = _pairs(spec, request)
    pairs = train_pairs + val_pairs
    headers = [_header(p) for p in pairs]
    n_bands = headers[0][2]
    for pair, (_, _, count, _) in zip(pairs, headers):
        if count != n_bands:
            raise DatasetError(f"{pair.image} has {count} band(s) but {pairs[0].image} has {n_bands}: a model takes "
                               "one band count")
    dtypes: dict[str, Path] = {}
    for pair, header in zip(pairs, headers):
        dtypes.setdefault(header[3], pair.image)
    scaling, notes = _scaling(request, dtypes)
    crop = int(request.crop)
    if not any(w >= crop and h >= crop for w, h, _, _ in headers[:len(train_pairs)]):
        largest = max(headers[:len(train_pairs)], key=lambda hd: min(hd[0], hd[1]))
        raise ParameterError(f"the crop of {crop} px is larger than every training image of {request.root} (split "
                             f"{request.split!r}; the largest is {largest[0]}x{largest[1]} px): choose a smaller crop",
                             subject="crop")
    # every label is read once now: values outside the coding stop the run before it starts
    counts = np.zeros(len(class_lines), np.int64)
    val_labelled = 0
    for i, pair in enumerate(pairs):
        if cancel is not None:
            cancel.check()
        label = read_label_window(pair, coding, spec.name)
        labelled = label[label != IGNORE]
        if i < len(train_pairs):
            counts += np.bincount(labelled, minlength=len(class_lines))[:len(class_lines)]
        else:
            val_labelled += labelled.size
        report(progress, "read labels", i + 1, len(pairs))
    if not counts.sum():
        raise DatasetError(f"the training split {request.split!r} of {request.root} has no labelled pixel (every "
                           f"label value is ignored: {', '.join(map(str, coding.ignore_values))})")
    if val_pairs and not val_labelled:
        raise DatasetError(f"the validation split {request.val_split!r} of {request.root} has no labelled pixel: "
                           f"choose another split, or --val-split {NO_VALIDATION}")
    fixed = Stretch((FIXED_RANGE[0],) * n_bands, (FIXED_RANGE[1],) * n_bands)
    images = []
    for pair, (w, h, _, _) in zip(pairs, headers):
        stretch = fixed
        if scaling == "percentile":
            with RasterSource(str(pair.image), tuple(range(1, n_bands + 1)), n_bands) as source:
                stretch = estimate_stretch(source, Region(Window(0, 0, w, h)), PERCENTILES)
        images.append(DatasetImage(pair, w, h, stretch))
    reader = DatasetChipReader(images, coding, spec.name, n_bands, DatasetLabels(tuple(class_names)))
    train: list[Crop] = []
    for i, image in enumerate(images[:len(train_pairs)]):
        per_image = request.crops_per_image or max(1, math.ceil(image.width * image.height / crop ** 2))
        train += [Crop(i, None, crop)] * per_image
    if len(train) < request.batch_size:  # one batch at least: repeat the images
        notes.append(f"an epoch holds {len(train)} crops, fewer than a batch: each image is cropped more often to "
                     f"fill a batch of {request.batch_size}")
        train = [train[i % len(train)] for i in range(request.batch_size)]
    val: list[Crop] = []
    val_tile = 0
    if val_pairs:
        val_tile = min(crop, _round_up(max(max(w, h) for w, h, _, _ in headers[len(train_pairs):]), CROP_MULTIPLE))
        for i in range(len(train_pairs), len(images)):
            w, h = images[i].width, images[i].height
            val += [Crop(i, Window(x, y, min(val_tile, w - x), min(val_tile, h - y)), val_tile)
                    for y in range(0, h, val_tile) for x in range(0, w, val_tile)]
    mean, std = crop_stats(reader, len(train_pairs), crop, request.seed)
    return DatasetData(spec.title, class_lines, class_names, coding, reader, train, val, len(train_pairs),
                       len(val_pairs), n_bands, str(headers[0][3]), scaling,
                       {n: int(c) for n, c in zip(class_names, counts)}, mean, std, notes, val_tile)


def crop_stats(reader: DatasetChipReader, n_train: int, crop: int, seed: int,
               limit: int = STATS_CROPS) -> tuple[list[float], list[float]]:
    """Per-band mean and std of the valid scaled pixels of up to `limit` training crops (spread over the
    images, positions from a numpy generator seeded by `seed`): the normalisation a bundle stores."""
    rng = np.random.default_rng(seed)
    picks = np.linspace(0, n_train - 1, limit).round().astype(int)  # several crops per image when few

    def samples() -> Iterator[np.ndarray]:
        for index in picks:
            entry = reader.images[int(index)]
            w, h = min(crop, entry.width), min(crop, entry.height)
            window = Window(int(rng.integers(0, entry.width - w + 1)), int(rng.integers(0, entry.height - h + 1)),
                            w, h)
            image, valid, _ = reader.window(int(index), window)
            yield image[:, valid]

    return pixel_stats(samples(), reader.n_bands)


# -- the run folder ------------------------------------------------------------------------------------------
def _check_folder(request: TrainDatasetRequest, out: Path) -> TrainDatasetRequest:
    """The request to run (layers_run.check_run_folder); a new run's schedule is resolved."""
    def parse(saved: dict) -> TrainDatasetRequest:
        if "dataset" not in saved:
            raise ParameterError(f"{out} holds an unfinished run of `rsseg train layers`: resume it with "
                                 f"`rsseg train layers --resume {out}`", subject="out")
        return TrainDatasetRequest.from_dict(saved)

    request = check_run_folder(request, out, parse)
    return request if request.resume else request.resolved()


def _best_state(out: Path, trainer: SemanticTrainer, validated: bool) -> dict[str, torch.Tensor]:
    """The best epoch's weights (kept by layers_run's _epochs), or the last epoch's without validation."""
    best = out / CHECKPOINTS / BEST
    if validated and best.is_file():
        from safetensors.torch import load_file

        return load_file(str(best))
    return trained_state(trainer.model)


def _check_host_scaling(host: str, fixed: bool) -> None:
    """A fused model sees its pixels as its frozen host saw them: the host must have this run's scaling."""
    from ..bundles.format import read_bundle

    host_range = read_bundle(host).value_range
    if (host_range is not None) != fixed:
        theirs = f"values {host_range[0]:g}..{host_range[1]:g}" if host_range else "the percentile stretch"
        ours = "8-bit values 0..255" if fixed else "the percentile stretch"
        raise ParameterError(f"the host {host} was trained on {theirs} scaled to 0..1 but this run scales "
                             f"{ours}: train the host with `rsseg train semantic` on this dataset (with the same "
                             "--percentile-stretch choice)", subject="host")


def _spec_and_trainer(model_id: str) -> tuple[Any, type[SemanticTrainer]]:
    spec = get_spec(model_id)
    if spec.task != "trainable":
        raise ParameterError(f"{model_id!r} is not a model family you can train; choose one of "
                             f"{', '.join(TRAINABLE_MODELS)} (or their -tiny test twins)", subject="model")
    trainer_cls = get_trainer(family_of(spec.builder))
    if not issubclass(trainer_cls, SemanticTrainer):
        raise ParameterError(f"{model_id!r} is not a semantic segmenter: choose one of {', '.join(TRAINABLE_MODELS)}",
                             subject="model")
    return spec, trainer_cls


# -- the run ---------------------------------------------------------------------------------------------------
def train_dataset(request: TrainDatasetRequest, progress: Optional[ProgressCallback] = None,
                  cancel: Optional[CancelToken] = None, bar: bool = False) -> TrainDatasetResult:
    """Train and write the bundle; `bar` draws tqdm bars on stderr (the CLI)."""
    request.validate()
    out = Path(request.out).expanduser().absolute()
    request = _check_folder(request, out)
    return in_run_folder(out, lambda: _run(request, out, progress, cancel, bar),
                         "resume the run (`rsseg train semantic --resume RUN`)")


def _run(request: TrainDatasetRequest, out: Path, progress: Optional[ProgressCallback],
         cancel: Optional[CancelToken], bar: bool) -> TrainDatasetResult:
    started = time.perf_counter()
    spec, trainer_cls = _spec_and_trainer(request.model)
    request = resolve_host(request, spec)  # a resumed run checks its stored host again
    device = resolve_device(request.device)
    report(progress, "prepare", 0, 2)
    data = prepare(request, progress, cancel)
    if request.host:
        _check_host_scaling(request.host, data.scaling == "fixed")
    if cancel is not None:
        cancel.check()
    report(progress, "prepare", 1, 2)
    torch.manual_seed(request.seed)
    built = build_training_net(spec, data.n_bands, data.class_names, data.mean, data.std, device, request.host)
    net, notes = built.net, [*data.notes, *built.notes]
    data.mean, data.std = built.mean, built.std
    multiple = int(getattr(net, "multiple", CROP_MULTIPLE))
    if request.crop % multiple or (data.val_tile and data.val_tile % multiple):
        raise ParameterError(f"{spec.id} takes inputs whose sides are multiples of {multiple} px; the crop is "
                             f"{request.crop}", subject="crop")
    out.mkdir(parents=True, exist_ok=True)
    write_json_file(out / RUN_FILE, request.to_dict())
    (out / CHECKPOINTS).mkdir(exist_ok=True)
    batch_size = int(request.batch_size)
    per_epoch = len(data.train) // batch_size
    total = per_epoch * request.epochs
    config = TrainConfig(steps=total, batch_size=batch_size, lr=request.lr or trainer_cls.default_lr,
                         weight_decay=trainer_cls.default_weight_decay,
                         warmup_steps=min(per_epoch, max(1, total // 20)), min_lr_ratio=0.01, grad_clip=1.0,
                         seed=request.seed, device=device, progress=bar, eval_batch_size=batch_size)
    trainer = trainer_cls(net, spec.id, data.train, config, data.reader, data.mean, data.std, data.class_names,
                          val_data=data.val, augmentation=Augment() if request.augment else None,
                          extra={"epochs_log": []})
    log: list[dict[str, Any]] = []
    if request.resume:
        checkpoint = load_checkpoint(_last_checkpoint(out))
        trainer.resume(checkpoint)
        log = list(checkpoint.record.get("epochs_log") or [])
    report(progress, "prepare", 2, 2)
    stopped = _epochs(request, out, trainer, per_epoch, log, progress, cancel)
    best = max(log, key=_score) if data.val else log[-1]
    state = _best_state(out, trainer, bool(data.val))
    fixed = data.scaling == "fixed"
    info = BundleInfo(
        name=request.name or out.name, builder=spec.builder, config=dict(getattr(net, "config", spec.config)),
        classes=list(data.class_names), colours=[list(rgb) for rgb in class_rgb(data.class_names)],
        bands=list(range(1, data.n_bands + 1)), mean=data.mean, std=data.std, percentiles=list(PERCENTILES),
        value_range=list(FIXED_RANGE) if fixed else None, resolution=None, chip=request.crop,
        training={**_summary(request, data), "model": spec.id, "epochs": request.epochs,
                  "epochs_run": log[-1]["epoch"], "best_epoch": best["epoch"], "stopped": stopped,
                  "lr": config.lr, "batch_size": batch_size, "augment": request.augment,
                  "seconds": round(time.perf_counter() - started, 1), "device": device, "notes": notes,
                  "history": log},
        metrics=dict(best.get("metrics") or {}), created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        description=f"{request.name or out.name}: {spec.id} trained on {data.title} {request.split} "
                    f"({', '.join(data.class_names)})")
    write_bundle(out, info, state)
    _remove_run_files(out)
    model_id = remember_bundle(out)
    if stopped == "early":
        notes.append(f"stopped early after epoch {log[-1]['epoch']}: no better validation mIoU for "
                     f"{request.patience} epochs")
    return TrainDatasetResult(model_id, info.name, info.classes, log[-1]["epoch"], best["epoch"], stopped,
                              round(time.perf_counter() - started, 2), data.train_images, data.val_images,
                              len(data.train), len(data.val), info.metrics, notes, request.dataset,
                              str(Path(request.root).expanduser().absolute()))


def _summary(request: TrainDatasetRequest, data: DatasetData) -> dict[str, Any]:
    values: dict[str, list[int]] = {n: [] for n in data.class_names}
    for value, index in sorted(data.coding.value_map.items()):
        values[data.class_names[index]].append(value)
    return {"dataset": request.dataset, "title": data.title, "root": str(Path(request.root).expanduser().absolute()),
            "split": request.split, "val_split": request.val_split, "limit": request.limit,
            "classes_file": request.classes_file, "class_lines": data.class_lines, "class_values": values,
            "ignore_values": list(data.coding.ignore_values), "train_images": data.train_images,
            "val_images": data.val_images, "bands": data.n_bands, "dtype": data.dtype, "schedule": request.schedule,
            "crop": request.crop, "crops_per_epoch": len(data.train), "crops_per_image": request.crops_per_image,
            "val_tile": data.val_tile, "val_tiles": len(data.val), "pixels": data.pixels,
            "scaling": ("0..255 -> 0..1 (fixed, as rsseg eval scales 8-bit images)" if data.scaling == "fixed"
                        else "2-98 % percentile stretch of each image"),
            "host": request.host, "seed": request.seed}

