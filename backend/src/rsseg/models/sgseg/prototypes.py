"""The class-prototype memory: a remote-sensing bias the decoder keeps after training.

One feature-width vector per training class, updated from ground-truth masks during training: the mean dense
feature under the class's mask, blended in with momentum 0.9 at a rate weighted by how far it is from the
stored prototype (cosine dissimilarity, (1 - cos) / 2), so a class whose look keeps changing moves its
prototype and a settled one stays. At every forward pass (training and segmentation, any class list) each
pixel attends over the stored prototypes; that summary, projected per decoder scale, is added to the decoder's
image guidance. Prototypes are buffers: a bundle holds them.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_SCALE = 10.0  # cosine -> attention logits (a temperature of 0.1)


class PrototypeMemory(nn.Module):
    def __init__(self, slots: int, width: int, out_dims: Sequence[int], momentum: float = 0.9):
        super().__init__()
        self.momentum = float(momentum)
        self.register_buffer("prototypes", torch.zeros(slots, width))
        self.register_buffer("filled", torch.zeros(slots, dtype=torch.bool))
        self.project = nn.ModuleList(nn.Conv2d(width, d, 1) for d in out_dims)

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> None:
        """features [B, E, h, w] (dense, any scale), labels [B, H, W] class indices of the memory's slots."""
        slots = self.prototypes.shape[0]
        valid = (labels != ignore_index) & (labels >= 0) & (labels < slots)
        one_hot = F.one_hot(labels.clamp(0, slots - 1), slots).permute(0, 3, 1, 2).float() * valid.unsqueeze(1)
        weights = F.adaptive_avg_pool2d(one_hot, features.shape[-2:])  # each class's share of every feature cell
        mass = weights.sum(dim=(0, 2, 3))
        means = torch.einsum("bkhw,behw->ke", weights, F.normalize(features.float(), dim=1))
        for k in torch.nonzero(mass > 1e-6).flatten().tolist():
            new = F.normalize(means[k] / mass[k], dim=0)
            if not self.filled[k]:
                self.prototypes[k] = new
                self.filled[k] = True
                continue
            old = self.prototypes[k]
            rate = (1.0 - self.momentum) * (1.0 - F.cosine_similarity(old, new, dim=0)) / 2.0
            self.prototypes[k] = F.normalize(old + rate * (new - old), dim=0)

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        """Dense features [B, E, h, w] -> one guidance term per decoder scale [B, out_dims[i], h, w] (zero while
        the memory is empty)."""
        if not bool(self.filled.any()):
            b, _, h, w = features.shape
            return [features.new_zeros(b, p.out_channels, h, w) for p in self.project]
        stored = self.prototypes[self.filled].to(features.dtype)
        attention = torch.einsum("behw,ke->bkhw", F.normalize(features, dim=1), stored) * ATTENTION_SCALE
        summary = torch.einsum("bkhw,ke->behw", attention.softmax(dim=1), stored)
        return [project(summary) for project in self.project]
