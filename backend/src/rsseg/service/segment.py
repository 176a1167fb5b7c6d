"""Run a SegmentRequest: resolve the device, build the model from the registry, run the engine."""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

from ..devices import resolve_device
from ..errors import check_request
from ..execution.feature_cache import FeatureCache
from ..execution.tile_runner import TileRunner
from ..models import build_model
from ..progress import CancelToken, ProgressCallback, report
from ..protocol.contracts import SegmentRequest, SegmentResult
from ..raster.engine import segment


class _NotedRunner(TileRunner):
    """A TileRunner whose notes also carry the model's own (`notes`, e.g. a sentence its text encoder read
    only in part): the engine puts the runner's notes in the result, which the model never reaches."""

    def notes(self) -> list[str]:
        return [*getattr(self.model, "notes", ()), *super().notes()]


def run_segment(request: SegmentRequest, progress: Optional[ProgressCallback] = None,
                cancel: Optional[CancelToken] = None, cache: Optional[FeatureCache] = None) -> SegmentResult:
    """The one path every caller takes; `cache` (the worker's) lets later prompts reuse image features."""
    check_request(request)  # before a device or a model is chosen
    device = resolve_device(request.device)
    report(progress, "load model", 0, 1)
    model = build_model(request.model, request.classes, request.sentence, device, request.model_options)
    report(progress, "load model", 1, 1)
    request = replace(request, device=device)
    return segment(request, model, progress, cancel, runner=_NotedRunner(model, device, request.batch_size, cache))
