"""LoRA on RSRefSeg's encoders (peft), with the authors' targets and hyper-parameters.

Targets (module names as open_clip and segment_anything spell them, relative to RSRefSeg):
- SAM image encoder (segment_anything ImageEncoderViT): `sam.image_encoder.blocks.N.attn.qkv`,
  `.attn.proj`, `.mlp.lin1`, `.mlp.lin2` and the neck convs `sam.image_encoder.neck.0` / `.neck.2`
  (not `patch_embed.proj`, which a bare "proj" suffix would also catch); for a TinyViT encoder
  (MobileSAM / LiteMedSAM class) the same roles in its attention stages,
  `sam.image_encoder.layers.N.blocks.M.attn.qkv` / `.attn.proj` / `.mlp.fc1` / `.mlp.fc2`, and the neck.
- CLIP vision attention: open_clip VisionTransformer `clip.visual.transformer.resblocks.N.attn`
  (nn.MultiheadAttention: peft adapts the packed q/k/v in-projection and `out_proj`), or a timm
  trunk (SigLIP) `clip.visual.trunk.blocks.N.attn.qkv` / `.attn.proj`.
- CLIP text attention + projection: `clip.text.transformer.resblocks.N.attn` and
  `clip.text.text_projection` (CustomTextCLIP / SigLIP: an nn.Linear), or for a plain open_clip
  CLIP `clip.transformer.resblocks.N.attn`; its projection is a bare Parameter peft cannot wrap
  at the top level, so it is trained in full instead.
Everything else in the encoders is frozen; the AttnPrompter, SAM's prompt encoder and mask decoder
are trained in full. Adapters save as the trainable state dict only (`trainable_state_dict`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

SAM_TARGETS = (r"sam\.image_encoder\.(blocks\.\d+\.(attn\.(qkv|proj)|mlp\.lin[12])|neck\.[02]"
               r"|layers\.\d+\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.fc[12]))")  # ViT, or TinyViT's attention stages
CLIP_VISION_TARGETS = r"clip\.visual\.(transformer\.resblocks\.\d+\.attn|trunk\.blocks\.\d+\.attn\.(qkv|proj))"
CLIP_TEXT_TARGETS = r"clip\.(text\.)?transformer\.resblocks\.\d+\.attn|clip\.text\.text_projection"
TARGETS = f"{SAM_TARGETS}|{CLIP_VISION_TARGETS}|{CLIP_TEXT_TARGETS}"
FULLY_TRAINED = ("prompter", "sam.prompt_encoder", "sam.mask_decoder")


def apply_lora(model: nn.Module, r: int = 16, alpha: int = 16, dropout: float = 0.1,
               extra_trainable: Sequence[str] = ()) -> nn.Module:
    """Inject LoRA adapters in place and set what trains: adapters + prompter + SAM's prompt path,
    plus the submodules or parameters named in `extra_trainable` (e.g. a config's token embedding)."""
    from ...compat import ensure_torchvision

    ensure_torchvision()
    from peft import LoraConfig, inject_adapter_in_model

    model.requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=TARGETS), model)
    for name in FULLY_TRAINED:
        model.get_submodule(name).requires_grad_(True)
    projection = getattr(model.clip, "text_projection", None)
    if isinstance(projection, nn.Parameter):  # plain CLIP: see the module docstring
        projection.requires_grad_(True)
    for name in extra_trainable:
        try:
            target = model.get_submodule(name)
        except AttributeError:
            target = model.get_parameter(name)
        target.requires_grad_(True)
    return model


def apply_lora_config(model: nn.Module, config: dict[str, Any]) -> nn.Module:
    """`apply_lora` with a config's "lora" entry (r, alpha, dropout) and its "extra_trainable" names."""
    return apply_lora(model, **config["lora"], extra_trainable=config.get("extra_trainable", ()))


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only what training changed (adapters, prompter, prompt encoder, mask decoder): the file to ship.

    Buffers of the fully trained parts (e.g. the prompter's BatchNorm statistics) come along, since
    they change with training too.
    """
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    prefixes = tuple(f"{m}." for m in FULLY_TRAINED)
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in names or k.startswith(prefixes)}


def load_trainable_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load `trainable_state_dict` output into a model built from the same config with `apply_lora`."""
    expected = set(trainable_state_dict(model))
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise ValueError(f"adapter state does not match the model: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    model.load_state_dict(state, strict=False)
