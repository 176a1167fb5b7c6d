"""Chips for training on a raster and a label layer, read the way segmentation reads tiles.

The image goes through the engine's own reader (RasterSource: band mapping, nodata and mask rules, the
resampled view for a training resolution) and its percentile stretch, so a bundle sees the same
values at segmentation as it saw in training. Labels are burnt per window (datasets/labels.py);
pixels the reader marks invalid become ignore_index. Chips are kept in memory once read when they
fit (CACHE_BYTES), as small label sets are read many times per run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Optional

import numpy as np
import torch
from rasterio.windows import Window
from torch.utils.data import Dataset

from ..datasets.labels import LayerLabels
from ..raster.normalize import Stretch
from ..raster.source import RasterSource
from .augment import Augment, augment

CACHE_BYTES = 1 << 30


class ChipReader:
    """Stretched image chips [C, h, w] float32 in [0, 1] and their labels [h, w] uint8 for windows of one
    raster's grid (the resampled one when a training resolution is set)."""

    def __init__(self, source: RasterSource, stretch: Stretch, labels: LayerLabels, cache_windows: int = 0):
        self.source, self.stretch, self.labels = source, stretch, labels
        self._cache: dict[tuple[int, int, int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._cache_limit = cache_windows

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        key = (int(window.col_off), int(window.row_off), int(window.width), int(window.height))
        if key in self._cache:
            return self._cache[key]
        data, valid = self.source.read(window)
        image = self.stretch.apply(data, valid).astype(np.float32, copy=False)
        label = self.labels.rasterize_window(window)
        if not valid.all():
            label = np.where(valid, label, np.uint8(self.labels.ignore_index))
        if len(self._cache) < self._cache_limit:
            self._cache[key] = (image, label)
        return image, label


def cache_windows(n_bands: int, chip: int, budget: int = CACHE_BYTES) -> int:
    """How many chips the in-memory cache holds within `budget` bytes."""
    return max(0, budget // (chip * chip * (4 * n_bands + 1)))


class LayerChipDataset(Dataset):
    """`windows` (repeats allowed: a class-balanced draw) as training samples: augmented, normalised
    later by the trainer. Items: (image [C, h, w] float32, label [h, w] int64)."""

    def __init__(self, reader: ChipReader, windows: Sequence[Window], how: Optional[Augment]):
        self.reader, self.windows, self.how = reader, list(windows), how

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.reader.read(self.windows[index])
        if self.how is None:
            return torch.from_numpy(image.copy()), torch.from_numpy(label.astype(np.int64))
        return augment(image, label, self.how, self.reader.labels.ignore_index)


def band_stats(reader: ChipReader, windows: Sequence[Window], limit: int = 64) -> tuple[list[float], list[float]]:
    """Per-band mean and std of valid stretched pixels over up to `limit` chips (evenly spread): the
    normalisation a bundle stores."""
    step = max(1, len(windows) // limit)

    def samples() -> Iterator[np.ndarray]:
        for window in list(windows)[::step][:limit]:
            data, valid = reader.source.read(window)
            yield reader.stretch.apply(data, valid)[:, valid]

    return pixel_stats(samples(), len(reader.source.bands))


def pixel_stats(samples: Iterable[np.ndarray], n_bands: int) -> tuple[list[float], list[float]]:
    """Per-band mean and std (at least 1e-3) of pixel samples [bands, N]; 0.5 and 0.25 when there are none."""
    total, total_sq, count = None, None, 0
    for values in samples:
        values = values.astype(np.float64)
        if values.size == 0:
            continue
        total = values.sum(axis=1) + (0 if total is None else total)
        total_sq = (values ** 2).sum(axis=1) + (0 if total_sq is None else total_sq)
        count += values.shape[1]
    if not count:
        return [0.5] * n_bands, [0.25] * n_bands
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 1e-8))
    return [float(v) for v in mean], [float(max(v, 1e-3)) for v in std]
