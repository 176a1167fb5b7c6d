"""The SAM family registers its component loader: SAM models are parts other models build on."""

from ..factory import component_loader
from .builder import load_sam

component_loader("sam")(load_sam)
