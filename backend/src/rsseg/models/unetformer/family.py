"""The UNetFormer family registers its bundle builder, its net maker (for the trainer) and the loader of its
encoder components (the ImageNet ResNet-18 that initialises training)."""

from __future__ import annotations

from typing import Any

from ...spec import ModelSpec
from ..factory import builder, component_loader, refuse_options
from ..segmenter import SegmenterTileModel, build_from_bundle, net_maker
from .model import UNetFormer, load_classifier, make_net

net_maker("unetformer")(make_net)
component_loader("unetformer:encoder")(load_classifier)


def _bundle_net(config: dict[str, Any], in_chans: int, num_classes: int, device: str) -> UNetFormer:
    """A bundle holds every weight: its ImageNet initialisation (`pretrained`) is not loaded again."""
    return make_net({**config, "pretrained": None}, in_chans, num_classes, device)


@builder("unetformer")
def build_unetformer(spec: ModelSpec, prompts: list[str], activation: str, device: str,
                     options: dict[str, Any]) -> SegmenterTileModel:
    refuse_options(spec, options)
    return build_from_bundle(spec, prompts, device, _bundle_net)
