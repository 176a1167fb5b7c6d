"""UNetFormer: a timm ResNet encoder and a decoder of global-local transformer blocks.

The architecture of Wang et al., "UNetFormer: A UNet-like transformer for efficient semantic
segmentation of remote sensing urban scene imagery" (ISPRS J. 2022), as in GeoSeg's
geoseg/models/UNetFormer.py, written anew here (docs/models-trainable.md says what differs):

    encoder  timm ResNet-18, features at 1/4, 1/8, 1/16, 1/32 (64, 128, 256, 512 channels)
    decoder  1x1 ConvBN 512 -> C, GLTB at 1/32
             WF (+ 1/16 features), GLTB          WF: ReLU-normalised weighted sum of the upsampled
             WF (+ 1/8 features), GLTB               path and a 1x1 projection of the skip, 3x3 ConvBNReLU
             FRH (+ 1/4 features)                FRH: WF, then pixel (depthwise 3x3) and channel (squeeze)
             head 3x3 ConvBNReLU, Dropout2d, 1x1 -> K, bilinear to the input size          attention
    aux      (training) the three GLTB outputs summed at 1/8 -> 3x3 ConvBNReLU, Dropout, 1x1 -> K

A GLTB (global-local transformer block) is BN -> global-local attention (+ residual), BN -> MLP of
1x1 convs (+ residual). Its attention adds a local branch (3x3 and 1x1 ConvBN) to window
self-attention with a relative position bias, mixes windows with two strip average pools (ws x 1 and
1 x ws), and projects with a separable ws x ws ConvBN.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .configs import R18

FEATURE_INDICES = (1, 2, 3, 4)  # timm features_only: strides 4, 8, 16, 32


def timm_module():
    """timm, imported after the torchvision-on-CPU fix (it imports torchvision)."""
    from ...compat import ensure_torchvision

    ensure_torchvision()
    import timm

    return timm


def _padding(kernel: int, stride: int = 1, dilation: int = 1) -> int:
    return ((stride - 1) + dilation * (kernel - 1)) // 2


def conv(cin: int, cout: int, kernel: int = 3, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride, _padding(kernel, stride), bias=bias)


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(conv(cin, cout, kernel, stride), nn.BatchNorm2d(cout))


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(conv(cin, cout, kernel, stride), nn.BatchNorm2d(cout), nn.ReLU6())


def separable_conv_bn(cin: int, cout: int, kernel: int) -> nn.Sequential:
    """Depthwise kernel x kernel conv, BN, pointwise 1x1 conv."""
    return nn.Sequential(nn.Conv2d(cin, cin, kernel, padding=_padding(kernel), groups=cin, bias=False),
                         nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 1, bias=False))


def pad(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """F.pad (left, right, top, bottom) by reflection, or replication where the map is too small to reflect
    (a 32-pixel tile has a 1x1 map at 1/32)."""
    left, right, top, bottom = pads
    fits = max(left, right) < x.shape[-1] and max(top, bottom) < x.shape[-2]
    return F.pad(x, pads, mode="reflect" if fits else "replicate")


class GlobalLocalAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"UNetFormer: decode_channels {dim} is not a multiple of num_heads {num_heads}")
        if window_size < 2 or window_size % 2:
            raise ValueError(f"UNetFormer: window_size must be even and at least 2, got {window_size}")
        self.num_heads, self.ws = num_heads, window_size
        self.qkv = conv(dim, 3 * dim, 1)
        self.local1 = conv_bn(dim, dim, 3)
        self.local2 = conv_bn(dim, dim, 1)
        self.proj = separable_conv_bn(dim, dim, window_size)
        half = window_size // 2 - 1  # with the one-pixel pad below, the pools keep the size
        self.attn_x = nn.AvgPool2d((window_size, 1), stride=1, padding=(half, 0))
        self.attn_y = nn.AvgPool2d((1, window_size), stride=1, padding=(0, half))
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        grid = torch.arange(window_size)
        coords = torch.stack(torch.meshgrid(grid, grid, indexing="ij")).flatten(1)  # 2, L
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)  # L, L, 2
        index = relative[..., 0] * (2 * window_size - 1) + relative[..., 1]
        self.register_buffer("relative_position_index", index, persistent=False)  # derived, not in bundles

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        ws, heads = self.ws, self.num_heads
        local = self.local2(x) + self.local1(x)
        ph, pw = -h % ws, -w % ws
        padded = pad(x, (0, pw, 0, ph)) if ph or pw else x
        hh, ww, d = (h + ph) // ws, (w + pw) // ws, c // heads
        # channels (qkv, head, dim), space (window row, in-window row, window col, in-window col)
        qkv = self.qkv(padded).reshape(b, 3, heads, d, hh, ws, ww, ws)
        q, k, v = qkv.permute(1, 0, 4, 6, 2, 5, 7, 3).reshape(3, b * hh * ww, heads, ws * ws, d).unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        bias = bias.reshape(ws * ws, ws * ws, heads).permute(2, 0, 1).unsqueeze(0).to(q.dtype)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # softmax(q k^T / sqrt(d) + bias) v
        attn = attn.reshape(b, hh, ww, heads, ws, ws, d).permute(0, 3, 6, 1, 4, 2, 5).reshape(b, c, hh * ws, ww * ws)
        attn = attn[:, :, :h, :w]
        out = self.attn_x(pad(attn, (0, 0, 0, 1))) + self.attn_y(pad(attn, (0, 1, 0, 0)))
        out = self.proj(pad(out + local, (0, 1, 0, 1)))
        return out[:, :, :h, :w]


class Block(nn.Module):
    """GLTB: x + attention(BN(x)), then x + MLP(BN(x)) (1x1 convs, ReLU6, ratio 4)."""

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = GlobalLocalAttention(dim, num_heads, window_size)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.ReLU6(), nn.Conv2d(hidden, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class WeightedFusion(nn.Module):
    """WF: upsample the decoder path to the skip's size, add it to a 1x1 projection of the skip with two
    learned ReLU-normalised weights, then a 3x3 ConvBNReLU."""

    def __init__(self, in_channels: int, channels: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.pre_conv = conv(in_channels, channels, 1)
        self.weights = nn.Parameter(torch.ones(2))
        self.eps = eps
        self.post_conv = conv_bn_relu(channels, channels, 3)

    def fuse(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        weights = F.relu(self.weights)
        weights = weights / (weights.sum() + self.eps)
        return self.post_conv(weights[0] * self.pre_conv(skip) + weights[1] * x)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.fuse(x, skip)


class FeatureRefinementHead(WeightedFusion):
    """FRH: a WF with the 1/4 features, then pixel attention (depthwise 3x3, sigmoid) plus channel attention
    (global pool, C -> C/16 -> C, sigmoid), a separable 3x3 ConvBN and a 1x1 ConvBN shortcut."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__(in_channels, channels)
        squeezed = max(1, channels // 16)
        self.pa = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, groups=channels), nn.Sigmoid())
        self.ca = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv(channels, squeezed, 1), nn.ReLU6(),
                                conv(squeezed, channels, 1), nn.Sigmoid())
        self.shortcut = conv_bn(channels, channels, 1)
        self.proj = separable_conv_bn(channels, channels, 3)
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.fuse(x, skip)
        shortcut = self.shortcut(x)
        x = self.pa(x) * x + self.ca(x) * x
        return self.act(self.proj(x) + shortcut)


