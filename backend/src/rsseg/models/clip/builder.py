"""Build open_clip models from the registry: the architecture and tokenizer from data, the weights from our loader."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...spec import ModelSpec
from .configs import TINY_TOKENIZER

TINY_SEED = 0  # tiny twins are random but reproducible: the same id gives the same model
STRIP_PREFIXES = ("module.", "model.")  # DataParallel / wrapper prefixes some checkpoints carry


def open_clip_module():
    # open_clip imports torchvision, whose C++ ops may not match a CPU torch.
    from ...compat import ensure_torchvision

    ensure_torchvision()
    import open_clip

    return open_clip


def build_vl_encoder(config: dict[str, Any], seed: int = TINY_SEED) -> nn.Module:
    """A randomly initialised open_clip model: a named architecture, or an explicit (test) one, seeded."""
    open_clip = open_clip_module()
    if "open_clip_model" in config:
        return open_clip.create_model(config["open_clip_model"], pretrained=None)
    cls = open_clip.model.CustomTextCLIP if config.get("custom_text") else open_clip.model.CLIP
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(**config["architecture"])


def build_tokenizer(config: dict[str, Any]) -> Any:
    """The encoder's tokenizer. CLIP's BPE is bundled with open_clip; a Hugging Face one (SigLIP's)
    is read from its `tokenizer_dir` in the weights dir, where the registry downloads it."""
    if "tokenizer_dir" in config:
        if "open_clip_model" in config:
            text_cfg = (open_clip_module().get_model_config(config["open_clip_model"]) or {}).get("text_cfg", {})
        else:
            text_cfg = config["architecture"].get("text_cfg", {})
        return local_hf_tokenizer(config["tokenizer_dir"], text_cfg, _tokenizer_owner(config["tokenizer_dir"]))
    name = config.get("open_clip_model") or config.get("tokenizer", TINY_TOKENIZER)
    return open_clip_module().get_tokenizer(name)


def _tokenizer_owner(folder: str) -> str:
    """The first registry entry whose weight files bring the tokenizer in `folder` ("" for none): the model
    a missing tokenizer's fix downloads."""
    from ..registry import MODELS

    wanted = f"{folder}/tokenizer.json"
    return next((spec.id for spec in MODELS.values() if any(w.name == wanted for w in spec.weights)), "")


def local_hf_tokenizer(folder: str, text_cfg: dict[str, Any], model_id: str = "") -> Any:
    """open_clip's HFTokenizer with the text tower's settings (context length, cleaning), from disk only;
    `model_id`: the registry entry whose download brings it (the fix's subject)."""
    from ...errors import WeightsError
    from ...weights import weights_dir

    path = weights_dir() / folder
    if not (path / "tokenizer.json").is_file():
        raise WeightsError(f"the tokenizer is not installed in {path}; it comes with the weights of "
                           f"{model_id or 'the model that uses it'}", fixes=("download",), subject=model_id)
    return open_clip_module().tokenizer.HFTokenizer(str(path), context_length=text_cfg.get("context_length", 77),
                                              local_files_only=True, **text_cfg.get("tokenizer_kwargs", {}))


def build_clip(config: dict[str, Any]) -> tuple[nn.Module, Any]:
    """(CLIP model, tokenizer) with random weights, from `open_clip_model` or an explicit `architecture`."""
    return build_vl_encoder(config), build_tokenizer(config)


def strip_prefixes(state: dict) -> dict:
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
        load_state_strict(model, strip_prefixes(load_checkpoint(path)), f"{path} (weights for {spec.id})")
    return model.eval().to(device), tokenizer
