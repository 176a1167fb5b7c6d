"""Learning-rate schedule: linear warm-up, then cosine decay (docs/training.md), stepped per
optimizer update so short runs and resumed runs see the same curve."""

from __future__ import annotations

import math

import torch


def warmup_cosine(step: int, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate for optimizer update `step` (0-based).

    Warm-up: (step + 1) / warmup_steps, so the first update already moves and update
    warmup_steps - 1 uses the full rate. Then cosine from 1 at `warmup_steps` down to `min_ratio`
    at `total_steps` (the last update, total_steps - 1, is just above it).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                   min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over `warmup_cosine`; its state_dict is plain numbers (checkpointed as JSON)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, total_steps, warmup_steps, min_ratio))
