"""RFM-Seg trains only its connectors and class embedding; the host and CLIP stay frozen (models/rfm_seg/).

Loss: cross-entropy with label smoothing 0.05 plus soft Dice, plus 0.4 x the host's auxiliary head's
cross-entropy (the host's own recipe, training/semantic.py). AdamW, optionally inside Lookahead (timm's, k 6,
alpha 0.5) as the public schedules use.
"""

from __future__ import annotations

import torch

from .registry import trainer
from .semantic import SemanticTrainer


@trainer("rfm_seg")
class RFMSegTrainer(SemanticTrainer):
    default_lr = 3e-3  # the connectors start at zero; measured on the learning test (docs/rfm-seg.md)
    label_smoothing = 0.05

    def make_optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        optimizer = super().make_optimizer(params)
        if (getattr(self.model, "config", None) or {}).get("lookahead"):
            from timm.optim import Lookahead

            return Lookahead(optimizer, alpha=0.5, k=6)
        return optimizer
