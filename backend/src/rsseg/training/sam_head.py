"""The SAM head trains only its decoder (and band adapter); the SAM image encoder stays frozen."""

from .registry import trainer
from .semantic import SemanticTrainer


@trainer("sam_head")
class SamHeadTrainer(SemanticTrainer):
    default_lr = 1e-3  # a small decoder on frozen features takes a larger rate
