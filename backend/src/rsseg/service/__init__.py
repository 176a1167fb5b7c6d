"""The service: one path from a SegmentRequest to a result, shared by the CLI, the worker and the plugin.

`run_segment` is imported on first use (PEP 562), so a worker starts and answers `ping` without
loading numpy, rasterio or the engine.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_segment"]


def __getattr__(name: str) -> Any:
    if name == "run_segment":
        from .segment import run_segment

        return run_segment
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
