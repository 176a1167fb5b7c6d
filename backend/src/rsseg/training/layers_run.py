"""Train from layers: a TrainLayersRequest in, a model bundle out. The one path the CLI (`rsseg train
layers`), the worker's `train` record, the dock's Train tab and Processing's "Train from layers" take.

The run folder (`request.out`) holds, while training, `run.json` (the request, for resume) and
`checkpoints/` (the last finished epoch, and the best epoch's weights); when the run finishes they make
way for the bundle (model.json + weights.safetensors, bundles/format.py). A failed or cancelled run
keeps its last finished epoch so it can resume; one that never finished an epoch leaves nothing behind.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import torch
from rasterio.windows import Window

from ..bundles.format import BundleInfo, read_bundle, save_tensors, write_bundle
from ..bundles.index import remember_bundle
from ..datasets.blocks import SpatialSplit, block_split, polygon_split, side_split
from ..datasets.chips import chip_windows
from ..datasets.labels import LabelSpec, LayerLabels, RasterGrid, load_labels
from ..datasets.layer_chips import ChipPlan, balanced_order, chip_weights, plan_chips
from ..datasets.semantic import DatasetError
from ..devices import resolve_device
from ..errors import Cancelled, ModelError, ParameterError, request_rules
from ..jsonfile import read_json_file, write_json_file
from ..models.registry import get_spec
from ..models.segmenter import trained_state
from ..progress import CancelToken, Progress, ProgressCallback, report
from ..protocol.training import (
    BUNDLE,
    CHECKPOINTS,
    OTHER,
    RUN_FILE,
    STALE,
    TRAINABLE_MODELS,
    UNFINISHED,
    TrainLayersRequest,
    TrainLayersResult,
    is_bundle,
    run_folder_state,
)
from ..raster.normalize import Stretch, estimate_stretch
from ..raster.palette import class_rgb
from ..raster.region import Region
from ..raster.source import RasterSource, open_raster
from ..weights.trained_checkpoint import load_checkpoint
from .augment import Augment
from .base import TrainConfig
from .layer_data import ChipReader, band_stats, cache_windows
from .net_setup import build_training_net, takes_host
from .registry import family_of, get_trainer
from .semantic import SemanticTrainer

T = TypeVar("T")
R = TypeVar("R")  # a training request type (TrainLayersRequest, TrainDatasetRequest)
BEST = "best.safetensors"
MIN_EPOCH_SAMPLES = 64  # an epoch draws at least this many chips, so a few labels still make real steps
MAX_BLOCKS = 4  # validation blocks: a K x K grid, K up to this


@dataclass
class LayerData:
    """What the data side decided before training: the reader, the chips and the normalisation."""

    source: RasterSource
    labels: LayerLabels
    stretch: Stretch
    split: SpatialSplit
    train: ChipPlan
    val: ChipPlan
    order: list[Window]  # one epoch of training chips (class-balanced draw)
    reader: ChipReader
    mean: list[float]
    std: list[float]

    def summary(self, request: TrainLayersRequest) -> dict[str, Any]:
        grid = self.labels.grid
        return {"raster": request.raster, "labels": request.labels, "field": request.field,
                "layer": request.labels_layer, "mode": request.mode, "area": request.area,
                "grid": {"width": grid.width, "height": grid.height, "crs": str(grid.crs) if grid.crs else None,
                         "transform": list(grid.transform)[:6]},
                "split": self.split.describe(), "train_chips": len(self.train.windows),
                "val_chips": len(self.val.windows), "chip_draws_per_epoch": len(self.order),
                "class_values": {n: [str(v) for v in vs] for n, vs in zip(self.labels.class_names,
                                                                          self.labels.class_values)},
                "pixels": dict(zip(self.labels.class_names, self.labels.pixel_counts or ())),
                "features": dict(zip(self.labels.class_names, self.labels.features)),
                "stretch": self.stretch.to_dict()}


def _input_count(raster: str, bands: Optional[tuple[int, ...]]) -> int:
    """The model's input bands: those named, else what segmentation maps by default (one band stays one,
    three or more give RGB by colour interpretation or the first three)."""
    if bands:
        return len(bands)
    with open_raster(raster) as dataset:
        return dataset.count if dataset.count < 3 else 3


def _split(request: TrainLayersRequest, grid: RasterGrid) -> SpatialSplit:
    w, h, chip = grid.width, grid.height, request.chip
    stride = request.stride or chip
    if not chip_windows(w, h, chip, stride):
        where = " at the training resolution" if request.resolution else ""
        raise ParameterError(f"{request.raster} is {w}x{h} px{where}, smaller than one chip of {chip} px: choose a "
                             "smaller chip size", subject="chip")
    if request.validation == "none":
        windows = tuple(chip_windows(w, h, chip, stride))
        from shapely.geometry import Polygon

        return SpatialSplit(windows, (), (), chip, stride, 0, Polygon(), "no validation")
    if request.validation == "layer":
        return polygon_split(grid, request.validation_layer, chip, stride)
    if request.validation == "blocks":
        k = min(MAX_BLOCKS, w // stride, h // stride)
        if k < 2:
            raise ParameterError(f"{request.raster} holds too few chips of {chip} px for validation blocks: choose a "
                                 "side of the raster or a validation layer, or a smaller chip size",
                                 subject="validation")
        return block_split(w, h, chip, stride, blocks=k, val_fraction=request.validation_fraction,
                           seed=request.seed)
    return side_split(w, h, chip, stride, fraction=request.validation_fraction, side=request.validation)


def label_spec(request: TrainLayersRequest) -> LabelSpec:
    classes = None if request.classes is None else dict(request.classes)
    return LabelSpec(request.labels, request.field, request.labels_layer, classes, request.mode, request.area,
                     request.area_layer)


def export_layers(request: TrainLayersRequest, cancel: Optional[CancelToken] = None) -> dict[str, Any]:
    """Write the request's chips (training and validation, as training would split them) to `request.out`
    for other tools, instead of training: see datasets/export.py. Returns the manifest."""
    from ..datasets.export import export_chips

    with request_rules():
        request.validate()
    if request.resolution is not None:
        raise ParameterError("chips are exported on the raster's own grid: leave out the resolution",
                             subject="resolution")
    labels = load_labels(request.raster, label_spec(request))
    return export_chips(request.raster, labels, _split(request, labels.grid), request.out, request.min_labelled,
                        request.bands, cancel)


def prepare(request: TrainLayersRequest, source: RasterSource) -> LayerData:
    """Labels, split, chips and normalisation; every problem with the data raises here, before training."""
    grid = RasterGrid(request.raster, source.crs, source.transform, source.width, source.height,
                      len(source.bands))
    labels = load_labels(grid, label_spec(request))
    stretch = estimate_stretch(source, Region(Window(0, 0, grid.width, grid.height)), request.percentiles)
    split = _split(request, grid)
    train = plan_chips(labels, split.train, request.min_labelled)
    if not train.windows:
        raise DatasetError(f"no training chip of {request.raster} has at least {request.min_labelled:.0%} labelled "
                           f"pixels ({split.describe()}): lower the minimum labelled fraction or label more")
    val = plan_chips(labels, split.val, 1.0 / (request.chip * request.chip))  # any labelled pixel counts
    if split.val and not val.windows:
        raise DatasetError(f"the validation part ({split.how}) holds no labelled pixel: choose another side, a "
                           "validation layer over labelled ground, or no validation")
    count = max(len(train.windows), MIN_EPOCH_SAMPLES, request.batch_size)
    if request.balance:
        picks = balanced_order(chip_weights(train.counts, 0.5), count, request.seed)
    else:
        picks = [i % len(train.windows) for i in range(count)]
    reader = ChipReader(source, stretch, labels, cache_windows(len(source.bands), request.chip))
    mean, std = band_stats(reader, train.windows)
    return LayerData(source, labels, stretch, split, train, val, [train.windows[i] for i in picks], reader,
                     mean, std)


# -- the run folder --------------------------------------------------------------------------------------
def _score(entry: dict[str, Any]) -> tuple[float, int]:
    """Orders epochs by validation mIoU, the earlier first on a tie."""
    miou = entry.get("val_miou")
    return (-1.0 if miou is None else float(miou), -int(entry["epoch"]))


def _last_checkpoint(out: Path) -> Optional[Path]:
    found = sorted((out / CHECKPOINTS).glob("step-*.json"))
    return found[-1] if found else None


def _check_folder(request: TrainLayersRequest, out: Path) -> TrainLayersRequest:
    return check_run_folder(request, out, TrainLayersRequest.from_dict)


def check_run_folder(request: R, out: Path, parse: Callable[[dict], R]) -> R:
    """The request to run: a new run needs a new or empty folder; a resumed one continues with the settings
    it was started with (`parse` reads them from run.json; only the device may change)."""
    state = run_folder_state(out)
    if request.resume:
        saved = read_json_file(out / RUN_FILE)
        if state != UNFINISHED or not saved:
            raise ParameterError(f"{out} holds no unfinished run to resume (no finished epoch was saved there): "
                                 "start a new run", subject="out")
        try:
            stored = parse(saved)
        except ValueError as exc:
            raise ParameterError(f"{out / RUN_FILE} is damaged ({exc}): start a new run") from None
        return replace(stored, device=request.device, resume=True)
    if state == BUNDLE:
        raise ParameterError(f"{out} already holds a trained model: choose another folder or name", subject="out")
    if state == UNFINISHED:
        raise ParameterError(f"{out} holds an unfinished run: resume it, or choose another folder or name",
                             subject="out")
    if state == OTHER:
        raise ParameterError(f"{out} is not an empty folder: choose a new folder for the model", subject="out")
    if state == STALE:  # a run killed before its first epoch finished: only our own files
        _remove_run_files(out)
    return request


def _remove_run_files(out: Path) -> None:
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    (out / RUN_FILE).unlink(missing_ok=True)


def _save_best(out: Path, state: dict[str, torch.Tensor]) -> None:
    save_tensors(out / CHECKPOINTS / BEST, state)


def _prune(out: Path, keep: Path) -> None:
    """Keep only the newest epoch's checkpoint (and the best weights)."""
    for json_path in (out / CHECKPOINTS).glob("step-*.json"):
        if json_path != keep:
            for path in (json_path, json_path.with_suffix(".safetensors")):
                path.unlink(missing_ok=True)


