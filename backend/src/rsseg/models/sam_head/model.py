"""The SAM head: a light trainable decoder on a frozen SAM-family image encoder.

    input     [B, bands, H, W] (H, W multiples of 4), in the engine's [0, 1] units (config input_mean/std
              undo a bundle's normalisation first)
    adapter   bands != 3: a 1x1 conv bands -> 3 (starts as bands 1, 2, 3, cycled for fewer); trained only for
              more than 3 bands (config train_adapter), fixed for 1 or 2
    encoder   frozen, eval mode always: resize to the encoder's image_size (LiteMedSAM 256, SAM ViT-B 1024),
              normalise with the component's pixel mean/std, image encoder -> E x g x g embedding
              (E = 256; g = 64 for both: LiteMedSAM's stride 4, SAM ViT-B's stride 16)
    neck      1x1 ConvBNReLU E -> C, 3x3 ConvBNReLU C -> C (at g x g), bilinear to H/4 x W/4
    detail    on the input: 3x3 ConvBNReLU stride 2 -> C/4, 3x3 ConvBNReLU (H/2); stride 2 -> C/2, 3x3 (H/4)
    fuse4     concat(neck, detail H/4) -> two 3x3 ConvBNReLU -> C; bilinear x2
    fuse2     concat(., detail H/2) -> two 3x3 ConvBNReLU -> C/2
    head      Dropout2d, 1x1 conv -> K at H/2, bilinear to H x W

Only `encoder.` parameters are frozen (net.frozen_prefixes), so bundles hold the decoder, the detail
branch and the adapter; the encoder comes from its registry weights.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ModelError
from ...spec import ModelSpec

DEFAULTS: dict[str, Any] = {"decoder_channels": 64, "dropout": 0.1, "train_adapter": True}


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def _vector(values: Sequence[float] | None, default: float, n: int, name: str) -> torch.Tensor:
    values = [default] * n if values is None else [float(v) for v in values]
    if len(values) != n:
        raise ModelError(f"SAM head: {name} has {len(values)} values for {n} input bands")
    return torch.tensor(values, dtype=torch.float32).view(1, n, 1, 1)


class SamHead(nn.Module):
    """[B, in_chans, H, W] -> [B, K, H, W] logits; the SAM image encoder stays frozen and in eval mode."""

    multiple = 4
    frozen_prefixes = ("encoder.",)

    def __init__(self, config: dict[str, Any], in_chans: int, num_classes: int, encoder: nn.Module,
                 encoder_spec: ModelSpec) -> None:
        super().__init__()
        self.config = dict(config)
        cfg = {**DEFAULTS, **config}
        c = int(cfg["decoder_channels"])
        if c < 4 or c % 4:
            raise ModelError(f"SAM head: decoder_channels must be a positive multiple of 4, got {c}")
        self.encoder = encoder.requires_grad_(False).eval()
        self.image_size = int(encoder_spec.config["image_size"])
        embed = int(encoder_spec.config["prompt_embed_dim"])
        pre = encoder_spec.preprocess  # the component's normalisation, in [0, 1] units (models/sam/configs.py)
        self.register_buffer("pixel_mean", _vector(pre.mean, 0.0, 3, "pixel_mean"), persistent=False)
        self.register_buffer("pixel_std", _vector(pre.std, 1.0, 3, "pixel_std"), persistent=False)
        self.register_buffer("input_mean", _vector(cfg.get("input_mean"), 0.0, in_chans, "input_mean"),
                             persistent=False)
        self.register_buffer("input_std", _vector(cfg.get("input_std"), 1.0, in_chans, "input_std"),
                             persistent=False)
        self.adapter = None
        if in_chans != 3:
            self.adapter = nn.Conv2d(in_chans, 3, 1)
            with torch.no_grad():
                self.adapter.weight.zero_()
                self.adapter.bias.zero_()
                for out in range(3):  # bands 1, 2, 3 as R, G, B; fewer bands cycle (1 band: grey)
                    self.adapter.weight[out, out % in_chans] = 1.0
        # Only multispectral input (more than 3 bands) trains its band mix: it costs a backward pass through the
        # whole frozen encoder every step and stops the trainer from encoding each chip once; 1 or 2 bands
        # keep the grey (cycled) mapping, which is what a panchromatic image means anyway.
        self.train_adapter = bool(cfg["train_adapter"]) and self.adapter is not None and in_chans > 3
        self.neck = nn.Sequential(conv_bn_relu(embed, c, 1), conv_bn_relu(c, c, 3))
        self.detail2 = nn.Sequential(conv_bn_relu(in_chans, c // 4, 3, 2), conv_bn_relu(c // 4, c // 4, 3))
        self.detail4 = nn.Sequential(conv_bn_relu(c // 4, c // 2, 3, 2), conv_bn_relu(c // 2, c // 2, 3))
        self.fuse4 = nn.Sequential(conv_bn_relu(c + c // 2, c, 3), conv_bn_relu(c, c, 3))
        self.fuse2 = nn.Sequential(conv_bn_relu(c + c // 4, c // 2, 3), conv_bn_relu(c // 2, c // 2, 3))
        self.head = nn.Sequential(nn.Dropout2d(float(cfg["dropout"])), nn.Conv2d(c // 2, num_classes, 1))

    def train(self, mode: bool = True) -> "SamHead":
        super().train(mode)
        self.encoder.eval()  # frozen: its norms and dropouts never switch to training behaviour
        return self

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen encoder's embedding of the tiles `x` (the network's input)."""
        image = x * self.input_std + self.input_mean  # the engine's [0, 1] units
        if self.adapter is not None:
            image = self.adapter(image)
        size = self.image_size
        if tuple(image.shape[-2:]) != (size, size):
            shrink = image.shape[-2] > size or image.shape[-1] > size
            # in fp32: antialiased resizing has no half-precision kernel (on CPU)
            image = F.interpolate(image.float(), size=(size, size), mode="bilinear", align_corners=False,
                                  antialias=shrink)
        image = (image - self.pixel_mean) / self.pixel_std
        # no autograd through the encoder, unless a band adapter in front of it trains
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.training and self.train_adapter):
            return self.encoder(image)

    @property
    def embedding_is_fixed(self) -> bool:
        """Whether the encoder's embedding of a tile never changes during training (no band adapter trains in
        front of it), so a trainer may compute it once per tile (training/sam_head.py)."""
        return not self.train_adapter

    def forward(self, x: torch.Tensor, embedding: torch.Tensor | None = None) -> torch.Tensor:
        """`embedding`: the encoder's output for `x` when the caller has it already."""
        h, w = x.shape[-2:]
        d2 = self.detail2(x)
        d4 = self.detail4(d2)
        y = self.neck(self.embed(x) if embedding is None else embedding)
        y = F.interpolate(y, size=d4.shape[-2:], mode="bilinear", align_corners=False)
        y = self.fuse4(torch.cat([y, d4], dim=1))
        y = F.interpolate(y, size=d2.shape[-2:], mode="bilinear", align_corners=False)
        y = self.fuse2(torch.cat([y, d2], dim=1))
        return F.interpolate(self.head(y), size=(h, w), mode="bilinear", align_corners=False)


def encoder_spec(config: dict[str, Any]) -> ModelSpec:
    """The registry spec of the SAM component `config["encoder"]`."""
    from ..registry import get_spec

    spec = get_spec(str(config["encoder"]))
    if spec.builder != "sam" or spec.task != "component":
        raise ModelError(f"SAM head: encoder {spec.id!r} is not a SAM component (e.g. litemedsam, sam-vit-b)")
    return spec


def make_net(config: dict[str, Any], in_chans: int, num_classes: int, device: str = "cpu") -> SamHead:
    """A SAM head for `in_chans` bands and `num_classes` classes on the frozen image encoder of the component
    `config["encoder"]`, loaded with its checked weights (shared with other users of the component)."""
    from ..factory import load_component

    spec = encoder_spec(config)
    with torch.random.fork_rng(devices=[]):  # building a component (or finding it warm) leaves the seed alone
        sam = load_component(spec.id, device)
    return SamHead(config, in_chans, num_classes, sam.image_encoder, spec).to(device)
