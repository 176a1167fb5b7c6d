"""UNetFormer (Wang et al. 2022, GeoSeg): a ResNet-18 encoder with a global-local transformer decoder,
trained on the user's own layers (docs/models-trainable.md).

Importing this package imports no torch: configs.py is data; model.py builds the network.
"""

from .configs import R18, RESNET18, RESNET18_TINY, TINY

__all__ = ["R18", "RESNET18", "RESNET18_TINY", "TINY"]
