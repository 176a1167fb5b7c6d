"""Run a SegmentRequest: resolve the device, build the model from the registry, run the engine."""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

from ..devices import resolve_device
from ..errors import ModelError, ParameterError
from ..models import build_model
from ..models.feature_cache import FeatureCache
from ..models.runner import TileRunner
from ..progress import CancelToken, ProgressCallback, report
from ..protocol.contracts import SegmentRequest, SegmentResult, check_class_names
from ..raster.engine import segment


def validate_prompt(request: SegmentRequest) -> None:
    if (request.classes is None) == (request.sentence is None):
        raise ModelError("give either a class list or a referring sentence, not both and not neither")
    if request.classes is not None:
        try:  # callers that build requests in Python (eval, bench) skip from_dict's check
            check_class_names(request.classes)
        except ValueError as exc:
            raise ParameterError(str(exc)) from None


def run_segment(request: SegmentRequest, progress: Optional[ProgressCallback] = None,
                cancel: Optional[CancelToken] = None, cache: Optional[FeatureCache] = None) -> SegmentResult:
    """The one path every caller takes; `cache` (the worker's) lets later prompts reuse image features."""
    validate_prompt(request)
    device = resolve_device(request.device)
    report(progress, "load model", 0, 1)
    model = build_model(request.model, request.classes, request.sentence, device, request.model_options)
    report(progress, "load model", 1, 1)
    request = replace(request, device=device)
    return segment(request, model, progress, cancel, runner=TileRunner(model, device, request.batch_size, cache))
