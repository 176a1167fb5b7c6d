"""The RFM-Seg family registers its net maker (for the trainer) and its bundle builder.

At segmentation a class list picks some of the bundle's classes, and a class written with synonyms
("building, house next to a road, roof") sets that class's VL-map prompts for the run (the name before the
first comma picks the class). The tile model is split at the encoders, so a second run over the same
tiles (other prompts, other classes) takes the host's and CLIP's features from the feature cache.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ...errors import ModelError
from ...spec import ModelSpec
from ..factory import builder, refuse_options
from ..segmenter import SegmenterTileModel, bundle_encoder_id, choose_classes, load_bundle_net, net_maker
from .model import make_net

net_maker("rfm_seg")(make_net)


class RFMSegTileModel(SegmenterTileModel):
    """A SegmenterTileModel split at its frozen encoders (EncodedTileModel)."""

    def __init__(self, net: Any, class_names: Sequence[str], mean: Sequence[float], std: Sequence[float],
                 device: str, keep: Sequence[int], encoder_id: str):
        super().__init__(net, class_names, mean, std, device, keep)
        self.encoder_id = encoder_id

    def encode(self, batch: np.ndarray) -> tuple:
        import torch

        x, (h, w) = self.prepare(batch)
        with torch.inference_mode():
            features = self.net.encode(x)
        size = torch.tensor([[h, w]] * x.shape[0], dtype=torch.int64)
        return tuple(f.cpu() for f in features) + (size,)

    def decode(self, features: tuple) -> np.ndarray:
        import torch

        *parts, size = features
        h, w = (int(v) for v in size[0])
        parts = [p.to(self.device) for p in parts]
        padded = (parts[0].shape[-2] * 4, parts[0].shape[-1] * 4)  # the host's first features are at 1/4
        with torch.inference_mode():
            logits = self.net.decode(parts, padded)
        return self.pick(logits[:, :, :h, :w])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(batch))


def _bundle_net(config: dict[str, Any], in_chans: int, num_classes: int, device: str):
    """A bundle holds the host's weights and its config the host's architecture: no host folder is read."""
    return make_net({**config, "host": None}, in_chans, num_classes, device)


def split_prompts(prompts: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Class names, and the VL-map prompts given with synonyms ("building, roof" -> building: [roof])."""
    names, given = [], {}
    for entry in prompts:
        parts = [p.strip() for p in entry.split(",") if p.strip()]
        names.append(parts[0] if parts else entry)
        if len(parts) > 1:
            given[parts[0].lower()] = parts[1:]
    return names, given


@builder("rfm_seg")
def build_rfm_seg(spec: ModelSpec, prompts: list[str], activation: str, device: str,
                  options: dict[str, Any]) -> RFMSegTileModel:
    from .prompts import class_prompts

    refuse_options(spec, options)
    net, info = load_bundle_net(spec, _bundle_net, device)
    names, given = split_prompts(prompts)
    try:
        keep = choose_classes(spec, names) if names else list(range(len(info.classes)))
    except ModelError as exc:
        raise ModelError(f"{exc}; to give a class its own VL-map prompts, write them after its name and end the "
                         "class with ';', e.g. \"water, a yellow pond;\"") from None
    if given:
        own = {c.lower(): p for c, p in zip(info.classes, net.prompts)}
        net.set_prompts(class_prompts(info.classes, {**own, **given}))
    return RFMSegTileModel(net, info.classes, info.mean, info.std, device, keep,
                           bundle_encoder_id("rfm-seg", spec, info))
