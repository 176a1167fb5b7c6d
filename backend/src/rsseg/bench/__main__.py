"""`python -m rsseg.bench RASTER OUT MODEL TILE OVERLAP [DEVICE]`: one benchmark run in a fresh process, so
peak RSS belongs to that run alone; prints one JSON line."""

from __future__ import annotations

import json
import resource
import sys
import time

from dataclasses import replace

from ..devices import resolve_device
from ..models import build_model, get_spec
from ..models.feature_cache import FeatureCache
from ..models.registry import BUILDERS
from ..models.runner import TileRunner
from ..protocol.contracts import SegmentRequest
from ..raster.engine import segment
from .vit_model import RandomViTTileModel

CLASSES = ["water", "tree", "grass", "building"]


SECOND_PROMPT = ["road", "bare soil", "shadow"]
CLIP_RANDOM = "clip-vit-b-16-random"


def _model(model_id: str, classes: list[str], device: str):
    """Benchmark models: registry ids, a timm ViT-B/16, or clip-vit-b-16's real architecture with random weights."""
    if model_id == "vit-b-random":
        return RandomViTTileModel(classes, device)
    if model_id == CLIP_RANDOM:
        spec = replace(get_spec("clip-vit-b-16"), id=CLIP_RANDOM, weights=())
        return BUILDERS[spec.builder](spec, classes, "softmax", device, {})
    return build_model(model_id, classes, None, device)


def _run(raster: str, out: str, model_id: str, classes: list[str], tile: int, overlap: int,
         cache: FeatureCache, device: str) -> dict:
    model = _model(model_id, classes, device)
    request = SegmentRequest(raster=raster, out_dir=out, model=model_id, classes=classes, tile=tile,
                             overlap=overlap, batch_size=4, device=device)
    raster_pass_peak = {}

    def on_progress(event) -> None:  # the first vectorise event ends the raster pass
        if event.stage == "vectorise" and not raster_pass_peak:
            raster_pass_peak["mb"] = _peak_rss_mb()

    t0 = time.perf_counter()
    result = segment(request, model, progress=on_progress, runner=TileRunner(model, device, 4, cache))
    wall = time.perf_counter() - t0
    return {"device": device, "pixels": result.width * result.height, "tiles": result.tiles, "wall_s": wall,
            "timings": result.timings, "peak_rss_mb": _peak_rss_mb(),
            "raster_pass_rss_mb": raster_pass_peak.get("mb"), "polygons": sum(c.polygons for c in result.classes)}


def main(argv: list[str]) -> None:
    """One JSON line: the run, plus for encoder-split models a second prompt on the same raster ("second")."""
    raster, out, model_id, tile, overlap = argv[0], argv[1], argv[2], int(argv[3]), int(argv[4])
    device = resolve_device(argv[5] if len(argv) > 5 else "cpu")
    cache = FeatureCache()
    record = _run(raster, out, model_id, CLASSES, tile, overlap, cache, device)
    if model_id == CLIP_RANDOM:
        record["second"] = _run(raster, out, model_id, SECOND_PROMPT, tile, overlap, cache, device)
    print(json.dumps(record))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main(sys.argv[1:])
