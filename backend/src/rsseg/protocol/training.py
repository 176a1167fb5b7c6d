"""The train-from-layers contract: what the dock's Train tab, Processing's "Train from layers", the CLI
and the worker's `train` record fill in (standard library only, so the plugin shares it).

`TrainLayersRequest.validate()` checks what needs no file; what needs the raster and the layers (a
field, an overlap, a reprojection, pixels per class) is checked by the backend before training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Union

from .contracts import RequestError, check_device, check_percentiles, describe_value, from_fields, is_finite

# A run folder (TrainLayersRequest.out): while training it holds RUN_FILE (the request) and CHECKPOINTS (the
# last finished epoch, step-N.json and its tensors); a finished run replaces them by the bundle (BUNDLE_FILE
# beside its weights). The backend writes them, the plugin reads what a chosen folder holds.
BUNDLE_FILE = "model.json"
RUN_FILE = "run.json"
CHECKPOINTS = "checkpoints"
NEW, STALE, UNFINISHED, BUNDLE, OTHER = "new", "stale", "unfinished", "bundle", "other"  # run_folder_state
LABEL_MODES = ("area", "sparse")  # "area": unlabelled pixels in the labelled area are background
VALIDATIONS = ("blocks", "east", "west", "north", "south", "layer", "none")  # spatial; never random chips
TRAINABLE_MODELS = {  # family entries a user picks (registry ids, task "trainable") -> what they are
    "unetformer-r18": "UNetFormer with a ResNet-18 encoder, trained whole: the choice for many labels",
    "sam-head-litemedsam": "a light decoder on LiteMedSAM's frozen image encoder: the choice for few labels",
    "rfm-seg-r18-rn50": "RemoteCLIP (remote-sensing CLIP) fused into a UNetFormer you trained before, which stays "
                        "frozen; only small connectors train",
    "rfm-seg-r18-vit-b-32": "the same fusion with RemoteCLIP ViT-B/32 as the vision-language branch",
    "sgseg-vit-b-16": "open vocabulary: CLIP ViT-B/16 tuned on your labels, then segments any class names, also "
                      "ones it never saw",
    "sgseg-convnext-l": "the same open-vocabulary model on CLIP ConvNeXt-L (larger, slower)",
}
DEFAULT_TRAINABLE = "unetformer-r18"
# Entries that fuse into a model the user trained before (TrainLayersRequest.host: its bundle folder) -> the
# builder that host bundle must have (its manifest's "builder"). The registry says the same (config
# "host_family"); the plugin shows its "Host model" field for these and lists the bundles of that builder.
HOST_FAMILIES = {model: "unetformer" for model in ("rfm-seg-r18-rn50", "rfm-seg-r18-rn50-tiny", "rfm-seg-r18-vit-b-32",
                                                  "rfm-seg-r18-vit-b-32-tiny")}
HOST_MODELS = tuple(HOST_FAMILIES)


def is_bundle(path: Union[str, Path]) -> bool:
    """Whether `path` names a bundle: its folder, or the manifest in it."""
    p = Path(path).expanduser()
    return (p / BUNDLE_FILE).is_file() if p.is_dir() else p.name == BUNDLE_FILE and p.is_file()


def run_folder_state(folder: Union[str, Path]) -> str:
    """What a run folder holds: NEW (missing or empty), STALE (only the files of a run stopped before its first
    epoch finished, removed by the next run), UNFINISHED (a finished epoch to resume), BUNDLE (a finished model)
    or OTHER (a file, or someone's files)."""
    path = Path(folder).expanduser()
    if not path.exists():
        return NEW
    if not path.is_dir():
        return OTHER
    if (path / BUNDLE_FILE).is_file():
        return BUNDLE
    if (path / RUN_FILE).is_file() and any((path / CHECKPOINTS).glob("step-*.json")):
        return UNFINISHED
    try:
        names = {p.name for p in path.iterdir()}
    except OSError:
        return OTHER
    return NEW if not names else STALE if names <= {RUN_FILE, CHECKPOINTS} else OTHER


@dataclass(frozen=True)
class TrainLayersRequest:
    """Train a segmentation model on a raster and a polygon label layer; the result is a bundle in `out`."""

    raster: str
    labels: str
    field: str  # the class field, any name
    out: str  # the bundle folder (created; a run there is resumed with `resume`)
    model: str = DEFAULT_TRAINABLE  # a trainable registry entry
    labels_layer: Optional[str] = None  # a layer inside a multi-layer source
    classes: Optional[dict[str, Optional[str]]] = None  # field value (as text) -> class name; None leaves it out
    mode: str = "area"
    area: Optional[str] = None  # mode "area": the labelled-area polygons (None: the whole raster)
    area_layer: Optional[str] = None
    validation: str = "blocks"  # spatial blocks, a side of the raster, a user's layer, or none
    validation_fraction: float = 0.2  # of the blocks, or of the raster on that side
    validation_layer: Optional[str] = None  # validation "layer": polygons whose chips are held out
    name: Optional[str] = None  # shown under "My models" (default: the folder's name)
    epochs: int = 20
    chip: int = 256
    stride: Optional[int] = None  # default: the chip size (no overlap)
    batch_size: int = 8
    lr: Optional[float] = None  # default: the family's
    min_labelled: float = 0.05  # chips with fewer labelled pixels are skipped
    balance: bool = True  # draw chips by class-balancing weights
    augment: bool = True  # flips, rot90, scale, colour jitter, band dropout
    patience: int = 5  # stop after this many epochs without a better validation mIoU (0: never)
    bands: Optional[tuple[int, ...]] = None  # 1-based source bands (default: as segmentation picks them)
    resolution: Optional[float] = None  # metres per pixel to train (and later segment) at
    nodata: Optional[float] = None
    percentiles: tuple[float, float] = (2.0, 98.0)
    device: str = "auto"
    host: Optional[str] = None  # HOST_MODELS: the bundle folder (or model.json) of the trained model they fuse into
    resume: bool = False  # continue the run in `out` from its last checkpoint
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainLayersRequest":
        if not isinstance(data, dict):
            raise ValueError(f"a train request must be an object, got {describe_value(data)}")
        return from_fields(cls, data)

    def validate(self) -> "TrainLayersRequest":
        """The rules that need no file; raises RequestError naming the field."""
        for name in ("raster", "labels", "out"):
            if not str(getattr(self, name)).strip():
                raise RequestError(f"choose the {'label layer' if name == 'labels' else name} to train with", name)
        if not self.field.strip():
            raise RequestError("choose the class field of the label layer", "field")
        if self.mode not in LABEL_MODES:
            raise RequestError(f"label mode must be one of {', '.join(LABEL_MODES)}, got {self.mode!r}", "mode")
        if self.mode == "sparse" and self.area:
            raise RequestError("a labelled-area layer goes with mode 'area'; in mode 'sparse' only pixels inside "
                               "label polygons count", "area")
        if self.validation not in VALIDATIONS:
            raise RequestError(f"validation must be one of {', '.join(VALIDATIONS)}, got {self.validation!r}",
                               "validation")
        if (self.validation == "layer") != bool(self.validation_layer):
            raise RequestError("validation 'layer' needs a validation layer, and only it takes one",
                               "validation_layer")
        if not 0.0 < self.validation_fraction < 1.0:
            raise RequestError(f"validation fraction must be between 0 and 1, got {self.validation_fraction}",
                               "validation_fraction")
        checks = (("epochs", self.epochs >= 1, "at least 1"), ("chip", 32 <= self.chip <= 2048, "32 to 2048 px"),
                  ("batch_size", self.batch_size >= 1, "at least 1"), ("patience", self.patience >= 0, "0 or more"),
                  ("stride", self.stride is None or 1 <= self.stride <= self.chip, "1 px up to the chip size"),
                  ("min_labelled", 0.0 <= self.min_labelled <= 1.0, "a fraction from 0 to 1"),
                  ("lr", self.lr is None or (is_finite(self.lr) and 0 < self.lr < 1), "between 0 and 1"),
                  ("resolution", self.resolution is None or (is_finite(self.resolution) and self.resolution > 0),
                   "a positive number of metres per pixel"))
        for name, ok, expected in checks:
            if not ok:
                raise RequestError(f"{name.replace('_', ' ')} must be {expected}, got {getattr(self, name)}", name)
        check_percentiles(self.percentiles)
        if self.bands is not None and (not self.bands or min(self.bands) < 1):
            raise RequestError(f"bands are 1-based band numbers, got {self.bands}", "bands")
        check_device(self.device)
        if self.host is not None and (not isinstance(self.host, str) or not self.host.strip()):
            raise RequestError("the host model is empty: choose the folder of the trained model to fuse into, or "
                               "leave the host out", "host")
        return self


@dataclass
class TrainLayersResult:
    """What a finished run reports: the bundle (its model id is what Segment takes) and how it did."""

    model: str  # the bundle's model id (its folder's absolute path)
    name: str
    classes: list[str]
    epochs: int  # epochs run
    best_epoch: int  # the epoch whose weights the bundle holds (0: no validation, the last)
    stopped: str  # "epochs" (all run) or "early" (no better validation mIoU for `patience` epochs)
    seconds: float
    train_chips: int
    val_chips: int
    metrics: dict[str, Any]  # the bundle's validation scores: miou, iou per class, pixel accuracy
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