# -- the run ---------------------------------------------------------------------------------------------
def train_layers(request: TrainLayersRequest, progress: Optional[ProgressCallback] = None,
                 cancel: Optional[CancelToken] = None, bar: bool = False) -> TrainLayersResult:
    """Train and write the bundle; `bar` draws tqdm bars on stderr (the CLI)."""
    with request_rules():
        request.validate()
    out = Path(request.out).expanduser().absolute()
    request = _check_folder(request, out)
    return in_run_folder(out, lambda: _run(request, out, progress, cancel, bar))


def in_run_folder(out: Path, run: Callable[[], T], resume: str = "resume the run") -> T:
    """`run()`, which trains into the run folder `out`: if it fails before an epoch finished it leaves no trace
    (a folder it created is removed); if it is cancelled later, the error says the last epoch is kept."""
    created = not out.exists()
    try:
        return run()
    except BaseException as exc:
        if _last_checkpoint(out) is None:  # nothing to resume: leave no trace
            _remove_run_files(out)
            if created and out.is_dir() and not any(out.iterdir()):
                out.rmdir()
        elif isinstance(exc, Cancelled):
            raise Cancelled(f"training cancelled; the last finished epoch is kept in {out}: {resume} to "
                            "continue, or delete the folder") from None
        raise


def _spec_and_trainer(model_id: str) -> tuple[Any, type[SemanticTrainer]]:
    spec = get_spec(model_id)
    if spec.task != "trainable":
        raise ParameterError(f"{model_id!r} is not a model family you can train on your layers; choose one of "
                             f"{', '.join(TRAINABLE_MODELS)}", subject="model")
    return spec, get_trainer(family_of(spec.builder))


