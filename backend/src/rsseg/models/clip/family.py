"""The CLIP family's builders: the class-list open-vocabulary model, and vision-language encoders
as components (RSRefSeg's reference SigLIP)."""

from __future__ import annotations

from typing import Any

from ...errors import ModelError
from ...execution.tile_model import TileModel
from ...spec import ModelSpec
from ..factory import builder, component_loader, load_component, warm, weights_id
from ..registry import get_spec
from .builder import load_clip
from .open_vocab import OpenVocabCLIP, OpenVocabConfig

component_loader("clip:vl-encoder")(load_clip)


@builder("clip:open-vocab")
def build_open_vocab(spec: ModelSpec, prompts: list[str], activation: str, device: str,
                     options: dict[str, Any]) -> TileModel:
    unknown = set(options) - set(OpenVocabConfig.__dataclass_fields__)
    if unknown:
        raise ModelError(f"model {spec.id!r} takes no {', '.join(sorted(unknown))} option")
    merged = {**spec.config, **options}
    for choice, tuning in (("upsample", "upsample_options"), ("sam_refine", "sam_options")):
        if merged.get(choice) != spec.config.get(choice) and tuning not in options:
            merged[tuning] = {}  # another method than the registry's: that method's own defaults
    config = OpenVocabConfig.from_dict(merged)
    clip, tokenizer = warm(spec, device, load_clip)
    encoder_id, sam = weights_id(spec), None
    if config.sam_refine != "off":
        sam = load_component(config.sam, device)
        encoder_id += f"+{weights_id(get_spec(config.sam))}"
    return OpenVocabCLIP(clip, tokenizer, prompts, activation, mean=spec.preprocess.mean, std=spec.preprocess.std,
                         config=config, device=device, encoder_id=encoder_id, sam=sam)
