"""RFM-Seg (a frozen RemoteCLIP fused into a frozen, trained UNetFormer through trainable connectors and a
VL-map; docs/rfm-seg.md).

Importing this package imports no torch: configs.py and prompts.py are data; the rest builds networks.
"""

from .configs import R18_RN50, TINY

__all__ = ["R18_RN50", "TINY"]
