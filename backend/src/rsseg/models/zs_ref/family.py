"""The zero-shot referring builder: a registered CLIP and a registered SAM, no trained weights."""

from __future__ import annotations

from typing import Any

from ...errors import ModelError
from ...execution.tile_model import TileModel
from ...spec import ModelSpec
from ..clip.builder import load_clip
from ..factory import builder, load_component, warm, weights_id
from ..registry import get_spec
from .global_local import ScoringConfig
from .proposals import ProposalConfig
from .tile_model import ZeroShotReferringTileModel


@builder("zs_ref")
def build_zero_shot_referring(spec: ModelSpec, prompts: list[str], activation: str, device: str,
                              options: dict[str, Any]) -> TileModel:
    options = dict(options)
    top_k = options.pop("top_k", None)
    if options:
        raise ModelError(f"model {spec.id!r} takes no {', '.join(sorted(options))} option (a zero-shot referring "
                         "model takes only top-k)")
    clip_spec = get_spec(spec.config["clip"])
    clip, tokenizer = warm(clip_spec, device, load_clip)
    sam = load_component(spec.config["sam"], device)
    return ZeroShotReferringTileModel(
        clip, tokenizer, sam, prompts[0], device, weights_id(spec), clip_spec.preprocess.mean, clip_spec.preprocess.std,
        ProposalConfig.from_dict(spec.config.get("proposals", {})),
        ScoringConfig.from_dict(spec.config.get("scoring", {})), top_k)
