"""The `rsseg eval` verb: its arguments and its body (cli/main.py only registers it)."""

from __future__ import annotations

import argparse
import json
import sys

from ..datasets.layout_names import DATASET_CHOICES
from ..protocol.contracts import DEFAULT_MODELS, DEVICE_CHOICES


def add_eval_parser(sub) -> argparse.ArgumentParser:
    ev = sub.add_parser("eval", help="score a model on a segmentation benchmark (mIoU, F1, OA)",
                        description="Segment every image of a benchmark split with a class list and score the "
                                    "masks against the labels (see docs/eval.md).")
    ev.add_argument("--dataset", required=True, choices=DATASET_CHOICES, help="dataset layout")
    ev.add_argument("root", help="the dataset's root folder")
    ev.add_argument("--model", required=True, help=f"model id (see `rsseg models`), e.g. {DEFAULT_MODELS['classes']}")
    ev.add_argument("--classes-file", help="class-name file: one class per line, comma-separated synonyms "
                                           "(default: the dataset's SegEarth-OV file; required for folder)")
    ev.add_argument("--split", default="val", help="split to score (default val)")
    ev.add_argument("--tile", type=int, default=512, help="engine tile size in pixels")
    ev.add_argument("--overlap", type=int, default=64, help="engine tile overlap in pixels")
    ev.add_argument("--device", default="auto", help=DEVICE_CHOICES)
    ev.add_argument("--batch-size", type=int, default=0, help="tiles per model call (0: automatic)")
    ev.add_argument("--resize", type=int, help="scale each image so its longer side is this many pixels "
                                               "before inference (SegEarth-OV: 448); masks are scaled back")
    ev.add_argument("--threshold", type=float, help="score under which a pixel counts as the dataset's "
                                                    "background class (default: the dataset's SegEarth-OV value; "
                                                    "0: none)")
    ev.add_argument("--percentile-stretch", action="store_true",
                    help="stretch each image by its 2-98%% percentiles (default: 8-bit values 0..255 as they are)")
    ev.add_argument("--ignore-index", type=int, help="folder layout: label value not scored (default 255)")
    ev.add_argument("--reduce-zero-label", action="store_true",
                    help="folder layout: label 0 is not scored and value i is class line i")
    ev.add_argument("--limit", type=int, help="score only the first N images")
    ev.add_argument("--out", help="keep each image's mask under OUT/masks/ and the scores in OUT/eval.json")
    ev.add_argument("--json", action="store_true", help="print the report as JSON")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    return ev


class _ImageBar:
    """One tqdm bar over images on stderr."""

    def __init__(self, enabled: bool):
        self.enabled, self.bar = enabled, None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="evaluating", unit="image", file=sys.stderr)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_eval(args) -> int:
    from .runner import EvalOptions, evaluate

    options = EvalOptions(dataset=args.dataset, root=args.root, model=args.model, split=args.split,
                          classes_file=args.classes_file, tile=args.tile, overlap=args.overlap,
                          device=args.device, batch_size=args.batch_size, limit=args.limit, out=args.out,
                          threshold=args.threshold, resize=args.resize,
                          percentile_stretch=args.percentile_stretch, ignore_index=args.ignore_index,
                          reduce_zero_label=args.reduce_zero_label)
    bar = _ImageBar(enabled=not args.quiet and not args.json)
    try:
        report = evaluate(options, progress=bar)
    finally:
        bar.close()
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 0
