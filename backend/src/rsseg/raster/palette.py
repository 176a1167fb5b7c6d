"""Class colours shared by the GeoTIFF colour table, result.json and the plugin's styles."""

from __future__ import annotations

from ..protocol.contracts import NODATA, UNLABELLED

# A qualitative palette (Tableau 20 order): neighbouring ids differ strongly.
_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)
SENTENCE_COLOUR = "#ff00ff"  # a referring mask stands out on any imagery


def class_colour(class_id: int, sentence: bool = False) -> str:
    if sentence:
        return SENTENCE_COLOUR
    return _COLOURS[(class_id - 1) % len(_COLOURS)]


def _rgba(colour: str, alpha: int = 255) -> tuple[int, int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16), alpha


def colour_table(n_classes: int, sentence: bool = False) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table: unlabelled and nodata transparent, classes 1..n coloured."""
    table = {UNLABELLED: (0, 0, 0, 0), NODATA: (0, 0, 0, 0)}
    table.update({i: _rgba(class_colour(i, sentence)) for i in range(1, n_classes + 1)})
    return table
