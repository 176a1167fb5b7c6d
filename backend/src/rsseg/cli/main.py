"""The `rsseg` command line: segment, models, doctor, bench, demo, eval, train, eval-refer.

Bad input ends with one line on stderr and a non-zero exit code (2 for input the user can fix,
1 for anything unexpected); `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

from .. import __version__
from ..errors import Cancelled, RssegError
from ..protocol.contracts import DEFAULT_MODELS, DEVICE_CHOICES, OUTPUTS, parse_class_list
from ..signals import EXIT_TERMINATED, signal_name, stop_on_signals

EXIT_INPUT, EXIT_INTERNAL, EXIT_CANCELLED = 2, 1, 130
_NEGATIVE = re.compile(r"^-(\d|\.\d)")


def _join_negative_values(argv: list[str]) -> list[str]:
    """`--bbox -80.5,30,-79,31` -> `--bbox=-80.5,30,-79,31`: argparse reads a value starting with '-'
    as an option unless it is one plain number, which refused every western or southern bbox."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and _NEGATIVE.match(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def _floats(text: str, n: int, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be {n} comma-separated numbers, got {text!r}") from None
    if len(values) != n:
        raise argparse.ArgumentTypeError(f"{what} must be {n} comma-separated numbers, got {text!r}")
    return values


