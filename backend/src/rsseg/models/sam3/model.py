"""Building SAM 3 from the registry: transformers' Sam3Model from the architecture as data, the weights
through our verified loader, the tokenizer from the weights folder (or open_clip's copy for the tiny twin).

transformers' SAM 3 code imports torchvision, so it is imported only after ensure_torchvision().
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ...errors import WeightsError
from ...spec import ModelSpec
from .configs import TINY_SEED
from .text import MERGES_FILE, VOCAB_FILE, Sam3Tokenizer, bundled_tokenizer, hub_tokenizer

MODEL_FILE = "model.safetensors"
# The hub's file holds Sam3VideoModel: the image detector under "detector_model." (Sam3Model's own
# prefix) and a video tracker, which image segmentation does not use.
DETECTOR_PREFIX = "detector_model."
TRACKER_PREFIXES = ("tracker_model.", "tracker_neck.")


def sam3_module() -> ModuleType:
    """transformers' modeling_sam3, importable once torchvision is (see rsseg.compat)."""
    from ...compat import ensure_torchvision

    ensure_torchvision()
    from transformers.models.sam3 import modeling_sam3

    return modeling_sam3


def build_sam3(architecture: dict[str, Any], seed: int = TINY_SEED) -> nn.Module:
    """A Sam3Model of `architecture` (Sam3Config's arguments), randomly initialised from `seed`, in eval mode."""
    modeling = sam3_module()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return modeling.Sam3Model(modeling.Sam3Config(**copy.deepcopy(architecture))).eval()


def detector_state(path: Path) -> dict[str, torch.Tensor]:
    """Sam3Model's tensors from a safetensors file: the hub's (the detector's keys without their prefix, the
    tracker's left unread) or a Sam3Model's own."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            return {key.removeprefix(DETECTOR_PREFIX): file.get_tensor(key) for key in file.keys()
                    if not key.startswith(TRACKER_PREFIXES)}
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError...: one line naming the file
        raise WeightsError(f"{path} is not a complete safetensors file ({type(exc).__name__}: {exc})") from None


def load_sam3(spec: ModelSpec, device: str = "cpu") -> tuple[nn.Module, Sam3Tokenizer]:
    """(Sam3Model in eval mode on `device`, its tokenizer). A real entry's files all pass their sha256 check
    (verify.checked_paths) before any is read, and the weights must fit the architecture key for key."""
    from ...weights import checked_paths, load_state_strict

    config = spec.config
    context_length = int(config["context_length"])
    if not spec.weights:
        model = build_sam3(config["architecture"], int(config.get("seed", TINY_SEED)))
        return model.to(device), bundled_tokenizer(context_length)
    paths = {weight.name.rsplit("/", 1)[-1]: path for weight, path in zip(spec.weights, checked_paths(spec))}
    model = build_sam3(config["architecture"])
    load_state_strict(model, detector_state(paths[MODEL_FILE]), f"{paths[MODEL_FILE]} (weights for {spec.id})")
    return model.to(device), hub_tokenizer(paths[VOCAB_FILE], paths[MERGES_FILE], context_length)
