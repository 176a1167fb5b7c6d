"""UNetFormer trains whole, from scratch or from ImageNet weights (docs/training-from-layers.md)."""

from .registry import trainer
from .semantic import SemanticTrainer


@trainer("unetformer")
class UNetFormerTrainer(SemanticTrainer):
    default_lr = 6e-4  # GeoSeg's AdamW rate for UNetFormer