def _bands(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--bands must be 1-based band numbers like 3,2,1, got {text!r}") from None


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other rsseg error."""

    def error(self, message: str):
        self.exit(EXIT_INPUT, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def add_job_options(parser: argparse.ArgumentParser) -> None:
    """The options of one segmentation job, shared by `segment` and `batch` (every raster of a batch gets them)."""
    prompt = parser.add_mutually_exclusive_group()  # neither: a trained model's own classes
    prompt.add_argument("--classes", type=parse_class_list,
                        help='comma-separated class names, e.g. "building, road, tree"; with semicolons '
                        'between classes, commas give synonyms: "road, parking lot; tree"; a model trained on '
                        'your layers segments into its own classes when none are given')
    prompt.add_argument("--sentence", help='a referring sentence, e.g. "the large white building"')
    parser.add_argument("--model", default="test", help="model id (see `rsseg models`)")
    parser.add_argument("--device", default="auto", help=DEVICE_CHOICES)
    parser.add_argument("--tile", type=int, default=512, help="tile size in pixels")
    parser.add_argument("--overlap", type=int, default=64, help="tile overlap in pixels (at most tile/2)")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="tiles per model call (default 0: from free GPU memory, 4 on CPU)")
    parser.add_argument("--bands", type=_bands, help="1-based source bands for the model inputs, e.g. 3,2,1 or 1")
    parser.add_argument("--bbox", type=lambda t: _floats(t, 4, "--bbox"), help="minx,miny,maxx,maxy")
    parser.add_argument("--bbox-crs", help="CRS of --bbox (default: the raster's), e.g. EPSG:4326")
    parser.add_argument("--resolution", type=float,
                        help="process at this many metres per pixel (resampled on read; outputs on that grid)")
    parser.add_argument("--percentiles", type=lambda t: _floats(t, 2, "--percentiles"), default=(2.0, 98.0),
                        help="per-band stretch percentiles (default 2,98)")
    parser.add_argument("--value-range", type=lambda t: _floats(t, 2, "--value-range"),
                        help="fixed stretch low,high instead of percentiles")
    parser.add_argument("--nodata", type=float, metavar="VALUE",
                        help="source value that is nodata when every band read has it, instead of the file's own "
                             "(e.g. 0 for a black collar the file does not flag)")
    parser.add_argument("--threshold", type=float, help="score under which a pixel is unlabelled")
    parser.add_argument("--upsample", choices=("bilinear", "guided", "jbu"),
                        help="how class-list CLIP logits reach pixels (default: the model's, jbu; docs/refinement.md)")
    parser.add_argument("--checkpoint",
                        help="a trained referring model: RUN/checkpoints/step-N.json of `rsseg train`")
    parser.add_argument("--top-k", type=int, metavar="K",
                        help="a sentence with a model that finds objects (zero-shot referring, SAM 3): keep the best "
                             "K, each its own polygon with its score and rank (default: the model's, 1 for referring)")
    parser.add_argument("--sam-refine", choices=("off", "peaks", "vote"),
                        help="sharpen class-list results with the model's SAM (default off; needs its weights)")
    parser.add_argument("--scores", action="store_true", help="also keep the float32 score GeoTIFF")
    parser.add_argument("--no-polygons", action="store_true", help="skip vectorisation")
    parser.add_argument("--simplify", type=float, default=0.0, help="polygon simplification tolerance (map units)")
    parser.add_argument("--min-area", type=float, default=0.0, help="drop polygons smaller than this (m2)")
    parser.add_argument("--out", required=True, help="output folder")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rsseg", description="Text-prompted segmentation of georeferenced rasters.")
    parser.add_argument("--version", action="version", version=f"rsseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    seg = sub.add_parser("segment", help="segment a raster from a class list or a referring sentence")
    seg.add_argument("raster")
    add_job_options(seg)
    seg.add_argument("--json", action="store_true", help="print the result record as JSON")
    seg.add_argument("--quiet", action="store_true", help="no progress bars")

    from .batch_verb import add_batch_parser

    add_batch_parser(sub)

    from .models_verbs import add_models_parser

    add_models_parser(sub)

    from ..eval.cli import add_eval_parser

    add_eval_parser(sub)

    from ..training.cli import add_eval_refer_parser, add_train_parser

    add_train_parser(sub)
    add_eval_refer_parser(sub)

    from ..training.layers_cli import add_train_layers_parser

    add_train_layers_parser(sub)

    from ..training.dataset_cli import add_train_semantic_parser

    add_train_semantic_parser(sub)

    doctor = sub.add_parser("doctor", help="print an environment report")
    doctor.add_argument("--markdown", action="store_true")
    doctor.add_argument("--json", action="store_true")
    doctor.add_argument("--no-worker", action="store_true", help="skip the worker round-trip check")

    sub.add_parser("serve", help="run the backend worker: newline-delimited JSON records on stdin/stdout "
                                 "(see docs/protocol.md)")

    bench = sub.add_parser("bench", help="benchmark the engine on synthetic rasters and print a table")
    bench.add_argument("--sizes", default="2048,4096,8192,16384", help="square raster sizes in pixels")
    bench.add_argument("--repeat", type=int, default=1,
                       help="runs of the job and of the GDAL reference on each of --sizes, taken in turn; the rows "
                            "show the median run (wall times on a shared machine vary by a third)")
    bench.add_argument("--speckle-sizes", default="2048,4096",
                       help="sizes of per-pixel noise rasters (speckle: the vectoriser's worst case)")
    bench.add_argument("--no-gdal-reference", dest="gdal_reference", action="store_false",
                       help="skip the GDAL reference pipeline (gdal_calc.py + gdal_polygonize.py) on --sizes")
    bench.add_argument("--vit-size", type=int, default=1024,
                       help="raster size for the ViT-B-sized random model row (0 to skip)")
    bench.add_argument("--clip-size", type=int, default=1024,
                       help=f"raster size for the class-list path with {DEMO_MODEL}'s architecture and random "
                            "weights, first and second prompt (0 to skip)")
    bench.add_argument("--rsrefseg-size", type=int, default=512,
                       help="square raster size (one tile of that size) for the referring path with RSRefSeg's "
                            "CLIP ViT-B/16 + SAM ViT-B architecture and random weights, first and second "
                            "sentence (0 to skip)")
    bench.add_argument("--zs-ref-size", type=int, default=1024,
                       help="square raster size (one view) for zero-shot referring with the default sentence model's "
                            "CLIP ViT-B/16 + SAM ViT-B architecture and random weights, first and second sentence "
                            "(0 to skip)")
    bench.add_argument("--rfm-size", type=int, default=1024,
                       help="raster size for RFM-Seg (rfm-seg-r18-rn50's ResNet-18 host + RemoteCLIP RN50, random "
                            "weights), first class list and the same classes with other VL-map prompts (0 to skip)")
    bench.add_argument("--sgseg-size", type=int, default=1024,
                       help="raster size for SGSeg (sgseg-vit-b-16's CLIP ViT-B/16 at 384-px windows and a global "
                            "view, random weights), first and second class list (0 to skip)")
    bench.add_argument("--rsrefseg-model", default=None,
                       help="model for the referring rows instead (a registry sentence model, e.g. rsrefseg-test)")
    bench.add_argument("--batch-rasters", type=int, default=8,
                       help="rasters for the `rsseg batch` rows, run on 1 and on 2 local Ray workers (0 to skip)")
    bench.add_argument("--batch-raster-size", type=int, default=2048, help="square size of those rasters")
    bench.add_argument("--batch-split-size", type=int, default=4096,
                       help="then one raster of this size on one worker, and split by rows across two (0 to skip)")
    bench.add_argument("--device", default="cpu", help=f"{DEVICE_CHOICES} (default cpu)")
    bench.add_argument("--tile", type=int, default=512)
    bench.add_argument("--overlap", type=int, default=64)
    bench.add_argument("--markdown", action="store_true")
    bench.add_argument("--json", action="store_true")
    bench.add_argument("--workdir", help="where synthetic rasters are kept (default: a temporary folder)")

    demo = sub.add_parser("demo", help="segment the bundled sample with the best installed model")
    demo.add_argument("--sample", required=True, help="the sample raster")
    demo.add_argument("--out", required=True)
    demo.add_argument("--download", action="store_true",
                      help=f"download the demo model ({DEMO_MODEL}) first if its weights are missing")
    demo.add_argument("--labels", help="labels bundled with the sample (field `cover`): without the demo model's "
                                       "weights, a small model is trained from them first (a minute or two on CPU)")
    return parser


def job_request(args):
    """The SegmentRequest the job options of `segment` and `batch` (add_job_options) describe."""
    from ..protocol.contracts import RegionSpec, SegmentRequest

    region = RegionSpec(bbox=args.bbox, bbox_crs=args.bbox_crs) if args.bbox else RegionSpec()
    return SegmentRequest(
        raster=getattr(args, "raster", ""), out_dir=args.out, model=args.model, classes=args.classes,
        sentence=args.sentence, bands=args.bands, region=region, resolution=args.resolution, tile=args.tile,
        overlap=args.overlap, batch_size=args.batch_size,
        device=args.device, percentiles=tuple(args.percentiles), value_range=args.value_range, nodata=args.nodata,
        threshold=args.threshold, upsample=args.upsample, sam_refine=args.sam_refine, checkpoint=args.checkpoint,
        top_k=args.top_k, write_scores=args.scores, vectorise=not args.no_polygons,
        simplify_tolerance=args.simplify, min_area_m2=args.min_area)


def _summary(result) -> str:
    lines = [f"mask      {result.mask}"]
    if result.scores:
        lines.append(f"scores    {result.scores}")
    if result.polygons:
        lines.append(f"polygons  {result.polygons}")
    lines.append(f"{result.width}x{result.height} px, {result.crs or 'no CRS'}, {result.tiles} tiles on "
                 f"{result.device} in {result.timings['total']:.1f} s")
    for c in result.classes:
        lines.append(f"  {c.id:3d} {c.name[:40]:40s} {c.pixels:12d} px {c.area_m2:14.1f} m2 {c.polygons:7d} polygons")
    return "\n".join(lines)


def cmd_segment(args) -> int:
    from ..progress import CancelToken
    from ..service import run_segment
    from .progress_bar import StageBars

    bars = StageBars(enabled=not args.quiet and not args.json)
    cancel = CancelToken()
    with stop_on_signals(cancel.cancel) as received:
        try:
            result = run_segment(job_request(args), progress=bars, cancel=cancel)
        except Cancelled:
            if not received:
                raise
            result = None
        finally:
            bars.close()
    if result is None:
        print(f"rsseg: stopped by {signal_name(received[0])}; the job removed its partial outputs", file=sys.stderr)
        return EXIT_TERMINATED
    print(json.dumps(result.to_dict(), indent=2) if args.json else _summary(result))
    return 0


def cmd_eval(args) -> int:
    from ..eval.cli import cmd_eval as run

    return run(args)


def cmd_train(args) -> int:
    from ..training.cli import cmd_train as run

    return run(args)


def cmd_train_layers(args) -> int:
    from ..training.layers_cli import cmd_train_layers as run

    return run(args)


def cmd_train_semantic(args) -> int:
    from ..training.dataset_cli import cmd_train_semantic as run

    return run(args)


def cmd_eval_refer(args) -> int:
    from ..training.cli import cmd_eval_refer as run

    return run(args)


def cmd_models(args) -> int:
    from .models_verbs import cmd_models as run

    return run(args)


def cmd_doctor(args) -> int:
    from ..diagnostics import format_report, full_report, worker_roundtrip

    report = full_report(None if args.no_worker else worker_roundtrip())
    print(json.dumps(report, indent=2) if args.json else format_report(report, markdown=args.markdown),
          end="\n" if args.json else "")
    return 0


def cmd_serve(args) -> int:
    from ..service.worker import serve

    return serve()


def cmd_bench(args) -> int:
    from ..bench import run_bench

    return run_bench(args)


DEMO_MODEL = DEFAULT_MODELS["classes"]
DEMO_CLASSES = ["tree", "grass", "bare soil, sand", "shadow"]
DEMO_EPOCHS = 8


def _demo_model(args) -> str:
    """The demo's real model when its weights are (or, with --download, can be) installed; else a model trained
    from the sample's labels (--labels); else `test`."""
    from ..models import get_spec
    from ..weights import download_model, weights_present
    from .progress_bar import ByteBar

    spec = get_spec(DEMO_MODEL)
    if not weights_present(spec) and args.download:
        bar = ByteBar(DEMO_MODEL)
        try:
            download_model(spec, progress=bar)
        except RssegError as exc:
            print(f"Could not download the demo model {DEMO_MODEL}: {exc.text('cli')}", file=sys.stderr)
        finally:
            bar.close()
    if weights_present(spec):
        return DEMO_MODEL
    if args.labels:
        return _demo_trained_model(args)
    print(f"The weights of {DEMO_MODEL} are not installed (`rsseg models download {DEMO_MODEL}`): running the "
          "weight-free pipeline test model `test` instead (its classes are colour matches, not a real "
          "segmentation).", file=sys.stderr)
    return "test"


def _demo_trained_model(args) -> str:
    """Train UNetFormer on the sample's own labels (kept in OUT/model, reused by the next demo)."""
    from pathlib import Path

    from ..bundles import is_bundle
    from ..protocol.training import TrainLayersRequest
    from ..training.layers_cli import epoch_line
    from ..training.layers_run import train_layers

    folder = Path(args.out) / "model"
    if is_bundle(folder):
        print(f"Using the model trained by an earlier demo run: {folder}", file=sys.stderr)
        return str(folder.resolve())
    print(f"The weights of {DEMO_MODEL} are not installed and could not be downloaded: training a small model "
          f"(UNetFormer) on the labels bundled with the sample ({args.labels}) instead; about a minute or two on a "
          "CPU.", file=sys.stderr)
    request = TrainLayersRequest(raster=args.sample, labels=args.labels, field="cover", out=str(folder),
                                 name="demo: tree and ground", mode="sparse", epochs=DEMO_EPOCHS, chip=128, stride=64,
                                 batch_size=8, patience=0)

    def progress(event) -> None:
        if event.stage == "train" and "val_miou" in event.detail:
            print(epoch_line(event.detail, event.total), file=sys.stderr, flush=True)

    result = train_layers(request, progress)
    print(f"Trained {result.name} in {result.seconds:.0f} s (validation mIoU {result.metrics.get('miou') or 0:.3f} "
          f"on held-out blocks); segmenting with it.", file=sys.stderr)
    return result.model


def cmd_demo(args) -> int:
    from ..protocol.contracts import SegmentRequest
    from ..service import run_segment
    from .progress_bar import StageBars

    model = _demo_model(args)
    clip = model == DEMO_MODEL
    bars = StageBars()
    try:
        classes = DEMO_CLASSES if model in (DEMO_MODEL, "test") else None  # a trained model's are its own
        result = run_segment(SegmentRequest(raster=args.sample, out_dir=args.out, model=model, classes=classes,
                                            tile=448 if clip else 256, overlap=64 if clip else 32,
                                            resolution=0.3 if clip else None, simplify_tolerance=0.1),
                             progress=bars)
    finally:
        bars.close()
    print(_summary(result))
    print(f"Outputs are in {args.out}/ (open {OUTPUTS['mask']} and {OUTPUTS['polygons']} in QGIS; "
          f"{OUTPUTS['result']} has the details).")
    return 0


def cmd_batch(args) -> int:
    from .batch_verb import cmd_batch as run

    return run(args)


COMMANDS = {"segment": cmd_segment, "batch": cmd_batch, "models": cmd_models, "doctor": cmd_doctor, "serve": cmd_serve,
            "bench": cmd_bench, "demo": cmd_demo,
            "eval": cmd_eval, "train": cmd_train, "train-layers": cmd_train_layers,
            "train-semantic": cmd_train_semantic, "eval-refer": cmd_eval_refer}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["train", "layers"]:  # `rsseg train layers` is the train-layers verb
        argv = ["train-layers", *argv[2:]]
    if argv[:2] == ["train", "semantic"]:  # `rsseg train semantic` is the train-semantic verb
        argv = ["train-semantic", *argv[2:]]
    args = parser.parse_args(_join_negative_values(argv))
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("rsseg: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except BrokenPipeError:  # e.g. `rsseg models --json | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except RssegError as exc:
        if args.debug:
            raise
        print(f"rsseg: error: {exc.text('cli')}", file=sys.stderr)  # the message and its fixes as commands
        return EXIT_INPUT
    except Exception as exc:  # noqa: BLE001 - one line for the user; --debug shows the traceback
        if args.debug:
            raise
        print(f"rsseg: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