def resolve_host(request: TrainLayersRequest, spec: Any) -> TrainLayersRequest:
    """The request with its host as the absolute path of a bundle folder (`~` expanded, a model.json taken as
    its folder). A host is refused for an entry that takes none and required by one that does (its registry
    config names the "host_family": the family of the builder the host bundle must have)."""
    if not request.host:
        if takes_host(spec):
            raise ParameterError(f"{spec.id} fuses into a {spec.config['host_family']} model you trained before: "
                                 "choose that model's folder as the host", subject="host")
        return request
    if not takes_host(spec):
        raise ParameterError(f"{spec.id} trains on its own and takes no host model: leave the host empty",
                             subject="host")
    path = Path(request.host.strip()).expanduser().absolute()
    if not is_bundle(path):
        what = "does not exist" if not path.exists() else "is not a trained model folder (it has no model.json)"
        raise ParameterError(f"the host {path} {what}: choose the folder of a {spec.config['host_family']} "
                             "model you trained", subject="host")
    folder = path.parent if path.is_file() else path
    try:
        builder = read_bundle(folder).builder
    except ModelError as exc:
        raise ParameterError(f"the host {folder} cannot be read ({exc})", subject="host") from None
    family = spec.config["host_family"]
    if family_of(builder) != family:
        raise ParameterError(f"the host {folder} is a {builder} model; {spec.id} fuses into a {family} model: "
                             f"choose the folder of a {family} model you trained", subject="host")
    return replace(request, host=str(folder))


