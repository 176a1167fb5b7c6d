"""Run a SegmentRequest: resolve the device, build the model from the registry, run the engine."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Optional

from ..devices import resolve_device
from ..errors import check_request
from ..execution.feature_cache import FeatureCache
from ..execution.tile_runner import TileRunner
from ..models import build_model, get_spec
from ..progress import CancelToken, ProgressCallback, report
from ..protocol.contracts import SegmentRequest, SegmentResult
from ..raster.engine import segment


class _NotedRunner(TileRunner):
    """A TileRunner whose notes also carry the model's own (`notes`, e.g. a sentence its text encoder read
    only in part): the engine puts the runner's notes in the result, which the model never reaches."""

    def notes(self) -> list[str]:
        return [*getattr(self.model, "notes", ()), *super().notes()]


def model_defaults(request: SegmentRequest) -> SegmentRequest:
    """The request with the model's own classes, bands, grid and fixed stretch where it names none (a trained
    bundle's)."""
    spec = get_spec(request.model)
    preprocess = spec.preprocess
    if request.classes is None and request.sentence is None and "bundle" in spec.config:
        request = replace(request, classes=list(spec.config["classes"]))
    if request.bands is None and preprocess.source_bands:
        request = replace(request, bands=tuple(preprocess.source_bands))
    if request.resolution is None and preprocess.resolution:
        request = replace(request, resolution=preprocess.resolution)
    if request.value_range is None and preprocess.value_range:
        request = replace(request, value_range=tuple(preprocess.value_range))
    return request


class WarmModel:
    """The last model built, kept for the next request with the same model, prompt, device and options: the
    rasters of a batch worker usually share them, so the weights load once per worker, not once per raster."""

    def __init__(self) -> None:
        self._key: Optional[str] = None
        self._model = None

    def get(self, request: SegmentRequest, device: str):
        key = json.dumps([request.model, request.classes, request.sentence, device, request.model_options],
                         sort_keys=True)
        if key != self._key:
            self._key = self._model = None  # the old one goes before the new one loads (or fails to)
            self._model = build_model(request.model, request.classes, request.sentence, device,
                                      request.model_options)
            self._key = key
        return self._model


def run_segment(request: SegmentRequest, progress: Optional[ProgressCallback] = None,
                cancel: Optional[CancelToken] = None, cache: Optional[FeatureCache] = None,
                warm: Optional[WarmModel] = None, rows: Optional[tuple[int, int]] = None) -> SegmentResult:
    """The one path every caller takes; `cache` (the worker's) lets later prompts reuse image features, `warm`
    (a batch worker's) keeps the model for the next raster; `rows` makes it one part of a split raster
    (raster/parts.py)."""
    request = model_defaults(request)
    check_request(request)  # before a device or a model is chosen
    numpy_cpu = get_spec(request.model).numpy_only and request.device in ("auto", "cpu")
    device = "cpu" if numpy_cpu else resolve_device(request.device)
    report(progress, "load model", 0, 1)
    model = (warm or WarmModel()).get(request, device)
    report(progress, "load model", 1, 1)
    request = replace(request, device=device)
    return segment(request, model, progress, cancel, runner=_NotedRunner(model, device, request.batch_size, cache),
                   rows=rows)
