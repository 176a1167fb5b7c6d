"""The RSRefSeg builder: random-seeded test configurations, or a base with a trained checkpoint."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from ...errors import ModelError, WeightsError
from ...execution.tile_model import TileModel
from ...spec import ModelSpec
from ..factory import builder, refuse_options, warm, weights_id
from .configs import TINY_SEED
from .tile_model import RSRefSegTileModel
from .weights import checkpoint_id, load_base, load_trained


def _load_seeded(spec: ModelSpec, device: str) -> Any:
    return load_base(spec, device, seed=TINY_SEED)


def _load_trained(spec: ModelSpec, device: str, checkpoint: str) -> tuple[Any, str]:
    """(the trained model, its checkpoint's content id), kept warm together: hashed once per load.

    A checkpoint that is missing, unreadable or does not fit is fixed by choosing another one (the
    "checkpoint" fix); errors that name their own fix (missing base weights, another model's checkpoint)
    keep it."""
    try:
        return load_trained(spec, device, checkpoint), checkpoint_id(checkpoint)
    except ModelError as exc:
        if exc.fixes or isinstance(exc, WeightsError):
            raise
        raise ModelError(str(exc), fixes=("checkpoint",), subject=spec.id) from None


@builder("rsrefseg")
def build_rsrefseg(spec: ModelSpec, prompts: list[str], activation: str, device: str,
                   options: dict[str, Any]) -> TileModel:
    options = dict(options)
    checkpoint = options.pop("checkpoint", None)
    refuse_options(spec, options)
    if checkpoint is None:
        if spec.needs_checkpoint:
            raise ModelError(f"{spec.id} has no released trained weights", fixes=("checkpoint",), subject=spec.id)
        return RSRefSegTileModel(warm(spec, device, _load_seeded), prompts[0], device, weights_id(spec))
    path = Path(checkpoint).resolve()
    stamp = path.stat().st_mtime_ns if path.is_file() else None
    model, trained_id = warm(spec, device, functools.partial(_load_trained, checkpoint=str(path)),
                             variant=("checkpoint", str(path), stamp))
    return RSRefSegTileModel(model, prompts[0], device, f"{weights_id(spec)}+ckpt:{trained_id}")
