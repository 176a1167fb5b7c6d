"""The one entry point shared by the CLI, the worker and (through the worker) the QGIS plugin."""

from .segment import run_segment

__all__ = ["run_segment"]
