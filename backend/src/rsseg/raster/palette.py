"""Class colours shared by the GeoTIFF colour table, result.json and the plugin's styles.

Why by meaning: a map reader expects water blue, trees green and buildings red, and a palette by
class id painted "water" orange whenever it came second. A class whose name (its first synonym)
is a common land-cover word gets that word's conventional colour; a second class of the same
meaning ("tree" and "forest", two water classes) a distinct shade of it; any other class the
qualitative palette, skipping colours already taken. A referring mask keeps its one colour.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Optional

from ..models.prompts import display_name
from ..protocol.contracts import NODATA, UNLABELLED

# A qualitative palette (Tableau 20 order): neighbouring ids differ strongly.
_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)
SENTENCE_COLOUR = "#ff00ff"  # a referring mask stands out on any imagery

# Meanings: (shades, {name: preferred shade}). The first shade is the meaning's usual colour; the
# others, each clearly apart, tell a second or third class of that meaning apart. Names are
# singular, lower case, single-spaced; `_meaning` matches plurals and longer names containing them.
_MEANINGS: dict[str, tuple[tuple[str, ...], dict[str, int]]] = {
    "water": (("#1f78b4", "#6baed6", "#08306b", "#a6cee3"),
              dict.fromkeys(("water", "river", "lake", "sea", "ocean", "pond", "reservoir", "stream", "canal",
                             "waterbody", "water body", "open water", "pool", "swimming pool"), 0)),
    "wetland": (("#2a9d8f", "#7fcdbb", "#01665e"),
                dict.fromkeys(("wetland", "marsh", "swamp", "bog", "fen", "mangrove"), 0)),
    "woody": (("#238b45", "#00441b", "#3f7f1f", "#41ab5d", "#78c679"),  # tree, forest, woodland, vegetation
              {"tree": 0, "tree canopy": 0, "canopy": 0, "forest": 1, "woodland": 2, "wood": 2, "vegetation": 3,
               "high vegetation": 0, "shrub": 4, "shrubland": 4, "bush": 4, "scrub": 4}),
    "grass": (("#a6d96a", "#d9ef8b", "#7fbf3f"),
              dict.fromkeys(("grass", "grassland", "meadow", "lawn", "low vegetation", "pasture", "rangeland",
                             "grass field", "turf"), 0)),
    "building": (("#e31a1c", "#fb6a4a", "#a50f15", "#fcae91"),
                 dict.fromkeys(("building", "house", "roof", "rooftop", "built up", "built up area"), 0)),
    "road": (("#737373", "#a3a3a3", "#4d4d4d", "#c8c8c8"),
             dict.fromkeys(("road", "street", "highway", "motorway", "parking", "parking lot", "parking area",
                            "pavement", "paved surface", "impervious surface", "asphalt", "sidewalk"), 0)),
    "bare": (("#d2b48c", "#b08050", "#ecd9b4", "#8c6a4a"),
             dict.fromkeys(("bare soil", "soil", "sand", "bare ground", "bare land", "bareland", "barren",
                            "barren land", "dirt", "desert", "beach"), 0)),
    "crop": (("#ffd92f", "#fee391", "#e6ab02"),
             dict.fromkeys(("crop", "cropland", "field", "farmland", "agriculture", "agricultural",
                            "agricultural land", "agriculture land", "farm", "arable land"), 0)),
    "vehicle": (("#ff7f00", "#fdae6b"), dict.fromkeys(("car", "vehicle", "truck", "bus", "van"), 0)),
    "shadow": (("#252525", "#5a5a5a"), dict.fromkeys(("shadow", "shade"), 0)),
    "cloud": (("#f5f5f5", "#dcdcdc"), dict.fromkeys(("cloud", "haze"), 0)),
    "snow": (("#c6e9ff", "#9fd3f0"), dict.fromkeys(("snow", "ice", "glacier", "snow cover"), 0)),
    "background": (("#d0d0d0", "#b5b5b5"), dict.fromkeys(("background", "clutter", "other"), 0)),
}
_NAMES = {name: (meaning, shade) for meaning, (_, names) in _MEANINGS.items() for name, shade in names.items()}
_LONGEST = max(len(name.split()) for name in _NAMES)
MIN_DISTANCE = 40.0  # RGB distance under which two class colours read as the same on a map


def _singular(word: str) -> str:
    """English plural -> singular for the nouns above ("bodies", "marshes", "trees", "grasses")."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _meaning(name: str) -> Optional[tuple[str, int]]:
    """(meaning, preferred shade) of a class name, or None. The longest known phrase in the name wins,
    the last one on a tie: English puts the head noun last ("tree shadows" are shadows)."""
    words = [_singular(w) for w in re.sub(r"[^0-9a-z]+", " ", display_name(name).casefold()).split()]
    best, best_key = None, (0, -1)
    for length in range(min(_LONGEST, len(words)), 0, -1):
        for start in range(len(words) - length + 1):
            found = _NAMES.get(" ".join(words[start:start + length]))
            if found is not None and (length, start) > best_key:
                best, best_key = found, (length, start)
        if best is not None:
            return best
    return None


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def class_colours(names: Sequence[str], sentence: bool = False) -> list[str]:
    """"#rrggbb" of classes 1..n, named `names` (class lines: the first synonym counts)."""
    if sentence:
        return [SENTENCE_COLOUR] * len(names)
    colours: list[Optional[str]] = [None] * len(names)
    near: list[tuple[int, int, int]] = []  # meaning colours taken: others must stay clearly apart

    def free(colour: str) -> bool:
        return colour not in colours and all(math.dist(_rgb(colour), t) >= MIN_DISTANCE for t in near)

    for i, name in enumerate(names):  # known meanings first: their colour is the one a reader expects
        found = _meaning(name)
        if found is None:
            continue
        shades = _MEANINGS[found[0]][0]
        for shade in (shades[found[1]], *shades):
            if free(shade):
                colours[i] = shade
                near.append(_rgb(shade))
                break
    exhausted = False  # once every palette colour is taken, they repeat (up to 254 classes), as by id
    for i, colour in enumerate(colours):
        if colour is not None:
            continue
        start = i % len(_COLOURS)
        order = [_COLOURS[(start + k) % len(_COLOURS)] for k in range(len(_COLOURS))]
        pick = None if exhausted else next((c for c in order if free(c)), None)
        exhausted = pick is None
        colours[i] = pick or order[0]
    return [str(c) for c in colours]


def class_rgb(names: Sequence[str]) -> list[tuple[int, int, int]]:
    """class_colours(names) as (r, g, b) triples: a bundle's colours, a chip mask's colour table."""
    return [_rgb(c) for c in class_colours(names)]


def _rgba(colour: str, alpha: int = 255) -> tuple[int, int, int, int]:
    return (*_rgb(colour), alpha)


def colour_table(names: Sequence[str], sentence: bool = False) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table: unlabelled and nodata transparent, classes 1..n as class_colours(names)."""
    table = {UNLABELLED: (0, 0, 0, 0), NODATA: (0, 0, 0, 0)}
    table.update({i: _rgba(c) for i, c in enumerate(class_colours(names, sentence), start=1)})
    return table
