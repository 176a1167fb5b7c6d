"""The SAM-head family registers its bundle builder and its net maker (for the trainer)."""

from __future__ import annotations

from typing import Any

from ...spec import ModelSpec
from ..factory import builder, refuse_options
from ..segmenter import SegmenterTileModel, build_from_bundle, net_maker
from .model import make_net

net_maker("sam_head")(make_net)


@builder("sam_head")
def build_sam_head(spec: ModelSpec, prompts: list[str], activation: str, device: str,
                   options: dict[str, Any]) -> SegmenterTileModel:
    refuse_options(spec, options)
    return build_from_bundle(spec, prompts, device, make_net)
