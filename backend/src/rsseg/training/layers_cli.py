"""`rsseg train layers`: train a segmentation model on a raster and a polygon label layer
(docs/training-from-layers.md).

cli/main.py registers it; the work is training/layers_run.py, shared with the worker and the plugin.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Optional

from ..errors import ParameterError
from ..protocol.contracts import DEVICE_CHOICES
from ..protocol.training import DEFAULT_TRAINABLE, HOST_MODELS, TRAINABLE_MODELS, VALIDATIONS, TrainLayersRequest

KEYWORDS = tuple(v for v in VALIDATIONS if v != "layer")


def add_train_layers_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train-layers", prog="rsseg train layers",
                       help="train a segmentation model on a raster and a polygon label layer (also spelt "
                            "`rsseg train layers`)",
                       description="Train on your own labels: polygons with a class field of any name, in any CRS. "
                                   "Writes a model bundle usable as --model of `rsseg segment` (see "
                                   "docs/training-from-layers.md).")
    p.add_argument("--raster", help="the image (any raster GDAL reads)")
    p.add_argument("--labels", help="the label polygons (any OGR source, any CRS)")
    p.add_argument("--labels-layer", help="a layer inside a multi-layer label source")
    p.add_argument("--field", help="the class field (any name; strings or integers)")
    p.add_argument("--classes", help='value -> class name table, e.g. "1=building; 2=road; 9=" (an empty name '
                                     "leaves the value out; default: every value named by itself)")
    labelled = p.add_mutually_exclusive_group()
    labelled.add_argument("--area", help="labelled-area polygons: inside, unlabelled pixels are background "
                                         "(default: the whole raster is labelled area)")
    labelled.add_argument("--sparse", action="store_true",
                          help="only pixels inside label polygons count (scattered examples)")
    p.add_argument("--area-layer", help="a layer inside a multi-layer area source")
    p.add_argument("--validation", default="blocks",
                   help=f"spatial validation: {', '.join(KEYWORDS)}, or a polygon layer whose chips are held out "
                        "(default blocks)")
    p.add_argument("--validation-fraction", type=float, default=0.2,
                   help="share of blocks, or of the raster on the chosen side (default 0.2)")
    p.add_argument("--model", default=DEFAULT_TRAINABLE,
                   help="; ".join(f"{k}: {v}" for k, v in TRAINABLE_MODELS.items()) + f" (default {DEFAULT_TRAINABLE})")
    p.add_argument("--host", metavar="BUNDLE",
                   help=f"for {', '.join(m for m in HOST_MODELS if not m.endswith('-tiny'))}: the folder (or its "
                        "model.json) of the UNetFormer you trained before (`rsseg train layers --model "
                        "unetformer-r18`), which the new model fuses into and keeps frozen; the other models take "
                        "none")
    p.add_argument("--out", help="the bundle folder to create (a new or empty folder)")
    p.add_argument("--name", help="the model's name in model lists (default: the folder's name)")
    p.add_argument("--export", metavar="DIR", help="write the chips (images, masks with a colour table, "
                                                   "manifest.json) to DIR for other tools instead of training")
    p.add_argument("--resume", metavar="RUN", help="continue the unfinished run in RUN with its own settings")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--chip", type=int, default=256, help="chip size in pixels (default 256)")
    p.add_argument("--stride", type=int, help="chip stride (default: the chip size)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, help="learning rate (default: the family's)")
    p.add_argument("--min-labelled", type=float, default=0.05, help="skip chips with fewer labelled pixels")
    p.add_argument("--patience", type=int, default=5, help="stop after N epochs without a better validation "
                                                           "mIoU (0: never)")
    p.add_argument("--no-balance", action="store_true", help="draw chips uniformly, not by class balance")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--bands", type=int, nargs="+", help="1-based source bands (default: as segmentation maps them)")
    p.add_argument("--resolution", type=float, help="train (and later segment) at this many metres per pixel")
    p.add_argument("--nodata", type=float, help="a source value that is nodata in every band")
    p.add_argument("--device", default="auto", help=DEVICE_CHOICES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def class_table(text: Optional[str]) -> Optional[dict[str, Optional[str]]]:
    """'1=building; 2=road; 9=' -> {"1": "building", "2": "road", "9": None}."""
    if not text or not text.strip():
        return None
    table: dict[str, Optional[str]] = {}
    for item in text.replace("\n", ";").split(";"):
        if not item.strip():
            continue
        value, sep, name = item.partition("=")
        if not sep or not value.strip():
            raise ParameterError(f"--classes takes value=name pairs separated by ';', got {item.strip()!r}")
        table[value.strip()] = name.strip() or None
    return table


def request_from_args(args) -> TrainLayersRequest:
    if args.resume:
        if args.host:
            raise ParameterError("a resumed run keeps the host it started with: leave out --host")
        return TrainLayersRequest(raster="-", labels="-", field="-", out=args.resume, device=args.device, resume=True)
    if args.export:
        args.out = args.export
    missing = [f"--{n}" for n in ("raster", "labels", "field", "out") if not getattr(args, n)]
    if missing:
        raise ParameterError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} needed to train "
                             "(or --resume RUN to continue a run)")
    keyword = args.validation in KEYWORDS
    if not keyword and not os.path.exists(args.validation):
        raise ParameterError(f"--validation takes {', '.join(KEYWORDS)} or a polygon layer; {args.validation!r} is "
                             "neither (no such file)")
    return TrainLayersRequest(
        raster=args.raster, labels=args.labels, field=args.field, out=args.out, model=args.model,
        labels_layer=args.labels_layer, classes=class_table(args.classes), mode="sparse" if args.sparse else "area",
        area=args.area, area_layer=args.area_layer, validation=args.validation if keyword else "layer",
        validation_fraction=args.validation_fraction, validation_layer=None if keyword else args.validation,
        name=args.name, epochs=args.epochs, chip=args.chip, stride=args.stride, batch_size=args.batch_size,
        lr=args.lr, min_labelled=args.min_labelled, balance=not args.no_balance, augment=not args.no_augment,
        patience=args.patience, bands=tuple(args.bands) if args.bands else None, resolution=args.resolution,
        nodata=args.nodata, device=args.device, host=args.host, seed=args.seed)


def epoch_line(detail: dict[str, Any], epochs: int) -> str:
    miou = detail.get("val_miou")
    line = f"epoch {detail['epoch']}/{epochs}  loss {detail['loss']:.4f}"
    if miou is not None:
        per_class = ", ".join(f"{n} {v:.3f}" for n, v in (detail.get("iou") or {}).items() if v is not None)
        line += f"  val mIoU {miou:.4f} ({per_class})  best {detail['best_miou']:.4f} @ epoch {detail['best_epoch']}"
    return line


def summary(result) -> str:
    lines = summary_lines(result, f"{result.train_chips} training / {result.val_chips} validation chips")
    lines.append(f"Segment with it: rsseg segment RASTER --model {result.model}")
    return "\n".join(lines)


def summary_lines(result, data: str) -> list[str]:
    """What a training verb prints of its result: model, classes, epochs with `data` (what it trained on),
    validation scores and notes."""
    lines = [f"model     {result.model}",
             f"classes   {', '.join(result.classes)}",
             f"epochs    {result.epochs} ({'stopped early' if result.stopped == 'early' else 'all run'}; weights of "
             f"epoch {result.best_epoch or result.epochs}), {data}, {result.seconds:.0f} s"]
    metrics = result.metrics
    if metrics.get("miou") is not None:
        lines.append(f"val mIoU  {metrics['miou']:.4f}, overall accuracy {metrics['oa']:.4f}")
        lines += [f"  {n:30s} IoU {'-' if v is None else f'{v:.4f}'}" for n, v in metrics.get("iou", {}).items()]
    lines += [f"note      {n}" for n in result.notes]
    return lines


def run_training_verb(args, train, request, summarise) -> int:
    """The body both training verbs share: epoch lines on stderr, SIGTERM/SIGHUP as cancel (exit 143), and the
    result as JSON or `summarise(result)`. `train(request, progress, cancel, bar)` runs it."""
    from ..errors import Cancelled
    from ..progress import CancelToken, Progress
    from ..signals import EXIT_TERMINATED, signal_name, stop_on_signals

    chatty = not args.quiet and not args.json

    def progress(event: Progress) -> None:
        if chatty and event.stage == "train" and "val_miou" in event.detail:
            print(epoch_line(event.detail, event.total), file=sys.stderr, flush=True)

    cancel = CancelToken()
    with stop_on_signals(cancel.cancel) as received:
        try:
            result = train(request, progress, cancel, bar=chatty)
        except Cancelled as exc:
            if not received:
                raise
            print(f"rsseg: stopped by {signal_name(received[0])}: {exc}", file=sys.stderr)
            return EXIT_TERMINATED
    print(json.dumps(result.to_dict(), indent=2) if args.json else summarise(result))
    return 0


def cmd_train_layers(args) -> int:
    from .layers_run import export_layers, train_layers

    if args.export:
        manifest = export_layers(request_from_args(args))
        splits = [c["split"] for c in manifest["chips"]]
        print(json.dumps(manifest, indent=2) if args.json else
              f"{splits.count('train')} training and {splits.count('val')} validation chips of {manifest['chip']} px "
              f"({', '.join(manifest['classes'])}) in {args.export}; see its manifest.json")
        return 0
    return run_training_verb(args, train_layers, request_from_args(args), summary)
