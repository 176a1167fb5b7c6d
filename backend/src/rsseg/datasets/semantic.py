"""Semantic-segmentation benchmark datasets as data: where the (image, label) pairs are, and what
the label values mean.

Each DatasetSpec lists one or more folder layouts (tried in order; the first that yields pairs
wins), the label value -> class index map, the values that are ignored, and the name of the
class-name file whose lines are the prompts in class-index order (the files are eval's package
data: `rsseg.datasets.dataset_classes` finds and reads them). Protocol facts (which classes are
scored, the background class and score threshold) follow SegEarth-OV's mmsegmentation configs;
docs/eval.md cites the source of each.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from ..errors import RssegError

IGNORE = 255  # class-index value of ignored label pixels (the confusion matrix's ignore index)
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
LABEL_SUFFIXES = (".png", ".tif", ".tiff")


class DatasetError(RssegError):
    """A dataset root, layout, label or raster file the readers cannot use."""


@dataclass(frozen=True)
class Layout:
    """Images found by a glob under the root; a label sits at the same relative path with the
    `image_dir` path component replaced by `label_dir`, with the image's suffix or a label suffix.

    "{split}" in patterns is the split as given ("val"), "{Split}" capitalised ("Val").
    """

    images: str
    image_dir: str
    label_dir: str
    list_file: Optional[str] = None  # names (with or without suffix) to keep, one per line
    description: str = ""
    label_tag: str = ""  # added to the image's stem for its label's (iSAID: "_instance_color_RGB"), else none

    def pattern(self, split: str) -> str:
        return self.images.format(split=split, Split=split.capitalize())


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    layouts: tuple[Layout, ...]
    classnames: Optional[str]  # eval's class-name file; None: the user gives one (--classes-file)
    label_values: Optional[dict[int, int]]  # label value -> class index; None: value i is class i
    ignore_values: tuple[int, ...]
    colours: Optional[dict[tuple[int, int, int], int]] = None  # RGB-coded labels -> label value
    background: Optional[int] = None  # class index that unlabelled (low-score) pixels count as
    threshold: Optional[float] = None  # score under which a pixel is unlabelled (SegEarth-OV's prob_thd)
    notes: str = ""

    def coding(self, num_classes: int, ignore_index: Optional[int] = None,
               reduce_zero_label: bool = False) -> "LabelCoding":
        """How label files map to class indices; the two options are for the folder layout only,
        where label value i is class i (or i-1 with reduce_zero_label, 0 then being ignored)."""
        if self.label_values is not None:
            if ignore_index is not None or reduce_zero_label:
                raise DatasetError(f"--ignore-index and --reduce-zero-label apply to the folder layout only; "
                                   f"{self.title} labels follow a fixed convention")
            return LabelCoding(dict(self.label_values), self.ignore_values, self.colours)
        shift = 1 if reduce_zero_label else 0
        ignore = tuple(dict.fromkeys(((0,) if reduce_zero_label else ())
                                     + ((IGNORE,) if ignore_index is None else (ignore_index,))))
        values = {i + shift: i for i in range(num_classes) if i + shift not in ignore}
        return LabelCoding(values, ignore, None)


@dataclass(frozen=True)
class LabelCoding:
    value_map: dict[int, int]  # label value -> class index
    ignore_values: tuple[int, ...]
    colours: Optional[dict[tuple[int, int, int], int]] = None


@dataclass(frozen=True)
class Pair:
    image: Path
    label: Path
    key: str  # the image's path under the root, without suffix: names kept masks


_MMSEG = Layout("img_dir/{split}/*", "img_dir", "ann_dir",
                description="mmsegmentation layout: img_dir/{split}/ + ann_dir/{split}/ (index labels)")

# ISPRS label colours (original RGB-coded ground truth) -> the index values of mmsegmentation's
# converters (tools/dataset_converters/potsdam.py and vaihingen.py); black marks eroded boundaries.
ISPRS_COLOURS = {(0, 0, 0): 0, (255, 255, 255): 1, (0, 0, 255): 2, (0, 255, 255): 3, (0, 255, 0): 4,
                 (255, 255, 0): 5, (255, 0, 0): 6}
ISPRS_VALUES = {1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5}  # reduce_zero_label: 0 (boundary) is ignored

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec(
        "loveda", "LoveDA",
        (Layout("{Split}/*/images_png/*", "images_png", "masks_png",
                description="as distributed: {Split}/{Urban,Rural}/images_png/ + masks_png/"), _MMSEG),
        "loveda.txt", {v: v - 1 for v in range(1, 8)}, (0,), background=0, threshold=0.3,
        notes="label 0 is no-data (ignored); 1..7 background, building, road, water, barren, forest, "
              "agricultural"),
    DatasetSpec(
        "loveda-urban", "LoveDA Urban",
        (Layout("{Split}/Urban/images_png/*", "images_png", "masks_png",
                description="as distributed, the urban domain only: {Split}/Urban/images_png/ + masks_png/"),),
        "loveda.txt", {v: v - 1 for v in range(1, 8)}, (0,), background=0, threshold=0.3,
        notes="LoveDA's urban scenes (RFM-Seg's benchmark); labels as loveda"),
    DatasetSpec(
        "potsdam", "ISPRS Potsdam", (_MMSEG,), "potsdam.txt", ISPRS_VALUES, (0, 255), ISPRS_COLOURS,
        background=5, threshold=0.1,
        notes="512x512 clips of the RGB orthophotos (mmseg converter); 6 classes scored, clutter included"),
    DatasetSpec(
        "vaihingen", "ISPRS Vaihingen", (_MMSEG,), "vaihingen.txt", ISPRS_VALUES, (0, 255), ISPRS_COLOURS,
        background=5, threshold=0.1,
        notes="512x512 clips of the IRRG (near-infrared, red, green) orthophotos, fed as they are; "
              "6 classes scored, clutter included"),
    DatasetSpec(
        "openearthmap", "OpenEarthMap",
        (Layout("*/images/*", "images", "labels", list_file="{split}.txt",
                description="as distributed: <region>/images/ + <region>/labels/, split by {split}.txt"),
         _MMSEG),
        "openearthmap.txt", {v: v for v in range(9)}, (IGNORE,), background=0, threshold=0.1,
        notes="label 0 (unknown) is scored as 'background', as SegEarth-OV does (reduce_zero_label=False)"),
    DatasetSpec(
        "dlrsd", "DLRSD",
        (Layout("images/{split}/*", "images", "annotations",
                description="detectron2 layout: images/{split}/ + annotations/{split}/ (index labels)"), _MMSEG),
        "dlrsd.txt", {v: v for v in range(17)}, (IGNORE,),
        notes="UC Merced 256x256 images with 17 dense classes; label value i is class i (0..16, the registration "
              "SGSeg's reference trains on), 255 not scored"),
    DatasetSpec(
        "isaid", "iSAID",
        (Layout("img_dir/{split}/*", "img_dir", "ann_dir", label_tag="_instance_color_RGB",
                description="mmsegmentation layout: img_dir/{split}/ + ann_dir/{split}/<name>_instance_color_RGB.png "
                            "(or <name>.png)"),),
        "isaid.txt", {v: v for v in range(16)}, (IGNORE,), background=0,
        notes="896x896 patches (mmseg converter); 15 object classes and background (label 0), 255 not scored"),
    DatasetSpec(
        "folder", "Folder",
        (Layout("{split}/images/*", "images", "labels", description="{split}/images/ + {split}/labels/"),
         Layout("images/*", "images", "labels", description="images/ + labels/ (matching stems)")),
        None, None, (IGNORE,),
        notes="label value i is line i+1 of the class-name file (i+2 with --reduce-zero-label); "
              "--ignore-index (default 255) is not scored"),
)}


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


def _label_for(root: Path, image: Path, layout: Layout) -> Optional[Path]:
    parts = list(image.relative_to(root).parts)
    if layout.image_dir not in parts[:-1]:
        return None
    parts[parts.index(layout.image_dir)] = layout.label_dir
    folder = root.joinpath(*parts[:-1])
    for tag in dict.fromkeys((layout.label_tag, "")):
        for suffix in dict.fromkeys((image.suffix, *LABEL_SUFFIXES)):
            candidate = folder / f"{image.stem}{tag}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _listed(root: Path, layout: Layout, split: str) -> Optional[set[str]]:
    if layout.list_file is None:
        return None
    path = root / layout.list_file.format(split=split, Split=split.capitalize())
    if not path.is_file():
        return set()  # this layout does not apply
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def find_pairs(spec: DatasetSpec, root: str | Path, split: str = "val") -> list[Pair]:
    """Sorted (image, label) pairs of the first layout that has any; DatasetError when none does."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root not found (or not a folder): {root}")
    for layout in spec.layouts:
        names = _listed(root, layout, split)
        pairs = []
        for image in sorted(root.glob(layout.pattern(split))):
            if image.suffix.lower() not in IMAGE_SUFFIXES or image.name.startswith(".") or not image.is_file():
                continue
            if names is not None and image.name not in names and image.stem not in names:
                continue
            label = _label_for(root, image, layout)
            if label is None:
                raise DatasetError(f"no label for {image} (expected {image.stem}.png/.tif in the "
                                   f"{layout.label_dir}/ folder beside {layout.image_dir}/)")
            pairs.append(Pair(image, label, image.relative_to(root).with_suffix("").as_posix()))
        if pairs:
            return pairs
    expected = "; ".join(f"{layout.pattern(split)} ({layout.description})" for layout in spec.layouts)
    raise DatasetError(f"no {spec.title} images for split {split!r} under {root}: expected {expected}")


