"""`python -m rsseg.bench RASTER OUT MODEL TILE OVERLAP`: one benchmark run in a fresh process, so
peak RSS belongs to that run alone; prints one JSON line."""

from __future__ import annotations

import json
import resource
import sys
import time

from ..protocol.contracts import SegmentRequest
from ..models import build_model
from ..raster.engine import segment
from .vit_model import RandomViTTileModel

CLASSES = ["water", "tree", "grass", "building"]


def main(argv: list[str]) -> None:
    raster, out, model_id, tile, overlap = argv[0], argv[1], argv[2], int(argv[3]), int(argv[4])
    model = RandomViTTileModel(CLASSES) if model_id == "vit-b-random" else build_model(model_id, CLASSES, None)
    request = SegmentRequest(raster=raster, out_dir=out, model=model_id, classes=CLASSES, tile=tile,
                             overlap=overlap, batch_size=4, device="cpu")
    raster_pass_peak = {}

    def on_progress(event) -> None:  # the first vectorise event ends the raster pass
        if event.stage == "vectorise" and not raster_pass_peak:
            raster_pass_peak["mb"] = _peak_rss_mb()

    t0 = time.perf_counter()
    result = segment(request, model, progress=on_progress)
    wall = time.perf_counter() - t0
    print(json.dumps({"pixels": result.width * result.height, "tiles": result.tiles, "wall_s": wall,
                      "timings": result.timings, "peak_rss_mb": _peak_rss_mb(),
                      "raster_pass_rss_mb": raster_pass_peak.get("mb"),
                      "polygons": sum(c.polygons for c in result.classes)}))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main(sys.argv[1:])