def _run(request: TrainLayersRequest, out: Path, progress: Optional[ProgressCallback],
         cancel: Optional[CancelToken], bar: bool) -> TrainLayersResult:
    started = time.perf_counter()
    spec, trainer_cls = _spec_and_trainer(request.model)
    request = resolve_host(request, spec)  # a resumed run checks its stored host again
    device = resolve_device(request.device)
    report(progress, "prepare", 0, 2)
    n_inputs = _input_count(request.raster, request.bands)
    with RasterSource(request.raster, request.bands, n_inputs, request.resolution, request.nodata) as source:
        data = prepare(request, source)
        if cancel is not None:
            cancel.check()
        report(progress, "prepare", 1, 2)
        out.mkdir(parents=True, exist_ok=True)
        write_json_file(out / RUN_FILE, request.to_dict())
        (out / CHECKPOINTS).mkdir(exist_ok=True)
        torch.manual_seed(request.seed)
        built = build_training_net(spec, n_inputs, data.labels.class_names, data.mean, data.std, device,
                                   request.host)
        net, notes = built.net, built.notes
        data.mean, data.std = built.mean, built.std
        per_epoch = len(data.order) // request.batch_size
        total = per_epoch * request.epochs
        config = TrainConfig(steps=total, batch_size=request.batch_size, lr=request.lr or trainer_cls.default_lr,
                             weight_decay=trainer_cls.default_weight_decay,
                             warmup_steps=min(per_epoch, max(1, total // 20)), min_lr_ratio=0.01, grad_clip=1.0,
                             seed=request.seed, device=device, progress=bar, eval_batch_size=request.batch_size)
        trainer = trainer_cls(net, spec.id, data.order, config, data.reader, data.mean, data.std,
                              data.labels.class_names, val_data=data.val.windows,
                              augmentation=Augment() if request.augment else None, extra={"epochs_log": []})
        log: list[dict[str, Any]] = []
        if request.resume:
            checkpoint = load_checkpoint(_last_checkpoint(out))
            trainer.resume(checkpoint)
            log = list(checkpoint.record.get("epochs_log") or [])
        report(progress, "prepare", 2, 2)
        stopped = _epochs(request, out, trainer, per_epoch, log, progress, cancel)
        best = max(log, key=_score) if data.val.windows else log[-1]
        state = _best_state(out, trainer, data)
        info = BundleInfo(
            name=request.name or out.name, builder=spec.builder, config=dict(getattr(net, "config", spec.config)),
            classes=list(data.labels.class_names),
            colours=[list(rgb) for rgb in class_rgb(data.labels.class_names)],
            bands=list(source.bands), mean=data.mean, std=data.std, percentiles=list(request.percentiles),
            resolution=request.resolution, chip=request.chip,
            training={**data.summary(request), "model": spec.id, "epochs": request.epochs,
                      "epochs_run": log[-1]["epoch"], "best_epoch": best["epoch"], "stopped": stopped,
                      "host": request.host, "lr": config.lr, "batch_size": request.batch_size,
                      "augment": request.augment,
                      "seconds": round(time.perf_counter() - started, 1), "device": device, "history": log},
            metrics=dict(best.get("metrics") or {}), created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    write_bundle(out, info, state)
    _remove_run_files(out)
    model_id = remember_bundle(out)
    notes = [data.split.describe(), *notes]
    if stopped == "early":
        notes.append(f"stopped early after epoch {log[-1]['epoch']}: no better validation mIoU for "
                     f"{request.patience} epochs")
    return TrainLayersResult(model_id, info.name, info.classes, log[-1]["epoch"], best["epoch"], stopped,
                             round(time.perf_counter() - started, 2), len(data.train.windows),
                             len(data.val.windows), info.metrics, notes)


def _best_state(out: Path, trainer: SemanticTrainer, data: LayerData) -> dict[str, torch.Tensor]:
    best = out / CHECKPOINTS / BEST
    if data.val.windows and best.is_file():
        from safetensors.torch import load_file

        return load_file(str(best))
    return trained_state(trainer.model)


def _epochs(request: TrainLayersRequest, out: Path, trainer: SemanticTrainer, per_epoch: int,
            log: list[dict[str, Any]], progress: Optional[ProgressCallback], cancel: Optional[CancelToken]) -> str:
    """Run the remaining epochs, validating, checkpointing and keeping the best weights after each;
    returns "early" or "epochs"."""
    epochs = request.epochs
    best = max((_score(e)[0] for e in log), default=-1.0)

    def on_step(event: Progress) -> None:
        epoch = math.ceil(event.done / per_epoch)
        report(progress, "train", epoch - 1, epochs, {"epoch": epoch, "step": event.done, "steps": event.total,
                                                      "loss": trainer.last_loss})

    for epoch in range(len(log) + 1, epochs + 1):
        losses = trainer.train(until=epoch * per_epoch, cancel=cancel, progress=on_step).losses
        metrics = trainer.metrics if trainer.val_data else {}
        miou = metrics.get("miou")
        entry = {"epoch": epoch, "loss": sum(losses) / max(len(losses), 1), "val_miou": miou,
                 "metrics": {k: v for k, v in metrics.items() if k != "step"}}
        log.append(entry)
        if miou is not None and miou > best:
            best = miou
            _save_best(out, trainer.trainable_state())
        trainer.extra["epochs_log"] = log
        saved = trainer.save(out / CHECKPOINTS / f"step-{trainer.step:07d}")
        _prune(out, saved)
        best_epoch = max(log, key=_score)["epoch"]
        report(progress, "train", epoch, epochs, {"epoch": epoch, "loss": entry["loss"], "val_miou": miou,
                                                  "iou": metrics.get("iou") or {}, "best_miou": best if best >= 0
                                                  else None, "best_epoch": best_epoch})
        if request.patience and trainer.val_data and epoch - best_epoch >= request.patience:
            return "early"
    return "epochs"
