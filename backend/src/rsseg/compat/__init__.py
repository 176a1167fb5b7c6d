"""Work-arounds for third-party packages that do not fit the installed torch."""

from rsseg.compat.torchvision_ops import ensure_torchvision, torchvision_mode

__all__ = ["ensure_torchvision", "torchvision_mode"]
