"""Build open_clip CLIPs from the registry: the architecture from data, the weights from our loader."""

from __future__ import annotations

import torch

from ..spec import ModelSpec
from .configs import TINY_TOKENIZER

TINY_SEED = 0  # tiny twins are random but reproducible: the same id gives the same model
STRIP_PREFIXES = ("module.", "model.")  # DataParallel / wrapper prefixes some checkpoints carry


def build_clip(config: dict):
    """(CLIP model, tokenizer) with random weights, from `open_clip_model` or an explicit `architecture`."""
    from ...compat import ensure_torchvision

    ensure_torchvision()
    import open_clip

    if "open_clip_model" in config:
        name = config["open_clip_model"]
        return open_clip.create_model(name, pretrained=None), open_clip.get_tokenizer(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = open_clip.model.CLIP(**config["architecture"])
    return model, open_clip.get_tokenizer(config.get("tokenizer", TINY_TOKENIZER))


def _strip(state: dict) -> dict:
    for prefix in STRIP_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_clip(spec: ModelSpec, device: str = "cpu"):
    """The spec's CLIP in eval mode on `device`, with its checkpoint (strict keys) when it is a real model."""
    from ...weights import installed_path, load_checkpoint, load_state_strict

    path = installed_path(spec) if spec.weights else None
    model, tokenizer = build_clip(spec.config)
    if path is not None:
        load_state_strict(model, _strip(load_checkpoint(path)), f"{path} (weights for {spec.id})")
    return model.eval().to(device), tokenizer
