"""What a finished job says to the user: per-class pixels, areas and polygons, time, device, notes.

One text for the dock's result panel and the Processing log, from the worker's result record.
"""

from __future__ import annotations

from ..protocol.contracts import SegmentResult

MAX_LABEL = 60  # characters of a prompt in a layer or group name (the full prompt is in the metadata)


def short(text: str, limit: int = MAX_LABEL) -> str:
    """One line of at most `limit` characters, "…" where it was cut."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def area_text(square_metres: float | None) -> str:
    if square_metres is None:
        return "area unknown (no linear unit)"
    if square_metres >= 1e6:
        return f"{square_metres / 1e6:,.2f} km²"
    if square_metres >= 1e4:
        return f"{square_metres / 1e4:,.2f} ha"
    return f"{square_metres:,.0f} m²"


def summary_lines(result: SegmentResult) -> list[str]:
    """The job's result in a few lines: one per class, then size, time and device, then the notes."""
    lines = [f"{short(c.name, 40)}: {c.pixels:,} px, {area_text(c.area_m2)}, {c.polygons:,} polygons"
             for c in result.classes]
    seconds = result.timings.get("total")
    took = f" in {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
    bands = f", bands {','.join(map(str, result.bands))}" if result.bands else ""
    lines.append(f"{result.width:,} × {result.height:,} px, {result.tiles} tiles on {result.device}{took}{bands}")
    if result.nodata_pixels:
        lines.append(f"{result.nodata_pixels:,} nodata pixels left out")
    lines.extend(result.notes)
    return lines