class AuxHead(nn.Module):
    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = conv_bn_relu(channels, channels)
        self.drop = nn.Dropout(0.1)
        self.conv_out = conv(channels, num_classes, 1)

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        x = self.conv_out(self.drop(self.conv(x)))
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class Decoder(nn.Module):
    def __init__(self, encoder_channels: Sequence[int], channels: int, dropout: float, window_size: int,
                 num_heads: int, num_classes: int, aux: bool) -> None:
        super().__init__()
        self.pre_conv = conv_bn(encoder_channels[-1], channels, 1)
        self.b4 = Block(channels, num_heads, window_size)
        self.p3 = WeightedFusion(encoder_channels[-2], channels)
        self.b3 = Block(channels, num_heads, window_size)
        self.p2 = WeightedFusion(encoder_channels[-3], channels)
        self.b2 = Block(channels, num_heads, window_size)
        self.p1 = FeatureRefinementHead(encoder_channels[-4], channels)
        self.segmentation_head = nn.Sequential(conv_bn_relu(channels, channels), nn.Dropout2d(dropout),
                                               conv(channels, num_classes, 1))
        self.aux_head = AuxHead(channels, num_classes) if aux else None

    def forward(self, res1: torch.Tensor, res2: torch.Tensor, res3: torch.Tensor, res4: torch.Tensor,
                size: Sequence[int]) -> "torch.Tensor | tuple[torch.Tensor, torch.Tensor]":
        x4 = self.b4(self.pre_conv(res4))
        x3 = self.b3(self.p3(x4, res3))
        x2 = self.b2(self.p2(x3, res2))
        logits = self.segmentation_head(self.p1(x2, res1))
        logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
        if not self.training or self.aux_head is None:
            return logits
        at = x2.shape[-2:]  # GeoSeg's UpsamplingBilinear2d: align_corners=True
        context = (F.interpolate(x4, size=at, mode="bilinear", align_corners=True)
                   + F.interpolate(x3, size=at, mode="bilinear", align_corners=True) + x2)
        return logits, self.aux_head(context, size)


