"""Build a segment_anything `Sam` from a config dict, and load a registered SAM with its weights.

One factory for every SAM-family model (SAM ViT-B/L, LiteMedSAM, their tiny test twins): the
differences are data in `configs.py`. Weights load through `rsseg.weights.load_checkpoint`
(safetensors or a weights-only torch checkpoint) with strict key matching, so a wrong or truncated
file fails loudly instead of leaving layers at random init.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...spec import ModelSpec
from .configs import embedding_size

TINY_SEED = 0

if TYPE_CHECKING:  # pragma: no cover
    from segment_anything.modeling import Sam
    from torch import nn



def _segment_anything():
    # segment_anything imports torchvision, whose C++ ops may not match a CPU torch.
    from ...compat.torchvision_ops import ensure_torchvision

    ensure_torchvision()
    import segment_anything.modeling as modeling

    return modeling


def build_image_encoder(config: dict[str, Any]) -> "nn.Module":
    """The encoder a config names: "vit" (SAM's ViT with windowed + global attention) or "tiny_vit"."""
    import torch

    enc, size, out = config["encoder"], int(config["image_size"]), int(config["prompt_embed_dim"])
    if enc["kind"] == "vit":
        return _segment_anything().ImageEncoderViT(
            img_size=size, patch_size=enc["patch_size"], embed_dim=enc["embed_dim"], depth=enc["depth"],
            num_heads=enc["num_heads"], mlp_ratio=4, out_chans=out, qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
            window_size=enc["window_size"], global_attn_indexes=tuple(enc["global_attn_indexes"]))
    if enc["kind"] == "tiny_vit":
        from .tiny_vit import TinyViT

        return TinyViT(img_size=size, embed_dims=enc["embed_dims"], depths=enc["depths"],
                       num_heads=enc["num_heads"], window_sizes=enc["window_sizes"],
                       stem_stride=enc.get("stem_stride", 4), merge_strides=enc.get("merge_strides", (2, 2, 1)),
                       mlp_ratio=enc.get("mlp_ratio", 4.0), mbconv_expand_ratio=enc.get("mbconv_expand_ratio", 4.0),
                       out_chans=out)
    raise ValueError(f"unknown SAM image encoder kind {enc['kind']!r} (expected 'vit' or 'tiny_vit')")


def build_sam(config: dict[str, Any]) -> "Sam":
    """A randomly initialised Sam for `config`; it takes images in [0, 1] units (see configs.py)."""
    sam = _segment_anything()
    size, dim, grid = int(config["image_size"]), int(config["prompt_embed_dim"]), embedding_size(config)
    dec = config["decoder"]
    return sam.Sam(
        image_encoder=build_image_encoder(config),
        prompt_encoder=sam.PromptEncoder(embed_dim=dim, image_embedding_size=(grid, grid),
                                         input_image_size=(size, size), mask_in_chans=config["mask_in_chans"]),
        mask_decoder=sam.MaskDecoder(
            num_multimask_outputs=dec["num_multimask_outputs"],
            transformer=sam.TwoWayTransformer(depth=dec["depth"], embedding_dim=dim, mlp_dim=dec["mlp_dim"],
                                              num_heads=dec["num_heads"]),
            transformer_dim=dim, iou_head_depth=dec["iou_head_depth"], iou_head_hidden_dim=dec["iou_head_hidden_dim"]),
        pixel_mean=list(config["pixel_mean"]),
        pixel_std=list(config["pixel_std"]),
    )


def load_sam(spec: ModelSpec, device: str = "cpu", checkpoint: str | Path | None = None) -> "Sam":
    """Build `spec`'s Sam and load its weights, in eval mode on `device`.

    `checkpoint` overrides the installed file (hashed against the registry first when the spec has one).
    Specs without weight files (the "-tiny" test configs) keep their random init.
    """
    from ...weights import checked_copy, installed_path, load_checkpoint, load_state_strict

    if checkpoint is not None:
        path: Path | None = checked_copy(Path(checkpoint), spec) if spec.weights else Path(checkpoint)
    else:
        path = installed_path(spec) if spec.weights else None
    import torch

    with torch.random.fork_rng(devices=[]):  # a twin without weights is the same random model in every process
        torch.manual_seed(TINY_SEED)
        sam = build_sam(spec.config)  # after the path check: a missing file fails before a big build
    if path is not None:
        load_state_strict(sam, load_checkpoint(path), f"{path} (weights for {spec.id})")
    return sam.to(device).eval()
