"""The service: one path from a SegmentRequest to a result, shared by the CLI, the worker and the plugin."""

from .segment import run_segment

__all__ = ["run_segment"]