class UNetFormer(nn.Module):
    """[B, in_chans, H, W] (H, W multiples of 32) -> [B, K, H, W] logits; (logits, aux logits) in training
    when the config has `aux`."""

    multiple = 32
    frozen_prefixes: tuple[str, ...] = ()  # everything trains (ImageNet weights only initialise the encoder)

    def __init__(self, config: dict[str, Any], in_chans: int, num_classes: int) -> None:
        super().__init__()
        self.config = dict(config)
        cfg = {**R18, **config}
        self.encoder = timm_module().create_model(
            cfg["encoder"], features_only=True, out_indices=FEATURE_INDICES, pretrained=False, in_chans=in_chans,
            **cfg.get("encoder_kwargs", {}))
        self.decoder = Decoder(self.encoder.feature_info.channels(), int(cfg["decode_channels"]),
                               float(cfg["dropout"]), int(cfg["window_size"]), int(cfg["num_heads"]),
                               num_classes, bool(cfg["aux"]))

    def forward(self, x: torch.Tensor) -> "torch.Tensor | tuple[torch.Tensor, torch.Tensor]":
        return self.decoder(*self.encoder(x), x.shape[-2:])


def build_classifier(config: dict[str, Any]) -> nn.Module:
    """The timm classifier an encoder component's weights fit (3 bands, ImageNet's 1000 classes)."""
    return timm_module().create_model(config["encoder"], pretrained=False, **config.get("encoder_kwargs", {}))


def load_classifier(spec: Any, device: str = "cpu") -> nn.Module:
    """The component loader of the encoder components (registry "resnet18-imagenet"): the timm classifier
    with its checked weights (strict keys), or random weights for a spec without files (the tiny twin)."""
    from ...weights import installed_path, load_checkpoint, load_state_strict

    path = installed_path(spec) if spec.weights else None
    model = build_classifier(spec.config)
    if path is not None:
        load_state_strict(model, load_checkpoint(path), f"{path} (weights for {spec.id})")
    return model.to(device).eval()


def load_pretrained_encoder(encoder: nn.Module, component_id: str, in_chans: int) -> None:
    """Initialise a features_only encoder from the registry component `component_id` (its classifier
    dropped). With other than 3 bands, the first conv's RGB kernels are adapted the way timm adapts them
    (timm.models.adapt_input_conv: summed for 1 band, else repeated cyclically and scaled by 3/bands)."""
    from ...weights import load_state_strict
    from ..factory import load_component

    with torch.random.fork_rng(devices=[]):  # building a component (or finding it warm) leaves the seed alone
        classifier = load_component(component_id, "cpu")
    cfg = classifier.pretrained_cfg
    head, first = f"{cfg.get('classifier', 'fc')}.", f"{cfg.get('first_conv', 'conv1')}.weight"
    state = {k: v for k, v in classifier.state_dict().items() if not k.startswith(head)}
    if in_chans != 3:
        from timm.models import adapt_input_conv

        state[first] = adapt_input_conv(in_chans, state[first].clone())
    load_state_strict(encoder, state, f"the weights of {component_id}")


def make_net(config: dict[str, Any], in_chans: int, num_classes: int, device: str = "cpu") -> UNetFormer:
    """A UNetFormer for `in_chans` bands and `num_classes` classes; its encoder starts from the ImageNet
    weights of the component `config["pretrained"]` when named (else random)."""
    net = UNetFormer(config, in_chans, num_classes)
    if config.get("pretrained"):
        load_pretrained_encoder(net.encoder, str(config["pretrained"]), in_chans)
    return net.to(device)
