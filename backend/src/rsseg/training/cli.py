"""The `rsseg train` and `rsseg eval-refer` verbs (cli/main.py only registers them).

`rsseg train` trains with the trainer registered for the model's family (registry.py);
`rsseg eval-refer` scores RSRefSeg models. Data sources (rsseg.datasets.referring): `synthetic`
(the seeded generator: train scenes from seed 0, val from seed 1, test from seed 2, so the splits
never share a scene), `folder` (the plain layout), `rrsisd` (the RMSIN refer-format release),
`rrsisd-jsonl` (RSRefSeg's jsonl per split) and `refsegrs`. See docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Optional

from ..protocol.contracts import DEVICE_CHOICES

DATA_CHOICES = ("synthetic", "folder", "rrsisd", "rrsisd-jsonl", "refsegrs")
# rrsisd-jsonl: where `rrsisd_<split>.jsonl` and the images are looked for under ROOT, in order (the
# RSRefSeg/RSRefSeg2 data root: datainfo/ beside RRSIS-D/images/rrsisd/JPEGImages; RMSIN's release
# root: images/rrsisd/JPEGImages; or a flat folder).
JSONL_ANNOTATIONS = ("datainfo/rrsisd_{split}.jsonl", "rrsisd_{split}.jsonl")
JSONL_IMAGES = ("RRSIS-D/images/rrsisd/JPEGImages", "images/rrsisd/JPEGImages", "JPEGImages", "images")
SYNTHETIC_SEEDS = {"train": 0, "val": 1, "test": 2}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="rsrefseg-test", help="referring model id (see `rsseg models`)")
    p.add_argument("--data", required=True, choices=DATA_CHOICES, help="dataset layout")
    p.add_argument("root", nargs="?", help="dataset root (not for synthetic)")
    p.add_argument("--image-dir", help="rrsisd-jsonl: the image folder (default: looked for under ROOT, "
                                       "e.g. RRSIS-D/images/rrsisd/JPEGImages)")
    p.add_argument("--device", default="auto", help=DEVICE_CHOICES)
    p.add_argument("--size", type=int, default=0, help="image size fed to the model (0: the model's SAM size)")
    p.add_argument("--limit", type=int, help="use only the first N samples of each split")
    p.add_argument("--text-blind", action="store_true",
                   help="replace every sentence by one constant (the no-language baseline)")
    p.add_argument("--scenes", type=int, default=64, help="synthetic: training scenes (about 4 sentences each)")
    p.add_argument("--val-scenes", type=int, default=32, help="synthetic: validation/test scenes")
    p.add_argument("--scene-size", type=int, default=128, help="synthetic: scene side in pixels")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_train_parser(sub) -> argparse.ArgumentParser:
    tr = sub.add_parser("train", help="train a referring model's adapters (RSRefSeg) on a dataset; "
                                      "`rsseg train layers` trains on your own raster and label polygons",
                        description="Train the LoRA adapters and small modules of a referring model; checkpoints "
                                    "hold only the trainable state (see docs/training.md).")
    _common(tr)
    tr.add_argument("--split", default="train")
    tr.add_argument("--val-split", default="val", help="validation split ('none' to skip)")
    length = tr.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="optimizer updates (default 100)")
    length.add_argument("--epochs", type=float, help="passes over the training split")
    tr.add_argument("--batch-size", type=int, default=8)
    tr.add_argument("--accum", type=int, default=1, help="gradient accumulation micro-batches per update")
    tr.add_argument("--lr", type=float, default=1e-4)
    tr.add_argument("--weight-decay", type=float, default=0.01)
    tr.add_argument("--warmup-steps", type=int, default=0)
    tr.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (0: off)")
    tr.add_argument("--dice-weight", type=float, help="add a Dice term (default: the model's loss, BCE only)")
    tr.add_argument("--amp", default="auto", choices=("auto", "off", "bf16", "fp16"))
    tr.add_argument("--checkpoint-every", type=int, default=0, help="also save every N updates")
    tr.add_argument("--eval-every", type=int, default=0, help="validate every N updates (default: at the end)")
    tr.add_argument("--out", required=True, help="output folder (checkpoints/, metrics.json)")
    tr.add_argument("--resume", help="checkpoint (.json) to continue from")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--json", action="store_true", help="print the result as JSON")
    return tr


def add_eval_refer_parser(sub) -> argparse.ArgumentParser:
    ev = sub.add_parser("eval-refer", help="score a referring model (mIoU, oIoU, Pr@X) on a dataset split",
                        description="Predict one mask per (image, sentence), threshold the logits at 0 and score "
                                    "them (see docs/training.md).")
    _common(ev)
    ev.add_argument("--checkpoint", help="training checkpoint (.json); default: the model's own weights")
    ev.add_argument("--split", default="test")
    ev.add_argument("--batch-size", type=int, default=8)
    ev.add_argument("--out", help="write the scores to this JSON file")
    ev.add_argument("--json", action="store_true", help="print the scores as JSON")
    return ev


def rrsisd_jsonl_paths(root: str, split: str, image_dir: Optional[str] = None) -> tuple[Path, Path]:
    """The annotation file and image folder of one split of the rrsisd-jsonl layout under `root`."""
    from ..errors import RssegError

    base = Path(root)
    tried = [base / pattern.format(split=split) for pattern in JSONL_ANNOTATIONS]
    ann = next((p for p in tried if p.is_file()), None)
    if ann is None:
        raise RssegError(f"no annotation file for split {split!r}: tried {', '.join(map(str, tried))} "
                         "(RSRefSeg's convert_data_to_jsonl.py writes datainfo/rrsisd_<split>.jsonl)")
    if image_dir is not None:
        return ann, Path(image_dir)
    folders = [base / name for name in JSONL_IMAGES]
    images = next((p for p in folders if p.is_dir()), None)
    if images is None:
        raise RssegError(f"no image folder under {base}: tried {', '.join(map(str, folders))} (or give --image-dir)")
    return ann, images


def load_split(args, split: str) -> list:
    """The RefSamples of one split of the --data source."""
    from ..datasets.referring import folder_samples, refsegrs_samples, rrsisd_refer_samples, rrsisd_samples
    from ..datasets.referring.synthetic import synthetic_dataset, text_blind
    from ..errors import RssegError

    if args.image_dir and args.data != "rrsisd-jsonl":
        raise RssegError("--image-dir is for --data rrsisd-jsonl")
    if args.data == "synthetic":
        if split not in SYNTHETIC_SEEDS:
            raise RssegError(f"synthetic splits are {', '.join(SYNTHETIC_SEEDS)}, not {split!r}")
        scenes = args.scenes if split == "train" else args.val_scenes
        samples = synthetic_dataset(scenes, seed=SYNTHETIC_SEEDS[split], size=args.scene_size).samples
    else:
        if not args.root:
            raise RssegError(f"--data {args.data} needs the dataset root folder")
        if args.data == "folder":
            samples = list(folder_samples(args.root, split=split))
        elif args.data == "rrsisd":
            samples = list(rrsisd_refer_samples(args.root, split=split))
        elif args.data == "rrsisd-jsonl":
            ann, images = rrsisd_jsonl_paths(args.root, split, args.image_dir)
            samples = list(rrsisd_samples(ann, images, limit=args.limit))
        else:
            samples = list(refsegrs_samples(args.root, split=split))
    if args.limit:
        samples = samples[:args.limit]
    if not samples:
        raise RssegError(f"split {split!r} of {args.data} has no samples")
    return text_blind(samples) if args.text_blind else samples


def _trainer(args, family: Optional[str] = None):
    """(spec, trainer class) of --model: the trainer its family registered, or that of `family` only."""
    from ..errors import RssegError
    from ..models import get_spec
    from .registry import family_of, find_trainer

    spec = get_spec(args.model)
    found = family_of(spec.builder)
    cls = find_trainer(found) if family in (None, found) else None
    if cls is None:
        raise RssegError(f"{args.model} is not a trainable referring model (builder {spec.builder!r})")
    return spec, cls


def _device(name: str) -> str:
    from ..devices import resolve_device

    return resolve_device(name)


def cmd_train(args) -> int:
    import torch

    from .base import TrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    train = load_split(args, args.split)
    val = None if args.val_split == "none" else load_split(args, args.val_split)
    if args.epochs is not None:
        steps = max(1, math.ceil(args.epochs * (len(train) // args.batch_size) / args.accum))
    else:
        steps = args.steps or 100
    device = _device(args.device)
    config = TrainConfig(steps=steps, batch_size=args.batch_size, accum=args.accum, lr=args.lr,
                         weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, grad_clip=args.grad_clip,
                         dice_weight=args.dice_weight, seed=args.seed, size=args.size, device=device, amp=args.amp,
                         checkpoint_every=args.checkpoint_every, eval_every=args.eval_every,
                         progress=not args.quiet and not args.json, out_dir=args.out)
    extra = {"data": args.data, "split": args.split, "val_split": args.val_split, "text_blind": args.text_blind}
    spec, trainer_class = _trainer(args)
    trainer = trainer_class(trainer_class.build_model(spec, args.seed), args.model, train, config, val, extra)
    if args.resume:
        trainer.resume(args.resume)
    result = trainer.train()
    report = {"step": result.step, "seconds": round(result.seconds, 2), "checkpoint": result.checkpoint,
              "final_loss": result.losses[-1] if result.losses else None, "metrics": result.metrics,
              "metrics_file": str(Path(args.out) / "metrics.json")}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"trained {result.step} steps in {result.seconds:.1f} s; checkpoint {result.checkpoint}")
        if result.metrics:
            samples = f" ({result.metrics['samples']} samples)" if "samples" in result.metrics else ""
            print(f"validation {trainer.summarise(result.metrics)}{samples}")
    return 0


def cmd_eval_refer(args) -> int:
    import torch

    from ..errors import RssegError
    from ..models.rsrefseg.lora import load_trainable_state_dict
    from ..weights.trained_checkpoint import load_checkpoint
    from .base import autocast_dtype
    from .evaluate import evaluate_referring

    if args.threads:
        torch.set_num_threads(args.threads)
    samples = load_split(args, args.split)
    device = _device(args.device)
    spec, trainer_class = _trainer(args, family="rsrefseg")  # the referring scores read RSRefSeg's outputs
    model = trainer_class.build_model(spec, 0)
    if args.checkpoint:
        ckpt = load_checkpoint(args.checkpoint)
        if ckpt.record.get("model") != args.model:
            raise RssegError(f"checkpoint is for model {ckpt.record.get('model')!r}, not {args.model!r}")
        load_trainable_state_dict(model, ckpt.model)
    model.to(device)
    size = args.size or int(model.sam.image_encoder.img_size)
    scores = evaluate_referring(model, samples, size, device, args.batch_size, autocast_dtype(device, "auto"),
                                progress=not args.quiet and not args.json)
    report: dict[str, Any] = {"model": args.model, "checkpoint": args.checkpoint, "data": args.data,
                              "split": args.split, "text_blind": args.text_blind, **scores.to_dict()}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps(report, indent=2) if args.json else scores.format_table())
    return 0
