"""Run a model over a benchmark dataset through the normal segmentation path and score it.

Every image goes through `run_segment` (the path the CLI and the plugin take), so the scores
measure what users get: the same tiling, stretch, device handling and class-id raster. Masks are
read back, mapped to class indices and streamed into one confusion matrix; one FeatureCache is
shared by all images.
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning

from ..datasets.dataset_classes import dataset_class_file, dataset_classes
from ..datasets.semantic import DatasetError, DatasetSpec, LabelCoding, Pair, find_pairs, get_dataset, read_label
from ..errors import ParameterError
from ..metrics import NO_PREDICTION, ConfusionMatrix, SemanticScores
from ..models.prompts import display_name
from ..protocol.contracts import NODATA, UNLABELLED, SegmentRequest

ImageProgress = Callable[[int, int], None]  # (images done, images in all)


@dataclass(frozen=True)
class EvalOptions:
    dataset: str
    root: str
    model: str = "test"
    split: str = "val"
    classes_file: Optional[str] = None
    tile: int = 512
    overlap: int = 64
    device: str = "auto"
    batch_size: int = 0
    limit: Optional[int] = None
    out: Optional[str] = None  # keep each image's mask.tif + result.json under out/masks/<key>/
    threshold: Optional[float] = None  # None: the dataset's protocol value; 0: no threshold
    resize: Optional[int] = None  # long image side (px) before inference, as SegEarth-OV's Resize
    percentile_stretch: bool = False  # default: 8-bit images map 0..255 to 0..1 unchanged
    ignore_index: Optional[int] = None  # folder layout only
    reduce_zero_label: bool = False  # folder layout only


@dataclass
class EvalReport:
    dataset: str
    title: str
    root: str
    split: str
    images: int
    model: str
    device: str
    settings: dict[str, Any]
    seconds: float
    scores: SemanticScores = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "scores"}
        data["metrics"] = self.scores.to_dict()
        return data

    def format(self) -> str:
        s = self.settings
        head = (f"{self.title} {self.split}: {self.images} images, model {self.model} on {self.device}, "
                f"tile {s['tile']} overlap {s['overlap']}"
                + (f", resized to {s['resize']} px" if s["resize"] else "")
                + (f", threshold {s['threshold']}" if s["threshold"] else "")
                + f", {self.seconds:.1f} s")
        return head + "\n" + self.scores.format_table()


def _check(options: EvalOptions) -> None:
    if options.limit is not None and options.limit < 1:
        raise ParameterError(f"--limit must be at least 1, got {options.limit}")
    if options.resize is not None and options.resize < 16:
        raise ParameterError(f"--resize must be at least 16 pixels, got {options.resize}")
    if options.threshold is not None and not 0.0 <= options.threshold <= 1.0:
        raise ParameterError(f"--threshold must be a score between 0 and 1, got {options.threshold}")


def _open_quiet(path: Path):
    """Dataset PNGs carry no geo-referencing; that is expected here, not worth a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path)


def _resized(image: Path, long_side: int, dest: Path) -> Path:
    """The image scaled (bilinear) so its longer side is `long_side`, as a temporary GeoTIFF."""
    with _open_quiet(image) as src:
        scale = long_side / max(src.width, src.height)
        width, height = max(1, int(src.width * scale + 0.5)), max(1, int(src.height * scale + 0.5))  # as mmcv
        data = src.read(out_shape=(src.count, height, width), resampling=Resampling.bilinear)
        profile = dict(driver="GTiff", width=width, height=height, count=src.count, dtype=src.dtypes[0],
                       crs=src.crs, transform=src.transform * Affine.scale(src.width / width, src.height / height),
                       nodata=src.nodata)
        interp = src.colorinterp
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(dest, "w", **profile) as out:
            out.write(data)
            out.colorinterp = interp
    return dest