def decode_colours(rgb: np.ndarray, colours: dict[tuple[int, int, int], int], path: Path) -> np.ndarray:
    """RGB-coded label [3, h, w] -> label values; a colour outside the map is an error."""
    code = (rgb[0].astype(np.int64) << 16) | (rgb[1].astype(np.int64) << 8) | rgb[2].astype(np.int64)
    out = np.full(code.shape, -1, np.int64)
    for (r, g, b), value in colours.items():
        out[code == (r << 16 | g << 8 | b)] = value
    if (out < 0).any():
        bad = np.unique(code[out < 0])[:5]
        shown = ", ".join(f"({c >> 16}, {(c >> 8) & 255}, {c & 255})" for c in bad)
        raise DatasetError(f"{path}: label colours {shown} are not in the ISPRS colour map")
    return out


def _span(values) -> str:
    ordered = sorted(values)
    if len(ordered) > 2 and ordered[-1] - ordered[0] == len(ordered) - 1:
        return f"{ordered[0]}..{ordered[-1]}"
    return ", ".join(map(str, ordered)) or "none"


def map_labels(values: np.ndarray, value_map: dict[int, int], ignore_values: tuple[int, ...],
               path: Path, dataset: str) -> np.ndarray:
    """Label values -> class indices (uint8), ignored values -> IGNORE; unmapped values are an error."""
    values = values.astype(np.int64, copy=False)
    top = int(values.max()) if values.size else 0
    if values.size and values.min() < 0:
        raise DatasetError(f"{path}: negative label values are not in the {dataset} mapping")
    lut = np.full(max(top, *value_map, *ignore_values, 0) + 1, -1, np.int64)
    for value, index in value_map.items():
        lut[value] = index
    for value in ignore_values:  # an ignored value wins over a class
        lut[value] = IGNORE
    out = lut[values]
    if (out < 0).any():
        bad = np.unique(values[out < 0])[:10].tolist()
        raise DatasetError(f"{path}: label values {bad} are not in the {dataset} mapping "
                           f"(classes: {_span(value_map)}, ignored: {_span(ignore_values)})")
    return out.astype(np.uint8)


def read_label(pair: Pair, coding: LabelCoding, dataset: str) -> np.ndarray:
    """A pair's label as class indices 0..K-1 with IGNORE for ignored pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(pair.label) as src:
                if coding.colours is not None and src.count >= 3:
                    values = decode_colours(src.read((1, 2, 3)), coding.colours, pair.label)
                else:
                    values = src.read(1)
    except RasterioIOError as exc:
        raise DatasetError(f"cannot read the label {pair.label}: {exc}") from exc
    return map_labels(values, coding.value_map, coding.ignore_values, pair.label, dataset)

