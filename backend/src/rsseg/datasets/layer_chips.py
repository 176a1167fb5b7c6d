"""Training chips from a raster and a polygon label layer, labelled as they are read.

`plan_chips` rasterises the labels of each window once (no image read) and keeps the windows with
enough labelled pixels, with their class counts; `chip_weights` turns the counts into class-balancing
weights and `balanced_order` into a seeded order; `read_chips` reads the image bands of each kept
window and pairs them with its labels. Windows come from the chip grid (`chips.chip_windows`, or a
`blocks.SpatialSplit`), never from random positions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
from rasterio.windows import Window

from ..errors import ParameterError
from .chips import Chip, labelled_fraction, open_dataset, same_transform
from .labels import LayerLabels, raster_grid
from .semantic import DatasetError

PathLike = Union[str, Path]


@dataclass(frozen=True)
class ChipPlan:
    """The windows worth reading and what their labels hold."""

    windows: tuple[Window, ...]
    counts: np.ndarray  # [len(windows), num_classes] int64: labelled pixels per class in each window
    class_names: tuple[str, ...]
    skipped: int  # windows under min_labelled


def plan_chips(labels: LayerLabels, windows: Sequence[Window], min_labelled: float = 0.0) -> ChipPlan:
    """The windows whose labelled fraction (label != ignore_index) is at least `min_labelled`, with
    their class counts (image nodata is not known yet: `read_chips` checks it again)."""
    if not 0.0 <= min_labelled <= 1.0:
        raise ParameterError(f"min_labelled is a fraction between 0 and 1, got {min_labelled}")
    kept, counts = [], []
    for window in windows:
        label = labels.rasterize_window(window)
        if labelled_fraction(label, labels.ignore_index) >= min_labelled:
            kept.append(window)
            counts.append(np.bincount(label.ravel(), minlength=256)[: labels.num_classes])
    table = np.array(counts, dtype=np.int64).reshape(len(kept), labels.num_classes)
    return ChipPlan(tuple(kept), table, labels.class_names, len(windows) - len(kept))


def chip_weights(counts: np.ndarray, power: float = 1.0) -> np.ndarray:
    """Sampling weights per chip (summing to 1) from its class counts: each class weighs
    (1 / its share of all labelled pixels) ** power, a chip the pixel-weighted mean of its classes'
    weights. power 1 is inverse frequency, 0.5 a softer balance, 0 uniform."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or not len(counts):
        raise ParameterError("chip_weights needs a [chips, classes] count table with at least one chip")
    totals = counts.sum(axis=0)
    share = totals / max(totals.sum(), 1.0)
    class_weight = np.where(share > 0, np.power(np.where(share > 0, share, 1.0), -power), 0.0)
    pixels = counts.sum(axis=1)
    weights = np.where(pixels > 0, counts @ class_weight / np.maximum(pixels, 1.0), 0.0)
    if weights.sum() <= 0:
        return np.full(len(counts), 1.0 / len(counts))
    return weights / weights.sum()


def balanced_order(weights: np.ndarray, count: int, seed: int) -> list[int]:
    """`count` chip indices drawn with replacement by `weights`: the same seed gives the same order."""
    rng = np.random.default_rng(seed)
    return [int(i) for i in rng.choice(len(weights), size=count, replace=True, p=np.asarray(weights, float))]


def read_chips(raster: PathLike, labels: LayerLabels, windows: Sequence[Window],
               bands: Optional[Sequence[int]] = None, min_labelled: float = 0.0,
               mask_nodata: bool = True) -> Iterator[Chip]:
    """Chips (image bands, labels, window) at `windows`, in the given order (repeats allowed).

    With `mask_nodata`, pixels whose bands all equal the raster's nodata value (or are NaN) become
    ignore_index, and a chip left under `min_labelled` is skipped. Raises before the first chip
    when the raster is not the grid the labels were loaded for, or a band is out of range.
    """
    grid = raster_grid(raster)
    if (grid.width, grid.height) != (labels.grid.width, labels.grid.height) or grid.crs != labels.grid.crs \
            or not same_transform(grid.transform, labels.grid.transform):
        raise DatasetError(f"{raster} is not the raster the labels were loaded for ({labels.grid.name}): "
                           f"load the labels for this raster")
    count = grid.count
    chosen = list(bands) if bands is not None else list(range(1, count + 1))
    bad = [b for b in chosen if not 1 <= b <= count]
    if bad or not chosen:
        raise ParameterError(f"bands {bad or '(none)'} are not in {raster} (bands 1..{count})")
    return _read(raster, labels, list(windows), chosen, min_labelled, mask_nodata)


def _read(raster: PathLike, labels: LayerLabels, windows: list[Window], bands: list[int], min_labelled: float,
          mask_nodata: bool) -> Iterator[Chip]:
    with open_dataset(raster) as src:
        nodata = src.nodata if mask_nodata else None
        for window in windows:
            label = labels.rasterize_window(window)
            if labelled_fraction(label, labels.ignore_index) < min_labelled:
                continue
            image = src.read(bands, window=window)
            if nodata is not None:
                invalid = np.all(np.isnan(image) if np.isnan(nodata) else image == nodata, axis=0)
                if invalid.any():
                    label = np.where(invalid, np.uint8(labels.ignore_index), label)
                    if labelled_fraction(label, labels.ignore_index) < min_labelled:
                        continue
            yield Chip(image, label, window)


def layer_chips(raster: PathLike, labels: LayerLabels, windows: Sequence[Window], min_labelled: float = 0.0,
                balance: bool = False, count: Optional[int] = None, seed: int = 0, power: float = 1.0,
                bands: Optional[Sequence[int]] = None) -> Iterator[Chip]:
    """The chips a trainer reads: the windows kept by `plan_chips`, in grid order, or with `balance`
    `count` (default: as many as kept) drawn by class-balancing weights with `seed`."""
    plan = plan_chips(labels, windows, min_labelled)
    if not plan.windows:
        raise DatasetError(f"no chip of {raster} has at least {min_labelled:.0%} labelled pixels "
                           f"({plan.skipped} windows looked at)")
    order: Sequence[Window] = plan.windows
    if balance:
        picks = balanced_order(chip_weights(plan.counts, power), count or len(plan.windows), seed)
        order = [plan.windows[i] for i in picks]
    return read_chips(raster, labels, order, bands, min_labelled)
