"""`rsseg train semantic`: train a semantic segmenter on a benchmark dataset layout (Vaihingen, Potsdam,
LoveDA, OpenEarthMap, a folder), writing the same kind of bundle as `rsseg train layers`
(docs/training-from-layers.md, "Training on a benchmark dataset").

cli/main.py registers it (argv "train semantic" is the verb "train-semantic"); the work is
training/dataset_run.py. Torch-free at import, as `rsseg --help` imports every parser.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..datasets.layout_names import DATASET_CHOICES
from ..errors import ParameterError
from ..protocol.contracts import DEVICE_CHOICES
from ..protocol.training import DEFAULT_TRAINABLE, TRAINABLE_MODELS


def add_train_semantic_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train-semantic", prog="rsseg train semantic",
                       help="train a segmentation model on a benchmark dataset (Vaihingen, Potsdam, LoveDA, "
                            "OpenEarthMap, a folder; also spelt `rsseg train semantic`)",
                       description="Train on the (image, label) pairs of a dataset layout that `rsseg eval` reads. "
                                   "Writes a model bundle usable as --model of `rsseg segment` and `rsseg eval` "
                                   "(see docs/training-from-layers.md, \"Training on a benchmark dataset\").")
    p.add_argument("--dataset", choices=DATASET_CHOICES, help="dataset layout (as `rsseg eval --dataset`)")
    p.add_argument("root", nargs="?", help="the dataset's root folder")
    p.add_argument("--model", default=DEFAULT_TRAINABLE,
                   help="; ".join(f"{k}: {v}" for k, v in TRAINABLE_MODELS.items()) + f" (default {DEFAULT_TRAINABLE})")
    p.add_argument("--out", help="the bundle folder to create (a new or empty folder)")
    p.add_argument("--name", help="the model's name in model lists (default: the folder's name)")
    p.add_argument("--resume", metavar="RUN", help="continue the unfinished run in RUN with its own settings")
    p.add_argument("--split", default="train", help="the training split (default train)")
    p.add_argument("--val-split", default="val", help="the validation split, or 'none' (default val)")
    p.add_argument("--classes-file", help="class-name file, one class per line (required for folder; default: the "
                                          "dataset's file, as `rsseg eval` uses)")
    p.add_argument("--ignore-index", type=int, help="folder layout: the label value that does not count (default 255)")
    p.add_argument("--reduce-zero-label", action="store_true",
                   help="folder layout: label 0 does not count and value i is class line i")
    p.add_argument("--schedule", choices=("default", "public"), default="default",
                   help="default: 20 epochs, batch 8, crop 512; public: GeoSeg's per-dataset schedule (vaihingen "
                        "105 epochs / batch 8 / crop 512, potsdam 45 / 8 / 768, loveda 30 / 16 / 512); "
                        "--epochs, --batch-size and --crop override either")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--crop", type=int, help="training crop side in pixels, a multiple of 32")
    p.add_argument("--crops-per-image", type=int,
                   help="random crops per training image per epoch (default: enough to cover each image about once)")
    p.add_argument("--lr", type=float, help="learning rate (default: the family's)")
    p.add_argument("--limit", type=int, help="use only the first N images of each split")
    p.add_argument("--patience", type=int, default=0,
                   help="stop after N epochs without a better validation mIoU (default 0: never)")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--percentile-stretch", action="store_true",
                   help="stretch each image by its 2-98%% percentiles (default: 8-bit values 0..255 as they are, as "
                        "`rsseg eval` does); the bundle segments with the same scaling")
    p.add_argument("--host", metavar="BUNDLE", help="the trained model a fusion family fuses into")
    p.add_argument("--device", default="auto", help=DEVICE_CHOICES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def request_from_args(args) -> Any:
    from .dataset_run import TrainDatasetRequest

    if args.resume:
        return TrainDatasetRequest(dataset="-", root="-", out=args.resume, device=args.device, resume=True)
    missing = [name for name, value in (("--dataset", args.dataset), ("ROOT", args.root), ("--out", args.out))
               if not value]
    if missing:
        raise ParameterError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} needed to train (or "
                             "--resume RUN to continue a run)")
    return TrainDatasetRequest(
        dataset=args.dataset, root=args.root, out=args.out, model=args.model, split=args.split,
        val_split=args.val_split, classes_file=args.classes_file, ignore_index=args.ignore_index,
        reduce_zero_label=args.reduce_zero_label, schedule=args.schedule, epochs=args.epochs,
        batch_size=args.batch_size, crop=args.crop, crops_per_image=args.crops_per_image, lr=args.lr,
        limit=args.limit, patience=args.patience, augment=not args.no_augment,
        percentile_stretch=args.percentile_stretch, host=args.host, name=args.name, device=args.device,
        seed=args.seed)


def summary(result) -> str:
    from .layers_cli import summary_lines

    lines = summary_lines(result, f"{result.train_images} training images ({result.crops_per_epoch} crops an epoch) / "
                                  f"{result.val_images} validation images ({result.val_tiles} tiles)")
    lines.append(f"Score it:        rsseg eval --dataset {result.dataset} {result.root} --model {result.model}")
    lines.append(f"Segment with it: rsseg segment RASTER --model {result.model}")
    return "\n".join(lines)


def cmd_train_semantic(args) -> int:
    from .dataset_run import train_dataset
    from .layers_cli import run_training_verb

    return run_training_verb(args, train_dataset, request_from_args(args), summary)
