"""The VL-map: per-pixel classes voted by windows of CLIP's 1/32 map, each compared with the text embeddings of
several prompts per class; and the prompt embeddings themselves."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


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
