"""The colour-prototype builder (the `test` model)."""

from __future__ import annotations

from typing import Any

from ...execution.tile_model import TileModel
from ...spec import ModelSpec
from ..factory import builder, refuse_options
from .model import ColourPrototypeModel


@builder("colour_prototype")
def build_colour_prototype(spec: ModelSpec, prompts: list[str], activation: str, device: str,
                           options: dict[str, Any]) -> TileModel:
    refuse_options(spec, options)
    return ColourPrototypeModel(prompts, activation, bands=spec.preprocess.bands, **spec.config)
