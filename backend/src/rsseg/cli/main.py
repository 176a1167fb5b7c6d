"""The `rsseg` command line: segment, models, doctor, bench, demo.

Bad input ends with one line on stderr and a non-zero exit code (2 for input the user can fix,
1 for anything unexpected); `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from .. import __version__
from ..errors import RssegError

EXIT_INPUT, EXIT_INTERNAL, EXIT_CANCELLED = 2, 1, 130


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


def _classes(text: str) -> list[str]:
    return [c.strip() for c in text.replace("\n", ",").split(",") if c.strip()]


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other rsseg error."""

    def error(self, message: str):
        self.exit(EXIT_INPUT, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rsseg", description="Text-prompted segmentation of georeferenced rasters.")
    parser.add_argument("--version", action="version", version=f"rsseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    seg = sub.add_parser("segment", help="segment a raster from a class list or a referring sentence")
    seg.add_argument("raster")
    prompt = seg.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--classes", type=_classes, help='comma-separated class names, e.g. "building, road, tree"')
    prompt.add_argument("--sentence", help='a referring sentence, e.g. "the large white building"')
    seg.add_argument("--model", default="test", help="model id (see `rsseg models`)")
    seg.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    seg.add_argument("--tile", type=int, default=512, help="tile size in pixels")
    seg.add_argument("--overlap", type=int, default=64, help="tile overlap in pixels (at most tile/2)")
    seg.add_argument("--batch-size", type=int, default=0,
                     help="tiles per model call (default 0: from free GPU memory, 4 on CPU)")
    seg.add_argument("--bands", type=_bands, help="1-based source bands for the model inputs, e.g. 3,2,1 or 1")
    seg.add_argument("--bbox", type=lambda t: _floats(t, 4, "--bbox"), help="minx,miny,maxx,maxy")
    seg.add_argument("--bbox-crs", help="CRS of --bbox (default: the raster's), e.g. EPSG:4326")
    seg.add_argument("--percentiles", type=lambda t: _floats(t, 2, "--percentiles"), default=(2.0, 98.0),
                     help="per-band stretch percentiles (default 2,98)")
    seg.add_argument("--value-range", type=lambda t: _floats(t, 2, "--value-range"),
                     help="fixed stretch low,high instead of percentiles")
    seg.add_argument("--threshold", type=float, help="score under which a pixel is unlabelled")
    seg.add_argument("--scores", action="store_true", help="also keep the float32 score GeoTIFF")
    seg.add_argument("--no-polygons", action="store_true", help="skip vectorisation")
    seg.add_argument("--simplify", type=float, default=0.0, help="polygon simplification tolerance (map units)")
    seg.add_argument("--min-area", type=float, default=0.0, help="drop polygons smaller than this (m2)")
    seg.add_argument("--out", required=True, help="output folder")
    seg.add_argument("--json", action="store_true", help="print the result record as JSON")
    seg.add_argument("--quiet", action="store_true", help="no progress bars")

    _add_models_parser(sub)

    doctor = sub.add_parser("doctor", help="print an environment report")
    doctor.add_argument("--markdown", action="store_true")
    doctor.add_argument("--json", action="store_true")
    doctor.add_argument("--no-worker", action="store_true", help="skip the worker round-trip check")

    sub.add_parser("serve", help="run the backend worker: newline-delimited JSON records on stdin/stdout "
                                 "(see docs/protocol.md)")

    bench = sub.add_parser("bench", help="benchmark the engine on synthetic rasters and print a table")
    bench.add_argument("--sizes", default="2048,8192,16384", help="square raster sizes in pixels")
    bench.add_argument("--vit-size", type=int, default=1024,
                       help="raster size for the ViT-B-sized random model row (0 to skip)")
    bench.add_argument("--tile", type=int, default=512)
    bench.add_argument("--overlap", type=int, default=64)
    bench.add_argument("--markdown", action="store_true")
    bench.add_argument("--json", action="store_true")
    bench.add_argument("--workdir", help="where synthetic rasters are kept (default: a temporary folder)")

    demo = sub.add_parser("demo", help="segment the bundled sample with the best installed model")
    demo.add_argument("--sample", required=True, help="the sample raster")
    demo.add_argument("--out", required=True)
    return parser


def _request(args):
    from ..protocol.contracts import RegionSpec, SegmentRequest

    region = RegionSpec(bbox=args.bbox, bbox_crs=args.bbox_crs) if args.bbox else RegionSpec()
    return SegmentRequest(
        raster=args.raster, out_dir=args.out, model=args.model, classes=args.classes, sentence=args.sentence,
        bands=args.bands, region=region, tile=args.tile, overlap=args.overlap, batch_size=args.batch_size,
        device=args.device, percentiles=tuple(args.percentiles), value_range=args.value_range,
        threshold=args.threshold, write_scores=args.scores, vectorise=not args.no_polygons,
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
    from ..service import run_segment
    from .progress_bar import StageBars

    bars = StageBars(enabled=not args.quiet and not args.json)
    try:
        result = run_segment(_request(args), progress=bars)
    finally:
        bars.close()
    print(json.dumps(result.to_dict(), indent=2) if args.json else _summary(result))
    return 0


def _add_models_parser(sub) -> None:
    models = sub.add_parser("models", help="list models; download, import or verify their weight files")
    models.add_argument("--json", action="store_true", help="print the model list as JSON")
    verbs = models.add_subparsers(dest="models_command", metavar="{list,download,import,verify}")
    listing = verbs.add_parser("list", help="list registered models and their weight status (the default)")
    listing.add_argument("--json", action="store_true", dest="verb_json", help="print the model list as JSON")
    download = verbs.add_parser("download", help="download a model's weight files (resumes, checks sha256)")
    download.add_argument("id", help="model id (see `rsseg models`)")
    download.add_argument("--json", action="store_true", dest="verb_json", help="print the model's row as JSON")
    download.add_argument("--quiet", action="store_true", help="no progress bar")
    imported = verbs.add_parser("import", help="import a weight file downloaded elsewhere (checks sha256)")
    imported.add_argument("id", help="model id (see `rsseg models`)")
    imported.add_argument("file", help="the weight file; it is copied, never moved or changed")
    verify = verbs.add_parser("verify", help="re-hash a model's weight files against the registry")
    verify.add_argument("id", help="model id (see `rsseg models`)")
    verify.add_argument("--quiet", action="store_true", help="no progress bar")


class _ByteBar:
    """A tqdm bar in bytes on stderr, restarted when the stage or the file (total) changes."""

    LABELS = {"download": "downloading", "verify": "verifying", "import": "importing"}

    def __init__(self, name: str, enabled: bool = True):
        self.name, self.enabled = name, enabled
        self.bar = None
        self.key: tuple | None = None

    def __call__(self, event) -> None:
        if not self.enabled:
            return
        if self.key != (event.stage, event.total) or (self.bar is not None and event.done < self.bar.n):
            from tqdm import tqdm

            self.close()
            self.key = (event.stage, event.total)
            self.bar = tqdm(total=event.total, desc=f"{self.LABELS.get(event.stage, event.stage)} {self.name}",
                            unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, leave=True)
        self.bar.update(event.done - self.bar.n)  # update(), not refresh(): tqdm throttles redraws

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.key = None, None


def _model_row(spec) -> dict:
    from ..weights import weight_status

    states = weight_status(spec)
    weights = [{"name": w.name, "size": w.size, "sha256": w.sha256, "urls": list(w.urls), "path": str(st.path),
                "present": st.present, "verified": st.verified} for w, st in zip(spec.weights, states)]
    return {"id": spec.id, "task": spec.task, "description": spec.description, "real": spec.real,
            "licence": spec.licence, "weights": weights,
            "weights_present": all(st.present and st.size == w.size for w, st in zip(spec.weights, states))}


def model_rows() -> list[dict]:
    """One row per registered model with its weight files' status (no hashing: see weights/verify.py)."""
    from ..models import MODELS

    return [_model_row(s) for s in MODELS.values()]


def _row_state(row: dict) -> str:
    if not row["weights_present"]:
        return "weights missing"
    return "ready" if all(w["verified"] for w in row["weights"]) else "not verified"


def _models_list(args) -> int:
    rows = model_rows()
    if args.json or getattr(args, "verb_json", False):
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['id']:24s} {row['task']:9s} {_row_state(row):16s} {row['description']}")
    return 0


def _needs_none(spec) -> bool:
    if spec.weights:
        return False
    print(f"model {spec.id!r} needs no weight files")
    return True


def _models_download(args) -> int:
    from ..models import get_spec
    from ..weights import download_weight, weight_status

    spec = get_spec(args.id)
    if not spec.weights and args.verb_json:
        print(json.dumps(_model_row(spec), indent=2))
        return 0
    if _needs_none(spec):
        return 0
    for weight, before in zip(spec.weights, weight_status(spec)):
        mtime = before.path.stat().st_mtime_ns if before.present else None
        bar = _ByteBar(weight.name, enabled=not args.quiet)
        try:
            path = download_weight(weight, progress=bar, model_id=spec.id)
        finally:
            bar.close()
        if not args.verb_json:
            kept = mtime is not None and path.stat().st_mtime_ns == mtime
            print(f"{weight.name}: {'already present' if kept else 'downloaded'}, sha256 verified: {path}")
    if args.verb_json:
        print(json.dumps(_model_row(spec), indent=2))
    return 0


def _models_import(args) -> int:
    from ..models import get_spec
    from ..weights import import_weight

    spec = get_spec(args.id)
    if _needs_none(spec):
        return 0
    bar = _ByteBar(spec.id)
    try:
        path = import_weight(spec, args.file, progress=bar)
    finally:
        bar.close()
    print(f"imported {args.file} as {path.name} for model {spec.id!r} (size and sha256 verified): {path}")
    return 0


def _models_verify(args) -> int:
    from ..models import get_spec
    from ..weights import verify_model

    spec = get_spec(args.id)
    if _needs_none(spec):
        return 0
    bar = _ByteBar(spec.id, enabled=not args.quiet)
    try:
        states = verify_model(spec, progress=bar)
    finally:
        bar.close()
    for state in states:
        print(f"{state.name}: ok, size and sha256 match the registry: {state.path}")
    return 0


MODEL_VERBS = {"list": _models_list, "download": _models_download, "import": _models_import,
               "verify": _models_verify}


def cmd_models(args) -> int:
    return MODEL_VERBS[args.models_command or "list"](args)


def cmd_doctor(args) -> int:
    from ..diagnostics import environment_report, format_report

    from ..diagnostics import weights_summary, worker_roundtrip

    report = environment_report([{"id": r["id"], "task": r["task"], "weights": weights_summary(r)}
                                 for r in model_rows()])
    if not args.no_worker:
        report["worker"] = worker_roundtrip()
    print(json.dumps(report, indent=2) if args.json else format_report(report, markdown=args.markdown), end="\n" if args.json else "")
    return 0


def cmd_serve(args) -> int:
    from ..service.worker import serve

    return serve()


def cmd_bench(args) -> int:
    from ..bench import run_bench

    return run_bench(args)


def cmd_demo(args) -> int:
    from ..protocol.contracts import SegmentRequest
    from ..models import MODELS
    from ..service import run_segment
    from .progress_bar import StageBars

    real = [s for s in MODELS.values() if s.real and s.accepts("classes")]
    if not real:
        print("No real model weights on this machine yet: running the weight-free pipeline test model "
              "`test` (its classes are colour matches, not a real segmentation).", file=sys.stderr)
    bars = StageBars()
    try:
        result = run_segment(SegmentRequest(raster=args.sample, out_dir=args.out, model="test",
                                            classes=["tree", "grass", "soil", "shadow"], tile=256, overlap=32,
                                            simplify_tolerance=0.1), progress=bars)
    finally:
        bars.close()
    print(_summary(result))
    print(f"Outputs are in {args.out}/ (open mask.tif and polygons.gpkg in QGIS; result.json has the details).")
    return 0


COMMANDS = {"segment": cmd_segment, "models": cmd_models, "doctor": cmd_doctor, "serve": cmd_serve, "bench": cmd_bench, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("rsseg: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except RssegError as exc:
        if args.debug:
            raise
        print(f"rsseg: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except Exception as exc:  # noqa: BLE001 - one line for the user; --debug shows the traceback
        if args.debug:
            raise
        print(f"rsseg: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
