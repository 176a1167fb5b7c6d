"""Run a SegmentRequest: resolve the device, build the model from the registry, run the engine."""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

from ..contracts import SegmentRequest, SegmentResult
from ..devices import resolve_device
from ..errors import ModelError
from ..models import build_model
from ..progress import CancelToken, ProgressCallback
from ..raster.engine import segment


def validate_prompt(request: SegmentRequest) -> None:
    if (request.classes is None) == (request.sentence is None):
        raise ModelError("give either a class list or a referring sentence, not both and not neither")


def run_segment(request: SegmentRequest, progress: Optional[ProgressCallback] = None,
                cancel: Optional[CancelToken] = None) -> SegmentResult:
    validate_prompt(request)
    device = resolve_device(request.device)
    model = build_model(request.model, request.classes, request.sentence, device)
    return segment(replace(request, device=device), model, progress, cancel)
