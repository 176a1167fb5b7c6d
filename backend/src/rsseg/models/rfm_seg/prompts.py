"""VL-map prompts as data: several short phrases per class that CLIP compares each window with.

A class takes, in order: the prompts a run or the bundle gives for it, the phrases of the dataset sets below
(matched by the class name or one of its synonyms), or TEMPLATES filled with the class name. The dataset sets
are the public RFM-Seg code's lists (Vaihingen and Potsdam are IRRG: vegetation is red), keyed by the class
names of our benchmark class files (datasets/classnames).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

TEMPLATES = ("{}", "{} next to the road", "{} next to the building", "{} next to the trees")

_ISPRS = {  # Vaihingen and Potsdam (IRRG false colour)
    "impervious surface": ("nothing", "road next to the low vegetation", "road next to the trees",
                           "road next to the house"),
    "building": ("building", "building next to the trees", "building next to a lake", "building next to the building",
                 "building next to the road"),
    "low vegetation": ("red low vegetation", "red low vegetation next to the trees",
                       "red low vegetation next to the building", "red low vegetation next to the road"),
    "tree": ("red circular tree next to the building", "red circular tree next to the road",
             "red circular tree next to a lake", "red circular tree on the low vegetation"),
    "car": ("car on the low vegetation", "car next to a lake", "car next to the building", "car next to the road"),
    "clutter": ("water", "water next to red low vegetation", "water next to the building", "water next to the road",
                "water next to red trees"),
}
_LOVEDA = {
    "background": ("nothing", "background"),
    "building": ("building", "building next to the trees", "building next to a lake", "building next to the building",
                 "building next to the road"),
    "road": ("road next to the low vegetation", "road next to the trees", "road next to the house"),
    "water": ("water", "water next to low vegetation", "water next to the building", "water next to the road",
              "water next to trees"),
    "barren": ("barren",),
    "forest": ("forest", "tree next to the building", "tree next to the road", "tree next to a lake",
               "tree on the low vegetation"),
    "agricultural": ("agricultural",),
}
DATASET_PROMPTS: dict[str, dict[str, tuple[str, ...]]] = {"vaihingen": _ISPRS, "potsdam": _ISPRS, "loveda": _LOVEDA,
                                                         "loveda-urban": _LOVEDA}


def _names(class_name: str) -> list[str]:
    return [n.strip().lower() for n in class_name.split(",") if n.strip()]


def class_prompts(class_names: Sequence[str], given: Optional[Mapping[str, Sequence[str]]] = None,
                  dataset: Optional[str] = None) -> list[list[str]]:
    """The prompts of each class, in class order (each list non-empty)."""
    given = {k.strip().lower(): [p for p in v if str(p).strip()] for k, v in (given or {}).items()}
    sets = [DATASET_PROMPTS[dataset]] if dataset in DATASET_PROMPTS else list(DATASET_PROMPTS.values())
    out = []
    for name in class_names:
        names = _names(name) or [str(name)]
        found = next((list(given[n]) for n in names if given.get(n)), None)
        found = found or next((list(s[n]) for s in sets for n in names if n in s), None)
        out.append(found or [t.format(names[0]) for t in TEMPLATES])
    return out
