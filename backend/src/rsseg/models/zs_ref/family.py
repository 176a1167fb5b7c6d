"""The zero-shot referring builder: a registered CLIP and a registered SAM, no trained weights."""

from __future__ import annotations

from dataclasses import replace
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


def proposals_for(config: dict[str, Any], device: str, **overrides: Any) -> tuple[ProposalConfig, list[str]]:
    """The proposal settings of a config on `device` (a coarser point grid on a CPU), and the note saying so."""
    proposals = ProposalConfig.from_dict({**config.get("proposals", {}), **overrides})
    cpu_points = config.get("cpu_points_per_side")
    if device != "cpu" or not cpu_points or cpu_points >= proposals.points_per_side:
        return proposals, []
    note = (f"on the CPU, SAM's proposals come from a {cpu_points} x {cpu_points} point grid (a GPU uses "
            f"{proposals.points_per_side} x {proposals.points_per_side}): small objects may be missed")
    return replace(proposals, points_per_side=cpu_points), [note]


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
    proposals, notes = proposals_for(spec.config, device)
    model = ZeroShotReferringTileModel(
        clip, tokenizer, sam, prompts[0], device, f"{weights_id(spec)}+points{proposals.points_per_side}",
        clip_spec.preprocess.mean, clip_spec.preprocess.std, proposals,
        ScoringConfig.from_dict(spec.config.get("scoring", {})), top_k)
    model.notes += notes
    return model
