"""How long a cancel takes to stop a CPU job with the ViT-B-sized random model of `rsseg bench`.

`python tools/cancel_latency.py [--size 1024] [--tile 512] [--runs 3]`: runs the engine on a
synthetic raster in a thread, cancels it at spread-out moments inside a model batch, and prints
the seconds from `CancelToken.cancel()` to the job raising `Cancelled` (one JSON line). A
measurement, not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

from rsseg.bench.synthetic import write_synthetic
from rsseg.bench.vit_model import RandomViTTileModel
from rsseg.errors import Cancelled
from rsseg.execution.tile_runner import TileRunner
from rsseg.progress import CancelToken
from rsseg.protocol.contracts import SegmentRequest
from rsseg.raster.engine import segment


class _Timed:
    """The model, noting when each batch starts and how long the last one took."""

    def __init__(self, model: RandomViTTileModel):
        self.model = model
        self.class_names, self.activation, self.n_inputs = model.class_names, model.activation, model.n_inputs
        self.started = threading.Event()
        self.last_batch_s = 0.0

    def __call__(self, batch):
        self.started.set()
        t0 = time.perf_counter()
        out = self.model(batch)
        self.last_batch_s = time.perf_counter() - t0
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rsseg-cancel-"))
    raster = write_synthetic(work / "scene.tif", args.size)
    model = _Timed(RandomViTTileModel(["water", "tree", "grass", "building"], "cpu"))
    model(__import__("numpy").zeros((args.batch, 3, args.tile, args.tile), "float32"))  # warm-up; one batch's time
    batch_s = model.last_batch_s
    latencies = []
    for run in range(args.runs):
        request = SegmentRequest(raster=str(raster), out_dir=str(work / f"out{run}"), classes=list(model.class_names),
                                 tile=args.tile, overlap=64, batch_size=args.batch, device="cpu")
        cancel, outcome = CancelToken(), {}
        model.started.clear()

        def job(request=request, cancel=cancel, outcome=outcome) -> None:
            try:
                segment(request, model, cancel=cancel, runner=TileRunner(model, "cpu", args.batch))
                outcome["result"] = "finished"
            except Cancelled:
                outcome["result"] = "cancelled"
            outcome["end"] = time.perf_counter()

        thread = threading.Thread(target=job)
        thread.start()
        model.started.wait()
        time.sleep(batch_s * (run + 1) / (args.runs + 1))  # spread over the batch
        t_cancel = time.perf_counter()
        cancel.cancel()
        thread.join()
        latencies.append(round(outcome["end"] - t_cancel, 3))
    print(json.dumps({"batch_s": round(batch_s, 2), "batch": args.batch, "tile": args.tile,
                      "latency_s": latencies, "max_latency_s": max(latencies)}))


if __name__ == "__main__":
    main()
