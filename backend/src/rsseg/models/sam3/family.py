"""The SAM 3 builder: a class list (tiled) or a short sentence (the whole region), on a warm Sam3Model."""

from __future__ import annotations

from typing import Any

from ...errors import ModelError
from ...execution.tile_model import SIGMOID, TileModel
from ...spec import ModelSpec
from ..factory import builder, warm, weights_id
from .model import load_sam3
from .tile_model import Sam3Settings, Sam3TileModel


@builder("sam3")
def build_sam3(spec: ModelSpec, prompts: list[str], activation: str, device: str,
               options: dict[str, Any]) -> TileModel:
    """`activation` tells the prompt apart (factory.build_model: SIGMOID for a sentence); SAM 3 itself scores
    every class on its own, so a class list gets sigmoid logits too."""
    options = dict(options)
    top_k = options.pop("top_k", None)
    if options:
        raise ModelError(f"model {spec.id!r} takes no {', '.join(sorted(options))} option (SAM 3 takes only top-k, "
                         "for a sentence)")
    sentence = activation == SIGMOID
    if top_k is not None:
        if not sentence:
            raise ModelError("top-k applies to a referring sentence, not to a class list (which keeps every object "
                             "of every class)")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ModelError(f"top-k must be a whole number of objects, at least 1, got {top_k!r}")
    model, tokenizer = warm(spec, device, load_sam3)
    return Sam3TileModel(model, tokenizer, prompts, sentence, device, weights_id(spec),
                         Sam3Settings.from_config(spec.config), spec.preprocess.mean, spec.preprocess.std, top_k)
