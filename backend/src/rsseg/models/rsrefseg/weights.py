"""RSRefSeg's weights: the frozen base (a registry CLIP and a registry SAM) and a trained checkpoint.

No trained RSRefSeg was ever released, so a usable model is always two parts: the base encoders'
published weights (downloaded and checksummed through the registry) and the small trained state of
an `rsseg train` run (LoRA adapters, prompter, SAM's prompt encoder and mask decoder; see
weights/trained_checkpoint.py). The checkpoint names the model id it was trained for and is refused for
any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ...errors import ModelError
from ...spec import ModelSpec
from ...weights import installed_path, load_checkpoint, load_state_strict
from ...weights.trained_checkpoint import load_checkpoint as load_trained_checkpoint
from ...weights.trained_checkpoint import tensors_path
from ...weights.verify import sha256_file
from ..clip.builder import strip_prefixes
from ..registry import get_spec
from .lora import apply_lora_config, load_trainable_state_dict
from .model import build_rsrefseg


def load_base(spec: ModelSpec, device: str, seed: int = 0) -> Any:
    """The spec's RSRefSeg: seeded random init, then (real specs) the CLIP and SAM weight files, strict."""

    parts = [(name, get_spec(spec.config[key])) for name, key in (("clip", "clip_weights"), ("sam", "sam_weights"))
             if key in spec.config]
    paths = [(name, part, installed_path(part)) for name, part in parts]  # missing weights fail before the build
    model = build_rsrefseg(spec.config, seed=seed)
    for name, part, path in paths:
        load_state_strict(getattr(model, name), strip_prefixes(load_checkpoint(path)),
                          f"{path} (weights for {part.id})")
    return model.to(device).eval()


def checkpoint_id(path: str | Path) -> str:
    """A short content hash of a checkpoint's tensor file: it names the LoRA-changed image features."""
    return sha256_file(tensors_path(path))[:16]


def load_trained(spec: ModelSpec, device: str, checkpoint: Optional[str]) -> Any:
    """The base with LoRA applied and the checkpoint's trained state loaded (eval mode)."""
    ckpt = load_trained_checkpoint(checkpoint)
    trained_for = ckpt.record.get("model")
    if trained_for != spec.id:
        raise ModelError(f"{checkpoint} was trained for model {trained_for!r}, not {spec.id!r}",
                         fixes=("model",) if isinstance(trained_for, str) and trained_for else (),
                         subject=trained_for if isinstance(trained_for, str) else "")
    model = apply_lora_config(load_base(spec, "cpu"), spec.config)
    try:
        load_trainable_state_dict(model, ckpt.model)
    except ValueError as exc:
        raise ModelError(f"{checkpoint} does not fit {spec.id}'s architecture: {exc}") from None
    return model.to(device).eval()