class _Evaluator:
    """State shared by the images of one run: model prompts, label coding, cache, folders."""

    def __init__(self, options: EvalOptions, spec: DatasetSpec, classes: list[str], coding: LabelCoding,
                 workdir: Path):
        from ..execution.feature_cache import FeatureCache

        self.options, self.spec, self.classes, self.coding, self.workdir = options, spec, classes, coding, workdir
        self.bundle = bundle_scaling(options)
        # a trained bundle is scored by its argmax, as it was validated in training; the SegEarth-OV threshold
        # is the open-vocabulary protocol's
        default = None if self.bundle is not None else spec.threshold
        threshold = default if options.threshold is None else options.threshold
        self.threshold = threshold or None  # 0 means none
        self.background = spec.background if self.threshold is not None else None
        self.cache = FeatureCache.from_env()
        self.device = options.device

    def prediction(self, pair: Pair) -> tuple[np.ndarray, np.ndarray]:
        """(predicted class indices with NO_PREDICTION, label class indices with IGNORE) of one pair."""
        from ..service import run_segment

        label = read_label(pair, self.coding, self.spec.name)
        with _open_quiet(pair.image) as src:
            shape, dtype = (src.height, src.width), src.dtypes[0]
        if shape != label.shape:
            raise DatasetError(f"{pair.image} is {shape[1]}x{shape[0]} px but its label {pair.label} is "
                               f"{label.shape[1]}x{label.shape[0]} px")
        raster = pair.image
        if self.options.resize:
            raster = _resized(pair.image, self.options.resize, self.workdir / "resized.tif")
        out_dir = Path(self.options.out) / "masks" / pair.key if self.options.out else self.workdir / "job"
        if self.bundle is not None:  # the bundle's own scaling: its fixed range, else the percentile stretch
            stretch = None
        else:
            stretch = None if self.options.percentile_stretch or dtype != "uint8" else (0.0, 255.0)
        request = SegmentRequest(raster=str(raster), out_dir=str(out_dir), model=self.options.model,
                                 classes=list(self.classes), tile=self.options.tile, overlap=self.options.overlap,
                                 batch_size=self.options.batch_size, device=self.options.device,
                                 value_range=stretch, threshold=self.threshold, vectorise=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            result = run_segment(request, cache=self.cache)
        self.device = result.device
        with _open_quiet(Path(result.mask)) as src:
            mask = src.read(1, out_shape=shape, resampling=Resampling.nearest)
        prediction = mask.astype(np.int16) - 1
        prediction[mask == UNLABELLED] = NO_PREDICTION if self.background is None else self.background
        prediction[mask == NODATA] = NO_PREDICTION
        return prediction, label


def bundle_scaling(options: EvalOptions) -> Optional[str]:
    """None for a registry model; for a trained bundle the scaling it was trained with, which its jobs use
    (service/segment.py model_defaults): "0..255" style text for a fixed range, else "percentile"."""
    from ..models import get_spec

    spec = get_spec(options.model)
    if "bundle" not in spec.config:
        return None
    fixed = spec.preprocess.value_range
    if fixed is None:
        return "percentile (the bundle's)"
    if options.percentile_stretch:
        raise ParameterError(f"{options.model} was trained on values {fixed[0]:g}..{fixed[1]:g} scaled to 0..1 and "
                             "always segments with that scaling: leave out --percentile-stretch", subject="model")
    return f"{fixed[0]:g}..{fixed[1]:g} (the bundle's)"


def evaluate(options: EvalOptions, progress: Optional[ImageProgress] = None) -> EvalReport:
    """Score `options.model` on a dataset; raises RssegError subclasses for input the user can fix."""
    _check(options)
    t0 = time.perf_counter()
    spec = get_dataset(options.dataset)
    classes = dataset_classes(spec, options.classes_file)
    coding = spec.coding(len(classes), options.ignore_index, options.reduce_zero_label)
    pairs = find_pairs(spec, options.root, options.split)[:options.limit]
    matrix = ConfusionMatrix(len(classes))
    with tempfile.TemporaryDirectory(prefix="rsseg-eval-") as tmp:
        evaluator = _Evaluator(options, spec, classes, coding, Path(tmp))
        if progress:
            progress(0, len(pairs))
        for done, pair in enumerate(pairs, 1):
            matrix.update(*evaluator.prediction(pair))
            if progress:
                progress(done, len(pairs))
    names = [display_name(c) for c in classes]
    settings = {"tile": options.tile, "overlap": options.overlap, "batch_size": options.batch_size,
                "resize": options.resize, "threshold": evaluator.threshold,
                "background": names[evaluator.background] if evaluator.background is not None else None,
                "stretch": evaluator.bundle or ("percentile" if options.percentile_stretch else
                                                "0..255 for 8-bit images"),
                "classes": classes, "classes_file": str(dataset_class_file(spec, options.classes_file)),
                "ignore_values": list(coding.ignore_values), "limit": options.limit}
    report = EvalReport(spec.name, spec.title, str(options.root), options.split, len(pairs), options.model,
                        evaluator.device, settings, time.perf_counter() - t0, matrix.scores(names))
    if options.out:
        Path(options.out, "eval.json").write_text(json.dumps(report.to_dict(), indent=2))
    return report
