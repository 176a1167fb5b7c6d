"""SGSeg's image side: a frozen CLIP image tower plus small trainable deltas (docs/sgseg.md).

The tower's own weights are never trained or modified. What fine-tuning learns lives in zero-initialised
deltas added on the fly (ViT: the Q and V rows of each block's attention in-projection and the positional
embedding; ConvNeXt: the layer scales of the last two stages). The same weights therefore run as the tuned
student (`tuned=True`: deltas added) and as the frozen teacher of the generalisation compensation
(`tuned=False`: deltas ignored) without a deep copy of the encoder, and the two agree exactly while the
deltas are zero.

forward(images [B, 3, H, W] normalised, tuned) -> (dense [B, E, H/s, W/s] in the text embedding space,
[guidance maps [B, C_i, H/s_i, W/s_i] in the order asked for]).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ModelError
from ..clip.dense import interpolate_positions

DENSE_MODES = ("last", "eva")


class _FrozenTower(nn.Module):
    """Shared behaviour: the wrapped tower is frozen and stays in eval mode (no dropout / drop-path, the
    teacher is deterministic) whatever mode the backbone is put in."""

    visual: nn.Module

    def _freeze(self, visual: nn.Module) -> None:
        self.visual = visual.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> _FrozenTower:
        super().train(mode)
        self.visual.eval()
        return self

    def tuned_parameters(self) -> list[nn.Parameter]:
        """The deltas: the only trainable parameters (everything under `visual` is frozen)."""
        return [p for name, p in self.named_parameters() if not name.startswith("visual.")]


class ViTBackbone(_FrozenTower):
    """An open_clip VisionTransformer with zero-initialised deltas on Q, V and the positional embedding.

    guidance_layers: 0-based blocks whose patch tokens are returned as guidance maps, in this order.
    dense: "last" runs the last block as is; "eva" replaces it by attention only, (softmax(qq^T) + softmax(kk^T)) v
    (no residual, no MLP), which keeps patch tokens local. Either way ln_post and proj map the patch tokens
    into the text space.
    """

    def __init__(self, visual: nn.Module, guidance_layers: Sequence[int] = (3, 7), dense: str = "last") -> None:
        super().__init__()
        blocks = visual.transformer.resblocks
        for block in blocks:  # the packed nn.MultiheadAttention of open_clip's ResidualAttentionBlock
            attn = getattr(block, "attn", None)
            if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim \
                    or hasattr(block, "ln_1_kv"):
                raise ModelError(f"SGSeg: ViT block {type(block).__name__} is not supported; open_clip's "
                                 "ResidualAttentionBlock (packed attention in-projection) is")
        if getattr(visual, "attn_pool", None) is not None:
            raise ModelError("SGSeg: ViT towers with attentional pooling are not supported")
        if dense not in DENSE_MODES:
            raise ModelError(f"SGSeg: dense must be one of {', '.join(DENSE_MODES)}, not {dense!r}")
        self.guidance_layers = tuple(int(i) for i in guidance_layers)
        bad = [i for i in self.guidance_layers if not 0 <= i < len(blocks)]
        if bad:
            raise ModelError(f"SGSeg: guidance layers {bad} out of range; this ViT has blocks 0..{len(blocks) - 1}")
        self.dense = dense
        self._freeze(visual)
        width = int(visual.positional_embedding.shape[-1])
        weight = blocks[0].attn.in_proj_weight
        self.q_deltas = nn.ParameterList(
            nn.Parameter(torch.zeros(width, width, dtype=weight.dtype, device=weight.device)) for _ in blocks)
        self.v_deltas = nn.ParameterList(
            nn.Parameter(torch.zeros(width, width, dtype=weight.dtype, device=weight.device)) for _ in blocks)
        self.pos_delta = nn.Parameter(torch.zeros_like(visual.positional_embedding))
        self.width = width

    @property
    def stride(self) -> int:
        return int(self.visual.conv1.stride[0])

    @property
    def dense_dim(self) -> int:
        proj = self.visual.proj
        return int(proj.shape[1]) if proj is not None else self.width

    @property
    def guidance_dims(self) -> tuple[int, ...]:
        return (self.width,) * len(self.guidance_layers)

    @property
    def guidance_strides(self) -> tuple[int, ...]:
        return (self.stride,) * len(self.guidance_layers)

    def embed(self, images: torch.Tensor, tuned: bool = True) -> tuple[torch.Tensor, tuple[int, int]]:
        """dense.embed_patches with the positional delta: tokens [B, 1 + h*w, width] and the grid (h, w).
        The delta lives at the native grid and is resized with the embedding, so any input size works."""
        v = self.visual
        x = v.conv1(images)
        b, width, gh, gw = x.shape
        x = x.flatten(2).transpose(1, 2)
        pos = v.positional_embedding + self.pos_delta if tuned else v.positional_embedding
        cls = v.class_embedding.to(x.dtype).expand(b, 1, width)
        x = torch.cat([cls, x], dim=1) + interpolate_positions(pos, (gh, gw)).to(x.dtype)
        return v.ln_pre(x), (gh, gw)

    def _qkv(self, index: int, x: torch.Tensor, tuned: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-head q, k, v [B, heads, L, head_dim] of block `index` on normalised tokens [B, L, width]."""
        attn = self.visual.transformer.resblocks[index].attn
        wq, wk, wv = attn.in_proj_weight.chunk(3)
        bq, bk, bv = attn.in_proj_bias.chunk(3) if attn.in_proj_bias is not None else (None, None, None)
        if tuned:
            wq, wv = wq + self.q_deltas[index], wv + self.v_deltas[index]
        b, n, d = x.shape
        heads = attn.num_heads
        return tuple(F.linear(x, w, bias).reshape(b, n, heads, d // heads).transpose(1, 2)
                     for w, bias in ((wq, bq), (wk, bk), (wv, bv)))

    def run_block(self, index: int, x: torch.Tensor, tuned: bool = True) -> torch.Tensor:
        """open_clip's ResidualAttentionBlock on batch-first tokens [B, L, width], with the deltas when tuned:
        x + ls_1(out_proj(attention(ln_1 x))), then + ls_2(mlp(ln_2 x)). The weights of nn.MultiheadAttention
        do not depend on its batch_first flag, so tokens stay batch-first whatever the tower's setting."""
        block = self.visual.transformer.resblocks[index]
        q, k, v = self._qkv(index, block.ln_1(x), tuned)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(x.shape)
        x = x + block.ls_1(block.attn.out_proj(out))
        return x + block.ls_2(block.mlp(block.ln_2(x)))

    def run_eva(self, index: int, x: torch.Tensor, tuned: bool = True) -> torch.Tensor:
        """Block `index` as attention only: ls_1(out_proj((softmax(qq^T) + softmax(kk^T)) v)), no residual, no
        MLP (dense.self_self_attention without its vv term, with the deltas when tuned)."""
        block = self.visual.transformer.resblocks[index]
        q, k, v = self._qkv(index, block.ln_1(x), tuned)
        scale = q.shape[-1] ** -0.5
        weights = torch.softmax(q @ q.transpose(-2, -1) * scale, dim=-1) \
            + torch.softmax(k @ k.transpose(-2, -1) * scale, dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(x.shape)
        return block.ls_1(block.attn.out_proj(out))

    def forward(self, images: torch.Tensor, tuned: bool = True) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x, (gh, gw) = self.embed(images, tuned)
        b = x.shape[0]
        last = len(self.visual.transformer.resblocks) - 1
        outputs: dict[int, torch.Tensor] = {}
        for i in range(last + 1):
            if i == last and self.dense == "eva":
                if i in self.guidance_layers:  # the block as is, only for its guidance map
                    outputs[i] = self.run_block(i, x, tuned)
                x = self.run_eva(i, x, tuned)
            else:
                x = self.run_block(i, x, tuned)
                if i in self.guidance_layers:
                    outputs[i] = x
        patches = self.visual.ln_post(x[:, 1:])  # per-token norm: the class token does not matter here
        if self.visual.proj is not None:
            patches = patches @ self.visual.proj
        dense = patches.transpose(1, 2).reshape(b, -1, gh, gw)
        guidance = [outputs[i][:, 1:].transpose(1, 2).reshape(b, -1, gh, gw) for i in self.guidance_layers]
        return dense, guidance


class ConvNeXtBackbone(_FrozenTower):
    """An open_clip TimmModel tower with a timm ConvNeXt trunk, plus zero-initialised per-channel deltas on the
    layer scale (gamma) of every block of the last two stages (ConvNeXt has no attention to tune).

    Dense features: the last stage's map [B, C, H/32, W/32], then per pixel the trunk's final norm and open_clip's
    projection head (in the CLIP tower they run after global pooling; per pixel they put every location in the
    text space). guidance_stages: 0-based stages whose outputs are returned, in this order ((2, 1): 1/16, 1/8).
    """

    def __init__(self, visual: nn.Module, guidance_stages: Sequence[int] = (2, 1)) -> None:
        super().__init__()
        trunk = visual.trunk
        stages = trunk.stages
        self.guidance_stages = tuple(int(i) for i in guidance_stages)
        bad = [i for i in self.guidance_stages if not 0 <= i < len(stages)]
        if bad:
            raise ModelError(f"SGSeg: guidance stages {bad} out of range; this ConvNeXt has stages "
                             f"0..{len(stages) - 1}")
        self._freeze(visual)
        self.tuned_stages = tuple(range(max(0, len(stages) - 2), len(stages)))
        self.gamma_deltas = nn.ParameterList()
        for s in self.tuned_stages:
            for block in stages[s].blocks:
                ref = block.conv_dw.weight
                self.gamma_deltas.append(nn.Parameter(torch.zeros(ref.shape[0], dtype=ref.dtype, device=ref.device)))
        info = trunk.feature_info
        self._channels = [int(i["num_chs"]) for i in info]
        self._strides = [int(i["reduction"]) for i in info]
        ref = next(trunk.parameters())
        with torch.no_grad():  # E: whatever the head maps the last stage's channels to
            probe = torch.zeros(1, 1, 1, self._channels[-1], dtype=ref.dtype, device=ref.device)
            self._dense_dim = int(self.dense_head(probe).shape[-1])

    @property
    def stride(self) -> int:
        return self._strides[-1]

    @property
    def dense_dim(self) -> int:
        return self._dense_dim

    @property
    def guidance_dims(self) -> tuple[int, ...]:
        return tuple(self._channels[i] for i in self.guidance_stages)

    @property
    def guidance_strides(self) -> tuple[int, ...]:
        return tuple(self._strides[i] for i in self.guidance_stages)

    @staticmethod
    def run_block(block: nn.Module, x: torch.Tensor, delta: torch.Tensor | None = None) -> torch.Tensor:
        """timm's ConvNeXtBlock with its layer scale gamma + delta (gamma alone when delta is None)."""
        shortcut = x
        x = block.conv_dw(x)
        if block.use_conv_mlp:
            x = block.mlp(block.norm(x))
        else:
            x = block.mlp(block.norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        gamma = block.gamma
        if delta is not None:
            gamma = delta + 1.0 if gamma is None else gamma + delta
        if gamma is not None:
            x = x.mul(gamma.reshape(1, -1, 1, 1))
        return block.drop_path(x) + getattr(block, "shortcut", nn.Identity())(shortcut)

    def stage_features(self, images: torch.Tensor, tuned: bool = True) -> list[torch.Tensor]:
        """Every stage's output (the trunk's stem + stages, deltas on the last two stages when tuned)."""
        trunk = self.visual.trunk
        x = trunk.stem(images)
        features = []
        deltas = iter(self.gamma_deltas)
        for s, stage in enumerate(trunk.stages):
            if s in self.tuned_stages:
                x = stage.downsample(x)
                for block in stage.blocks:
                    delta = next(deltas)
                    x = self.run_block(block, x, delta if tuned else None)
            else:
                x = stage(x)
            features.append(x)
        return features

    def dense_head(self, x: torch.Tensor) -> torch.Tensor:
        """Channels-last final map [B, h, w, C] -> [B, h, w, E]: the trunk's final norm (norm_pre when timm
        applies it before pooling, else the head's norm), the head's pre-logits, then open_clip's projection."""
        trunk = self.visual.trunk
        x = x.permute(0, 3, 1, 2)
        norm = trunk.norm_pre if not isinstance(trunk.norm_pre, nn.Identity) \
            else getattr(trunk.head, "norm", nn.Identity())
        x = norm(x).permute(0, 2, 3, 1)  # timm's LayerNorm2d works per pixel on [B, C, h, w]
        x = getattr(trunk.head, "pre_logits", nn.Identity())(x)
        return self.visual.head(x)

    def forward(self, images: torch.Tensor, tuned: bool = True) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = self.stage_features(images, tuned)
        dense = self.dense_head(features[-1].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return dense, [features[i] for i in self.guidance_stages]


def make_backbone(visual: nn.Module, config: dict[str, Any]) -> nn.Module:
    """The backbone for an open_clip image tower: ViTBackbone for a VisionTransformer, ConvNeXtBackbone for a
    timm ConvNeXt trunk. config: "guidance_layers" (ViT), "guidance_stages" (ConvNeXt), "dense" ("last" or "eva",
    ViT only; a ConvNeXt takes "last")."""
    from ..clip.builder import open_clip_module

    dense = str(config.get("dense", "last"))
    if isinstance(visual, open_clip_module().transformer.VisionTransformer):
        return ViTBackbone(visual, config.get("guidance_layers", (3, 7)), dense)
    trunk = getattr(visual, "trunk", None)
    if trunk is not None and "ConvNeXt" in type(trunk).__name__:
        if dense != "last":
            raise ModelError(f"SGSeg: dense={dense!r} needs a ViT tower; a ConvNeXt takes dense='last'")
        return ConvNeXtBackbone(visual, config.get("guidance_stages", (2, 1)))
    name = type(trunk if trunk is not None else visual).__name__
    raise ModelError(f"SGSeg: image tower {name} is not supported; supported: open_clip VisionTransformer and "
                     "open_clip timm towers with a ConvNeXt trunk")
