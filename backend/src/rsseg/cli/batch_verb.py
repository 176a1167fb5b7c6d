"""`rsseg batch`: many rasters, each into OUT/<raster name>/, on warm model workers (Ray); docs/batch.md."""

from __future__ import annotations

import argparse
import json
import signal
import sys

from ..protocol.batch import DONE
from ..signals import EXIT_TERMINATED, SIGNALS, signal_name, stop_on_signals

EXIT_FAILED, EXIT_CANCELLED = 1, 130  # 1: some raster failed (its manifest row says why)


def add_batch_parser(sub) -> None:
    from .main import add_job_options

    batch = sub.add_parser("batch", help="segment many rasters (files, globs, folders or a CSV table with a prompt "
                                         "per raster) on warm model workers, locally or on a Ray cluster")
    batch.add_argument("inputs", nargs="+",
                       help='rasters, glob patterns ("tiles/*.tif", quoted), folders (their .tif/.img/.vrt/.jp2 '
                            "files) or .csv tables with a `raster` column and optional `classes` or `sentence` "
                            "columns (a prompt per raster; paths relative to the table)")
    add_job_options(batch)
    batch.add_argument("--workers", type=int, default=0,
                       help="model workers (default 0: one per GPU of the cluster, or one without a GPU)")
    batch.add_argument("--address", help="a Ray cluster to run on, e.g. ray://head:10001 or auto (default: "
                                         "RAY_ADDRESS, else a local Ray on this machine)")
    batch.add_argument("--retries", type=int, default=2,
                       help="more attempts for a raster whose worker died or failed unexpectedly (default 2)")
    batch.add_argument("--skip-done", action="store_true",
                       help="keep the outputs of rasters an earlier run finished with the same settings (their "
                            "result.json says so) instead of segmenting them again: after a cancel or failures, a "
                            "second run does only what is missing")
    batch.add_argument("--split-mpx", type=float, default=256.0,
                       help="a raster of at least this many megapixels is split by rows into a part per worker and "
                            "merged, when there is more than one worker (default 256, a 16384² raster; 0: never)")
    batch.add_argument("--json", action="store_true", help="print the batch result (the manifest) as JSON")
    batch.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_batch(args: argparse.Namespace) -> int:
    from ..progress import CancelToken
    from ..protocol.batch import BatchRequest
    from ..service.batch.manifest import summary_table
    from ..service.batch.run import run_batch
    from .main import job_request
    from .progress_bar import BatchBar

    request = BatchRequest(inputs=list(args.inputs), out_dir=args.out, settings=job_request(args), workers=args.workers,
                           address=args.address, retries=args.retries, skip_done=args.skip_done,
                           split_mpx=args.split_mpx)
    bar = BatchBar(enabled=not args.quiet and not args.json)
    cancel = CancelToken()
    with stop_on_signals(cancel.cancel, (*SIGNALS, signal.SIGINT)) as received:  # Ctrl-C: cancel, twice: stop
        try:
            result = run_batch(request, progress=bar, cancel=cancel)
        finally:
            bar.close()
    print(json.dumps(result.to_dict(), indent=2) if args.json else summary_table(result))
    if result.cancelled:
        how = f"stopped by {signal_name(received[0])}" if received else "cancelled"
        print(f"rsseg: {how}; rasters that had not finished have no outputs", file=sys.stderr)
        return EXIT_CANCELLED if received == [signal.SIGINT] or not received else EXIT_TERMINATED
    return EXIT_FAILED if any(row.status != DONE for row in result.rows) else 0
