"""What RFM-Seg takes from a frozen RemoteCLIP ResNet (open_clip's ModifiedResNet): multi-scale features and
the window embeddings the VL-map compares with text.

V features, at the strides of a ResNet-18 host: the stem (width at 1/4) and the inner (bottleneck) activation
of the last block of layer2, layer3 and layer4 (2, 4 and 8 x width at 1/8, 1/16, 1/32: 128, 256, 512 for
RN50, ResNet-18's widths). The public code reads the same tensors by running the blocks by hand.

Window embeddings: every `window` x `window` window (stride 1) of layer4's output pooled by CLIP's own
attention pool, as if each window were a 224-px image, in one batched pass (the public code loops over
windows and images in Python).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

WINDOW_CHUNK = 512  # windows pooled per attention-pool call (bounds the memory of large tiles)


def _bottleneck(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """open_clip's Bottleneck.forward, also returning the activation after its 3x3 conv (and avgpool)."""
    inner = block.avgpool(block.act2(block.bn2(block.conv2(block.act1(block.bn1(block.conv1(x)))))))
    out = block.bn3(block.conv3(inner))
    identity = x if block.downsample is None else block.downsample(x)
    return block.act3(out + identity), inner


def _layer(layer: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    for block in layer[:-1]:
        x = block(x)
    return _bottleneck(layer[-1], x)


def visual_features(visual: nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(stem, inner2, inner3, inner4, layer4 output) of CLIP-normalised RGB `image` [B, 3, H, W]."""
    stem = visual.stem(image)
    x = visual.layer1(stem)
    x, c2 = _layer(visual.layer2, x)
    x, c3 = _layer(visual.layer3, x)
    x, c4 = _layer(visual.layer4, x)
    return stem, c2, c3, c4, x


def feature_channels(visual: nn.Module) -> tuple[int, int, int, int]:
    """The channels of the four V features."""
    return (visual.layer1[0].conv1.in_channels, visual.layer2[-1].conv2.out_channels,
            visual.layer3[-1].conv2.out_channels, visual.layer4[-1].conv2.out_channels)


def attention_window(visual: nn.Module) -> int:
    """The map side CLIP's attention pool was trained on (its positional embedding: 7 for 224 px)."""
    return int(round((visual.attnpool.positional_embedding.shape[0] - 1) ** 0.5))


def window_embeddings(visual: nn.Module, layer4: torch.Tensor, window: int) -> torch.Tensor:
    """[B, C, h, w] -> L2-normalised [B, D, h', w'] embeddings of the windows at each offset (h' = h - window
    + 1; a map smaller than a window is first padded by replication to one window)."""
    b, c, h, w = layer4.shape
    layer4 = F.pad(layer4, (0, max(0, window - w), 0, max(0, window - h)), mode="replicate") \
        if h < window or w < window else layer4
    patches = layer4.unfold(2, window, 1).unfold(3, window, 1)  # B, C, h', w', win, win
    hh, ww = patches.shape[2:4]
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(b * hh * ww, c, window, window)
    pooled = torch.cat([visual.attnpool(chunk) for chunk in patches.split(WINDOW_CHUNK)])
    return F.normalize(pooled.float(), dim=-1).reshape(b, hh, ww, -1).permute(0, 3, 1, 2)


def vl_map(windows: torch.Tensor, text: torch.Tensor, prompt_class: torch.Tensor, num_classes: int,
           size: Sequence[int], window: int, temperature: float, vote: str) -> torch.Tensor:
    """Per-pixel classes from window votes: [B, D, h', w'] window embeddings, [P, D] normalised prompt
    embeddings and each prompt's class -> [B, K, h, w] (`size` = layer4's h, w): one-hot of the class with
    most votes ("hard", ties to the lower class), or the mean of the covering windows' class probabilities
    ("soft")."""
    probs = (temperature * torch.einsum("bdyx,pd->byxp", windows.float(), text.float())).softmax(dim=-1)
    to_class = F.one_hot(prompt_class, num_classes).to(probs.dtype)  # P, K
    if vote == "hard":
        votes = F.one_hot(probs.argmax(dim=-1), probs.shape[-1]).to(probs.dtype) @ to_class
    else:
        votes = probs @ to_class  # B, h', w', K
    votes = votes.permute(0, 3, 1, 2)
    ones = votes.new_ones(num_classes, 1, window, window)
    counts = F.conv_transpose2d(votes, ones, groups=num_classes)[:, :, :size[0], :size[1]]  # votes per pixel
    if vote == "hard":
        return F.one_hot(counts.argmax(dim=1), num_classes).permute(0, 3, 1, 2).to(votes.dtype)
    return counts / counts.sum(dim=1, keepdim=True).clamp_min(1e-6)


@torch.no_grad()
def encode_prompts(clip: nn.Module, tokenizer, prompts: Sequence[Sequence[str]], device: str
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised [P, D] text embeddings, [P] class of each prompt) for per-class prompt lists."""
    flat = [p for group in prompts for p in group]
    owner = [k for k, group in enumerate(prompts) for _ in group]
    tokens = tokenizer(flat).to(device)
    text = F.normalize(clip.encode_text(tokens).float(), dim=-1)
    return text, torch.tensor(owner, dtype=torch.long, device=device)
